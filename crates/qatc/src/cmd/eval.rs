//! `qatc eval FILE --data DIR --weights W.safetensors`: the test accuracy (and mean test
//! loss) of a model with trained parameters and state, run by the interpreter in eval mode.

use std::path::PathBuf;

use runtime::data::{Dataset, PixelScale};
use runtime::eval::evaluate_model;
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
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Pixel scaling: auto (1/16 for data up to 16, else 1/255) or a divisor.
    #[arg(long, default_value = "auto")]
    pixel_scale: String,
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
    let data = Dataset::load(&args.data).or_else(|e| fail(e.to_string()))?;
    let ev = evaluate_model(
        &g,
        &mut store,
        &data,
        pixel_scale,
        args.batch_size,
        args.backend.executor().as_ref(),
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
