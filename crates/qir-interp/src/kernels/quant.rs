//! Fake quantization (fixed and learned step size), its gradients, the range observers
//! and the derivation of quantization parameters — bit-exact with PyTorch in f32.
//!
//! PyTorch's formulas, reproduced operation by operation (see the `meta` key of the
//! shared `fakequant_vectors.json`): the input is multiplied by the f32 inverse scale
//! `inv = 1 / scale` (not divided by the scale), rounded half to even, and the zero point
//! is added in float: `q = zp + nearbyint(x * inv)`; the output is
//! `(clamp(q, qmin, qmax) - zp) * scale`; the STE passes the gradient where
//! `qmin <= q <= qmax`. The learned (LSQ) forward rounds its float zero point
//! (`clamp(nearbyint(zp))`); its backward truncates `clamp(zp + 0.5)` instead and computes
//! `q = nearbyint(fma(x, inv, zp))` with one rounding. A NaN input gives a NaN output and
//! no STE gradient (PyTorch's integer cast of NaN is undefined behaviour).
//!
//! Observers take the batch extreme with NaN propagating (as `torch.aminmax`); a batch
//! without elements leaves the running value as it is; an infinite running value means
//! nothing has been observed yet and is replaced by the batch value.

use super::{KResult, numel};
use crate::num::{Float, max_nan, min_nan};

/// How per-channel parameters map onto a tensor: `(outer, channels, inner)`; element
/// `(o, c, i)` uses parameter `c`. Per-tensor is one channel over everything.
pub fn channels(
    shape: &[usize],
    axis: Option<usize>,
    nparams: usize,
) -> KResult<(usize, usize, usize)> {
    match axis {
        None => {
            if nparams != 1 {
                return Err(format!("{nparams} quantization parameters need an 'axis'"));
            }
            Ok((1, 1, numel(shape)?))
        }
        Some(a) => {
            let (outer, dim, inner) = super::split_at_axis(shape, a)?;
            if nparams != dim {
                return Err(format!(
                    "{nparams} quantization parameters for dimension {a} of size {dim}"
                ));
            }
            Ok((outer, dim, inner))
        }
    }
}

/// Calls `f(channel, run)` for every contiguous run of elements sharing a channel.
fn for_runs(l: (usize, usize, usize), mut f: impl FnMut(usize, std::ops::Range<usize>)) {
    let (outer, dim, inner) = l;
    for o in 0..outer {
        for c in 0..dim {
            let s = (o * dim + c) * inner;
            f(c, s..s + inner);
        }
    }
}

/// The quantized grid point `zp + nearbyint(x * inv)` in float (PyTorch's forward).
#[inline]
pub fn grid<T: Float>(x: T, inv: T, zp: T) -> T {
    zp + (x * inv).round_even()
}

/// One fake-quantized value from its grid point.
#[inline]
fn dequant<T: Float>(q: T, zp: T, scale: T, lo: T, hi: T) -> T {
    if q.is_nan() {
        return q;
    }
    let c = if q < lo {
        lo
    } else if q > hi {
        hi
    } else {
        q
    };
    (c - zp) * scale
}

/// Fixed-parameter quantization settings: `(qmin, qmax)` and the optional axis.
#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub qmin: i64,
    pub qmax: i64,
    pub axis: Option<usize>,
}

fn check_params<T>(
    x: &[T],
    shape: &[usize],
    r: Range,
    scale: &[T],
    nzp: usize,
) -> KResult<(usize, usize, usize)> {
    if x.len() != numel(shape)? {
        return Err("data does not match its shape".into());
    }
    if nzp != scale.len() {
        return Err(format!("{} scales but {nzp} zero points", scale.len()));
    }
    if r.qmin > r.qmax {
        return Err(format!("empty range [{}, {}]", r.qmin, r.qmax));
    }
    channels(shape, r.axis, scale.len())
}

