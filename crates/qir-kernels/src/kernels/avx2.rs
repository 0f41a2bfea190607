//! The AVX2 tile kernel: two rows by one panel. Bytes are widened to i16 and multiplied
//! with `vpmaddwd` (each i32 lane gets two exact products; `vpmaddubsw` is not used because
//! it saturates its 16-bit pair sums). A panel group of 64 bytes (16 columns x 4 k) becomes
//! four vectors of 4 columns x 4 k; the L row's 4 values are broadcast as 4 i16 to every
//! 64-bit lane, so each i32 lane holds a partial sum over 2 of a column's 4 k values, and
//! a horizontal add at the end joins the two halves. The epilogue is the portable one.

use std::arch::x86_64::*;

use super::{Kernels, TileFn};
use crate::epilogue::epilogue_portable;

const MR: usize = 2;

/// # Safety
/// AVX2 is available; the operand ranges are as in [`super`]'s invariants (one panel).
#[target_feature(enable = "avx2")]
unsafe fn tile<const LU: bool>(
    l: *const u8,
    ls: usize,
    r: *const u8,
    _rs: usize,
    kg: usize,
    out: *mut i32,
) {
    let mut acc = [[_mm256_setzero_si256(); 4]; MR];
    for g in 0..kg {
        let mut w = [_mm256_setzero_si256(); 4];
        for (q, w) in w.iter_mut().enumerate() {
            // SAFETY: 16 of the group's 64 panel bytes.
            let x = unsafe { _mm_loadu_si128(r.add(g * 64 + q * 16).cast()) };
            *w = if LU {
                _mm256_cvtepi8_epi16(x)
            } else {
                _mm256_cvtepu8_epi16(x)
            };
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: 4 bytes of row `i` at k = 4g.
            let a4 = unsafe { l.add(i * ls + 4 * g).cast::<i32>().read_unaligned() };
            let a = _mm_cvtsi32_si128(a4);
            let a = if LU {
                _mm_cvtepu8_epi16(a)
            } else {
                _mm_cvtepi8_epi16(a)
            };
            let a = _mm256_broadcastq_epi64(a);
            for q in 0..4 {
                acc[q] = _mm256_add_epi32(acc[q], _mm256_madd_epi16(a, w[q]));
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        // lanes of acc[q]: (c0 k01, c0 k23, c1 k01, c1 k23 | c2.., c3..) for columns 4q..4q+4
        let lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[0], acc[1]), 0b11_01_10_00);
        let hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[2], acc[3]), 0b11_01_10_00);
        // SAFETY: row `i` of the [MR][16] output.
        unsafe {
            _mm256_storeu_si256(out.add(i * 16).cast(), lo);
            _mm256_storeu_si256(out.add(i * 16 + 8).cast(), hi);
        }
    }
}

static LIN: [TileFn; 1] = [tile::<true>];
static CONV: [TileFn; 1] = [tile::<false>];

pub(crate) fn kernels(lu: bool) -> Kernels {
    Kernels {
        strided: None,
        pool2: None,
        mr: MR,
        tiles: if lu { &LIN } else { &CONV },
        kalign: 4,
        epi: epilogue_portable,
        amx_hw: false,
    }
}
