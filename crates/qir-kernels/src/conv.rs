//! Int8 2-D convolution: NCHW activations (u8 or i8), OIHW i8 weights packed once,
//! stride / padding `[top, left, bottom, right]` / dilation / groups as in the reference
//! interpreter, output NCHW (i32, i8 or u8) through the fused epilogue.
//!
//! General convolutions run per image and group as a contraction with the output channels
//! as rows (L = the packed weight rows) and the output pixels as columns (R = the im2col
//! panels), so the per-channel epilogue runs along rows and every tile row stores 16
//! contiguous output pixels of one channel. im2col writes the unsigned-domain input with
//! padding cells holding the input zero point (they contribute 0), in two steps: one row
//! per `k = (c, ki, kj)` with the pixels contiguous, then a 4-way byte interleave into the
//! panel layout. Zero points enter as in [`crate::gemm`] (the row term uses the weights'
//! column sums, the column term the pixels' im2col sums).
//!
//! Depthwise convolutions (`groups == C == O`) run directly, without im2col: each output
//! channel accumulates its `kh * kw` taps over a centered copy of its input plane.

use crate::par::Parallel;

use crate::buf::{AlignedBuf, with_scratch};
use crate::epilogue::{Axis, FusedOp, OutKind, OutView, Step};
use crate::error::{KResult, check_len, invalid};
use crate::gemm::{
    Output, PAR_MIN_WORK, Steps, corrections, run_tiles, run_tiles_raw, user_steps, validate_ops,
};
use crate::kernels::{self, Kernels, POOL2_MR};
use crate::pack::{Activations, expand_zero_points, kpad};
use crate::path::Path;

/// Geometry of a 2-D convolution (NCHW input, OIHW weights); the same fields and rules as
/// the reference interpreter's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeom {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
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
    /// Padding: top, left, bottom, right.
    pub pad: [usize; 4],
    /// Dilation (rows, columns).
    pub dil: [usize; 2],
    /// Groups (divides `c` and `o`).
    pub groups: usize,
}

fn window_out(input: usize, k: usize, stride: usize, pad: usize, dil: usize) -> Option<usize> {
    let span = dil.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = input.checked_add(pad)?;
    if padded < span || stride == 0 {
        return None;
    }
    Some((padded - span) / stride + 1)
}

impl ConvGeom {
    /// Builds and checks the geometry; `oh` and `ow` are computed from the window.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n: usize,
        c: usize,
        hw: [usize; 2],
        o: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 4],
        dil: [usize; 2],
        groups: usize,
    ) -> KResult<ConvGeom> {
        if groups == 0 || c == 0 || o == 0 || !c.is_multiple_of(groups) || !o.is_multiple_of(groups)
        {
            return invalid(format!(
                "groups = {groups} must divide the input channels ({c}) and output channels ({o})"
            ));
        }
        if stride.contains(&0) || dil.contains(&0) || kernel.contains(&0) {
            return invalid("stride, dilation and kernel size must be >= 1");
        }
        let oh = window_out(hw[0], kernel[0], stride[0], pad[0] + pad[2], dil[0]);
        let ow = window_out(hw[1], kernel[1], stride[1], pad[1] + pad[3], dil[1]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return invalid(format!(
                "window {}x{} does not fit the {}x{} input",
                kernel[0], kernel[1], hw[0], hw[1]
            ));
        };
        let g = ConvGeom {
            n,
            c,
            h: hw[0],
            w: hw[1],
            o,
            kh: kernel[0],
            kw: kernel[1],
            oh,
            ow,
            stride,
            pad,
            dil,
            groups,
        };
        let sizes = [
            [n, c, g.h, g.w],
            [n, o, oh, ow],
            [o, c / groups, g.kh, g.kw],
        ];
        for s in sizes {
            if s.iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_none_or(|v| v > isize::MAX as usize)
            {
                return invalid(format!("shape {s:?} has too many elements"));
            }
        }
        Ok(g)
    }
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
    /// Output pixels per channel.
    pub fn plane(&self) -> usize {
        self.oh * self.ow
    }
    /// Input length.
    pub fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    /// Output length.
    pub fn y_len(&self) -> usize {
        self.n * self.o * self.plane()
    }
    /// Weight length.
    pub fn w_len(&self) -> usize {
        self.o * self.cg() * self.kh * self.kw
    }
    /// Reduction length per output (`cg * kh * kw`).
    pub fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Whether this is a depthwise convolution (`groups == c == o`), run without im2col.
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.c && self.groups == self.o
    }
    /// Multiply-accumulates of the whole convolution.
    pub fn macs(&self) -> usize {
        self.y_len() * self.k()
    }
}

/// The output positions `oy` whose input index `oy * s + kd - pad` is inside `[0, input)`,
/// as `(first, end, offset)` with input index `oy * s + offset`.
fn valid(out: usize, input: usize, s: usize, kd: usize, pad: usize) -> (usize, usize, isize) {
    let off = kd as isize - pad as isize;
    let lo = if off >= 0 {
        0
    } else {
        ((-off) as usize).div_ceil(s)
    };
    let last = input as isize - 1 - off;
    let hi = if last < 0 {
        0
    } else {
        ((last as usize) / s + 1).min(out)
    };
    (lo.min(hi), hi, off)
}

/// Convolution weights `[o, c / groups, kh, kw]` (i8, OIHW), packed once: per group, the
/// output channels' rows (`k = (c, ki, kj)`, `kp` a multiple of 64, rows padded to 32),
/// their sums, the zero points, and for a depthwise layer the plain taps.
#[derive(Clone, Debug)]
pub struct PackedConv {
    pub(crate) o: usize,
    pub(crate) cg: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) groups: usize,
    pub(crate) k: usize,
    pub(crate) kp: usize,
    pub(crate) og_pad: usize,
    pub(crate) rows: AlignedBuf,
    pub(crate) wsum: Vec<i32>,
    pub(crate) zw: Vec<i32>,
    pub(crate) zw_any: bool,
    pub(crate) taps: Vec<i8>,
}

