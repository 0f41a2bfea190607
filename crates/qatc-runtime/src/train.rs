//! The training loop: from a forward model (float, or prepared with fake quantization for
//! QAT) to trained parameters.
//!
//! [`Trainer::new`] optionally prepares the model for QAT (a pipeline, or the
//! `prepare-qat` named pipeline with a scheme), builds the training step with the grad pass
//! (forward, backward, optimizer update; the learning rate is the step's input `%lr`) and
//! initializes parameters and state from the graph's initializers with the seed
//! ([`Trainer::with_weights`] loads a weights file first, which `external` declarations
//! need); when the
//! prepared model's scheme freezes batch-norm statistics after N steps (or the
//! configuration says so), it adds the [`FreezeBatchNorm`] hook for that.
//! [`Trainer::fit`] then calibrates first if asked (observer ranges and the initial values
//! of learned LSQ scales, reported to the monitors before the first epoch; so "prepare →
//! calibrate → train" is one [`train`] call), and loops over epochs: shuffled batches (per
//! seed and epoch), the scheduled learning rate, hooks after every step and epoch,
//! evaluation of the forward model in eval mode on the test set after every epoch, metrics
//! to the monitors, and an atomic checkpoint of parameters and state.
//!
//! Invariants: a NaN or infinite loss stops training with [`RuntimeError::Diverged`]
//! naming the epoch and step, and the store keeps the last finite step's values; so does a
//! finite loss above [`crate::error::EXPLOSION_FACTOR`] (10^4) times the reference, the
//! first step's loss of this run or 1 if that is smaller
//! ([`RuntimeError::LossExploded`]), and a non-finite test loss after an epoch
//! ([`RuntimeError::DivergedEval`]); the
//! store always holds every parameter and state of the current training step; the same
//! seed and configuration give the same run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qir::{Data, ElemType, Graph, Tensor};
use qir_exec::{ExecError, Store};

use passes::grad::{BnMode, Grad, GradOptions, Optimizer};
use passes::{ConfigError, OptValue, Pass, PassManager, PassSpec, Pipeline};

use crate::calibrate::{
    CalibrationConfig, CalibrationReport, ImageBatches, calibrate_images_with_progress,
    find_learned, find_observers,
};
use crate::data::{Dataset, Feed, PixelScale, prefetched, shuffled};
use crate::error::{Result, RuntimeError};
use crate::eval::{Evaluation, check_labels, classes, evaluate, logits_output};
use crate::executor::{SharedExecutor, eval_graph};
use crate::hooks::{FreezeBatchNorm, Hook, HookCtx};
use crate::io::weights::{TensorFile, params_and_state, read_safetensors, write_safetensors};
use crate::metrics::{EpochMetrics, Monitor};
use crate::replica::{ReplicaProbe, shard};
use crate::schedule::LrSchedule;
use qir_exec::collective::{Buffer, ReduceOp, all_reduce};

/// The optimizer of the training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Plain SGD.
    Sgd,
    /// SGD with momentum ([`TrainConfig::momentum`]).
    Momentum,
    /// Adam (L2 weight decay).
    Adam,
    /// AdamW (decoupled weight decay).
    AdamW,
}

impl OptimizerKind {
    /// The command-line names.
    pub const NAMES: [&'static str; 4] = ["sgd", "momentum", "adam", "adamw"];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum => "momentum",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
        }
    }
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<OptimizerKind, String> {
        [
            OptimizerKind::Sgd,
            OptimizerKind::Momentum,
            OptimizerKind::Adam,
            OptimizerKind::AdamW,
        ]
        .into_iter()
        .find(|o| o.name() == s)
        .ok_or_else(|| {
            format!(
                "unknown optimizer '{s}' (valid: {})",
                OptimizerKind::NAMES.join(", ")
            )
        })
    }
}

/// How a model is prepared for quantization-aware training.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepare {
    /// The `prepare-qat` named pipeline with its `scheme` option set (a preset name or a
    /// scheme file).
    Scheme(String),
    /// Any pipeline text.
    Pipeline(String),
}

/// Calibration of the observers before the first epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalibrationSetup {
    /// Method and histogram bins.
    pub config: CalibrationConfig,
    /// Training batches to calibrate on.
    pub batches: usize,
}

/// Quantization-aware training: preparation of the model, then calibration.
#[derive(Clone, Debug, PartialEq)]
pub struct QatSetup {
    /// `None` for a model that already holds its fake-quant and observers.
    pub prepare: Option<Prepare>,
    /// `None` to start from the observers' initial ranges.
    pub calibration: Option<CalibrationSetup>,
}

