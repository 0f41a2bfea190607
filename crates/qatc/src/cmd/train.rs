//! `qatc train FILE --data DIR [options]`: train a model on an IDX data set with the
//! interpreter, printing one line per epoch and writing a checkpoint (parameters and
//! state, safetensors) — by default `<model name>.safetensors` in the current directory.
//! With `--scheme` the model is first prepared for QAT and calibrated (observer ranges, and
//! the initial values of learned LSQ scales); a model that already holds observers or
//! learned scales is calibrated too (`--calibrate none` skips it, and so does `--init`
//! unless `--calibrate` is given: the checkpoint holds the ranges to resume from). A scheme
//! that freezes batch-norm statistics after N steps does so (`--freeze-bn-after`
//! overrides it).
//!
//! Output, in order: `note:` lines (stderr) if an e-graph pass of the preparation stopped
//! on a limit; the calibration headline(s) before the first epoch; one line per epoch;
//! the checkpoint written with the final accuracy.

use std::path::PathBuf;

use passes::scheme::Scheme;
use runtime::calibrate::{
    CalibrationConfig, CalibrationReport, HISTOGRAM_BINS, ImageBatches, Method,
};
use runtime::data::{Dataset, PixelScale};
use runtime::hooks::FreezeObservers;
use runtime::io::read_safetensors;
use runtime::metrics::{Csv, EpochMetrics, JsonLines, Monitor};
use runtime::schedule::LrSchedule;
use runtime::train::{CalibrationSetup, OptimizerKind, Prepare, TrainConfig, Trainer, qat_setup};

use crate::io::{CmdResult, check_output, data_files, fail, read_input, write_stdout};

/// Train a model on an IDX data set.
#[derive(clap::Args)]
pub struct Args {
    /// The model (`-` for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The data directory: train-/t10k- images and labels in IDX format (optionally .gz).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Training examples per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// The base learning rate.
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// The learning-rate schedule over the steps: constant, cosine, cosine:FINAL_FRACTION
    /// (decay to FINAL_FRACTION of --lr) or step:EVERY:GAMMA (multiply by GAMMA every
    /// EVERY epochs).
    #[arg(long, value_name = "SCHEDULE", default_value = "cosine")]
    schedule: String,
    /// The optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Momentum)]
    optimizer: OptimizerArg,
    /// Momentum of the momentum optimizer.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Weight decay (L2 for sgd, momentum and adam, decoupled for adamw).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Seeds initialization and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// At most this many training batches per epoch (for quick runs).
    #[arg(long, value_name = "N")]
    max_batches: Option<usize>,
    /// Pixel scaling: auto (1/16 for data up to 16, else 1/255) or a divisor.
    #[arg(long, default_value = "auto")]
    pixel_scale: String,
    /// Prepare the model for QAT with this quantization scheme: a preset (tflite-int8,
    /// onnx-qdq, tensorrt, w4a8, pot, lsq) or a .toml scheme file.
    #[arg(long, value_name = "NAME|FILE")]
    scheme: Option<String>,
    /// How observers are calibrated before training: minmax, percentile[:P], mse or none
    /// [default: minmax, or none with --init].
    #[arg(long, value_name = "METHOD")]
    calibrate: Option<String>,
    /// Training batches to calibrate on.
    #[arg(long, default_value_t = 8)]
    calibration_batches: usize,
    /// Stop updating the quantization ranges after this epoch.
    #[arg(long, value_name = "EPOCH")]
    freeze_observers_after: Option<usize>,
    /// Freeze batch-norm statistics after this many steps (default: as the scheme says).
    #[arg(long, value_name = "STEPS")]
    freeze_bn_after: Option<u64>,
    /// Start from these parameters and state (safetensors).
    #[arg(long, value_name = "CKPT")]
    init: Option<PathBuf>,
    /// Write per-epoch metrics as JSON lines.
    #[arg(long, value_name = "OUT.jsonl")]
    metrics: Option<PathBuf>,
    /// Write per-epoch metrics as CSV.
    #[arg(long, value_name = "OUT.csv")]
    metrics_csv: Option<PathBuf>,
    /// Draw the run into this directory (created if missing): loss.svg, accuracy.svg and
    /// lr.svg after every epoch (with the metrics in metrics.jsonl), and for a QAT model,
    /// once training ends, a histogram per fake-quant site in sites/ (`qatc plot DIR`
    /// draws them again; several runs overlay).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// The checkpoint to write after every epoch (default: <model name>.safetensors).
    #[arg(short, long, value_name = "CKPT.safetensors")]
    output: Option<PathBuf>,
    /// Never show the progress bar.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    backend: super::BackendArg,
}

