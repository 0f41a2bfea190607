//! The portable tile kernel: plain Rust over the shared layouts, the reference every other
//! path is compared with. Four rows by one panel per tile.

use super::{Kernels, TileFn};
use crate::epilogue::epilogue_portable;

const MR: usize = 4;

/// # Safety
/// `l` has `MR` rows of `ls` bytes with at least `4 * kg` readable bytes each; `r` has one
/// panel of `64 * kg` readable bytes; `out` has `MR * 16` writable i32.
unsafe fn tile<const LU: bool>(
    l: *const u8,
    ls: usize,
    r: *const u8,
    _rs: usize,
    kg: usize,
    out: *mut i32,
) {
    // SAFETY: the ranges are those the caller guarantees readable / writable.
    let (rp, o) = unsafe {
        (
            std::slice::from_raw_parts(r, 64 * kg),
            std::slice::from_raw_parts_mut(out, MR * 16),
        )
    };
    let mut acc = [[0i32; 16]; MR];
    // SAFETY: MR rows of L, `4 * kg` bytes each (caller's guarantee).
    let lr: [&[u8]; MR] =
        std::array::from_fn(|i| unsafe { std::slice::from_raw_parts(l.add(i * ls), 4 * kg) });
    for g in 0..kg {
        // the group's 16 columns x 4 k as 4 rows of 16 widened values: contiguous inner
        // loops the compiler vectorizes
        let rg = &rp[g * 64..g * 64 + 64];
        let mut rt = [[0i16; 16]; 4];
        for (j, c) in rg.chunks_exact(4).enumerate() {
            for t in 0..4 {
                rt[t][j] = if LU { c[t] as i8 as i16 } else { c[t] as i16 };
            }
        }
        for (acc, lr) in acc.iter_mut().zip(&lr) {
            for (t, rt) in rt.iter().enumerate() {
                let a = if LU {
                    lr[4 * g + t] as i16
                } else {
                    lr[4 * g + t] as i8 as i16
                };
                for (acc, &r) in acc.iter_mut().zip(rt) {
                    // one side is in [0, 255], the other in [-128, 127]: the product fits
                    // i16 exactly (16-bit multiplies vectorize on baseline x86-64); the sum
                    // wraps like every other path's
                    *acc = acc.wrapping_add((a * r) as i32);
                }
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        o[i * 16..i * 16 + 16].copy_from_slice(acc);
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
