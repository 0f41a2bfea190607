//! The executor contract: an [`Executor`] prepares a verified graph once into a
//! [`Program`] (the interpreter plans an evaluation order; the JIT compiles native code
//! and a memory plan), and the program runs many batches against a [`Store`] of
//! parameters, state and constants.
//!
//! Invariants asked of every implementation:
//! - a program computes exactly the graph's function: the graph is the whole truth (there
//!   is no run-time mode; observers are frozen by the `freeze-observers` rewrite, updates
//!   dropped by removing them from the graph);
//! - inputs are checked with [`crate::bind_inputs`] before any data is touched;
//! - after a successful run, every `update` target in the store holds its new value (in
//!   its declared element type); a failed run leaves the store untouched — in particular
//!   a non-finite loss is [`ExecError::Loss`] and no update is applied;
//! - the values asked for with `fetch` at preparation come back in
//!   [`RunOutput::fetched`], by node id.

use std::collections::{BTreeMap, HashMap};

use qir::{Graph, NodeId, Tensor};

use crate::error::ExecError;
use crate::store::Store;

/// A run's inputs, by input name (without `%`).
pub type Inputs = HashMap<String, Tensor>;

/// What one run produced.
#[derive(Clone, Debug, Default)]
pub struct RunOutput {
    /// The graph's named outputs.
    pub outputs: BTreeMap<String, Tensor>,
    /// The loss, if the graph designates one.
    pub loss: Option<f64>,
    /// The values asked for with `fetch` when the program was prepared.
    pub fetched: HashMap<NodeId, Tensor>,
}

/// A graph prepared for repeated runs.
pub trait Program: Send {
    /// The graph this program runs.
    fn graph(&self) -> &Graph;

    /// The values every run returns besides the outputs (fixed at preparation).
    fn fetch(&self) -> &[NodeId];

    /// Runs one batch: `inputs` by input name, parameters, state and constants from
    /// `store`; applies the graph's `update`s to `store` when the run succeeds.
    fn run(&mut self, store: &mut Store, inputs: &Inputs) -> Result<RunOutput, ExecError>;

    /// Prepares runs whose inputs bind the symbols as `symbols` says (e.g. `B = 128`)
    /// before the first such run, so that a compiling executor does its work ahead (say,
    /// while the data loads) instead of in that run. Executors that compile nothing do
    /// nothing; an error is what that first run would report.
    fn warm(&mut self, _store: &Store, _symbols: &crate::Bindings) -> Result<(), ExecError> {
        Ok(())
    }

    /// A one-line description of how the program runs (for `--verbose` output and
    /// benchmarks): the executor and what it prepared.
    fn describe(&self) -> String {
        format!("graph @{}", self.graph().name)
    }

    /// What the executor prepared, one entry per compiled form (a JIT compiles one per
    /// batch size); empty for executors that compile nothing.
    fn stats(&self) -> Vec<ProgramStats> {
        Vec::new()
    }
}

/// What an executor prepared for one batch size: for benchmarks and `--print-plan`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProgramStats {
    /// The values of the symbolic dimensions it was prepared for.
    pub bindings: crate::Bindings,
    /// Seconds spent lowering and planning.
    pub plan_seconds: f64,
    /// Seconds spent generating code.
    pub compile_seconds: f64,
    /// Bytes of the memory arena.
    pub arena_bytes: usize,
    /// Bytes of all intermediates if none shared space.
    pub intermediate_bytes: usize,
    /// The memory plan as text.
    pub plan: String,
    /// Time per step summed over profiled runs: (kind, what, seconds).
    pub profile: Vec<(String, String, f64)>,
    /// Runs profiled.
    pub profiled_runs: usize,
}

/// Something that prepares graphs for running.
pub trait Executor: Send + Sync {
    /// A short name for messages (`interp`, `jit`).
    fn name(&self) -> &'static str;

    /// Prepares `g` (which must verify) for repeated runs that also return the values of
    /// `fetch`.
    fn prepare(&self, g: &Graph, fetch: &[NodeId]) -> Result<Box<dyn Program>, ExecError>;
}

/// The loss of a run as f64 from its scalar tensor; `Err` names the loss node when the
/// value is not a finite float scalar.
pub fn loss_value(g: &Graph, t: &Tensor) -> Result<f64, ExecError> {
    let node = || g.loss().map(|l| g.describe(l)).unwrap_or_default();
    let v = match (&t.data, t.data.len()) {
        (qir::Data::F32(v), 1) => v[0] as f64,
        (qir::Data::F64(v), 1) => v[0],
        _ => {
            return Err(ExecError::Node {
                node: node(),
                message: "the loss is not a float scalar".into(),
            });
        }
    };
    if !v.is_finite() {
        return Err(ExecError::Loss {
            node: node(),
            value: v,
        });
    }
    Ok(v)
}
