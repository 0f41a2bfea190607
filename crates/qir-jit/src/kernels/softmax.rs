//! Softmax and log-softmax along an axis and their gradients, softmax cross-entropy and
//! its gradient, and argmax — with the interpreter's arithmetic: the row maximum is
//! subtracted first (0 when it is not finite), exponential sums accumulate in f64 and
//! round once, cross-entropy is `-log_softmax[label]` summed in f64, a label outside
//! `[0, classes)` is an error ([`super::status::BAD_LABEL`]), and argmax takes the first
//! maximum with NaN counting as the maximum.

use super::{Bound, Kernel, slice, slice_mut, status};
use crate::dtype::DType;
use crate::rt::RunCtx;

/// Softmax along the middle axis of `[outer, dim, inner]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Softmax {
    /// Product of the dimensions before the axis.
    pub outer: usize,
    /// The axis' size.
    pub dim: usize,
    /// Product of the dimensions after the axis.
    pub inner: usize,
    /// Log-softmax instead of softmax.
    pub log: bool,
    /// The gradient (arguments dy, y) instead of the function (argument x).
    pub grad: bool,
}

/// Softmax cross-entropy of `[n, c]` logits against labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftmaxCe {
    /// Rows.
    pub n: usize,
    /// Classes.
    pub c: usize,
    /// Mean over rows (else sum).
    pub mean: bool,
    /// The gradient: arguments dloss, logits, labels (else logits, labels).
    pub grad: bool,
    /// The labels' element type (i32 or i64).
    pub labels: DType,
}

/// Argmax along the middle axis of `[outer, dim, inner]`, as i64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argmax {
    /// Product of the dimensions before the axis.
    pub outer: usize,
    /// The axis' size.
    pub dim: usize,
    /// Product of the dimensions after the axis.
    pub inner: usize,
    /// The argument's element type.
    pub dtype: DType,
}

fn row_max(x: &[f32], at: &dyn Fn(usize) -> usize, dim: usize) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for c in 0..dim {
        let v = x[at(c)];
        m = if m.is_nan() || v.is_nan() {
            f32::NAN
        } else if v > m {
            v
        } else {
            m
        };
    }
    if m.is_finite() { m } else { 0.0 }
}

/// `y = softmax(x)` or `log_softmax(x)` along the middle axis.
pub fn softmax(s: &Softmax, x: &[f32], y: &mut [f32]) {
    let (dim, inner) = (s.dim, s.inner);
    crate::rt::team::for_chunks(y, (dim * inner).max(1), &|o, yo| {
        let xo = &x[o * dim * inner..][..dim * inner];
        for i in 0..inner {
            let at = |c: usize| c * inner + i;
            let m = row_max(xo, &at, dim);
            let mut acc = 0.0f64;
            for c in 0..dim {
                acc += (xo[at(c)] - m).exp() as f64;
            }
            let sum = acc as f32;
            let ls = sum.ln();
            for c in 0..dim {
                let z = xo[at(c)] - m;
                yo[at(c)] = if s.log { z - ls } else { z.exp() / sum };
            }
        }
    });
}

/// The gradient of softmax (`y * (dy - sum(dy * y))`) or log-softmax
/// (`dy - exp(y) * sum(dy)`) from the output `y`.
pub fn softmax_grad(s: &Softmax, dy: &[f32], y: &[f32], dx: &mut [f32]) {
    let (dim, inner) = (s.dim, s.inner);
    crate::rt::team::for_chunks(dx, (dim * inner).max(1), &|o, dxo| {
        let base = o * dim * inner;
        let (dyo, yo) = (&dy[base..][..dim * inner], &y[base..][..dim * inner]);
        for i in 0..inner {
            let at = |c: usize| c * inner + i;
            let mut acc = 0.0f64;
            for c in 0..dim {
                acc += if s.log {
                    dyo[at(c)] as f64
                } else {
                    (dyo[at(c)] * yo[at(c)]) as f64
                };
            }
            let sum = acc as f32;
            for c in 0..dim {
                let k = at(c);
                dxo[k] = if s.log {
                    dyo[k] - yo[k].exp() * sum
                } else {
                    yo[k] * (dyo[k] - sum)
                };
            }
        }
    });
}

fn label_at(labels: &[i64], r: usize, c: usize) -> Option<usize> {
    usize::try_from(labels[r]).ok().filter(|&l| l < c)
}

/// The loss; `None` for a label out of range.
pub fn softmax_ce(s: &SoftmaxCe, logits: &[f32], labels: &[i64]) -> Option<f32> {
    let mut lsm = vec![0.0f32; s.n * s.c];
    let sm = Softmax {
        outer: s.n,
        dim: s.c,
        inner: 1,
        log: true,
        grad: false,
    };
    softmax(&sm, logits, &mut lsm);
    let mut total = 0.0f64;
    for r in 0..s.n {
        let l = label_at(labels, r, s.c)?;
        total -= lsm[r * s.c + l] as f64;
    }
    Some((if s.mean { total / s.n as f64 } else { total }) as f32)
}

