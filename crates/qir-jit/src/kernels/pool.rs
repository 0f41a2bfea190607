//! 2-D pooling over NCHW planes and its gradients, with the window rules of the op table:
//! padding cells never win a max and count toward an average only with
//! `count_include_pad`; a max's gradient goes to its window's first maximum; averages
//! accumulate in f64 and round once (as the interpreter). Max pooling also runs on the
//! integer storage types of converted graphs.

use super::{Bound, Kernel, slice, slice_mut};
use crate::dtype::DType;
use crate::rt::RunCtx;

/// Which pooling computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Max pooling of argument 0.
    Max,
    /// Gradient of max pooling: arguments dy, x.
    MaxGrad,
    /// Max pooling that also records, after its values, each output's argmax position in
    /// its window (one byte; unpadded windows of at most 256 cells).
    MaxIndexed,
    /// Gradient of max pooling from the recorded positions: arguments dy, the forward
    /// result of [`PoolKind::MaxIndexed`].
    MaxGradIndexed,
    /// Average pooling of argument 0.
    Avg,
    /// Gradient of average pooling: argument dy.
    AvgGrad,
}

/// A pooling call: the geometry and the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// What to compute.
    pub kind: PoolKind,
    /// Element type (max pooling of integers; float otherwise).
    pub dtype: DType,
    /// Batch.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window.
    pub k: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Padding (top, left, bottom, right).
    pub pad: [usize; 4],
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Average pooling divides by the padded window size.
    pub include_pad: bool,
}

impl Pool {
    fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    fn y_len(&self) -> usize {
        self.n * self.c * self.oh * self.ow
    }
    /// The input cells of window `o` along dimension `d` (0 rows, 1 columns), clipped to
    /// the input, and the window's extent clipped to the padded input.
    fn span(&self, d: usize, o: usize) -> (usize, usize, usize) {
        let (size, lo_pad, hi_pad) = if d == 0 {
            (self.h, self.pad[0], self.pad[2])
        } else {
            (self.w, self.pad[1], self.pad[3])
        };
        let start = (o * self.stride[d]) as isize - lo_pad as isize;
        let end = start + self.k[d] as isize;
        let padded_end = end.min((size + hi_pad) as isize);
        let lo = start.max(0) as usize;
        let hi = (end.max(0) as usize).min(size);
        (lo, hi.max(lo), (padded_end - start).max(0) as usize)
    }
    fn divisor(&self, oy: usize, ox: usize) -> usize {
        let (y0, y1, py) = self.span(0, oy);
        let (x0, x1, px) = self.span(1, ox);
        let d = if self.include_pad {
            py * px
        } else {
            (y1 - y0) * (x1 - x0)
        };
        d.max(1)
    }
}

/// Values max pooling compares.
trait Ordered: Copy + PartialOrd + Default + Send + Sync + 'static {
    fn nan(self) -> bool;
    /// The maximum, NaN if either is NaN (the value of a first-maximum search).
    fn max_nan(self, o: Self) -> Self;
}
impl Ordered for f32 {
    fn nan(self) -> bool {
        self.is_nan()
    }
    #[inline]
    fn max_nan(self, o: f32) -> f32 {
        if self.is_nan() || o.is_nan() {
            f32::NAN
        } else if o > self {
            o
        } else {
            self
        }
    }
}
macro_rules! ordered_int {
    ($($t:ty),*) => { $(impl Ordered for $t {
        fn nan(self) -> bool { false }
        #[inline]
        fn max_nan(self, o: $t) -> $t { if o > self { o } else { self } }
    })* };
}
ordered_int!(i8, u8, i16, i32, i64);

/// The plane index of window (oy, ox)'s first maximum (NaN wins and stays).
fn argmax_window<T: Ordered>(p: &Pool, xp: &[T], oy: usize, ox: usize) -> Option<usize> {
    let (y0, y1, _) = p.span(0, oy);
    let (x0, x1, _) = p.span(1, ox);
    let mut best: Option<(usize, T)> = None;
    for iy in y0..y1 {
        for ix in x0..x1 {
            let i = iy * p.w + ix;
            let v = xp[i];
            match best {
                Some((_, b)) if b.nan() || !(v > b || v.nan()) => {}
                _ => best = Some((i, v)),
            }
        }
    }
    best.map(|(i, _)| i)
}

