//! Reductions and the ops built on them: reduce_sum/mean, variance and their gradients,
//! sum_to_like, softmax and log-softmax along an axis with their gradients, the
//! softmax cross-entropy loss and its gradient, and argmax.
//!
//! Sums accumulate in f64 and round once to the element type. Softmax subtracts the row
//! maximum first; cross-entropy is `logsumexp(z) - z[label]` per row. A label outside
//! `[0, C)` is an error that names the row (PyTorch raises too).

use super::{KResult, numel, reduce_map, split_at_axis};
use crate::num::Float;

/// Sums (and counts) of `x` over `axes`; returns the kept-dims shape, the sums and the
/// number of elements folded into each.
pub fn sums<T: Float>(
    x: &[T],
    shape: &[usize],
    axes: &[usize],
) -> KResult<(Vec<usize>, Vec<f64>, usize)> {
    let (kept, map) = reduce_map(shape, axes)?;
    if map.len() != x.len() {
        return Err("data does not match its shape".into());
    }
    let mut acc = vec![0.0f64; numel(&kept)?];
    for (&v, &o) in x.iter().zip(&map) {
        acc[o] += v.to_f64();
    }
    let count = axes.iter().map(|&a| shape[a]).product::<usize>();
    Ok((kept, acc, count))
}

/// Biased variance over `axes` (two passes, f64).
pub fn variance<T: Float>(x: &[T], shape: &[usize], axes: &[usize]) -> KResult<Vec<T>> {
    let (_, map) = reduce_map(shape, axes)?;
    let (_, s, count) = sums(x, shape, axes)?;
    let c = count.max(1) as f64;
    let mean: Vec<f64> = s.iter().map(|v| v / c).collect();
    let mut acc = vec![0.0f64; mean.len()];
    for (&v, &o) in x.iter().zip(&map) {
        acc[o] += (v.to_f64() - mean[o]).powi(2);
    }
    Ok(acc.into_iter().map(|v| T::from_f64(v / c)).collect())
}

/// Gradient of reduce_mean: `dy / count` broadcast back over `axes`. `dy` has the reduced
/// shape (with or without kept dims; the element order is the same).
pub fn reduce_mean_grad<T: Float>(dy: &[T], shape: &[usize], axes: &[usize]) -> KResult<Vec<T>> {
    let (kept, map) = reduce_map(shape, axes)?;
    if dy.len() != numel(&kept)? {
        return Err("dy does not match the reduction".into());
    }
    let count = T::from_f64(axes.iter().map(|&a| shape[a]).product::<usize>().max(1) as f64);
    Ok(map.iter().map(|&o| dy[o] / count).collect())
}

/// Gradient of variance: `dy * 2 * (x - mean) / count`.
pub fn variance_grad<T: Float>(
    dy: &[T],
    x: &[T],
    shape: &[usize],
    axes: &[usize],
) -> KResult<Vec<T>> {
    let (kept, map) = reduce_map(shape, axes)?;
    if dy.len() != numel(&kept)? {
        return Err("dy does not match the reduction".into());
    }
    let (_, s, count) = sums(x, shape, axes)?;
    let c = count.max(1) as f64;
    let mean: Vec<T> = s.iter().map(|v| T::from_f64(v / c)).collect();
    let k = T::from_f64(2.0 / c);
    Ok(x.iter()
        .zip(&map)
        .map(|(&v, &o)| dy[o] * k * (v - mean[o]))
        .collect())
}

/// Softmax (or log-softmax) along `axis`.
pub fn softmax<T: Float>(x: &[T], shape: &[usize], axis: usize, log: bool) -> KResult<Vec<T>> {
    let (outer, dim, inner) = split_at_axis(shape, axis)?;
    if x.len() != outer * dim * inner {
        return Err("data does not match its shape".into());
    }
    let mut y = vec![T::ZERO; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |c: usize| (o * dim + c) * inner + i;
            let mut m = T::NEG_INFINITY;
            for c in 0..dim {
                m = crate::num::max_nan(m, x[at(c)]);
            }
            if !m.is_finite() {
                // all -inf (or a NaN/inf): let the arithmetic give PyTorch's NaNs
                m = T::ZERO;
            }
            let mut acc = 0.0f64;
            for c in 0..dim {
                acc += (x[at(c)] - m).exp().to_f64();
            }
            let s = T::from_f64(acc);
            let ls = s.ln();
            for c in 0..dim {
                let z = x[at(c)] - m;
                y[at(c)] = if log { z - ls } else { z.exp() / s };
            }
        }
    }
    Ok(y)
}

