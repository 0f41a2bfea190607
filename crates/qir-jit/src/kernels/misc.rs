//! Block copies: slices and concatenations move contiguous runs of elements between
//! buffers (`rows` runs of `run` elements, each at its own stride), for any element type;
//! and the collective `all_reduce`, which hands its buffer to the process' communicator.

use qir_exec::collective::{Buffer, ReduceOp, all_reduce};

use super::{Bound, Kernel, slice_mut};
use crate::dtype::DType;
use crate::rt::RunCtx;

/// `rows` runs of `run` elements from argument `arg` to the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// The argument copied from.
    pub arg: usize,
    /// Number of runs.
    pub rows: usize,
    /// Elements per run.
    pub run: usize,
    /// First source element.
    pub src_offset: usize,
    /// Elements between the starts of source runs.
    pub src_stride: usize,
    /// First destination element.
    pub dst_offset: usize,
    /// Elements between the starts of destination runs.
    pub dst_stride: usize,
}

/// A block copy of elements of `elem` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    /// Bytes per element.
    pub elem: usize,
    /// The blocks, in order.
    pub blocks: Vec<Block>,
}

/// The `qatc_copy` kernel.
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan.
pub unsafe extern "C" fn qatc_copy(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let Kernel::Copy(c) = &call.kernel else {
        return -1;
    };
    // SAFETY: the plan sized every buffer for the blocks it copies.
    unsafe {
        let dst = ctx.ptr(call.out);
        for b in &c.blocks {
            let src = ctx.ptr(call.args[b.arg]);
            for r in 0..b.rows {
                std::ptr::copy_nonoverlapping(
                    src.add((b.src_offset + r * b.src_stride) * c.elem),
                    dst.add((b.dst_offset + r * b.dst_stride) * c.elem),
                    b.run * c.elem,
                );
            }
        }
    }
    0
}

/// An `all_reduce` of `len` elements through the process' communicator
/// ([`qir_exec::collective`]): the argument is copied to the result, which is reduced in
/// place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllReduce {
    /// Number of elements.
    pub len: usize,
    /// How the processes' values combine.
    pub op: ReduceOp,
    /// The element type (f32; f64 graphs are not compiled).
    pub dtype: DType,
}

/// The `qatc_all_reduce` kernel.
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan.
pub unsafe extern "C" fn qatc_all_reduce(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let Kernel::AllReduce(a) = &call.kernel else {
        return -1;
    };
    if a.dtype != DType::F32 {
        return -1;
    }
    // SAFETY: the plan sized the argument and the result for `len` f32 values; `copy`
    // allows them to be the same buffer.
    let out = unsafe {
        std::ptr::copy(
            ctx.ptr(call.args[0]) as *const f32,
            ctx.ptr(call.out) as *mut f32,
            a.len,
        );
        slice_mut::<f32>(ctx, call.out, a.len)
    };
    match all_reduce(Buffer::F32(out), a.op) {
        Ok(()) => 0,
        Err(_) => super::status::COMM,
    }
}