impl Pool {
    /// True when every window lies inside the input (no padding): the fast paths apply.
    pub fn unpadded(&self) -> bool {
        self.pad == [0; 4]
            && (self.oh - 1) * self.stride[0] + self.k[0] <= self.h
            && (self.ow - 1) * self.stride[1] + self.k[1] <= self.w
    }
}

fn unpadded(p: &Pool) -> bool {
    p.unpadded()
}

/// Max pooling of unpadded windows, recording each window's first-maximum position.
fn max_pool_indexed(p: &Pool, x: &[f32], y: &mut [f32], idx: &mut [u8]) {
    let (plane, oplane) = (p.h * p.w, p.oh * p.ow);
    let per = planes_per_task(p);
    crate::rt::team::for_chunks2(y, oplane * per, idx, oplane * per, &|t, yt, it| {
        for (j, (yp, ip)) in yt.chunks_mut(oplane).zip(it.chunks_mut(oplane)).enumerate() {
            let xp = &x[(t * per + j) * plane..][..plane];
            if p.k == [2, 2] && p.stride == [2, 2] {
                for oy in 0..p.oh {
                    let (r0, r1) = (2 * oy * p.w, (2 * oy + 1) * p.w);
                    let (yr, ir) = (&mut yp[oy * p.ow..][..p.ow], &mut ip[oy * p.ow..][..p.ow]);
                    let done = f32_2x2::forward(&xp[r0..][..p.w], &xp[r1..][..p.w], yr, ir);
                    for ox in done..p.ow {
                        let c = 2 * ox;
                        let v = [xp[r0 + c], xp[r0 + c + 1], xp[r1 + c], xp[r1 + c + 1]];
                        let (pos, m) = first_max4(v);
                        yr[ox] = m;
                        ir[ox] = pos;
                    }
                }
                continue;
            }
            for oy in 0..p.oh {
                for ox in 0..p.ow {
                    let i = argmax_inside(p, xp, oy, ox);
                    let (iy, ix) = (i / p.w, i % p.w);
                    let pos = (iy - oy * p.stride[0]) * p.k[1] + (ix - ox * p.stride[1]);
                    yp[oy * p.ow + ox] = xp[i];
                    ip[oy * p.ow + ox] = pos as u8;
                }
            }
        }
    });
}

/// The position (0..4) and value of the first maximum of a 2x2 window in row-major
/// order (NaN counts as the maximum), branch-free so that a row of windows vectorizes: the
/// maximum is the NaN-propagating max, and the position the first cell equal to it (or
/// NaN when it is NaN).
#[inline]
fn first_max4(v: [f32; 4]) -> (u8, f32) {
    let [a, b, c, d] = v;
    let m = a.max_nan(b).max_nan(c.max_nan(d));
    let hit = |x: f32| ((x == m) | x.is_nan()) as u8;
    let (ha, hb, hc) = (hit(a), hit(b), hit(c));
    ((1 - ha) * (1 + (1 - hb) * (1 + (1 - hc))), m)
}

