//! f32 matrix products on the `gemm` crate (AVX-512 kernels with runtime dispatch, its own
//! packing, and the shared thread pool for large products): `C (+)= A · B` for every
//! batch entry, each operand given by an offset and row/column strides in elements, so
//! that transposes, the groups of a convolution and the [O, N, P] layout of a convolution
//! output cost nothing.
//!
//! Summation order: blocked by the `gemm` crate, so results differ from the interpreter's
//! ascending-k sums by rounding (the JIT's stated float tolerance covers it).

use gemm::Parallelism;

use super::Bound;
use crate::rt::RunCtx;

/// One operand of a product: element offset, row and column strides, and the offset
/// added per batch entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mat {
    /// Offset of element (0, 0) of batch entry 0, in elements.
    pub offset: usize,
    /// Stride between rows, in elements.
    pub rs: isize,
    /// Stride between columns, in elements.
    pub cs: isize,
    /// Offset between batch entries, in elements.
    pub batch: usize,
}

impl Mat {
    /// A row-major `[rows, cols]` matrix.
    pub fn row_major(cols: usize) -> Mat {
        Mat {
            offset: 0,
            rs: cols as isize,
            cs: 1,
            batch: 0,
        }
    }
    /// The transpose of a row-major `[cols, rows]` matrix, read as `[rows, cols]`.
    pub fn transposed(rows: usize) -> Mat {
        Mat {
            offset: 0,
            rs: 1,
            cs: rows as isize,
            batch: 0,
        }
    }
}

/// `C[m, n] (+)= A[m, k] · B[k, n]`, `batch` times; A is argument 0, B argument 1, C the
/// result.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
    /// Number of independent products.
    pub batch: usize,
    /// Operand A.
    pub a: Mat,
    /// Operand B.
    pub b: Mat,
    /// The result.
    pub c: Mat,
    /// Add to C instead of overwriting it.
    pub accumulate: bool,
}

impl Gemm {
    /// Floating-point operations of the call.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64 * self.batch as f64
    }
}

/// Products at least this large (m·n·k) use the thread pool.
const PARALLEL_WORK: usize = 1 << 18;

/// The `qatc_gemm` kernel.
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan (see [`super`]).
pub unsafe extern "C" fn qatc_gemm(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let super::Kernel::Gemm(g) = &call.kernel else {
        return -1;
    };
    // SAFETY: the plan sized every buffer for the strides and offsets of `g`.
    unsafe {
        let a = ctx.ptr(call.args[0]) as *const f32;
        let b = ctx.ptr(call.args[1]) as *const f32;
        let c = ctx.ptr(call.out) as *mut f32;
        run(g, a, b, c, ctx.threads);
    }
    0
}

/// Products with a long contraction and a small result (a convolution's weight
/// gradient: k = batch x positions) split k over the threads instead: each thread sums its
/// share into its own result, and the shares are added.
const SPLIT_K_MIN: usize = 4096;
const SPLIT_K_MAX_RESULT: usize = 1 << 16;

