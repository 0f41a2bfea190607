//! `qatc opt FILE (--passes P | --pipeline NAME)`: run passes over a verified model and
//! print the result; the mlir-opt of qatc. IR dumps go to standard error, each after a
//! `// -----// IR after NAME //----- //` header; `--time-passes` prints a timing table to
//! standard error. When a pass breaks the graph, the error names the pass and the IR is
//! shown with the verifier errors under the culprits. An e-graph pass stopped by a limit
//! (not saturation) leaves a `note:` line on standard error; the result is still valid.

use std::path::PathBuf;

use passes::{PassManager, RunError};

use crate::io::{CmdResult, Failure, check_output, fail, read_input, write_output, write_stderr};

/// Run passes over a .qir file.
#[derive(clap::Args)]
pub struct Args {
    /// The model (`-` for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    source: PipelineSource,
    /// Where to write the result (standard output by default or with `-`).
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Print the IR after every pass (to standard error).
    #[arg(long)]
    print_ir_after_all: bool,
    /// Print the IR after every run of the named pass (repeatable, or comma separated).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    print_ir_after: Vec<String>,
    /// Print the wall time of every pass (to standard error).
    #[arg(long)]
    time_passes: bool,
}

/// Which passes to run: exactly one of the two.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct PipelineSource {
    /// A pipeline, e.g. `canonicalize,fold-batchnorm{mode=fold}`.
    #[arg(long, value_name = "PIPELINE")]
    passes: Option<String>,
    /// A named pipeline (see `qatc passes`), optionally with parameters:
    /// `train-step{scheme=lsq,optimizer=adam}`.
    #[arg(long, value_name = "NAME")]
    pipeline: Option<String>,
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    if let Some(out) = &args.output {
        check_output("-o", out, &[("the model", args.file.as_path())])?;
    }
    let pipeline = match (&args.source.passes, &args.source.pipeline) {
        (Some(text), _) => passes::pipeline::parse(text).map_err(passes::ConfigError::from),
        (None, Some(name)) => passes::named_spec(name),
        (None, None) => return fail("give --passes or --pipeline"),
    };
    let mut pm = pipeline
        .and_then(|p| PassManager::from_pipeline(&p))
        .or_else(|e| fail(e.to_string()))?;
    pm.set_print_ir_after_all(args.print_ir_after_all);
    pm.set_print_ir_after(&args.print_ir_after)
        .or_else(|e| fail(format!("--print-ir-after: {e}")))?;

    let input = read_input(&args.file)?;
    let mut g = super::parse_and_verify(&input)?;
    let result = pm.run_with(&mut g, &mut |pass, g| {
        write_stderr(&format!(
            "{}\n{}\n",
            passes::manager::dump_header(pass),
            qir::print::print(g)
        ));
    });
    super::print_remarks();
    match result {
        Ok(report) => {
            write_output(args.output.as_deref(), &qir::print::print(&g))?;
            if args.time_passes {
                write_stderr(&report.timing_table());
            }
            Ok(())
        }
        Err(e) => {
            write_stderr(&render_failure(&e));
            Err(Failure::Reported)
        }
    }
}

/// `error: <what failed>` and, when there is one, the IR with the errors under the
/// culprits.
fn render_failure(e: &RunError) -> String {
    let (headline, ir) = match e {
        RunError::VerifyFailed { pass, ir, .. } => {
            (format!("verifier failed after pass '{pass}'"), Some(ir))
        }
        RunError::PassFailed { pass, error, ir } => {
            (format!("pass '{pass}' failed: {error}"), ir.as_ref())
        }
        RunError::InvalidInput { ir, .. } => {
            ("the input graph does not verify".to_string(), Some(ir))
        }
    };
    match ir {
        Some(ir) => format!("error: {headline}\n{ir}"),
        None => format!("error: {headline}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passes::PassError;
    use qir::verify::{Site, VerifyError, VerifyErrors};

    #[test]
    fn a_broken_graph_names_the_pass_and_shows_the_annotated_ir() {
        let e = RunError::VerifyFailed {
            pass: "fold-batchnorm",
            errors: VerifyErrors(vec![VerifyError {
                site: Site::Loss,
                subject: "loss".into(),
                message: "must be a float scalar".into(),
            }]),
            ir: "graph @m {\n  loss %x\n//^ error: must be a float scalar\n}\n".into(),
        };
        assert_eq!(
            render_failure(&e),
            "error: verifier failed after pass 'fold-batchnorm'\ngraph @m {\n  loss %x\n//^ error: must be a float scalar\n}\n"
        );
        let e = RunError::PassFailed {
            pass: "grad",
            error: PassError::new("the graph has no loss"),
            ir: None,
        };
        assert_eq!(
            render_failure(&e),
            "error: pass 'grad' failed: the graph has no loss\n"
        );
    }
}
