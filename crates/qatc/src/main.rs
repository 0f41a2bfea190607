//! `qatc`: the driver of the qatc compiler. It parses arguments, reads and writes files,
//! renders diagnostics and chooses the exit code; every piece of compiler logic lives in
//! the libraries (`qir`, `qir-reader`, `passes`, ...).
//!
//! Exit codes: 0 success, 1 a user error (bad input, bad arguments, failed check), 2 an
//! internal error (a panic, caught by the hook installed first thing in `main`). The
//! process never exits with Rust's panic code 101.

mod cmd;
mod io;
#[cfg(feature = "mpi")]
mod mpi_world;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

/// qatc: a quantization-aware-training compiler for .qir models.
#[derive(Parser)]
#[command(
    name = "qatc",
    version,
    about = "qatc: a quantization-aware-training compiler for .qir models. It checks, \
             formats and optimizes models, prepares them for QAT with a quantization \
             scheme, calibrates, trains and evaluates them (compiled by a JIT), converts \
             them to integer-only models, and imports and exports ONNX.",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

/// Replaces the default panic message and exit code 101 by a one-line internal-error
/// message and exit code 2.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "qatc: internal error: {msg}{at} (this is a bug in qatc; please report it)"
        );
        std::process::exit(2);
    }));
}

fn main() -> ExitCode {
    install_panic_hook();
    // Under `mpirun` (feature `mpi`): MPI's world becomes the process' communicator, and
    // is finalized when `_world` drops at the end of `main`.
    #[cfg(feature = "mpi")]
    let _world = match mpi_world::init() {
        Ok(w) => w,
        Err(msg) => {
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            return ExitCode::from(1);
        }
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let comm = qir_exec::collective::communicator();
            let msg = match &e {
                io::Failure::Message(msg) => msg.as_str(),
                _ => "the command failed",
            };
            if comm.size() > 1 {
                // The other ranks would wait forever in their next collective: end the job.
                comm.abort(msg, 1);
            }
            if let io::Failure::Message(msg) = &e {
                let _ = writeln!(std::io::stderr(), "error: {msg}");
            }
            ExitCode::from(1)
        }
    }
}
