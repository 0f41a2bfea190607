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
/// on the fork-join [`team`]. `parts` of 1 calls `f` directly.
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
    team::run(parts as usize, &|p| {
        let p = p as i64;
        let start = n * p / parts;
        let end = n * (p + 1) / parts;
        // SAFETY: disjoint ranges and partial accumulators, as the caller promised.
        unsafe { f(ctx_addr as *const RunCtx, start, end, p) };
    });
}

/// [`crate::kernels::status::BAD_SCALE`] if one of the `n` f32 scales at `src` is not
/// positive and finite, else 0.
///
/// # Safety
/// `src` must hold `n` f32 values.
pub unsafe extern "C" fn qatc_check_scales(src: *const f32, n: i64) -> i32 {
    // SAFETY: as the caller promised.
    let s = unsafe { std::slice::from_raw_parts(src, n as usize) };
    if s.iter().all(|v| v.is_finite() && *v > 0.0) {
        0
    } else {
        crate::kernels::status::BAD_SCALE
    }
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
        ("qatc_check_scales", qatc_check_scales as *const u8),
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

/// The fork-join team of the JIT's parallel loops and products: `threads - 1` workers that
/// spin briefly between jobs (the loops of one training step follow each other within
/// microseconds; waking a sleeping thread costs tens of them) and park when idle.
pub mod team {
    use std::cell::UnsafeCell;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex, OnceLock};

    /// Spins of an idle worker before it parks.
    const SPINS: usize = 1 << 12;

    type Job = *const (dyn Fn(usize) + Sync);

    /// A function of a piece index and two pieces (see [`for_chunks2`]).
    pub type Pieces2<'a, T, U> = &'a (dyn Fn(usize, &mut [T], &mut [U]) + Sync);

    struct Shared {
        /// The job's generation (high 32 bits) and its next unclaimed part (low 32 bits).
        state: AtomicU64,
        /// Parts of the current job.
        parts: AtomicUsize,
        /// Parts finished.
        done: AtomicUsize,
        /// The current job, valid until every part is done.
        job: UnsafeCell<Option<Job>>,
        /// Parked workers wait here.
        lock: Mutex<()>,
        wake: Condvar,
        /// Serializes callers (one job at a time).
        caller: Mutex<()>,
        workers: usize,
    }

    // SAFETY: `job` and `parts` are written only by the caller holding `caller`, before
    // it publishes a new generation (release); a thread reads them only after claiming a
    // part of that generation (acquire), and the caller waits until every claimed part is
    // done before it changes them again.
    unsafe impl Sync for Shared {}
    // SAFETY: as above.
    unsafe impl Send for Shared {}

    fn shared() -> &'static Shared {
        static TEAM: OnceLock<&'static Shared> = OnceLock::new();
        TEAM.get_or_init(|| {
            let threads = rayon::current_num_threads().max(1);
            let s: &'static Shared = Box::leak(Box::new(Shared {
                state: AtomicU64::new(0),
                parts: AtomicUsize::new(0),
                done: AtomicUsize::new(0),
                job: UnsafeCell::new(None),
                lock: Mutex::new(()),
                wake: Condvar::new(),
                caller: Mutex::new(()),
                workers: threads - 1,
            }));
            for w in 0..s.workers {
                std::thread::Builder::new()
                    .name(format!("qatc-team-{}", w + 1))
                    .spawn(move || worker(s))
                    .ok();
            }
            s
        })
    }

    /// Claims the next part of generation `generation`, if it has one left.
    fn claim(s: &Shared, generation: u64) -> Option<usize> {
        let mut v = s.state.load(Ordering::Acquire);
        loop {
            if v >> 32 != generation {
                return None;
            }
            let next = (v & 0xffff_ffff) as usize;
            if next >= s.parts.load(Ordering::Acquire) {
                return None;
            }
            match s
                .state
                .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(next),
                Err(x) => v = x,
            }
        }
    }

    /// Runs parts of generation `generation` until none is left to claim.
    fn work(s: &Shared, generation: u64) {
        while let Some(p) = claim(s, generation) {
            // SAFETY: the part is claimed, so the caller keeps the job alive until it is
            // counted done.
            let job = unsafe { (*s.job.get()).map(|j| &*j) };
            if let Some(f) = job {
                f(p);
            }
            s.done.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn worker(s: &'static Shared) {
        let mut seen = 0u64;
        loop {
            let mut spins = 0usize;
            let mut g = s.state.load(Ordering::Acquire) >> 32;
            while g == seen {
                if spins < SPINS {
                    std::hint::spin_loop();
                    spins += 1;
                } else {
                    let guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                    if s.state.load(Ordering::Acquire) >> 32 == seen {
                        let _unused = s.wake.wait(guard);
                    }
                }
                g = s.state.load(Ordering::Acquire) >> 32;
            }
            seen = g;
            work(s, g);
        }
    }

    /// The number of parts a job can run in at once (the caller and the workers).
    pub fn size() -> usize {
        shared().workers + 1
    }

    /// Runs `f(0)`, ..., `f(parts - 1)` on the calling thread and the workers and returns
    /// when all are done. Parts are claimed, not assigned: a worker the system has not
    /// scheduled yet does not hold anything up (the caller runs the parts left).
    pub fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
        if parts <= 1 {
            if parts == 1 {
                f(0);
            }
            return;
        }
        let s = shared();
        if s.workers == 0 {
            (0..parts).for_each(f);
            return;
        }
        let _one = s.caller.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: only the caller holding `caller` writes the job, before publishing.
        unsafe {
            let job: Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f);
            *s.job.get() = Some(job);
        }
        s.parts.store(parts, Ordering::Release);
        s.done.store(0, Ordering::Release);
        let generation = (s.state.load(Ordering::Acquire) >> 32) + 1;
        s.state.store(generation << 32, Ordering::Release);
        {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        work(s, generation);
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < parts {
            if spins < 1 << 10 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: every part is done; no thread reads the job any more.
        unsafe { *s.job.get() = None };
    }

    /// Below this many elements a split costs more than it saves.
    const MIN_SPLIT: usize = 1 << 14;

    /// Calls `f(i, piece)` for every `chunk`-sized piece of `data` (the last may be
    /// shorter), the pieces split over the team in contiguous runs.
    pub fn for_chunks<T: Send>(data: &mut [T], chunk: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
        let chunk = chunk.max(1);
        let len = data.len();
        let n = len.div_ceil(chunk);
        let parts = if len < MIN_SPLIT {
            1
        } else {
            size().min(n).max(1)
        };
        let base = data.as_mut_ptr() as usize;
        run(parts, &|p| {
            for i in n * p / parts..n * (p + 1) / parts {
                let s = i * chunk;
                let e = (s + chunk).min(len);
                // SAFETY: the pieces of different parts (and indices) are disjoint and lie
                // inside `data`, which the caller lends mutably for the whole call.
                let piece =
                    unsafe { std::slice::from_raw_parts_mut((base as *mut T).add(s), e - s) };
                f(i, piece);
            }
        });
    }

    /// As [`for_chunks`] over two slices cut into the same number of pieces (`a` in
    /// pieces of `ca`, `b` of `cb`).
    pub fn for_chunks2<T: Send, U: Send>(
        a: &mut [T],
        ca: usize,
        b: &mut [U],
        cb: usize,
        f: Pieces2<'_, T, U>,
    ) {
        let (ca, cb) = (ca.max(1), cb.max(1));
        let n = a.len().div_ceil(ca).min(b.len().div_ceil(cb));
        let parts = if a.len() < MIN_SPLIT {
            1
        } else {
            size().min(n).max(1)
        };
        let (pa, la, pb, lb) = (
            a.as_mut_ptr() as usize,
            a.len(),
            b.as_mut_ptr() as usize,
            b.len(),
        );
        run(parts, &|p| {
            for i in n * p / parts..n * (p + 1) / parts {
                let (sa, sb) = (i * ca, i * cb);
                // SAFETY: as in `for_chunks`, for each slice.
                let (x, y) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(
                            (pa as *mut T).add(sa),
                            (sa + ca).min(la) - sa,
                        ),
                        std::slice::from_raw_parts_mut(
                            (pb as *mut U).add(sb),
                            (sb + cb).min(lb) - sb,
                        ),
                    )
                };
                f(i, x, y);
            }
        });
    }
}
