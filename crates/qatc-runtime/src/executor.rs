//! Executors as the runtime uses them: the contract of `qir-exec` (an [`Executor`]
//! prepares a graph into a [`Program`] that runs batches against a [`Store`]) and the
//! graphs the runtime prepares from a model — the evaluation graph (observers frozen,
//! nothing written back) and the calibration graph (fake quantization bypassed, nothing
//! written back). The runtime never names an executor: the caller chooses one.

use qir::Graph;

pub use qir_exec::{ExecError, Executor, Inputs, Program, RunOutput, Store};

use crate::error::{Result, RuntimeError};

/// The graph that evaluates `model`: every observer frozen (quantization parameters come
/// from the stored ranges, PyTorch's `disable_observer`, as the `freeze-observers` pass
/// does) and no `update`, so that running it never changes the store.
pub fn eval_graph(model: &Graph) -> Result<Graph> {
    let mut g = model.clone();
    passes::freeze_observers::freeze_observers(&mut g, &[])
        .map_err(|e| RuntimeError::Graph(format!("freezing the observers: {e}")))?;
    g.updates_mut().clear();
    Ok(g)
}

/// A shared executor, as trainers, evaluations and calibrations hold them.
pub type SharedExecutor = std::sync::Arc<dyn Executor>;
