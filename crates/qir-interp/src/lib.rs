//! `qir-interp`: the reference interpreter of qatc, the oracle every other execution path
//! (the JIT, the INT8 model, gradient checks) is tested against.
//!
//! It runs any verified [`qir::Graph`] op by op on dense [`qir::Tensor`]s: float ops in f32
//! (or, with [`Precision::F64`], every float value and op in f64), fake quantization
//! bit-exact with PyTorch, and the integer ops of a converted graph with exact integer
//! arithmetic. Parameters, state and constants live in a [`Store`] that [`init_store`]
//! fills from the graph's initializers; `update` bindings write back to it after a run.
//!
//! Invariants: the interpreter never panics on user data (bad inputs, shapes, store
//! contents, attribute values all become an [`InterpError`] naming the value or node);
//! it never mutates the graph; a failed run leaves the store untouched.
//!
//! ```
//! use std::collections::HashMap;
//! use qir::{Dim, Graph, Init, Inst, Op, Tensor, Type};
//! use qir_interp::{init_store, run, RunOptions};
//!
//! let mut g = Graph::new("tiny");
//! let x = g.add_input("x", Type::f32(&[Dim::from("B"), 2u64.into()])).unwrap();
//! let w = g.add_param("w", Type::f32(&[1u64.into(), 2u64.into()]), Init::Dense(vec![1.0, -2.0])).unwrap();
//! let y = g.add_op(Inst::new(Op::Linear), &[x, w], Some("y")).unwrap();
//! g.add_output("y", y);
//!
//! let mut store = init_store(&g, 0).unwrap();
//! let inputs = HashMap::from([("x".to_string(), Tensor::f32(vec![2, 2], vec![1.0, 1.0, 3.0, 0.5]).unwrap())]);
//! let r = run(&g, &mut store, &inputs, &RunOptions::default()).unwrap();
//! assert_eq!(r.outputs["y"].as_f32().unwrap(), &[-1.0, 2.0]);
//! ```

#![warn(missing_docs)]

mod exec;
mod executor;
mod kernels;
mod num;
mod session;

pub use executor::Interpreter;
pub use qir_exec::{ExecError as InterpError, Store, fill_store, init_store};
pub use session::{Session, run};

use std::collections::{BTreeMap, HashMap};

/// The float precision of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Every float value and op in f32 (the model's own precision).
    #[default]
    F32,
    /// Every float value and op in f64: f32 inputs, parameters and constants are widened
    /// on load. Integer ops stay exact integers. Used for finite-difference gradient checks.
    F64,
}

/// Options of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Float precision of every value and op.
    pub precision: Precision,
    /// Write the graph's `update` values back to the store after a successful run.
    pub apply_updates: bool,
}

impl Default for RunOptions {
    /// f32, updates applied.
    fn default() -> RunOptions {
        RunOptions {
            precision: Precision::F32,
            apply_updates: true,
        }
    }
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The graph's named outputs.
    pub outputs: BTreeMap<String, qir::Tensor>,
    /// The designated loss, if the graph has one.
    pub loss: Option<f64>,
    /// Every node's value (declarations included), for debugging and for comparisons
    /// against other execution paths.
    pub values: HashMap<qir::NodeId, qir::Tensor>,
}
