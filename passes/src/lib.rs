//! `passes` (package `qatc-passes`): qatc's graph passes, the registry that creates them
//! from pipeline text, the pass manager that runs and verifies them, and the named
//! pipelines embedded from `passes/pipelines/*.pipeline`.
//!
//! Every pass is a small type implementing [`Pass`], living in the file named like the pass
//! (`canonicalize` in `canonicalize.rs`), declared once in the `passes!` list below. Passes
//! can be used alone — read a model, run one pass, print the result:
//!
//! ```
//! use passes::{Canonicalize, Changed, Pass};
//!
//! let text = "graph @m {
//!   input %x: f32[B, 2]
//!   const %w: f32[2, 3] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
//!
//!   %wt = transpose(%w) {perm = [1, 0]} : f32[3, 2]
//!   %y = linear(%x, %wt) : f32[B, 3]
//!   %a = relu(%y) : f32[B, 3]
//!   %b = relu(%y) : f32[B, 3]
//!   %unused = tanh(%y) : f32[B, 3]
//!   %s = add(%a, %b) : f32[B, 3]
//!
//!   output s = %s
//! }
//! ";
//! let mut g = qir_reader::parse_and_verify(text).expect("the model reads");
//! assert_eq!(Canonicalize::default().run(&mut g).unwrap(), Changed::Yes);
//! let printed = qir::print::print(&g);
//! print!("{printed}");
//! // the transpose of a constant is folded, the duplicate relu merged, the dead tanh gone
//! assert_eq!(
//!     printed,
//!     "graph @m {
//!   input %x: f32[B, 2]
//!   const %wt: f32[3, 2] = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
//!
//!   %y = linear(%x, %wt) : f32[B, 3]
//!   %a = relu(%y) : f32[B, 3]
//!   %s = add(%a, %a) : f32[B, 3]
//!
//!   output s = %s
//! }
//! "
//! );
//! ```
//!
//! or build the graph in Rust:
//!
//! ```
//! use passes::{Canonicalize, Changed, Pass};
//! use qir::{Dim, Graph, Inst, Op, Type};
//!
//! let mut g = Graph::new("m");
//! let x = g.add_input("x", Type::f32(&[Dim::from("B"), 4u64.into()])).unwrap();
//! let a = g.op(Op::Relu, &[x]).unwrap();
//! let b = g.op(Op::Relu, &[x]).unwrap(); // the same op twice
//! let s = g.op(Op::Add, &[a, b]).unwrap();
//! let _dead = g.op(Op::Tanh, &[x]).unwrap(); // reaches no output
//! g.add_output("y", s);
//!
//! assert_eq!(Canonicalize::default().run(&mut g).unwrap(), Changed::Yes);
//! assert_eq!(g.op_count(), 2); // one relu, one add
//! qir::verify::verify(&g).unwrap();
//! ```
//!
//! or in a pipeline, with verification after every pass:
//!
//! ```
//! # use qir::{Dim, Graph, Op, Type};
//! # let mut g = Graph::new("m");
//! # let x = g.add_input("x", Type::f32(&[Dim::from("B"), 4u64.into()])).unwrap();
//! # let y = g.op(Op::Relu, &[x]).unwrap();
//! # g.add_output("y", y);
//! let pm = passes::PassManager::parse("canonicalize{cse=false}").unwrap();
//! let report = pm.run(&mut g).unwrap();
//! assert_eq!(report.runs[0].name, "canonicalize");
//! ```

pub mod egraph;
pub(crate) mod lowering;
pub mod manager;
pub mod named;
pub mod options;
pub mod pass;
pub mod pipeline;
pub mod placement;
pub mod registry;
pub mod scheme;

pub use manager::{PassManager, Report, RunError};
pub use named::{named, named_pipelines, named_spec, named_with};
pub use options::{OptionError, OptionKind, OptionSpec, Options};
pub use pass::{Changed, Pass, PassDef, PassError, PassInfo};
pub use pipeline::{OptValue, PassSpec, Pipeline};
pub use registry::ConfigError;

/// Declares the passes: for each `module => Type`, the module (file `src/module.rs`), a
/// re-export of the type, and its registration. This is the one list of passes.
macro_rules! passes {
    ($($module:ident => $ty:ident),* $(,)?) => {
        $(
            pub mod $module;
            pub use $module::$ty;
        )*

        /// Every pass, in declaration order.
        pub(crate) const REGISTERED: &[registry::Registration] = &[
            $(registry::Registration {
                info: <$module::$ty as PassDef>::INFO,
                module: stringify!($module),
                type_name: stringify!($ty),
                create: |o| Ok(Box::new(<$module::$ty as PassDef>::from_options(o)?)),
            },)*
        ];
    };
}

passes! {
    canonicalize => Canonicalize,
    grad => Grad,
    simplify => Simplify,
    fuse => Fuse,
    fold_batchnorm => FoldBatchNorm,
    fold_batchnorm_qat => FoldBatchNormQat,
    insert_fake_quant => InsertFakeQuant,
    freeze_observers => FreezeObservers,
    bind_state => BindState,
    strip_training => StripTraining,
    fold_constants => FoldConstants,
    quantize_weights => QuantizeWeights,
    fake_quant_to_qdq => FakeQuantToQdq,
    sink_dequantize => SinkDequantize,
    lower_layers => LowerLayers,
    lower_rescale_ops => LowerRescaleOps,
    convert_integer => ConvertInteger,
    disable_fake_quant => DisableFakeQuant,
    data_parallel => DataParallel,
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely
/// typo (at most a third of the word's length, and at least 1).
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .filter_map(|c| qir::names::bounded_distance(word, c, limit).map(|d| (d, c)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let names = ["canonicalize", "fold-batchnorm"];
        assert_eq!(
            suggest("canonicalise", names.into_iter()),
            Some("canonicalize")
        );
        assert_eq!(suggest("fold-bn", names.into_iter()), None);
        assert_eq!(suggest("x", ["y"].into_iter()), Some("y"));
        let long = "a".repeat(100_000);
        assert_eq!(suggest(&long, [long.as_str()].into_iter()), None);
    }
}
