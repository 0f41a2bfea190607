//! The interpreter's error type: every failure is one line that names the input, stored
//! value or node at fault and says why.

/// An error from initializing a store or running a graph.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// The graph does not verify (the interpreter only runs verified graphs).
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
    /// The loss is not finite.
    #[error("loss {node} is {value}")]
    Loss {
        /// The loss value's node.
        node: String,
        /// The non-finite value.
        value: f64,
    },
}
