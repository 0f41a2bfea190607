//! The subcommands, one module each. To add a command: write `cmd/NAME.rs` with an `Args`
//! struct (`clap::Args`, its doc comment is the help text) and `pub fn run(args: Args) ->
//! CmdResult`, then add a variant to [`Command`] and an arm to [`Command::run`].

pub mod bench;
pub mod calibrate;
pub mod check;
pub mod dot;
pub mod eval;
pub mod export;
pub mod fmt;
pub mod grad;
pub mod import;
pub mod opt;
pub mod passes;
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
    /// Evaluate a model once with the interpreter on .npy inputs
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
    /// Export a .qir graph and its weights as an ONNX model (QDQ for fake-quant models)
    Export(export::Args),
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
            Command::Export(a) => export::run(a),
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
}

impl BackendArg {
    /// The chosen executor.
    pub fn executor(&self) -> runtime::executor::SharedExecutor {
        match self.backend {
            Backend::Jit => std::sync::Arc::new(qir_jit::Jit::default()),
            Backend::Interp => std::sync::Arc::new(qir_interp::Interpreter::default()),
        }
    }
}
