//! `strip-training`: the inference model of a training graph — the loss and the updates
//! are dropped, then every node the outputs do not read (the loss's ops, the labels, state
//! only the updates wrote).
//!
//! ```text
//! input %label: i32[B]                                  =>   (dropped)
//! %loss = softmax_cross_entropy(%logits, %label) : f32[]   =>   (dropped)
//! loss %loss                                            =>   (dropped)
//! ```
//!
//! Parameters and state the outputs read are kept (they are the model's values; in the
//! integer conversion `bind-state` has made them constants).

use std::collections::HashSet;

use qir::Graph;

use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};

/// The `strip-training` pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StripTraining;

/// Drops the loss, the updates and what only they read (see the module docs).
pub fn strip_training(g: &mut Graph) -> Changed {
    let mut changed = g.loss_decl().is_some() || !g.updates().is_empty();
    g.set_loss_decl(None);
    g.updates_mut().clear();
    let mut live = HashSet::new();
    let mut stack: Vec<_> = g.outputs().iter().map(|o| o.value).collect();
    while let Some(id) = stack.pop() {
        if live.insert(id) {
            stack.extend(g.operands(id));
            // a constant named by a per-axis type lives with it
            if let Some(qir::QuantType {
                params: qir::QuantParams::PerAxisRef { scales, zero_points, .. },
                ..
            }) = g.ty(id).elem.quant()
            {
                stack.extend(std::iter::once(scales).chain(zero_points).filter_map(|n| g.find(n)));
            }
        }
    }
    for id in g.node_ids() {
        if !live.contains(&id) {
            g.remove_node(id);
            changed = true;
        }
    }
    changed.into()
}

impl Pass for StripTraining {
    fn name(&self) -> &'static str {
        "strip-training"
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        Ok(strip_training(g))
    }
}

impl PassDef for StripTraining {
    const INFO: PassInfo = PassInfo {
        name: "strip-training",
        summary: "drop the loss, the updates and the ops and inputs only they read (the inference model)",
        options: &[],
    };
    fn from_options(_: &Options) -> Result<Self, OptionError> {
        Ok(StripTraining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_loss_and_the_labels() {
        let text = "graph @m {
  input %x: f32[B, 4]
  input %label: i32[B]
  const %w: f32[3, 4] = zeros

  %logits = linear(%x, %w) : f32[B, 3]
  %loss = softmax_cross_entropy(%logits, %label) : f32[]

  output logits = %logits
  loss %loss
}
";
        let mut g = qir_reader::parse_and_verify(text).unwrap();
        assert_eq!(strip_training(&mut g), Changed::Yes);
        qir::verify::verify(&g).unwrap();
        let printed = qir::print::print(&g);
        assert!(!printed.contains("label") && !printed.contains("loss"), "{printed}");
        assert!(printed.contains("%logits = linear(%x, %w)"), "{printed}");
        assert_eq!(strip_training(&mut g), Changed::No);
    }
}
