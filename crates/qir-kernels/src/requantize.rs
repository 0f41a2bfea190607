//! Standalone requantize: an i32 matrix (accumulators computed elsewhere) to i8 or u8 with
//! the same epilogue engines as the GEMM, so the numbers are the fused ones bit for bit.

use crate::epilogue::{Axis, OutKind, Step};
use crate::error::{KResult, check_len, invalid};
use crate::gemm::Output;
use crate::path::Path;
use crate::requant::{OutType, Requant};

/// Along which axis of a `[rows, cols]` matrix the per-channel parameters run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelAxis {
    /// One channel per row (NCHW planes: rows = `n * c`, cols = `h * w`, with a requantize
    /// of `c` channels the row `r` uses channel `r % c`).
    Rows,
    /// One channel per column (a `[n, m]` linear output).
    Cols,
}

/// `out[r][c] = clamp(zp + round(src[r][c] * M / 2^(31 + shift)), lo, hi)` for the
/// `[rows, cols]` matrix `src`, with the channel of each element given by `axis`.
pub fn requantize(
    path: Path,
    src: &[i32],
    rows: usize,
    cols: usize,
    q: &Requant,
    axis: ChannelAxis,
    mut out: Output,
) -> KResult<()> {
    let len = rows
        .checked_mul(cols)
        .ok_or_else(|| crate::KernelError::Invalid("matrix too large".into()))?;
    check_len("accumulators", len, src.len())?;
    check_len("output", len, out.len())?;
    let ty = match out.kind() {
        OutKind::I8 => Some(OutType::I8),
        OutKind::U8 => Some(OutType::U8),
        OutKind::I32 => None,
    };
    if ty.is_some_and(|t| !q.fits(t)) {
        return invalid(format!(
            "the requantize clamp [{}, {}] does not fit the output",
            q.lo, q.hi
        ));
    }
    let channels = match axis {
        ChannelAxis::Rows => rows,
        ChannelAxis::Cols => cols,
    };
    if q.channels() != 1
        && (channels == 0
            || !channels.is_multiple_of(q.channels())
            || (axis == ChannelAxis::Cols && channels != q.channels()))
    {
        return invalid(format!(
            "requantize has {} channels, the {axis:?} axis has {channels}",
            q.channels()
        ));
    }
    if len == 0 {
        return Ok(());
    }
    let path = path.resolve(rows, cols, 1)?;
    let epi = crate::kernels::select(path, true, rows, cols).epi;
    let view = out.view(cols);
    // 64 columns per block, through an aligned tile buffer so the SIMD engine can read
    // whole vectors
    let mut tile = [0i32; 64];
    for r in 0..rows {
        let steps = match axis {
            ChannelAxis::Rows => [Step::Requant(q, Axis::Row, r % q.channels())],
            ChannelAxis::Cols => [Step::Requant(q, Axis::Col, 0)],
        };
        let vr = view.offset_rows(r);
        let mut c0 = 0;
        while c0 < cols {
            let vc = (cols - c0).min(64);
            tile[..vc].copy_from_slice(&src[r * cols + c0..r * cols + c0 + vc]);
            // SAFETY: the tile holds 64 values, vc of them valid; the view (moved to row r)
            // covers columns c0..c0 + vc; the channel index r % channels is in range.
            unsafe { epi(&mut tile, 64, 1, vc, 0, c0, &steps, &vr) };
            c0 += vc;
        }
    }
    Ok(())
}