/// Training settings. The defaults train the digits MLP well in a few seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Number of epochs (at least 1).
    pub epochs: usize,
    /// Examples per training step (the model's fixed batch size if it has one).
    pub batch_size: usize,
    /// Batch size of the evaluation after each epoch.
    pub eval_batch_size: usize,
    /// The base learning rate.
    pub lr: f64,
    /// How the learning rate changes over the run.
    pub schedule: LrSchedule,
    /// The parameter update.
    pub optimizer: OptimizerKind,
    /// Momentum of [`OptimizerKind::Momentum`].
    pub momentum: f64,
    /// Weight decay (L2 for SGD and Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// Seeds initialization and shuffling.
    pub seed: u64,
    /// At most this many training batches per epoch (for quick runs).
    pub max_train_batches: Option<usize>,
    /// How pixels become inputs.
    pub pixel_scale: PixelScale,
    /// Batch-norm statistics at the start (a [`crate::hooks::FreezeBatchNorm`] hook can
    /// freeze them later).
    pub bn: BnMode,
    /// Show a progress bar on stderr (never when stderr is not a terminal).
    pub progress: bool,
    /// Write a checkpoint here after every epoch.
    pub checkpoint: Option<PathBuf>,
    /// Quantization-aware training: preparation and calibration.
    pub qat: Option<QatSetup>,
    /// Freeze batch-norm statistics after this many training steps (a
    /// [`crate::hooks::FreezeBatchNorm`] hook). `None`: when the (prepared) model notes a
    /// step count from its scheme (`passes::scheme::freeze_bn_after`), that one; else never.
    pub freeze_bn_after: Option<u64>,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            epochs: 10,
            batch_size: 32,
            eval_batch_size: 256,
            lr: 0.05,
            schedule: LrSchedule::Cosine {
                final_fraction: 0.0,
            },
            optimizer: OptimizerKind::Momentum,
            momentum: 0.9,
            weight_decay: 0.0,
            seed: 0,
            max_train_batches: None,
            pixel_scale: PixelScale::Auto,
            bn: BnMode::Train,
            progress: false,
            checkpoint: None,
            qat: None,
            freeze_bn_after: None,
        }
    }
}

impl TrainConfig {
    /// Checks the settings; the message names the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RuntimeError::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("the batch size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!(
                "the learning rate must be a positive number, found {}",
                self.lr
            ));
        }
        if self.max_train_batches == Some(0) {
            return bad("the limit on training batches must be at least 1".into());
        }
        self.schedule.validate().map_err(RuntimeError::Config)?;
        self.grad_options()
            .validate()
            .map_err(|e| RuntimeError::Config(e.to_string()))
    }

    /// The grad pass options these settings ask for.
    pub fn grad_options(&self) -> GradOptions {
        let (optimizer, momentum) = match self.optimizer {
            OptimizerKind::Sgd => (Optimizer::Sgd, 0.0),
            OptimizerKind::Momentum => (Optimizer::Sgd, self.momentum),
            OptimizerKind::Adam => (Optimizer::Adam, 0.0),
            OptimizerKind::AdamW => (Optimizer::AdamW, 0.0),
        };
        GradOptions {
            optimizer,
            momentum,
            weight_decay: self.weight_decay,
            bn: self.bn,
            ..GradOptions::default()
        }
    }
}

/// The pipeline that turns a (prepared) forward model into its training step: the grad
/// pass with `opts`, then `simplify` — the last two passes of the `train-step` named
/// pipeline, so `qatc opt --pipeline train-step{...}` prints exactly the graph the trainer
/// runs.
pub fn step_pipeline(opts: &GradOptions) -> Pipeline {
    let grad = Grad { opts: opts.clone() };
    let mut spec = PassSpec::new("grad");
    spec.options = grad
        .options()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Pipeline {
        passes: vec![spec, PassSpec::new("simplify")],
    }
}

/// The training-step graph of `model`: [`step_pipeline`] run on it (verified after every
/// pass).
pub fn build_step(model: &Graph, opts: &GradOptions) -> Result<Graph> {
    build_step_for(model, opts, false)
}

