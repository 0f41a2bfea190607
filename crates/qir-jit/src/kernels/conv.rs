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

/// Which pass of a depthwise convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DwPass {
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
    let p = g.p();
    let plane = g.h * g.w;
    // one task per image: each writes only its own [C, H, W] block
    crate::rt::team::for_chunks(dx, g.c * plane, &|n, dxn| {
        dxn.fill(0.0);
        for ci in 0..g.c {
            let a = &mut dxn[ci * plane..][..plane];
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let row = (ci * g.kh + ky) * g.kw + kx;
                    let src = &col[row * cols + n * p..][..p];
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
                            for (d, &v) in
                                arow[first..first + (hi - lo)].iter_mut().zip(&srow[lo..hi])
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
    });
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
            DwPass::Forward => depthwise_forward(
                g,
                slice(ctx, call.args[0], xl),
                slice(ctx, call.args[1], wl),
                slice_mut(ctx, call.out, yl),
            ),
            DwPass::GradInput => depthwise_grad_input(
                g,
                slice(ctx, call.args[0], yl),
                slice(ctx, call.args[1], wl),
                slice_mut(ctx, call.out, xl),
            ),
            DwPass::GradWeight => depthwise_grad_weight(
                g,
                slice(ctx, call.args[0], yl),
                slice(ctx, call.args[1], xl),
                slice_mut(ctx, call.out, wl),
            ),
        }
    }
    0
}
