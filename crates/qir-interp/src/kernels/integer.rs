//! The integer ops of a converted graph: quantize, dequantize, requantize, qlinear,
//! qconv2d, qadd, qconcat and qglobal_avg_pool, with exact integer arithmetic.
//!
//! Definitions (the JIT must match them bit for bit):
//! - `quantize`: `q = clamp(zp + round(x * inv), qmin, qmax)` with `inv = 1 / scale` in the
//!   float precision of the run (f32 by default), the product rounded in that precision and
//!   `round` the op's `rounding`; this is PyTorch's `quantize_per_tensor` and makes
//!   `dequantize(quantize(x))` equal `fake_quant(x)` bit for bit. A NaN quantizes to the
//!   zero point.
//! - `dequantize`: `(q - zp) * scale`, the difference exact, one float rounding.
//! - `requantize`: `y = clamp(zp_out + round((x - zp_in) * multiplier / 2^(31 + shift)))`,
//!   one exact rounding in the op's `rounding` (see [`qir::quant`]).
//! - `qlinear`/`qconv2d`: `sum (x - zx) * (w - zw) + b` accumulated exactly; a result outside
//!   i32 is an error (real int32 hardware would wrap silently).
//! - `qadd`, `qconcat`, `qglobal_avg_pool` (no multiplier attributes): each input's rescale
//!   factor `s_in / s_out` (for the pool `s_in / (s_out * H * W)`) is decomposed by
//!   [`qir::quant::quantize_multiplier`]; the terms are summed exactly at a common
//!   power of two and rounded once, ties as the op's `rounding` says.
//! - A fused `relu` clamps below at `zp_out`; `relu6` also clamps above at the quantized
//!   value of 6 (computed as `quantize` does, half to even).

use qir::{Data, Storage};

use super::contract::{ConvGeom, conv2d, gemm};
use super::elementwise::Act;
use super::quant::channels;
use super::{KResult, broadcast_map, numel};
use crate::num::Float;
use qir::quant::{Rounding, rescale, rescale_sum};

/// Resolved quantization parameters of a quantized type.
#[derive(Clone, Debug, PartialEq)]
pub struct QParams {
    pub storage: Storage,
    pub qmin: i64,
    pub qmax: i64,
    pub axis: Option<usize>,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
}

impl QParams {
    /// The parameter index of every element of a tensor of `shape`.
    pub fn index_map(&self, shape: &[usize]) -> KResult<Vec<usize>> {
        if self.scales.len() != self.zero_points.len() || self.scales.is_empty() {
            return Err("malformed quantization parameters".into());
        }
        let (outer, dim, inner) = channels(shape, self.axis, self.scales.len())?;
        let mut m = Vec::with_capacity(outer * dim * inner);
        for _ in 0..outer {
            for c in 0..dim {
                m.extend(std::iter::repeat_n(c, inner));
            }
        }
        Ok(m)
    }
    /// The quantized value of the real number `x` under parameter set `c`.
    pub fn quantize_one<T: Float>(&self, x: T, c: usize, r: Rounding) -> i64 {
        let s = T::from_f64(self.scales[c] as f64);
        x.quantize(s, self.zero_points[c], self.qmin, self.qmax, r)
    }
    /// The clamp bounds of parameter set `c` with the fused activation folded in.
    pub fn bounds(&self, c: usize, act: Act) -> (i64, i64) {
        let z = self.zero_points[c];
        match act {
            Act::None => (self.qmin, self.qmax),
            Act::Relu => (z.max(self.qmin), self.qmax),
            Act::Relu6 => (
                z.max(self.qmin),
                self.quantize_one(6.0f32, c, Rounding::HalfEven)
                    .min(self.qmax),
            ),
        }
    }
}

/// Integers (already inside the storage range) as storage data.
pub fn to_data(storage: Storage, v: &[i64]) -> Data {
    match storage {
        Storage::I4 | Storage::I8 => Data::I8(v.iter().map(|&x| x as i8).collect()),
        Storage::U8 => Data::U8(v.iter().map(|&x| x as u8).collect()),
        Storage::I16 => Data::I16(v.iter().map(|&x| x as i16).collect()),
        Storage::I32 => Data::I32(v.iter().map(|&x| x as i32).collect()),
    }
}

/// `quantize`.
pub fn quantize<T: Float>(x: &[T], shape: &[usize], qp: &QParams, r: Rounding) -> KResult<Data> {
    let map = qp.index_map(shape)?;
    if map.len() != x.len() {
        return Err("data does not match its shape".into());
    }
    let q: Vec<i64> = x
        .iter()
        .zip(&map)
        .map(|(&v, &c)| qp.quantize_one(v, c, r))
        .collect();
    Ok(to_data(qp.storage, &q))
}