/// The training-step graph of `model` for one replica of a data-parallel run when
/// `data_parallel` (the `data-parallel` pass after [`step_pipeline`], as the
/// `train-step-dp` named pipeline ends), else [`build_step`]'s.
pub fn build_step_for(model: &Graph, opts: &GradOptions, data_parallel: bool) -> Result<Graph> {
    let mut pipeline = step_pipeline(opts);
    if data_parallel {
        pipeline.passes.push(PassSpec::new("data-parallel"));
    }
    let pm =
        PassManager::from_pipeline(&pipeline).map_err(|e| RuntimeError::Config(e.to_string()))?;
    let mut step = model.clone();
    pm.run(&mut step)
        .map_err(|e| RuntimeError::Graph(e.to_string()))?;
    Ok(step)
}

/// The pipeline that prepares a model for QAT with `scheme` (a preset name or a scheme
/// file): the `prepare-qat` named pipeline with its `scheme` parameter set
/// ([`passes::named_with`]), checked against the registry (an unknown scheme is an error
/// here).
pub fn prepare_pipeline(scheme: &str) -> Result<Pipeline> {
    passes::named_with(
        "prepare-qat",
        &[("scheme", OptValue::Scalar(scheme.to_string()))],
    )
    .map_err(|e| match e {
        ConfigError::UnknownPipeline { .. }
        | ConfigError::BadNamedPipeline { .. }
        | ConfigError::UnknownParameter { .. } => RuntimeError::Config(format!(
            "QAT preparation needs the 'prepare-qat' pipeline with a 'scheme' parameter: {e}"
        )),
        other => RuntimeError::Config(other.to_string()),
    })
}

/// The QAT setup for training `model`: `None` (float training) unless there is a
/// preparation to apply or the model already has something to calibrate (observers, or
/// learned quantization steps with param scales); calibration is kept only then.
pub fn qat_setup(
    model: &Graph,
    prepare: Option<Prepare>,
    calibration: Option<CalibrationSetup>,
) -> Result<Option<QatSetup>> {
    let calibratable =
        !find_observers(model)?.is_empty() || find_learned(model)?.iter().any(|s| s.is_learned());
    Ok((prepare.is_some() || calibratable).then_some(QatSetup {
        prepare,
        calibration,
    }))
}

/// Applies `prepare` to `model`.
pub fn prepare_model(model: &mut Graph, prepare: &Prepare) -> Result<()> {
    let pm = match prepare {
        Prepare::Scheme(s) => PassManager::from_pipeline(&prepare_pipeline(s)?),
        Prepare::Pipeline(p) => PassManager::parse(p),
    }
    .map_err(|e| RuntimeError::Config(e.to_string()))?;
    pm.run(model)
        .map_err(|e| RuntimeError::Graph(e.to_string()))?;
    Ok(())
}

/// What a finished [`Trainer::fit`] reports.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSummary {
    /// The metrics of every epoch run.
    pub epochs: Vec<EpochMetrics>,
    /// The calibration done before the first epoch, if any.
    pub calibration: Option<CalibrationReport>,
    /// Wall-clock seconds of the whole fit.
    pub seconds: f64,
}

impl TrainSummary {
    /// The test accuracy after the last epoch.
    pub fn final_accuracy(&self) -> Option<f64> {
        self.epochs.last().map(|m| m.test_accuracy)
    }
}

/// Trains one model; see the module docs.
pub struct Trainer {
    model: Graph,
    grad: GradOptions,
    step: Graph,
    store: Store,
    config: TrainConfig,
    executor: SharedExecutor,
    hooks: Vec<Box<dyn Hook>>,
    freeze_bn_after: Option<u64>,
    calibration: Option<CalibrationSetup>,
    global_step: u64,
    epochs_done: usize,
    /// The pixel factor of the last `fit` (from its training set).
    scale: Option<f32>,
    /// Set (by a signal handler) to stop training after the current step.
    stop: Option<Arc<AtomicBool>>,
    /// This process' rank and the number of replicas (from the process' communicator,
    /// `(0, 1)` without MPI).
    rank: usize,
    replicas: usize,
    /// The step and evaluation programs [`Trainer::warm_up`] compiled, for the next `fit`.
    warmed: Option<(Box<dyn qir_exec::Program>, Box<dyn qir_exec::Program>)>,
}

impl Trainer {
    /// A trainer for `model` (prepared for QAT first if `config.qat` says so) whose graphs
    /// `executor` runs, with freshly initialized parameters and state.
    pub fn new(model: &Graph, config: TrainConfig, executor: SharedExecutor) -> Result<Trainer> {
        Trainer::build(model, config, executor, None)
    }

