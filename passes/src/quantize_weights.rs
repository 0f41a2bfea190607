//! `quantize-weights`: a fake-quant of a constant (a trained weight with its bound
//! quantization parameters) becomes an integer constant of the quantized type, read through
//! a `dequantize`:
//!
//! ```text
//! %fc.w.fq = fake_quant(%fc.w, %fc.w.scale, %fc.w.zp) {qmin = -127, qmax = 127, axis = 0}
//!   =>
//! const %fc.w.scales: f32[3] = [...]
//! const %fc.w.q: !quant.uniform<i8<-127:127>:f32:0, %fc.w.scales>[3, 4] = [127, -64, ...]
//! %fc.w.fq = dequantize(%fc.w.q) : f32[3, 4]
//! ```
//!
//! Exact: the integers are the fake-quant's own (f32 inverse scale, ties to even, clamped;
//! LSQ zero points rounded and clamped as its forward does) and `dequantize` computes its
//! `(q - z) * s` in f32, so the model's values do not change. Per channel when the
//! fake-quant was (the scales in a constant `%<w>.scales`), else per tensor; stored as `i4`
//! for 4-bit ranges (w4a8), else `i8` or `u8`. Weights whose quantization parameters are
//! not constants yet (`fold-constants` first), with per-channel non-zero zero points, or
//! with a range wider than 8 bits are left as they are.

use qir::{ElemType, Graph, Init, NodeId, Op, QuantParams, QuantType, Shape, Type};

use crate::lowering::{Ct, Rebuild, const_values, err, storage_8bit};

/// The storage of a weight range: `i4` for [-8, 7] and narrower, else 8 bits.
fn storage_4_or_8bit(qmin: i64, qmax: i64) -> Option<qir::Storage> {
    if qmin >= -8 && qmax <= 7 {
        Some(qir::Storage::I4)
    } else {
        storage_8bit(qmin, qmax)
    }
}
use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};

/// The `quantize-weights` pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuantizeWeights;

/// `(outer, channels, inner)` of a shape split at `axis`.
fn layout(shape: &[usize], axis: Option<usize>) -> (usize, usize, usize) {
    match axis {
        None => (1, 1, shape.iter().product()),
        Some(a) => (
            shape[..a].iter().product(),
            shape[a],
            shape[a + 1..].iter().product(),
        ),
    }
}

/// Scales and integer zero points of a fake-quant whose parameters are the constants `s`,
/// `z` (LSQ zero points are rounded and clamped as its forward does).
pub(crate) fn fake_quant_params(
    g: &Graph,
    id: NodeId,
    s: &Ct,
    z: &Ct,
) -> Result<(Vec<f32>, Vec<i64>), PassError> {
    let inst = g.node(id).inst().ok_or_else(|| err(g, id, "is not a fake-quant"))?;
    let (qmin, qmax) = (inst.int("qmin").unwrap_or(-128), inst.int("qmax").unwrap_or(127));
    if s.v.len() != z.v.len() || s.v.is_empty() {
        return Err(err(g, id, "scale and zero point differ in size"));
    }
    if let Some(bad) = s.v.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
        return Err(err(g, id, format!("scale {bad} is not positive and finite")));
    }
    let zps = z
        .v
        .iter()
        .map(|&x| {
            if inst.op == Op::FakeQuantLsq {
                (x.round_ties_even() as i64).clamp(qmin, qmax)
            } else {
                x as i64
            }
        })
        .collect();
    Ok((s.v.clone(), zps))
}

/// The integers of a fake quantization of `x`, as the executors compute it (f32 inverse
/// scale, ties to even, clamped).
fn fake_quant_ints(x: &Ct, scales: &[f32], zps: &[i64], axis: Option<usize>, qmin: i64, qmax: i64) -> Vec<i64> {
    let (outer, ch, inner) = layout(&x.shape, axis);
    let mut q = vec![0i64; x.v.len()];
    for o in 0..outer {
        for c in 0..ch {
            let k = if scales.len() == 1 { 0 } else { c };
            let inv = 1.0f32 / scales[k];
            for i in 0..inner {
                let at = (o * ch + c) * inner + i;
                let r = zps[k] as f32 + (x.v[at] * inv).round_ties_even();
                q[at] = r.clamp(qmin as f32, qmax as f32) as i64;
            }
        }
    }
    q
}