/// Runs the products of `g` on raw operands.
///
/// # Safety
/// The operands must hold every element the offsets and strides of `g` address.
pub unsafe fn run(g: &Gemm, a: *const f32, b: *const f32, c: *mut f32, threads: usize) {
    let work = g.m.saturating_mul(g.n).saturating_mul(g.k);
    if threads > 1 && g.k >= SPLIT_K_MIN && g.m * g.n <= SPLIT_K_MAX_RESULT && work >= PARALLEL_WORK
    {
        // SAFETY: as the caller promised.
        unsafe { split_k(g, a, b, c, threads) };
        return;
    }
    if threads > 1
        && work >= PARALLEL_WORK
        && g.batch == 1
        && (g.m >= 2 * threads || g.n >= 2 * threads)
    {
        // split the larger of m and n over the threads, each share single-threaded (the
        // gemm crate's own splitting scales poorly at these sizes)
        // SAFETY: as the caller promised.
        unsafe { split_mn(g, a, b, c, threads) };
        return;
    }
    let par = Parallelism::None;
    for i in 0..g.batch {
        // SAFETY: as the caller promised.
        unsafe {
            let dst = c.add(g.c.offset + i * g.c.batch);
            if g.k == 0 {
                if !g.accumulate {
                    for r in 0..g.m {
                        for col in 0..g.n {
                            *dst.offset(r as isize * g.c.rs + col as isize * g.c.cs) = 0.0;
                        }
                    }
                }
                continue;
            }
            gemm::gemm(
                g.m,
                g.n,
                g.k,
                dst,
                g.c.cs,
                g.c.rs,
                g.accumulate,
                a.add(g.a.offset + i * g.a.batch),
                g.a.cs,
                g.a.rs,
                b.add(g.b.offset + i * g.b.batch),
                g.b.cs,
                g.b.rs,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }
}

/// The k-split products (see [`SPLIT_K_MIN`]).
///
/// # Safety
/// As [`run`].
unsafe fn split_k(g: &Gemm, a: *const f32, b: *const f32, c: *mut f32, threads: usize) {
    let (m, n, k) = (g.m, g.n, g.k);
    let (a, b, c) = (a as usize, b as usize, c as usize);
    let threads = threads.min(crate::rt::team::size());
    for bi in 0..g.batch {
        let shares: Vec<std::sync::Mutex<Vec<f32>>> = (0..threads)
            .map(|_| std::sync::Mutex::new(Vec::new()))
            .collect();
        crate::rt::team::run(threads, &|t| {
            let (k0, k1) = (k * t / threads, k * (t + 1) / threads);
            let mut part = vec![0.0f32; m * n];
            if k1 > k0 {
                // SAFETY: the share reads columns k0..k1 of A and rows k0..k1 of B,
                // inside the operands the caller vouched for.
                unsafe {
                    let pa = (a as *const f32)
                        .add(g.a.offset + bi * g.a.batch)
                        .offset(k0 as isize * g.a.cs);
                    let pb = (b as *const f32)
                        .add(g.b.offset + bi * g.b.batch)
                        .offset(k0 as isize * g.b.rs);
                    gemm::gemm(
                        m,
                        n,
                        k1 - k0,
                        part.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        pa,
                        g.a.cs,
                        g.a.rs,
                        pb,
                        g.b.cs,
                        g.b.rs,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            }
            if let Ok(mut slot) = shares[t].lock() {
                *slot = part;
            }
        });
        let shares: Vec<Vec<f32>> = shares
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
        // SAFETY: C holds the m x n result of entry bi, as the caller promised.
        unsafe {
            let dst = (c as *mut f32).add(g.c.offset + bi * g.c.batch);
            for r in 0..m {
                for col in 0..n {
                    let p = dst.offset(r as isize * g.c.rs + col as isize * g.c.cs);
                    let mut v = if g.accumulate { *p } else { 0.0 };
                    for s in &shares {
                        v += s[r * n + col];
                    }
                    *p = v;
                }
            }
        }
    }
}

/// Products split along m or n, one share per thread.
///
/// # Safety
/// As [`run`].
unsafe fn split_mn(g: &Gemm, a: *const f32, b: *const f32, c: *mut f32, threads: usize) {
    let (a, b, c) = (a as usize, b as usize, c as usize);
    let along_n = g.n >= g.m;
    let len = if along_n { g.n } else { g.m };
    let threads = threads.min(crate::rt::team::size());
    crate::rt::team::run(threads, &|t| {
        let (lo, hi) = (len * t / threads, len * (t + 1) / threads);
        if lo >= hi {
            return;
        }
        let mut share = g.clone();
        share.batch = 1;
        if along_n {
            share.n = hi - lo;
            share.b.offset = offset(g.b.offset, lo as isize * g.b.cs);
            share.c.offset = offset(g.c.offset, lo as isize * g.c.cs);
        } else {
            share.m = hi - lo;
            share.a.offset = offset(g.a.offset, lo as isize * g.a.rs);
            share.c.offset = offset(g.c.offset, lo as isize * g.c.rs);
        }
        // SAFETY: the share addresses a sub-block of the operands the caller vouched for,
        // and the shares write disjoint blocks of C.
        unsafe { run(&share, a as *const f32, b as *const f32, c as *mut f32, 1) };
    });
}

fn offset(base: usize, delta: isize) -> usize {
    (base as isize + delta) as usize
}
