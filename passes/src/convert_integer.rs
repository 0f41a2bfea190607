//! `convert-integer`: lowers a fake-quant model whose trained parameters and observer
//! ranges are bound as constants (`freeze-observers`, then `bind-state`) to an
//! integer-only model, as DESIGN §2 describes. It is the chain of the passes that each do
//! one step, usable alone (the named pipeline `convert` lists them):
//!
//! 1. `strip-training`: the loss and the inputs only it reads (labels) are dropped;
//! 2. `fold-constants`: what the model computes from constants alone (batch-norm factors,
//!    folded weights, quantization parameters) is evaluated, in f32 as the executors do;
//! 3. `quantize-weights`: fake-quantized constant weights become integer constants (per
//!    channel when the fake-quant was);
//! 4. `fake-quant-to-qdq`: activation fake-quants become `quantize` -> `dequantize`;
//! 5. `sink-dequantize`: `max_pool2d`, `reshape`, `flatten` and one-grid `concat` run on
//!    the integers;
//! 6. `lower-layers`: `qlinear` / `qconv2d` with the int32 bias at `s_in·s_w`, per-channel
//!    affine ops (batch-norm) folded, and `requantize` (Q0.31 multiplier and shift per
//!    output channel, ReLU/ReLU6 in its clamp);
//! 7. `lower-rescale-ops`: `requantize` between grids, `qadd`, `qconcat`,
//!    `qglobal_avg_pool`;
//! 8. `canonicalize`: what the lowering left unused is removed.
//!
//! What the scheme left in float (a skipped layer, and what reads it until the next
//! fake-quant) stays a float op reading `dequantize`d values: a mixed-precision model
//! converts too. Option `rounding` (default `half_even`, the rounding of `fake_quant`)
//! names the rounding of every rescaling op.
//!
//! Before the chain, every parameter and state value the outputs read must have a bound
//! value (they become constants): else an error naming the first one. Errors of a step
//! name the value in the graph that step received, which the pass leaves in place.

use std::collections::HashSet;

use qir::quant::Rounding;
use qir::{Graph, NodeKind};

use crate::canonicalize::Canonicalize;
use crate::lowering::{err, values_of_init};
use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The `convert-integer` pass.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertInteger {
    /// The rounding of every rescaling op.
    pub rounding: Rounding,
}

impl Default for ConvertInteger {
    fn default() -> Self {
        ConvertInteger {
            rounding: Rounding::HalfEven,
        }
    }
}

/// Makes the parameters and state the outputs read constants; an error names the first
/// without a bound value.
fn bind_check(g: &mut Graph) -> Result<(), PassError> {
    let order = g
        .topo_order()
        .map_err(|_| PassError::new("the graph has a cycle"))?;
    let mut live = HashSet::new();
    let mut stack: Vec<_> = g.outputs().iter().map(|o| o.value).collect();
    while let Some(id) = stack.pop() {
        if live.insert(id) {
            stack.extend(g.operands(id));
        }
    }
    for id in order.into_iter().filter(|id| live.contains(id)) {
        let node = g.node(id);
        let init = match &node.kind {
            NodeKind::Param(init) | NodeKind::State(init) | NodeKind::Const(init) => init.clone(),
            _ => continue,
        };
        let shape = crate::lowering::dims(g, id).ok_or_else(|| err(g, id, "a constant needs a fixed shape"))?;
        if values_of_init(&init, &shape).is_none() {
            return Err(err(g, id, "has no bound value (run bind-state with the trained weights first)"));
        }
        g.node_mut(id).kind = NodeKind::Const(init);
    }
    Ok(())
}

/// Runs the chain on `g` in place; on an error `g` is the graph the failing step received.
fn run_chain(g: &mut Graph, rounding: Rounding) -> Result<(), PassError> {
    bind_check(g)?;
    crate::strip_training::strip_training(g);
    type Step = fn(&Graph, Rounding) -> Result<Option<Graph>, PassError>;
    let steps: [Step; 6] = [
        |g, _| crate::fold_constants::fold_constants(g),
        |g, _| crate::quantize_weights::quantize_weights(g),
        crate::fake_quant_to_qdq::fake_quant_to_qdq,
        crate::sink_dequantize::sink_dequantize,
        crate::lower_layers::lower_layers,
        crate::lower_rescale_ops::lower_rescale_ops,
    ];
    for step in steps {
        if let Some(out) = step(g, rounding)? {
            *g = out;
        }
    }
    Canonicalize::default().run(g)?;
    Ok(())
}

/// Lowers `g` to its integer-only form (see the module docs).
pub fn convert_integer(g: &Graph, rounding: Rounding) -> Result<Graph, PassError> {
    let mut out = g.clone();
    run_chain(&mut out, rounding)?;
    Ok(out)
}

impl Pass for ConvertInteger {
    fn name(&self) -> &'static str {
        "convert-integer"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("rounding", OptValue::Scalar(self.rounding.name().to_string()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        run_chain(g, self.rounding)?;
        Ok(Changed::Yes)
    }
}

impl PassDef for ConvertInteger {
    const INFO: PassInfo = PassInfo {
        name: "convert-integer",
        summary: "the whole integer lowering of a fake-quant model with bound state: the chain of the convert passes",
        options: &[crate::lowering::ROUNDING_OPTION],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(ConvertInteger {
            rounding: crate::lowering::rounding_option(options)?,
        })
    }
}