/// 2x2 max pooling with stride 2 of f32 rows with each window's first-maximum position,
/// four windows at a time with SSE2 (part of every x86-64 CPU): the even and odd cells of
/// a row pair are split by shuffles, the maximum is the NaN-propagating one of
/// [`Ordered::max_nan`] (the later cell wins only when strictly greater), and a position
/// is the first cell equal to the maximum (or NaN). The gradient scatters `dy` back to
/// those positions and zeros elsewhere. Both give exactly what the scalar loops give; the
/// callers finish the windows past the last multiple of four.
mod f32_2x2 {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// `x.max_nan(y)` on four lanes: `y` when strictly greater, the canonical NaN when
    /// either is NaN.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn max_nan(x: __m128, y: __m128) -> __m128 {
        // SAFETY (here and below): SSE2 is part of every x86-64 CPU; memory is reached
        // through fixed-size arrays only.
        unsafe {
            let m = _mm_max_ps(y, x); // y > x ? y : x
            let u = _mm_cmpunord_ps(x, y);
            _mm_or_ps(_mm_andnot_ps(u, m), _mm_and_ps(u, _mm_set1_ps(f32::NAN)))
        }
    }

    /// Pools the windows of input rows `r0`, `r1` into `y` and `pos`; returns how many it
    /// did (a multiple of four, at most `y.len()`).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn forward(r0: &[f32], r1: &[f32], y: &mut [f32], pos: &mut [u8]) -> usize {
        let n = y.len().min(pos.len()).min(r0.len() / 2).min(r1.len() / 2) / 4 * 4;
        for k in (0..n).step_by(4) {
            let (e0, o0) = split(&r0[2 * k..2 * k + 8]);
            // SAFETY: see `max_nan`.
            unsafe {
                let (e1, o1) = split(&r1[2 * k..2 * k + 8]);
                let m = max_nan(max_nan(e0, o0), max_nan(e1, o1));
                let hit = |v: __m128| {
                    _mm_castps_si128(_mm_or_ps(_mm_cmpeq_ps(v, m), _mm_cmpunord_ps(v, v)))
                };
                let sel = |mask: __m128i, v: i32, other: __m128i| {
                    _mm_or_si128(
                        _mm_and_si128(mask, _mm_set1_epi32(v)),
                        _mm_andnot_si128(mask, other),
                    )
                };
                let p = sel(hit(e1), 2, _mm_set1_epi32(3));
                let p = sel(hit(o0), 1, p);
                let p = sel(hit(e0), 0, p);
                let bytes = _mm_packus_epi16(_mm_packs_epi32(p, p), _mm_setzero_si128());
                pos[k..k + 4].copy_from_slice(&_mm_cvtsi128_si32(bytes).to_le_bytes());
                let out: &mut [f32; 4] = (&mut y[k..k + 4]).try_into().expect("four windows");
                _mm_storeu_ps(out.as_mut_ptr(), m);
            }
        }
        n
    }

    /// The even and odd cells of eight consecutive values.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn split(r: &[f32]) -> (__m128, __m128) {
        let r: &[f32; 8] = r.try_into().expect("eight cells");
        // SAFETY: see `max_nan`; `r` holds eight readable f32.
        unsafe {
            let (lo, hi) = (_mm_loadu_ps(r.as_ptr()), _mm_loadu_ps(r.as_ptr().add(4)));
            (
                _mm_shuffle_ps::<0b10_00_10_00>(lo, hi),
                _mm_shuffle_ps::<0b11_01_11_01>(lo, hi),
            )
        }
    }

    /// Scatters `dy` of the windows of input rows `r0`, `r1` to the recorded positions
    /// (the other cells of the windows get 0); returns how many windows it did.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn backward(dy: &[f32], pos: &[u8], r0: &mut [f32], r1: &mut [f32]) -> usize {
        let n = dy.len().min(pos.len()).min(r0.len() / 2).min(r1.len() / 2) / 4 * 4;
        for k in (0..n).step_by(4) {
            let d: &[f32; 4] = dy[k..k + 4].try_into().expect("four windows");
            // SAFETY: see `max_nan`; `d` holds four readable f32.
            unsafe {
                let d = _mm_loadu_ps(d.as_ptr());
                let word = i32::from_le_bytes(pos[k..k + 4].try_into().expect("four positions"));
                let z = _mm_setzero_si128();
                let p = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(word), z), z);
                let at =
                    |v: i32| _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(p, _mm_set1_epi32(v))), d);
                let (e0, o0, e1, o1) = (at(0), at(1), at(2), at(3));
                store_pairs(&mut r0[2 * k..2 * k + 8], e0, o0);
                store_pairs(&mut r1[2 * k..2 * k + 8], e1, o1);
            }
        }
        n
    }

    /// Writes `even[i]`, `odd[i]` interleaved to eight consecutive cells.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn store_pairs(r: &mut [f32], even: __m128, odd: __m128) {
        let r: &mut [f32; 8] = r.try_into().expect("eight cells");
        // SAFETY: see `max_nan`; `r` holds eight writable f32.
        unsafe {
            _mm_storeu_ps(r.as_mut_ptr(), _mm_unpacklo_ps(even, odd));
            _mm_storeu_ps(r.as_mut_ptr().add(4), _mm_unpackhi_ps(even, odd));
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn forward(_: &[f32], _: &[f32], _: &mut [f32], _: &mut [u8]) -> usize {
        0
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn backward(_: &[f32], _: &[u8], _: &mut [f32], _: &mut [f32]) -> usize {
        0
    }
}

/// The gradient of max pooling from recorded positions.
fn max_pool_grad_indexed(p: &Pool, dy: &[f32], idx: &[u8], dx: &mut [f32]) {
    let (plane, oplane) = (p.h * p.w, p.oh * p.ow);
    let per = planes_per_task(p);
    let disjoint = p.stride[0] >= p.k[0] && p.stride[1] >= p.k[1];
    crate::rt::team::for_chunks(dx, plane * per, &|t, dxt| {
        dxt.fill(0.0);
        for (j, dxp) in dxt.chunks_mut(plane).enumerate() {
            let pi = t * per + j;
            let dyp = &dy[pi * oplane..][..oplane];
            let ip = &idx[pi * oplane..][..oplane];
            for oy in 0..p.oh {
                let mut done = 0;
                if p.k == [2, 2] && p.stride == [2, 2] {
                    let (r0, r1) = dxp[2 * oy * p.w..][..2 * p.w].split_at_mut(p.w);
                    let (d, i) = (&dyp[oy * p.ow..][..p.ow], &ip[oy * p.ow..][..p.ow]);
                    done = f32_2x2::backward(d, i, r0, r1);
                }
                for ox in done..p.ow {
                    let o = oy * p.ow + ox;
                    let pos = ip[o] as usize;
                    let (wy, wx) = (pos / p.k[1], pos % p.k[1]);
                    let cell = (oy * p.stride[0] + wy) * p.w + ox * p.stride[1] + wx;
                    if disjoint {
                        dxp[cell] = dyp[o];
                    } else {
                        dxp[cell] += dyp[o];
                    }
                }
            }
        }
    });
}

/// The plane index of the first maximum of a window that lies inside the input.
#[inline]
fn argmax_inside<T: Ordered>(p: &Pool, xp: &[T], oy: usize, ox: usize) -> usize {
    let (y0, x0) = (oy * p.stride[0], ox * p.stride[1]);
    let mut bi = y0 * p.w + x0;
    let mut bv = xp[bi];
    for iy in y0..y0 + p.k[0] {
        let row = iy * p.w + x0;
        for (j, &v) in xp[row..row + p.k[1]].iter().enumerate() {
            if !bv.nan() && (v > bv || v.nan()) {
                bv = v;
                bi = row + j;
            }
        }
    }
    bi
}

/// Planes per parallel task: enough work to amortize scheduling.
fn planes_per_task(p: &Pool) -> usize {
    (8192 / (p.h * p.w).max(1)).max(1)
}

fn max_pool<T: Ordered>(p: &Pool, x: &[T], y: &mut [T]) {
    let (plane, oplane) = (p.h * p.w, p.oh * p.ow);
    if bytes_2x2::applies(p, std::mem::size_of::<T>()) && bytes_2x2::run(p, x, y) {
        return;
    }
    if unpadded(p) {
        // the value of the first maximum is the NaN-propagating maximum
        let per = planes_per_task(p);
        crate::rt::team::for_chunks(y, oplane * per, &|t, yt| {
            for (j, yp) in yt.chunks_mut(oplane).enumerate() {
                let xp = &x[(t * per + j) * plane..][..plane];
                for oy in 0..p.oh {
                    let yr = &mut yp[oy * p.ow..][..p.ow];
                    let y0 = oy * p.stride[0];
                    if p.k == [2, 2] && p.stride[1] == 2 {
                        let r0 = &xp[y0 * p.w..][..2 * p.ow];
                        let r1 = &xp[(y0 + 1) * p.w..][..2 * p.ow];
                        for (ox, o) in yr.iter_mut().enumerate() {
                            let a = r0[2 * ox].max_nan(r0[2 * ox + 1]);
                            let b = r1[2 * ox].max_nan(r1[2 * ox + 1]);
                            *o = a.max_nan(b);
                        }
                    } else {
                        for (ox, o) in yr.iter_mut().enumerate() {
                            let x0 = ox * p.stride[1];
                            let mut m = xp[y0 * p.w + x0];
                            for iy in y0..y0 + p.k[0] {
                                for &v in &xp[iy * p.w + x0..][..p.k[1]] {
                                    m = m.max_nan(v);
                                }
                            }
                            *o = m;
                        }
                    }
                }
            }
        });
        return;
    }
    crate::rt::team::for_chunks(y, oplane, &|pi, yp| {
        let xp = &x[pi * plane..][..plane];
        for oy in 0..p.oh {
            for ox in 0..p.ow {
                let i = argmax_window(p, xp, oy, ox).unwrap_or(0);
                if let Some(&v) = xp.get(i) {
                    yp[oy * p.ow + ox] = v;
                }
            }
        }
    });
}

/// 2x2 max pooling with stride 2 of unpadded 8-bit values (the pooling of converted CNNs),
/// with AVX-512 BW and VL: a row pair is one vertical byte max, then a max of
/// the two bytes of every 16-bit lane, narrowed back to bytes. Output `(oy, ox)` of a plane
/// is `max(x[2oy][2ox], x[2oy][2ox + 1], x[2oy + 1][2ox], x[2oy + 1][2ox + 1])` (an odd
/// last row or column is in no window).
mod bytes_2x2 {
    use super::Pool;

    /// True for the geometry this path handles (the element type is checked by `run`).
    pub(super) fn applies(p: &Pool, elem: usize) -> bool {
        elem == 1
            && p.k == [2, 2]
            && p.stride == [2, 2]
            && p.pad == [0; 4]
            && p.h >= 2 * p.oh
            && p.w >= 2 * p.ow
            && p.ow > 0
    }

    /// Runs the pooling if `T` is i8 or u8 and the CPU has AVX-512 BW; false otherwise
    /// (the caller takes the general path).
    pub(super) fn run<T: 'static>(p: &Pool, x: &[T], y: &mut [T]) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::any::TypeId;
            let signed = if TypeId::of::<T>() == TypeId::of::<i8>() {
                true
            } else if TypeId::of::<T>() == TypeId::of::<u8>() {
                false
            } else {
                return false;
            };
            if !std::arch::is_x86_feature_detected!("avx512bw")
                || !std::arch::is_x86_feature_detected!("avx512vl")
            {
                return false;
            }
            let pairs = p.n * p.c * p.oh;
            if x.len() < p.n * p.c * p.h * p.w || y.len() < pairs * p.ow {
                return false;
            }
            // SAFETY: T is a one-byte integer type (checked above), so the slices are bytes.
            let (xb, yb) = unsafe {
                (
                    std::slice::from_raw_parts(x.as_ptr() as *const u8, x.len()),
                    std::slice::from_raw_parts_mut(y.as_mut_ptr() as *mut u8, y.len()),
                )
            };
            let (h, w, oh, ow) = (p.h, p.w, p.oh, p.ow);
            let per = (16384 / (2 * w)).max(1);
            crate::rt::team::for_chunks(&mut yb[..pairs * ow], ow * per, &|t, yt| {
                for (j, yr) in yt.chunks_mut(ow).enumerate() {
                    let r = t * per + j;
                    // plane r / oh, input rows 2 (r % oh) and the next; a last odd row or
                    // column is outside every window
                    let base = (r / oh) * h * w + 2 * (r % oh) * w;
                    let r0 = &xb[base..][..2 * ow];
                    let r1 = &xb[base + w..][..2 * ow];
                    // SAFETY: AVX-512 BW is available (checked above); the rows hold 2 ow
                    // bytes for the ow outputs.
                    unsafe { row_pair(r0, r1, yr, signed) };
                }
            });
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (p, x, y);
            false
        }
    }

    /// One row pair: `out[j] = max(r0[2j], r0[2j+1], r1[2j], r1[2j+1])` (rows of 2 out.len()).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512bw,avx512f,avx512vl")]
    unsafe fn row_pair(r0: &[u8], r1: &[u8], out: &mut [u8], signed: bool) {
        use std::arch::x86_64::*;
        let w = r0.len();
        let mut i = 0;
        while i < w {
            let n = (w - i).min(64);
            let m: __mmask64 = if n == 64 { !0 } else { (1u64 << n) - 1 };
            // SAFETY: the masked loads and the store touch only the n valid bytes.
            unsafe {
                let a = _mm512_maskz_loadu_epi8(m, r0.as_ptr().add(i) as *const i8);
                let b = _mm512_maskz_loadu_epi8(m, r1.as_ptr().add(i) as *const i8);
                let pair = if signed {
                    let v = _mm512_max_epi8(a, b);
                    // the low byte of each 16-bit lane, sign-extended, and the high byte
                    let lo = _mm512_srai_epi16::<8>(_mm512_slli_epi16::<8>(v));
                    let hi = _mm512_srai_epi16::<8>(v);
                    _mm512_max_epi16(lo, hi)
                } else {
                    let v = _mm512_max_epu8(a, b);
                    let lo = _mm512_and_si512(v, _mm512_set1_epi16(0xff));
                    let hi = _mm512_srli_epi16::<8>(v);
                    _mm512_max_epu16(lo, hi)
                };
                let bytes = _mm512_cvtepi16_epi8(pair);
                let om: __mmask32 = if n == 64 { !0 } else { (1u32 << (n / 2)) - 1 };
                _mm256_mask_storeu_epi8(out.as_mut_ptr().add(i / 2) as *mut i8, om, bytes);
            }
            i += 64;
        }
    }
}

