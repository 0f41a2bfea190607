//! Hooks at step and epoch boundaries of training: they may rewrite the model with a pass
//! or a pipeline, switch batch-norm to frozen statistics, or freeze the observers; the
//! trainer then rebuilds the training step from the changed model (state already in the
//! store is kept; new state is initialized).
//!
//! The two standard QAT schedule changes are provided: [`FreezeObservers`] ("freeze the
//! quantization ranges after epoch k": the `freeze-observers` rewrite removes the
//! observers from the model, so the quantization parameters come from the stored ranges
//! and the ranges stop moving — the one way observers are frozen) and [`FreezeBatchNorm`]
//! ("freeze BN statistics after N steps": the step is rebuilt with eval-mode batch-norm,
//! Krishnamoorthi 2018 §3.2.2). [`PipelineAt`] applies any pipeline at a boundary.
//!
//! Invariant: after a hook returns, the model verifies (a pass that breaks it is an error
//! naming the pass).

use qir::Graph;
use qir_exec::Store;

use passes::grad::{BnMode, GradOptions};
use passes::{Changed, Pass, PassManager};

use crate::error::{Result, RuntimeError};

/// What a hook may look at and change.
pub struct HookCtx<'a> {
    /// The current 1-based epoch.
    pub epoch: usize,
    /// Training steps done so far in the run.
    pub global_step: u64,
    /// The forward model being trained (fake-quant included for QAT).
    pub model: &'a mut Graph,
    /// The options the training step is built with.
    pub grad: &'a mut GradOptions,
    /// Parameters and state.
    pub store: &'a mut Store,
    pub(crate) rebuild: bool,
}

impl HookCtx<'_> {
    /// Runs `pass` on the model (verifying the result); the step is rebuilt if it changed.
    pub fn apply_pass(&mut self, pass: &dyn Pass) -> Result<Changed> {
        let changed = pass
            .run(self.model)
            .map_err(|e| RuntimeError::Graph(format!("pass '{}': {e}", pass.name())))?;
        qir::verify::verify(self.model).map_err(|e| {
            RuntimeError::Graph(format!(
                "the model does not verify after pass '{}': {e}",
                pass.name()
            ))
        })?;
        if changed.changed() {
            self.rebuild = true;
        }
        Ok(changed)
    }

    /// Runs pipeline text (`canonicalize,fold-batchnorm`) on the model; the step is rebuilt
    /// if it changed.
    pub fn apply_pipeline(&mut self, pipeline: &str) -> Result<Changed> {
        let pm = PassManager::parse(pipeline).map_err(|e| RuntimeError::Config(e.to_string()))?;
        let report = pm
            .run(self.model)
            .map_err(|e| RuntimeError::Graph(e.to_string()))?;
        let changed = report.changed();
        if changed.changed() {
            self.rebuild = true;
        }
        Ok(changed)
    }

    /// Switches the step to eval-mode batch-norm with the stored statistics.
    pub fn freeze_batch_norm(&mut self) {
        if self.grad.bn != BnMode::Frozen {
            self.grad.bn = BnMode::Frozen;
            self.rebuild = true;
        }
    }

    /// Stops the observers from updating their ranges: the `freeze-observers` pass on the
    /// model (every observer). Returns how many observers were frozen (0 when none is left).
    pub fn freeze_observers(&mut self) -> Result<usize> {
        let n = passes::freeze_observers::freeze_observers(self.model, &[])
            .map_err(|e| RuntimeError::Graph(format!("pass 'freeze-observers': {e}")))?;
        if n > 0 {
            self.rebuild = true;
        }
        Ok(n)
    }

    /// Asks for the step to be rebuilt from the model and options (after changing them
    /// directly).
    pub fn request_rebuild(&mut self) {
        self.rebuild = true;
    }

    /// True if the step will be rebuilt after the hooks of this boundary.
    pub fn rebuild_requested(&self) -> bool {
        self.rebuild
    }
}

/// Code run at step and epoch boundaries of training.
pub trait Hook {
    /// After each training step (`ctx.global_step` counts it).
    fn after_step(&mut self, ctx: &mut HookCtx<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
    /// After each epoch's evaluation.
    fn after_epoch(&mut self, ctx: &mut HookCtx<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
}

/// Freezes the observers at the end of epoch `after_epoch` (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreezeObservers {
    /// The last epoch with moving ranges (1-based).
    pub after_epoch: usize,
}

impl Hook for FreezeObservers {
    fn after_epoch(&mut self, ctx: &mut HookCtx<'_>) -> Result<()> {
        if ctx.epoch >= self.after_epoch {
            ctx.freeze_observers()?;
        }
        Ok(())
    }
}

/// Freezes batch-norm statistics once `after_steps` training steps are done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreezeBatchNorm {
    /// Steps with batch statistics before the freeze.
    pub after_steps: u64,
}

impl Hook for FreezeBatchNorm {
    fn after_step(&mut self, ctx: &mut HookCtx<'_>) -> Result<()> {
        if ctx.global_step >= self.after_steps {
            ctx.freeze_batch_norm();
        }
        Ok(())
    }
}

/// A training boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// After this many steps (counted over the run).
    Step(u64),
    /// After this 1-based epoch.
    Epoch(usize),
}

/// Applies a pipeline to the model once, at a boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineAt {
    /// When the pipeline runs.
    pub at: Boundary,
    /// The pipeline text.
    pub pipeline: String,
    done: bool,
}

impl PipelineAt {
    /// Applies `pipeline` at `at`.
    pub fn new(at: Boundary, pipeline: impl Into<String>) -> PipelineAt {
        PipelineAt {
            at,
            pipeline: pipeline.into(),
            done: false,
        }
    }
    fn fire(&mut self, ctx: &mut HookCtx<'_>) -> Result<()> {
        if !self.done {
            self.done = true;
            ctx.apply_pipeline(&self.pipeline)?;
        }
        Ok(())
    }
}

impl Hook for PipelineAt {
    fn after_step(&mut self, ctx: &mut HookCtx<'_>) -> Result<()> {
        match self.at {
            Boundary::Step(n) if ctx.global_step >= n => self.fire(ctx),
            _ => Ok(()),
        }
    }
    fn after_epoch(&mut self, ctx: &mut HookCtx<'_>) -> Result<()> {
        match self.at {
            Boundary::Epoch(e) if ctx.epoch >= e => self.fire(ctx),
            _ => Ok(()),
        }
    }
}