/// Gradient of softmax from its output: `y * (dy - sum(dy * y))`; of log-softmax:
/// `dy - exp(y) * sum(dy)`.
pub fn softmax_grad<T: Float>(
    dy: &[T],
    y: &[T],
    shape: &[usize],
    axis: usize,
    log: bool,
) -> KResult<Vec<T>> {
    let (outer, dim, inner) = split_at_axis(shape, axis)?;
    if y.len() != outer * dim * inner || dy.len() != y.len() {
        return Err("operands do not match the shape".into());
    }
    let mut dx = vec![T::ZERO; y.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |c: usize| (o * dim + c) * inner + i;
            let mut s = 0.0f64;
            for c in 0..dim {
                s += if log {
                    dy[at(c)].to_f64()
                } else {
                    (dy[at(c)] * y[at(c)]).to_f64()
                };
            }
            let s = T::from_f64(s);
            for c in 0..dim {
                let k = at(c);
                dx[k] = if log {
                    dy[k] - y[k].exp() * s
                } else {
                    y[k] * (dy[k] - s)
                };
            }
        }
    }
    Ok(dx)
}

/// Checks the labels of an `[n, c]` logits tensor.
fn label(labels: &[i64], row: usize, c: usize) -> KResult<usize> {
    let l = labels[row];
    usize::try_from(l)
        .ok()
        .filter(|&v| v < c)
        .ok_or_else(|| format!("label {l} of row {row} is outside [0, {c})"))
}

/// Softmax cross-entropy of `[n, c]` logits against integer labels, mean or sum over rows.
pub fn softmax_ce<T: Float>(
    logits: &[T],
    n: usize,
    c: usize,
    labels: &[i64],
    mean: bool,
) -> KResult<T> {
    if logits.len() != n * c || labels.len() != n {
        return Err("logits and labels do not match".into());
    }
    let lsm = softmax(logits, &[n, c], 1, true)?;
    let mut total = 0.0f64;
    for r in 0..n {
        let l = label(labels, r, c)?;
        total -= lsm[r * c + l].to_f64();
    }
    Ok(T::from_f64(if mean { total / n as f64 } else { total }))
}

/// Gradient of softmax cross-entropy with respect to the logits:
/// `dloss * (softmax - onehot)`, divided by n for the mean.
pub fn softmax_ce_grad<T: Float>(
    dloss: T,
    logits: &[T],
    n: usize,
    c: usize,
    labels: &[i64],
    mean: bool,
) -> KResult<Vec<T>> {
    if logits.len() != n * c || labels.len() != n {
        return Err("logits and labels do not match".into());
    }
    let mut p = softmax(logits, &[n, c], 1, false)?;
    let scale = if mean {
        dloss / T::from_f64(n.max(1) as f64)
    } else {
        dloss
    };
    for r in 0..n {
        let l = label(labels, r, c)?;
        p[r * c + l] -= T::ONE;
        for v in &mut p[r * c..(r + 1) * c] {
            *v *= scale;
        }
    }
    Ok(p)
}

