//! `qatc prepare FILE [--scheme NAME|FILE] [-o OUT]`: prepare a float model for
//! quantization-aware training — the `prepare-qat` named pipeline with its `scheme`
//! parameter — and print the result. `--show-scheme` prints what the scheme means to
//! standard error. A pass failure shows the IR with the error under the node at fault; an
//! e-graph pass stopped by a limit leaves a `note:` line on standard error.

use std::path::PathBuf;

use passes::scheme::Scheme;
use passes::{OptValue, PassManager, RunError, named_with};

use crate::io::{CmdResult, Failure, check_output, fail, read_input, write_output, write_stderr};

/// Prepare a model for quantization-aware training (the prepare-qat pipeline).
#[derive(clap::Args)]
pub struct Args {
    /// The model (`-` for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// A scheme preset (tflite-int8, onnx-qdq, tensorrt, w4a8, pot, lsq) or a .toml
    /// scheme file.
    #[arg(long, value_name = "NAME|FILE", default_value = "tflite-int8")]
    scheme: String,
    /// Where to write the result (standard output by default or with `-`).
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Print the scheme's settings to standard error.
    #[arg(long)]
    show_scheme: bool,
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    if let Some(out) = &args.output {
        check_output(
            "-o",
            out,
            &[
                ("the model", args.file.as_path()),
                ("the --scheme file", std::path::Path::new(&args.scheme)),
            ],
        )?;
    }
    let scheme = Scheme::load(&args.scheme).or_else(|e| fail(format!("--scheme: {e}")))?;
    if args.show_scheme {
        write_stderr(&format!("{}\n", scheme.describe()));
    }
    let pipeline = named_with(
        "prepare-qat",
        &[("scheme", OptValue::Scalar(args.scheme.clone()))],
    )
    .or_else(|e| fail(e.to_string()))?;
    let pm = PassManager::from_pipeline(&pipeline).or_else(|e| fail(e.to_string()))?;
    let input = read_input(&args.file)?;
    let mut g = super::parse_and_verify(&input)?;
    let result = pm.run(&mut g);
    super::print_remarks();
    match result {
        Ok(_) => write_output(args.output.as_deref(), &qir::print::print(&g)),
        Err(e) => {
            let (headline, ir) = match &e {
                RunError::PassFailed { pass, error, ir } => {
                    (format!("pass '{pass}' failed: {error}"), ir.clone())
                }
                RunError::VerifyFailed { pass, ir, .. } => (
                    format!("verifier failed after pass '{pass}'"),
                    Some(ir.clone()),
                ),
                RunError::InvalidInput { ir, .. } => (
                    "the input graph does not verify".to_string(),
                    Some(ir.clone()),
                ),
            };
            write_stderr(&format!("error: {headline}\n{}", ir.unwrap_or_default()));
            Err(Failure::Reported)
        }
    }
}
