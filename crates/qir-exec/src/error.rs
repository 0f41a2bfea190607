//! The error type of every executor: each failure is one line that names the input,
//! stored value or node at fault and says why.

/// An error from initializing a store, preparing a graph or running it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// The graph does not verify (executors only run verified graphs).
    #[error("the graph does not verify: {0}")]
    InvalidGraph(String),
    /// A fed input is missing, unknown, or has the wrong type or shape.
    #[error("{0}")]
    Input(String),
    /// A parameter, state or constant is missing from the store or does not fit its
    /// declaration, or an initializer cannot be materialized.
    #[error("{0}")]
    Store(String),
    /// An op failed on the values it was given.
    #[error("{node}: {message}")]
    Node {
        /// The node as `%name` or `'op' node #index`.
        node: String,
        /// What went wrong, starting with the op's mnemonic.
        message: String,
    },
    /// The loss is not finite (the store was left untouched).
    #[error("loss {node} is {value}")]
    Loss {
        /// The loss value's node.
        node: String,
        /// The non-finite value.
        value: f64,
    },
    /// The executor cannot run this graph (an op or a type it does not lower), or a
    /// compilation step failed.
    #[error("{0}")]
    Unsupported(String),
    /// Running the graph would need more memory than allowed.
    #[error("{0}")]
    Memory(String),
}
