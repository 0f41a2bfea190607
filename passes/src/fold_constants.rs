//! `fold-constants`: every arithmetic value computed from constants alone becomes a
//! constant, evaluated in f32 as the executors evaluate it — the batch-norm factors and
//! folded weights of `fold-batchnorm-qat`, the scales and zero points `qparams_scale` /
//! `qparams_zero_point` compute from bound observer ranges.
//!
//! ```text
//! const %x.min: f32[] = [-1.0]                    const %x.scale: f32[] = [0.007843138]
//! const %x.max: f32[] = [1.0]               =>    const %x.zp: i32[] = [-1.0]
//! %x.scale = qparams_scale(%x.min, %x.max) ...
//! %x.zp = qparams_zero_point(%x.min, %x.max) ...
//! ```
//!
//! Folded: `add`, `sub`, `mul`, `div` (NumPy broadcasting), `sqrt`, `reshape`, `flatten`,
//! `qparams_scale`, `qparams_zero_point`; a folded value keeps the op's name and type.
//! Other ops of constants (a `fake_quant` of a weight: `quantize-weights`) are kept. A
//! range never observed (`min > max`, the initial `+inf`/`-inf`) is an error naming it: it
//! would quantize with the smallest scale.

use qir::quant::{QparamRule, qparams_f32};
use qir::{Graph, Init, Inst, NodeId, NodeKind, Op};

use crate::lowering::{Ct, Rebuild, const_values, dims, err};
use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};

/// The `fold-constants` pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FoldConstants;

/// Broadcast binary op on constants (NumPy rules).
fn broadcast(a: &Ct, b: &Ct, f: impl Fn(f32, f32) -> f32) -> Option<Ct> {
    let r = a.shape.len().max(b.shape.len());
    let pad = |s: &[usize]| {
        let mut p = vec![1; r - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (sa, sb) = (pad(&a.shape), pad(&b.shape));
    let mut shape = Vec::with_capacity(r);
    for i in 0..r {
        shape.push(match (sa[i], sb[i]) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        });
    }
    // element strides, 0 along broadcast axes
    let strides = |s: &[usize]| {
        let mut st = vec![0; r];
        let mut acc = 1;
        for i in (0..r).rev() {
            st[i] = if s[i] == 1 { 0 } else { acc };
            acc *= s[i];
        }
        st
    };
    let (ta, tb) = (strides(&sa), strides(&sb));
    let n: usize = shape.iter().product();
    let mut v = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let ia: usize = idx.iter().zip(&ta).map(|(i, s)| i * s).sum();
        let ib: usize = idx.iter().zip(&tb).map(|(i, s)| i * s).sum();
        v.push(f(a.v[ia], b.v[ib]));
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(Ct { shape, v })
}

/// The value of op `id` of constants `cs`; `None` for ops this pass does not fold.
fn fold(g: &Graph, id: NodeId, inst: &Inst, cs: &[Ct]) -> Result<Option<Ct>, PassError> {
    let bin = |f: fn(f32, f32) -> f32| {
        broadcast(&cs[0], &cs[1], f)
            .map(Some)
            .ok_or_else(|| err(g, id, "operands do not broadcast"))
    };
    match inst.op {
        Op::Add => bin(|a, b| a + b),
        Op::Sub => bin(|a, b| a - b),
        Op::Mul => bin(|a, b| a * b),
        Op::Div => bin(|a, b| a / b),
        Op::Sqrt => Ok(Some(Ct {
            shape: cs[0].shape.clone(),
            v: cs[0].v.iter().map(|x| x.sqrt()).collect(),
        })),
        Op::Reshape | Op::Flatten => {
            let shape = dims(g, id).ok_or_else(|| err(g, id, "needs a fixed shape"))?;
            Ok(Some(Ct {
                shape,
                v: cs[0].v.clone(),
            }))
        }
        Op::QparamsScale | Op::QparamsZeroPoint => {
            if cs[0].v.len() != cs[1].v.len() {
                return Err(err(g, id, "min and max differ in size"));
            }
            if cs[0].v.iter().zip(&cs[1].v).any(|(mn, mx)| mn > mx) {
                let o = g.operands(id)[0];
                return Err(err(
                    g,
                    id,
                    format!(
                        "the range {} was never observed (train or calibrate with the scheme first)",
                        g.describe(o)
                    ),
                ));
            }
            let rule = QparamRule {
                qmin: inst.int("qmin").unwrap_or(-128),
                qmax: inst.int("qmax").unwrap_or(127),
                symmetric: inst.boolean("symmetric").unwrap_or(false),
                power_of_two: inst.boolean("power_of_two").unwrap_or(false),
                eps: inst.float("eps").unwrap_or(f32::EPSILON as f64),
            };
            let v = cs[0]
                .v
                .iter()
                .zip(&cs[1].v)
                .map(|(&mn, &mx)| {
                    let (s, z) = qparams_f32(mn, mx, rule);
                    if inst.op == Op::QparamsScale { s } else { z as f32 }
                })
                .collect();
            Ok(Some(Ct {
                shape: cs[0].shape.clone(),
                v,
            }))
        }
        _ => Ok(None),
    }
}

/// Folds `g` (see the module docs); `None` when nothing folds.
pub fn fold_constants(g: &Graph) -> Result<Option<Graph>, PassError> {
    let mut rb = Rebuild::new(g)?;
    let mut changed = false;
    // the values of the constants of the new graph, by source node
    let mut values = std::collections::HashMap::new();
    for id in g.node_ids() {
        if let Some(c) = const_values(g, id) {
            values.insert(id, c);
        }
    }
    for id in rb.ops()? {
        let NodeKind::Op(inst) = &g.node(id).kind else { continue };
        let cs: Option<Vec<Ct>> = g.operands(id).iter().map(|o| values.get(o).cloned()).collect();
        let folded = match &cs {
            Some(cs) => fold(g, id, inst, cs)?,
            None => None,
        };
        match folded {
            Some(c) => {
                let name = rb.src_name(id);
                let name = rb.out.fresh_name(&name);
                let init = Init::Dense(c.v.iter().map(|&x| x as f64).collect());
                let n = rb.out.add_const(&name, g.ty(id).clone(), init)?;
                rb.out.node_mut(n).comments = g.node(id).comments.clone();
                rb.set(id, n);
                values.insert(id, c);
                changed = true;
            }
            None => {
                rb.copy(id)?;
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    rb.finish().map(Some)
}

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        match fold_constants(g)? {
            Some(out) => {
                *g = out;
                Ok(Changed::Yes)
            }
            None => Ok(Changed::No),
        }
    }
}

impl PassDef for FoldConstants {
    const INFO: PassInfo = PassInfo {
        name: "fold-constants",
        summary: "evaluate the arithmetic and quantization parameters of constants in f32, as the executors do",
        options: &[],
    };
    fn from_options(_: &Options) -> Result<Self, OptionError> {
        Ok(FoldConstants)
    }
}
