//! `lower-rescale-ops`: a `quantize` of a float op of dequantized values becomes the
//! integer op that rescales straight onto the quantize's grid:
//!
//! ```text
//! %s = add(%a.real, %b.real) : f32[...]                           %s.fq = qadd(%a, %b) {rounding = half_even, act = relu} : ...
//! %r = relu(%s) : f32[...]                                   =>
//! %s.fq = quantize(%r) {rounding = half_even} : ...
//! ```
//!
//! - `quantize(dequantize(q))`: `q` itself when the grids are one (exact: see
//!   `egraph::rules::qdq`), else `requantize` with the Q0.31 multiplier and shift of
//!   `s_q / s_y`;
//! - `quantize(add(dequantize a, dequantize b))`, the add's fused activation or a
//!   `relu` / `relu6` after it in the clamp: `qadd`;
//! - `quantize(concat(dequantize ...))`: `qconcat`, each input rescaled to the grid;
//! - `quantize(global_avg_pool(dequantize x))`: `qglobal_avg_pool`.
//!
//! Per-tensor grids only. The float op stays for other readers (`canonicalize` removes it
//! when none is left). Every rescaling op names the `rounding` option's rounding.

use qir::quant::{Rounding, quantize_multiplier};
use qir::{Graph, NodeId, Op};

use crate::lowering::{Grid, ROUNDING_OPTION, Rebuild, dequantized, err, rounding_option};
use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The `lower-rescale-ops` pass.
#[derive(Clone, Debug, PartialEq)]
pub struct LowerRescaleOps {
    /// The rounding of every rescaling op.
    pub rounding: Rounding,
}

impl Default for LowerRescaleOps {
    fn default() -> Self {
        LowerRescaleOps {
            rounding: Rounding::HalfEven,
        }
    }
}

/// The quantized values (of the new graph) that every operand of source op `id`
/// dequantizes, if every one does onto a per-tensor grid.
fn quantized_operands(rb: &Rebuild, id: NodeId) -> Option<Vec<(NodeId, Grid)>> {
    rb.src
        .operands(id)
        .into_iter()
        .map(|o| {
            let q = dequantized(&rb.out, rb.try_get(o)?)?;
            Some((q, Grid::of(rb.out.ty(q))?))
        })
        .collect()
}

/// The integer op a `quantize` of `x` becomes: `(op, attributes, operands)`, or the
/// quantized value itself when `x` dequantizes a value already on the grid.
enum Lowered {
    Same(NodeId),
    Op(Op, Vec<(&'static str, qir::Attr)>, Vec<NodeId>),
}

fn lowered(rb: &Rebuild, id: NodeId, grid: Grid, rounding: Rounding) -> Result<Option<Lowered>, PassError> {
    let g = rb.src;
    let x = g.operands(id)[0];
    let round = ("rounding", qir::Attr::Enum(rounding.name()));
    if let Some(q) = rb.try_get(x).and_then(|n| dequantized(&rb.out, n))
        && let Some(gq) = Grid::of(rb.out.ty(q))
    {
        if gq == grid {
            return Ok(Some(Lowered::Same(q)));
        }
        let real = gq.scale as f64 / grid.scale as f64;
        let (m, sh) = quantize_multiplier(real)
            .ok_or_else(|| err(g, id, format!("rescale factor {real} is not representable")))?;
        let attrs = vec![
            ("multiplier", qir::Attr::Ints(vec![m])),
            ("shift", qir::Attr::Ints(vec![sh])),
            round,
        ];
        return Ok(Some(Lowered::Op(Op::Requantize, attrs, vec![q])));
    }
    let Some(inst) = g.node(x).inst() else { return Ok(None) };
    // an activation after an addition goes into its clamp
    let (sum, act) = match inst.op {
        Op::Relu | Op::Relu6 => {
            let s = g.operands(x)[0];
            let is_plain_add = g
                .node(s)
                .inst()
                .is_some_and(|i| i.op == Op::Add && i.choice("act").unwrap_or("none") == "none");
            if !is_plain_add {
                return Ok(None);
            }
            (s, if inst.op == Op::Relu { "relu" } else { "relu6" })
        }
        Op::Add => (x, inst.choice("act").unwrap_or("none")),
        _ => (x, "none"),
    };
    let Some(inst) = g.node(sum).inst() else { return Ok(None) };
    let Some(qs) = quantized_operands(rb, sum) else { return Ok(None) };
    let qs: Vec<NodeId> = qs.into_iter().map(|(q, _)| q).collect();
    Ok(match inst.op {
        Op::Add if qs.len() == 2 => Some(Lowered::Op(Op::Qadd, vec![round, ("act", qir::Attr::Enum(act))], qs)),
        Op::Concat => Some(Lowered::Op(
            Op::Qconcat,
            vec![("axis", qir::Attr::Int(inst.int("axis").unwrap_or(0))), round],
            qs,
        )),
        Op::GlobalAvgPool => Some(Lowered::Op(Op::QglobalAvgPool, vec![round], qs)),
        _ => None,
    })
}

/// Lowers the rescaling ops of `g` (see the module docs); `None` when there is none.
pub fn lower_rescale_ops(g: &Graph, rounding: Rounding) -> Result<Option<Graph>, PassError> {
    let mut rb = Rebuild::new(g)?;
    let mut changed = false;
    for id in rb.ops()? {
        let node = g.node(id);
        let grid = match node.op() {
            Some(Op::Quantize) => Grid::of(&node.ty),
            _ => None,
        };
        let Some(l) = grid.map(|gr| lowered(&rb, id, gr, rounding)).transpose()?.flatten() else {
            rb.copy(id)?;
            continue;
        };
        let new = match l {
            Lowered::Same(q) => q,
            Lowered::Op(op, attrs, operands) => {
                let inst = rb.inst(id, op, &attrs)?;
                let n = rb.add(id, inst, &operands, node.ty.clone(), &rb.src_name(id))?;
                let nm = rb.out.node_mut(n);
                nm.loc = node.loc;
                nm.comments = node.comments.clone();
                n
            }
        };
        rb.set(id, new);
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    rb.finish().map(Some)
}

impl Pass for LowerRescaleOps {
    fn name(&self) -> &'static str {
        "lower-rescale-ops"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("rounding", OptValue::Scalar(self.rounding.name().to_string()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        match lower_rescale_ops(g, self.rounding)? {
            Some(out) => {
                *g = out;
                Ok(Changed::Yes)
            }
            None => Ok(Changed::No),
        }
    }
}

impl PassDef for LowerRescaleOps {
    const INFO: PassInfo = PassInfo {
        name: "lower-rescale-ops",
        summary: "quantize of dequantized values, add, concat or global_avg_pool becomes requantize, qadd, qconcat, qglobal_avg_pool",
        options: &[ROUNDING_OPTION],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(LowerRescaleOps {
            rounding: rounding_option(options)?,
        })
    }
}
