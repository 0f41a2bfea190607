//! `runtime` (package `qatc-runtime`): everything qatc needs to run models on data — the
//! data formats (IDX, NumPy, safetensors), labelled image data sets and their batches,
//! the graphs executors run for evaluation and calibration (the executor itself is the
//! caller's choice: the reference interpreter or the JIT), the training loop with QAT hooks, and
//! calibration of observers. Everything here is a library; the `qatc` driver only parses
//! arguments and prints.
//!
//! ```
//! use runtime::{data::Dataset, train::{train, TrainConfig}};
//! use std::path::Path;
//!
//! // the default model and data set, relative to this crate's directory
//! let text = std::fs::read_to_string("../../testdata/models/digits_mlp.qir").unwrap();
//! let model = qir_reader::parse_and_verify(&text).unwrap();
//! let data = Dataset::load(Path::new("../../testdata/digits")).unwrap();
//! let config = TrainConfig { epochs: 2, ..TrainConfig::default() };
//! let mut print = |m: &runtime::metrics::EpochMetrics| println!("{}", m.summary(2));
//! // any executor: the reference interpreter here, the JIT in the driver
//! let executor = std::sync::Arc::new(qir_interp::Interpreter::default());
//! let (trainer, summary) = train(&model, &data, config, executor, &mut [&mut print]).unwrap();
//! let dir = std::env::temp_dir().join(format!("qatc-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! trainer.save_checkpoint(&dir.join("digits.safetensors")).unwrap();
//! let accuracy = summary.final_accuracy().unwrap();
//! println!("{:.2}%", accuracy * 100.0);
//! assert!(accuracy > 0.9);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! Invariants: no function here panics on user data (files, shapes, values); every error
//! is a [`RuntimeError`] that displays as one line naming what is at fault.

#![warn(missing_docs)]

pub mod bench;
pub mod calibrate;
pub mod data;
pub mod error;
pub mod eval;
pub mod executor;
pub mod hooks;
pub mod io;
pub mod metrics;
pub mod replica;
pub mod schedule;
pub mod sites;
pub mod train;

pub use error::{Result, RuntimeError};
