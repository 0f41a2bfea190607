//! `qatc bench MODEL.qir [--train] [--scheme S] [--batch N] [--backend B]`: the speed of a
//! model (inference) or of its training step on synthetic data — compile time, steps/s,
//! samples/s, achieved GFLOP/s of the contractions, arena size and peak RSS; with
//! `--print-plan` the JIT's memory plan, with `--profile` where the time of a step goes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use passes::grad::{GradOptions, Optimizer};
use runtime::bench::{BenchConfig, BenchReport, bench_with};
use runtime::train::Prepare;

use super::train::OptimizerArg;
use crate::io::{CmdResult, fail, read_input, write_stdout};

/// Measure the speed of a model or its training step.
#[derive(clap::Args)]
pub struct Args {
    /// The model (`-` for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Benchmark the training step (forward, backward, optimizer) instead of inference.
    #[arg(long)]
    train: bool,
    /// Prepare the model for QAT with this scheme (a preset name or file) first.
    #[arg(long, value_name = "NAME|FILE")]
    scheme: Option<String>,
    /// Parameters, state and constants (safetensors), e.g. the integer tensors of
    /// `qatc convert`; without it they are initialized from the model with --seed.
    #[arg(long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
    /// Examples per step.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// The optimizer of the training step.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Sgd)]
    optimizer: OptimizerArg,
    /// Timed runs (at least; runs continue until --min-seconds have passed).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Run for at least this many seconds.
    #[arg(long, default_value_t = 1.0)]
    min_seconds: f64,
    /// Seeds the parameters and the synthetic inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the JIT's memory plan (steps, arena buffers, arena size against the sum of
    /// all intermediates).
    #[arg(long)]
    print_plan: bool,
    /// Time every step and print where the time goes (JIT only; adds a little overhead).
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    backend: super::BackendArg,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn render(r: &BenchReport, train: bool, scheme: Option<&str>, print_plan: bool) -> String {
    let mut s = String::new();
    let what = match (train, scheme) {
        (true, Some(sc)) => format!("QAT training step ({sc})"),
        (true, None) => "training step".to_string(),
        (false, Some(sc)) => format!("inference ({sc} fake-quant)"),
        (false, None) => "inference".to_string(),
    };
    s.push_str(&format!(
        "graph @{}: {what}, batch {}, backend {}\n",
        r.graph, r.batch, r.executor
    ));
    let comp: String = match r.stats.first() {
        Some(st) => format!(
            " (plan {:.1} ms, codegen {:.1} ms)",
            st.plan_seconds * 1e3,
            st.compile_seconds * 1e3
        ),
        None => String::new(),
    };
    s.push_str(&format!(
        "first run: {:.1} ms{comp}\n",
        r.first_run_seconds * 1e3
    ));
    s.push_str(&format!(
        "steady state: {} runs in {:.2} s: {:.3} ms/run, {:.1} runs/s, {:.0} samples/s\n",
        r.runs,
        r.seconds,
        r.seconds_per_run() * 1e3,
        r.runs_per_second(),
        r.samples_per_second()
    ));
    s.push_str(&format!(
        "contractions: {:.3} GFLOP/run, {:.1} GFLOP/s achieved\n",
        r.flops / 1e9,
        r.gflops()
    ));
    for st in &r.stats {
        s.push_str(&format!(
            "arena: {} ({} bytes); all intermediates {} ({:.1}% with reuse)\n",
            mib(st.arena_bytes as u64),
            st.arena_bytes,
            mib(st.intermediate_bytes as u64),
            100.0 * st.arena_bytes as f64 / st.intermediate_bytes.max(1) as f64
        ));
        if print_plan {
            s.push_str(&st.plan);
        }
        if !st.profile.is_empty() {
            let runs = st.profiled_runs.max(1) as f64;
            let total: f64 = st.profile.iter().map(|p| p.2).sum();
            let mut by_kind: BTreeMap<&str, f64> = BTreeMap::new();
            for (k, _, t) in &st.profile {
                *by_kind.entry(k.as_str()).or_default() += t;
            }
            let mut kinds: Vec<(&str, f64)> = by_kind.into_iter().collect();
            kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
            s.push_str(&format!(
                "profile ({} runs, {:.3} ms/run inside the program):\n",
                st.profiled_runs,
                total / runs * 1e3
            ));
            for (k, t) in kinds {
                s.push_str(&format!(
                    "  {k:<16} {:>8.3} ms/run  {:>5.1}%\n",
                    t / runs * 1e3,
                    100.0 * t / total.max(1e-12)
                ));
            }
            let mut steps: Vec<&(String, String, f64)> = st.profile.iter().collect();
            steps.sort_by(|a, b| b.2.total_cmp(&a.2));
            s.push_str("  slowest steps:\n");
            for (k, label, t) in steps.into_iter().take(12) {
                s.push_str(&format!(
                    "    {:>8.3} ms  {k:<12} {label}\n",
                    t / runs * 1e3
                ));
            }
        }
    }
    if let Some(rss) = r.peak_rss_bytes {
        s.push_str(&format!("peak RSS: {}\n", mib(rss)));
    }
    s
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    let input = read_input(&args.file)?;
    let model = super::parse_and_verify(&input)?;
    // the training step as `qatc train` derives it (momentum 0.9 for momentum)
    let optimizer = match args.optimizer {
        OptimizerArg::Sgd | OptimizerArg::Momentum => Optimizer::Sgd,
        OptimizerArg::Adam => Optimizer::Adam,
        OptimizerArg::Adamw => Optimizer::AdamW,
    };
    let cfg = BenchConfig {
        batch: args.batch,
        train: args.train,
        prepare: args.scheme.clone().map(Prepare::Scheme),
        grad: GradOptions {
            optimizer,
            momentum: if args.optimizer == OptimizerArg::Momentum {
                0.9
            } else {
                0.0
            },
            ..GradOptions::default()
        },
        runs: args.runs,
        min_seconds: args.min_seconds,
        seed: args.seed,
    };
    let executor: runtime::executor::SharedExecutor = match args.backend.backend {
        super::Backend::Jit => std::sync::Arc::new(args.backend.jit(qir_jit::Jit {
            profile: args.profile,
            ..qir_jit::Jit::default()
        })),
        super::Backend::Interp => args.backend.executor(),
    };
    let weights = match &args.weights {
        Some(w) => {
            Some(runtime::io::weights::read_safetensors(w).or_else(|e| fail(e.to_string()))?)
        }
        None => None,
    };
    let report = bench_with(&model, &cfg, executor.as_ref(), weights.as_ref())
        .or_else(|e| fail(e.to_string()))?;
    write_stdout(&render(
        &report,
        args.train,
        args.scheme.as_deref(),
        args.print_plan,
    ))
}
