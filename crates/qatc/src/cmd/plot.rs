//! `qatc plot RUN... [-o DIR]`: the pictures of finished runs, and what `qatc train --plot
//! DIR` uses to draw them while it trains.
//!
//! A RUN is a directory written by `train --plot` (its `metrics.jsonl`, and `sites.json`
//! for the per-site histograms) or a metrics file of JSON lines (`train --metrics`).
//! Several runs are overlaid on the same axes, each named by its directory or file name
//! (train a float and a QAT run with `--plot runs/float` and `--plot runs/qat`, then
//! `qatc plot runs/float runs/qat -o runs/compare`). Pictures: `loss.svg`,
//! `accuracy.svg`, `lr.svg`, and `sites/<value>.svg` per fake-quant site (see the
//! `qatc-plot` crate for what each shows).

use std::path::{Path, PathBuf};

use qatc_plot::{Epoch, Grid, Run, SitePicture};
use runtime::metrics::{EpochMetrics, JsonLines, Monitor};
use runtime::sites::SiteValues;

use crate::io::{CmdResult, fail, write_stdout};

/// Draw the pictures of finished training runs.
#[derive(clap::Args)]
pub struct Args {
    /// Runs: directories written by `train --plot`, or metrics files (JSON lines).
    #[arg(value_name = "RUN", required = true)]
    runs: Vec<PathBuf>,
    /// Where the pictures go [default: the run's directory, for one directory].
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
}

/// The metrics file inside a `--plot` directory.
pub const METRICS: &str = "metrics.jsonl";
/// The per-site data inside a `--plot` directory.
pub const SITES: &str = "sites.json";

/// A run's name: its directory's or file's name.
fn label_of(path: &Path) -> String {
    let p = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    p.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn read_run(path: &Path) -> Result<Run, crate::io::Failure> {
    let file = if path.is_dir() {
        path.join(METRICS)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .or_else(|e| fail(format!("cannot read the metrics {}: {e}", file.display())))?;
    Run::from_json_lines(&label_of(path), &text)
        .or_else(|e| fail(format!("{}: {e}", file.display())))
}

/// Creates `dir` (and its parents) if missing; an existing file there is an error.
pub fn make_dir(flag: &str, dir: &Path) -> CmdResult {
    if dir.exists() && !dir.is_dir() {
        return fail(format!(
            "{flag} {} is a file; give a directory",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir)
        .or_else(|e| fail(format!("{flag} {}: cannot create it: {e}", dir.display())))
}

fn write(path: &Path, text: &str) -> CmdResult {
    runtime::io::write_atomic(path, text.as_bytes()).or_else(|e| fail(e.to_string()))
}

/// Draws the curves of `runs` into `dir`; returns the files written.
fn draw_runs(runs: &[Run], dir: &Path) -> Result<Vec<PathBuf>, crate::io::Failure> {
    let pics = qatc_plot::run_pictures(runs).or_else(|e| fail(e.to_string()))?;
    let mut out = Vec::new();
    for (name, svg) in pics {
        let p = dir.join(name);
        write(&p, &svg)?;
        out.push(p);
    }
    Ok(out)
}

/// The picture data of a site.
pub fn site_picture(s: &SiteValues) -> SitePicture {
    let grid = match (s.qparams, s.qrange) {
        (Some((scale, zero_point)), Some((qmin, qmax))) => Some(Grid {
            scale,
            zero_point,
            qmin,
            qmax,
        }),
        _ => None,
    };
    let bits = s
        .qrange
        .map(|(a, b)| (((b - a + 1).max(2)) as f64).log2().ceil() as u32);
    SitePicture {
        name: s.name.clone(),
        lo: s.hist.lo,
        hi: s.hist.hi,
        counts: s.hist.counts.clone(),
        range: s.range,
        channels: s.clip.len(),
        grid,
        bits,
        clipped: s.clipped,
        total: s.total,
    }
}

/// Draws every site into `dir/sites/` and keeps their data in `dir/sites.json`; returns
/// the number of pictures.
pub fn draw_sites(sites: &[SitePicture], dir: &Path) -> Result<usize, crate::io::Failure> {
    let sub = dir.join("sites");
    make_dir("--plot", &sub)?;
    let mut n = 0;
    for s in sites {
        if s.total == 0 {
            continue;
        }
        let svg = qatc_plot::site_histogram(s).or_else(|e| fail(e.to_string()))?;
        write(&sub.join(qatc_plot::site_file_name(&s.name)), &svg)?;
        n += 1;
    }
    let json = serde_json::to_string_pretty(sites).or_else(|e| fail(e.to_string()))?;
    write(&dir.join(SITES), &json)?;
    Ok(n)
}

/// `train --plot DIR`: the metrics of every epoch go to `DIR/metrics.jsonl` and the curves
/// are drawn again after each epoch, so a long run can be watched.
pub struct PlotMonitor {
    dir: PathBuf,
    run: Run,
    jsonl: JsonLines,
}

impl PlotMonitor {
    /// Starts `dir` (created if missing) for a run named `label`.
    pub fn create(dir: &Path, label: &str) -> Result<PlotMonitor, crate::io::Failure> {
        make_dir("--plot", dir)?;
        let jsonl = JsonLines::create(&dir.join(METRICS)).or_else(|e| fail(e.to_string()))?;
        Ok(PlotMonitor {
            dir: dir.to_path_buf(),
            run: Run {
                label: label.to_string(),
                epochs: Vec::new(),
            },
            jsonl,
        })
    }
}

impl Monitor for PlotMonitor {
    fn on_epoch(&mut self, m: &EpochMetrics) -> runtime::Result<()> {
        self.jsonl.on_epoch(m)?;
        self.run.epochs.push(Epoch {
            epoch: m.epoch,
            train_loss: m.train_loss,
            test_loss: m.test_loss,
            test_accuracy: m.test_accuracy,
            lr: m.lr,
        });
        draw_runs(std::slice::from_ref(&self.run), &self.dir).map_err(|_| {
            runtime::RuntimeError::Config(format!(
                "--plot {}: cannot draw the pictures",
                self.dir.display()
            ))
        })?;
        Ok(())
    }
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    let dir = match (&args.output, args.runs.as_slice()) {
        (Some(d), _) => d.clone(),
        (None, [one]) if one.is_dir() => one.clone(),
        (None, _) => {
            return fail("give the directory for the pictures with -o DIR");
        }
    };
    for r in &args.runs {
        if !r.exists() {
            return fail(format!(
                "{}: no such run directory or metrics file",
                r.display()
            ));
        }
    }
    let runs = args
        .runs
        .iter()
        .map(|p| read_run(p))
        .collect::<Result<Vec<_>, _>>()?;
    make_dir("-o", &dir)?;
    let mut written = draw_runs(&runs, &dir)?.len();
    // the site histograms of a single run directory
    if let [one] = args.runs.as_slice()
        && one.join(SITES).is_file()
    {
        let text = std::fs::read_to_string(one.join(SITES))
            .or_else(|e| fail(format!("cannot read {}: {e}", one.join(SITES).display())))?;
        let sites: Vec<SitePicture> = serde_json::from_str(&text)
            .or_else(|e| fail(format!("{}: {e}", one.join(SITES).display())))?;
        written += draw_sites(&sites, &dir)?;
    }
    write_stdout(&format!(
        "wrote {written} picture(s) to {}\n",
        dir.display()
    ))
}
