//! The subcommands, one module each. To add a command: write `cmd/NAME.rs` with an `Args`
//! struct (`clap::Args`, its doc comment is the help text) and `pub fn run(args: Args) ->
//! CmdResult`, then add a variant to [`Command`] and an arm to [`Command::run`].

pub mod bench;
pub mod calibrate;
pub mod check;
pub mod convert;
pub mod dot;
pub mod eval;
pub mod export;
pub mod fmt;
pub mod grad;
pub mod import;
pub mod opt;
pub mod passes;
pub mod plot;
pub mod prepare;
pub mod run;
pub mod train;

use clap::Subcommand;

use crate::io::{CmdResult, Failure, Input, write_stderr};

/// A qatc subcommand.
#[derive(Subcommand)]
pub enum Command {
    /// Parse and verify .qir files, reporting every error
    Check(check::Args),
    /// Rewrite .qir files in canonical form
    Fmt(fmt::Args),
    /// Run passes over a .qir file (the mlir-opt of qatc)
    Opt(opt::Args),
    /// List the passes with their options, and the named pipelines
    Passes(passes::Args),
    /// Render a .qir file as a Graphviz graph
    Dot(dot::Args),
    /// Prepare a model for quantization-aware training with a scheme
    Prepare(prepare::Args),
    /// Evaluate a model once on .npy inputs (compiled by the JIT, or with --backend interp)
    Run(run::Args),
    /// Print the training-step graph (forward, backward, optimizer) of a model
    Grad(grad::Args),
    /// Train a model on an IDX data set and write a checkpoint
    Train(train::Args),
    /// Calibrate a model's observers (and learned LSQ scales) on training data
    Calibrate(calibrate::Args),
    /// Print a model's test accuracy with trained weights
    Eval(eval::Args),
    /// Measure the speed of a model or its training step on an executor
    Bench(bench::Args),
    /// Import an ONNX model as a .qir graph and its weights
    Import(import::Args),
    /// Convert a trained QAT model to an integer-only model
    Convert(convert::Args),
    /// Export a .qir graph and its weights as an ONNX model (QDQ for fake-quant models)
    Export(export::Args),
    /// Draw the pictures of finished training runs (loss, accuracy, learning rate, site histograms)
    Plot(plot::Args),
}

impl Command {
    /// Runs the command.
    pub fn run(self) -> CmdResult {
        match self {
            Command::Check(a) => check::run(a),
            Command::Fmt(a) => fmt::run(a),
            Command::Opt(a) => opt::run(a),
            Command::Passes(a) => passes::run(a),
            Command::Dot(a) => dot::run(a),
            Command::Prepare(a) => prepare::run(a),
            Command::Run(a) => run::run(a),
            Command::Grad(a) => grad::run(a),
            Command::Train(a) => train::run(a),
            Command::Calibrate(a) => calibrate::run(a),
            Command::Eval(a) => eval::run(a),
            Command::Bench(a) => bench::run(a),
            Command::Import(a) => import::run(a),
            Command::Convert(a) => convert::run(a),
            Command::Export(a) => export::run(a),
            Command::Plot(a) => plot::run(a),
        }
    }
}

/// Prints the remarks the e-graph passes recorded since the last call (a run stopped by a
/// node, iteration or time limit) as `note: ...` lines on standard error.
pub fn print_remarks() {
    let notes: String = ::passes::egraph::take_remarks()
        .iter()
        .map(|r| format!("note: {}\n", r.strip_prefix("remark: ").unwrap_or(r)))
        .collect();
    write_stderr(&notes);
}

/// Parses and verifies an input, printing its diagnostics on failure.
pub fn parse_and_verify(input: &Input) -> Result<qir::Graph, Failure> {
    qir_reader::parse_and_verify(&input.text).map_err(|diags| {
        write_stderr(&qir_reader::render(&diags, &input.name, &input.text));
        Failure::Reported
    })
}

/// Which executor runs a command's graphs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The Cranelift JIT: compiled native code (the default).
    #[default]
    Jit,
    /// The reference interpreter: slow, the oracle the JIT is tested against.
    Interp,
}

/// The `--backend` option of the commands that run graphs.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct BackendArg {
    /// The executor that runs the graphs.
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    pub backend: Backend,
    /// Refuse a run that needs more memory than this (bytes, or with a suffix: 512M, 8G,
    /// 2GiB) [default: the memory available].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
}

impl BackendArg {
    /// The chosen executor, with the memory limit set (see [`BackendArg::limit_memory`]).
    pub fn executor(&self) -> runtime::executor::SharedExecutor {
        match self.backend {
            Backend::Jit => std::sync::Arc::new(self.jit(qir_jit::Jit::default())),
            Backend::Interp => {
                self.limit_memory();
                std::sync::Arc::new(qir_interp::Interpreter::default())
            }
        }
    }

    /// `jit` with its arena limited to the memory budget.
    pub fn jit(&self, jit: qir_jit::Jit) -> qir_jit::Jit {
        self.limit_memory();
        let (budget, _) = qir_exec::memory::budget();
        qir_jit::Jit {
            max_arena_bytes: Some(usize::try_from(budget).unwrap_or(usize::MAX)),
            ..jit
        }
    }

    /// Sets the `--max-memory` limit that every allocation sized by the model is checked
    /// against (before parameters are initialized: call it first).
    pub fn limit_memory(&self) {
        qir_exec::memory::set_max_memory(self.max_memory);
    }
}

/// `--max-memory`: bytes, or a number with a decimal (k, M, G, T) or binary (KiB, MiB,
/// GiB, TiB) suffix; a trailing `B` is optional.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("expected a positive size such as 512M or 8G, got '{text}'");
    let num: f64 = num.parse().map_err(|_| bad())?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().trim_end_matches('b') {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' (use k, M, G, T, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    let n = num * factor;
    if n >= 1.0 && n.is_finite() {
        Ok(n as u64)
    } else {
        Err(bad())
    }
}
