//! `qir-onnx`: ONNX models as qir graphs.
//!
//! [`import`] (bytes) and [`import_file`] (a path) read an ONNX model of opset 13 to 28
//! and give an [`Imported`]: a verified [`qir::Graph`] whose weights are `external`
//! declarations, and the tensors of those declarations by name (the `qatc import` driver
//! writes them to `MODEL.safetensors` beside `MODEL.qir`). Nothing is approximated: a
//! node the importer cannot translate exactly is an [`ImportError::Node`] naming the node,
//! its op type and the opset; a truncated or corrupt file is an [`ImportError::Decode`],
//! never a panic.
//!
//! ```
//! use qir_onnx::{ImportOptions, import, proto};
//! use prost::Message;
//!
//! // y = relu(x), built with the ONNX protobuf types
//! let x = proto::ValueInfoProto {
//!     name: Some("x".into()),
//!     r#type: Some(proto::TypeProto {
//!         value: Some(proto::type_proto::Value::TensorType(proto::type_proto::Tensor {
//!             elem_type: Some(proto::tensor_proto::DataType::Float as i32),
//!             shape: Some(proto::TensorShapeProto {
//!                 dim: vec![
//!                     proto::tensor_shape_proto::Dimension {
//!                         value: Some(proto::tensor_shape_proto::dimension::Value::DimParam("N".into())),
//!                         ..Default::default()
//!                     },
//!                     proto::tensor_shape_proto::Dimension {
//!                         value: Some(proto::tensor_shape_proto::dimension::Value::DimValue(4)),
//!                         ..Default::default()
//!                     },
//!                 ],
//!             }),
//!         })),
//!         ..Default::default()
//!     }),
//!     ..Default::default()
//! };
//! let model = proto::ModelProto {
//!     ir_version: Some(8),
//!     opset_import: vec![proto::OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
//!     graph: Some(proto::GraphProto {
//!         name: Some("tiny".into()),
//!         input: vec![x],
//!         output: vec![proto::ValueInfoProto { name: Some("y".into()), ..Default::default() }],
//!         node: vec![proto::NodeProto {
//!             op_type: Some("Relu".into()),
//!             input: vec!["x".into()],
//!             output: vec!["y".into()],
//!             ..Default::default()
//!         }],
//!         ..Default::default()
//!     }),
//!     ..Default::default()
//! };
//! let imported = import(&model.encode_to_vec(), &ImportOptions::default()).unwrap();
//! let text = qir::print::print(&imported.graph);
//! assert!(text.contains("input %x: f32[B, 4]"));
//! assert!(text.contains("%y = relu(%x) : f32[B, 4]"));
//! assert!(text.contains("output y = %y"));
//! ```
//!
//! # The protobuf crate
//!
//! The model is decoded by [`prost`] into Rust types generated at build time from ONNX's
//! own schema, `proto/onnx.proto` (the file of the ONNX 1.23.2 release, which defines
//! opsets up to 28). The generator is `prost-build`, fed by `protox`, a protobuf compiler
//! written in Rust, so that building needs no `protoc` binary. prost is the most widely
//! used protobuf implementation in Rust (tokio-rs), maintained, and rejects truncated
//! and malformed input with an error (with a recursion limit, so nested subgraphs cannot
//! overflow the stack); generating from the official schema means the types are exactly
//! ONNX's and can be regenerated for a new ONNX release by replacing one file. The
//! alternatives were weaker: `onnx-protobuf` (types generated with rust-protobuf, one
//! maintainer, lagging ONNX releases), the types inside `tract-onnx` or `candle-onnx`
//! (each drags in a whole inference engine), and `ort` (bindings to onnxruntime, which
//! downloads native binaries). The generated types are public as [`proto`], so tests
//! and tools can build models in Rust.
//!
//! # Translation
//!
//! - Names: ONNX value names are kept where they are valid `.qir` names, else sanitized
//!   deterministically and uniquely (see [`names`]). Outputs keep their (sanitized) ONNX
//!   names. The graph is named after `ImportOptions::name`, else the ONNX graph.
//! - Inputs: the first dimension may be symbolic (a `dim_param` or unknown): it becomes
//!   `B`; every other dimension must be fixed.
//! - Initializers and `Constant`s are materialized when an op reads them as data: float
//!   initializers become `param`s (trained), or `state` when a BatchNormalization reads
//!   them as its running mean or variance; every other constant is a `const`, inline
//!   (`dense`) with at most [`ImportOptions::inline_limit`] elements, external otherwise.
//!   Constants read as attributes (a Reshape's shape, a Clip's bounds, ReduceMean's axes)
//!   leave no declaration. Params and state are always external. Initializer data may be
//!   inline or in external data files (`location`, `offset`, `length`), relative to the
//!   model's folder; a location leading out of it is an error.
//!
//! | ONNX op | qir | notes |
//! |---|---|---|
//! | Gemm | `linear` (transA = 0, transB = 1), else `matmul {transpose_a, transpose_b}` | C is `linear`'s bias when it is a vector `[N]` and alpha = 1, else an `add` (broadcast); alpha, beta ≠ 1 are `mul`s by scalar consts |
//! | MatMul | `matmul` | 2-D × 2-D only |
//! | Add, Sub, Mul, Div | `add`, `sub`, `mul`, `div` | NumPy broadcasting; float only |
//! | Conv | `conv2d` | 2-D; pads [x1_begin, x2_begin, x1_end, x2_end] = [top, left, bottom, right]; strides, dilations, group (depthwise); auto_pad NOTSET, VALID, SAME_UPPER, SAME_LOWER |
//! | BatchNormalization | `batch_norm {eps}` | inference form (training_mode = 0); mean and var become `state`; momentum is irrelevant at inference |
//! | Relu, Sigmoid, Tanh | `relu`, `sigmoid`, `tanh` | |
//! | Clip | `relu` for [0, ∞), `relu6` for [0, 6], identity without bounds | other bounds: an exact composition `min(max(x, lo), hi)`, each side a 2×1 `max_pool2d` over x stacked with the broadcast bound (with `neg` for the min side); bounds must be constants |
//! | MaxPool | `max_pool2d` | 2-D, no dilation; ceil_mode = 1 only where it gives the same windows; the Indices output must be unused |
//! | AveragePool | `avg_pool2d {count_include_pad}` | as MaxPool |
//! | GlobalAveragePool | `global_avg_pool` | rank 4 (rank 3 or 5+: `reduce_mean` over the spatial axes, keepdims) |
//! | ReduceMean | `global_avg_pool` for axes [2, 3] with keepdims on rank 4, else `reduce_mean {axes, keepdims}` | axes as attribute (< 18) or constant input (≥ 18), noop_with_empty_axes |
//! | Flatten | `flatten` (axis 1), else `reshape` | the result must keep a symbolic batch as a dimension of its own |
//! | Reshape | `reshape` | constant shape, 0 (copy) and -1 entries; allowzero = 1 with a 0 entry is not supported |
//! | Transpose | `transpose {perm}` | default perm reverses |
//! | Concat | `concat {axis}` | |
//! | Softmax, LogSoftmax | `softmax`, `log_softmax {axis}` | opset ≥ 13 semantics (one axis) |
//! | Identity, Dropout | the input itself | Dropout: training_mode absent or constant false; the mask output must be unused |
//! | Constant | a `const` (when read as data) | value, value_float(s), value_int(s) |
//!
//! Every op's versions from opset 13 to 28 were compared (with the operator schemas of
//! ONNX 1.23.2): beyond new element types, only BatchNormalization 14 (training_mode),
//! ReduceMean 18 (axes as input), AveragePool 19 (dilations) and Reshape 14 (allowzero)
//! changed, and each is handled. A model of a newer opset is refused rather than guessed.

