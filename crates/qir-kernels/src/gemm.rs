//! The int8 GEMM of linear layers: `acc[r][c] = sum_k (a[r][k] - za) * (w[c][k] - zw[c])`
//! in wrapping i32, then the fused epilogue, for activations `a[n, k]` (u8 or i8) and packed
//! weights `w[m, k]` (i8), output `[n, m]` row-major (i32, i8 or u8).
//!
//! How the zero points enter: the tile kernels multiply unsigned-domain activations `u`
//! (i8 ones are xored with 0x80, i.e. `u = a + 128`, `zu = za + 128`) by the signed weights
//! `w`, and
//! `sum (u - zu)(w - zw) = sum u w - zu sum w - zw sum u + k zu zw`.
//! The column term `k zu zw[c] - zu sum_k w[c]` (with `sum_k w` precomputed at pack time)
//! and the bias fold into one per-channel vector added in the epilogue; the row term
//! `zw[c] * sum_k u[r]` is added only when some weight zero point is non-zero.
//!
//! Exactness: every intermediate is computed modulo 2^32, so the result is exact whenever
//! the true accumulator `sum (a - za)(w - zw) + bias` fits in i32, and is that value
//! wrapped to i32 otherwise — on every path alike (wrapping arithmetic is a ring
//! homomorphism, so any decomposition of the sum gives the same bits). The true value
//! always fits for `k <= 33_025` with a zero bias (`|(a - za)(w - zw)| <= 255 * 255`, and
//! 33_025 * 65_025 < 2^31); with symmetric weights (`zw` = 0, `|w| <= 128`) for
//! `k <= 65_793`. The reference interpreter reports an overflow as an error instead; the
//! kernels do not check (a check would cost a second pass), callers that can exceed the
//! bound must validate their models.

use crate::par::Parallel;

use crate::buf::{Scratch, with_scratch};
use crate::epilogue::{Axis, FusedOp, OutKind, OutView, Step};
use crate::error::{KResult, check_len, invalid};
use crate::kernels::{self, Kernels};
use crate::pack::{Activations, PackedB, kpad, pack_rows};
use crate::path::Path;

/// The result buffer of a contraction.
#[derive(Debug)]
pub enum Output<'a> {
    /// Raw or clamped i32 values (no requantize step, or a requantize whose results are
    /// kept in i32).
    I32(&'a mut [i32]),
    /// Requantized i8 values (the epilogue must end with a requantize whose clamp fits).
    I8(&'a mut [i8]),
    /// Requantized u8 values (likewise).
    U8(&'a mut [u8]),
}

impl Output<'_> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Output::I32(v) => v.len(),
            Output::I8(v) => v.len(),
            Output::U8(v) => v.len(),
        }
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub(crate) fn kind(&self) -> OutKind {
        match self {
            Output::I32(_) => OutKind::I32,
            Output::I8(_) => OutKind::I8,
            Output::U8(_) => OutKind::U8,
        }
    }
    /// A raw view with leading dimension `ld`, borrowing `self` mutably for its lifetime
    /// by convention (the drivers use it only while `self` is borrowed).
    pub(crate) fn view(&mut self, ld: usize) -> OutView {
        let ptr = match self {
            Output::I32(v) => v.as_mut_ptr().cast::<u8>(),
            Output::I8(v) => v.as_mut_ptr().cast::<u8>(),
            Output::U8(v) => v.as_mut_ptr(),
        };
        OutView {
            ptr,
            ld,
            kind: self.kind(),
            remap: std::ptr::null(),
        }
    }
}

