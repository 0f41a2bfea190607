//! `qatc calibrate FILE --data DIR [--batches N] [--method M] [--weights W] -o OUT`: run a
//! model with observers over training batches, set every observer's range by min-max,
//! percentile or MSE, initialize its learned (LSQ) scales from the same batches, and write
//! the parameters and the calibrated state (safetensors).

use std::collections::BTreeMap;
use std::path::PathBuf;

use runtime::calibrate::{
    CalibrationConfig, HISTOGRAM_BINS, ImageBatches, MAX_HISTOGRAM_BINS, Method,
    calibrate_images_with_progress,
};
use runtime::data::{Dataset, PixelScale};
use runtime::io::weights::{
    Require, params_and_state, read_safetensors, store_from_file, write_safetensors,
};

use crate::io::{CmdResult, check_output, data_files, fail, read_input, write_stdout};

/// Calibrate a model's observers (and learned scales) on training data.
#[derive(clap::Args)]
pub struct Args {
    /// The model, with observe_min / observe_max ops or fake_quant_lsq with param scales
    /// (`-` for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The data directory (training images are used).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Number of batches to run.
    #[arg(long, default_value_t = 16)]
    batches: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// minmax, percentile (99.99), percentile:P or mse.
    #[arg(long, default_value = "minmax")]
    method: String,
    /// Histogram bins of the percentile and mse methods.
    #[arg(long, default_value_t = HISTOGRAM_BINS)]
    bins: usize,
    /// Trained parameters (safetensors); without it they come from the initializers.
    #[arg(long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
    /// Seeds the choice of batches (and initializers without --weights).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pixel scaling: auto (1/16 for data up to 16, else 1/255) or a divisor.
    #[arg(long, default_value = "auto")]
    pixel_scale: String,
    /// Where to write the parameters and calibrated state.
    #[arg(short, long, value_name = "STATE.safetensors")]
    output: PathBuf,
    /// Never show the progress bar (it is shown only when standard error is a terminal).
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    backend: super::BackendArg,
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    args.backend.limit_memory();
    let method: Method = args
        .method
        .parse()
        .or_else(|e: String| fail(format!("--method: {e}")))?;
    let pixel_scale: PixelScale = args
        .pixel_scale
        .parse()
        .or_else(|e: String| fail(format!("--pixel-scale: {e}")))?;
    if args.bins == 0 || args.batches == 0 || args.batch_size == 0 {
        return fail("--bins, --batches and --batch-size must be at least 1");
    }
    if args.bins > MAX_HISTOGRAM_BINS {
        return fail(format!(
            "--bins {}: at most {MAX_HISTOGRAM_BINS} bins (every observed channel keeps a histogram of that many)",
            args.bins
        ));
    }
    let data_files = data_files(&args.data);
    let mut inputs: Vec<(&str, &std::path::Path)> = vec![("the model", args.file.as_path())];
    if let Some(p) = &args.weights {
        inputs.push(("the --weights file", p.as_path()));
    }
    inputs.extend(data_files.iter().map(|p| ("a file of --data", p.as_path())));
    check_output("-o", &args.output, &inputs)?;
    let input = read_input(&args.file)?;
    let g = super::parse_and_verify(&input)?;
    let mut store = match &args.weights {
        Some(w) => read_safetensors(w)
            .and_then(|f| store_from_file(&g, &f, Require::Params, args.seed))
            .or_else(|e| fail(e.to_string()))?,
        None => qir_interp::init_store(&g, args.seed).or_else(|e| fail(e.to_string()))?,
    };
    let data = Dataset::load(&args.data).or_else(|e| fail(e.to_string()))?;
    let pick = ImageBatches {
        batches: args.batches,
        batch_size: args.batch_size,
        seed: args.seed,
        pixel_scale,
    };
    let config = CalibrationConfig {
        method,
        bins: args.bins,
    };
    let report = calibrate_images_with_progress(
        &g,
        &mut store,
        &data,
        &pick,
        &config,
        args.backend.executor().as_ref(),
        !args.no_progress,
    )
    .or_else(|e| fail(e.to_string()))?;
    let meta = BTreeMap::from([
        ("format".to_string(), "qatc-calibration".to_string()),
        ("graph".to_string(), g.name.clone()),
        ("method".to_string(), method.name()),
    ]);
    write_safetensors(&args.output, params_and_state(&g, &store), &meta)
        .or_else(|e| fail(e.to_string()))?;
    let mut text = String::new();
    let headlines = report.headlines();
    let mut headlines = headlines.iter();
    if !report.sites.is_empty()
        && let Some(h) = headlines.next()
    {
        text.push_str(&format!("{h}\n"));
        for s in &report.sites {
            text.push_str(&format!("  {}\n", s.summary()));
        }
    }
    if let Some(h) = headlines.next() {
        text.push_str(&format!("{h}\n"));
        for l in &report.learned {
            text.push_str(&format!("  {}\n", l.summary()));
        }
    }
    text.push_str(&format!("wrote {}\n", args.output.display()));
    write_stdout(&text)
}