    /// A trainer whose parameters, state and constants start from `weights` (a weights
    /// file, such as `qatc import` writes, or a checkpoint): the file's tensors that the
    /// training step declares are loaded before anything else is initialized, so a model
    /// with `external` declarations can be trained. Every parameter of `model` must be in
    /// the file; the step's other values (optimizer state, the parameters and state QAT
    /// preparation adds) are initialized with the seed. Errors about the file's content
    /// are [`RuntimeError::Format`], for the caller to attach the path to.
    pub fn with_weights(
        model: &Graph,
        config: TrainConfig,
        executor: SharedExecutor,
        weights: &TensorFile,
    ) -> Result<Trainer> {
        Trainer::build(model, config, executor, Some(weights))
    }

    fn build(
        model: &Graph,
        config: TrainConfig,
        executor: SharedExecutor,
        weights: Option<&TensorFile>,
    ) -> Result<Trainer> {
        config.validate()?;
        if let Some(file) = weights {
            for id in model.params() {
                let name = model.node(id).name.as_deref().unwrap_or_default();
                if !file.tensors.contains_key(name) {
                    return Err(RuntimeError::Format(format!(
                        "no tensor for param %{name}: {}",
                        model.ty(id)
                    )));
                }
            }
        }
        let mut model = model.clone();
        qir::verify::verify(&model).map_err(|e| {
            RuntimeError::Graph(format!(
                "the model does not verify: {}",
                first_line(&e.to_string())
            ))
        })?;
        if let Some(Some(p)) = config.qat.as_ref().map(|q| &q.prepare) {
            prepare_model(&mut model, p)?;
        }
        let grad = config.grad_options();
        let world = qir_exec::collective::communicator();
        let (rank, replicas) = (world.rank(), world.size());
        let step = build_step_for(&model, &grad, replicas > 1)?;
        let mut store = Store::new();
        if let Some(file) = weights {
            for id in step.node_ids() {
                let node = step.node(id);
                if let Some(name) = node.name.as_deref()
                    && (node.is_param() || node.is_state() || node.is_const())
                    && let Some(t) = file.tensors.get(name)
                {
                    store.insert(name, t.clone());
                }
            }
        }
        qir_exec::fill_store(&step, &mut store, config.seed).map_err(|e| match weights {
            Some(_) => RuntimeError::Format(e.to_string()),
            None => e.into(),
        })?;
        let calibration = config.qat.as_ref().and_then(|q| q.calibration);
        let freeze_bn_after = config
            .freeze_bn_after
            .or_else(|| passes::scheme::freeze_bn_after(&model));
        let mut hooks: Vec<Box<dyn Hook>> = Vec::new();
        if let Some(after_steps) = freeze_bn_after {
            hooks.push(Box::new(FreezeBatchNorm { after_steps }));
        }
        Ok(Trainer {
            model,
            grad,
            step,
            store,
            config,
            executor,
            hooks,
            stop: None,
            freeze_bn_after,
            calibration,
            global_step: 0,
            epochs_done: 0,
            scale: None,
            rank,
            replicas,
            warmed: None,
        })
    }

    /// Adds a hook (run in the order added).
    pub fn add_hook(&mut self, hook: Box<dyn Hook>) {
        self.hooks.push(hook);
    }

    /// The forward model being trained.
    pub fn model(&self) -> &Graph {
        &self.model
    }
    /// The current training-step graph: what `qatc opt` prints for the model with the
    /// `train-step` pipeline and the same options.
    pub fn step_graph(&self) -> &Graph {
        &self.step
    }
    /// The executor that runs the trainer's graphs.
    pub fn executor(&self) -> &SharedExecutor {
        &self.executor
    }
    /// Parameters and state.
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// Parameters and state, for changing them.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }
    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
    /// True once the model has no observer left (frozen by a hook, or never had one):
    /// training steps then leave the quantization ranges as they are.
    pub fn observers_frozen(&self) -> bool {
        !self.model.node_ids().into_iter().any(|id| {
            matches!(
                self.model.node(id).op(),
                Some(qir::Op::ObserveMin | qir::Op::ObserveMax)
            )
        })
    }
    /// Training steps done.
    pub fn global_step(&self) -> u64 {
        self.global_step
    }
    /// The step count after which batch-norm statistics freeze (from the configuration or
    /// the prepared model's scheme note), if they do.
    pub fn freeze_bn_after(&self) -> Option<u64> {
        self.freeze_bn_after
    }