#![warn(missing_docs)]

mod attrs;
mod clip;
pub mod error;
pub mod export;
mod import;
mod integer;
mod loss;
pub mod names;
mod ops;
mod qdq;
mod tensor;

/// The ONNX protobuf types, generated from `proto/onnx.proto` by prost.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

pub use error::{ImportError, Result};
pub use export::{ExportError, export, export_bytes};
pub use ops::SUPPORTED_OPS;

/// The oldest default-domain opset the importer accepts.
pub const MIN_OPSET: i64 = 13;
/// The newest default-domain opset the importer accepts (the newest whose operator
/// changes were reviewed).
pub const MAX_OPSET: i64 = 28;

/// The loss functions the importer can add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// `softmax_cross_entropy` (mean over the batch) of the logits against i32 labels.
    CrossEntropy,
}

impl std::str::FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<LossKind, String> {
        match s {
            "cross-entropy" => Ok(LossKind::CrossEntropy),
            other => Err(format!("unknown loss '{other}' (valid: cross-entropy)")),
        }
    }
}

/// A training loss to add to the imported model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossSpec {
    /// Which loss.
    pub kind: LossKind,
    /// The name of the label input to add (`label` by convention).
    pub label: String,
    /// The output holding the logits, by its ONNX (or sanitized) name; `None` for the
    /// model's only output, or the output named `logits` when there are several.
    pub logits: Option<String>,
}

impl LossSpec {
    /// Cross-entropy on the only output with the label input `%label`.
    pub fn cross_entropy() -> LossSpec {
        LossSpec {
            kind: LossKind::CrossEntropy,
            label: "label".into(),
            logits: None,
        }
    }
}

/// How to import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// The graph's name (sanitized); `None` for the ONNX graph's name, or `model`.
    pub name: Option<String>,
    /// A loss to add, making the graph trainable.
    pub loss: Option<LossSpec>,
    /// Constants (not params or state) with at most this many elements are written inline.
    pub inline_limit: usize,
    /// Where external data files are looked for ([`import_file`] uses the model's folder
    /// when this is `None`); without it, external data is an error.
    pub data_dir: Option<PathBuf>,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions {
            name: None,
            loss: None,
            inline_limit: 16,
            data_dir: None,
        }
    }
}

/// An imported model.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The graph, verified.
    pub graph: qir::Graph,
    /// The tensor of every `external` declaration of the graph, by name.
    pub weights: BTreeMap<String, qir::Tensor>,
    /// Remarks on choices made (for example where the loss was attached).
    pub notes: Vec<String>,
    /// The model's default-domain opset.
    pub opset: i64,
}

/// Decodes the bytes of an ONNX model (`ModelProto`).
pub fn decode(bytes: &[u8]) -> Result<proto::ModelProto> {
    proto::ModelProto::decode(bytes).map_err(|e| ImportError::Decode(lower_first(&e.to_string())))
}

/// Imports an ONNX model from its bytes; external data files are read from
/// `opts.data_dir`.
pub fn import(bytes: &[u8], opts: &ImportOptions) -> Result<Imported> {
    let model = decode(bytes)?;
    import::import_model(&model, opts)
}

/// Imports an ONNX model file; external data files are read from its folder unless
/// `opts.data_dir` says otherwise.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::Io {
        path: path.to_path_buf(),
        message: lower_first(&e.to_string()),
    })?;
    let mut opts = opts.clone();
    if opts.data_dir.is_none() {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        opts.data_dir = Some(dir);
    }
    import(&bytes, &opts)
}

/// `s` with its first character lowercased (error messages of other libraries).
pub(crate) fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}
