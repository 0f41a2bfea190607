//! The runtime's error type. Every variant displays as one line, lowercase, without a
//! final period, naming the file, value, input or training step at fault.

use std::path::{Path, PathBuf};

use qir_exec::ExecError;

/// How many times its reference (the first step's loss, at least 1) a finite training
/// loss may grow before training stops as diverged.
pub const EXPLOSION_FACTOR: f64 = 1e4;

/// An error from reading or writing data, running a graph, training or calibrating.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file could not be read or written, or its content is malformed.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Malformed content not (yet) tied to a file: the caller adds the path with
    /// [`RuntimeError::at`].
    #[error("{0}")]
    Format(String),
    /// The data do not fit the model (shapes, element types, missing inputs).
    #[error("{0}")]
    Data(String),
    /// The interpreter (or another executor) failed.
    #[error("{0}")]
    Exec(String),
    /// A graph could not be prepared (the grad pass or a pipeline failed).
    #[error("{0}")]
    Graph(String),
    /// A run computed a loss that is NaN or infinite (the store was left untouched).
    #[error("the loss is {value}")]
    NonFiniteLoss {
        /// The loss (NaN or ±inf).
        value: f64,
    },
    /// The training loss stopped being finite.
    #[error(
        "training diverged: the loss is {value} at epoch {epoch}, step {step} (global step {global_step}); try a lower learning rate"
    )]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// 1-based step counted over the whole run.
        global_step: u64,
        /// The loss (NaN or ±inf).
        value: f64,
    },
    /// The training loss grew beyond [`EXPLOSION_FACTOR`] times its start (see
    /// [`crate::train`]), while still finite.
    #[error(
        "training diverged: the loss is {value:.3e} at epoch {epoch}, step {step} (global step {global_step}), more than {EXPLOSION_FACTOR:e} times the first step's {reference:.4}; try a lower learning rate"
    )]
    LossExploded {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// 1-based step counted over the whole run.
        global_step: u64,
        /// The loss.
        value: f64,
        /// The reference: the first step's loss, at least 1.
        reference: f64,
    },
    /// The test loss after an epoch is NaN or infinite.
    #[error(
        "training diverged: the test loss is {value} after epoch {epoch} (global step {global_step}); try a lower learning rate"
    )]
    DivergedEval {
        /// 1-based epoch.
        epoch: usize,
        /// Steps done over the whole run.
        global_step: u64,
        /// The loss (NaN or ±inf).
        value: f64,
    },
    /// Training was stopped on request (a signal) after a step; the checkpoint, if any,
    /// holds the parameters and state after that step.
    #[error(
        "interrupted at epoch {epoch}, step {step} (global step {global_step}){}",
        match checkpoint {
            Some(p) => format!("; wrote the checkpoint {}", p.display()),
            None => String::new(),
        }
    )]
    Interrupted {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch: the last one done.
        step: usize,
        /// Steps done over the whole run.
        global_step: u64,
        /// Where the checkpoint was written.
        checkpoint: Option<PathBuf>,
    },
    /// An option is out of range or inconsistent.
    #[error("{0}")]
    Config(String),
}

impl RuntimeError {
    /// Attaches `path` to a [`RuntimeError::Format`] error (other variants are returned
    /// unchanged).
    pub fn at(self, path: &Path) -> RuntimeError {
        match self {
            RuntimeError::Format(message) => RuntimeError::File {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        }
    }

    /// An I/O error on `path`, as one line.
    pub fn io(path: &Path, e: &std::io::Error) -> RuntimeError {
        RuntimeError::File {
            path: path.to_path_buf(),
            message: io_message(e),
        }
    }
}

/// The message of an I/O error in lowercase, without the "(os error N)" suffix noise.
pub(crate) fn io_message(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::UnexpectedEof => "unexpected end of file".to_string(),
        _ => {
            let s = e.to_string();
            let s = match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            };
            lowercase_first(&s)
        }
    }
}

pub(crate) fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

impl From<ExecError> for RuntimeError {
    fn from(e: ExecError) -> RuntimeError {
        match e {
            ExecError::Loss { value, .. } => RuntimeError::NonFiniteLoss { value },
            other => RuntimeError::Exec(other.to_string()),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
