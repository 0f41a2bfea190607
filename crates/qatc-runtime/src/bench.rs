//! Benchmarks of one graph on one executor: the forward model (inference) or its training
//! step (optionally prepared for QAT first), on synthetic inputs of a chosen batch size —
//! the first run (which includes compilation for a JIT) timed apart from the steady state.
//! Reported: steps and samples per second, the FLOPs of the contractions per step and the
//! rate achieved, the executor's memory plan and per-step profile when it has them, and
//! the process's peak resident memory.
//!
//! Invariant: the inputs are generated from the seed, so two benchmarks of the same graph
//! and batch size feed the same data (a ratio between two executors measured in one run
//! compares like with like).

use std::collections::HashMap;
use std::time::Instant;

use qir::{Data, Dim, ElemType, Graph, Op, Tensor};
use qir_exec::{Executor, Inputs, ProgramStats, init_store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, RuntimeError};
use crate::train::{Prepare, build_step, prepare_model};

/// What to benchmark.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    /// Examples per run (the value of the graph's symbolic batch dimension).
    pub batch: usize,
    /// Benchmark the training step (grad and optimizer) instead of the forward model.
    pub train: bool,
    /// Prepare the model for QAT with this scheme first.
    pub prepare: Option<Prepare>,
    /// The grad options of the training step.
    pub grad: passes::grad::GradOptions,
    /// Timed runs (at least this many, and at least `min_seconds` of them).
    pub runs: usize,
    /// Keep running until this many seconds have passed.
    pub min_seconds: f64,
    /// Seeds the parameters and the inputs.
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            batch: 128,
            train: false,
            prepare: None,
            grad: passes::grad::GradOptions::default(),
            runs: 20,
            min_seconds: 1.0,
            seed: 0,
        }
    }
}

/// What a benchmark measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    /// The graph benchmarked.
    pub graph: String,
    /// The executor's name.
    pub executor: String,
    /// Examples per run.
    pub batch: usize,
    /// Seconds of preparation plus the first run (a JIT compiles there).
    pub first_run_seconds: f64,
    /// Timed runs.
    pub runs: usize,
    /// Seconds of the timed runs.
    pub seconds: f64,
    /// FLOPs of the contractions of one run.
    pub flops: f64,
    /// What the executor prepared.
    pub stats: Vec<ProgramStats>,
    /// Peak resident memory of the process, if the system reports it.
    pub peak_rss_bytes: Option<u64>,
}

impl BenchReport {
    /// Runs per second.
    pub fn runs_per_second(&self) -> f64 {
        self.runs as f64 / self.seconds.max(1e-12)
    }
    /// Examples per second.
    pub fn samples_per_second(&self) -> f64 {
        self.runs_per_second() * self.batch as f64
    }
    /// Achieved GFLOP/s of the contractions.
    pub fn gflops(&self) -> f64 {
        self.flops * self.runs_per_second() / 1e9
    }
    /// Seconds per run.
    pub fn seconds_per_run(&self) -> f64 {
        self.seconds / self.runs.max(1) as f64
    }
}

/// The graph a benchmark runs: the model, prepared for QAT and turned into its training
/// step as `cfg` says.
pub fn bench_graph(model: &Graph, cfg: &BenchConfig) -> Result<Graph> {
    let mut g = model.clone();
    if let Some(p) = &cfg.prepare {
        prepare_model(&mut g, p)?;
    }
    if cfg.train {
        g = build_step(&g, &cfg.grad)?;
    } else {
        // inference: observers frozen, nothing written back
        g = crate::executor::eval_graph(&g)?;
    }
    Ok(g)
}