fn max_pool_grad(p: &Pool, dy: &[f32], x: &[f32], dx: &mut [f32]) {
    let (plane, oplane) = (p.h * p.w, p.oh * p.ow);
    if unpadded(p) && p.k == [2, 2] && p.stride == [2, 2] {
        // windows do not overlap: each gets its gradient at its first maximum and zeros
        // elsewhere, written directly (cells outside every window are zeroed)
        let per = planes_per_task(p);
        crate::rt::team::for_chunks(dx, plane * per, &|t, dxt| {
            for (j, dxp) in dxt.chunks_mut(plane).enumerate() {
                let pi = t * per + j;
                let xp = &x[pi * plane..][..plane];
                let dyp = &dy[pi * oplane..][..oplane];
                dxp[2 * p.oh * p.w..].fill(0.0);
                for oy in 0..p.oh {
                    let (r0, r1) = (2 * oy * p.w, (2 * oy + 1) * p.w);
                    for ox in 0..p.ow {
                        let c = 2 * ox;
                        let (a, b, cc, d) =
                            (xp[r0 + c], xp[r0 + c + 1], xp[r1 + c], xp[r1 + c + 1]);
                        let g = dyp[oy * p.ow + ox];
                        let nan = a.is_nan() | b.is_nan() | cc.is_nan() | d.is_nan();
                        let (ea, eb, ec) = if nan {
                            // the first NaN is the maximum
                            let (na, nb, nc) = (a.is_nan(), b.is_nan(), cc.is_nan());
                            (na, !na & nb, !na & !nb & nc)
                        } else {
                            let m = a.max(b).max(cc).max(d);
                            let (ea, eb, ec) = (a == m, b == m, cc == m);
                            (ea, !ea & eb, !ea & !eb & ec)
                        };
                        let ed = !(ea | eb | ec);
                        let keep =
                            |e: bool| f32::from_bits(g.to_bits() & 0u32.wrapping_sub(e as u32));
                        dxp[r0 + c] = keep(ea);
                        dxp[r0 + c + 1] = keep(eb);
                        dxp[r1 + c] = keep(ec);
                        dxp[r1 + c + 1] = keep(ed);
                    }
                    // an odd last column is in no window
                    for r in [r0, r1] {
                        dxp[r + 2 * p.ow..r + p.w].fill(0.0);
                    }
                }
            }
        });
        return;
    }
    if unpadded(p) {
        let per = planes_per_task(p);
        crate::rt::team::for_chunks(dx, plane * per, &|t, dxt| {
            dxt.fill(0.0);
            for (j, dxp) in dxt.chunks_mut(plane).enumerate() {
                let pi = t * per + j;
                let xp = &x[pi * plane..][..plane];
                let dyp = &dy[pi * oplane..][..oplane];
                for oy in 0..p.oh {
                    for ox in 0..p.ow {
                        dxp[argmax_inside(p, xp, oy, ox)] += dyp[oy * p.ow + ox];
                    }
                }
            }
        });
        return;
    }
    crate::rt::team::for_chunks(dx, plane, &|pi, dxp| {
        dxp.fill(0.0);
        let xp = &x[pi * plane..][..plane];
        let dyp = &dy[pi * oplane..][..oplane];
        for oy in 0..p.oh {
            for ox in 0..p.ow {
                if let Some(i) = argmax_window(p, xp, oy, ox) {
                    dxp[i] += dyp[oy * p.ow + ox];
                }
            }
        }
    });
}

