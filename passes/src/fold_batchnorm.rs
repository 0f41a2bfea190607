//! `fold-batchnorm`: folds inference-mode `batch_norm` into the weights and bias of the
//! `conv2d` or `linear` before it (`egraph::rules::batchnorm`), leaving the new weight and
//! bias as ops over params and state that convert constant-folds.
//!
//! Needs a verified f32 graph; folds only when the contraction's result has no other use
//! and no fused activation; the folded op takes the batch-norm's name. For inference
//! graphs: QAT's simulated folding is a different pass. Bounded by [`Limits`] (options
//! `node-limit`, `iter-limit`, `time-limit-ms`).

use qir::Graph;

use crate::egraph::{self, Limits, Report, Rewrite, rules};
use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The rules `fold-batchnorm` runs.
pub fn fold_batchnorm_rules() -> Vec<Rewrite> {
    rules::batchnorm::rules()
}

/// Folds batch-norms in `g` in place within `limits`.
pub fn fold_batchnorm(g: &mut Graph, limits: &Limits) -> Result<Report, PassError> {
    egraph::rewrite(g, "fold-batchnorm", &fold_batchnorm_rules(), limits)
}

/// The `fold-batchnorm` pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FoldBatchNorm {
    /// Bounds of the e-graph run.
    pub limits: Limits,
}

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        self.limits.to_options()
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        egraph::run_pass(g, "fold-batchnorm", &fold_batchnorm_rules(), &self.limits)
    }
}

impl PassDef for FoldBatchNorm {
    const INFO: PassInfo = PassInfo {
        name: "fold-batchnorm",
        summary: "fold inference batch_norm into the weights and bias of the conv2d or linear before it",
        options: Limits::OPTIONS,
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(FoldBatchNorm {
            limits: Limits::from_options(options)?,
        })
    }
}
