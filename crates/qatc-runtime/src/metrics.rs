//! Per-epoch training metrics and where they go: JSON lines, CSV, or any
//! [`Monitor`] (a closure works; a monitor also hears of the calibration before the first
//! epoch).
//!
//! Invariant: each writer emits one complete line per epoch and flushes it, so a metrics
//! file stays readable while training runs and after it is interrupted.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::calibrate::CalibrationReport;
use crate::error::{Result, RuntimeError};

/// What one epoch measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's examples.
    pub train_loss: f64,
    /// Mean test loss (`None` when the model has no loss or no labels).
    pub test_loss: Option<f64>,
    /// Fraction of test examples classified correctly, in [0, 1].
    pub test_accuracy: f64,
    /// Wall-clock seconds of the epoch's training steps (evaluation excluded).
    pub seconds: f64,
    /// Wall-clock seconds of the evaluation after the epoch.
    pub eval_seconds: f64,
    /// The learning rate at the epoch's last step.
    pub lr: f64,
    /// Training steps in the epoch.
    pub steps: usize,
}

impl EpochMetrics {
    /// One human-readable line:
    /// `epoch 3/10  train loss 0.2100  test loss 0.1900  test accuracy 95.28%  train 0.41 s  eval 0.05 s`.
    pub fn summary(&self, epochs: usize) -> String {
        let test_loss = match self.test_loss {
            Some(l) => format!("  test loss {l:.4}"),
            None => String::new(),
        };
        format!(
            "epoch {}/{epochs}  train loss {:.4}{test_loss}  test accuracy {:.2}%  train {:.2} s  eval {:.2} s",
            self.epoch,
            self.train_loss,
            self.test_accuracy * 100.0,
            self.seconds,
            self.eval_seconds
        )
    }
}

/// Receives the metrics of every epoch (and the calibration report, if there is one,
/// before the first epoch).
pub trait Monitor {
    /// Called after each epoch's evaluation.
    fn on_epoch(&mut self, m: &EpochMetrics) -> Result<()>;

    /// Called once when calibration before the first epoch is done (nothing by default).
    fn on_calibration(&mut self, report: &CalibrationReport) -> Result<()> {
        let _ = report;
        Ok(())
    }
}

impl<F: FnMut(&EpochMetrics)> Monitor for F {
    fn on_epoch(&mut self, m: &EpochMetrics) -> Result<()> {
        self(m);
        Ok(())
    }
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| RuntimeError::io(path, &e))
}

/// Writes one JSON object per epoch and line.
pub struct JsonLines {
    path: PathBuf,
    w: BufWriter<File>,
}

impl JsonLines {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<JsonLines> {
        Ok(JsonLines {
            path: path.to_path_buf(),
            w: create(path)?,
        })
    }
}

impl Monitor for JsonLines {
    fn on_epoch(&mut self, m: &EpochMetrics) -> Result<()> {
        let line = serde_json::to_string(m).map_err(|e| RuntimeError::File {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        writeln!(self.w, "{line}")
            .and_then(|_| self.w.flush())
            .map_err(|e| RuntimeError::io(&self.path, &e))
    }
}

/// Writes a CSV header, then one row per epoch.
pub struct Csv {
    path: PathBuf,
    w: BufWriter<File>,
}

impl Csv {
    /// The header row.
    pub const HEADER: &'static str =
        "epoch,train_loss,test_loss,test_accuracy,seconds,eval_seconds,lr,steps";

    /// Creates (or truncates) `path` and writes the header.
    pub fn create(path: &Path) -> Result<Csv> {
        let mut w = create(path)?;
        writeln!(w, "{}", Csv::HEADER)
            .and_then(|_| w.flush())
            .map_err(|e| RuntimeError::io(path, &e))?;
        Ok(Csv {
            path: path.to_path_buf(),
            w,
        })
    }
}

impl Monitor for Csv {
    fn on_epoch(&mut self, m: &EpochMetrics) -> Result<()> {
        let test_loss = m.test_loss.map(|l| l.to_string()).unwrap_or_default();
        writeln!(
            self.w,
            "{},{},{test_loss},{},{},{},{},{}",
            m.epoch, m.train_loss, m.test_accuracy, m.seconds, m.eval_seconds, m.lr, m.steps
        )
        .and_then(|_| self.w.flush())
        .map_err(|e| RuntimeError::io(&self.path, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> EpochMetrics {
        EpochMetrics {
            epoch: 2,
            train_loss: 0.5,
            test_loss: Some(0.25),
            test_accuracy: 0.9,
            seconds: 1.5,
            eval_seconds: 0.25,
            lr: 0.1,
            steps: 45,
        }
    }

    #[test]
    fn json_lines_and_csv() {
        let d = tempfile::tempdir().unwrap();
        let jp = d.path().join("m.jsonl");
        let cp = d.path().join("m.csv");
        let mut j = JsonLines::create(&jp).unwrap();
        let mut c = Csv::create(&cp).unwrap();
        for mon in [&mut j as &mut dyn Monitor, &mut c] {
            mon.on_epoch(&m()).unwrap();
            mon.on_epoch(&EpochMetrics {
                test_loss: None,
                ..m()
            })
            .unwrap();
        }
        let text = std::fs::read_to_string(&jp).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"epoch":2,"train_loss":0.5,"test_loss":0.25,"test_accuracy":0.9,"seconds":1.5,"eval_seconds":0.25,"lr":0.1,"steps":45}"#
        );
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert!(v["test_loss"].is_null());
        let csv = std::fs::read_to_string(&cp).unwrap();
        assert_eq!(
            csv,
            "epoch,train_loss,test_loss,test_accuracy,seconds,eval_seconds,lr,steps\n2,0.5,0.25,0.9,1.5,0.25,0.1,45\n2,0.5,,0.9,1.5,0.25,0.1,45\n"
        );
    }

    #[test]
    fn summary_line() {
        assert_eq!(
            m().summary(10),
            "epoch 2/10  train loss 0.5000  test loss 0.2500  test accuracy 90.00%  train 1.50 s  eval 0.25 s"
        );
    }
}