/// `dequantize`.
pub fn dequantize<T: Float>(q: &[i64], shape: &[usize], qp: &QParams) -> KResult<Vec<T>> {
    let map = qp.index_map(shape)?;
    if map.len() != q.len() {
        return Err("data does not match its shape".into());
    }
    Ok(q.iter()
        .zip(&map)
        .map(|(&v, &c)| T::from_i64(v - qp.zero_points[c]) * T::from_f64(qp.scales[c] as f64))
        .collect())
}

/// `x - zp` for every element of a quantized tensor.
pub fn centered(q: &[i64], shape: &[usize], qp: &QParams) -> KResult<Vec<i64>> {
    let map = qp.index_map(shape)?;
    if map.len() != q.len() {
        return Err("data does not match its shape".into());
    }
    Ok(q.iter()
        .zip(&map)
        .map(|(&v, &c)| v - qp.zero_points[c])
        .collect())
}

/// Per-channel multipliers of `requantize`.
#[derive(Clone, Debug)]
pub struct Multipliers {
    pub multiplier: Vec<i64>,
    pub shift: Vec<i64>,
    pub axis: Option<usize>,
}

/// `requantize` of `x` (already centered by its input zero point) to `out`.
pub fn requantize(
    x: &[i64],
    shape: &[usize],
    m: &Multipliers,
    out: &QParams,
    r: Rounding,
    act: Act,
) -> KResult<Data> {
    if m.multiplier.len() != m.shift.len() || m.multiplier.is_empty() {
        return Err("'multiplier' and 'shift' must have the same non-zero length".into());
    }
    let (mo, md, mi) = channels(shape, m.axis, m.multiplier.len())?;
    let omap = out.index_map(shape)?;
    if omap.len() != x.len() || mo * md * mi != x.len() {
        return Err("data does not match its shape".into());
    }
    let mut y = Vec::with_capacity(x.len());
    for (i, (&v, &oc)) in x.iter().zip(&omap).enumerate() {
        let c = (i / mi) % md;
        let (mult, sh) = (m.multiplier[c], m.shift[c]);
        if !(0..=i32::MAX as i64).contains(&mult) || !(-31..=62).contains(&sh) {
            return Err(format!(
                "multiplier {mult} / shift {sh} is outside Q0.31 [0, 2^31) / [-31, 62]"
            ));
        }
        let scaled = rescale(v, mult, sh, r).ok_or("bad shift")?;
        let (lo, hi) = out.bounds(oc, act);
        let q = (out.zero_points[oc] as i128 + scaled).clamp(lo as i128, hi as i128);
        y.push(q as i64);
    }
    Ok(to_data(out.storage, &y))
}

fn to_i32(acc: Vec<i64>) -> KResult<Vec<i32>> {
    acc.into_iter()
        .map(|v| i32::try_from(v).map_err(|_| format!("int32 accumulator overflow: {v}")))
        .collect()
}

fn add_bias(acc: &mut [i64], bias: Option<&[i64]>, channels: usize, inner: usize) -> KResult<()> {
    if let Some(b) = bias {
        if b.len() != channels {
            return Err(format!(
                "bias has {} values for {channels} channels",
                b.len()
            ));
        }
        for (i, v) in acc.iter_mut().enumerate() {
            *v += b[(i / inner.max(1)) % channels.max(1)];
        }
    }
    Ok(())
}

/// `qlinear`: `x` `[n, k]` and `w` `[m, k]`, both centered; returns i32 `[n, m]`.
pub fn qlinear(
    x: &[i64],
    w: &[i64],
    n: usize,
    k: usize,
    m: usize,
    bias: Option<&[i64]>,
) -> KResult<Vec<i32>> {
    let mut acc = gemm(x, w, n, k, m, false, true)?;
    add_bias(&mut acc, bias, m, 1)?;
    to_i32(acc)
}

/// `qconv2d` on centered inputs; returns i32 `[n, o, oh, ow]`.
pub fn qconv2d(x: &[i64], w: &[i64], g: &ConvGeom, bias: Option<&[i64]>) -> KResult<Vec<i32>> {
    let mut acc = conv2d(x, w, g)?;
    add_bias(&mut acc, bias, g.o, g.oh * g.ow)?;
    to_i32(acc)
}

/// A quantized operand: centered values, shape, parameters.
pub struct QOperand<'a> {
    pub values: &'a [i64],
    pub shape: &'a [usize],
    pub params: &'a QParams,
}

