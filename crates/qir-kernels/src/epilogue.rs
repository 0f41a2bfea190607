//! The fused epilogue, as data: a list of steps run on each raw tile while it is hot, then
//! one store. Public steps are [`FusedOp`]s in terms of output channels; the drivers turn
//! them, together with the zero-point corrections, into [`Step`]s in terms of the tile's
//! rows and columns (channels are columns for a linear layer, rows for a convolution).
//!
//! Each path has an epilogue engine: [`epilogue_portable`] (the scalar reference, also used
//! by AVX2 and by emulated AMX) and [`epilogue_avx512`] (VNNI and AMX). They agree bit for
//! bit: every step is exact wrapping i32 arithmetic except the requantize, whose 64-bit
//! rounding is the same formula in both (see [`crate::requant`]).

use crate::requant::{Requant, requant_scalar};

/// One step of an epilogue, applied to every accumulator `acc` of output `(position,
/// channel)` in list order.
#[derive(Clone, Copy, Debug)]
pub enum FusedOp<'a> {
    /// `acc += v[channel]` (wrapping), e.g. the bias; one value per output channel.
    AddPerChannel(&'a [i32]),
    /// `acc = clamp(acc, lo, hi)` in the i32 domain (for an i32 output with a fused relu).
    Clamp {
        /// Lower bound.
        lo: i32,
        /// Upper bound.
        hi: i32,
    },
    /// The requantize to 8 bits: `clamp(zp + round(acc * M / 2^(31 + shift)), lo, hi)`.
    /// Must be the last step; an i8 or u8 output needs it.
    Requantize(&'a Requant),
}

/// Which tile axis a per-channel parameter runs along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Axis {
    Row,
    Col,
}

/// A step in tile coordinates. Row arrays are indexed by the row relative to the start of
/// the contraction's row range, column arrays by the column; `Requant` reads channel
/// `off + row` (axis Row) or `off + col` (axis Col).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step<'a> {
    AddRow(&'a [i32]),
    AddCol(&'a [i32]),
    /// `acc -= row[r] * col[c]` (wrapping): the weight-zero-point correction.
    SubRowCol(&'a [i32], &'a [i32]),
    Clamp(i32, i32),
    Requant(&'a Requant, Axis, usize),
}

/// The element type of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutKind {
    I32,
    I8,
    U8,
}

/// Where the results go: element `(r, c)` of the contraction (rows relative to its start)
/// is at `ptr + (r * ld + c) * size`; with a `remap` table, columns are "wide" (a
/// convolution computed over the padded input width, see [`crate::conv`]) and column `c`
/// of vector `c / 16` is stored only if bit `c % 16` of its mask is set, at
/// `r * ld + pos + (number of set bits below c % 16)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutView {
    pub(crate) ptr: *mut u8,
    pub(crate) ld: usize,
    pub(crate) kind: OutKind,
    pub(crate) remap: *const Remap,
}

/// The valid lanes of one 16-column vector of wide columns, the output column of the
/// first valid one, and the byte shuffle that packs the valid lanes of 16 narrowed bytes
/// to the front (`0x80`, a zero, elsewhere).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Remap {
    pub(crate) mask: u16,
    pub(crate) pos: u32,
    pub(crate) shuf: [u8; 16],
}

impl Default for Remap {
    fn default() -> Remap {
        Remap {
            mask: 0,
            pos: 0,
            shuf: [0x80; 16],
        }
    }
}

/// The remap table of a convolution computed over `wide`-pixel rows of which the first
/// `ow` are real, `cols` wide columns in all.
pub(crate) fn remap_table(cols: usize, wide: usize, ow: usize, t: &mut Vec<Remap>) {
    t.clear();
    t.resize(cols.div_ceil(16), Remap::default());
    let (mut y, mut x, mut pos) = (0usize, 0usize, 0u32);
    for c in 0..cols {
        if x < ow {
            let r = &mut t[c / 16];
            if r.mask == 0 {
                r.pos = pos;
            }
            r.shuf[r.mask.count_ones() as usize] = (c % 16) as u8;
            r.mask |= 1 << (c % 16);
            pos += 1;
        }
        x += 1;
        if x == wide {
            x = 0;
            y += 1;
        }
    }
    debug_assert!(y * wide + x == cols);
}