impl PackedConv {
    /// Packs OIHW weights `w` of `o` output channels, `c_per_group` input channels per
    /// group, a `kernel` window and `groups` groups. `zero_points`: `None` (symmetric), one
    /// per tensor, or one per output channel.
    pub fn new(
        w: &[i8],
        o: usize,
        c_per_group: usize,
        kernel: [usize; 2],
        groups: usize,
        zero_points: Option<&[i32]>,
    ) -> KResult<PackedConv> {
        let [kh, kw] = kernel;
        if o == 0
            || c_per_group == 0
            || kh == 0
            || kw == 0
            || groups == 0
            || !o.is_multiple_of(groups)
        {
            return invalid(format!(
                "bad weight shape [{o}, {c_per_group}, {kh}, {kw}] with {groups} groups"
            ));
        }
        let k = c_per_group * kh * kw;
        check_len("weights", o * k, w.len())?;
        let (zw, zw_any) = expand_zero_points(zero_points, o)?;
        let og = o / groups;
        let og_pad = og.div_ceil(32) * 32;
        let kp = kpad(k, 64);
        let mut rows = AlignedBuf::zeroed(groups * og_pad * kp);
        let r = rows.as_mut_slice();
        let mut wsum = vec![0; o];
        for oc in 0..o {
            let (g, i) = (oc / og, oc % og);
            let src = &w[oc * k..(oc + 1) * k];
            let dst = &mut r[(g * og_pad + i) * kp..][..k];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s as u8;
            }
            wsum[oc] = src.iter().map(|&v| v as i32).sum();
        }
        let taps = if c_per_group == 1 && og == 1 {
            w.to_vec()
        } else {
            Vec::new()
        };
        Ok(PackedConv {
            o,
            cg: c_per_group,
            kh,
            kw,
            groups,
            k,
            kp,
            og_pad,
            rows,
            wsum,
            zw,
            zw_any,
            taps,
        })
    }

    fn check(&self, g: &ConvGeom) -> KResult<()> {
        if (self.o, self.cg, self.kh, self.kw, self.groups, self.k)
            != (g.o, g.cg(), g.kh, g.kw, g.groups, g.k())
        {
            return invalid(format!(
                "packed weights [{}, {}, {}, {}] / {} groups do not match the geometry {g:?}",
                self.o, self.cg, self.kh, self.kw, self.groups
            ));
        }
        Ok(())
    }
}

/// Int8 convolution on one thread: `y[n, o, oy, ox] = epilogue(sum (x - zx) * (w - zw[o]))`
/// over the window of `g`. `x` is NCHW, `out` NCHW `[n, o, oh, ow]`.
pub fn qconv2d(
    path: Path,
    x: Activations,
    zx: i32,
    g: &ConvGeom,
    w: &PackedConv,
    ops: &[FusedOp],
    out: Output,
) -> KResult<()> {
    qconv2d_on(Parallel::None, path, x, zx, g, w, ops, out)
}

/// [`qconv2d`] with the batch split over the threads of rayon's global pool when the
/// convolution is large enough (at least 2^21 multiply-accumulates and two images);
/// identical results.
pub fn qconv2d_par(
    path: Path,
    x: Activations,
    zx: i32,
    g: &ConvGeom,
    w: &PackedConv,
    ops: &[FusedOp],
    out: Output,
) -> KResult<()> {
    qconv2d_on(Parallel::Rayon, path, x, zx, g, w, ops, out)
}

/// [`qconv2d`] with the batch split over the threads `par` names when the convolution is
/// large enough (at least 2^21 multiply-accumulates and two images); identical results.
#[allow(clippy::too_many_arguments)]
pub fn qconv2d_on(
    par: Parallel,
    path: Path,
    x: Activations,
    zx: i32,
    g: &ConvGeom,
    w: &PackedConv,
    ops: &[FusedOp],
    out: Output,
) -> KResult<()> {
    conv_driver(par, path, x, zx, g, w, ops, None, out)
}

/// A max pooling fused after a convolution ([`qconv2d_pool_on`]): windows of `k` (rows,
/// columns) every `stride`, without padding, over the convolution's output plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxPool {
    /// Window height and width.
    pub k: [usize; 2],
    /// Stride (rows, columns).
    pub stride: [usize; 2],
}

impl MaxPool {
    /// The pooled height and width of an `oh x ow` plane (`None` if no window fits).
    pub fn out(&self, oh: usize, ow: usize) -> Option<(usize, usize)> {
        let f = |n: usize, k: usize, s: usize| (k > 0 && s > 0 && n >= k).then(|| (n - k) / s + 1);
        Some((
            f(oh, self.k[0], self.stride[0])?,
            f(ow, self.k[1], self.stride[1])?,
        ))
    }
}

/// [`qconv2d_on`] followed by a max pooling: `out` is NCHW `[n, o, ph, pw]` with the
/// pooled plane of [`MaxPool::out`], and equals `max_pool(qconv2d(..))` exactly.
///
/// The windows are pooled in i32 and only the pooled values are requantized: a requantize
/// is non-decreasing in its input (multipliers are never negative, rounding to nearest and
/// clamping keep order), so the maximum of requantized values is the requantized maximum.
/// The steps before the requantize run on the accumulators first when one of them does
/// not keep order per channel (the weight-zero-point term, per pixel); otherwise (bias and
/// zero-point constants, clamps) they too run on the pooled values, and on the VNNI path
/// the tiles store their raw accumulators straight into the pooling scratch — or, for a
/// 2x2 / stride-2 pool of a stride-1 convolution, pool in registers: the input is split
/// into its even and odd rows, the panels of each block of 16 output pixels hold the
/// windows' top and bottom rows side by side, and an 8-row tile stores the maximum of its
/// two panels and of each lane pair (nothing unpooled is stored). Otherwise an image's
/// i32 output planes (its channel range) live in per-thread scratch on the way. Depthwise
/// convolutions are not supported here.
#[allow(clippy::too_many_arguments)]
pub fn qconv2d_pool_on(
    par: Parallel,
    path: Path,
    x: Activations,
    zx: i32,
    g: &ConvGeom,
    w: &PackedConv,
    ops: &[FusedOp],
    pool: &MaxPool,
    out: Output,
) -> KResult<()> {
    conv_driver(par, path, x, zx, g, w, ops, Some(pool), out)
}

