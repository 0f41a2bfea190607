//! `qir-exec`: what every executor of qir graphs shares — the contract the reference
//! interpreter (`qir-interp`) and the JIT (`qir-jit`) both implement, and that the
//! runtime and the driver program against.
//!
//! - [`Store`]: parameters, state and constants by name, materialized from the graph's
//!   initializers by [`init_store`] / [`fill_store`] (deterministic per seed and name).
//! - [`bind_inputs`]: the one check of a run's inputs against the graph's declarations.
//! - [`Executor`] / [`Program`]: prepare a graph once (with the values to fetch), run it
//!   many times; see [`program`] for the invariants every implementation keeps.
//! - [`collective`]: the communicator both executors run `all_reduce` through (the
//!   identity for one process).
//! - [`ExecError`]: one-line errors naming the input, value or node at fault.

#![warn(missing_docs)]

mod bind;
pub mod collective;
mod error;
pub mod memory;
pub mod program;
mod store;

pub use bind::{Bindings, bind_inputs, unbound_symbols};
pub use error::ExecError;
pub use program::{Executor, Inputs, Program, ProgramStats, RunOutput, loss_value};
pub use store::{
    Store, check_data, check_fake_quant_scale, check_fake_quant_scales, check_stored,
    data_from_f64, dtype_fits, fake_quant_scale_values, fans, fill_store, init_store,
};