/// Quantizes the weights of `g` (see the module docs); `None` when there is none.
pub fn quantize_weights(g: &Graph) -> Result<Option<Graph>, PassError> {
    let mut rb = Rebuild::new(g)?;
    let mut changed = false;
    for id in rb.ops()? {
        let inst = g.node(id).inst().cloned().ok_or_else(|| err(g, id, "is not an op"))?;
        let ops = g.operands(id);
        let consts = if matches!(inst.op, Op::FakeQuant | Op::FakeQuantLsq) {
            ops.iter().map(|&o| const_values(g, o)).collect::<Option<Vec<Ct>>>()
        } else {
            None
        };
        let Some(cs) = consts else {
            rb.copy(id)?;
            continue;
        };
        let (qmin, qmax) = (inst.int("qmin").unwrap_or(-128), inst.int("qmax").unwrap_or(127));
        let (scales, zps) = fake_quant_params(g, id, &cs[1], &cs[2])?;
        let axis = match inst.int("axis") {
            Some(a) => Some(g.ty(ops[0]).shape.axis(a).ok_or_else(|| err(g, id, "axis out of range"))?),
            None => None,
        };
        let per_axis = axis.is_some() && scales.len() > 1;
        // 4-bit ranges are stored as i4 (packed two per byte in tensor files)
        let storage = match storage_4_or_8bit(qmin, qmax) {
            Some(s) if !(per_axis && zps.iter().any(|&z| z != 0)) => s,
            _ => {
                rb.copy(id)?;
                continue;
            }
        };
        let q = fake_quant_ints(&cs[0], &scales, &zps, axis, qmin, qmax);
        // named after the weight the fake-quant reads (`fc.w.q`, `conv1.w.folded.q`)
        let base = rb.src_name(ops[0]);
        let params = match axis {
            Some(axis) if per_axis => {
                let ty = Type::new(ElemType::F32, Shape::fixed(&[scales.len() as u64]));
                let s = rb.constant(&format!("{base}.scales"), ty, scales.iter().map(|&s| s as f64).collect())?;
                QuantParams::PerAxisRef {
                    axis,
                    scales: rb.out.node(s).name.clone().unwrap_or_default(),
                    zero_points: None,
                }
            }
            _ => QuantParams::PerTensor {
                scale: scales[0],
                zero_point: zps[0],
            },
        };
        let elem = ElemType::Quant(Box::new(QuantType {
            storage,
            qmin,
            qmax,
            params,
        }));
        let ty = g.ty(ops[0]).with_elem(elem);
        let name = rb.out.fresh_name(&format!("{base}.q"));
        let wq = rb.out.add_const(&name, ty, Init::Dense(q.iter().map(|&x| x as f64).collect()))?;
        let dq = rb.add(id, qir::Inst::new(Op::Dequantize), &[wq], g.ty(id).clone(), &rb.src_name(id))?;
        rb.out.node_mut(dq).comments = g.node(id).comments.clone();
        rb.set(id, dq);
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    rb.finish().map(Some)
}

impl Pass for QuantizeWeights {
    fn name(&self) -> &'static str {
        "quantize-weights"
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        match quantize_weights(g)? {
            Some(out) => {
                *g = out;
                Ok(Changed::Yes)
            }
            None => Ok(Changed::No),
        }
    }
}

impl PassDef for QuantizeWeights {
    const INFO: PassInfo = PassInfo {
        name: "quantize-weights",
        summary: "fake-quantized constants become integer constants (per channel as trained) read through dequantize",
        options: &[],
    };
    fn from_options(_: &Options) -> Result<Self, OptionError> {
        Ok(QuantizeWeights)
    }
}