#[allow(clippy::too_many_arguments)]
fn conv_driver(
    par: Parallel,
    path: Path,
    x: Activations,
    zx: i32,
    g: &ConvGeom,
    w: &PackedConv,
    ops: &[FusedOp],
    pool: Option<&MaxPool>,
    mut out: Output,
) -> KResult<()> {
    w.check(g)?;
    check_len("input", g.x_len(), x.len())?;
    let zu = x.unsigned_zero_point(zx)?;
    validate_ops(ops, g.o, out.kind())?;
    let depthwise = g.is_depthwise() && !w.taps.is_empty();
    let pooled = match pool {
        None => None,
        Some(_) if depthwise => {
            return invalid("a fused max pool needs a non-depthwise convolution");
        }
        Some(p) => match p.out(g.oh, g.ow) {
            Some((ph, pw)) => Some((p, ph, pw)),
            None => {
                return invalid(format!(
                    "pooling window {:?} does not fit the {}x{} output",
                    p.k, g.oh, g.ow
                ));
            }
        },
    };
    let plane = pooled.map_or(g.plane(), |(_, ph, pw)| ph * pw);
    check_len("output", g.n * g.o * plane, out.len())?;
    if g.n == 0 || g.plane() == 0 {
        return Ok(());
    }
    let path = path.resolve(g.og(), g.plane(), g.k())?;
    let view = out.view(plane);
    let (src, flip) = x.bytes();
    let mut corr = Vec::new();
    let used = if depthwise {
        0
    } else {
        corrections(zu, g.k(), &w.wsum, &w.zw, ops, &mut corr)
    };
    let user = &ops[used..];
    let img_in = g.c * g.h * g.w;
    let threads = par.threads();
    let per = if threads > 1 && g.macs() >= PAR_MIN_WORK && g.n >= 2 {
        g.n.div_ceil(threads)
    } else {
        g.n
    };
    let og = g.og();
    let run = |n0: usize, rows: std::ops::Range<usize>| {
        let n1 = (n0 + per).min(g.n);
        for ni in n0..n1 {
            let xi = &src[ni * img_in..(ni + 1) * img_in];
            let vi = view.offset_rows(ni * g.o);
            if depthwise {
                depthwise_image(path, xi, flip, zu, g, w, user, &vi);
            } else {
                conv_image(
                    path,
                    xi,
                    flip,
                    zu,
                    g,
                    w,
                    &corr,
                    user,
                    pooled,
                    &vi,
                    rows.clone(),
                );
            }
        }
    };
    if per < g.n {
        par.for_each(g.n.div_ceil(per), &|i| run(i * per, 0..og));
    } else if let Some(mid) = channel_split(g, w, threads, depthwise) {
        // fewer images than threads (batch 1): the output channels split in two, each
        // half with its own im2col of the image
        par.for_each(2, &|i| run(0, if i == 0 { 0..mid } else { mid..og }));
    } else {
        run(0, 0..og);
    }
    Ok(())
}

/// Where to split the output channels of a batch too small to split by image: the first
/// half's rows end at a multiple of 8 (every tile height up to 8 divides it) and the
/// second half's tiles, up to 16 rows high, stay inside the packed rows. `None` when the
/// convolution is grouped, depthwise or too small to be worth a second thread.
fn channel_split(g: &ConvGeom, w: &PackedConv, threads: usize, depthwise: bool) -> Option<usize> {
    let og = g.og();
    let mid = og.div_ceil(2).div_ceil(8) * 8;
    let fits = mid < og && mid + (og - mid).div_ceil(16) * 16 <= w.og_pad;
    let big = g.macs() / g.n.max(1) >= CHANNEL_SPLIT_MIN_MACS;
    (threads > 1 && g.groups == 1 && !depthwise && fits && big).then_some(mid)
}

/// Multiply-accumulates per image from which one image is split over two threads.
const CHANNEL_SPLIT_MIN_MACS: usize = 1 << 16;

