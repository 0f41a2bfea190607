//! `qir-jit`: qatc's compiled executor. A verified qir graph — a forward model, a whole
//! training step (forward, backward with straight-through estimators, optimizer and state
//! updates), or a converted integer model — is lowered for the batch size of the run,
//! fused into loop nests, planned over one memory arena, and compiled to native code with
//! Cranelift. Contractions call the `gemm` crate; elementwise chains, fake quantization
//! with its observers, reductions and optimizer updates are generated code.
//!
//! The [`Jit`] executor implements the `qir-exec` contract, so the runtime and the driver
//! use it exactly as they use the reference interpreter (which stays the oracle: the
//! tests compare the two on every op and model).
//!
//! ```
//! use std::collections::HashMap;
//! use qir::{Dim, Graph, Init, Inst, Op, Tensor, Type};
//! use qir_exec::{Executor, init_store};
//!
//! let mut g = Graph::new("tiny");
//! let x = g.add_input("x", Type::f32(&[Dim::from("B"), 2u64.into()])).unwrap();
//! let w = g.add_param("w", Type::f32(&[1u64.into(), 2u64.into()]), Init::Dense(vec![1.0, -2.0])).unwrap();
//! let y = g.add_op(Inst::new(Op::Linear), &[x, w], Some("y")).unwrap();
//! let r = g.op(Op::Relu, &[y]).unwrap();
//! g.add_output("y", r);
//!
//! let mut store = init_store(&g, 0).unwrap();
//! let mut prog = qir_jit::Jit::default().prepare(&g, &[]).unwrap();
//! let inputs = HashMap::from([("x".to_string(), Tensor::f32(vec![2, 2], vec![1.0, 1.0, 3.0, 0.5]).unwrap())]);
//! let out = prog.run(&mut store, &inputs).unwrap();
//! assert_eq!(out.outputs["y"].as_f32().unwrap(), &[0.0, 2.0]);
//! ```
//!
//! Numbers: fake quantization, STE masks, observers, quantization parameters and
//! optimizer updates use the interpreter's arithmetic operation for operation and agree
//! with it bit for bit on the same inputs; integer ops are exact; sums accumulate in f64
//! as the interpreter's but in another order, and matrix products are blocked, so other
//! float results differ by rounding (see the crate's tests for the tolerances).

#![warn(missing_docs)]

mod codegen;
pub mod dtype;
mod fuse;
pub mod kernels;
pub mod lgraph;
mod lower;
pub mod plan;
mod program;
pub mod rt;

pub use program::{Compiled, JitProgram};

use qir::{Graph, NodeId};
use qir_exec::{ExecError, Executor, Program};

/// The JIT executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jit {
    /// Threads for loops and contractions (the global thread pool's size by default).
    pub threads: usize,
    /// Refuse to run a program whose arena would exceed this many bytes.
    pub max_arena_bytes: Option<usize>,
    /// Time every step of every run ([`JitProgram::profile`]).
    pub profile: bool,
}

impl Default for Jit {
    fn default() -> Jit {
        Jit {
            threads: rayon::current_num_threads().max(1),
            max_arena_bytes: None,
            profile: false,
        }
    }
}

impl Executor for Jit {
    fn name(&self) -> &'static str {
        "jit"
    }

    fn prepare(&self, g: &Graph, fetch: &[NodeId]) -> Result<Box<dyn Program>, ExecError> {
        qir::verify::verify(g).map_err(|e| {
            let msgs: Vec<String> = e.0.iter().map(|v| v.to_string()).collect();
            ExecError::InvalidGraph(msgs.join("; "))
        })?;
        for &id in fetch {
            if !g.contains(id) {
                return Err(ExecError::InvalidGraph(format!(
                    "cannot fetch node #{}: it is not in graph @{}",
                    id.index(),
                    g.name
                )));
            }
        }
        for id in g.node_ids() {
            if let Err(e) = dtype::DType::of(&g.ty(id).elem) {
                return Err(ExecError::Unsupported(format!("{}: {e}", g.describe(id))));
            }
        }
        Ok(Box::new(JitProgram::new(g.clone(), fetch.to_vec(), *self)))
    }
}