/// `qadd` with broadcasting.
pub fn qadd(
    a: &QOperand,
    b: &QOperand,
    out_shape: &[usize],
    out: &QParams,
    act: Act,
    rounding: Rounding,
) -> KResult<Data> {
    let amap = broadcast_map(a.shape, out_shape)?;
    let bmap = broadcast_map(b.shape, out_shape)?;
    let apm = a.params.index_map(a.shape)?;
    let bpm = b.params.index_map(b.shape)?;
    let opm = out.index_map(out_shape)?;
    if apm.len() != a.values.len() || bpm.len() != b.values.len() {
        return Err("data does not match its shape".into());
    }
    let mut y = Vec::with_capacity(opm.len());
    for ((&ia, &ib), &oc) in amap.iter().zip(&bmap).zip(&opm) {
        let so = out.scales[oc] as f64;
        let ra = a.params.scales[apm[ia]] as f64 / so;
        let rb = b.params.scales[bpm[ib]] as f64 / so;
        let v = rescale_sum(&[(a.values[ia], ra), (b.values[ib], rb)], rounding)
            .ok_or("the scale ratios of the inputs and the result cannot be represented")?;
        let (lo, hi) = out.bounds(oc, act);
        y.push((out.zero_points[oc] as i128 + v).clamp(lo as i128, hi as i128) as i64);
    }
    Ok(to_data(out.storage, &y))
}

/// `qconcat`: the inputs joined along `axis`, each rescaled to the result parameters.
pub fn qconcat(
    inputs: &[QOperand],
    axis: usize,
    out_shape: &[usize],
    out: &QParams,
    rounding: Rounding,
) -> KResult<Data> {
    // (centered value, input scale) of every output element, in output order
    let outer = numel(out_shape.get(..axis).ok_or("axis out of range")?)?;
    let mut vals: Vec<(i64, f32)> = Vec::with_capacity(numel(out_shape)?);
    let mut pms = Vec::with_capacity(inputs.len());
    for t in inputs {
        let pm = t.params.index_map(t.shape)?;
        if pm.len() != t.values.len() || t.shape.len() <= axis {
            return Err("data does not match its shape".into());
        }
        pms.push((pm, numel(&t.shape[axis..])?));
    }
    for o in 0..outer {
        for (t, (pm, chunk)) in inputs.iter().zip(&pms) {
            let run = o * chunk..(o + 1) * chunk;
            let (Some(vs), Some(ps)) = (t.values.get(run.clone()), pm.get(run)) else {
                return Err("an input does not match the result shape".into());
            };
            for (&v, &c) in vs.iter().zip(ps) {
                vals.push((v, t.params.scales[c]));
            }
        }
    }
    let opm = out.index_map(out_shape)?;
    if opm.len() != vals.len() {
        return Err("the inputs do not fill the result shape".into());
    }
    let mut y = Vec::with_capacity(vals.len());
    for (&(v, s), &oc) in vals.iter().zip(&opm) {
        let r = rescale_sum(&[(v, s as f64 / out.scales[oc] as f64)], rounding)
            .ok_or("the scale ratio of an input and the result cannot be represented")?;
        let (lo, hi) = out.bounds(oc, Act::None);
        y.push((out.zero_points[oc] as i128 + r).clamp(lo as i128, hi as i128) as i64);
    }
    Ok(to_data(out.storage, &y))
}