/// The `--optimizer` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerArg {
    /// Plain SGD.
    Sgd,
    /// SGD with momentum (--momentum).
    Momentum,
    /// Adam (L2 weight decay).
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
}

impl From<OptimizerArg> for OptimizerKind {
    fn from(o: OptimizerArg) -> Self {
        match o {
            OptimizerArg::Sgd => OptimizerKind::Sgd,
            OptimizerArg::Momentum => OptimizerKind::Momentum,
            OptimizerArg::Adam => OptimizerKind::Adam,
            OptimizerArg::Adamw => OptimizerKind::AdamW,
        }
    }
}

fn parse<T: std::str::FromStr<Err = String>>(
    flag: &str,
    text: &str,
) -> Result<T, crate::io::Failure> {
    text.parse()
        .or_else(|e: String| fail(format!("{flag}: {e}")))
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    args.backend.limit_memory();
    if args.batch_size == 0 {
        return fail("--batch-size must be at least 1");
    }
    if args.calibration_batches == 0 && args.calibrate.as_deref() != Some("none") {
        return fail(
            "--calibration-batches must be at least 1 (use --calibrate none to skip calibration)",
        );
    }
    let schedule: LrSchedule = parse("--schedule", &args.schedule)?;
    let optimizer = OptimizerKind::from(args.optimizer);
    let pixel_scale: PixelScale = parse("--pixel-scale", &args.pixel_scale)?;
    let method = match (&args.calibrate, &args.init) {
        (Some(m), _) => m.as_str(),
        (None, Some(_)) => "none",
        (None, None) => "minmax",
    };
    let calibration = match method {
        "none" => None,
        m => Some(CalibrationSetup {
            config: CalibrationConfig {
                method: parse::<Method>("--calibrate", m)?,
                bins: HISTOGRAM_BINS,
            },
            batches: args.calibration_batches,
        }),
    };
    if let Some(scheme) = &args.scheme {
        Scheme::load(scheme).or_else(|e| fail(format!("--scheme: {e}")))?;
    }
    let input = read_input(&args.file)?;
    let model = super::parse_and_verify(&input)?;
    // the data inflates on its own threads while the model is prepared for training (for
    // MNIST both take tens of milliseconds); it is needed first by `fit`
    let loading = {
        let dir = args.data.clone();
        std::thread::spawn(move || Dataset::load(&dir))
    };
    let checkpoint = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.safetensors", model.name)));
    // Every output is checked before any training: not an input, a writable place.
    let data_files = data_files(&args.data);
    let mut inputs: Vec<(&str, &std::path::Path)> = vec![("the model", args.file.as_path())];
    if let Some(p) = &args.init {
        inputs.push(("the --init checkpoint", p.as_path()));
    }
    inputs.extend(data_files.iter().map(|p| ("a file of --data", p.as_path())));
    check_output("-o", &checkpoint, &inputs)?;
    inputs.push(("the checkpoint (-o)", checkpoint.as_path()));
    if let Some(p) = &args.metrics {
        check_output("--metrics", p, &inputs)?;
        inputs.push(("the --metrics file", p.as_path()));
    }
    if let Some(p) = &args.metrics_csv {
        check_output("--metrics-csv", p, &inputs)?;
        inputs.push(("the --metrics-csv file", p.as_path()));
    }
    let plot_metrics = args.plot.as_ref().map(|d| d.join(super::plot::METRICS));
    if let (Some(dir), Some(m)) = (&args.plot, &plot_metrics) {
        if dir.exists() && !dir.is_dir() {
            return fail(format!(
                "--plot {} is a file; give a directory",
                dir.display()
            ));
        }
        if dir.is_dir() {
            check_output("--plot", m, &inputs)?;
        }
    }
    // a run killed while writing leaves `.NAME.*.tmp` beside the checkpoint
    runtime::io::clean_stale_temporaries(&checkpoint);
    let qat = qat_setup(
        &model,
        args.scheme.clone().map(Prepare::Scheme),
        calibration,
    )
    .or_else(|e| fail(e.to_string()))?;
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        schedule,
        optimizer,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        seed: args.seed,
        max_train_batches: args.max_batches,
        pixel_scale,
        progress: !args.no_progress,
        checkpoint: Some(checkpoint.clone()),
        qat,
        freeze_bn_after: args.freeze_bn_after,
        ..TrainConfig::default()
    };
    let epochs = config.epochs;
    // With --init the weights are in the store before anything is initialized, so that
    // models with `external` declarations (imported ones) train too.
    let trainer = match &args.init {
        Some(p) => read_safetensors(p).and_then(|f| {
            Trainer::with_weights(&model, config, args.backend.executor(), &f).map_err(|e| e.at(p))
        }),
        None => Trainer::new(&model, config, args.backend.executor()),
    };
    super::print_remarks();
    let mut trainer = trainer.or_else(|e| fail(e.to_string()))?;
    // the step and evaluation programs compile while the data is still inflating
    trainer.warm_up();
    // SIGINT/SIGTERM (and SIGHUP): finish the step, write the checkpoint, exit 1; a
    // second signal quits at once
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        let installed = ctrlc::set_handler(move || {
            if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(130);
            }
            crate::io::write_stderr(
                "\nnote: interrupted: finishing the step and writing the checkpoint (signal again to quit at once)\n",
            );
        });
        if let Err(e) = installed {
            crate::io::write_stderr(&format!(
                "warning: cannot handle Ctrl-C ({e}); an interrupted run keeps only the last epoch's checkpoint\n"
            ));
        }
    }
    trainer.stop_when(stop);
    if let Some(e) = args.freeze_observers_after {
        trainer.add_hook(Box::new(FreezeObservers { after_epoch: e }));
    }
    let mut jsonl = match &args.metrics {
        Some(p) => Some(JsonLines::create(p).or_else(|e| fail(e.to_string()))?),
        None => None,
    };
    let mut csv = match &args.metrics_csv {
        Some(p) => Some(Csv::create(p).or_else(|e| fail(e.to_string()))?),
        None => None,
    };
    let label = match &args.scheme {
        Some(s) => format!("@{} QAT {s}", model.name),
        None => format!("@{} float", model.name),
    };
    let mut plot = match &args.plot {
        Some(d) => Some(super::plot::PlotMonitor::create(d, &label)?),
        None => None,
    };
    let mut print = Printer { epochs };
    let mut monitors: Vec<&mut dyn Monitor> = vec![&mut print];
    if let Some(p) = plot.as_mut() {
        monitors.push(p);
    }
    if let Some(j) = jsonl.as_mut() {
        monitors.push(j);
    }
    if let Some(c) = csv.as_mut() {
        monitors.push(c);
    }
    let data = match loading.join() {
        Ok(loaded) => loaded.or_else(|e| fail(e.to_string()))?,
        Err(_) => return fail(format!("reading {} failed", args.data.display())),
    };
    let summary = trainer.fit(&data, &mut monitors);
    super::print_remarks();
    let summary = summary.or_else(|e| fail(e.to_string()))?;
    if qir_exec::collective::communicator().rank() != 0 {
        // Rank 0 of a data-parallel run alone reports and writes the checkpoint.
        return Ok(());
    }
    if let Some(dir) = &args.plot {
        // what every fake-quant site sees with the trained weights and final ranges
        let pick = ImageBatches {
            batches: SITE_BATCHES,
            batch_size: trainer.config().batch_size,
            seed: trainer.config().seed,
            pixel_scale: trainer.config().pixel_scale,
        };
        let sites = runtime::sites::site_values_images(
            trainer.model(),
            trainer.store(),
            &data,
            &pick,
            trainer.executor().as_ref(),
            SITE_BINS,
        )
        .or_else(|e| fail(format!("--plot: {e}")))?;
        let pictures: Vec<_> = sites.iter().map(super::plot::site_picture).collect();
        let n = if pictures.is_empty() {
            0
        } else {
            super::plot::draw_sites(&pictures, dir)?
        };
        write_stdout(&format!(
            "wrote the pictures to {} (3 curves, {n} site histogram(s))\n",
            dir.display()
        ))?;
    }
    write_stdout(&format!(
        "wrote {} ({:.2} s, final test accuracy {:.2}%)\n",
        checkpoint.display(),
        summary.seconds,
        summary.final_accuracy().unwrap_or(0.0) * 100.0
    ))
}

/// Training batches the site histograms of `--plot` are drawn from.
const SITE_BATCHES: usize = 8;
/// Bins of a site histogram.
const SITE_BINS: usize = 128;

/// Prints the calibration headlines when calibration is done and one line per epoch, to
/// standard output.
struct Printer {
    epochs: usize,
}

impl Monitor for Printer {
    fn on_epoch(&mut self, m: &EpochMetrics) -> runtime::Result<()> {
        let _ = write_stdout(&format!("{}\n", m.summary(self.epochs)));
        Ok(())
    }

    fn on_calibration(&mut self, report: &CalibrationReport) -> runtime::Result<()> {
        let text: String = report
            .headlines()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = write_stdout(&text);
        Ok(())
    }
}