/// The gradient `dloss * (softmax - onehot)` (divided by n for the mean); `false` for a
/// label out of range.
pub fn softmax_ce_grad(
    s: &SoftmaxCe,
    dloss: f32,
    logits: &[f32],
    labels: &[i64],
    dx: &mut [f32],
) -> bool {
    let sm = Softmax {
        outer: s.n,
        dim: s.c,
        inner: 1,
        log: false,
        grad: false,
    };
    softmax(&sm, logits, dx);
    let scale = if s.mean {
        dloss / s.n.max(1) as f32
    } else {
        dloss
    };
    for r in 0..s.n {
        let Some(l) = label_at(labels, r, s.c) else {
            return false;
        };
        dx[r * s.c + l] -= 1.0;
        for v in &mut dx[r * s.c..(r + 1) * s.c] {
            *v *= scale;
        }
    }
    true
}

/// The `qatc_softmax` kernel.
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan.
pub unsafe extern "C" fn qatc_softmax(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let Kernel::Softmax(s) = &call.kernel else {
        return -1;
    };
    let len = s.outer * s.dim * s.inner;
    // SAFETY: the plan sized the buffers for `s`.
    unsafe {
        if s.grad {
            softmax_grad(
                s,
                slice(ctx, call.args[0], len),
                slice(ctx, call.args[1], len),
                slice_mut(ctx, call.out, len),
            );
        } else {
            softmax(
                s,
                slice(ctx, call.args[0], len),
                slice_mut(ctx, call.out, len),
            );
        }
    }
    0
}

/// Labels as i64, from i32 or i64 storage.
///
/// # Safety
/// `loc` must hold `n` labels of type `dtype`.
unsafe fn labels(ctx: &RunCtx, loc: crate::rt::Loc, n: usize, dtype: DType) -> Vec<i64> {
    // SAFETY: as the caller promised.
    unsafe {
        match dtype {
            DType::I64 => slice::<i64>(ctx, loc, n).to_vec(),
            _ => slice::<i32>(ctx, loc, n)
                .iter()
                .map(|&v| v as i64)
                .collect(),
        }
    }
}

/// The `qatc_softmax_ce` kernel.
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan.
pub unsafe extern "C" fn qatc_softmax_ce(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let Kernel::SoftmaxCe(s) = &call.kernel else {
        return -1;
    };
    let len = s.n * s.c;
    // SAFETY: the plan sized the buffers for `s`.
    unsafe {
        if s.grad {
            let dloss = slice::<f32>(ctx, call.args[0], 1)[0];
            let logits = slice(ctx, call.args[1], len);
            let l = labels(ctx, call.args[2], s.n, s.labels);
            if !softmax_ce_grad(s, dloss, logits, &l, slice_mut(ctx, call.out, len)) {
                return status::BAD_LABEL;
            }
        } else {
            let logits = slice(ctx, call.args[0], len);
            let l = labels(ctx, call.args[1], s.n, s.labels);
            match softmax_ce(s, logits, &l) {
                Some(v) => slice_mut::<f32>(ctx, call.out, 1)[0] = v,
                None => return status::BAD_LABEL,
            }
        }
    }
    0
}

fn argmax_of<T: Copy + PartialOrd>(a: &Argmax, x: &[T], nan: impl Fn(T) -> bool, out: &mut [i64]) {
    for o in 0..a.outer {
        for i in 0..a.inner {
            let mut best = 0usize;
            let mut bv = x[o * a.dim * a.inner + i];
            for c in 1..a.dim {
                let v = x[(o * a.dim + c) * a.inner + i];
                if !nan(bv) && (v > bv || nan(v)) {
                    best = c;
                    bv = v;
                }
            }
            out[o * a.inner + i] = best as i64;
        }
    }
}

/// The `qatc_argmax` kernel.
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan.
pub unsafe extern "C" fn qatc_argmax(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let Kernel::Argmax(a) = &call.kernel else {
        return -1;
    };
    let (len, olen) = (a.outer * a.dim * a.inner, a.outer * a.inner);
    // SAFETY: the plan sized the buffers for `a`.
    unsafe {
        let out = slice_mut::<i64>(ctx, call.out, olen);
        let x = call.args[0];
        match a.dtype {
            DType::F32 => argmax_of(a, slice::<f32>(ctx, x, len), |v: f32| v.is_nan(), out),
            DType::I32 => argmax_of(a, slice::<i32>(ctx, x, len), |_: i32| false, out),
            DType::I64 => argmax_of(a, slice::<i64>(ctx, x, len), |_: i64| false, out),
            DType::I16 => argmax_of(a, slice::<i16>(ctx, x, len), |_: i16| false, out),
            DType::I8 => argmax_of(a, slice::<i8>(ctx, x, len), |_: i8| false, out),
            DType::U8 => argmax_of(a, slice::<u8>(ctx, x, len), |_: u8| false, out),
            DType::Bool | DType::F64 => return -1,
        }
    }
    0
}