/// Checks an epilogue against the channel count and the output type.
pub(crate) fn validate_ops(ops: &[FusedOp], channels: usize, kind: OutKind) -> KResult<()> {
    if ops.len() > MAX_USER_STEPS {
        return invalid(format!(
            "an epilogue has at most {MAX_USER_STEPS} steps, found {}",
            ops.len()
        ));
    }
    for (i, op) in ops.iter().enumerate() {
        match op {
            FusedOp::AddPerChannel(v) => check_len("per-channel addend", channels, v.len())?,
            FusedOp::Clamp { lo, hi } => {
                if lo > hi {
                    return invalid(format!("empty clamp [{lo}, {hi}]"));
                }
            }
            FusedOp::Requantize(q) => {
                q.check_channels(channels)?;
                if i + 1 != ops.len() {
                    return invalid("requantize must be the last step of an epilogue");
                }
            }
        }
    }
    let ty = match kind {
        OutKind::I32 => return Ok(()),
        OutKind::I8 => crate::OutType::I8,
        OutKind::U8 => crate::OutType::U8,
    };
    match ops.last() {
        Some(FusedOp::Requantize(q)) if q.fits(ty) => Ok(()),
        Some(FusedOp::Requantize(q)) => invalid(format!(
            "the requantize clamp [{}, {}] does not fit the {ty:?} output",
            q.lo, q.hi
        )),
        _ => invalid(format!("an {ty:?} output needs a final requantize step")),
    }
}

/// The per-channel constant `bias[c] - zu * wsum[c] + k * zu * zw[c]` (wrapping), folding in
/// the epilogue's first step if it is a per-channel add; returns how many user steps it
/// consumed.
pub(crate) fn corrections(
    zu: i32,
    k: usize,
    wsum: &[i32],
    zw: &[i32],
    ops: &[FusedOp],
    out: &mut Vec<i32>,
) -> usize {
    let kzu = (k as i32).wrapping_mul(zu);
    out.clear();
    out.extend(
        wsum.iter()
            .zip(zw)
            .map(|(&s, &z)| kzu.wrapping_mul(z).wrapping_sub(zu.wrapping_mul(s))),
    );
    match ops.first() {
        Some(FusedOp::AddPerChannel(b)) => {
            for (o, &b) in out.iter_mut().zip(b.iter()) {
                *o = o.wrapping_add(b);
            }
            1
        }
        _ => 0,
    }
}

/// The user's steps in tile terms, channels along `axis` starting at channel `off`.
pub(crate) fn user_steps<'a>(ops: &[FusedOp<'a>], axis: Axis, off: usize, steps: &mut Steps<'a>) {
    for op in ops {
        steps.push(match *op {
            FusedOp::AddPerChannel(v) => match axis {
                Axis::Row => Step::AddRow(&v[off..]),
                Axis::Col => Step::AddCol(v),
            },
            FusedOp::Clamp { lo, hi } => Step::Clamp(lo, hi),
            FusedOp::Requantize(q) => Step::Requant(q, axis, off),
        });
    }
}

/// Runs all tiles of a contraction of `rows` rows (L, stride `ls`, padded to the tile
/// height) by `cols` columns (R panels, stride `rs`) over `kg` groups of 4, each tile
/// followed by the epilogue `steps` and the store into `out`.
///
/// # Safety
/// The operands satisfy [`kernels`]'s invariants for `k`; `out` covers `rows x cols`; the
/// step arrays cover the rows and columns.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn run_tiles(
    k: &Kernels,
    l: *const u8,
    ls: usize,
    r: *const u8,
    rs: usize,
    rows: usize,
    cols: usize,
    kg: usize,
    steps: &[Step],
    out: &OutView,
) {
    let mut tb = TILE
        .with(|c| c.take())
        .unwrap_or_else(|| Box::new(TileBuf([0; 32 * 64])));
    k.begin();
    for_each_tile(k.mr, k.nvmax(), rows, cols, |rb, pb, nv| {
        let nr = nv * 16;
        // SAFETY: rows rb..rb + mr of L exist (padding), panels pb..pb + nv of R exist,
        // the tile buffer holds mr x nr <= 32 x 64 values.
        unsafe {
            k.tiles[nv - 1](
                l.add(rb * ls),
                ls,
                r.add(pb * rs),
                rs,
                kg,
                tb.0.as_mut_ptr(),
            );
            let vr = (rows - rb).min(k.mr);
            let vc = (cols - pb * 16).min(nr);
            (k.epi)(&mut tb.0, nr, vr, vc, rb, pb * 16, steps, out);
        }
    });
    k.end();
    TILE.with(|c| c.set(Some(tb)));
}

