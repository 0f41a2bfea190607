//! Initial values of learned quantization parameters (LSQ, LSQ+).
//!
//! `insert-fake-quant` gives every learned scale an initializer that needs no data: for a
//! weight, the LSQ paper's `2 * mean(|w|) / sqrt(qmax)` with the expected `mean(|w|)` of
//! the weight's random initializer (exact for inline weights); for an activation,
//! `2 / sqrt(qmax)` (the same rule for values of unit mean magnitude). [`initialize`]
//! replaces them by values computed from data, as the papers do before training:
//! - LSQ (symmetric): `scale = 2 * mean(|x|) / sqrt(qmax)` per channel (weights) or per
//!   tensor (activations), over one calibration batch;
//! - LSQ+ (affine, learned zero point): scale and zero point from the batch's range by
//!   the affine rule of `qparams_scale`/`qparams_zero_point` (range widened to include 0,
//!   `s = (max - min) / (qmax - qmin)`, `z = qmin - round(min / s)`).
//!
//! Invariant: every scale produced is positive and finite (at least
//! [`MIN_SCALE`]), so `fake_quant_lsq` never divides by zero.

use std::collections::HashMap;

use qir::{Data, Graph, Init, NodeId, Op, Tensor};

/// The smallest scale produced (the `eps` default of `qparams_scale`).
pub const MIN_SCALE: f64 = f32::EPSILON as f64;

/// The LSQ initial scale of values whose mean magnitude is `mean_abs`.
pub fn scale_from_mean_abs(mean_abs: f64, qmax: i64) -> f64 {
    let q = (qmax.max(1)) as f64;
    let s = 2.0 * mean_abs / q.sqrt();
    if s.is_finite() { s.max(MIN_SCALE) } else { 1.0 }
}

/// The expected `mean(|w|)` of a value drawn from `init` with shape `shape`, when it is
/// known without drawing (random initializers, constant fills); `None` otherwise.
pub fn expected_mean_abs(init: &Init, shape: &[usize]) -> Option<f64> {
    let (fan_in, fan_out) = qir::graph::fans(shape).unwrap_or((1, 1));
    let (fan_in, fan_out) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
    // U(-b, b): E|w| = b / 2; N(0, s): E|w| = s * sqrt(2 / pi).
    let half_normal = (2.0 / std::f64::consts::PI).sqrt();
    let v = match init {
        Init::KaimingUniform => (6.0 / fan_in).sqrt() / 2.0,
        Init::KaimingNormal => (2.0 / fan_in).sqrt() * half_normal,
        Init::XavierUniform => (6.0 / (fan_in + fan_out)).sqrt() / 2.0,
        Init::XavierNormal => (2.0 / (fan_in + fan_out)).sqrt() * half_normal,
        Init::LecunUniform => (1.0 / fan_in).sqrt() / 2.0,
        Init::Uniform(a, b) if a < b => {
            if *a >= 0.0 || *b <= 0.0 {
                ((a + b) / 2.0).abs()
            } else {
                (a * a + b * b) / (2.0 * (b - a))
            }
        }
        Init::Normal(m, s) if *m == 0.0 => s.abs() * half_normal,
        Init::Fill(v) => v.abs(),
        Init::Ones => 1.0,
        Init::Dense(vs) if !vs.is_empty() => {
            vs.iter().map(|v| v.abs()).sum::<f64>() / vs.len() as f64
        }
        Init::Uniform(..) | Init::Normal(..) | Init::Zeros | Init::External | Init::Dense(_) => {
            return None;
        }
    };
    (v.is_finite() && v > 0.0).then_some(v)
}

/// Per-channel mean magnitudes of inline weights along axis 0 (`None` when `init` is not
/// inline data of the right size).
pub fn dense_channel_mean_abs(init: &Init, shape: &[usize]) -> Option<Vec<f64>> {
    let Init::Dense(vs) = init else {
        return None;
    };
    let c = *shape.first()?;
    if c == 0 || vs.len() % c != 0 || vs.len() != shape.iter().product::<usize>() {
        return None;
    }
    let inner = vs.len() / c;
    Some(
        vs.chunks(inner)
            .map(|ch| ch.iter().map(|v| v.abs()).sum::<f64>() / inner as f64)
            .collect(),
    )
}

fn values_f64(t: &Tensor) -> Option<Vec<f64>> {
    match &t.data {
        Data::F32(_) | Data::F64(_) => Some(t.data.to_f64()),
        _ => None,
    }
}

/// Splits `x` (shape `shape`) into the element groups of each channel along `axis`
/// (one group without axis).
fn channel_groups(x: &[f64], shape: &[usize], axis: Option<usize>) -> Option<Vec<Vec<f64>>> {
    let Some(a) = axis else {
        return Some(vec![x.to_vec()]);
    };
    let dim = *shape.get(a)?;
    let inner: usize = shape.get(a + 1..)?.iter().product();
    let outer: usize = shape.get(..a)?.iter().product();
    if outer * dim * inner != x.len() {
        return None;
    }
    let mut groups = vec![Vec::with_capacity(outer * inner); dim];
    for o in 0..outer {
        for (c, g) in groups.iter_mut().enumerate() {
            let s = (o * dim + c) * inner;
            g.extend_from_slice(x.get(s..s + inner)?);
        }
    }
    Some(groups)
}

