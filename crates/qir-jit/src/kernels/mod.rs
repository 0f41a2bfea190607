//! Runtime kernels: the hand-written functions that compiled code calls for the work a
//! loop nest does badly — contractions (the `gemm` crate), convolutions (blocked, or
//! im2col/col2im around a product) and depthwise paths, pooling, softmax and
//! cross-entropy, argmax, copies of slices and concatenations, and the integer ops whose
//! arithmetic needs i64/i128.
//!
//! Every kernel family is one `extern "C"` symbol with the signature
//! `fn(ctx: *const RunCtx, call: *const Bound) -> i32`, registered with the JIT module;
//! the compiled entry function calls it with the address of the call's [`Bound`]
//! description (owned by the compiled program, so it lives as long as the code). A
//! non-zero return is an error code the program reports with the call's node.
//!
//! Invariant: the planner has checked every shape and size a descriptor holds; kernels
//! index only inside the buffers the descriptor names (each `Loc` addresses a buffer of
//! the size the plan gave it).

pub mod conv;
pub mod gemm;
pub mod integer;
pub mod misc;
pub mod pool;
pub mod softmax;

use crate::rt::{Loc, RunCtx};

/// A kernel call as the plan binds it: the kernel, where its arguments are and where its
/// result goes.
#[derive(Clone, Debug)]
pub struct Bound {
    /// What to compute.
    pub kernel: Kernel,
    /// The argument buffers, in the kernel's order.
    pub args: Vec<Loc>,
    /// The result buffer.
    pub out: Loc,
    /// Scratch space, when the kernel asks for some ([`Kernel::scratch_bytes`]).
    pub scratch: Option<Loc>,
}

/// What a kernel call computes. Every variant carries the sizes it works on.
#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// Matrix products `C (+)= A · B`, batched.
    Gemm(gemm::Gemm),
    /// Convolution input to columns: `[groups, K/groups, N*OH*OW]`.
    Im2col(conv::Conv),
    /// Columns back to a convolution input, summing overlaps (the input gradient).
    Col2im(conv::Conv),
    /// Depthwise convolution (groups = channels, one filter each): forward and gradients.
    Depthwise(conv::Conv, conv::ConvPass),
    /// A convolution pass over blocks of images (im2col/col2im per block, in cache).
    Conv(conv::Conv, conv::ConvPass),
    /// Pooling and its gradients.
    Pool(pool::Pool),
    /// Softmax or log-softmax along an axis, or their gradients.
    Softmax(softmax::Softmax),
    /// Softmax cross-entropy of logits against labels, or its gradient.
    SoftmaxCe(softmax::SoftmaxCe),
    /// Index of the largest value along an axis.
    Argmax(softmax::Argmax),
    /// Copies blocks between buffers: slices and concatenations.
    Copy(misc::Copy),
    /// The integer ops of converted graphs.
    Integer(Box<integer::IntOp>),
    /// A collective reduction over the processes of a data-parallel run.
    AllReduce(misc::AllReduce),
}