/// Scales must be positive and finite: a zero, negative or infinite scale quantizes to
/// NaN or garbage (computed scales can be any of these when their range is).
fn check_scales<T: Float>(scale: &[T]) -> KResult<()> {
    match scale
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s > T::ZERO))
    {
        Some((c, s)) if scale.len() > 1 => Err(format!(
            "the scale of channel {c} is {}: scales must be positive and finite",
            s.to_f64()
        )),
        Some((_, s)) => Err(format!(
            "the scale is {}: scales must be positive and finite",
            s.to_f64()
        )),
        None => Ok(()),
    }
}

/// `fake_quant` with integer zero points.
pub fn fake_quant<T: Float>(
    x: &[T],
    shape: &[usize],
    r: Range,
    scale: &[T],
    zp: &[i64],
) -> KResult<Vec<T>> {
    let l = check_params(x, shape, r, scale, zp.len())?;
    check_scales(scale)?;
    let (lo, hi) = (T::from_i64(r.qmin), T::from_i64(r.qmax));
    let mut y = vec![T::ZERO; x.len()];
    for_runs(l, |c, run| {
        let (s, z) = (scale[c], T::from_i64(zp[c]));
        let inv = T::ONE / s;
        for i in run {
            y[i] = dequant(grid(x[i], inv, z), z, s, lo, hi);
        }
    });
    Ok(y)
}

/// The clipped STE of `fake_quant`: `dy` where the grid point is inside the range.
pub fn fake_quant_grad<T: Float>(
    dy: &[T],
    x: &[T],
    shape: &[usize],
    r: Range,
    scale: &[T],
    zp: &[i64],
) -> KResult<Vec<T>> {
    let l = check_params(x, shape, r, scale, zp.len())?;
    if dy.len() != x.len() {
        return Err("dy does not match x".into());
    }
    let (lo, hi) = (T::from_i64(r.qmin), T::from_i64(r.qmax));
    let mut dx = vec![T::ZERO; x.len()];
    for_runs(l, |c, run| {
        let z = T::from_i64(zp[c]);
        let inv = T::ONE / scale[c];
        for i in run {
            let q = grid(x[i], inv, z);
            if lo <= q && q <= hi {
                dx[i] = dy[i];
            }
        }
    });
    Ok(dx)
}

/// The LSQ forward zero point: `clamp(nearbyint(zp), qmin, qmax)`.
pub fn lsq_forward_zp<T: Float>(zp: T, r: Range) -> i64 {
    let z = zp.round_even();
    let (lo, hi) = (T::from_i64(r.qmin), T::from_i64(r.qmax));
    let c = if z < lo {
        lo
    } else if z > hi {
        hi
    } else {
        z
    };
    if c.is_nan() { 0 } else { c.to_f64() as i64 }
}

/// How the LSQ backward rounds the float zero point (the op's `zero_point_rounding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZpRounding {
    /// As the forward: `clamp(nearbyint(zp), qmin, qmax)`.
    Nearest,
    /// PyTorch's `trunc(clamp(zp + 0.5, qmin, qmax))`: one step above the forward's zero
    /// point for negative integer zero points.
    Torch,
}

/// The LSQ backward zero point, as a float.
pub fn lsq_backward_zp<T: Float>(zp: T, r: Range, rounding: ZpRounding) -> T {
    if rounding == ZpRounding::Nearest {
        return T::from_i64(lsq_forward_zp(zp, r));
    }
    let z = zp + T::from_f64(0.5);
    let (lo, hi) = (T::from_i64(r.qmin), T::from_i64(r.qmax));
    let c = if z < lo {
        lo
    } else if z > hi {
        hi
    } else {
        z
    };
    c.trunc()
}

/// `fake_quant_lsq` forward: fake quantization with the rounded float zero point.
pub fn fake_quant_lsq<T: Float>(
    x: &[T],
    shape: &[usize],
    r: Range,
    scale: &[T],
    zp: &[T],
) -> KResult<Vec<T>> {
    let z: Vec<i64> = zp.iter().map(|&z| lsq_forward_zp(z, r)).collect();
    fake_quant(x, shape, r, scale, &z)
}