/// One image through im2col and the tiles, group by group. Stride-1 convolutions take
/// the "wide" route: the output is computed over rows as wide as the padded input (the
/// columns past `ow` are junk and are not stored), which makes every im2col row a
/// contiguous slice of the padded input, so the panels are interleaved straight from it.
#[allow(clippy::too_many_arguments)]
fn conv_image(
    path: Path,
    x: &[u8],
    flip: u8,
    zu: i32,
    g: &ConvGeom,
    w: &PackedConv,
    corr: &[i32],
    user: &[FusedOp],
    pool: Option<(&MaxPool, usize, usize)>,
    view: &OutView,
    rows: std::ops::Range<usize>,
) {
    let (plane, k) = (g.plane(), g.k());
    let (r0, nrows) = (rows.start, rows.len());
    let wide = g.stride == [1, 1];
    let (hp, wp) = (g.h + g.pad[0] + g.pad[2], g.w + g.pad[1] + g.pad[3]);
    let cols = match pool {
        // a wide convolution with a fused pool computes only the output rows its windows
        // read (a 2x2 pool of 11 rows drops the last one)
        Some((p, ph, _)) if wide => ((ph - 1) * p.stride[0] + p.k[0] - 1) * wp + g.ow,
        _ if wide => (g.oh - 1) * wp + g.ow,
        _ => plane,
    };
    let kern: Kernels = kernels::select(path, false, nrows, cols);
    let kp = kpad(k, kern.kalign);
    // the direct route of a pooled stride-1 convolution (see below): the path stores raw
    // tiles with a stride and every step before the requantize keeps order per channel
    let direct = pool.is_some()
        && wide
        && kern.strided.is_some()
        && !w.zw_any
        && user
            .iter()
            .all(|op| matches!(op, FusedOp::Clamp { .. } | FusedOp::Requantize(_)));
    // a direct 2x2 / stride-2 pool can run in the tiles' registers (`Kernels::pool2`):
    // worth it unless its blocks compute many more columns than the wide convolution
    let pool2 = match (pool, kern.pool2) {
        (Some((p, ph, pw)), Some(tile2)) if direct && p.k == [2, 2] && p.stride == [2, 2] => {
            let wc = (2 * pw + (g.kw - 1) * g.dil[1]).next_multiple_of(2);
            let nb = ((ph - 1) * wc + 2 * pw).div_ceil(16);
            (8 * 2 * 16 * nb <= 9 * cols.next_multiple_of(16)).then_some((tile2, ph, pw, wc))
        }
        _ => None,
    };
    // otherwise, with a fused pool, the tiles run every step but a final requantize into
    // i32 scratch (`cols` per row); the pooled values then take the requantize
    let (pre, post) = match (pool, user.split_last()) {
        (Some(_), Some((last @ FusedOp::Requantize(_), rest))) => {
            (rest, std::slice::from_ref(last))
        }
        _ => (user, &[][..]),
    };
    with_scratch(|s| {
        // (the tiles of a pooled convolution store i32 into scratch, not through the table)
        let remap = if wide && pool.is_none() {
            s.remap((cols, wp, g.ow))
        } else {
            std::ptr::null()
        };
        for grp in 0..g.groups {
            let c0 = grp * g.cg();
            if let Some((tile2, ph, pw, wc)) = pool2 {
                let ps = row_phases(x, flip, g, c0, zu as u8, wc, &mut s.phases);
                let nb = ((ph - 1) * wc + 2 * pw).div_ceil(16);
                pool2_panels(
                    s.phases.as_slice(),
                    g,
                    (wc, ps),
                    nb,
                    kp,
                    &mut s.pool_offs,
                    &mut s.b,
                );
                let o0 = grp * g.og() + r0;
                // 8 pooled values per block and row; the vectors the epilogue reads past
                // the last block are junk (grown, never cleared)
                let ldp = (8 * nb).next_multiple_of(16);
                let need = nrows.next_multiple_of(POOL2_MR) * ldp;
                if s.pooled.len() < need {
                    s.pooled.resize(need, 0);
                }
                // SAFETY: L = this group's packed weight rows from r0 (as below: whole
                // tiles of 8 rows stay inside og_pad); R = 2 nb panels of stride 16 kp,
                // block b's two at 2 b; the pooled scratch holds whole tiles of 8 values
                // per block and row, ldp apart.
                unsafe {
                    let l = w.rows.as_slice().as_ptr().add((grp * w.og_pad + r0) * w.kp);
                    let (r, acc) = (s.b.as_slice().as_ptr(), s.pooled.as_mut_ptr());
                    for rb in (0..nrows).step_by(POOL2_MR) {
                        for b in 0..nb {
                            tile2(
                                l.add(rb * w.kp),
                                w.kp,
                                r.add(2 * b * 16 * kp),
                                16 * kp,
                                k.div_ceil(4),
                                acc.add(rb * ldp + 8 * b),
                                ldp,
                            );
                        }
                    }
                }
                let steps = pooled_steps(corr, user, o0);
                let mut out = view.offset_rows(o0);
                let q = (ph - 1) * (wc / 2) + pw;
                out.remap = s.remap((q, wc / 2, pw));
                // SAFETY: the pooled tile holds nrows rows of ldp (a multiple of 16 >= q)
                // values; `out` covers the image's pooled planes of channels o0..o0 +
                // nrows through the remap table of q wide pooled columns (wc / 2 per
                // pooled row); the steps' arrays cover those channels (validated epilogue).
                unsafe { (kern.epi)(&mut s.pooled, ldp, nrows, q, 0, 0, steps.as_slice(), &out) };
                continue;
            }
            if wide {
                pad_copy(x, flip, g, c0, zu as u8, &mut s.a);
                wide_panels(s.a.as_slice(), g, hp, wp, cols, kp, &mut s.offs, &mut s.b);
                if w.zw_any {
                    wide_sums(s.a.as_slice(), g, hp, wp, cols, &mut s.ints);
                }
            } else {
                im2col(x, flip, g, c0, zu as u8, kp, &mut s.a, &mut s.b);
                if w.zw_any {
                    pixel_sums(s.a.as_slice(), k, row_stride(plane), plane, &mut s.ints);
                }
            }
            // the first output channel of this call's rows in the group
            let o0 = grp * g.og() + r0;
            // SAFETY (of the pointer): this group's packed weight rows from r0 (og_pad >=
            // og rows, a multiple of every tile height; r0 is 0 or a split point whose
            // tiles stay inside og_pad, see `channel_split`; stride kp multiple of 64)
            let lrows = unsafe { w.rows.as_slice().as_ptr().add((grp * w.og_pad + r0) * w.kp) };
            let (panels, kgroups) = (s.b.as_slice().as_ptr(), k.div_ceil(4));
            if let Some((p, ph, pw)) = pool
                && direct
            {
                // the raw accumulators straight into the scratch, pooled, then the whole
                // epilogue on the pooled values: every step commutes with a max here (per-
                // channel adds and clamps, a requantize; no per-pixel zero-point term)
                let ld = cols.next_multiple_of(16);
                let need = nrows.next_multiple_of(kern.mr) * ld;
                if s.acc.len() < need {
                    s.acc.resize(need, 0);
                }
                // SAFETY: L = lrows, R = the panels of stride 16 kp covering `cols` columns;
                // the scratch holds whole tiles (rows rounded up to the tile height, ld a
                // multiple of 16 >= cols).
                unsafe {
                    let acc = s.acc.as_mut_ptr();
                    run_tiles_raw(
                        &kern,
                        lrows,
                        w.kp,
                        panels,
                        16 * kp,
                        nrows,
                        cols,
                        kgroups,
                        acc,
                        ld,
                    )
                };
                let steps = pooled_steps(corr, user, o0);
                let out = view.offset_rows(o0);
                pool_and_finish(s, &kern, path, (p, ph, pw), nrows, ld, wp, &steps, &out);
                continue;
            }
            let mut steps = Steps::new();
            steps.push(Step::AddRow(&corr[o0..]));
            if w.zw_any {
                steps.push(Step::SubRowCol(&w.zw[o0..], &s.ints));
            }
            user_steps(pre, Axis::Row, o0, &mut steps);
            let mut v = view.offset_rows(o0);
            if pool.is_some() {
                // every element is written by the tiles: grown, never cleared
                if s.acc.len() < nrows * cols {
                    s.acc.resize(nrows * cols, 0);
                }
                v = OutView {
                    ptr: s.acc.as_mut_ptr().cast(),
                    ld: cols,
                    kind: OutKind::I32,
                    remap: std::ptr::null(),
                };
            } else if wide {
                v.remap = remap;
            }
            // SAFETY: L = lrows (above), R = the panels of stride 16 kp covering `cols`
            // columns; the view covers channels o0..o0 + nrows of this image (through the
            // remap table for wide columns) or the i32 scratch of nrows x cols.
            unsafe {
                let steps = steps.as_slice();
                run_tiles(
                    &kern,
                    lrows,
                    w.kp,
                    panels,
                    16 * kp,
                    nrows,
                    cols,
                    kgroups,
                    steps,
                    &v,
                )
            };
            if let Some(pool) = pool {
                let pitch = if wide { wp } else { g.ow };
                let mut last = Steps::new();
                user_steps(post, Axis::Row, o0, &mut last);
                let out = view.offset_rows(o0);
                pool_and_finish(s, &kern, path, pool, nrows, cols, pitch, &last, &out);
            }
        }
    });
}

