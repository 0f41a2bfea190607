//! `qatc eval FILE --data DIR --weights W.safetensors`: the test accuracy (and mean test
//! loss) of a model with trained parameters and state, run by the interpreter in eval mode.

use std::path::PathBuf;

use runtime::data::{Dataset, PixelScale};
use runtime::eval::evaluate_model_with_progress;
use runtime::io::weights::{Require, read_safetensors, store_from_file};

use crate::io::{CmdResult, fail, read_input, write_stdout};

/// Print a model's test accuracy on an IDX data set.
#[derive(clap::Args)]
pub struct Args {
    /// The model (`-` for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The data directory (the t10k- files are evaluated).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Parameters and state (safetensors), e.g. a checkpoint of `qatc train`.
    #[arg(long, value_name = "W.safetensors")]
    weights: PathBuf,
    /// Test examples per batch.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Pixel scaling: auto (1/16 for data up to 16, else 1/255) or a divisor.
    #[arg(long, default_value = "auto")]
    pixel_scale: String,
    /// Never show the progress bar (it is shown only when standard error is a terminal).
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    backend: super::BackendArg,
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    args.backend.limit_memory();
    if args.batch_size == 0 {
        return fail("--batch-size must be at least 1");
    }
    let pixel_scale: PixelScale = args
        .pixel_scale
        .parse()
        .or_else(|e: String| fail(format!("--pixel-scale: {e}")))?;
    let input = read_input(&args.file)?;
    let g = super::parse_and_verify(&input)?;
    let weights = read_safetensors(&args.weights).or_else(|e| fail(e.to_string()))?;
    let mut store = store_from_file(&g, &weights, Require::ParamsAndState, 0)
        .or_else(|e| fail(e.to_string()))?;
    // A checkpoint of another model (a QAT checkpoint on the float model) is refused, as
    // the reverse mix-up (state the checkpoint lacks) is.
    let unused = runtime::io::weights::unused_tensors(&g, &weights);
    if let Some(first) = unused.first() {
        let more = match unused.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        return fail(format!(
            "{}: the weights hold tensors the model does not use (%{first}{more}); \
             are they a checkpoint of another model (e.g. of the QAT-prepared model)?",
            args.weights.display()
        ));
    }
    let data = Dataset::load(&args.data).or_else(|e| fail(e.to_string()))?;
    let ev = evaluate_model_with_progress(
        &g,
        &mut store,
        &data,
        pixel_scale,
        args.batch_size,
        args.backend.executor().as_ref(),
        !args.no_progress,
    )
    .or_else(|e| fail(e.to_string()))?;
    let loss = ev
        .loss
        .map(|l| format!(", test loss {l:.4}"))
        .unwrap_or_default();
    write_stdout(&format!(
        "test accuracy {:.2}% ({}/{}){loss}\n",
        ev.accuracy() * 100.0,
        ev.correct,
        ev.examples
    ))
}