/// The per-element LSQ gradients `(dx, dscale, dzero_point)` (before `grad_scale` is
/// folded into dscale/dzero_point it is passed in as `gf`).
#[inline]
#[allow(clippy::too_many_arguments)]
fn lsq_element<T: Float>(dy: T, x: T, s: T, inv: T, zb: T, lo: T, hi: T, gf: T) -> (T, T, T) {
    let q = x.mul_add(inv, zb).round_even();
    if q < lo {
        (T::ZERO, dy * (lo - zb) * gf, -dy * s * gf)
    } else if q > hi {
        (T::ZERO, dy * (hi - zb) * gf, -dy * s * gf)
    } else {
        let ds = dy * (q - zb).mul_add(s, -x) * inv * gf;
        let dx = if q.is_nan() { T::ZERO } else { dy };
        (dx, ds, T::ZERO)
    }
}

/// Which LSQ gradient to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LsqGrad {
    X,
    Scale,
    ZeroPoint,
}

/// The default LSQ gradient scale `1 / sqrt(numel_per_channel * qmax)`.
pub fn default_grad_scale(numel_per_channel: usize, qmax: i64) -> KResult<f64> {
    let d = numel_per_channel as f64 * qmax as f64;
    if d > 0.0 {
        Ok(1.0 / d.sqrt())
    } else {
        Err(format!(
            "the default grad_scale 1/sqrt(numel * qmax) is undefined for {numel_per_channel} elements and qmax {qmax}; set 'grad_scale'"
        ))
    }
}

/// The per-element LSQ contributions of `which` (dx for `X`; dscale or dzero_point
/// contributions otherwise, not yet summed).
#[allow(clippy::too_many_arguments)]
pub fn lsq_elements<T: Float>(
    which: LsqGrad,
    dy: &[T],
    x: &[T],
    shape: &[usize],
    r: Range,
    scale: &[T],
    zp: &[T],
    grad_scale: Option<f64>,
    rounding: ZpRounding,
) -> KResult<(Vec<T>, (usize, usize, usize))> {
    let l = check_params(x, shape, r, scale, zp.len())?;
    if dy.len() != x.len() {
        return Err("dy does not match x".into());
    }
    let gf = T::from_f64(match grad_scale {
        Some(g) => g,
        None => default_grad_scale(l.0 * l.2, r.qmax)?,
    });
    let (lo, hi) = (T::from_i64(r.qmin), T::from_i64(r.qmax));
    let mut out = vec![T::ZERO; x.len()];
    for_runs(l, |c, run| {
        let s = scale[c];
        let inv = T::ONE / s;
        let zb = lsq_backward_zp(zp[c], r, rounding);
        for i in run {
            let (dx, ds, dz) = lsq_element(dy[i], x[i], s, inv, zb, lo, hi, gf);
            out[i] = match which {
                LsqGrad::X => dx,
                LsqGrad::Scale => ds,
                LsqGrad::ZeroPoint => dz,
            };
        }
    });
    Ok((out, l))
}

/// Sums per-element contributions per channel (f64 accumulation, one rounding).
pub fn sum_channels<T: Float>(v: &[T], l: (usize, usize, usize)) -> Vec<T> {
    let mut acc = vec![0.0f64; l.1];
    for_runs(l, |c, run| {
        for i in run {
            acc[c] += v[i].to_f64();
        }
    });
    acc.into_iter().map(T::from_f64).collect()
}

