//! What compiled code runs against: the run context (the arena and the io table), buffer
//! locations, and the runtime helpers generated code calls — splitting a loop over the
//! thread pool, filling and combining reduction accumulators, copying update values into
//! the store, and the per-element math functions the interpreter uses.
//!
//! Invariants: a [`Loc`] addresses a buffer the plan sized; the io table has one valid
//! pointer per entry for the whole run; loop functions called on disjoint ranges (and
//! disjoint partial accumulators) never write the same memory.

/// Where a buffer lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Loc {
    /// At this byte offset in the arena.
    Arena(usize),
    /// At entry `i` of the io table (inputs, the store's tensors, constants).
    Io(usize),
}

/// The context of one run, passed to every generated function and kernel.
#[repr(C)]
#[derive(Debug)]
pub struct RunCtx {
    /// The arena (intermediates).
    pub arena: *mut u8,
    /// The io table: one pointer per input, stored value and constant.
    pub io: *const *mut u8,
    /// Threads a loop or kernel may use.
    pub threads: usize,
    /// Per-step timing of a profiled program (null otherwise).
    pub prof: *mut Profile,
}

/// Wall-clock time per step of a profiled program.
#[derive(Debug)]
pub struct Profile {
    /// When the last step ended.
    pub last: std::time::Instant,
    /// Seconds spent in each step, summed over runs.
    pub seconds: Vec<f64>,
    /// Runs profiled.
    pub runs: usize,
}

impl Profile {
    /// A profile of `steps` steps.
    pub fn new(steps: usize) -> Profile {
        Profile {
            last: std::time::Instant::now(),
            seconds: vec![0.0; steps],
            runs: 0,
        }
    }
}

/// Ends step `step` of a profiled run: its time since the previous mark is added.
///
/// # Safety
/// `ctx.prof` must be null or point at a [`Profile`] with more than `step` steps.
pub unsafe extern "C" fn qatc_prof_step(ctx: *const RunCtx, step: i64) {
    // SAFETY: as the caller promised.
    let Some(p) = (unsafe { (*ctx).prof.as_mut() }) else {
        return;
    };
    let now = std::time::Instant::now();
    if let Some(s) = p.seconds.get_mut(step as usize) {
        *s += (now - p.last).as_secs_f64();
    }
    p.last = now;
}

impl RunCtx {
    /// The address of `loc`.
    ///
    /// # Safety
    /// The context's arena and io table must be those the plan was made for.
    pub unsafe fn ptr(&self, loc: Loc) -> *mut u8 {
        // SAFETY: offsets and io indices come from the plan of this context.
        unsafe {
            match loc {
                Loc::Arena(off) => self.arena.add(off),
                Loc::Io(i) => *self.io.add(i),
            }
        }
    }
}

/// The signature of a generated loop function: the iterations `start..end` of the
/// outermost loop, writing reductions into partial accumulator `part`.
pub type LoopFn = unsafe extern "C" fn(ctx: *const RunCtx, start: i64, end: i64, part: i64);

/// Runs `f` over `0..n` split into `parts` contiguous ranges (part `p` gets the `p`-th),
/// on the global thread pool. `parts` of 1 calls `f` directly.
///
/// # Safety
/// `f` must be a loop function compiled for `ctx`'s plan, safe to run on disjoint ranges
/// at once.
pub unsafe extern "C" fn qatc_parallel_for(ctx: *const RunCtx, f: LoopFn, n: i64, parts: i64) {
    let parts = parts.max(1).min(n.max(1));
    if parts <= 1 {
        // SAFETY: as the caller promised.
        unsafe { f(ctx, 0, n, 0) };
        return;
    }
    let ctx_addr = ctx as usize;
    rayon::scope(|s| {
        for p in 0..parts {
            let start = n * p / parts;
            let end = n * (p + 1) / parts;
            s.spawn(move |_| {
                // SAFETY: disjoint ranges and partial accumulators, as the caller promised.
                unsafe { f(ctx_addr as *const RunCtx, start, end, p) };
            });
        }
    });
}

/// Fills `n` f32 values at `dst` with `v`.
///
/// # Safety
/// `dst` must hold `n` f32 values.
pub unsafe extern "C" fn qatc_fill_f32(dst: *mut f32, n: i64, v: f32) {
    // SAFETY: as the caller promised.
    unsafe { std::slice::from_raw_parts_mut(dst, n as usize) }.fill(v);
}

/// Fills `n` f64 values at `dst` with 0.
///
/// # Safety
/// `dst` must hold `n` f64 values.
pub unsafe extern "C" fn qatc_zero_f64(dst: *mut f64, n: i64) {
    // SAFETY: as the caller promised.
    unsafe { std::slice::from_raw_parts_mut(dst, n as usize) }.fill(0.0);
}

