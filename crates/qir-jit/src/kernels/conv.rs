//! Convolution helpers: im2col (input windows to the columns of a matrix product),
//! col2im (columns back to an input, summing overlapping windows: the input gradient),
//! and the depthwise path (groups = channels, one filter per channel) computed directly.
//!
//! Layouts: input NCHW, weights OIHW, padding [top, left, bottom, right]. The column
//! matrix of group `g` is `[K/groups, N*OH*OW]` with row `(ci * KH + ky) * KW + kx` and
//! column `n * OH*OW + oy * OW + ox`; groups follow each other. Padding cells read 0.

use super::{Bound, Kernel, slice, slice_mut};
use crate::rt::RunCtx;

/// The geometry of a 2-D convolution (sizes checked by the planner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height and width.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Stride (rows, columns).
    pub stride: [usize; 2],
    /// Padding (top, left, bottom, right).
    pub pad: [usize; 4],
    /// Dilation (rows, columns).
    pub dil: [usize; 2],
    /// Groups.
    pub groups: usize,
}

impl Conv {
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
    /// Rows of one group's column matrix.
    pub fn kg(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Output positions per image.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Columns of the column matrix.
    pub fn cols(&self) -> usize {
        self.n * self.p()
    }
    /// Elements of the column matrix (all groups).
    pub fn col_len(&self) -> usize {
        self.groups * self.kg() * self.cols()
    }
    /// Elements of the input.
    pub fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    /// True for the depthwise case the direct kernels handle.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c && self.o == self.c
    }
    /// A short description.
    pub fn describe(&self) -> String {
        format!(
            "{}x{}x{}x{} -> {} k{}x{} s{:?} p{:?} d{:?} g{}",
            self.n,
            self.c,
            self.h,
            self.w,
            self.o,
            self.kh,
            self.kw,
            self.stride,
            self.pad,
            self.dil,
            self.groups
        )
    }
    /// The input row of output row `oy` and kernel row `ky`, if inside the input.
    #[inline]
    fn iy(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride[0] + ky * self.dil[0])
            .checked_sub(self.pad[0])
            .filter(|&v| v < self.h)
    }
    /// The input column of output column `ox` and kernel column `kx`, if inside.
    #[inline]
    fn ix(&self, ox: usize, kx: usize) -> Option<usize> {
        (ox * self.stride[1] + kx * self.dil[1])
            .checked_sub(self.pad[1])
            .filter(|&v| v < self.w)
    }
}

/// Which pass of a convolution (depthwise or blocked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPass {
    /// `y = conv(x, w)`: arguments x, w.
    Forward,
    /// `dx` from dy and w.
    GradInput,
    /// `dw` from dy and x.
    GradWeight,
}

impl Conv {
    /// The output columns `[lo, hi)` whose kernel column `kx` reads inside the input, and
    /// the input column of output column 0 (possibly negative).
    fn ox_range(&self, kx: usize) -> (usize, usize, isize) {
        let off = (kx * self.dil[1]) as isize - self.pad[1] as isize;
        let s = self.stride[1] as isize;
        // ix = ox * s + off must lie in [0, w)
        let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
        let hi = if (self.w as isize) <= off {
            0
        } else {
            ((self.w as isize - off + s - 1) / s).min(self.ow as isize)
        };
        (lo as usize, (hi.max(lo)) as usize, off)
    }
}

/// Fills the column matrix of `g` from `x`.
///
/// A task fills the rows of one input channel (all its kernel offsets) when there are
/// enough channels to share, so that each input plane is read once per task and stays in
/// L1 while its `KH*KW` rows are written (row by row, every plane would be read `KH*KW`
/// times from wherever the whole input fits); otherwise a task fills one row.
pub fn im2col(g: &Conv, x: &[f32], col: &mut [f32]) {
    let cols = g.cols();
    let kk = g.kh * g.kw;
    let rows = g.groups * g.kg();
    let per = if g.c >= 4 { kk } else { 1 };
    crate::rt::team::for_chunks(&mut col[..rows * cols], per * cols, &|t, dst| {
        let first_row = t * per;
        let ci = first_row / kk;
        for n in 0..g.n {
            let plane = &x[(n * g.c + ci) * g.h * g.w..][..g.h * g.w];
            for (j, drow) in dst.chunks_mut(cols).enumerate() {
                let rest = (first_row + j) % kk;
                im2col_row(
                    g,
                    plane,
                    rest / g.kw,
                    rest % g.kw,
                    &mut drow[n * g.p()..][..g.p()],
                );
            }
        }
    });
}