/// Synthetic inputs for `g` with batch `batch`: floats uniform in [0, 1), integer vectors
/// (labels) uniform in [0, classes) where the graph has a `logits` output (else 0), a
/// learning rate of 0.001 for `%lr`.
pub fn synthetic_inputs(g: &Graph, batch: usize, seed: u64) -> Result<Inputs> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let classes = crate::eval::logits_output(g)
        .ok()
        .and_then(|o| crate::eval::classes(g, &o).ok())
        .unwrap_or(1);
    let mut inputs = HashMap::new();
    for id in g.inputs() {
        let node = g.node(id);
        let name = node.name.clone().unwrap_or_default();
        let dims: Vec<usize> = node
            .ty
            .shape
            .dims()
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n as usize,
                Dim::Sym(_) => batch,
            })
            .collect();
        let n: usize = dims.iter().product();
        let data = match &node.ty.elem {
            ElemType::F32 | ElemType::F64 if name == "lr" && dims.is_empty() => {
                Data::F32(vec![1e-3])
            }
            ElemType::F32 | ElemType::F64 => {
                Data::F32((0..n).map(|_| rng.random::<f32>()).collect())
            }
            ElemType::I32 => Data::I32(
                (0..n)
                    .map(|_| rng.random_range(0..classes as i32))
                    .collect(),
            ),
            ElemType::I64 => Data::I64(
                (0..n)
                    .map(|_| rng.random_range(0..classes as i64))
                    .collect(),
            ),
            other => {
                return Err(RuntimeError::Data(format!(
                    "cannot make benchmark data for input %{name} of type {other}"
                )));
            }
        };
        let t = Tensor::new(dims, data)
            .ok_or_else(|| RuntimeError::Data(format!("input %{name} does not fit")))?;
        inputs.insert(name, t);
    }
    Ok(inputs)
}

/// FLOPs of the contractions of `g` (linear, matmul, convolutions and their gradients,
/// the integer products) with batch `batch`.
pub fn contraction_flops(g: &Graph, batch: usize) -> f64 {
    let dims = |id: qir::NodeId| -> Vec<f64> {
        g.ty(id)
            .shape
            .dims()
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n as f64,
                Dim::Sym(_) => batch as f64,
            })
            .collect()
    };
    let mut total = 0.0;
    for id in g.node_ids() {
        let Some(op) = g.node(id).op() else { continue };
        let ops = g.operands(id);
        let prod = |v: &[f64]| v.iter().product::<f64>();
        total += match op {
            Op::Linear | Op::Qlinear => {
                let (x, w) = (dims(ops[0]), dims(ops[1]));
                2.0 * x[0] * prod(&w)
            }
            Op::Matmul => {
                let (y, a) = (dims(id), dims(ops[0]));
                let ta = g
                    .node(id)
                    .inst()
                    .and_then(|i| i.boolean("transpose_a"))
                    .unwrap_or(false);
                let k = if ta { a[0] } else { a[1] };
                2.0 * prod(&y) * k
            }
            // y = conv(x, w): 2 * |y| * C/g * KH * KW; both gradients cost as much
            Op::Conv2d | Op::Qconv2d => 2.0 * prod(&dims(id)) * prod(&dims(ops[1])[1..]),
            Op::Conv2dGradInput => 2.0 * prod(&dims(ops[0])) * prod(&dims(ops[1])[1..]),
            Op::Conv2dGradWeight => 2.0 * prod(&dims(ops[0])) * prod(&dims(id)[1..]),
            _ => 0.0,
        };
    }
    total
}

/// The process's peak resident set size (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Benchmarks `model` as `cfg` says with `executor`.
pub fn bench(model: &Graph, cfg: &BenchConfig, executor: &dyn Executor) -> Result<BenchReport> {
    bench_with(model, cfg, executor, None)
}

/// [`bench`] with the values of `weights` (e.g. the integer tensors `qatc convert` writes)
/// in the store; what the file lacks is initialized from the graph with the seed.
pub fn bench_with(
    model: &Graph,
    cfg: &BenchConfig,
    executor: &dyn Executor,
    weights: Option<&crate::io::weights::TensorFile>,
) -> Result<BenchReport> {
    if cfg.batch == 0 {
        return Err(RuntimeError::Config(
            "the batch size must be at least 1".into(),
        ));
    }
    let g = bench_graph(model, cfg)?;
    let inputs = synthetic_inputs(&g, cfg.batch, cfg.seed)?;
    let mut store = match weights {
        Some(f) => crate::io::weights::store_from_file(
            &g,
            f,
            crate::io::weights::Require::Params,
            cfg.seed,
        )?,
        None => init_store(&g, cfg.seed)?,
    };
    let t0 = Instant::now();
    let mut prog = executor.prepare(&g, &[])?;
    prog.run(&mut store, &inputs)?;
    let first_run_seconds = t0.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut runs = 0;
    while runs < cfg.runs || start.elapsed().as_secs_f64() < cfg.min_seconds {
        prog.run(&mut store, &inputs)?;
        runs += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(BenchReport {
        graph: g.name.clone(),
        executor: executor.name().to_string(),
        batch: cfg.batch,
        first_run_seconds,
        runs,
        seconds,
        flops: contraction_flops(&g, cfg.batch),
        stats: prog.stats(),
        peak_rss_bytes: peak_rss_bytes(),
    })
}
