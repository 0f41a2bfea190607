//! `sink-dequantize`: ops that are exact on a quantization grid run on the integers, the
//! `dequantize` moving after them:
//!
//! ```text
//! %pool = max_pool2d(%h.real) {kernel = [2, 2]} : f32[B, 2, 4, 4]         %pool = max_pool2d(%h) {kernel = [2, 2]} : !quant.uniform<i8:f32, 0.016:-128>[B, 2, 4, 4]
//! (%h.real = dequantize(%h))                                       =>     %pool.real = dequantize(%pool) : f32[B, 2, 4, 4]
//! ```
//!
//! Sunk: `max_pool2d`, `reshape` and `flatten` of a per-tensor quantized value (dequantizing
//! is monotone and elementwise, so the maximum and the moves commute with it), and `concat`
//! of values on one grid (a `qconcat` onto that grid, which copies them). Chains sink in
//! one run. The `dequantize` of an output takes the output's name.

use qir::quant::Rounding;
use qir::{Graph, Op};

use crate::lowering::{Grid, ROUNDING_OPTION, Rebuild, dequantized, rounding_option};
use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The `sink-dequantize` pass.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkDequantize {
    /// The rounding named by the `qconcat` ops it makes (they rescale nothing).
    pub rounding: Rounding,
}

impl Default for SinkDequantize {
    fn default() -> Self {
        SinkDequantize {
            rounding: Rounding::HalfEven,
        }
    }
}

/// Sinks the dequantizes of `g` (see the module docs); `None` when none moves.
pub fn sink_dequantize(g: &Graph, rounding: Rounding) -> Result<Option<Graph>, PassError> {
    let mut rb = Rebuild::new(g)?;
    let mut changed = false;
    for id in rb.ops()? {
        let node = g.node(id);
        let Some(inst) = node.inst() else { continue };
        let ops = g.operands(id);
        // the quantized values (of the new graph) the operands dequantize, on one grid
        let mut qs = Vec::new();
        let mut grid = None;
        for &o in &ops {
            let Some(q) = rb.try_get(o).and_then(|n| dequantized(&rb.out, n)) else { break };
            let Some(gq) = Grid::of(rb.out.ty(q)) else { break };
            if grid.is_some_and(|g0| g0 != gq) {
                break;
            }
            grid = Some(gq);
            qs.push(q);
        }
        let sinks = match inst.op {
            Op::MaxPool2d | Op::Reshape | Op::Flatten => qs.len() == 1,
            Op::Concat => !ops.is_empty() && qs.len() == ops.len(),
            _ => false,
        };
        let (true, Some(grid)) = (sinks, grid) else {
            rb.copy(id)?;
            continue;
        };
        let new_inst = if inst.op == Op::Concat {
            rb.inst(
                id,
                Op::Qconcat,
                &[
                    ("axis", qir::Attr::Int(inst.int("axis").unwrap_or(0))),
                    ("rounding", qir::Attr::Enum(rounding.name())),
                ],
            )?
        } else {
            inst.clone()
        };
        let ty = node.ty.with_elem(grid.elem());
        let q = rb.add(id, new_inst, &qs, ty, &rb.src_name(id))?;
        let n = rb.out.node_mut(q);
        n.loc = node.loc;
        n.comments = node.comments.clone();
        let dq = rb.dequantize(id, q)?;
        rb.set(id, dq);
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    rb.finish().map(Some)
}

impl Pass for SinkDequantize {
    fn name(&self) -> &'static str {
        "sink-dequantize"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("rounding", OptValue::Scalar(self.rounding.name().to_string()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        match sink_dequantize(g, self.rounding)? {
            Some(out) => {
                *g = out;
                Ok(Changed::Yes)
            }
            None => Ok(Changed::No),
        }
    }
}

impl PassDef for SinkDequantize {
    const INFO: PassInfo = PassInfo {
        name: "sink-dequantize",
        summary: "max_pool2d, reshape, flatten and one-grid concat of dequantized values run on the integers",
        options: &[ROUNDING_OPTION],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(SinkDequantize {
            rounding: rounding_option(options)?,
        })
    }
}