/// The columns of one image for kernel offset (ky, kx) of one input plane.
#[inline]
fn im2col_row(g: &Conv, plane: &[f32], ky: usize, kx: usize, out: &mut [f32]) {
    let (lo, hi, off) = g.ox_range(kx);
    let s1 = g.stride[1];
    for oy in 0..g.oh {
        let orow = &mut out[oy * g.ow..][..g.ow];
        let Some(iy) = g.iy(oy, ky) else {
            orow.fill(0.0);
            continue;
        };
        let irow = &plane[iy * g.w..][..g.w];
        orow[..lo].fill(0.0);
        orow[hi..].fill(0.0);
        if lo < hi {
            let first = (lo as isize * s1 as isize + off) as usize;
            if s1 == 1 {
                copy_short(&mut orow[lo..hi], &irow[first..first + (hi - lo)]);
            } else {
                for (k, o) in orow[lo..hi].iter_mut().enumerate() {
                    *o = irow[first + k * s1];
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the short rows of small images, in four-value pieces
/// (a library `memcpy` call costs more than the copy of a few dozen bytes).
#[inline]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let n = dst.len().min(src.len());
    if !(4..64).contains(&n) {
        dst[..n].copy_from_slice(&src[..n]);
        return;
    }
    let four = |d: &mut [f32], s: &[f32]| {
        let s: [f32; 4] = s.try_into().expect("four values");
        let d: &mut [f32; 4] = d.try_into().expect("four cells");
        *d = s;
    };
    for (d, s) in dst[..n].chunks_exact_mut(4).zip(src[..n].chunks_exact(4)) {
        four(d, s);
    }
    if !n.is_multiple_of(4) {
        // the last four values again, overlapping the pieces before
        four(&mut dst[n - 4..n], &src[n - 4..n]);
    }
}

/// Sums the column matrix of `g` back into an input-shaped `dx` (overwritten).
pub fn col2im(g: &Conv, col: &[f32], dx: &mut [f32]) {
    let cols = g.cols();
    // one task per image: each writes only its own [C, H, W] block
    crate::rt::team::for_chunks(dx, g.c * g.h * g.w, &|n, dxn| {
        col2im_image(g, col, cols, n * g.p(), dxn)
    });
}

/// Image `dxn` (`[C, H, W]`, overwritten) from the columns `at..at + P` of a column
/// matrix with `cols` columns.
fn col2im_image(g: &Conv, col: &[f32], cols: usize, at: usize, dxn: &mut [f32]) {
    let p = g.p();
    let plane = g.h * g.w;
    dxn.fill(0.0);
    for ci in 0..g.c {
        let a = &mut dxn[ci * plane..][..plane];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let src = &col[row * cols + at..][..p];
                let (lo, hi, off) = g.ox_range(kx);
                if lo >= hi {
                    continue;
                }
                let s1 = g.stride[1];
                for oy in 0..g.oh {
                    let Some(iy) = g.iy(oy, ky) else { continue };
                    let arow = &mut a[iy * g.w..][..g.w];
                    let srow = &src[oy * g.ow..][..g.ow];
                    let first = (lo as isize * s1 as isize + off) as usize;
                    if s1 == 1 {
                        for (d, &v) in arow[first..first + (hi - lo)].iter_mut().zip(&srow[lo..hi])
                        {
                            *d += v;
                        }
                    } else {
                        for (k, &v) in srow[lo..hi].iter().enumerate() {
                            arow[first + k * s1] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Bytes of one block's column matrix in the blocked passes: a share of L2 (1 MiB per core
/// on Zen 4, 1-2 MiB on recent Intel cores) beside the product's packed operands.
const BLOCK_BYTES: usize = 384 << 10;

impl Conv {
    /// Images per block of the blocked passes (at least one).
    pub fn block_images(&self) -> usize {
        let per_image = self.groups * self.kg() * self.p() * 4;
        (BLOCK_BYTES / per_image.max(1)).clamp(1, self.n.max(1))
    }
    /// Floating-point operations of one pass (each pass is one product of this size).
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.o * self.p()) as f64 * self.kg() as f64
    }
}

thread_local! {
    /// A thread's column block, taken for a use and put back (a nested use allocates).
    static BLOCK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's column block of at least `len` values.
fn with_block<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut v = BLOCK.with(|c| c.take());
    if v.len() < len {
        v.resize(len, 0.0);
    }
    let r = f(&mut v[..len]);
    BLOCK.with(|c| c.set(v));
    r
}

/// The columns of images `n0..n1` only: `col` is `[groups * kg][(n1 - n0) * P]` (the
/// layout of [`im2col`] for a batch of those images).
fn im2col_images(g: &Conv, x: &[f32], n0: usize, n1: usize, col: &mut [f32]) {
    let (p, kk) = (g.p(), g.kh * g.kw);
    let cols = (n1 - n0) * p;
    for n in n0..n1 {
        for ci in 0..g.c {
            let plane = &x[(n * g.c + ci) * g.h * g.w..][..g.h * g.w];
            for r in 0..kk {
                let row = ci * kk + r;
                let out = &mut col[row * cols + (n - n0) * p..][..p];
                im2col_row(g, plane, r / g.kw, r % g.kw, out);
            }
        }
    }
}

/// `C = A · B` (or `C += A · B` with `acc`) on one thread, every operand given by its
/// origin and row/column strides in elements.
///
/// # Safety
/// The operands hold every element the sizes and strides address.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    c: (*mut f32, isize, isize),
    a: (*const f32, isize, isize),
    b: (*const f32, isize, isize),
    acc: bool,
) {
    // SAFETY: as the caller promised.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.0,
            c.2,
            c.1,
            acc,
            a.0,
            a.2,
            a.1,
            b.0,
            b.2,
            b.1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
}

/// A convolution pass over blocks of images, each block's column matrix built (or
/// consumed) in a thread's L2-sized buffer right before (after) its products, instead of
/// the whole batch's column matrix in memory; the blocks are the team's parts and write
/// disjoint images.
///
/// - `Forward`: `a` = x (NCHW), `b` = w (OIHW), `out` = y as `[O, N, P]`.
/// - `GradInput`: `a` = dy as `[O, N, P]`, `b` = w, `out` = dx (NCHW): per block the
///   column gradient `W^T · dy`, then [`col2im`] into the block's images.
///
/// (A weight gradient sums over every image: training keeps the batch's column matrix for
/// it, see the lowering, so there is no blocked `GradWeight`; it returns `false`.)
///
/// # Safety
/// The buffers hold the sizes `g` gives them.
pub unsafe fn conv_blocked(
    g: &Conv,
    pass: ConvPass,
    a: *const f32,
    b: *const f32,
    out: *mut f32,
) -> bool {
    if pass == ConvPass::GradWeight {
        return false;
    }
    let (og, kg, p) = (g.og(), g.kg(), g.p());
    let (np, nb) = ((g.n * p) as isize, g.block_images());
    let (a, b, out) = (a as usize, b as usize, out as usize);
    crate::rt::team::run(g.n.div_ceil(nb), &|blk| {
        let (n0, n1) = (blk * nb, ((blk + 1) * nb).min(g.n));
        let cb = (n1 - n0) * p;
        let (a, b, out) = (a as *const f32, b as *const f32, out as *mut f32);
        with_block(g.groups * kg * cb, |col| {
            // SAFETY (every product and slice below): the offsets stay inside the buffers
            // of the sizes `g` gives (the caller's contract) and the block's column buffer;
            // parts write disjoint images of y or dx.
            unsafe {
                if pass == ConvPass::Forward {
                    let x = std::slice::from_raw_parts(a, g.x_len());
                    im2col_images(g, x, n0, n1, col);
                    for grp in 0..g.groups {
                        product(
                            (og, cb, kg),
                            (out.add(grp * og * g.n * p + n0 * p), np, 1),
                            (b.add(grp * og * kg), kg as isize, 1),
                            (col.as_ptr().add(grp * kg * cb), cb as isize, 1),
                            false,
                        );
                    }
                } else {
                    for grp in 0..g.groups {
                        product(
                            (kg, cb, og),
                            (col.as_mut_ptr().add(grp * kg * cb), cb as isize, 1),
                            (b.add(grp * og * kg), 1, kg as isize),
                            (a.add(grp * og * g.n * p + n0 * p), np, 1),
                            false,
                        );
                    }
                    let img = g.c * g.h * g.w;
                    let dx = std::slice::from_raw_parts_mut(out.add(n0 * img), (n1 - n0) * img);
                    for (j, dxn) in dx.chunks_exact_mut(img).enumerate() {
                        col2im_image(g, col, cb, j * p, dxn);
                    }
                }
            }
        });
    });
    true
}

/// The `qatc_conv` kernel (see [`conv_blocked`]).
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan.
pub unsafe extern "C" fn qatc_conv(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let Kernel::Conv(g, pass) = &call.kernel else {
        return -1;
    };
    // SAFETY: the plan sized the buffers for `g` and the pass.
    let done = unsafe {
        conv_blocked(
            g,
            *pass,
            ctx.ptr(call.args[0]) as *const f32,
            ctx.ptr(call.args[1]) as *const f32,
            ctx.ptr(call.out) as *mut f32,
        )
    };
    if done { 0 } else { -1 }
}

/// Depthwise forward: `y[n, c] = sum_{ky, kx} x[n, c, iy, ix] * w[c, 0, ky, kx]`, summed
/// over ky then kx (the interpreter's order).
pub fn depthwise_forward(g: &Conv, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (plane, p) = (g.h * g.w, g.p());
    crate::rt::team::for_chunks(y, p, &|nc, out| {
        let ch = nc % g.c;
        let xp = &x[nc * plane..][..plane];
        let wk = &w[ch * g.kh * g.kw..][..g.kh * g.kw];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut s = 0.0f32;
                for ky in 0..g.kh {
                    let Some(iy) = g.iy(oy, ky) else { continue };
                    for kx in 0..g.kw {
                        if let Some(ix) = g.ix(ox, kx) {
                            s += xp[iy * g.w + ix] * wk[ky * g.kw + kx];
                        }
                    }
                }
                out[oy * g.ow + ox] = s;
            }
        }
    });
}

/// Depthwise input gradient.
pub fn depthwise_grad_input(g: &Conv, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (plane, p) = (g.h * g.w, g.p());
    crate::rt::team::for_chunks(dx, plane, &|nc, out| {
        out.fill(0.0);
        let ch = nc % g.c;
        let d = &dy[nc * p..][..p];
        let wk = &w[ch * g.kh * g.kw..][..g.kh * g.kw];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let v = d[oy * g.ow + ox];
                for ky in 0..g.kh {
                    let Some(iy) = g.iy(oy, ky) else { continue };
                    for kx in 0..g.kw {
                        if let Some(ix) = g.ix(ox, kx) {
                            out[iy * g.w + ix] += v * wk[ky * g.kw + kx];
                        }
                    }
                }
            }
        }
    });
}

/// Depthwise weight gradient.
pub fn depthwise_grad_weight(g: &Conv, dy: &[f32], x: &[f32], dw: &mut [f32]) {
    let (plane, p, kk) = (g.h * g.w, g.p(), g.kh * g.kw);
    crate::rt::team::for_chunks(dw, kk, &|ch, out| {
        out.fill(0.0);
        for n in 0..g.n {
            let nc = n * g.c + ch;
            let xp = &x[nc * plane..][..plane];
            let d = &dy[nc * p..][..p];
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let mut s = 0.0f32;
                    for oy in 0..g.oh {
                        let Some(iy) = g.iy(oy, ky) else { continue };
                        for ox in 0..g.ow {
                            if let Some(ix) = g.ix(ox, kx) {
                                s += d[oy * g.ow + ox] * xp[iy * g.w + ix];
                            }
                        }
                    }
                    out[ky * g.kw + kx] += s;
                }
            }
        }
    });
}

