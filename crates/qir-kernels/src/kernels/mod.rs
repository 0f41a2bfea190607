//! The tile kernels of every path and their selection. A tile kernel computes one raw tile
//! `out[i][j] = sum_{g < kg} sum_{t < 4} L[i][4g + t] * R[j][4g + t]` (wrapping i32) for
//! `MR` rows of the rows layout and `nv` panels (`16 * nv` columns) of the panel layout,
//! into a dense `[MR][16 * nv]` i32 buffer; the epilogue then runs on that buffer.
//!
//! `LU` (a const parameter of every kernel) says which side is unsigned: `true` for a
//! linear layer (L = activations u8, R = weights i8), `false` for a convolution
//! (L = weights i8, R = im2col pixels u8).
//!
//! Invariants the caller keeps: L has at least `MR` readable rows of stride `ls` (and, on
//! AMX, `ls` is a multiple of 64 with zeros past `k`); R has `nv` panels of stride `rs`
//! bytes, each `4 * kg` bytes deep (AMX: rounded up to 64 bytes, zero-filled).

pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod vnni;

use crate::epilogue::EpiFn;
use crate::path::Path;

/// One raw tile: `(l, ls, r, rs, kg, out)`.
pub(crate) type TileFn = unsafe fn(*const u8, usize, *const u8, usize, usize, *mut i32);

/// A tile kernel that stores its raw tile with a row stride: `(l, ls, r, rs, kg, out, ldo)`,
/// row `i` of the tile at `out + i * ldo`.
pub(crate) type StridedTileFn =
    unsafe fn(*const u8, usize, *const u8, usize, usize, *mut i32, usize);

/// The tile height of [`Kernels::pool2`].
pub(crate) const POOL2_MR: usize = 8;

/// The kernels a call uses: tile height, one tile function per panel count `1..=nvmax`,
/// the alignment of K in operands packed at run time, the epilogue, and whether the AMX
/// tile state must be configured around the calls.
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    pub(crate) mr: usize,
    pub(crate) tiles: &'static [TileFn],
    /// The same tiles storing with a row stride, where the path has them (VNNI): a
    /// caller that needs only the raw accumulators lets them go straight to its buffer.
    pub(crate) strided: Option<&'static [StridedTileFn]>,
    /// An 8-row tile over 2 consecutive panels that pools in registers: per row, the
    /// lane-wise maximum of the two panels' accumulators, then of each pair of lanes
    /// `(2 i, 2 i + 1)`, stored as 8 values at `out + row * ldo`. A 2x2 max pool when the
    /// panels hold the two window rows of 8 pooling windows side by side.
    pub(crate) pool2: Option<StridedTileFn>,
    pub(crate) kalign: usize,
    pub(crate) epi: EpiFn,
    pub(crate) amx_hw: bool,
}

impl Kernels {
    pub(crate) fn nvmax(&self) -> usize {
        self.tiles.len()
    }
    /// Sets up the tile state (AMX) before a sequence of tile calls on this thread.
    pub(crate) fn begin(&self) {
        if self.amx_hw {
            amx::configure();
        }
    }
    /// Releases the tile state after the sequence.
    pub(crate) fn end(&self) {
        if self.amx_hw {
            amx::release();
        }
    }
}

/// The kernels of a concrete `path` for a contraction with `rows` rows (tile height is
/// chosen from it) and `lu` as in the module doc.
pub(crate) fn select(path: Path, lu: bool, rows: usize, cols: usize) -> Kernels {
    let np = cols.div_ceil(crate::pack::PANEL);
    match path {
        Path::Auto | Path::Portable => portable::kernels(lu),
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => avx2::kernels(lu),
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Vnni => vnni::kernels(lu, rows, np),
        #[cfg(target_arch = "x86_64")]
        Path::Amx => amx::kernels(lu, rows, true),
        Path::AmxEmulated => amx::kernels(lu, rows, false),
        #[cfg(not(target_arch = "x86_64"))]
        _ => portable::kernels(lu),
    }
}
