//! The typed error of every fallible kernel entry point. Kernels validate sizes, strides and
//! parameters up front and return one of these; they never panic on user data.

/// Why a kernel call was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A buffer does not have the length its shape needs.
    #[error("{what}: expected {expected} elements, found {found}")]
    Size {
        /// Which buffer.
        what: &'static str,
        /// The length the shape asks for.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// A shape, geometry or parameter is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The requested path cannot run on this CPU (or OS).
    #[error("kernel path {0} is not available on this machine")]
    PathUnavailable(&'static str),
}

/// Result of a kernel call.
pub type KResult<T> = Result<T, KernelError>;

pub(crate) fn check_len(what: &'static str, expected: usize, found: usize) -> KResult<()> {
    if expected == found {
        Ok(())
    } else {
        Err(KernelError::Size {
            what,
            expected,
            found,
        })
    }
}

pub(crate) fn invalid<T>(msg: impl Into<String>) -> KResult<T> {
    Err(KernelError::Invalid(msg.into()))
}
