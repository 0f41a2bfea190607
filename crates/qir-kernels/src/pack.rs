//! Operand layouts and packing. Every path reads the same two layouts:
//!
//! - **rows** ("L", the broadcast side of a tile): row-major `[rows][kp]` bytes, `kp` a
//!   multiple of 4 (64 when the AMX path reads it: one tile row is 64 bytes), zero past `k`;
//!   rows padded with zero rows to a multiple of the tile height.
//! - **panels** ("R", the vector side): 16 columns per panel, `[panel][kp / 4][16][4]` bytes:
//!   the 4 consecutive `k` values of one column sit in one 32-bit lane (the VNNI layout of
//!   `vpdpbusd` and of an AMX B tile), zero past `k` and past the last column.
//!
//! One side is unsigned (activations, i8 ones shifted by +128) and the other signed
//! (weights). A contraction is `raw[r][c] = sum_k L[r][k] * R[c][k]`, exact in wrapping i32,
//! and the zero points enter as correction terms (see [`crate::gemm`]).
//!
//! [`PackedB`] is the weight matrix of a linear layer, packed once at model load into
//! panels (`kp` rounded to 64 so that every path, AMX included, can read it) together with
//! what the zero-point corrections need: the column sums `sum_k w[c][k]` and the weight zero
//! points.

use crate::buf::AlignedBuf;
use crate::error::{KResult, check_len, invalid};

/// Columns per panel (one 512-bit vector of i32, one AMX tile's width).
pub(crate) const PANEL: usize = 16;

/// `k` rounded up to a multiple of `align` (at least one step).
pub(crate) fn kpad(k: usize, align: usize) -> usize {
    k.div_ceil(align).max(1) * align
}

/// The byte offset of `(col, kk)` in a panel layout whose panels are `kp` deep.
#[inline(always)]
pub(crate) fn panel_offset(col: usize, kk: usize, kp: usize) -> usize {
    (col / PANEL) * PANEL * kp + (kk / 4) * 64 + (col % PANEL) * 4 + kk % 4
}

/// Int8 activations (a matrix or an NCHW tensor), unsigned or signed.
#[derive(Clone, Copy, Debug)]
pub enum Activations<'a> {
    /// `u8` values (zero point in `[0, 255]`).
    U8(&'a [u8]),
    /// `i8` values (zero point in `[-128, 127]`); the kernels shift them by +128 to `u8`.
    I8(&'a [i8]),
}

impl Activations<'_> {
    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            Activations::U8(v) => v.len(),
            Activations::I8(v) => v.len(),
        }
    }
    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The raw bytes and the xor that maps them to the unsigned domain (0 or 0x80).
    pub(crate) fn bytes(&self) -> (&[u8], u8) {
        match self {
            Activations::U8(v) => (v, 0),
            // SAFETY: i8 and u8 have the same size and alignment and every bit pattern is
            // valid for both.
            Activations::I8(v) => (
                unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len()) },
                0x80,
            ),
        }
    }
    /// Checks the zero point's range and returns it in the unsigned domain.
    pub(crate) fn unsigned_zero_point(&self, z: i32) -> KResult<i32> {
        match self {
            Activations::U8(_) if (0..=255).contains(&z) => Ok(z),
            Activations::I8(_) if (-128..=127).contains(&z) => Ok(z + 128),
            _ => invalid(format!(
                "activation zero point {z} is outside the activation type's range"
            )),
        }
    }
}

/// Per-channel weight zero points, as given: none (all 0), one per tensor or one per channel.
pub(crate) fn expand_zero_points(z: Option<&[i32]>, channels: usize) -> KResult<(Vec<i32>, bool)> {
    let zw = match z {
        None => vec![0; channels],
        Some([v]) => vec![*v; channels],
        Some(v) => {
            check_len("weight zero points", channels, v.len())?;
            v.to_vec()
        }
    };
    let any = zw.iter().any(|&v| v != 0);
    Ok((zw, any))
}

/// Linear-layer weights `w[m, k]` (i8, row-major, per-output-channel zero points), packed
/// once into panels with the sums the zero-point corrections need.
#[derive(Clone, Debug)]
pub struct PackedB {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) kp: usize,
    pub(crate) panels: AlignedBuf,
    /// `sum_k w[c][k]` per channel.
    pub(crate) wsum: Vec<i32>,
    /// Weight zero point per channel.
    pub(crate) zw: Vec<i32>,
    pub(crate) zw_any: bool,
}

impl PackedB {
    /// Packs `w` (`[m, k]`, row-major). `zero_points`: `None` for symmetric weights (all 0),
    /// one value per tensor, or one per output channel.
    pub fn new(w: &[i8], m: usize, k: usize, zero_points: Option<&[i32]>) -> KResult<PackedB> {
        let mk = m
            .checked_mul(k)
            .ok_or_else(|| crate::KernelError::Invalid("weights too large".into()))?;
        check_len("weights", mk, w.len())?;
        if m == 0 || k == 0 {
            return invalid(format!("empty weight matrix [{m}, {k}]"));
        }
        let (zw, zw_any) = expand_zero_points(zero_points, m)?;
        let kp = kpad(k, 64);
        let np = m.div_ceil(PANEL);
        let mut panels = AlignedBuf::zeroed(np * PANEL * kp);
        let p = panels.as_mut_slice();
        let mut wsum = vec![0i32; m];
        for c in 0..m {
            let row = &w[c * k..(c + 1) * k];
            for (kk, &v) in row.iter().enumerate() {
                p[panel_offset(c, kk, kp)] = v as u8;
            }
            wsum[c] = row.iter().map(|&v| v as i32).sum();
        }
        Ok(PackedB {
            m,
            k,
            kp,
            panels,
            wsum,
            zw,
            zw_any,
        })
    }
    /// Output channels.
    pub fn m(&self) -> usize {
        self.m
    }
    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// Packs rows `[r0, r1)` of the `[n, k]` matrix `src` (row stride `k`) into the rows layout
/// with stride `kp`, `rows_pad` rows (zero rows past `r1 - r0`), xoring every byte with
/// `flip` (0x80 maps i8 to the unsigned domain). With `sums`, also writes each row's sum of
/// (unsigned-domain) values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_rows(
    src: &[u8],
    flip: u8,
    k: usize,
    r0: usize,
    r1: usize,
    rows_pad: usize,
    kp: usize,
    dst: &mut [u8],
    mut sums: Option<&mut [i32]>,
) {
    debug_assert!(dst.len() >= rows_pad * kp);
    for i in 0..rows_pad {
        let d = &mut dst[i * kp..(i + 1) * kp];
        if r0 + i < r1 {
            let s = &src[(r0 + i) * k..(r0 + i + 1) * k];
            if flip == 0 {
                d[..k].copy_from_slice(s);
            } else {
                for (o, &v) in d[..k].iter_mut().zip(s) {
                    *o = v ^ flip;
                }
            }
            d[k..].fill(0);
            if let Some(sums) = sums.as_deref_mut() {
                sums[i] = d[..k].iter().map(|&v| v as i32).sum();
            }
        } else {
            d.fill(0);
        }
    }
}