// SAFETY: an OutView is only a base pointer; the drivers hand disjoint row ranges of one
// output buffer to different threads, so no element is written by two threads.
unsafe impl Send for OutView {}
// SAFETY: as above.
unsafe impl Sync for OutView {}

impl OutView {
    /// The view with its origin moved down `rows` rows.
    pub(crate) fn offset_rows(self, rows: usize) -> OutView {
        let size = if self.kind == OutKind::I32 { 4 } else { 1 };
        OutView {
            // SAFETY of the arithmetic is the caller's: the drivers only offset to rows
            // inside the output buffer. wrapping_add keeps this function safe.
            ptr: self.ptr.wrapping_add(rows * self.ld * size),
            ..self
        }
    }
}

/// An epilogue engine: `(tile, nr, vr, vc, r0, c0, steps, out)` — the raw tile is `[..][nr]`
/// i32 with `vr x vc` valid values for rows `r0..` and columns `c0..`.
pub(crate) type EpiFn = unsafe fn(&mut [i32], usize, usize, usize, usize, usize, &[Step], &OutView);

/// The scalar epilogue (the reference).
///
/// # Safety
/// `out` covers rows `r0..r0 + vr` and columns `c0..c0 + vc`; the step arrays cover the
/// same rows and columns (checked by the drivers).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn epilogue_portable(
    tile: &mut [i32],
    nr: usize,
    vr: usize,
    vc: usize,
    r0: usize,
    c0: usize,
    steps: &[Step],
    out: &OutView,
) {
    for i in 0..vr {
        let r = r0 + i;
        for j in 0..vc {
            let c = c0 + j;
            let mut v = tile[i * nr + j];
            for s in steps {
                v = match *s {
                    Step::AddRow(a) => v.wrapping_add(a[r]),
                    Step::AddCol(a) => v.wrapping_add(a[c]),
                    Step::SubRowCol(a, b) => v.wrapping_sub(a[r].wrapping_mul(b[c])),
                    Step::Clamp(lo, hi) => v.clamp(lo, hi),
                    Step::Requant(q, axis, off) => {
                        let ch = q.idx(off + if axis == Axis::Row { r } else { c });
                        requant_scalar(
                            v,
                            q.mult[ch],
                            q.tsh[ch] as u32,
                            q.zp,
                            q.lo,
                            q.hi,
                            q.rounding,
                        )
                    }
                };
            }
            let o = if out.remap.is_null() {
                r * out.ld + c
            } else {
                // SAFETY: the table covers every vector of the contraction's columns.
                let m = unsafe { *out.remap.add(c / 16) };
                let bit = 1u16 << (c % 16);
                if m.mask & bit == 0 {
                    continue;
                }
                r * out.ld + m.pos as usize + (m.mask & (bit - 1)).count_ones() as usize
            };
            // SAFETY: element (r, c) is inside the output (caller's contract).
            unsafe {
                match out.kind {
                    OutKind::I32 => *out.ptr.cast::<i32>().add(o) = v,
                    OutKind::I8 | OutKind::U8 => *out.ptr.add(o) = v as u8,
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::epilogue_avx512;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Axis, OutKind, OutView, Step};
    use crate::requant::{Requant, Rounding};

    /// Rounding constants of 16 lanes, hoisted out of the loops over the tile.
    #[derive(Clone, Copy)]
    struct Rq {
        m: __m512i,
        mo: __m512i,
        te: __m512i,
        to: __m512i,
        half_e: __m512i,
        half_o: __m512i,
        nz_e: __mmask8,
        nz_o: __mmask8,
        lo: __m512i,
        hi: __m512i,
        zp: __m512i,
        even: bool,
    }

    impl Rq {
        /// The constants of channel `ch` of `q` in all lanes.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn channel(q: &Requant, ch: usize) -> Rq {
            Rq::new(
                _mm512_set1_epi32(q.mult[ch]),
                _mm512_set1_epi32(q.tsh[ch]),
                q,
            )
        }

        /// From per-lane multipliers `m` and total shifts `t` (`[0, 62]`).
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn new(m: __m512i, t: __m512i, q: &Requant) -> Rq {
            let one = _mm512_set1_epi64(1);
            let te = _mm512_and_si512(t, _mm512_set1_epi64(0xffff_ffff));
            let to = _mm512_srli_epi64(t, 32);
            Rq {
                m,
                mo: _mm512_srli_epi64(m, 32),
                te,
                to,
                half_e: _mm512_srli_epi64(_mm512_sllv_epi64(one, te), 1),
                half_o: _mm512_srli_epi64(_mm512_sllv_epi64(one, to), 1),
                nz_e: _mm512_test_epi64_mask(te, te),
                nz_o: _mm512_test_epi64_mask(to, to),
                lo: _mm512_set1_epi64((q.lo - q.zp) as i64),
                hi: _mm512_set1_epi64((q.hi - q.zp) as i64),
                zp: _mm512_set1_epi32(q.zp),
                even: q.rounding == Rounding::HalfEven,
            }
        }

        /// `clamp(round(p / 2^t), lo, hi)` on 8 i64 lanes, rounding half to even if `EVEN`
        /// (which must be `self.even`), else half away from zero: `t = 0` lanes are not
        /// rounded (half is 0 there and the adjustments are masked off).
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn round8_as<const EVEN: bool>(
            &self,
            p: __m512i,
            t: __m512i,
            half: __m512i,
            nz: __mmask8,
        ) -> __m512i {
            let bias = if EVEN {
                // half - 1 + (floor(p / 2^t) & 1)
                let one = _mm512_set1_epi64(1);
                let odd = _mm512_and_si512(_mm512_srav_epi64(p, t), one);
                _mm512_mask_add_epi64(half, nz, half, _mm512_sub_epi64(odd, one))
            } else {
                // half, minus 1 below zero
                _mm512_mask_add_epi64(half, nz, half, _mm512_srai_epi64(p, 63))
            };
            let q = _mm512_srav_epi64(_mm512_add_epi64(p, bias), t);
            _mm512_min_epi64(_mm512_max_epi64(q, self.lo), self.hi)
        }

        /// The requantized 16 lanes of `acc`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn apply(&self, acc: __m512i) -> __m512i {
            if self.even {
                self.apply_as::<true>(acc)
            } else {
                self.apply_as::<false>(acc)
            }
        }

        /// [`Rq::apply`] with the rounding mode fixed at compile time (`EVEN` must be
        /// `self.even`), for loops that dispatch on it once.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn apply_as<const EVEN: bool>(&self, acc: __m512i) -> __m512i {
            debug_assert_eq!(EVEN, self.even);
            // even lanes: the low dword of each qword; odd lanes: the high dword
            let pe = _mm512_mul_epi32(acc, self.m);
            let po = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), self.mo);
            let re = self.round8_as::<EVEN>(pe, self.te, self.half_e, self.nz_e);
            let ro = self.round8_as::<EVEN>(po, self.to, self.half_o, self.nz_o);
            let r = _mm512_mask_blend_epi32(0xaaaa, re, _mm512_slli_epi64(ro, 32));
            _mm512_add_epi32(r, self.zp)
        }
    }

    #[inline(always)]
    fn mask_of(n: usize) -> __mmask16 {
        if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
    }

    /// Stores 16 lanes (the first `n` of them) at row `r`, column `c` (a multiple of 16) of
    /// the output.
    ///
    /// # Safety
    /// The elements are inside the output (remapped if the view has a table).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
    unsafe fn store16(out: &OutView, r: usize, c: usize, n: usize, v: __m512i) {
        // SAFETY: the caller's contract.
        unsafe {
            if out.remap.is_null() {
                // fall through to the plain stores below
            } else if matches!(out.kind, OutKind::I8 | OutKind::U8) {
                // narrow first, then pack the valid bytes to the front with one byte
                // shuffle (vpcompressd is slow on Zen 4); a full 16-byte store is safe
                // when it stays inside the row, whose later bytes the next vectors
                // rewrite (columns are stored in increasing order); otherwise masked
                let m = *out.remap.add(c / 16);
                let mask = m.mask & mask_of(n);
                let b = _mm512_cvtepi32_epi8(v);
                let (pos, cnt) = (m.pos as usize, mask.count_ones() as usize);
                let p = out.ptr.add(r * out.ld + pos);
                if mask == 0xffff {
                    _mm_storeu_si128(p.cast(), b);
                } else if mask != 0 {
                    let packed = _mm_shuffle_epi8(b, _mm_loadu_si128(m.shuf.as_ptr().cast()));
                    if pos + 16 <= out.ld {
                        _mm_storeu_si128(p.cast(), packed);
                    } else {
                        _mm_mask_storeu_epi8(p.cast(), mask_of(cnt), packed);
                    }
                }
                return;
            }
            let (o, n, v) = if out.remap.is_null() {
                (r * out.ld + c, n, v)
            } else {
                let m = *out.remap.add(c / 16);
                let mask = m.mask & mask_of(n);
                if mask == 0xffff {
                    (r * out.ld + m.pos as usize, 16, v)
                } else {
                    (
                        r * out.ld + m.pos as usize,
                        mask.count_ones() as usize,
                        _mm512_maskz_compress_epi32(mask, v),
                    )
                }
            };
            // full vectors with plain stores: the memory forms of the narrowing and masked
            // stores are slow on some cores (vpmovdb m128{k} is microcoded on Zen 4)
            match (out.kind, n >= 16) {
                (OutKind::I32, true) => _mm512_storeu_si512(out.ptr.cast::<i32>().add(o).cast(), v),
                (OutKind::I32, false) => {
                    _mm512_mask_storeu_epi32(out.ptr.cast::<i32>().add(o), mask_of(n), v)
                }
                (OutKind::I8 | OutKind::U8, true) => {
                    _mm_storeu_si128(out.ptr.add(o).cast(), _mm512_cvtepi32_epi8(v))
                }
                (OutKind::I8 | OutKind::U8, false) => {
                    _mm_mask_storeu_epi8(out.ptr.add(o).cast(), mask_of(n), _mm512_cvtepi32_epi8(v))
                }
            }
        }
    }

    /// The requantize constants of one channel whose total shift `t` is at least 32, for
    /// all 16 lanes. Then `|acc * M| < 2^62` gives `|round(acc * M / 2^t)| < 2^30`: the
    /// result fits the low half of its 64-bit lane, so the clamp runs once on 16 i32 lanes
    /// after the zero point instead of twice on 8 i64 lanes before it, and (`t > 0`) the
    /// rounding addend needs no mask for unshifted lanes. Same results as [`Rq`] (the same
    /// formula; `clamp(q, lo - zp, hi - zp) + zp == clamp(q + zp, lo, hi)` without overflow).
    #[derive(Clone, Copy)]
    struct Rq32 {
        m: __m512i,
        t: __m512i,
        /// `2^(t-1) - 1` (half to even, plus the bit below the cut) or `2^(t-1)` (half away
        /// from zero, minus one below zero).
        add: __m512i,
        one: __m512i,
        zp: __m512i,
        lo: __m512i,
        hi: __m512i,
    }

    impl Rq32 {
        /// The constants of channel `ch` of `q`, if its total shift is at least 32.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn channel<const EVEN: bool>(q: &Requant, ch: usize) -> Option<Rq32> {
            let t = q.tsh[ch];
            if t < 32 {
                return None;
            }
            let half = 1i64 << (t - 1);
            Some(Rq32 {
                m: _mm512_set1_epi32(q.mult[ch]),
                t: _mm512_set1_epi64(t as i64),
                add: _mm512_set1_epi64(if EVEN { half - 1 } else { half }),
                one: _mm512_set1_epi64(1),
                zp: _mm512_set1_epi32(q.zp),
                lo: _mm512_set1_epi32(q.lo),
                hi: _mm512_set1_epi32(q.hi),
            })
        }

        /// `round(p / 2^t)` on 8 i64 lanes.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn round8<const EVEN: bool>(&self, p: __m512i) -> __m512i {
            let bias = if EVEN {
                // bit t of p: the parity of floor(p / 2^t)
                let odd = _mm512_and_si512(_mm512_srlv_epi64(p, self.t), self.one);
                _mm512_add_epi64(self.add, odd)
            } else {
                _mm512_add_epi64(self.add, _mm512_srai_epi64(p, 63))
            };
            _mm512_srav_epi64(_mm512_add_epi64(p, bias), self.t)
        }

        /// The requantized 16 lanes of `acc`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn apply<const EVEN: bool>(&self, acc: __m512i) -> __m512i {
            let pe = _mm512_mul_epi32(acc, self.m);
            let po = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), self.m);
            let re = self.round8::<EVEN>(pe);
            let ro = self.round8::<EVEN>(po);
            let r = _mm512_mask_blend_epi32(0xaaaa, re, _mm512_slli_epi64(ro, 32));
            _mm512_min_epi32(
                _mm512_max_epi32(_mm512_add_epi32(r, self.zp), self.lo),
                self.hi,
            )
        }
    }

    /// The final requantize of `vr` tile rows into an 8-bit output, with at most a per-row
    /// add before it: the rounding mode (`EVEN`) and the wide-column remap (`REMAP`, the
    /// view has a table) fixed at compile time, so that the loop over a row's vectors is
    /// straight-line code (the general loop decided both per vector); a row whose channel
    /// shifts by 32 or more takes [`Rq32`].
    ///
    /// # Safety
    /// As [`epilogue_avx512`], with `out.kind` I8 or U8, `EVEN == (q.rounding ==
    /// HalfEven)` and `REMAP == !out.remap.is_null()`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
    unsafe fn requant_rows8<const EVEN: bool, const REMAP: bool>(
        tile: *const i32,
        nr: usize,
        (vr, vc): (usize, usize),
        (r0, c0): (usize, usize),
        add: Option<&[i32]>,
        (q, off): (&Requant, usize),
        out: &OutView,
    ) {
        let nv = vc.div_ceil(16);
        let mut rq = Rq::channel(q, 0);
        let mut rq32 = Rq32::channel::<EVEN>(q, 0);
        // SAFETY: tile rows i < vr hold nv vectors; the stores are as `store_row` needs.
        unsafe {
            for i in 0..vr {
                if q.mult.len() > 1 {
                    let ch = off + r0 + i;
                    rq32 = Rq32::channel::<EVEN>(q, ch);
                    if rq32.is_none() {
                        rq = Rq::channel(q, ch);
                    }
                }
                let b = add.map_or(_mm512_setzero_si512(), |a| _mm512_set1_epi32(a[r0 + i]));
                let row = out.ptr.add((r0 + i) * out.ld);
                let src = tile.add(i * nr);
                match rq32 {
                    Some(r) => {
                        store_row::<REMAP>(src, nv, (vc, c0), b, row, out, |v| r.apply::<EVEN>(v))
                    }
                    None => store_row::<REMAP>(src, nv, (vc, c0), b, row, out, |v| {
                        rq.apply_as::<EVEN>(v)
                    }),
                }
            }
        }
    }

    /// One row of [`requant_rows8`]: `nv` vectors from `src`, plus `b`, through `apply`,
    /// narrowed and stored into output row `row`.
    ///
    /// # Safety
    /// As [`requant_rows8`]: output element `(row, c0 + 16 jv + l)` for valid lanes `l` is
    /// inside the view (through the table if REMAP), and a full 16-byte store past the
    /// last valid byte stays inside the row (checked) and is rewritten by the next vector,
    /// as in `store16`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
    unsafe fn store_row<const REMAP: bool>(
        src: *const i32,
        nv: usize,
        (vc, c0): (usize, usize),
        b: __m512i,
        row: *mut u8,
        out: &OutView,
        apply: impl Fn(__m512i) -> __m512i,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            for jv in 0..nv {
                let v = _mm512_add_epi32(_mm512_loadu_si512(src.add(16 * jv).cast()), b);
                let bytes = _mm512_cvtepi32_epi8(apply(v));
                let n = vc - 16 * jv;
                if REMAP {
                    let m = *out.remap.add(c0 / 16 + jv);
                    let mask = m.mask & mask_of(n);
                    let p = row.add(m.pos as usize);
                    if mask == 0xffff {
                        _mm_storeu_si128(p.cast(), bytes);
                    } else if mask != 0 {
                        let shuf = _mm_loadu_si128(m.shuf.as_ptr().cast());
                        let packed = _mm_shuffle_epi8(bytes, shuf);
                        if m.pos as usize + 16 <= out.ld {
                            _mm_storeu_si128(p.cast(), packed);
                        } else {
                            let cnt = mask.count_ones() as usize;
                            _mm_mask_storeu_epi8(p.cast(), mask_of(cnt), packed);
                        }
                    }
                } else if n >= 16 {
                    _mm_storeu_si128(row.add(c0 + 16 * jv).cast(), bytes);
                } else {
                    _mm_mask_storeu_epi8(row.add(c0 + 16 * jv).cast(), mask_of(n), bytes);
                }
            }
        }
    }

    /// The AVX-512 epilogue: one pass over the tile per step (constants hoisted out of the
    /// loops), the final requantize fused with the store.
    ///
    /// # Safety
    /// As [`super::epilogue_portable`], and AVX-512 F/BW/VL are available; `nr` is a
    /// multiple of 16 and the tile holds `vr` rows of `nr`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
    pub(crate) unsafe fn epilogue_avx512(
        tile: &mut [i32],
        nr: usize,
        vr: usize,
        vc: usize,
        r0: usize,
        c0: usize,
        steps: &[Step],
        out: &OutView,
    ) {
        let nv = vc.div_ceil(16);
        assert!(tile.len() >= vr * nr && nv * 16 <= nr);
        let tp = tile.as_mut_ptr();
        // SAFETY (every access below): tile element (i, 16 jv + lane) for i < vr and
        // jv < nv is inside the tile (asserted); parameter arrays are read with masks at
        // columns c0 + 16 jv.. (valid lanes only) or at rows r0 + i < r0 + vr (covered
        // by the drivers); output elements are inside the view (caller's contract).
        let at = |i: usize, jv: usize| unsafe { tp.add(i * nr + jv * 16) };
        let (body, last) = match steps.split_last() {
            Some((Step::Requant(q, axis, off), body)) => (body, Some((*q, *axis, *off))),
            _ => (steps, None),
        };
        // a per-row or per-column add just before the store is applied on the way out
        let (body, add) = match body.split_last() {
            Some((a @ (Step::AddRow(_) | Step::AddCol(_)), rest)) => (rest, Some(*a)),
            _ => (body, None),
        };
        // SAFETY: see above; every intrinsic needs only AVX-512 F/BW/VL, enabled here.
        unsafe {
            for s in body {
                match *s {
                    Step::AddRow(a) => {
                        for i in 0..vr {
                            let b = _mm512_set1_epi32(a[r0 + i]);
                            for jv in 0..nv {
                                let p = at(i, jv);
                                _mm512_storeu_si512(
                                    p.cast(),
                                    _mm512_add_epi32(_mm512_loadu_si512(p.cast()), b),
                                );
                            }
                        }
                    }
                    Step::AddCol(a) => {
                        for jv in 0..nv {
                            let m = mask_of(vc - 16 * jv);
                            let b = _mm512_maskz_loadu_epi32(m, a.as_ptr().add(c0 + 16 * jv));
                            for i in 0..vr {
                                let p = at(i, jv);
                                _mm512_storeu_si512(
                                    p.cast(),
                                    _mm512_add_epi32(_mm512_loadu_si512(p.cast()), b),
                                );
                            }
                        }
                    }
                    Step::SubRowCol(a, b) => {
                        for jv in 0..nv {
                            let m = mask_of(vc - 16 * jv);
                            let bc = _mm512_maskz_loadu_epi32(m, b.as_ptr().add(c0 + 16 * jv));
                            for i in 0..vr {
                                let p = at(i, jv);
                                let d = _mm512_mullo_epi32(_mm512_set1_epi32(a[r0 + i]), bc);
                                _mm512_storeu_si512(
                                    p.cast(),
                                    _mm512_sub_epi32(_mm512_loadu_si512(p.cast()), d),
                                );
                            }
                        }
                    }
                    Step::Clamp(lo, hi) => {
                        let (lo, hi) = (_mm512_set1_epi32(lo), _mm512_set1_epi32(hi));
                        for i in 0..vr {
                            for jv in 0..nv {
                                let p = at(i, jv);
                                let v = _mm512_min_epi32(
                                    _mm512_max_epi32(_mm512_loadu_si512(p.cast()), lo),
                                    hi,
                                );
                                _mm512_storeu_si512(p.cast(), v);
                            }
                        }
                    }
                    Step::Requant(..) => unreachable!("validated: requantize is the last step"),
                }
            }
            // the tile value (i, jv) with the fused add
            let val = |i: usize, jv: usize| {
                let v = _mm512_loadu_si512(at(i, jv).cast());
                match add {
                    None => v,
                    Some(Step::AddRow(a)) => _mm512_add_epi32(v, _mm512_set1_epi32(a[r0 + i])),
                    Some(Step::AddCol(a)) => _mm512_add_epi32(
                        v,
                        _mm512_maskz_loadu_epi32(
                            mask_of(vc - 16 * jv),
                            a.as_ptr().add(c0 + 16 * jv),
                        ),
                    ),
                    Some(_) => unreachable!("only adds are fused"),
                }
            };
            match last {
                // i32 rows with at most a per-row add (the accumulators a fused pool reads):
                // one load, add and store per vector, the tail masked
                None if out.kind == OutKind::I32
                    && out.remap.is_null()
                    && matches!(add, None | Some(Step::AddRow(_))) =>
                {
                    let full = vc / 16;
                    let tail = mask_of(vc % 16);
                    for i in 0..vr {
                        let b = match add {
                            Some(Step::AddRow(a)) => _mm512_set1_epi32(a[r0 + i]),
                            _ => _mm512_setzero_si512(),
                        };
                        let o = out.ptr.cast::<i32>().add((r0 + i) * out.ld + c0);
                        for jv in 0..full {
                            let v = _mm512_add_epi32(_mm512_loadu_si512(at(i, jv).cast()), b);
                            _mm512_storeu_si512(o.add(16 * jv).cast(), v);
                        }
                        if tail != 0 {
                            let v = _mm512_add_epi32(_mm512_loadu_si512(at(i, full).cast()), b);
                            _mm512_mask_storeu_epi32(o.add(16 * full), tail, v);
                        }
                    }
                }
                None => {
                    for i in 0..vr {
                        for jv in 0..nv {
                            store16(out, r0 + i, c0 + 16 * jv, vc - 16 * jv, val(i, jv));
                        }
                    }
                }
                Some((q, axis, off))
                    if (q.mult.len() == 1 || axis == Axis::Row)
                        && out.kind != OutKind::I32
                        && matches!(add, None | Some(Step::AddRow(_))) =>
                {
                    let add = match add {
                        Some(Step::AddRow(a)) => Some(a),
                        _ => None,
                    };
                    let args = (tp.cast_const(), nr, (vr, vc), (r0, c0), add, (q, off), out);
                    let (tp, nr, dims, orig, add, q, out) = args;
                    match (q.0.rounding == Rounding::HalfEven, !out.remap.is_null()) {
                        (true, true) => {
                            requant_rows8::<true, true>(tp, nr, dims, orig, add, q, out)
                        }
                        (true, false) => {
                            requant_rows8::<true, false>(tp, nr, dims, orig, add, q, out)
                        }
                        (false, true) => {
                            requant_rows8::<false, true>(tp, nr, dims, orig, add, q, out)
                        }
                        (false, false) => {
                            requant_rows8::<false, false>(tp, nr, dims, orig, add, q, out)
                        }
                    }
                }
                Some((q, axis, off)) if q.mult.len() == 1 || axis == Axis::Row => {
                    let mut rq = Rq::channel(q, 0);
                    for i in 0..vr {
                        if q.mult.len() > 1 {
                            rq = Rq::channel(q, off + r0 + i);
                        }
                        for jv in 0..nv {
                            store16(
                                out,
                                r0 + i,
                                c0 + 16 * jv,
                                vc - 16 * jv,
                                rq.apply(val(i, jv)),
                            );
                        }
                    }
                }
                Some((q, _, off)) => {
                    for jv in 0..nv {
                        let m = mask_of(vc - 16 * jv);
                        let ch = off + c0 + 16 * jv;
                        let rq = Rq::new(
                            _mm512_maskz_loadu_epi32(m, q.mult.as_ptr().add(ch)),
                            _mm512_maskz_loadu_epi32(m, q.tsh.as_ptr().add(ch)),
                            q,
                        );
                        for i in 0..vr {
                            store16(
                                out,
                                r0 + i,
                                c0 + 16 * jv,
                                vc - 16 * jv,
                                rq.apply(val(i, jv)),
                            );
                        }
                    }
                }
            }
        }
    }
}