    /// Loads parameters and state from a safetensors checkpoint (or weights file): every
    /// parameter of the model must be present; tensors the training step does not declare
    /// are ignored. Returns the file's metadata.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<BTreeMap<String, String>> {
        let file = read_safetensors(path)?;
        for id in self.model.params() {
            let name = self.model.node(id).name.as_deref().unwrap_or_default();
            if !file.tensors.contains_key(name) {
                return Err(RuntimeError::File {
                    path: path.to_path_buf(),
                    message: format!("no tensor for param %{name}: {}", self.model.ty(id)),
                });
            }
        }
        let mut store = self.store.clone();
        for id in self.step.node_ids() {
            let node = self.step.node(id);
            if !(node.is_param() || node.is_state()) {
                continue;
            }
            if let Some(name) = node.name.as_deref()
                && let Some(t) = file.tensors.get(name)
            {
                store.insert(name, t.clone());
            }
        }
        // Checks every loaded tensor against its declaration.
        qir_exec::fill_store(&self.step, &mut store, self.config.seed).map_err(|e| {
            RuntimeError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        self.store = store;
        Ok(file.metadata)
    }

    /// Stops [`Trainer::fit`] when `flag` becomes true: the step under way finishes, the
    /// checkpoint (if configured) is written, and `fit` returns
    /// [`RuntimeError::Interrupted`].
    pub fn stop_when(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Writes the checkpoint (if configured) and returns the error of an interrupted run.
    fn interrupted(&self, epoch: usize, step: usize) -> RuntimeError {
        let checkpoint = self.config.checkpoint.clone();
        if let Some(p) = &checkpoint
            && let Err(e) = self.save_checkpoint(p)
        {
            return e;
        }
        RuntimeError::Interrupted {
            epoch,
            step,
            global_step: self.global_step,
            checkpoint,
        }
    }

    /// Writes the parameters and state of the training step (optimizer state included)
    /// to `path`, atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let meta = BTreeMap::from([
            ("format".to_string(), "qatc-checkpoint".to_string()),
            ("graph".to_string(), self.model.name.clone()),
            ("epoch".to_string(), self.epochs_done.to_string()),
            ("global_step".to_string(), self.global_step.to_string()),
        ]);
        write_safetensors(path, params_and_state(&self.step, &self.store), &meta)
    }

    fn rebuild(&mut self) -> Result<()> {
        self.warmed = None;
        self.step = build_step_for(&self.model, &self.grad, self.replicas > 1)?;
        qir_exec::fill_store(&self.step, &mut self.store, self.config.seed)?;
        Ok(())
    }

    fn run_hooks(&mut self, epoch: usize, after_epoch: bool) -> Result<bool> {
        let mut ctx = HookCtx {
            epoch,
            global_step: self.global_step,
            model: &mut self.model,
            grad: &mut self.grad,
            store: &mut self.store,
            rebuild: false,
        };
        for h in &mut self.hooks {
            if after_epoch {
                h.after_epoch(&mut ctx)?;
            } else {
                h.after_step(&mut ctx)?;
            }
        }
        let rebuild = ctx.rebuild;
        if rebuild {
            self.rebuild()?;
        }
        Ok(rebuild)
    }

    /// Compiles the training step for the configured batch size (this replica's share of
    /// it) and the evaluation program for the evaluation batch size before any data is
    /// needed — `qatc train` calls it while the data set inflates —, for the next `fit` to
    /// use. Best effort: a graph whose batch is not one symbol is left to `fit`, and a
    /// program that fails to compile here fails the same way in `fit`, which reports it.
    pub fn warm_up(&mut self) {
        let Ok((mut step, mut eval)) = self.programs() else {
            return;
        };
        let local = self.config.batch_size / self.replicas.max(1);
        for (prog, batch) in [(&mut step, local), (&mut eval, self.config.eval_batch_size)] {
            if let Some(sym) = batch_symbol(prog.graph()) {
                let _ = prog.warm(&self.store, &BTreeMap::from([(sym, batch)]));
            }
        }
        self.warmed = Some((step, eval));
    }

    /// The programs of the current step and of the evaluation graph.
    fn programs(&self) -> Result<(Box<dyn qir_exec::Program>, Box<dyn qir_exec::Program>)> {
        let step = self.executor.prepare(&self.step, &[])?;
        let eval = self.executor.prepare(&eval_graph(&self.model)?, &[])?;
        Ok((step, eval))
    }

    /// Evaluates the model on `set` (observers frozen, the store unchanged), pixels scaled
    /// as in the last [`Trainer::fit`] (before any, by `set`'s own largest pixel).
    pub fn evaluate(&mut self, set: &crate::data::ImageSet) -> Result<Evaluation> {
        let feed = Feed::for_graph(&self.model, set.example_dims())?;
        let scale = self
            .scale
            .unwrap_or_else(|| self.config.pixel_scale.factor(set.max_pixel()));
        let mut prog = self.executor.prepare(&eval_graph(&self.model)?, &[])?;
        evaluate(
            prog.as_mut(),
            &mut self.store,
            set,
            &feed,
            scale,
            self.config.eval_batch_size,
        )
    }

    /// Calibrates the observers on the first `setup.batches` training batches (see
    /// [`calibrate_images`]).
    pub fn calibrate(
        &mut self,
        data: &Dataset,
        setup: &CalibrationSetup,
    ) -> Result<CalibrationReport> {
        let pick = ImageBatches {
            batches: setup.batches,
            batch_size: self.config.batch_size,
            seed: self.config.seed,
            pixel_scale: self.config.pixel_scale,
        };
        calibrate_images_with_progress(
            &self.model,
            &mut self.store,
            data,
            &pick,
            &setup.config,
            self.executor.as_ref(),
            self.config.progress && self.rank == 0,
        )
    }

    /// Trains for the configured epochs (see the module docs); every monitor gets each
    /// epoch's metrics. Training continues after the last epoch done, so calling `fit`
    /// again once every epoch has run does nothing.
    pub fn fit(
        &mut self,
        data: &Dataset,
        monitors: &mut [&mut dyn Monitor],
    ) -> Result<TrainSummary> {
        let start = Instant::now();
        let mut feed = Feed::for_graph(&self.model, data.train.example_dims())?;
        if feed.label.is_none() {
            return Err(RuntimeError::Data(format!(
                "graph @{} has no label input (an i32 or i64 input of shape [B])",
                self.model.name
            )));
        }
        let logits = logits_output(&self.model)?;
        let n_classes = classes(&self.model, &logits)?;
        check_labels(&data.train, "training", n_classes, &logits)?;
        check_labels(&data.test, "test", n_classes, &logits)?;
        let scale = self.config.pixel_scale.factor(data.train.max_pixel());
        self.scale = Some(scale);
        let lr_elem = lr_type(&self.step)?;

        let calibration = match self.calibration.take() {
            Some(setup) => {
                let report = self.calibrate(data, &setup)?;
                // Every replica calibrates on the same (unsharded) batches; rank 0 reports.
                for mon in monitors.iter_mut().filter(|_| self.rank == 0) {
                    mon.on_calibration(&report)?;
                }
                Some(report)
            }
            None => None,
        };

        let batch_size = feed.batch_size(self.config.batch_size);
        let (rank, replicas) = (self.rank, self.replicas);
        let lead = rank == 0;
        let dp = replicas > 1;
        if dp && (batch_size % replicas != 0 || feed.batch_size(0) != 0) {
            return Err(RuntimeError::Config(format!(
                "data-parallel training over {replicas} processes needs a global batch size that they divide and a model with a symbolic batch dimension (batch size {batch_size})"
            )));
        }
        // Data parallelism: whole global batches only (equal shards), each replica taking
        // its slice of every global batch.
        let per_epoch_all = if dp {
            data.train.len() / batch_size
        } else {
            feed.batch_count(data.train.len(), batch_size)
        };
        let probe = ReplicaProbe::from_env(rank)?;
        let per_epoch = match self.config.max_train_batches {
            Some(m) => per_epoch_all.min(m),
            None => per_epoch_all,
        };
        if per_epoch == 0 {
            return Err(RuntimeError::Data(format!(
                "{} training examples make no batch of {batch_size}",
                data.train.len()
            )));
        }
        let epochs = self.config.epochs;
        let total_steps = (per_epoch * epochs) as u64;
        let first_epoch = self.epochs_done + 1;
        let bar = progress_bar(
            self.config.progress && lead,
            total_steps.saturating_sub(self.global_step),
        );

        let (mut step_prog, mut eval_prog) = match self.warmed.take() {
            Some(programs) => programs,
            None => self.programs()?,
        };
        let mut history = Vec::new();
        // the first step's loss (at least 1): the scale a diverging loss is measured against
        let mut reference: Option<f64> = None;
        type Profile = (((u64, f64), Instant), Instant, usize);
        let mut profile: Option<Profile> = None;
        for epoch in first_epoch..=epochs {
            let t0 = Instant::now();
            let order = shuffled(data.train.len(), self.config.seed, epoch as u64);
            let (order, local_batch) = if dp {
                (
                    shard(&order, batch_size, replicas, rank),
                    batch_size / replicas,
                )
            } else {
                (order, batch_size)
            };
            let mut loss_sum = 0.0;
            let mut seen = 0usize;
            let mut lr = self.config.lr;
            let batches = feed.batches(&data.train, order, local_batch, scale);
            let mut rebuilt = false;
            prefetched(batches, 2, |batches| -> Result<()> {
                for (i, batch) in batches.take(per_epoch).enumerate() {
                    let batch = batch?;
                    lr = self.config.schedule.lr(
                        self.config.lr,
                        epoch - 1,
                        self.global_step,
                        total_steps,
                    );
                    let mut inputs = batch.inputs;
                    inputs.insert("lr".into(), scalar(&lr_elem, lr));
                    let diverged = |value: f64| RuntimeError::Diverged {
                        epoch,
                        step: i + 1,
                        global_step: self.global_step + 1,
                        value,
                    };
                    let out = match step_prog.run(&mut self.store, &inputs) {
                        Ok(out) => out,
                        Err(ExecError::Loss { value, .. }) => return Err(diverged(value)),
                        Err(e) => return Err(e.into()),
                    };
                    let loss = match out.loss {
                        // The loss of the global batch: the mean of the shards' losses.
                        Some(l) if dp => {
                            let mut v = [l];
                            all_reduce(Buffer::F64(&mut v), ReduceOp::Mean)
                                .map_err(RuntimeError::Config)?;
                            if v[0].is_finite() {
                                v[0]
                            } else {
                                return Err(diverged(v[0]));
                            }
                        }
                        Some(l) if l.is_finite() => l,
                        Some(l) => return Err(diverged(l)),
                        None => {
                            return Err(RuntimeError::Graph(format!(
                                "graph @{} has no loss to train on",
                                self.step.name
                            )));
                        }
                    };
                    let r = *reference.get_or_insert(loss.abs().max(1.0));
                    if loss.abs() > crate::error::EXPLOSION_FACTOR * r {
                        return Err(RuntimeError::LossExploded {
                            epoch,
                            step: i + 1,
                            global_step: self.global_step + 1,
                            value: loss,
                            reference: r,
                        });
                    }
                    let examples = batch.labels.len() * replicas;
                    loss_sum += loss * examples as f64;
                    seen += examples;
                    self.global_step += 1;
                    probe.after_step(self.global_step, &self.step, &self.store)?;
                    // The profile starts after the first step (compilation, start-up skew).
                    let now = (qir_exec::collective::comm_stats(), Instant::now());
                    profile = Some((
                        profile.map_or(now, |p| p.0),
                        now.1,
                        profile.map_or(0, |p| p.2 + 1),
                    ));
                    bar.inc(1);
                    bar.set_message(format!("epoch {epoch}/{epochs} loss {loss:.4}"));
                    if self.run_hooks(epoch, false)? {
                        (step_prog, eval_prog) = self.programs()?;
                        rebuilt = true;
                    }
                    if self.stop_requested() {
                        bar.finish_and_clear();
                        return Err(self.interrupted(epoch, i + 1));
                    }
                }
                Ok(())
            })?;
            let train_seconds = t0.elapsed().as_secs_f64();
            if rebuilt {
                feed = Feed::for_graph(&self.model, data.train.example_dims())?;
            }
            // Rank 0 alone evaluates, reports and writes checkpoints.
            let ev = if lead {
                evaluate(
                    eval_prog.as_mut(),
                    &mut self.store,
                    &data.test,
                    &feed,
                    scale,
                    self.config.eval_batch_size,
                )
                .map_err(|e| match e {
                    RuntimeError::NonFiniteLoss { value } => RuntimeError::DivergedEval {
                        epoch,
                        global_step: self.global_step,
                        value,
                    },
                    e => e,
                })?
            } else {
                Evaluation::skipped()
            };
            self.epochs_done = epoch;
            let m = EpochMetrics {
                epoch,
                train_loss: loss_sum / seen.max(1) as f64,
                test_loss: ev.loss,
                test_accuracy: ev.accuracy(),
                seconds: train_seconds,
                eval_seconds: ev.seconds,
                lr,
                steps: per_epoch,
            };
            let mut res = Ok(());
            bar.suspend(|| {
                for mon in monitors.iter_mut().filter(|_| lead) {
                    if res.is_ok() {
                        res = mon.on_epoch(&m);
                    }
                }
            });
            res?;
            history.push(m);
            if self.run_hooks(epoch, true)? {
                (step_prog, eval_prog) = self.programs()?;
                feed = Feed::for_graph(&self.model, data.train.example_dims())?;
            }
            if let Some(p) = &self.config.checkpoint
                && lead
            {
                self.save_checkpoint(p)?;
            }
            if epoch < epochs && self.stop_requested() {
                bar.finish_and_clear();
                return Err(self.interrupted(epoch, per_epoch));
            }
        }
        bar.finish_and_clear();
        if dp
            && std::env::var_os("QATC_DP_PROFILE").is_some()
            && let Some((((calls0, comm0), t0), end, steps)) = profile
        {
            // The share of the training time spent in all-reduces (waits for the slower
            // rank included), per rank, from the end of the first step to the end of the
            // last (evaluations included when there are several epochs).
            let (calls, comm) = qir_exec::collective::comm_stats();
            let (calls, comm) = (calls - calls0, comm - comm0);
            let train = end.duration_since(t0).as_secs_f64();
            eprintln!(
                "rank {rank}: {calls} all-reduces in {steps} steps, {comm:.3} s of {train:.3} s training ({:.1}% communication, {:.2} ms per step)",
                100.0 * comm / train.max(1e-9),
                1e3 * train / steps.max(1) as f64
            );
        }
        Ok(TrainSummary {
            epochs: history,
            calibration,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// Trains `model` on `data` with `config` in one call: QAT preparation and calibration if
/// configured, then every epoch. Returns the trainer (for its store and graphs) and the
/// summary.
pub fn train(
    model: &Graph,
    data: &Dataset,
    config: TrainConfig,
    executor: SharedExecutor,
    monitors: &mut [&mut dyn Monitor],
) -> Result<(Trainer, TrainSummary)> {
    let mut t = Trainer::new(model, config, executor)?;
    let s = t.fit(data, monitors)?;
    Ok((t, s))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The element type of the step's `%lr` input.
fn lr_type(step: &Graph) -> Result<ElemType> {
    let id = step.find("lr").filter(|&id| step.node(id).is_input());
    match id.map(|id| step.ty(id)) {
        Some(t) if t.rank() == 0 && t.elem.is_float() => Ok(t.elem.clone()),
        Some(t) => Err(RuntimeError::Graph(format!(
            "the training step's %lr is {t}, expected a float scalar"
        ))),
        None => Err(RuntimeError::Graph(format!(
            "graph @{} has no trainable parameter reaching the loss (the training step has no %lr input)",
            step.name
        ))),
    }
}

fn scalar(elem: &ElemType, v: f64) -> Tensor {
    let data = match elem {
        ElemType::F64 => Data::F64(vec![v]),
        _ => Data::F32(vec![v as f32]),
    };
    Tensor {
        shape: Vec::new(),
        data,
    }
}

fn progress_bar(show: bool, len: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
    {
        bar.set_style(style);
    }
    bar
}

/// Inputs of one training step, for users driving a [`crate::executor::Program`] themselves: `batch`
/// plus the learning rate `lr` as the step's `%lr`.
pub fn step_inputs(
    step: &Graph,
    mut batch: HashMap<String, Tensor>,
    lr: f64,
) -> Result<HashMap<String, Tensor>> {
    let elem = lr_type(step)?;
    batch.insert("lr".into(), scalar(&elem, lr));
    Ok(batch)
}

/// The one symbol every symbolic input dimension of `g` is (`B` of `[B, 1, 28, 28]` and
/// `[B]`), if there is exactly one.
fn batch_symbol(g: &Graph) -> Option<String> {
    let mut syms = std::collections::BTreeSet::new();
    for id in g.inputs() {
        for d in g.node(id).ty.shape.dims() {
            if let qir::Dim::Sym(s) = d {
                syms.insert(s.clone());
            }
        }
    }
    let mut it = syms.into_iter();
    match (it.next(), it.next()) {
        (Some(s), None) => Some(s),
        _ => None,
    }
}