/// `qglobal_avg_pool` over `[n, c, h, w]`; input parameters must be per tensor or per
/// axis 0 or 1 (constant over each plane).
pub fn qglobal_avg_pool(x: &QOperand, out: &QParams, rounding: Rounding) -> KResult<Data> {
    let [n, c, h, w] = *x.shape else {
        return Err(format!(
            "expected a rank-4 input, found shape {:?}",
            x.shape
        ));
    };
    if matches!(x.params.axis, Some(a) if a > 1) {
        return Err("input quantization parameters must be constant over each plane".into());
    }
    let plane = h * w;
    if plane == 0 {
        return Err("global average pooling over an empty plane".into());
    }
    let pm = x.params.index_map(x.shape)?;
    let opm = out.index_map(&[n, c, 1, 1])?;
    if pm.len() != x.values.len() || opm.len() != n * c {
        return Err("data does not match its shape".into());
    }
    let mut y = Vec::with_capacity(n * c);
    for (p, &oc) in opm.iter().enumerate() {
        let sum: i64 = x.values[p * plane..][..plane].iter().sum();
        let sx = x.params.scales[pm[p * plane]] as f64;
        let real = sx / (out.scales[oc] as f64 * plane.max(1) as f64);
        let v = rescale_sum(&[(sum, real)], rounding)
            .ok_or("the scale ratio of the input and the result cannot be represented")?;
        let (lo, hi) = out.bounds(oc, Act::None);
        y.push((out.zero_points[oc] as i128 + v).clamp(lo as i128, hi as i128) as i64);
    }
    Ok(to_data(out.storage, &y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_tensor(storage: Storage, qmin: i64, qmax: i64, scale: f32, zp: i64) -> QParams {
        QParams {
            storage,
            qmin,
            qmax,
            axis: None,
            scales: vec![scale],
            zero_points: vec![zp],
        }
    }

    #[test]
    fn quantize_rounding_modes() {
        let qp = per_tensor(Storage::I8, -128, 127, 0.5, 3);
        // x / 0.5: 0.25 -> 0.5, -0.25 -> -0.5, 0.75 -> 1.5, 1000 -> clamp, NaN -> zp
        let x = [0.25f32, -0.25, 0.75, -0.75, 1000.0, f32::NAN];
        let even = quantize(&x, &[6], &qp, Rounding::HalfEven).unwrap();
        assert_eq!(even, Data::I8(vec![3, 3, 5, 1, 127, 3]));
        let away = quantize(&x, &[6], &qp, Rounding::HalfAwayFromZero).unwrap();
        assert_eq!(away, Data::I8(vec![4, 2, 5, 1, 127, 3]));
        let back: Vec<f32> = dequantize(&[3, 5, -128], &[3], &qp).unwrap();
        assert_eq!(back, [0.0, 1.0, -65.5]);
    }

    #[test]
    fn requantize_ties_and_activation() {
        let out = per_tensor(Storage::I8, -128, 127, 1.0, -10);
        // multiplier 2^30 (0.5) with shift 1: factor 1/4; ties at +-2 (mod 4)
        let m = Multipliers {
            multiplier: vec![1 << 30],
            shift: vec![1],
            axis: None,
        };
        let x = [2i64, 6, -2, -6, 5, -5, 10_000, -10_000];
        // exact quotients 0.5 1.5 -0.5 -1.5 1.25 -1.25
        let away = requantize(&x, &[8], &m, &out, Rounding::HalfAwayFromZero, Act::None).unwrap();
        assert_eq!(away, Data::I8(vec![-9, -8, -11, -12, -9, -11, 127, -128]));
        let even = requantize(&x, &[8], &m, &out, Rounding::HalfEven, Act::None).unwrap();
        assert_eq!(even, Data::I8(vec![-10, -8, -10, -12, -9, -11, 127, -128]));
        // relu clamps below at the zero point; relu6 above at zp + 6 / scale
        let relu = requantize(&x, &[8], &m, &out, Rounding::HalfEven, Act::Relu).unwrap();
        assert_eq!(relu, Data::I8(vec![-10, -8, -10, -10, -9, -10, 127, -10]));
        let relu6 = requantize(&x, &[8], &m, &out, Rounding::HalfEven, Act::Relu6).unwrap();
        assert_eq!(relu6, Data::I8(vec![-10, -8, -10, -10, -9, -10, -4, -10]));
        // per-channel along axis 1 of [1, 2]: factors 1/4 and 1 (2^30 with shift -1)
        let m = Multipliers {
            multiplier: vec![1 << 30, 1 << 30],
            shift: vec![1, -1],
            axis: Some(1),
        };
        let y = requantize(&[8, 8], &[1, 2], &m, &out, Rounding::HalfEven, Act::None).unwrap();
        assert_eq!(y, Data::I8(vec![-8, -2]));
    }

    #[test]
    fn qlinear_matches_the_dequantized_float_product() {
        // x: scale 0.1, zp 5 (u8); w: per-channel scales (i8, zp 0); output scale 0.05, zp -3
        let xq = per_tensor(Storage::U8, 0, 255, 0.1, 5);
        let wq = QParams {
            storage: Storage::I8,
            qmin: -127,
            qmax: 127,
            axis: Some(0),
            scales: vec![0.02, 0.03],
            zero_points: vec![0, 0],
        };
        let yq = per_tensor(Storage::I8, -128, 127, 0.05, -3);
        let x = [0i64, 17, 200, 255, 5, 90];
        let w = [-127i64, 5, 60, 127, -3, 33];
        let (n, k, m) = (2, 3, 2);
        let xc = centered(&x, &[n, k], &xq).unwrap();
        let wc = centered(&w, &[m, k], &wq).unwrap();
        // bias in the accumulator's scale s_x * s_w: 0.5 and -0.25 in real terms
        let bias = [
            (0.5f64 / (0.1 * 0.02)).round() as i64,
            (-0.25f64 / (0.1 * 0.03)).round() as i64,
        ];
        let acc = qlinear(&xc, &wc, n, k, m, Some(&bias)).unwrap();
        // multipliers s_x * s_w / s_y per output channel
        let mut mult = Vec::new();
        let mut shift = Vec::new();
        for s in [0.02f64, 0.03] {
            let (mm, ss) = qir::quant::quantize_multiplier(0.1 * s / 0.05).unwrap();
            mult.push(mm);
            shift.push(ss);
        }
        let mults = Multipliers {
            multiplier: mult,
            shift,
            axis: Some(1),
        };
        let acc64: Vec<i64> = acc.iter().map(|&v| v as i64).collect();
        let Data::I8(y) = requantize(
            &acc64,
            &[n, m],
            &mults,
            &yq,
            Rounding::HalfAwayFromZero,
            Act::None,
        )
        .unwrap() else {
            panic!("i8 result expected");
        };
        // float reference on the dequantized operands
        let xf: Vec<f64> = dequantize(&x, &[n, k], &xq).unwrap();
        let wf: Vec<f64> = dequantize(&w, &[m, k], &wq).unwrap();
        for r in 0..n {
            for c in 0..m {
                let dot: f64 =
                    (0..k).map(|i| xf[r * k + i] * wf[c * k + i]).sum::<f64>() + [0.5, -0.25][c];
                let want = (dot / 0.05).round() - 3.0;
                let want = want.clamp(-128.0, 127.0);
                let got = y[r * m + c] as f64;
                assert!(
                    (got - want).abs() <= 1.0,
                    "row {r} col {c}: {got} vs {want}"
                );
            }
        }
        // an accumulator overflow is an error
        assert!(qlinear(&[1 << 20; 4], &[1 << 20; 4], 1, 4, 1, None).is_err());
    }

    #[test]
    fn qadd_qconcat_qpool() {
        let a = per_tensor(Storage::I8, -128, 127, 0.5, 0);
        let b = per_tensor(Storage::I8, -128, 127, 0.25, 0);
        let o = per_tensor(Storage::I8, -128, 127, 1.0, 10);
        // a*0.5 + b*0.25: (3, 2) -> 2.0 -> 12; (1, 1) -> 0.75 -> 1 (rounded) -> 11;
        // (-1, -2) -> -1.0 -> 9; (1, 0) -> 0.5 -> tie away from zero -> 1 -> 11
        let av = [3i64, 1, -1, 1];
        let bv = [2i64, 1, -2, 0];
        let y = qadd(
            &QOperand {
                values: &av,
                shape: &[4],
                params: &a,
            },
            &QOperand {
                values: &bv,
                shape: &[4],
                params: &b,
            },
            &[4],
            &o,
            Act::None,
            Rounding::HalfAwayFromZero,
        )
        .unwrap();
        assert_eq!(y, Data::I8(vec![12, 11, 9, 11]));
        let y = qadd(
            &QOperand {
                values: &[-30],
                shape: &[1],
                params: &a,
            },
            &QOperand {
                values: &bv,
                shape: &[4],
                params: &b,
            },
            &[4],
            &o,
            Act::Relu,
            Rounding::HalfAwayFromZero,
        )
        .unwrap();
        // -15 + (0.5, 0.25, -0.5, 0) -> -14.5 -> -15 (away), -14.75 -> -15, -15.5 -> -16, -15
        // then + 10 and clamped below at the zero point 10
        assert_eq!(y, Data::I8(vec![10, 10, 10, 10]));
        // concat: same parameters pass through, others are rescaled
        let same = per_tensor(Storage::I8, -128, 127, 1.0, 10);
        let y = qconcat(
            &[
                QOperand {
                    values: &[1, -2],
                    shape: &[1, 2],
                    params: &same,
                },
                QOperand {
                    values: &[4, 5],
                    shape: &[1, 2],
                    params: &a,
                },
            ],
            1,
            &[1, 4],
            &o,
            Rounding::HalfAwayFromZero,
        )
        .unwrap();
        // first input: centered 1 and -2 at scale 1 -> 11, 8; second at 0.5: 2 -> 12, 2.5 -> 13
        assert_eq!(y, Data::I8(vec![11, 8, 12, 13]));
        // pool: plane of centered values 1 2 3 4 at scale 0.5: mean 2.5 * 0.5 = 1.25 -> 1
        let y = qglobal_avg_pool(
            &QOperand {
                values: &[1, 2, 3, 4],
                shape: &[1, 1, 2, 2],
                params: &a,
            },
            &o,
            Rounding::HalfAwayFromZero,
        )
        .unwrap();
        assert_eq!(y, Data::I8(vec![11]));
    }
}
