//! Block copies: slices and concatenations move contiguous runs of elements between
//! buffers (`rows` runs of `run` elements, each at its own stride), for any element type.

use super::{Bound, Kernel};
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