/// Affine scale and (float) zero point of a range, as `qparams_scale`/`qparams_zero_point`
/// compute them (`qir::quant`).
fn affine(lo: f64, hi: f64, qmin: i64, qmax: i64) -> (f64, f64) {
    let rule = qir::quant::QparamRule {
        qmin,
        qmax,
        symmetric: false,
        power_of_two: false,
        eps: MIN_SCALE,
    };
    let (s, z) = qir::quant::qparams_f64(lo, hi, rule);
    (s, z as f64)
}

/// Initial values of the learned scales and zero points of every `fake_quant_lsq` of `g`
/// whose scale (zero point) is a param, computed from `value`: the values of one forward
/// run on a calibration batch (the interpreter's `RunResult::values`). Returns `(param
/// name, tensor)` pairs to store; the tensors have the params' shapes and are f32.
pub fn initialize(
    g: &Graph,
    value: &dyn Fn(NodeId) -> Option<Tensor>,
) -> Result<Vec<(String, Tensor)>, String> {
    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for id in g.node_ids() {
        let Some(inst) = g.node(id).inst() else {
            continue;
        };
        if inst.op != Op::FakeQuantLsq {
            continue;
        }
        let [x, scale, zp] = <[NodeId; 3]>::try_from(g.operands(id))
            .map_err(|_| format!("{}: fake_quant_lsq needs 3 operands", g.describe(id)))?;
        let (qmin, qmax) = match (inst.int("qmin"), inst.int("qmax")) {
            (Some(a), Some(b)) if a < b => (a, b),
            _ => return Err(format!("{}: bad qmin/qmax", g.describe(id))),
        };
        let xs = value(x).ok_or_else(|| {
            format!(
                "no value for {} (the input of {})",
                g.describe(x),
                g.describe(id)
            )
        })?;
        let data =
            values_f64(&xs).ok_or_else(|| format!("{} is not a float tensor", g.describe(x)))?;
        let axis = match inst.int("axis") {
            Some(a) => Some(
                g.ty(x)
                    .shape
                    .axis(a)
                    .ok_or_else(|| format!("{}: axis {a} is out of range", g.describe(id)))?,
            ),
            None => None,
        };
        let groups = channel_groups(&data, &xs.shape, axis)
            .ok_or_else(|| format!("{}: the value does not match its axis", g.describe(id)))?;
        let learn_zp = inst.boolean("learn_zero_point").unwrap_or(false);
        let mut scales = Vec::with_capacity(groups.len());
        let mut zps = Vec::with_capacity(groups.len());
        for grp in &groups {
            let finite: Vec<f64> = grp.iter().copied().filter(|v| v.is_finite()).collect();
            if learn_zp {
                let lo = finite.iter().copied().fold(0.0f64, f64::min);
                let hi = finite.iter().copied().fold(0.0f64, f64::max);
                let (s, z) = affine(lo, hi, qmin, qmax);
                scales.push(s);
                zps.push(z);
            } else {
                let n = finite.len().max(1) as f64;
                let mean = finite.iter().map(|v| v.abs()).sum::<f64>() / n;
                scales.push(scale_from_mean_abs(mean, qmax));
            }
        }
        let mut put = |node: NodeId, vals: Vec<f64>| -> Result<(), String> {
            let n = g.node(node);
            let Some(name) = n.name.clone().filter(|_| n.is_param()) else {
                return Ok(());
            };
            let shape: Vec<usize> =
                n.ty.shape
                    .as_fixed()
                    .ok_or_else(|| format!("%{name} has a symbolic shape"))?
                    .into_iter()
                    .map(|d| d as usize)
                    .collect();
            let t = Tensor::f32(shape, vals.iter().map(|&v| v as f32).collect())
                .ok_or_else(|| format!("%{name}: {} values do not fit its type", vals.len()))?;
            if !out.contains_key(&name) {
                order.push(name.clone());
            }
            out.insert(name, t);
            Ok(())
        };
        put(scale, scales)?;
        if learn_zp {
            put(zp, zps)?;
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|n| out.remove(&n).map(|t| (n, t)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_magnitudes() {
        // kaiming_uniform on [4, 9]: b = sqrt(6 / 9), E|w| = b / 2
        let e = expected_mean_abs(&Init::KaimingUniform, &[4, 9]).unwrap();
        assert!((e - (6.0f64 / 9.0).sqrt() / 2.0).abs() < 1e-12);
        assert_eq!(expected_mean_abs(&Init::Zeros, &[4, 9]), None);
        assert_eq!(
            expected_mean_abs(&Init::Uniform(-1.0, 3.0), &[2]).unwrap(),
            10.0 / 8.0
        );
        assert_eq!(
            dense_channel_mean_abs(&Init::Dense(vec![1.0, -3.0, 0.5, 0.5]), &[2, 2]).unwrap(),
            [2.0, 0.5]
        );
        assert_eq!(scale_from_mean_abs(0.0, 127), MIN_SCALE);
        assert!((scale_from_mean_abs(1.0, 4) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn groups_and_affine() {
        let g = channel_groups(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], Some(1)).unwrap();
        assert_eq!(g, [vec![1.0, 4.0], vec![2.0, 5.0], vec![3.0, 6.0]]);
        // [-1, 3] on [-128, 127]: s = 4 / 255, z = -128 - round(-1 / s) = -128 + 64 = -64
        let (s, z) = affine(-1.0, 3.0, -128, 127);
        assert!((s - 4.0 / 255.0).abs() < 1e-15);
        assert_eq!(z, -64.0);
    }
}