/// The `qatc_im2col` kernel: argument 0 is the input, the result the column matrix.
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan.
pub unsafe extern "C" fn qatc_im2col(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let Kernel::Im2col(g) = &call.kernel else {
        return -1;
    };
    // SAFETY: the plan sized the buffers for `g`.
    let (x, col) = unsafe {
        (
            slice::<f32>(ctx, call.args[0], g.x_len()),
            slice_mut::<f32>(ctx, call.out, g.col_len()),
        )
    };
    im2col(g, x, col);
    0
}

/// The `qatc_col2im` kernel: argument 0 is the column matrix, the result the input.
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan.
pub unsafe extern "C" fn qatc_col2im(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let Kernel::Col2im(g) = &call.kernel else {
        return -1;
    };
    // SAFETY: the plan sized the buffers for `g`.
    let (col, dx) = unsafe {
        (
            slice::<f32>(ctx, call.args[0], g.col_len()),
            slice_mut::<f32>(ctx, call.out, g.x_len()),
        )
    };
    col2im(g, col, dx);
    0
}

/// The `qatc_depthwise` kernel.
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan.
pub unsafe extern "C" fn qatc_depthwise(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let Kernel::Depthwise(g, pass) = &call.kernel else {
        return -1;
    };
    let (xl, yl, wl) = (g.x_len(), g.n * g.o * g.p(), g.o * g.kh * g.kw);
    // SAFETY: the plan sized the buffers for `g` and the pass.
    unsafe {
        match pass {
            ConvPass::Forward => depthwise_forward(
                g,
                slice(ctx, call.args[0], xl),
                slice(ctx, call.args[1], wl),
                slice_mut(ctx, call.out, yl),
            ),
            ConvPass::GradInput => depthwise_grad_input(
                g,
                slice(ctx, call.args[0], yl),
                slice(ctx, call.args[1], wl),
                slice_mut(ctx, call.out, xl),
            ),
            ConvPass::GradWeight => depthwise_grad_weight(
                g,
                slice(ctx, call.args[0], yl),
                slice(ctx, call.args[1], xl),
                slice_mut(ctx, call.out, wl),
            ),
        }
    }
    0
}