/// Combines `parts` f64 partial sums of `n` values each (laid out one after the other
/// at `acc`) and writes `(sum / div) as f32` to the `n` values at `out`.
///
/// # Safety
/// `acc` must hold `parts * n` f64 values and `out` `n` f32 values.
pub unsafe extern "C" fn qatc_finish_sum(
    acc: *const f64,
    parts: i64,
    n: i64,
    div: f64,
    out: *mut f32,
) {
    let (parts, n) = (parts as usize, n as usize);
    // SAFETY: as the caller promised.
    let (acc, out) = unsafe {
        (
            std::slice::from_raw_parts(acc, parts * n),
            std::slice::from_raw_parts_mut(out, n),
        )
    };
    for (i, o) in out.iter_mut().enumerate() {
        let mut s = acc[i];
        for p in 1..parts {
            s += acc[p * n + i];
        }
        *o = (s / div) as f32;
    }
}

/// Combines `parts` f32 partial minima (`is_max` 0) or maxima (1) of `n` values each at
/// `acc` into `out`, NaN propagating.
///
/// # Safety
/// `acc` must hold `parts * n` f32 values and `out` `n`.
pub unsafe extern "C" fn qatc_finish_extreme(
    acc: *const f32,
    parts: i64,
    n: i64,
    is_max: i64,
    out: *mut f32,
) {
    let (parts, n) = (parts as usize, n as usize);
    // SAFETY: as the caller promised.
    let (acc, out) = unsafe {
        (
            std::slice::from_raw_parts(acc, parts * n),
            std::slice::from_raw_parts_mut(out, n),
        )
    };
    for (i, o) in out.iter_mut().enumerate() {
        let mut e = acc[i];
        for p in 1..parts {
            let v = acc[p * n + i];
            e = if e.is_nan() || v.is_nan() {
                f32::NAN
            } else if (is_max != 0 && v > e) || (is_max == 0 && v < e) {
                v
            } else {
                e
            };
        }
        *o = e;
    }
}

/// Copies `bytes` bytes from `src` to `dst` (an update value into the store).
///
/// # Safety
/// Both must hold `bytes` bytes and not overlap.
pub unsafe extern "C" fn qatc_copy_bytes(dst: *mut u8, src: *const u8, bytes: i64) {
    // SAFETY: as the caller promised.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, bytes as usize) };
}

/// `e^x` (the interpreter's function).
pub extern "C" fn qatc_expf(x: f32) -> f32 {
    x.exp()
}
/// `ln x`.
pub extern "C" fn qatc_lnf(x: f32) -> f32 {
    x.ln()
}
/// `tanh x`.
pub extern "C" fn qatc_tanhf(x: f32) -> f32 {
    x.tanh()
}
/// `erf x` (libm's, as the interpreter).
pub extern "C" fn qatc_erff(x: f32) -> f32 {
    libm::erff(x)
}
/// `a * b + c` with one rounding (for hosts without FMA instructions).
pub extern "C" fn qatc_fmaf(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}
/// Rounds a positive scale up to a power of two.
pub extern "C" fn qatc_pow2_ceil(x: f32) -> f32 {
    qir::quant::pow2_ceil_f32(x)
}
/// Adam's bias correction `1 - beta^t` in f64, rounded once; NaN for a step below 1 (the
/// interpreter's error; the plan checks steps separately).
pub extern "C" fn qatc_adam_correction(beta: f64, step: f32) -> f32 {
    (1.0 - beta.powf(step as f64)) as f32
}

/// The runtime helper symbols and their addresses.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("qatc_parallel_for", qatc_parallel_for as *const u8),
        ("qatc_prof_step", qatc_prof_step as *const u8),
        ("qatc_fill_f32", qatc_fill_f32 as *const u8),
        ("qatc_zero_f64", qatc_zero_f64 as *const u8),
        ("qatc_finish_sum", qatc_finish_sum as *const u8),
        ("qatc_finish_extreme", qatc_finish_extreme as *const u8),
        ("qatc_copy_bytes", qatc_copy_bytes as *const u8),
        ("qatc_expf", qatc_expf as *const u8),
        ("qatc_lnf", qatc_lnf as *const u8),
        ("qatc_tanhf", qatc_tanhf as *const u8),
        ("qatc_erff", qatc_erff as *const u8),
        ("qatc_pow2_ceil", qatc_pow2_ceil as *const u8),
        ("qatc_fmaf", qatc_fmaf as *const u8),
        ("qatc_adam_correction", qatc_adam_correction as *const u8),
    ]
}
