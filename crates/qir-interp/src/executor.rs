//! The interpreter as an [`Executor`]: preparing verifies the graph and plans its
//! evaluation order once; every run evaluates the plan op by op.

use std::collections::HashMap;

use qir::{Graph, NodeId};
use qir_exec::{ExecError, Executor, Inputs, Program, RunOutput, Store};

use crate::session::Plan;
use crate::{Precision, RunOptions};

/// The reference interpreter as an executor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interpreter {
    /// The float precision of every run.
    pub precision: Precision,
}

impl Executor for Interpreter {
    fn name(&self) -> &'static str {
        "interp"
    }
    fn prepare(&self, g: &Graph, fetch: &[NodeId]) -> Result<Box<dyn Program>, ExecError> {
        for &id in fetch {
            if !g.contains(id) {
                return Err(ExecError::InvalidGraph(format!(
                    "cannot fetch node #{}: it is not in graph @{}",
                    id.index(),
                    g.name
                )));
            }
        }
        let plan = Plan::new(g)?;
        Ok(Box::new(InterpProgram {
            graph: g.clone(),
            plan,
            fetch: fetch.to_vec(),
            precision: self.precision,
        }))
    }
}

/// A graph run by the interpreter: an owned copy of the graph and its evaluation plan.
struct InterpProgram {
    graph: Graph,
    plan: Plan,
    fetch: Vec<NodeId>,
    precision: Precision,
}

impl Program for InterpProgram {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn fetch(&self) -> &[NodeId] {
        &self.fetch
    }

    fn run(&mut self, store: &mut Store, inputs: &Inputs) -> Result<RunOutput, ExecError> {
        let opts = RunOptions {
            precision: self.precision,
            apply_updates: true,
        };
        let mut r = self.plan.run(&self.graph, store, inputs, &opts)?;
        let mut fetched = HashMap::with_capacity(self.fetch.len());
        for &id in &self.fetch {
            let t = r.values.remove(&id).ok_or_else(|| ExecError::Node {
                node: self.graph.describe(id),
                message: "was not computed by the run (internal error)".into(),
            })?;
            fetched.insert(id, t);
        }
        Ok(RunOutput {
            outputs: r.outputs,
            loss: r.loss,
            fetched,
        })
    }

    fn describe(&self) -> String {
        format!(
            "interpreter ({:?}), graph @{}, {} nodes",
            self.precision,
            self.graph.name,
            self.graph.node_count()
        )
    }
}
