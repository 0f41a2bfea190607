//! `runtime` (package `qatc-runtime`): everything qatc needs to run models on data — the
//! data formats (IDX, NumPy, safetensors), labelled image data sets and their batches,
//! executors (the interpreter now, a JIT later), the training loop with QAT hooks, and
//! calibration of observers. Everything here is a library; the `qatc` driver only parses
//! arguments and prints.
//!
//! ```no_run
//! use runtime::{data::Dataset, train::{train, TrainConfig}};
//! # fn model() -> qir::Graph { unimplemented!() }
//! let data = Dataset::load(std::path::Path::new("testdata/digits")).unwrap();
//! let mut print = |m: &runtime::metrics::EpochMetrics| println!("{}", m.summary(10));
//! let (trainer, summary) = train(&model(), &data, TrainConfig::default(), &mut [&mut print]).unwrap();
//! trainer.save_checkpoint(std::path::Path::new("digits.safetensors")).unwrap();
//! println!("{:.2}%", summary.final_accuracy().unwrap() * 100.0);
//! ```
//!
//! Invariants: no function here panics on user data (files, shapes, values); every error
//! is a [`RuntimeError`] that displays as one line naming what is at fault.

#![warn(missing_docs)]

pub mod calibrate;
pub mod data;
pub mod error;
pub mod eval;
pub mod executor;
pub mod hooks;
pub mod io;
pub mod metrics;
pub mod schedule;
pub mod train;

pub use error::{Result, RuntimeError};
