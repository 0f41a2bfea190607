//! The AVX-512 VNNI tile kernels: `MR` rows by `NV` panels of 16 columns, the accumulators
//! in registers (`MR * NV <= 24`), one `vpdpbusd` per row, panel and group of 4 k. The L
//! row's 4 bytes are broadcast to all lanes; the panel group is one 64-byte load. The
//! unsigned operand of `vpdpbusd` is L for a linear layer and R for a convolution.
//!
//! Tile shapes by number of rows: 1 row (a GEMV: 1 x 4 panels), up to 4 rows (4 x 4), one
//! panel (16 x 1), else 8 x 3. Every `MR` divides 32, the row padding of packed weights.

use std::arch::x86_64::*;

use super::{Kernels, StridedTileFn, TileFn};
use crate::epilogue::epilogue_avx512;

/// # Safety
/// AVX-512 F/BW/VNNI are available; the operand ranges are as in [`super`]'s invariants.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const MR: usize, const NV: usize, const LU: bool>(
    l: *const u8,
    ls: usize,
    r: *const u8,
    rs: usize,
    kg: usize,
    out: *mut i32,
) {
    // SAFETY: the dense [MR][16 NV] output is the strided one with stride 16 NV.
    unsafe { tile_strided::<MR, NV, LU>(l, ls, r, rs, kg, out, 16 * NV) }
}

/// The accumulators of an `MR` x `NV` tile (see the module doc).
///
/// # Safety
/// As [`tile`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn accumulate<const MR: usize, const NV: usize, const LU: bool>(
    l: *const u8,
    ls: usize,
    r: *const u8,
    rs: usize,
    kg: usize,
) -> [[__m512i; NV]; MR] {
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    for g in 0..kg {
        let mut b = [_mm512_setzero_si512(); NV];
        for (j, b) in b.iter_mut().enumerate() {
            // SAFETY: group g of panel j.
            *b = unsafe { _mm512_loadu_si512(r.add(j * rs + g * 64).cast()) };
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: 4 bytes of row i at k = 4g.
            let a =
                _mm512_set1_epi32(unsafe { l.add(i * ls + 4 * g).cast::<i32>().read_unaligned() });
            for (acc, &b) in acc.iter_mut().zip(&b) {
                *acc = if LU {
                    _mm512_dpbusd_epi32(*acc, a, b)
                } else {
                    _mm512_dpbusd_epi32(*acc, b, a)
                };
            }
        }
    }
    acc
}

/// [`tile`] storing row `i` at `out + i * ldo`.
///
/// # Safety
/// As [`tile`], and `out` has `MR` rows of `16 * NV` writable i32 every `ldo`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_strided<const MR: usize, const NV: usize, const LU: bool>(
    l: *const u8,
    ls: usize,
    r: *const u8,
    rs: usize,
    kg: usize,
    out: *mut i32,
    ldo: usize,
) {
    // SAFETY: the caller's contract.
    let acc = unsafe { accumulate::<MR, NV, LU>(l, ls, r, rs, kg) };
    for (i, acc) in acc.iter().enumerate() {
        for (j, &v) in acc.iter().enumerate() {
            // SAFETY: element (i, 16j) of the output (row stride ldo).
            unsafe { _mm512_storeu_si512(out.add(i * ldo + j * 16).cast(), v) };
        }
    }
}

/// `MR` rows by 2 panels, then per row the maximum of the two panels' accumulators lane
/// by lane and of each lane pair `(2 i, 2 i + 1)`, the 8 results stored at `out + i * ldo`
/// (see [`Kernels::pool2`]); L is signed (a convolution's weight rows), R unsigned.
///
/// # Safety
/// As [`tile`] with 2 panels, and `out` has `MR` rows of 8 writable i32 every `ldo`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_pool2<const MR: usize>(
    l: *const u8,
    ls: usize,
    r: *const u8,
    rs: usize,
    kg: usize,
    out: *mut i32,
    ldo: usize,
) {
    // SAFETY: the caller's contract.
    let acc = unsafe { accumulate::<MR, 2, false>(l, ls, r, rs, kg) };
    for (i, [a0, a1]) in acc.into_iter().enumerate() {
        // the window rows, then the lane pairs: each 64-bit lane's low half gets the
        // maximum of its two halves, and the narrowing keeps the low halves
        let v = _mm512_max_epi32(a0, a1);
        let h = _mm512_max_epi32(v, _mm512_srli_epi64(v, 32));
        // SAFETY: row i of the output (row stride ldo), 8 values.
        unsafe { _mm256_storeu_si256(out.add(i * ldo).cast(), _mm512_cvtepi64_epi32(h)) };
    }
}

macro_rules! set {
    ($name:ident, $mr:literal, $lu:literal, [$($nv:literal),*]) => {
        static $name: [TileFn; [$($nv),*].len()] = [$(tile::<$mr, $nv, $lu>),*];
    };
}

macro_rules! strided {
    ($name:ident, $mr:literal, [$($nv:literal),*]) => {
        static $name: [StridedTileFn; [$($nv),*].len()] =
            [$(tile_strided::<$mr, $nv, false>),*];
    };
}
strided!(S1, 1, [1, 2, 3, 4]);
strided!(S4, 4, [1, 2, 3, 4]);
strided!(S8, 8, [1, 2, 3]);
strided!(S16, 16, [1]);
set!(L1, 1, true, [1, 2, 3, 4]);
set!(L4, 4, true, [1, 2, 3, 4]);
set!(L8, 8, true, [1, 2, 3]);
set!(L16, 16, true, [1]);
set!(C1, 1, false, [1, 2, 3, 4]);
set!(C4, 4, false, [1, 2, 3, 4]);
set!(C8, 8, false, [1, 2, 3]);
set!(C16, 16, false, [1]);

pub(crate) fn kernels(lu: bool, rows: usize, panels: usize) -> Kernels {
    let (mr, tiles): (usize, &'static [TileFn]) = match (rows, panels, lu) {
        (0..=1, _, true) => (1, &L1),
        (0..=1, _, false) => (1, &C1),
        (2..=4, _, true) => (4, &L4),
        (2..=4, _, false) => (4, &C4),
        (_, 1, true) => (16, &L16),
        (_, 1, false) => (16, &C16),
        (_, _, true) => (8, &L8),
        (_, _, false) => (8, &C8),
    };
    // strided tiles for convolutions (weights as rows), the same shapes
    let strided: Option<&'static [StridedTileFn]> = match (lu, mr) {
        (true, _) => None,
        (false, 1) => Some(&S1),
        (false, 4) => Some(&S4),
        (false, 16) => Some(&S16),
        (false, _) => Some(&S8),
    };
    Kernels {
        mr,
        tiles,
        strided,
        pool2: Some(tile_pool2::<{ super::POOL2_MR }>),
        kalign: 4,
        epi: epilogue_avx512,
        amx_hw: false,
    }
}