/// The whole epilogue of a convolution whose pooling runs before it (the direct routes):
/// the per-channel constants from channel `o0` on, then the user's steps.
fn pooled_steps<'a>(corr: &'a [i32], user: &[FusedOp<'a>], o0: usize) -> Steps<'a> {
    let mut steps = Steps::new();
    steps.push(Step::AddRow(&corr[o0..]));
    user_steps(user, Axis::Row, o0, &mut steps);
    steps
}

/// Pools `nrows` i32 planes of `s.acc` (row length `ld`, output rows every `pitch`) into
/// `s.pooled` and runs the epilogue `steps` on the pooled values into `out` (the image's
/// pooled planes of channels `o0..`, ld `ph * pw`).
#[allow(clippy::too_many_arguments)]
fn pool_and_finish(
    s: &mut crate::buf::Scratch,
    kern: &Kernels,
    path: Path,
    (p, ph, pw): (&MaxPool, usize, usize),
    nrows: usize,
    ld: usize,
    pitch: usize,
    steps: &Steps,
    out: &OutView,
) {
    let (ppl, nr) = (ph * pw, (ph * pw).next_multiple_of(16));
    // lanes past ppl of each row are read by the epilogue's vectors but not stored:
    // initialized once, never cleared
    if s.pooled.len() < nrows * nr {
        s.pooled.resize(nrows * nr, 0);
    }
    let avx512 = matches!(path, Path::Avx512Vnni | Path::Amx);
    for i in 0..nrows {
        let src = &s.acc[i * ld..(i + 1) * ld];
        let dst = &mut s.pooled[i * nr..i * nr + ppl];
        max_pool_plane(src, pitch, p, ph, pw, dst, avx512);
    }
    // SAFETY: the pooled tile holds nrows rows of nr (a multiple of 16) values, ppl of
    // them valid; `out` covers nrows channels of the image's pooled planes (the caller's
    // contract); the steps' arrays cover those channels (validated epilogue).
    unsafe { (kern.epi)(&mut s.pooled, nr, nrows, ppl, 0, 0, steps.as_slice(), out) };
}

/// Max pooling of one i32 plane whose rows start every `pitch` values (`ph x pw` windows
/// of `p`, all inside the plane) into `dst` (`ph * pw` values, row-major); 2x2 windows at
/// stride 2 on AVX-512 if `avx512` (the path has it).
fn max_pool_plane(
    src: &[i32],
    pitch: usize,
    p: &MaxPool,
    ph: usize,
    pw: usize,
    dst: &mut [i32],
    avx512: bool,
) {
    if p.k == [2, 2] && p.stride == [2, 2] {
        assert!(dst.len() == ph * pw && (2 * ph - 1) * pitch + 2 * pw <= src.len());
        #[cfg(target_arch = "x86_64")]
        if avx512 {
            // SAFETY: the path has AVX-512 F; the bounds are asserted above.
            unsafe { pool2x2_avx512(src, pitch, ph, pw, dst) };
            return;
        }
        let _ = avx512;
        for (py, d) in dst.chunks_exact_mut(pw).enumerate() {
            let a = &src[2 * py * pitch..][..2 * pw];
            let b = &src[(2 * py + 1) * pitch..][..2 * pw];
            for (px, o) in d.iter_mut().enumerate() {
                *o = a[2 * px]
                    .max(a[2 * px + 1])
                    .max(b[2 * px].max(b[2 * px + 1]));
            }
        }
        return;
    }
    for py in 0..ph {
        for px in 0..pw {
            let mut m = i32::MIN;
            for ky in 0..p.k[0] {
                let row = &src[(py * p.stride[0] + ky) * pitch + px * p.stride[1]..][..p.k[1]];
                m = row.iter().fold(m, |m, &v| m.max(v));
            }
            dst[py * pw + px] = m;
        }
    }
}

/// [`max_pool_plane`]'s 2x2 / stride 2 case, 16 outputs per step: the two rows' maximum,
/// then the even and odd lanes of 32 columns gathered apart and compared.
///
/// # Safety
/// AVX-512 F is available; `dst` holds `ph * pw` values and the rows `2 py`, `2 py + 1`
/// of `src` hold `2 pw` values each (`(2 ph - 1) * pitch + 2 pw <= src.len()`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pool2x2_avx512(src: &[i32], pitch: usize, ph: usize, pw: usize, dst: &mut [i32]) {
    use std::arch::x86_64::*;
    let mask = |n: usize| if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
    let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    // SAFETY: loads cover columns 2 px .. 2 px + 2 n of rows 2 py and 2 py + 1 (masked
    // to the 2 pw valid ones), stores outputs px .. px + n of row py (masked).
    unsafe {
        for py in 0..ph {
            let a = src.as_ptr().add(2 * py * pitch);
            let b = a.add(pitch);
            let d = dst.as_mut_ptr().add(py * pw);
            for px in (0..pw).step_by(16) {
                let n = (pw - px).min(16);
                let (m0, m1) = (mask(2 * n), mask((2 * n).saturating_sub(16)));
                let lo = _mm512_max_epi32(
                    _mm512_maskz_loadu_epi32(m0, a.add(2 * px)),
                    _mm512_maskz_loadu_epi32(m0, b.add(2 * px)),
                );
                let hi = _mm512_max_epi32(
                    _mm512_maskz_loadu_epi32(m1, a.add(2 * px + 16)),
                    _mm512_maskz_loadu_epi32(m1, b.add(2 * px + 16)),
                );
                let v = _mm512_max_epi32(
                    _mm512_permutex2var_epi32(lo, even, hi),
                    _mm512_permutex2var_epi32(lo, odd, hi),
                );
                _mm512_mask_storeu_epi32(d.add(px), mask(n), v);
            }
        }
    }
}

/// Slack after the padded planes: panel reads for the last wide columns run up to 15
/// bytes past the last plane.
const SLACK: usize = 64;

/// The group's input channels `c0..c0 + cg`, unsigned-domain, with the padding written out
/// (`zu`), as `[cg][hp][wp]` plus zeroed slack.
fn pad_copy(x: &[u8], flip: u8, g: &ConvGeom, c0: usize, zu: u8, dst: &mut AlignedBuf) {
    let (hp, wp) = (g.h + g.pad[0] + g.pad[2], g.w + g.pad[1] + g.pad[3]);
    let (pt, pl) = (g.pad[0], g.pad[1]);
    dst.set_len(g.cg() * hp * wp + SLACK);
    let d = dst.as_mut_slice();
    let no_pad = g.pad == [0; 4];
    for cl in 0..g.cg() {
        let src = &x[(c0 + cl) * g.h * g.w..][..g.h * g.w];
        let dp = &mut d[cl * hp * wp..(cl + 1) * hp * wp];
        if no_pad {
            if flip == 0 {
                dp.copy_from_slice(src);
            } else {
                for (o, &v) in dp.iter_mut().zip(src) {
                    *o = v ^ flip;
                }
            }
            continue;
        }
        for (iy, row) in dp.chunks_exact_mut(wp).enumerate() {
            if iy < pt || iy >= pt + g.h {
                fill(row, zu);
                continue;
            }
            fill(&mut row[..pl], zu);
            fill(&mut row[pl + g.w..], zu);
            for (o, &v) in row[pl..pl + g.w]
                .iter_mut()
                .zip(&src[(iy - pt) * g.w..(iy - pt + 1) * g.w])
            {
                *o = v ^ flip;
            }
        }
    }
    let n = d.len();
    d[n - SLACK..].fill(0);
}

/// The panels of a stride-1 convolution over wide columns: im2col row `k = (c, ki, kj)` is
/// the padded plane of `c` from offset `ki * d0 * wp + kj * d1` on.
#[allow(clippy::too_many_arguments)]
fn wide_panels(
    p: &[u8],
    g: &ConvGeom,
    hp: usize,
    wp: usize,
    cols: usize,
    kp: usize,
    offs: &mut Vec<usize>,
    panels: &mut AlignedBuf,
) {
    let np = cols.div_ceil(16);
    // (nested loops: two divisions per k, once per image, were 9% of a 16->32 layer)
    offs.clear();
    for cl in 0..g.cg() {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                offs.push(cl * hp * wp + ki * g.dil[0] * wp + kj * g.dil[1]);
            }
        }
    }
    panels.set_len(np * 16 * kp);
    slice_panels(p, offs, np, kp, panels.as_mut_slice(), 0, 1);
}

