//! The [`Pass`] trait every pass implements, the static description a pass registers
//! ([`PassInfo`], [`PassDef`]), the [`Changed`] flag and the pass error type.
//!
//! Invariant expected of every pass: `run` either returns `Ok` with a graph that verifies
//! (the pass manager checks this after every pass and names the pass when it does not), or
//! returns `Err`; `Changed::No` is returned only when the graph is untouched.

use std::fmt;

use qir::{EditError, Graph, NodeId};

use crate::options::{OptionError, OptionSpec, Options};
use crate::pipeline::OptValue;

/// Whether a pass modified the graph. Passes must report this honestly: `No` means the
/// graph is exactly as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Changed {
    /// The graph is exactly as it was.
    No,
    /// The graph was modified.
    Yes,
}

impl Changed {
    /// True for [`Changed::Yes`].
    pub fn changed(self) -> bool {
        self == Changed::Yes
    }
}

impl From<bool> for Changed {
    fn from(b: bool) -> Changed {
        if b { Changed::Yes } else { Changed::No }
    }
}

impl std::ops::BitOr for Changed {
    type Output = Changed;
    fn bitor(self, rhs: Changed) -> Changed {
        Changed::from(self.changed() || rhs.changed())
    }
}

impl std::ops::BitOrAssign for Changed {
    fn bitor_assign(&mut self, rhs: Changed) {
        *self = *self | rhs;
    }
}

impl fmt::Display for Changed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.changed() { "yes" } else { "no" })
    }
}

/// Why a pass could not do its job (the graph is not one it supports, a named node is
/// missing, ...). Messages are lowercase without a final period.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    /// A problem with the graph as a whole or with the pass's configuration.
    #[error("{0}")]
    Message(String),
    /// A problem at one node; the driver shows the IR with the message under that node.
    #[error("{message}")]
    AtNode {
        /// The node at fault.
        node: NodeId,
        /// What is wrong with it.
        message: String,
    },
    /// A graph edit failed (a bug in the pass or an input it does not handle).
    #[error("graph edit failed: {0}")]
    Edit(#[from] EditError),
}

impl PassError {
    /// An error about the graph as a whole.
    pub fn new(message: impl Into<String>) -> PassError {
        PassError::Message(message.into())
    }
    /// An error about one node.
    pub fn at(node: NodeId, message: impl Into<String>) -> PassError {
        PassError::AtNode {
            node,
            message: message.into(),
        }
    }
    /// The node the error is about, if any.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            PassError::AtNode { node, .. } => Some(*node),
            PassError::Message(_) | PassError::Edit(_) => None,
        }
    }
}

/// A graph transformation. Create one through the registry
/// ([`crate::registry::create`]) from its pipeline text, or directly through its type
/// (every pass type has a constructor or a `Default`), and run it alone or in a
/// [`crate::PassManager`].
pub trait Pass {
    /// The pipeline name, kebab-case (`fold-batchnorm`); the same for every instance.
    fn name(&self) -> &'static str;

    /// The option values of this instance as `(name, value)` pairs, every declared option
    /// in declaration order, so that a configured pass can be printed back as pipeline
    /// text. Passes without options keep the default (empty).
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        Vec::new()
    }

    /// Rewrites `g` in place.
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError>;
}

/// The static description of a registered pass, shown by `qatc passes`.
#[derive(Clone, Copy, Debug)]
pub struct PassInfo {
    /// The pipeline name (kebab-case).
    pub name: &'static str,
    /// One line saying what the pass does, lowercase, no final period.
    pub summary: &'static str,
    /// The options the pass accepts.
    pub options: &'static [OptionSpec],
}

/// What the registry needs from a pass type: its description and a constructor from
/// validated options. Implemented by every registered pass next to its [`Pass`] impl.
pub trait PassDef: Pass + Sized + 'static {
    /// The pass's name, summary and options.
    const INFO: PassInfo;
    /// Builds the pass from options already checked against [`PassInfo::options`].
    fn from_options(options: &Options) -> Result<Self, OptionError>;
}
