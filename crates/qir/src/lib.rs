//! `qir`: the graph IR of qatc.
//!
//! A model is a [`Graph`]: declarations (inputs, trained parameters, state, constants) and
//! single-result ops over tensor values, with named outputs, an optional designated loss
//! and `update` bindings that give parameters and state their next value. Every op is
//! declared once in the op table ([`Op`], [`OpInfo`]). The crate holds the types, the
//! graph, shape inference ([`shape`]), the verifier ([`verify`]), the canonical printer
//! ([`print`]) and Graphviz rendering ([`dot`]). It knows nothing of parsing; the reader
//! lives in `qir-reader`.
//!
//! ```
//! use qir::{Graph, Init, Inst, Op, Type, Dim};
//!
//! let mut g = Graph::new("tiny");
//! let x = g.add_input("x", Type::f32(&[Dim::from("B"), 4u64.into()])).unwrap();
//! let w = g.add_param("w", Type::f32(&[3u64.into(), 4u64.into()]), Init::KaimingUniform).unwrap();
//! let h = g.add_op(Inst::new(Op::Linear), &[x, w], Some("h")).unwrap();
//! let y = g.op(Op::Relu, &[h]).unwrap();
//! g.add_output("y", y);
//! qir::verify::verify(&g).unwrap();
//! assert!(qir::print::print(&g).contains("%0 = relu(%h) : f32[B, 3]"));
//! ```

pub mod attr;
pub mod dot;
pub mod float;
pub mod graph;
pub mod names;
pub mod ops;
pub mod print;
pub mod quant;
pub mod shape;
pub mod tensor;
pub mod types;
pub mod verify;

pub use attr::{Attr, AttrKind, AttrSpec, Attrs};
pub use graph::{EditError, Graph, Init, Inst, Loc, Loss, Node, NodeId, NodeKind, Output, Update};
pub use ops::{Op, OpClass, OpInfo};
pub use tensor::{Data, Tensor};
pub use types::{Dim, ElemType, QuantParams, QuantType, Shape, Storage, Type};