fn avg_pool(p: &Pool, x: &[f32], y: &mut [f32]) {
    let (plane, oplane) = (p.h * p.w, p.oh * p.ow);
    crate::rt::team::for_chunks(y, oplane, &|pi, yp| {
        let xp = &x[pi * plane..][..plane];
        for oy in 0..p.oh {
            let (y0, y1, _) = p.span(0, oy);
            for ox in 0..p.ow {
                let (x0, x1, _) = p.span(1, ox);
                let mut acc = 0.0f64;
                for iy in y0..y1 {
                    for &v in &xp[iy * p.w + x0..iy * p.w + x1] {
                        acc += v as f64;
                    }
                }
                yp[oy * p.ow + ox] = (acc / p.divisor(oy, ox) as f64) as f32;
            }
        }
    });
}

fn avg_pool_grad(p: &Pool, dy: &[f32], dx: &mut [f32]) {
    let (plane, oplane) = (p.h * p.w, p.oh * p.ow);
    crate::rt::team::for_chunks(dx, plane, &|pi, dxp| {
        dxp.fill(0.0);
        let dyp = &dy[pi * oplane..][..oplane];
        for oy in 0..p.oh {
            let (y0, y1, _) = p.span(0, oy);
            for ox in 0..p.ow {
                let (x0, x1, _) = p.span(1, ox);
                let share = dyp[oy * p.ow + ox] / p.divisor(oy, ox) as f32;
                for iy in y0..y1 {
                    for v in &mut dxp[iy * p.w + x0..iy * p.w + x1] {
                        *v += share;
                    }
                }
            }
        }
    });
}