/// The tiles of a `rows x cols` contraction, panel groups of up to `nvmax` panels outside,
/// row blocks of `mr` inside: `f(first row, first panel, panels)`.
fn for_each_tile(
    mr: usize,
    nvmax: usize,
    rows: usize,
    cols: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let np = cols.div_ceil(crate::pack::PANEL);
    let mut pb = 0;
    while pb < np {
        let nv = (np - pb).min(nvmax);
        for rb in (0..rows).step_by(mr) {
            f(rb, pb, nv);
        }
        pb += nv;
    }
}

/// [`run_tiles`] without an epilogue: the raw accumulators of every tile go straight to
/// `out` (row stride `ldo`) through the path's strided tile kernels.
///
/// # Safety
/// As [`run_tiles`]; `k.strided` is `Some`; `out` has `rows.next_multiple_of(k.mr)` rows
/// of `cols.next_multiple_of(16)` writable i32 every `ldo` (whole tiles are stored).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn run_tiles_raw(
    k: &Kernels,
    l: *const u8,
    ls: usize,
    r: *const u8,
    rs: usize,
    rows: usize,
    cols: usize,
    kg: usize,
    out: *mut i32,
    ldo: usize,
) {
    let tiles = k
        .strided
        .expect("the caller checked the path has strided tiles");
    k.begin();
    for_each_tile(k.mr, tiles.len(), rows, cols, |rb, pb, nv| {
        // SAFETY: rows rb..rb + mr of L exist (padding), panels pb..pb + nv of R exist,
        // the tile's mr x 16 nv values are inside `out` (the caller's contract).
        unsafe {
            tiles[nv - 1](
                l.add(rb * ls),
                ls,
                r.add(pb * rs),
                rs,
                kg,
                out.add(rb * ldo + pb * 16),
                ldo,
            )
        };
    });
    k.end();
}

/// The raw-tile buffer of [`run_tiles`] (the largest tile is 32 x 64).
#[repr(C, align(64))]
struct TileBuf([i32; 32 * 64]);

thread_local! {
    /// One tile buffer per thread, taken for a call and put back (a re-entrant call
    /// allocates its own), so that calls do not zero 8 KiB each time.
    static TILE: std::cell::Cell<Option<Box<TileBuf>>> = const { std::cell::Cell::new(None) };
}

/// A short list of epilogue steps on the stack (drivers add at most 2 steps to the user's
/// at most [`MAX_USER_STEPS`]).
pub(crate) struct Steps<'a> {
    buf: [Step<'a>; MAX_USER_STEPS + 2],
    n: usize,
}

impl<'a> Steps<'a> {
    pub(crate) fn new() -> Steps<'a> {
        Steps {
            buf: [Step::Clamp(0, 0); MAX_USER_STEPS + 2],
            n: 0,
        }
    }
    pub(crate) fn push(&mut self, s: Step<'a>) {
        self.buf[self.n] = s;
        self.n += 1;
    }
    pub(crate) fn as_slice(&self) -> &[Step<'a>] {
        &self.buf[..self.n]
    }
}

/// The most steps an epilogue may have.
pub const MAX_USER_STEPS: usize = 6;

/// Multiply-accumulates below which a parallel call stays on one thread.
pub(crate) const PAR_MIN_WORK: usize = 1 << 21;

/// Int8 linear layer on one thread: `out[r][c] = epilogue(sum_k (a[r][k] - za) *
/// (w[c][k] - zw[c]))` for `a` `[n, k]` row-major and `w` the packed `[m, k]` weights;
/// `out` is `[n, m]` row-major. `path` is a concrete path or [`Path::Auto`].
pub fn qgemm(
    path: Path,
    a: Activations,
    n: usize,
    za: i32,
    w: &PackedB,
    ops: &[FusedOp],
    out: Output,
) -> KResult<()> {
    qgemm_on(Parallel::None, path, a, n, za, w, ops, out)
}

/// [`qgemm`] with its rows split over the threads of rayon's global pool when the product
/// is large enough (at least 2^21 multiply-accumulates and two tiles of rows); the result is
/// identical to [`qgemm`]'s.
pub fn qgemm_par(
    path: Path,
    a: Activations,
    n: usize,
    za: i32,
    w: &PackedB,
    ops: &[FusedOp],
    out: Output,
) -> KResult<()> {
    qgemm_on(Parallel::Rayon, path, a, n, za, w, ops, out)
}