/// `np` panels whose im2col row `k` is the 16 bytes of `p` at `offs[k] + 16 pb` (panel
/// `pb`), written as panels `first + pb * step` of `out` (panels of `16 kp` bytes; rows
/// past `offs.len()` zero).
fn slice_panels(
    p: &[u8],
    offs: &[usize],
    np: usize,
    kp: usize,
    out: &mut [u8],
    first: usize,
    step: usize,
) {
    let k = offs.len();
    let kg = k.div_ceil(4);
    const ZERO: [u8; 16] = [0; 16];
    // every read of a full group below stays inside `p` (the callers' slack covers the
    // last panel's overrun), checked once here instead of per row and panel
    let full = k / 4;
    assert!(offs.iter().all(|&o| o + np * 16 <= p.len()) && kg * 64 <= 16 * kp);
    for pb in 0..np {
        let panel = &mut out[(first + pb * step) * 16 * kp..][..16 * kp];
        for (gi, o4) in offs.chunks_exact(4).enumerate() {
            let src: [*const u8; 4] =
                std::array::from_fn(|q| p.as_ptr().wrapping_add(o4[q] + pb * 16));
            // SAFETY: 16 bytes from each source are inside `p` (asserted above); the 64
            // bytes of group gi are inside the panel (gi < kg, kg * 64 <= 16 kp).
            unsafe { interleave4_raw(src, panel.as_mut_ptr().add(gi * 64)) };
        }
        for gi in full..kg {
            let src: [&[u8]; 4] = std::array::from_fn(|q| {
                let kk = 4 * gi + q;
                if kk < k {
                    let o = offs[kk] + pb * 16;
                    &p[o..o + 16]
                } else {
                    &ZERO[..]
                }
            });
            interleave4(src, &mut panel[gi * 64..gi * 64 + 64]);
        }
        if kg * 64 < panel.len() {
            panel[kg * 64..].fill(0);
        }
    }
}

/// The padded input of a stride-1 convolution pooled 2x2 / stride 2 in registers, split
/// into its even and odd rows: plane `(cl, a)` starts at `(2 cl + a) * ps` (`ps = hq *
/// wc + 16`, `hq` half the padded height rounded up) and holds padded row `2 i + a`, columns
/// `0..wc`, at `i * wc` (zero past the padded plane). `wc` is the even width the pooled
/// outputs read (`2 pw + (kw - 1) d1`, rounded up to even; at most one past the padded
/// width). Padded pixel `(2 py + t, x)` is then at `(py + t / 2) * wc + x` of plane `(cl, t
/// % 2)`: for a fixed tap and window row, the output pixels of the "wide" rows of the
/// pooled windows (`wc` columns per pooled row) are a contiguous slice. Returns `ps`.
#[allow(clippy::too_many_arguments)]
fn row_phases(
    x: &[u8],
    flip: u8,
    g: &ConvGeom,
    c0: usize,
    zu: u8,
    wc: usize,
    dst: &mut AlignedBuf,
) -> usize {
    let (hp, wp) = (g.h + g.pad[0] + g.pad[2], g.w + g.pad[1] + g.pad[3]);
    let (pt, pl) = (g.pad[0], g.pad[1]);
    let hq = hp.div_ceil(2);
    // a 16-byte gap after each plane takes the overrun of the whole-vector row copies
    let ps = hq * wc + 16;
    dst.set_len(g.cg() * 2 * ps + SLACK);
    let d = dst.as_mut_slice();
    if g.pad == [0; 4] {
        // rows are plain crops of the input, copied 16 bytes at a time; each copy's
        // overrun lands on the plane's next row, written later, or in the gap. Bytes past
        // the input width and the odd row past an odd height are read by junk columns
        // only (see above) and keep whatever the buffer held.
        let chunks = wc.div_ceil(16);
        for cl in 0..g.cg() {
            let plane = (c0 + cl) * g.h * g.w;
            let base = 2 * cl * ps;
            // whole 16-byte reads stay inside the input (else this channel goes byte by
            // byte), whole writes inside the two planes and their gaps
            let fits = plane + (g.h - 1) * g.w + 16 * chunks <= x.len();
            assert!(base + ps + (g.h - 1) / 2 * wc + 16 * chunks <= d.len());
            for y in 0..g.h {
                let row = base + (y % 2) * ps + (y / 2) * wc;
                let src = plane + y * g.w;
                if fits {
                    // SAFETY: src + 16 chunks <= x.len() (checked above); row + 16
                    // chunks <= d.len() (asserted above).
                    unsafe {
                        copy_chunks(x.as_ptr().add(src), d.as_mut_ptr().add(row), chunks, flip)
                    };
                } else {
                    let n = wc.min(g.w);
                    for (o, &v) in d[row..row + n].iter_mut().zip(&x[src..src + n]) {
                        *o = v ^ flip;
                    }
                }
            }
        }
    } else {
        // the input columns this crop holds, and the padding cells around them
        let (x0, x1) = (pl.min(wc), (pl + g.w).min(wc));
        let right_end = wp.min(wc);
        for cl in 0..g.cg() {
            let src = &x[(c0 + cl) * g.h * g.w..][..g.h * g.w];
            for y in 0..2 * hq {
                let row = &mut d[(2 * cl + y % 2) * ps + (y / 2) * wc..][..wc];
                if y >= hp {
                    row.fill(0);
                    continue;
                }
                if y < pt || y >= pt + g.h {
                    row[..right_end].fill(zu);
                } else {
                    row[..x0].fill(zu);
                    let s = &src[(y - pt) * g.w..][..x1 - x0];
                    for (o, &v) in row[x0..x1].iter_mut().zip(s) {
                        *o = v ^ flip;
                    }
                    row[x1..right_end].fill(zu);
                }
                row[right_end..].fill(0);
            }
        }
    }
    let n = d.len();
    d[n - SLACK..].fill(0);
    ps
}

