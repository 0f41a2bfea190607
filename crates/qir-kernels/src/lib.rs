//! `qir-kernels`: the int8 kernel family of qatc — what the JIT calls to run a converted
//! integer model (registered as JIT symbols through the `extern "C"` entry points of
//! [`ffi`]), and a safe Rust API for everyone else.
//!
//! - [`qgemm`] / [`qgemm_par`]: `A[n, k]` (u8 or i8, zero point `za`) times packed weights
//!   [`PackedB`] (`[m, k]` i8, per-channel zero points) with a fused epilogue
//!   ([`FusedOp`]: per-channel add, clamp, [`Requant`]), output i32, i8 or u8.
//! - [`qgemm_on`] / [`qconv2d_on`]: the same on a caller's fork-join team ([`Parallel`]);
//!   [`qconv2d_pool_on`] with a max pooling fused after the convolution ([`MaxPool`]).
//! - [`qconv2d`] / [`qconv2d_par`]: NCHW int8 convolution (stride, padding, dilation, groups)
//!   over [`PackedConv`] weights, im2col onto the same tile kernels, depthwise direct.
//! - [`requantize`]: standalone i32 to i8/u8 with the same epilogue.
//! - [`Path`]: portable, AVX2, AVX-512 VNNI, AMX (and an emulated AMX for testing), chosen
//!   at run time by CPU features ([`Path::Auto`]) or forced.
//!
//! The integer semantics are the reference interpreter's (`qir-interp`): exact wrapping-i32
//! accumulation of `(x - zx)(w - zw)` plus bias, one exact rounding in the named
//! [`Rounding`], clamp with the activation folded in. Every path gives the same bits (the
//! test suite runs one set of tests on each). See `gemm.rs` for the overflow bound.
//!
//! ```
//! use qir_kernels::*;
//! // 2 x 3 activations (u8, zero point 10) times 2 x 3 weights, bias, requantize to i8
//! let a = [10u8, 20, 30, 40, 50, 60];
//! let w = PackedB::new(&[1, -1, 2, 0, 3, -2], 2, 3, None).unwrap();
//! let q = Requant::per_tensor(Rounding::HalfAwayFromZero, 1 << 30, 0, -5, Clamp::full(OutType::I8)).unwrap();
//! let mut y = [0i8; 4];
//! qgemm(Path::Auto, Activations::U8(&a), 2, 10, &w, &[FusedOp::AddPerChannel(&[1, 2]), FusedOp::Requantize(&q)], Output::I8(&mut y)).unwrap();
//! // row 0: (0, 10, 20) . (1, -1, 2) + 1 = 31 -> 31 / 2 = 15.5 -> 16 (away) - 5 = 11
//! assert_eq!(y[0], 11);
//! ```

#![warn(missing_docs)]

mod buf;
mod conv;
mod epilogue;
mod error;
pub mod ffi;
mod gemm;
mod kernels;
mod pack;
mod par;
mod path;
mod requant;
mod requantize;

pub use conv::{ConvGeom, MaxPool, PackedConv, qconv2d, qconv2d_on, qconv2d_par, qconv2d_pool_on};
pub use epilogue::FusedOp;
pub use error::{KResult, KernelError};
pub use gemm::{MAX_USER_STEPS, Output, qgemm, qgemm_on, qgemm_par};
pub use pack::{Activations, PackedB};
pub use par::{ForkJoin, Parallel};
pub use path::Path;
pub use requant::{Activation, Clamp, OutType, Requant, Rounding, quantize_multiplier};
pub use requantize::{ChannelAxis, requantize};
