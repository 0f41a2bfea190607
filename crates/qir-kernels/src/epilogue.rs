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
/// is at `ptr + (r * ld + c) * size`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutView {
    pub(crate) ptr: *mut u8,
    pub(crate) ld: usize,
    pub(crate) kind: OutKind,
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
            let o = r * out.ld + c;
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

    /// Requantize 16 lanes: `acc` with per-lane multipliers `m` and total shifts `t`.
    #[inline(always)]
    unsafe fn requant16(acc: __m512i, m: __m512i, t: __m512i, q: &Requant) -> __m512i {
        // SAFETY (all intrinsics): AVX-512 F/BW is enabled in the calling function.
        unsafe {
            let lo32 = _mm512_set1_epi64(0xffff_ffff);
            let one = _mm512_set1_epi64(1);
            let lo = _mm512_set1_epi64((q.lo - q.zp) as i64);
            let hi = _mm512_set1_epi64((q.hi - q.zp) as i64);
            let round = |p: __m512i, t: __m512i| -> __m512i {
                // t = 0 lanes: no rounding (half = 0, adjustments masked off)
                let nz = _mm512_test_epi64_mask(t, t);
                let half = _mm512_srli_epi64(_mm512_sllv_epi64(one, t), 1);
                let bias = match q.rounding {
                    Rounding::HalfAwayFromZero => {
                        // half - 1 below zero
                        _mm512_mask_add_epi64(half, nz, half, _mm512_srai_epi64(p, 63))
                    }
                    Rounding::HalfEven => {
                        let odd = _mm512_and_si512(_mm512_srav_epi64(p, t), one);
                        let adj = _mm512_sub_epi64(odd, one);
                        _mm512_mask_add_epi64(half, nz, half, adj)
                    }
                };
                let r = _mm512_srav_epi64(_mm512_add_epi64(p, bias), t);
                _mm512_min_epi64(_mm512_max_epi64(r, lo), hi)
            };
            // even lanes: the low dword of each qword; odd lanes: the high dword
            let pe = _mm512_mul_epi32(acc, m);
            let po = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), _mm512_srli_epi64(m, 32));
            let re = round(pe, _mm512_and_si512(t, lo32));
            let ro = round(po, _mm512_srli_epi64(t, 32));
            let r = _mm512_mask_blend_epi32(0xaaaa, re, _mm512_slli_epi64(ro, 32));
            _mm512_add_epi32(r, _mm512_set1_epi32(q.zp))
        }
    }

    /// The AVX-512 epilogue: 16 columns at a time, masked at the right edge.
    ///
    /// # Safety
    /// As [`super::epilogue_portable`], and AVX-512 F/BW/VL are available.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
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
        for i in 0..vr {
            let r = r0 + i;
            let mut j = 0;
            while j < vc {
                let c = c0 + j;
                let n = (vc - j).min(16);
                let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
                // SAFETY: columns j..j+16 of tile row i are inside the tile (nr is a
                // multiple of 16); the masked loads touch only valid parameter entries.
                unsafe {
                    let mut v = _mm512_loadu_si512(tile.as_ptr().add(i * nr + j).cast());
                    for s in steps {
                        v = match *s {
                            Step::AddRow(a) => _mm512_add_epi32(v, _mm512_set1_epi32(a[r])),
                            Step::AddCol(a) => _mm512_add_epi32(
                                v,
                                _mm512_maskz_loadu_epi32(mask, a.as_ptr().add(c)),
                            ),
                            Step::SubRowCol(a, b) => {
                                let p = _mm512_mullo_epi32(
                                    _mm512_set1_epi32(a[r]),
                                    _mm512_maskz_loadu_epi32(mask, b.as_ptr().add(c)),
                                );
                                _mm512_sub_epi32(v, p)
                            }
                            Step::Clamp(lo, hi) => _mm512_min_epi32(
                                _mm512_max_epi32(v, _mm512_set1_epi32(lo)),
                                _mm512_set1_epi32(hi),
                            ),
                            Step::Requant(q, axis, off) => {
                                let (m, t) = if q.mult.len() == 1 {
                                    (_mm512_set1_epi32(q.mult[0]), _mm512_set1_epi32(q.tsh[0]))
                                } else if axis == Axis::Row {
                                    (
                                        _mm512_set1_epi32(q.mult[off + r]),
                                        _mm512_set1_epi32(q.tsh[off + r]),
                                    )
                                } else {
                                    (
                                        _mm512_maskz_loadu_epi32(
                                            mask,
                                            q.mult.as_ptr().add(off + c),
                                        ),
                                        _mm512_maskz_loadu_epi32(mask, q.tsh.as_ptr().add(off + c)),
                                    )
                                };
                                requant16(v, m, t, q)
                            }
                        };
                    }
                    let o = r * out.ld + c;
                    match out.kind {
                        OutKind::I32 => {
                            _mm512_mask_storeu_epi32(out.ptr.cast::<i32>().add(o), mask, v)
                        }
                        OutKind::I8 | OutKind::U8 => _mm_mask_storeu_epi8(
                            out.ptr.add(o).cast(),
                            mask,
                            _mm512_cvtepi32_epi8(v),
                        ),
                    }
                }
                j += 16;
            }
        }
    }
}