/// `chunks` blocks of 16 bytes from `src` to `dst`, xored with `flip`.
///
/// # Safety
/// `src` and `dst` hold `16 * chunks` bytes each.
#[inline]
unsafe fn copy_chunks(src: *const u8, dst: *mut u8, chunks: usize, flip: u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86-64; the caller vouches for the bytes.
        unsafe {
            let f = _mm_set1_epi8(flip as i8);
            for j in 0..chunks {
                let v = _mm_loadu_si128(src.add(16 * j).cast());
                _mm_storeu_si128(dst.add(16 * j).cast(), _mm_xor_si128(v, f));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for i in 0..16 * chunks {
        // SAFETY: as above.
        unsafe { *dst.add(i) = *src.add(i) ^ flip };
    }
}

/// The panels of a stride-1 convolution pooled 2x2 / stride 2 in registers: `nb` blocks
/// of 16 "wide" output pixels of the windows' top rows (`wc` columns per pooled row, the
/// columns past `2 pw` junk), each block as 2 consecutive panels, one per window row
/// `dy`, whose column `q` is the im2col column of output pixel `(2 py + dy, x)` for `q = py
/// * wc + x`; read from the row phases in `phases` ([`row_phases`]).
#[allow(clippy::too_many_arguments)]
fn pool2_panels(
    phases: &[u8],
    g: &ConvGeom,
    (wc, ps): (usize, usize),
    nb: usize,
    kp: usize,
    offs: &mut Vec<usize>,
    panels: &mut AlignedBuf,
) {
    panels.set_len(2 * nb * 16 * kp);
    // the offsets of both window rows, `[dy][k]`, kept while the geometry repeats (every
    // image of a call, and often the next call on this thread)
    let k = g.k();
    let key = [
        g.c, g.h, g.w, g.kh, g.kw, g.dil[0], g.dil[1], g.groups, wc, ps,
    ];
    if offs.len() != 2 * k + key.len() || offs[2 * k..] != key {
        offs.clear();
        for dy in 0..2 {
            for cl in 0..g.cg() {
                for ki in 0..g.kh {
                    let t = dy + ki * g.dil[0];
                    for kj in 0..g.kw {
                        offs.push((2 * cl + t % 2) * ps + (t / 2) * wc + kj * g.dil[1]);
                    }
                }
            }
        }
        offs.extend_from_slice(&key);
    }
    for dy in 0..2 {
        slice_panels(
            phases,
            &offs[dy * k..][..k],
            nb,
            kp,
            panels.as_mut_slice(),
            dy,
            2,
        );
    }
}

/// Per wide column, the sum of its im2col column (for the weight-zero-point term).
fn wide_sums(p: &[u8], g: &ConvGeom, hp: usize, wp: usize, cols: usize, sums: &mut Vec<i32>) {
    sums.clear();
    sums.resize(cols.div_ceil(16) * 16, 0);
    for cl in 0..g.cg() {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let o = cl * hp * wp + ki * g.dil[0] * wp + kj * g.dil[1];
                for (s, &v) in sums[..cols].iter_mut().zip(&p[o..o + cols]) {
                    *s += v as i32;
                }
            }
        }
    }
}

/// Sums over `k` of each pixel's im2col column (the first step's rows), into `sums`.
fn pixel_sums(t: &[u8], k: usize, pp: usize, plane: usize, sums: &mut Vec<i32>) {
    sums.clear();
    sums.resize(pp, 0);
    for kk in 0..k {
        for (s, &v) in sums.iter_mut().zip(&t[kk * pp..kk * pp + plane]) {
            *s += v as i32;
        }
    }
}

/// im2col of input channels `c0..c0 + cg` of one image into `rows` (`[k][pixels]`, row
/// stride [`row_stride`], pixels past the plane zero) and then `panels` (the panel layout,
/// `kp` deep). Values are in the unsigned domain (`^ flip`); padding cells hold `zu`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn im2col(
    x: &[u8],
    flip: u8,
    g: &ConvGeom,
    c0: usize,
    zu: u8,
    kp: usize,
    rows: &mut AlignedBuf,
    panels: &mut AlignedBuf,
) {
    let (oh, ow, plane) = (g.oh, g.ow, g.plane());
    let ts = row_stride(plane);
    let k = g.k();
    rows.set_len(k * ts + 16);
    let t = rows.as_mut_slice();
    let s1 = g.stride[1];
    for cl in 0..g.cg() {
        let cbase = (c0 + cl) * g.h * g.w;
        for ki in 0..g.kh {
            let (y0, y1, yoff) = valid(oh, g.h, g.stride[0], ki * g.dil[0], g.pad[0]);
            for kj in 0..g.kw {
                let (x0, x1, xoff) = valid(ow, g.w, s1, kj * g.dil[1], g.pad[1]);
                let kk = (cl * g.kh + ki) * g.kw + kj;
                // the row plus 16 bytes of slack: copies may write up to 15 bytes past a
                // segment's end; later segments (or the zero tail) overwrite them
                let row = &mut t[kk * ts..(kk + 1) * ts + 16];
                let empty = x0 >= x1;
                if y0 > 0 || empty {
                    fill(&mut row[..if empty { oh } else { y0 } * ow], zu);
                }
                if !empty {
                    let start = ((x0 * s1) as isize + xoff) as usize;
                    for oy in y0..y1 {
                        let iy = ((oy * g.stride[0]) as isize + yoff) as usize;
                        let r = &mut row[oy * ow..];
                        if x0 > 0 {
                            fill(&mut r[..x0], zu);
                        }
                        let src = cbase + iy * g.w + start;
                        copy_row(x, src, s1, flip, &mut r[x0..], x1 - x0);
                        if x1 < ow {
                            fill(&mut r[x1..ow], zu);
                        }
                    }
                    if y1 < oh {
                        fill(&mut row[y1 * ow..oh * ow], zu);
                    }
                }
                row[plane..ts].fill(0);
            }
        }
    }
    let np = ts / 16;
    let kg = k.div_ceil(4);
    panels.set_len(np * 16 * kp);
    let p = panels.as_mut_slice();
    const ZERO: [u8; 16] = [0; 16];
    for pb in 0..np {
        let panel = &mut p[pb * 16 * kp..(pb + 1) * 16 * kp];
        for gi in 0..kg {
            let src: [&[u8]; 4] = std::array::from_fn(|q| {
                let kk = 4 * gi + q;
                if kk < k {
                    &t[kk * ts + pb * 16..kk * ts + pb * 16 + 16]
                } else {
                    &ZERO[..]
                }
            });
            interleave4(src, &mut panel[gi * 64..gi * 64 + 64]);
        }
        if kg * 64 < panel.len() {
            panel[kg * 64..].fill(0);
        }
    }
}

/// The im2col row stride for `plane` pixels: a whole number of 16-pixel panels.
pub(crate) fn row_stride(plane: usize) -> usize {
    plane.div_ceil(16) * 16
}

#[inline(always)]
fn fill(d: &mut [u8], v: u8) {
    for b in d {
        *b = v;
    }
}

/// `dst[i] = x[src + i * s] ^ flip` for `i < len`; `dst` has at least `len + 15` bytes and
/// may be written up to 15 bytes past `len`.
#[inline(always)]
fn copy_row(x: &[u8], src: usize, s: usize, flip: u8, dst: &mut [u8], len: usize) {
    #[cfg(target_arch = "x86_64")]
    if s == 1 {
        use std::arch::x86_64::*;
        let mut i = 0;
        // SAFETY: SSE2 is part of x86-64; every 16-byte load is checked to stay inside `x`
        // and every store inside `dst`
        unsafe {
            let f = _mm_set1_epi8(flip as i8);
            while i < len && src + i + 16 <= x.len() && i + 16 <= dst.len() {
                let v = _mm_loadu_si128(x.as_ptr().add(src + i).cast());
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), _mm_xor_si128(v, f));
                i += 16;
            }
        }
        for j in i..len {
            dst[j] = x[src + j] ^ flip;
        }
        return;
    }
    for (j, d) in dst[..len].iter_mut().enumerate() {
        *d = x[src + j * s] ^ flip;
    }
}