/// Index of the first maximum along `axis` (a NaN counts as the maximum, as PyTorch).
pub fn argmax<T: super::pool::Ordered>(x: &[T], shape: &[usize], axis: usize) -> KResult<Vec<i64>> {
    let (outer, dim, inner) = split_at_axis(shape, axis)?;
    if x.len() != outer * dim * inner {
        return Err("data does not match its shape".into());
    }
    if dim == 0 {
        return Err("argmax over an empty axis".into());
    }
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0usize;
            let mut bv = x[o * dim * inner + i];
            for c in 1..dim {
                let v = x[(o * dim + c) * inner + i];
                if !bv.is_nan() && (v > bv || v.is_nan()) {
                    best = c;
                    bv = v;
                }
            }
            out.push(best as i64);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let (kept, s, count) = sums(&x, &[2, 3], &[1]).unwrap();
        assert_eq!((kept, s, count), (vec![2, 1], vec![6.0, 15.0], 3));
        let (_, s, _) = sums(&x, &[2, 3], &[0]).unwrap();
        assert_eq!(s, [5.0, 7.0, 9.0]);
        // variance of [1 2 3] is 2/3; of [1, 4] is 2.25
        let v = variance(&x, &[2, 3], &[1]).unwrap();
        assert_eq!(v, [2.0 / 3.0, 2.0 / 3.0]);
        assert_eq!(variance(&x, &[2, 3], &[0]).unwrap(), [2.25; 3]);
        assert_eq!(
            reduce_mean_grad(&[3.0f32, 6.0], &[2, 3], &[1]).unwrap(),
            [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
        // d var / dx = 2 (x - mean) / n: row [1 2 3] -> [-2/3, 0, 2/3]
        let g = variance_grad(&[1.0f64, 1.0], &x.map(f64::from), &[2, 3], &[1]).unwrap();
        assert_eq!(g, [-2.0 / 3.0, 0.0, 2.0 / 3.0, -2.0 / 3.0, 0.0, 2.0 / 3.0]);
    }

    #[test]
    fn softmax_and_cross_entropy() {
        // softmax([0, ln 3]) = [1/4, 3/4]
        let x = [0.0f64, 3f64.ln()];
        let y = softmax(&x, &[1, 2], 1, false).unwrap();
        assert!((y[0] - 0.25).abs() < 1e-15 && (y[1] - 0.75).abs() < 1e-15);
        let ly = softmax(&x, &[1, 2], 1, true).unwrap();
        assert!((ly[0] - 0.25f64.ln()).abs() < 1e-15);
        // along axis 0 of a [2, 1] tensor
        let y0 = softmax(&x, &[2, 1], 0, false).unwrap();
        assert_eq!(y, y0);
        // large logits do not overflow
        let big = softmax(&[1000.0f32, 1000.0], &[1, 2], 1, false).unwrap();
        assert_eq!(big, [0.5, 0.5]);
        // CE of rows [0, ln3] label 1 and [0, ln3] label 0: (-ln .75 - ln .25) / 2
        let logits = [0.0f64, 3f64.ln(), 0.0, 3f64.ln()];
        let l = softmax_ce(&logits, 2, 2, &[1, 0], true).unwrap();
        let want = (-(0.75f64.ln()) - 0.25f64.ln()) / 2.0;
        assert!((l - want).abs() < 1e-15);
        let s = softmax_ce(&logits, 2, 2, &[1, 0], false).unwrap();
        assert!((s - 2.0 * want).abs() < 1e-15);
        let g = softmax_ce_grad(1.0, &logits, 2, 2, &[1, 0], true).unwrap();
        let want = [0.125, -0.125, -0.375, 0.375];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{g:?}");
        }
        let e = softmax_ce(&logits, 2, 2, &[1, 2], true).unwrap_err();
        assert_eq!(e, "label 2 of row 1 is outside [0, 2)");
    }

    #[test]
    fn softmax_gradients_match_finite_differences() {
        let x = [0.3f64, -1.2, 2.5, 0.7, -0.4, 1.9];
        let dy = [0.5, -1.0, 0.25, 2.0, -0.75, 1.5];
        for log in [false, true] {
            let y = softmax(&x, &[2, 3], 1, log).unwrap();
            let g = softmax_grad(&dy, &y, &[2, 3], 1, log).unwrap();
            for i in 0..6 {
                let h = 1e-6;
                let f = |d: f64| {
                    let mut xp = x;
                    xp[i] += d;
                    let y = softmax(&xp, &[2, 3], 1, log).unwrap();
                    y.iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>()
                };
                let fd = (f(h) - f(-h)) / (2.0 * h);
                assert!((fd - g[i]).abs() < 1e-8, "log {log} element {i}");
            }
        }
    }

    #[test]
    fn argmax_first_on_ties() {
        let x = [1.0f32, 3.0, 3.0, 2.0, 5.0, 0.0];
        assert_eq!(argmax(&x, &[2, 3], 1).unwrap(), [1, 1]);
        assert_eq!(argmax(&x, &[2, 3], 0).unwrap(), [1, 1, 0]);
        assert_eq!(argmax(&[1.0f32, f32::NAN, 7.0], &[3], 0).unwrap(), [1]);
        assert_eq!(argmax(&[-5i8, -2, -2], &[3], 0).unwrap(), [1]);
    }
}