/// [`qgemm`] with its rows split over the threads `par` names when the product is large
/// enough (at least 2^21 multiply-accumulates and two tiles of rows); the result is
/// identical to [`qgemm`]'s.
#[allow(clippy::too_many_arguments)]
pub fn qgemm_on(
    par: Parallel,
    path: Path,
    a: Activations,
    n: usize,
    za: i32,
    w: &PackedB,
    ops: &[FusedOp],
    mut out: Output,
) -> KResult<()> {
    let (m, k) = (w.m, w.k);
    let nk = n
        .checked_mul(k)
        .ok_or_else(|| crate::KernelError::Invalid("activations too large".into()))?;
    check_len("activations", nk, a.len())?;
    check_len("output", n * m, out.len())?;
    let zu = a.unsigned_zero_point(za)?;
    validate_ops(ops, m, out.kind())?;
    if n == 0 {
        return Ok(());
    }
    let path = path.resolve(n, m, k)?;
    let view = out.view(m);
    let (src, flip) = a.bytes();
    let threads = par.threads();
    let kern = kernels::select(path, true, n, m);
    let chunk_rows = if threads > 1 && n * m * k >= PAR_MIN_WORK && n >= 2 * kern.mr {
        n.div_ceil(threads).div_ceil(kern.mr) * kern.mr
    } else {
        n
    };
    if chunk_rows >= n {
        with_scratch(|s| {
            let mut corr = std::mem::take(&mut s.corr);
            let used = corrections(zu, k, &w.wsum, &w.zw, ops, &mut corr);
            linear_rows(s, &kern, src, flip, k, 0, n, w, &corr, &ops[used..], &view);
            s.corr = corr;
        });
    } else {
        let mut corr = Vec::with_capacity(m);
        let used = corrections(zu, k, &w.wsum, &w.zw, ops, &mut corr);
        let user = &ops[used..];
        par.for_each(n.div_ceil(chunk_rows), &|i| {
            let (r0, r1) = (i * chunk_rows, ((i + 1) * chunk_rows).min(n));
            // the tile height may differ for a smaller chunk; select again for its rows
            let kern = kernels::select(path, true, r1 - r0, m);
            with_scratch(|s| {
                linear_rows(
                    s,
                    &kern,
                    src,
                    flip,
                    k,
                    r0,
                    r1,
                    w,
                    &corr,
                    user,
                    &view.offset_rows(r0),
                )
            });
        });
    }
    Ok(())
}

/// Rows `[r0, r1)` of a linear layer: pack them, run the tiles.
#[allow(clippy::too_many_arguments)]
fn linear_rows(
    s: &mut Scratch,
    kern: &Kernels,
    src: &[u8],
    flip: u8,
    k: usize,
    r0: usize,
    r1: usize,
    w: &PackedB,
    corr: &[i32],
    user: &[FusedOp],
    view: &OutView,
) {
    {
        let rows = r1 - r0;
        let rows_pad = rows.div_ceil(kern.mr) * kern.mr;
        let kp = kpad(k, kern.kalign);
        s.a.set_len(rows_pad * kp);
        let sums = if w.zw_any {
            s.ints.resize(rows_pad, 0);
            Some(&mut s.ints[..rows_pad])
        } else {
            None
        };
        pack_rows(src, flip, k, r0, r1, rows_pad, kp, s.a.as_mut_slice(), sums);
        let mut steps = Steps::new();
        steps.push(Step::AddCol(corr));
        if w.zw_any {
            steps.push(Step::SubRowCol(&s.ints[..rows_pad], &w.zw));
        }
        user_steps(user, Axis::Col, 0, &mut steps);
        // SAFETY: L is rows_pad x kp packed rows, R the packed weights (kp multiple of 64,
        // zero-filled, m.div_ceil(16) panels), the view covers rows r0..r1 of the output
        // (offset by the caller), every step array has m columns / rows_pad rows.
        unsafe {
            crate::gemm::run_tiles(
                kern,
                s.a.as_slice().as_ptr(),
                kp,
                w.panels.as_slice().as_ptr(),
                16 * w.kp,
                rows,
                w.m,
                k.div_ceil(4),
                steps.as_slice(),
                view,
            )
        };
    }
}
