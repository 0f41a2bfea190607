//! `fuse`: fuses `relu`/`relu6` into the `act` attribute of the `linear`, `conv2d` or
//! `add` that produces their input, with the e-graph fusion rules
//! (`egraph::rules::fusion`) and the cost model deciding.
//!
//! Needs a verified graph; fuses only ops whose result has no other use; keeps names,
//! comments and locations (the fused op takes the activation's name). Bounded by
//! [`Limits`] (options `node-limit`, `iter-limit`, `time-limit-ms`).

use qir::Graph;

use crate::egraph::{self, Limits, Report, Rewrite, rules};
use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The rules `fuse` runs.
pub fn fuse_rules() -> Vec<Rewrite> {
    rules::fusion::rules()
}

/// Fuses activations in `g` in place within `limits`.
pub fn fuse(g: &mut Graph, limits: &Limits) -> Result<Report, PassError> {
    egraph::rewrite(g, "fuse", &fuse_rules(), limits)
}

/// The `fuse` pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fuse {
    /// Bounds of the e-graph run.
    pub limits: Limits,
}

impl Pass for Fuse {
    fn name(&self) -> &'static str {
        "fuse"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        self.limits.to_options()
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        egraph::run_pass(g, "fuse", &fuse_rules(), &self.limits)
    }
}

impl PassDef for Fuse {
    const INFO: PassInfo = PassInfo {
        name: "fuse",
        summary: "fuse relu and relu6 into the act attribute of linear, conv2d and add",
        options: Limits::OPTIONS,
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(Fuse {
            limits: Limits::from_options(options)?,
        })
    }
}