/// The `qatc_pool` kernel.
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan.
pub unsafe extern "C" fn qatc_pool(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let Kernel::Pool(p) = &call.kernel else {
        return -1;
    };
    let (xl, yl) = (p.x_len(), p.y_len());
    // SAFETY: the plan sized the buffers for `p`.
    unsafe {
        match (p.kind, p.dtype) {
            (PoolKind::Max, DType::F32) => max_pool::<f32>(
                p,
                slice(ctx, call.args[0], xl),
                slice_mut(ctx, call.out, yl),
            ),
            (PoolKind::Max, DType::I8) => max_pool::<i8>(
                p,
                slice(ctx, call.args[0], xl),
                slice_mut(ctx, call.out, yl),
            ),
            (PoolKind::Max, DType::U8) => max_pool::<u8>(
                p,
                slice(ctx, call.args[0], xl),
                slice_mut(ctx, call.out, yl),
            ),
            (PoolKind::Max, DType::I16) => max_pool::<i16>(
                p,
                slice(ctx, call.args[0], xl),
                slice_mut(ctx, call.out, yl),
            ),
            (PoolKind::Max, DType::I32) => max_pool::<i32>(
                p,
                slice(ctx, call.args[0], xl),
                slice_mut(ctx, call.out, yl),
            ),
            (PoolKind::Max, DType::I64) => max_pool::<i64>(
                p,
                slice(ctx, call.args[0], xl),
                slice_mut(ctx, call.out, yl),
            ),
            (PoolKind::Max, DType::Bool | DType::F64) => return -1,
            (PoolKind::MaxIndexed, _) => {
                let out = ctx.ptr(call.out);
                let y = std::slice::from_raw_parts_mut(out as *mut f32, yl);
                let idx = std::slice::from_raw_parts_mut(out.add(yl * 4), yl);
                max_pool_indexed(p, slice(ctx, call.args[0], xl), y, idx)
            }
            (PoolKind::MaxGradIndexed, _) => {
                let fwd = ctx.ptr(call.args[1]);
                let idx = std::slice::from_raw_parts(fwd.add(yl * 4) as *const u8, yl);
                max_pool_grad_indexed(
                    p,
                    slice(ctx, call.args[0], yl),
                    idx,
                    slice_mut(ctx, call.out, xl),
                )
            }
            (PoolKind::MaxGrad, _) => max_pool_grad(
                p,
                slice(ctx, call.args[0], yl),
                slice(ctx, call.args[1], xl),
                slice_mut(ctx, call.out, xl),
            ),
            (PoolKind::Avg, _) => avg_pool(
                p,
                slice(ctx, call.args[0], xl),
                slice_mut(ctx, call.out, yl),
            ),
            (PoolKind::AvgGrad, _) => avg_pool_grad(
                p,
                slice(ctx, call.args[0], yl),
                slice_mut(ctx, call.out, xl),
            ),
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(kind: PoolKind) -> Pool {
        Pool {
            kind,
            dtype: DType::F32,
            n: 2,
            c: 3,
            h: 6,
            w: 7,
            k: [2, 2],
            stride: [2, 2],
            pad: [0; 4],
            oh: 3,
            ow: 3,
            include_pad: false,
        }
    }

    /// The indexed forward and gradient equal the recomputing ones, ties, NaN and an odd
    /// last column included.
    #[test]
    fn indexed_pooling_matches_recomputation() {
        let p = geom(PoolKind::Max);
        let mut x: Vec<f32> = (0..2 * 3 * 6 * 7)
            .map(|i| ((i * 37) % 11) as f32 - 5.0)
            .collect();
        x[9] = f32::NAN;
        x[30] = x[31];
        let (xl, yl) = (x.len(), 2 * 3 * 3 * 3);
        let (mut y1, mut y2, mut idx) = (vec![0.0; yl], vec![0.0; yl], vec![0u8; yl]);
        max_pool(&p, &x, &mut y1);
        max_pool_indexed(&p, &x, &mut y2, &mut idx);
        assert_eq!(format!("{y1:?}"), format!("{y2:?}"));
        let dy: Vec<f32> = (0..yl).map(|i| i as f32 + 0.5).collect();
        let (mut d1, mut d2) = (vec![1.0; xl], vec![1.0; xl]);
        max_pool_grad(&p, &dy, &x, &mut d1);
        max_pool_grad_indexed(&p, &dy, &idx, &mut d2);
        assert_eq!(d1, d2);
    }

    /// The four-window SSE2 path of the indexed 2x2 pooling and its gradient equal the
    /// recomputing scalar kernels on planes wide enough to use it (with odd last rows and
    /// columns and window counts that are not multiples of four), with NaN, ties and
    /// signed zeros in every window position.
    #[test]
    fn vector_indexed_pooling_matches_recomputation() {
        for (h, w) in [(26, 26), (13, 13), (8, 17), (2, 8), (5, 30)] {
            let p = Pool {
                h,
                w,
                oh: h / 2,
                ow: w / 2,
                ..geom(PoolKind::Max)
            };
            let xl = p.n * p.c * h * w;
            let x: Vec<f32> = (0..xl)
                .map(|i| match ((i * 2654435761usize) >> 5) % 23 {
                    0 => f32::NAN,
                    1 => 0.0,
                    2 => -0.0,
                    3..=8 => 1.5,
                    v => v as f32 - 12.0,
                })
                .collect();
            let yl = p.n * p.c * p.oh * p.ow;
            let (mut y1, mut y2, mut idx) = (vec![0.0; yl], vec![0.0; yl], vec![0u8; yl]);
            max_pool(&p, &x, &mut y1);
            max_pool_indexed(&p, &x, &mut y2, &mut idx);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y1), bits(&y2), "{h}x{w}");
            let dy: Vec<f32> = (0..yl).map(|i| i as f32 - 7.25).collect();
            let (mut d1, mut d2) = (vec![1.0; xl], vec![1.0; xl]);
            max_pool_grad(&p, &dy, &x, &mut d1);
            max_pool_grad_indexed(&p, &dy, &idx, &mut d2);
            assert_eq!(bits(&d1), bits(&d2), "{h}x{w}");
        }
    }

    /// The byte path of 2x2 pooling equals the window definition for i8 and u8, on planes
    /// narrower and wider than one 64-byte vector (masked tails) and at the value extremes.
    #[test]
    fn byte_pooling_matches_the_windows() {
        fn reference<T: Ordered>(p: &Pool, x: &[T]) -> Vec<T> {
            let mut y = Vec::new();
            for pl in 0..p.n * p.c {
                for oy in 0..p.oh {
                    for ox in 0..p.ow {
                        let at = |dy: usize, dx: usize| {
                            x[pl * p.h * p.w + (2 * oy + dy) * p.w + 2 * ox + dx]
                        };
                        let m = [at(0, 1), at(1, 0), at(1, 1)]
                            .into_iter()
                            .fold(at(0, 0), |m, v| m.max_nan(v));
                        y.push(m);
                    }
                }
            }
            y
        }
        for (h, w) in [
            (26, 26),
            (4, 150),
            (2, 2),
            (6, 128),
            (11, 11),
            (3, 131),
            (5, 2),
        ] {
            let p = Pool {
                kind: PoolKind::Max,
                dtype: DType::I8,
                n: 3,
                c: 5,
                h,
                w,
                k: [2, 2],
                stride: [2, 2],
                pad: [0; 4],
                oh: h / 2,
                ow: w / 2,
                include_pad: false,
            };
            assert!(bytes_2x2::applies(&p, 1));
            let len = p.n * p.c * h * w;
            let raw: Vec<u8> = (0..len)
                .map(|i| match i % 17 {
                    0 => 0,
                    1 => 255,
                    2 => 128,
                    3 => 127,
                    _ => ((i * 2654435761usize) >> 7) as u8,
                })
                .collect();
            let yl = p.n * p.c * p.oh * p.ow;
            let xs: Vec<i8> = raw.iter().map(|&b| b as i8).collect();
            let mut ys = vec![0i8; yl];
            max_pool(&p, &xs, &mut ys);
            assert_eq!(ys, reference(&p, &xs), "i8 {h}x{w}");
            let mut yu = vec![0u8; yl];
            max_pool(&p, &raw, &mut yu);
            assert_eq!(yu, reference(&p, &raw), "u8 {h}x{w}");
        }
    }
}
