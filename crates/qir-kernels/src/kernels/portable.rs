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
    for (i, acc) in acc.iter_mut().enumerate() {
        // SAFETY: row `i` of L, `4 * kg` bytes (caller's guarantee).
        let lr = unsafe { std::slice::from_raw_parts(l.add(i * ls), 4 * kg) };
        for g in 0..kg {
            let rg = &rp[g * 64..g * 64 + 64];
            let a = &lr[4 * g..4 * g + 4];
            for (j, acc) in acc.iter_mut().enumerate() {
                let mut s = 0i32;
                for t in 0..4 {
                    let (u, v) = if LU {
                        (a[t] as i32, rg[j * 4 + t] as i8 as i32)
                    } else {
                        (a[t] as i8 as i32, rg[j * 4 + t] as i32)
                    };
                    // |u * v| <= 255 * 128: four of them fit an i32 exactly
                    s += u * v;
                }
                *acc = acc.wrapping_add(s);
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
        mr: MR,
        tiles: if lu { &LIN } else { &CONV },
        kalign: 4,
        epi: epilogue_portable,
        amx_hw: false,
    }
}