/// An observer: folds the batch extreme of `x` (per channel) into `running`.
pub fn observe<T: Float>(
    x: &[T],
    shape: &[usize],
    axis: Option<usize>,
    running: &[T],
    is_min: bool,
    averaging: Option<f64>,
) -> KResult<Vec<T>> {
    if x.len() != numel(shape)? {
        return Err("data does not match its shape".into());
    }
    let l = channels(shape, axis, running.len())?;
    let empty = if is_min { T::INFINITY } else { T::NEG_INFINITY };
    let mut batch = vec![empty; l.1];
    for_runs(l, |c, run| {
        let mut e = batch[c];
        for i in run {
            e = if is_min {
                min_nan(e, x[i])
            } else {
                max_nan(e, x[i])
            };
        }
        batch[c] = e;
    });
    Ok(running
        .iter()
        .zip(&batch)
        .map(|(&r, &b)| {
            if b == empty {
                // nothing in this batch
                r
            } else if !r.is_finite() && !r.is_nan() {
                // nothing observed yet
                b
            } else {
                match averaging {
                    // averaging 1 is a last-value observer: exactly the batch value
                    // (`r + 1 * (b - r)` can differ from `b` by a rounding)
                    Some(1.0) => b,
                    Some(c) => r + T::from_f64(c) * (b - r),
                    None if is_min => min_nan(r, b),
                    None => max_nan(r, b),
                }
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const I8: Range = Range {
        qmin: -128,
        qmax: 127,
        axis: None,
    };

    #[test]
    fn fake_quant_per_tensor_hand_computed() {
        // scale 0.5, zp 2: x 0.25 -> grid 2 + round(0.5) = 2 -> 0; x 0.75 -> 2 + 2 = 4 -> 1.0
        // x 100 -> clamp to 127 -> (127 - 2) * 0.5 = 62.5; x -100 -> -128 -> -65
        let x = [0.25f32, 0.75, 100.0, -100.0, -0.25];
        let y = fake_quant(&x, &[5], I8, &[0.5], &[2]).unwrap();
        assert_eq!(y, [0.0, 1.0, 62.5, -65.0, 0.0]);
        let dx = fake_quant_grad(&[1.0; 5], &x, &[5], I8, &[0.5], &[2]).unwrap();
        assert_eq!(dx, [1.0, 1.0, 0.0, 0.0, 1.0]);
        assert!(fake_quant(&[f32::NAN], &[1], I8, &[0.5], &[0]).unwrap()[0].is_nan());
    }

    #[test]
    fn fake_quant_per_channel() {
        // [2, 2] along axis 1: column scales 1 and 0.5
        let r = Range {
            axis: Some(1),
            ..I8
        };
        let y = fake_quant(&[1.4f32, 1.4, -0.6, -0.6], &[2, 2], r, &[1.0, 0.5], &[0, 0]).unwrap();
        assert_eq!(y, [1.0, 1.5, -1.0, -0.5]);
        assert!(fake_quant(&[1.0f32; 4], &[2, 2], r, &[1.0], &[0]).is_err());
    }

    #[test]
    fn lsq_zero_points() {
        let u8r = Range {
            qmin: 0,
            qmax: 255,
            axis: None,
        };
        assert_eq!(lsq_forward_zp(37.4f32, u8r), 37);
        assert_eq!(lsq_forward_zp(2.5f32, u8r), 2);
        assert_eq!(lsq_forward_zp(-3.0f32, u8r), 0);
        assert_eq!(lsq_backward_zp(37.4f32, u8r, ZpRounding::Torch), 37.0);
        assert_eq!(lsq_backward_zp(7.6f32, u8r, ZpRounding::Torch), 8.0);
        assert_eq!(lsq_backward_zp(300.0f32, u8r, ZpRounding::Torch), 255.0);
        // a negative zero point: PyTorch's trunc(zp + 0.5) is one step off the forward's
        let i8r = I8;
        assert_eq!(lsq_backward_zp(-128.0f32, i8r, ZpRounding::Torch), -127.0);
        assert_eq!(lsq_backward_zp(-128.0f32, i8r, ZpRounding::Nearest), -128.0);
        assert_eq!(lsq_backward_zp(-1.0f32, i8r, ZpRounding::Torch), 0.0);
        assert_eq!(lsq_backward_zp(-1.0f32, i8r, ZpRounding::Nearest), -1.0);
        assert_eq!(lsq_backward_zp(36.5f32, u8r, ZpRounding::Nearest), 36.0);
    }

    #[test]
    fn lsq_gradients_hand_computed() {
        // scale 0.5, zp 0, gf 1: x = 0.6 -> q = round(1.2) = 1, dscale = (1*0.5 - 0.6)/0.5 = -0.2
        // x = 100 -> q > 127: dscale = 127, dzp = -0.5; x = -100: dscale = -128, dzp = -0.5
        let x = [0.6f64, 100.0, -100.0];
        let g = |w| {
            lsq_elements(
                w,
                &[1.0; 3],
                &x,
                &[3],
                I8,
                &[0.5],
                &[0.0],
                Some(1.0),
                ZpRounding::Nearest,
            )
            .unwrap()
            .0
        };
        let ds = g(LsqGrad::Scale);
        assert!((ds[0] + 0.2).abs() < 1e-15);
        assert_eq!(&ds[1..], [127.0, -128.0]);
        assert_eq!(g(LsqGrad::ZeroPoint), [0.0, -0.5, -0.5]);
        assert_eq!(g(LsqGrad::X), [1.0, 0.0, 0.0]);
        // default grad scale 1/sqrt(3 * 127)
        let (d, l) = lsq_elements(
            LsqGrad::ZeroPoint,
            &[1.0; 3],
            &x,
            &[3],
            I8,
            &[0.5],
            &[0.0],
            None,
            ZpRounding::Nearest,
        )
        .unwrap();
        let want = -0.5 / (3.0f64 * 127.0).sqrt();
        assert!((d[1] - want).abs() < 1e-16);
        assert_eq!(sum_channels(&d, l), [2.0 * d[1]]);
        assert!(default_grad_scale(3, 0).is_err());
    }

    #[test]
    fn observers_min_max_and_ema() {
        let x = [-1.0f32, 3.0, 2.0, -4.0];
        // nothing observed yet: the batch value replaces the running one
        assert_eq!(
            observe(&x, &[4], None, &[f32::INFINITY], true, None).unwrap(),
            [-4.0]
        );
        assert_eq!(
            observe(&x, &[4], None, &[f32::NEG_INFINITY], false, Some(0.01)).unwrap(),
            [3.0]
        );
        // running extreme
        assert_eq!(
            observe(&x, &[4], None, &[-2.0], true, None).unwrap(),
            [-4.0]
        );
        assert_eq!(observe(&x, &[4], None, &[5.0], false, None).unwrap(), [5.0]);
        // averaging 1 (last value) is exactly the batch value, even where
        // r + 1 * (b - r) rounds: 1e8 + (3 - 1e8) is 0 in f32
        assert_eq!(1e8f32 + (3.0 - 1e8f32), 0.0);
        assert_eq!(
            observe(&x, &[4], None, &[1e8], false, Some(1.0)).unwrap(),
            [3.0]
        );
        // EMA: -2 + 0.5 * (-4 - -2) = -3; 5 + 0.25 * (3 - 5) = 4.5
        assert_eq!(
            observe(&x, &[4], None, &[-2.0], true, Some(0.5)).unwrap(),
            [-3.0]
        );
        assert_eq!(
            observe(&x, &[4], None, &[5.0], false, Some(0.25)).unwrap(),
            [4.5]
        );
        // per channel along axis 0 of [2, 2]: rows [-1, 3] and [2, -4]
        assert_eq!(
            observe(&x, &[2, 2], Some(0), &[f32::INFINITY, 0.0], true, None).unwrap(),
            [-1.0, -4.0]
        );
        assert_eq!(
            observe(&x, &[2, 2], Some(1), &[f32::NEG_INFINITY; 2], false, None).unwrap(),
            [2.0, 3.0]
        );
        // an empty batch keeps the running value
        assert_eq!(
            observe::<f32>(&[], &[0], None, &[1.5], true, Some(0.5)).unwrap(),
            [1.5]
        );
    }
}
