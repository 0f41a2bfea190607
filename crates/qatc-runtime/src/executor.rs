//! Executors: what runs a graph for the trainer, the evaluator and calibration. An
//! [`Executor`] prepares a graph once into a [`Program`] (a JIT compiles it there; the
//! [`Interpreter`] keeps the graph), and the program runs many batches against a
//! [`Store`] of parameters and state.
//!
//! Invariants asked of every implementation: a failed run leaves the store untouched; a
//! non-finite loss is [`RuntimeError::NonFiniteLoss`]; `fetch`ed values come back by node
//! id (calibration reads the values its observers see through this).

use std::collections::{BTreeMap, HashMap};

use qir::{Graph, NodeId, Tensor};
use qir_interp::{InterpError, Mode, Precision, RunOptions, Store};

use crate::error::{Result, RuntimeError};

/// How one run treats state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exec {
    /// Training mode (observers fold the batch into their ranges) or evaluation mode
    /// (observers return their stored ranges).
    pub mode: Mode,
    /// Write the graph's `update` values back to the store.
    pub apply_updates: bool,
}

impl Exec {
    /// A training step: train mode, updates applied.
    pub const TRAIN: Exec = Exec {
        mode: Mode::Train,
        apply_updates: true,
    };
    /// An evaluation: eval mode, nothing written back.
    pub const EVAL: Exec = Exec {
        mode: Mode::Eval,
        apply_updates: false,
    };
}

/// What one run produced.
#[derive(Clone, Debug, Default)]
pub struct RunOutput {
    /// The graph's named outputs.
    pub outputs: BTreeMap<String, Tensor>,
    /// The loss, if the graph designates one.
    pub loss: Option<f64>,
    /// The values asked for with `fetch`.
    pub fetched: HashMap<NodeId, Tensor>,
}

/// A graph prepared for repeated runs.
pub trait Program {
    /// The graph this program runs.
    fn graph(&self) -> &Graph;

    /// Runs one batch: `inputs` by input name, parameters and state from `store`.
    fn run(
        &mut self,
        store: &mut Store,
        inputs: &HashMap<String, Tensor>,
        exec: Exec,
        fetch: &[NodeId],
    ) -> Result<RunOutput>;

    /// One training step (train mode, updates applied, observers as `mode` says); returns
    /// the loss, which the graph must designate.
    fn train_step(
        &mut self,
        store: &mut Store,
        inputs: &HashMap<String, Tensor>,
        mode: Mode,
    ) -> Result<f64> {
        let exec = Exec {
            mode,
            apply_updates: true,
        };
        let out = self.run(store, inputs, exec, &[])?;
        out.loss.ok_or_else(|| {
            RuntimeError::Graph(format!(
                "graph @{} has no loss to train on",
                self.graph().name
            ))
        })
    }

    /// One evaluation batch: eval mode, nothing written back.
    fn eval_batch(
        &mut self,
        store: &mut Store,
        inputs: &HashMap<String, Tensor>,
    ) -> Result<RunOutput> {
        self.run(store, inputs, Exec::EVAL, &[])
    }
}

/// Something that prepares graphs for running.
pub trait Executor {
    /// A short name for messages (`interpreter`, `jit`).
    fn name(&self) -> &'static str;
    /// Prepares `g` (which must verify) for repeated runs.
    fn prepare(&self, g: &Graph) -> Result<Box<dyn Program>>;
}

/// The reference interpreter (`qir-interp`) as an executor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interpreter {
    /// The float precision of every run.
    pub precision: Precision,
}

impl Executor for Interpreter {
    fn name(&self) -> &'static str {
        "interpreter"
    }
    fn prepare(&self, g: &Graph) -> Result<Box<dyn Program>> {
        // Verify now so that a broken graph fails before the first batch.
        qir_interp::Session::new(g)?;
        Ok(Box::new(InterpProgram {
            graph: g.clone(),
            precision: self.precision,
        }))
    }
}

/// A graph run by the interpreter. The interpreter's session borrows its graph, so the
/// program owns a copy and plans a session per run (verification and a topological
/// sort: negligible next to the batch's arithmetic).
struct InterpProgram {
    graph: Graph,
    precision: Precision,
}

impl Program for InterpProgram {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn run(
        &mut self,
        store: &mut Store,
        inputs: &HashMap<String, Tensor>,
        exec: Exec,
        fetch: &[NodeId],
    ) -> Result<RunOutput> {
        let opts = RunOptions {
            precision: self.precision,
            mode: exec.mode,
            apply_updates: exec.apply_updates,
        };
        let mut r = qir_interp::run(&self.graph, store, inputs, &opts).map_err(|e| match e {
            InterpError::Loss { value, .. } => RuntimeError::NonFiniteLoss { value },
            other => RuntimeError::from(other),
        })?;
        let mut fetched = HashMap::with_capacity(fetch.len());
        for &id in fetch {
            let t = r.values.remove(&id).ok_or_else(|| {
                RuntimeError::Exec(format!(
                    "{} was not computed by the run",
                    self.graph.describe(id)
                ))
            })?;
            fetched.insert(id, t);
        }
        Ok(RunOutput {
            outputs: r.outputs,
            loss: r.loss,
            fetched,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qir::{Dim, Init, Inst, Op, Type};

    #[test]
    fn interpreter_runs_and_fetches() {
        let mut g = Graph::new("t");
        let x = g
            .add_input("x", Type::f32(&[Dim::from("B"), 2u64.into()]))
            .unwrap();
        let w = g
            .add_param(
                "w",
                Type::f32(&[1u64.into(), 2u64.into()]),
                Init::Dense(vec![1.0, -2.0]),
            )
            .unwrap();
        let y = g.add_op(Inst::new(Op::Linear), &[x, w], Some("y")).unwrap();
        let r = g.op(Op::Relu, &[y]).unwrap();
        g.add_output("r", r);
        let mut store = qir_interp::init_store(&g, 0).unwrap();
        let mut p = Interpreter::default().prepare(&g).unwrap();
        let inputs = HashMap::from([(
            "x".to_string(),
            Tensor::f32(vec![2, 2], vec![1.0, 1.0, 3.0, 0.5]).unwrap(),
        )]);
        let out = p.run(&mut store, &inputs, Exec::EVAL, &[y]).unwrap();
        assert_eq!(out.outputs["r"].as_f32().unwrap(), &[0.0, 2.0]);
        assert_eq!(out.fetched[&y].as_f32().unwrap(), &[-1.0, 2.0]);
        let e = p.train_step(&mut store, &inputs, Mode::Train).unwrap_err();
        assert_eq!(e.to_string(), "graph @t has no loss to train on");
        let e = p.eval_batch(&mut store, &HashMap::new()).unwrap_err();
        assert_eq!(e.to_string(), "missing input %x (f32[B, 2])");
    }
}
