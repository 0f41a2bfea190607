//! The errors of an import. Each displays as one line that names what is at fault: the
//! file, the initializer, or the node (its name, op type and the model's opset).

use std::path::PathBuf;

/// Why an ONNX model could not be imported.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ImportError {
    /// A file (the model or an external data file) could not be read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The bytes are not an ONNX protobuf message (truncated, corrupt, not ONNX).
    #[error("not a valid ONNX model: {0}")]
    Decode(String),
    /// The model is well-formed protobuf but not something the importer accepts: no graph,
    /// an opset outside the supported range, a bad initializer or input declaration, ...
    #[error("{0}")]
    Model(String),
    /// A node the importer cannot translate exactly.
    #[error("node {node} ({op_type}, opset {opset}): {message}")]
    Node {
        /// `'name'`, or `#index (output 'y')` for a node without a name.
        node: String,
        /// The op type, prefixed by its domain when it is not the default ONNX domain.
        op_type: String,
        /// The version of the node's domain the model imports (0 when it imports none).
        opset: i64,
        /// What is not supported or wrong.
        message: String,
    },
    /// The loss could not be added (no such output, not logits, a name clash).
    #[error("--loss: {0}")]
    Loss(String),
    /// The translated graph does not verify: a bug of the importer, reported rather than
    /// written out.
    #[error("the imported graph does not verify (this is a bug of the importer): {0}")]
    Verify(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, ImportError>;
