//! `simplify`: e-graph simplification with the fake-quant, Q/DQ, requantize and
//! backward-graph rule sets (`egraph::rules::{fake_quant, qdq, requant, backward}`).
//!
//! Needs a verified graph; keeps every declaration, output, loss and update, the names,
//! comments and locations of surviving values; rewrites only to strictly cheaper graphs
//! under the cost model, so a graph with nothing to simplify keeps its exact text. Every
//! run is bounded by [`Limits`] (options `node-limit`, `iter-limit`, `time-limit-ms`).

use qir::Graph;

use crate::egraph::{self, Limits, Report, Rewrite, rules};
use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The rules `simplify` runs.
pub fn simplify_rules() -> Vec<Rewrite> {
    let mut v = rules::fake_quant::rules();
    v.extend(rules::qdq::rules());
    v.extend(rules::requant::rules());
    v.extend(rules::backward::rules());
    v
}

/// Simplifies `g` in place within `limits`; the report says what ran and why it stopped.
pub fn simplify(g: &mut Graph, limits: &Limits) -> Result<Report, PassError> {
    egraph::rewrite(g, "simplify", &simplify_rules(), limits)
}

/// The `simplify` pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Simplify {
    /// Bounds of the e-graph run.
    pub limits: Limits,
}

impl Pass for Simplify {
    fn name(&self) -> &'static str {
        "simplify"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        self.limits.to_options()
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        egraph::run_pass(g, "simplify", &simplify_rules(), &self.limits)
    }
}

impl PassDef for Simplify {
    const INFO: PassInfo = PassInfo {
        name: "simplify",
        summary: "e-graph simplification of fake-quant, q/dq, requantize and backward-graph redundancies",
        options: Limits::OPTIONS,
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(Simplify {
            limits: Limits::from_options(options)?,
        })
    }
}