impl Kernel {
    /// The JIT symbol of the kernel's family.
    pub fn symbol(&self) -> &'static str {
        match self {
            Kernel::Gemm(_) => "qatc_gemm",
            Kernel::Im2col(_) => "qatc_im2col",
            Kernel::Col2im(_) => "qatc_col2im",
            Kernel::Depthwise(..) => "qatc_depthwise",
            Kernel::Conv(..) => "qatc_conv",
            Kernel::Pool(_) => "qatc_pool",
            Kernel::Softmax(_) => "qatc_softmax",
            Kernel::SoftmaxCe(_) => "qatc_softmax_ce",
            Kernel::Argmax(_) => "qatc_argmax",
            Kernel::Copy(_) => "qatc_copy",
            Kernel::Integer(_) => "qatc_integer",
            Kernel::AllReduce(_) => "qatc_all_reduce",
        }
    }

    /// Bytes of scratch space the kernel needs (0 for none).
    pub fn scratch_bytes(&self) -> usize {
        match self {
            Kernel::Integer(op) => op.scratch_bytes(),
            _ => 0,
        }
    }

    /// A short description for printed plans.
    pub fn describe(&self) -> String {
        match self {
            Kernel::Gemm(g) => format!(
                "gemm {}x{}x{}{}",
                g.m,
                g.n,
                g.k,
                if g.batch > 1 {
                    format!(" x{}", g.batch)
                } else {
                    String::new()
                }
            ),
            Kernel::Im2col(c) => format!("im2col {}", c.describe()),
            Kernel::Col2im(c) => format!("col2im {}", c.describe()),
            Kernel::Depthwise(c, p) => format!("depthwise {p:?} {}", c.describe()),
            Kernel::Conv(c, p) => format!(
                "conv {p:?} {} (blocks of {})",
                c.describe(),
                c.block_images()
            ),
            Kernel::Pool(p) => format!("{:?} {}x{}", p.kind, p.k[0], p.k[1]),
            Kernel::Softmax(s) => format!(
                "{}softmax{}",
                if s.log { "log_" } else { "" },
                if s.grad { "_grad" } else { "" }
            ),
            Kernel::SoftmaxCe(s) => format!(
                "softmax_cross_entropy{} {}x{}",
                if s.grad { "_grad" } else { "" },
                s.n,
                s.c
            ),
            Kernel::Argmax(_) => "argmax".into(),
            Kernel::Copy(c) => format!("copy {} block(s)", c.blocks.len()),
            Kernel::Integer(op) => op.describe(),
            Kernel::AllReduce(a) => format!("all_reduce {:?} {}", a.op, a.len),
        }
    }
}

/// Error codes kernels return (0 is success).
pub mod status {
    /// A label outside `[0, classes)`.
    pub const BAD_LABEL: i32 = 2;
    /// An integer result outside its accumulator's range.
    pub const OVERFLOW: i32 = 3;
    /// A rescale factor that cannot be represented (a scale of 0, NaN or infinity).
    pub const BAD_SCALE: i32 = 4;
    /// A step counter below 1 in an Adam update.
    pub const BAD_STEP: i32 = 5;
    /// The communicator failed in an `all_reduce`.
    pub const COMM: i32 = 6;

    /// The message of a status code.
    pub fn message(code: i32) -> &'static str {
        match code {
            BAD_LABEL => "a label is outside [0, classes)",
            OVERFLOW => "an int32 accumulator overflowed",
            BAD_SCALE => "a rescale factor cannot be represented (scale 0, NaN or infinite)",
            BAD_STEP => "step must be >= 1 (steps count from 1)",
            COMM => "the communicator failed in an all_reduce",
            _ => "kernel failed",
        }
    }
}

/// Reads `n` elements of type `T` at `loc`.
///
/// # Safety
/// `loc` must address at least `n` elements of `T` in the run's buffers.
pub(crate) unsafe fn slice<'a, T>(ctx: &RunCtx, loc: Loc, n: usize) -> &'a [T] {
    // SAFETY: the caller guarantees the buffer holds n elements of T.
    unsafe { std::slice::from_raw_parts(ctx.ptr(loc) as *const T, n) }
}

/// The mutable view of `n` elements of type `T` at `loc`.
///
/// # Safety
/// As [`slice`], and no other live reference may overlap the buffer.
#[allow(clippy::mut_from_ref)]
pub(crate) unsafe fn slice_mut<'a, T>(ctx: &RunCtx, loc: Loc, n: usize) -> &'a mut [T] {
    // SAFETY: the caller guarantees the buffer holds n elements of T and is not aliased.
    unsafe { std::slice::from_raw_parts_mut(ctx.ptr(loc) as *mut T, n) }
}

/// The registered kernel symbols and their addresses.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("qatc_gemm", gemm::qatc_gemm as *const u8),
        ("qatc_im2col", conv::qatc_im2col as *const u8),
        ("qatc_col2im", conv::qatc_col2im as *const u8),
        ("qatc_depthwise", conv::qatc_depthwise as *const u8),
        ("qatc_conv", conv::qatc_conv as *const u8),
        ("qatc_pool", pool::qatc_pool as *const u8),
        ("qatc_softmax", softmax::qatc_softmax as *const u8),
        ("qatc_softmax_ce", softmax::qatc_softmax_ce as *const u8),
        ("qatc_argmax", softmax::qatc_argmax as *const u8),
        ("qatc_copy", misc::qatc_copy as *const u8),
        ("qatc_integer", integer::qatc_integer as *const u8),
        ("qatc_all_reduce", misc::qatc_all_reduce as *const u8),
    ]
}
