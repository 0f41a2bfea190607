//! 64-byte aligned byte buffers (operand panels start on cache lines, which AMX tile loads
//! and 512-bit vector loads prefer) and per-thread scratch buffers that calls borrow and
//! give back, so that a steady-state call allocates nothing.
//!
//! Invariant: scratch is taken out of its thread-local slot for the duration of a use and
//! put back afterwards, so a nested or re-entrant use (rayon work stealing) finds the slot
//! empty and allocates its own buffer instead of aliasing.

use std::cell::Cell;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A zero-initialized, 64-byte aligned byte buffer.
#[derive(Clone, Default)]
pub(crate) struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }
    /// Makes the buffer `len` bytes long; the contents are unspecified (but initialized).
    pub(crate) fn set_len(&mut self, len: usize) {
        let lines = len.div_ceil(64);
        if self.lines.len() < lines {
            self.lines.resize(lines, Line([0; 64]));
        }
        self.len = len;
    }
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `lines` holds at least `len` initialized bytes (Line is a plain byte array
        // with no padding), and the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u8>(), self.len) }
    }
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, with the unique borrow of `self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// Per-thread scratch of one call: packed operands and per-row / per-column sums.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) a: AlignedBuf,
    pub(crate) b: AlignedBuf,
    /// The row phases of a convolution pooled in registers (see `conv::row_phases`), and
    /// its panels' row offsets followed by the geometry they were computed for.
    pub(crate) phases: AlignedBuf,
    pub(crate) pool_offs: Vec<usize>,
    pub(crate) ints: Vec<i32>,
    pub(crate) ints2: Vec<i32>,
    /// Input offsets of the im2col rows of a wide convolution.
    pub(crate) offs: Vec<usize>,
    pub(crate) corr: Vec<i32>,
    /// The i32 output planes of a convolution with a fused pool, and their pooled values.
    pub(crate) acc: Vec<i32>,
    pub(crate) pooled: Vec<i32>,
    /// Remap tables of wide convolutions by `(cols, wide, ow)`: the layers of a model
    /// alternate on a thread, so each keeps its table (a few, each `cols / 16` entries).
    pub(crate) remaps: Vec<((usize, usize, usize), Vec<crate::epilogue::Remap>)>,
}

/// Remap tables kept per thread before the oldest is dropped.
const REMAP_TABLES: usize = 8;

impl Scratch {
    /// The remap table of `key = (cols, wide, ow)`, built on first use.
    pub(crate) fn remap(&mut self, key: (usize, usize, usize)) -> *const crate::epilogue::Remap {
        if let Some(i) = self.remaps.iter().position(|(k, _)| *k == key) {
            return self.remaps[i].1.as_ptr();
        }
        if self.remaps.len() >= REMAP_TABLES {
            self.remaps.remove(0);
        }
        let mut t = Vec::new();
        crate::epilogue::remap_table(key.0, key.1, key.2, &mut t);
        self.remaps.push((key, t));
        self.remaps
            .last()
            .map_or(std::ptr::null(), |(_, t)| t.as_ptr())
    }
}

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's scratch (a fresh one if it is in use further up the stack).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut s = SCRATCH.with(|c| c.take()).unwrap_or_default();
    let r = f(&mut s);
    SCRATCH.with(|c| c.set(Some(s)));
    r
}