/// `dst[4 p + q] = src[q][p]` for 16 pixels `p` and 4 rows `q`.
#[inline(always)]
fn interleave4(src: [&[u8]; 4], dst: &mut [u8]) {
    assert!(src.iter().all(|s| s.len() >= 16) && dst.len() >= 64);
    // SAFETY: the lengths are checked above.
    unsafe { interleave4_raw(src.map(|s| s.as_ptr()), dst.as_mut_ptr()) }
}

/// [`interleave4`] on raw pointers, for the inner loop of [`wide_panels`].
///
/// # Safety
/// Each source has 16 readable bytes and `dst` 64 writable ones.
#[inline]
unsafe fn interleave4_raw(src: [*const u8; 4], dst: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86-64; the caller vouches for the 16 + 64 bytes.
        unsafe {
            let [a, b, c, d] = src.map(|s| _mm_loadu_si128(s.cast()));
            let (ablo, abhi) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
            let (cdlo, cdhi) = (_mm_unpacklo_epi8(c, d), _mm_unpackhi_epi8(c, d));
            _mm_storeu_si128(dst.cast(), _mm_unpacklo_epi16(ablo, cdlo));
            _mm_storeu_si128(dst.add(16).cast(), _mm_unpackhi_epi16(ablo, cdlo));
            _mm_storeu_si128(dst.add(32).cast(), _mm_unpacklo_epi16(abhi, cdhi));
            _mm_storeu_si128(dst.add(48).cast(), _mm_unpackhi_epi16(abhi, cdhi));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as above.
    unsafe {
        interleave4_scalar(
            src.map(|s| std::slice::from_raw_parts(s, 16)),
            std::slice::from_raw_parts_mut(dst, 64),
        )
    };
}

/// The scalar form of [`interleave4`].
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(crate) fn interleave4_scalar(src: [&[u8]; 4], dst: &mut [u8]) {
    for p in 0..16 {
        for q in 0..4 {
            dst[4 * p + q] = src[q][p];
        }
    }
}

/// One image of a depthwise convolution: per channel, the centered input plane times each
/// tap, summed in i32, then the epilogue along the channel's row.
#[allow(clippy::too_many_arguments)]
fn depthwise_image(
    path: Path,
    x: &[u8],
    flip: u8,
    zu: i32,
    g: &ConvGeom,
    w: &PackedConv,
    user: &[FusedOp],
    view: &OutView,
) {
    with_scratch(|s| {
        let plane = g.plane();
        let hw = g.h * g.w;
        s.ints.clear();
        s.ints.resize(plane.div_ceil(16) * 16, 0);
        s.ints2.clear();
        s.ints2.resize(hw, 0);
        for ch in 0..g.c {
            let xc = &x[ch * hw..(ch + 1) * hw];
            for (d, &v) in s.ints2.iter_mut().zip(xc) {
                *d = (v ^ flip) as i32 - zu;
            }
            let taps = &w.taps[ch * g.kh * g.kw..(ch + 1) * g.kh * g.kw];
            let zw = w.zw[ch];
            match path {
                #[cfg(target_arch = "x86_64")]
                Path::Avx512Vnni | Path::Amx => {
                    // SAFETY: the path is available, so AVX-512 F/BW are.
                    unsafe { dw_avx512(&s.ints2, taps, zw, g, &mut s.ints) }
                }
                #[cfg(target_arch = "x86_64")]
                Path::Avx2 => {
                    // SAFETY: the path is available, so AVX2 is.
                    unsafe { dw_avx2(&s.ints2, taps, zw, g, &mut s.ints) }
                }
                _ => dw_channel(&s.ints2, taps, zw, g, &mut s.ints),
            }
            let mut steps = Steps::new();
            user_steps(user, Axis::Row, ch, &mut steps);
            let epi = kernels::select(path, true, 1, plane).epi;
            // SAFETY: the tile is one row of plane values (length padded to 16); the view
            // covers channel ch of this image.
            unsafe {
                epi(
                    &mut s.ints,
                    row_stride(plane),
                    1,
                    plane,
                    0,
                    0,
                    steps.as_slice(),
                    &view.offset_rows(ch),
                )
            };
        }
    });
}

/// `acc[oy][ox] = sum_taps (w - zw) * xc[iy][ix]` over the taps inside the input.
#[inline(always)]
fn dw_channel(xc: &[i32], taps: &[i8], zw: i32, g: &ConvGeom, acc: &mut [i32]) {
    let (oh, ow) = (g.oh, g.ow);
    acc.fill(0);
    for ki in 0..g.kh {
        let (y0, y1, yoff) = valid(oh, g.h, g.stride[0], ki * g.dil[0], g.pad[0]);
        for kj in 0..g.kw {
            let (x0, x1, xoff) = valid(ow, g.w, g.stride[1], kj * g.dil[1], g.pad[1]);
            if x0 >= x1 {
                continue;
            }
            let wv = (taps[ki * g.kw + kj] as i32).wrapping_sub(zw);
            let start = ((x0 * g.stride[1]) as isize + xoff) as usize;
            for oy in y0..y1 {
                let iy = ((oy * g.stride[0]) as isize + yoff) as usize;
                let xr = &xc[iy * g.w..(iy + 1) * g.w];
                let ar = &mut acc[oy * ow + x0..oy * ow + x1];
                if g.stride[1] == 1 {
                    for (a, &v) in ar.iter_mut().zip(&xr[start..]) {
                        *a = a.wrapping_add(wv.wrapping_mul(v));
                    }
                } else {
                    for (a, &v) in ar.iter_mut().zip(xr[start..].iter().step_by(g.stride[1])) {
                        *a = a.wrapping_add(wv.wrapping_mul(v));
                    }
                }
            }
        }
    }
}

/// [`dw_channel`] compiled for AVX-512.
///
/// # Safety
/// AVX-512 F/BW are available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn dw_avx512(xc: &[i32], taps: &[i8], zw: i32, g: &ConvGeom, acc: &mut [i32]) {
    dw_channel(xc, taps, zw, g, acc)
}

/// [`dw_channel`] compiled for AVX2.
///
/// # Safety
/// AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dw_avx2(xc: &[i32], taps: &[i8], zw: i32, g: &ConvGeom, acc: &mut [i32]) {
    dw_channel(xc, taps, zw, g, acc)
}
