//! Batch normalization over the channel axis 1 of `[N, C, ...]` tensors: the inference
//! form with given statistics, the training form with batch statistics (biased variance),
//! and their gradients.
//!
//! Per-channel statistics accumulate in f64 and are rounded once to the element type;
//! the per-element arithmetic is in the element type:
//! `y = (x - mean) * (1 / sqrt(var + eps)) * gamma + beta`.

use super::KResult;
use crate::num::Float;

/// `(n, c, inner)` of a `[N, C, ...]` shape.
pub fn layout(shape: &[usize]) -> KResult<(usize, usize, usize)> {
    if shape.len() < 2 {
        return Err(format!("batch norm needs rank >= 2, found shape {shape:?}"));
    }
    Ok((shape[0], shape[1], super::numel(&shape[2..])?))
}

fn check(x: usize, l: (usize, usize, usize), params: &[usize]) -> KResult<()> {
    if x != l.0 * l.1 * l.2 || params.iter().any(|&p| p != l.1) {
        return Err("per-channel parameters do not match the channel dimension".into());
    }
    Ok(())
}

/// Visits the `inner`-long runs of channel `c`.
fn runs<T>(x: &[T], l: (usize, usize, usize), c: usize) -> impl Iterator<Item = &[T]> {
    let (n, ch, inner) = l;
    (0..n).map(move |ni| &x[(ni * ch + c) * inner..][..inner])
}

/// Batch mean and biased variance of each channel (f64 accumulation, two passes).
pub fn batch_stats<T: Float>(x: &[T], l: (usize, usize, usize)) -> (Vec<T>, Vec<T>) {
    let count = (l.0 * l.2).max(1) as f64;
    let mut means = Vec::with_capacity(l.1);
    let mut vars = Vec::with_capacity(l.1);
    for c in 0..l.1 {
        let s: f64 = runs(x, l, c).flatten().map(|v| v.to_f64()).sum();
        let m = s / count;
        let v: f64 = runs(x, l, c)
            .flatten()
            .map(|v| (v.to_f64() - m).powi(2))
            .sum::<f64>()
            / count;
        means.push(T::from_f64(m));
        vars.push(T::from_f64(v));
    }
    (means, vars)
}

fn inv_std<T: Float>(var: &[T], eps: T) -> Vec<T> {
    var.iter().map(|&v| T::ONE / (v + eps).sqrt()).collect()
}

/// Normalizes with the given statistics.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm<T: Float>(
    x: &[T],
    shape: &[usize],
    gamma: &[T],
    beta: &[T],
    mean: &[T],
    var: &[T],
    eps: T,
) -> KResult<Vec<T>> {
    let l = layout(shape)?;
    check(
        x.len(),
        l,
        &[gamma.len(), beta.len(), mean.len(), var.len()],
    )?;
    let istd = inv_std(var, eps);
    let mut y = Vec::with_capacity(x.len());
    for ni in 0..l.0 {
        for c in 0..l.1 {
            let run = &x[(ni * l.1 + c) * l.2..][..l.2];
            let (m, s, g, b) = (mean[c], istd[c], gamma[c], beta[c]);
            y.extend(run.iter().map(|&v| (v - m) * s * g + b));
        }
    }
    Ok(y)
}

/// Normalizes with the batch's own statistics.
pub fn batch_norm_train<T: Float>(
    x: &[T],
    shape: &[usize],
    gamma: &[T],
    beta: &[T],
    eps: T,
) -> KResult<Vec<T>> {
    let l = layout(shape)?;
    check(x.len(), l, &[gamma.len(), beta.len()])?;
    let (mean, var) = batch_stats(x, l);
    batch_norm(x, shape, gamma, beta, &mean, &var, eps)
}

/// `dy * gamma / sqrt(var + eps)`.
pub fn grad_input<T: Float>(
    dy: &[T],
    shape: &[usize],
    gamma: &[T],
    var: &[T],
    eps: T,
) -> KResult<Vec<T>> {
    let l = layout(shape)?;
    check(dy.len(), l, &[gamma.len(), var.len()])?;
    let istd = inv_std(var, eps);
    let mut dx = Vec::with_capacity(dy.len());
    for ni in 0..l.0 {
        for c in 0..l.1 {
            let k = gamma[c] * istd[c];
            dx.extend(dy[(ni * l.1 + c) * l.2..][..l.2].iter().map(|&d| d * k));
        }
    }
    Ok(dx)
}

/// `sum(dy * (x - mean) / sqrt(var + eps))` per channel.
pub fn grad_gamma<T: Float>(
    dy: &[T],
    x: &[T],
    shape: &[usize],
    mean: &[T],
    var: &[T],
    eps: T,
) -> KResult<Vec<T>> {
    let l = layout(shape)?;
    check(dy.len(), l, &[mean.len(), var.len()])?;
    check(x.len(), l, &[])?;
    let istd = inv_std(var, eps);
    Ok((0..l.1)
        .map(|c| {
            let s: f64 = runs(dy, l, c)
                .zip(runs(x, l, c))
                .flat_map(|(d, xv)| d.iter().zip(xv))
                .map(|(&d, &v)| (d * ((v - mean[c]) * istd[c])).to_f64())
                .sum();
            T::from_f64(s)
        })
        .collect())
}

/// Gradient of the training form with respect to x:
/// `gamma / sigma * (dy - mean(dy) - x_hat * mean(dy * x_hat))` per channel.
pub fn train_grad_input<T: Float>(
    dy: &[T],
    x: &[T],
    shape: &[usize],
    gamma: &[T],
    eps: T,
) -> KResult<Vec<T>> {
    let l = layout(shape)?;
    check(dy.len(), l, &[gamma.len()])?;
    check(x.len(), l, &[])?;
    let (mean, var) = batch_stats(x, l);
    let istd = inv_std(&var, eps);
    let count = (l.0 * l.2).max(1) as f64;
    let mut mdy = Vec::with_capacity(l.1);
    let mut mdyx = Vec::with_capacity(l.1);
    for c in 0..l.1 {
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for (d, xv) in runs(dy, l, c).zip(runs(x, l, c)) {
            for (&d, &v) in d.iter().zip(xv) {
                s1 += d.to_f64();
                s2 += (d * ((v - mean[c]) * istd[c])).to_f64();
            }
        }
        mdy.push(T::from_f64(s1 / count));
        mdyx.push(T::from_f64(s2 / count));
    }
    let mut dx = Vec::with_capacity(x.len());
    for ni in 0..l.0 {
        for c in 0..l.1 {
            let off = (ni * l.1 + c) * l.2;
            let k = gamma[c] * istd[c];
            for (&d, &v) in dy[off..][..l.2].iter().zip(&x[off..][..l.2]) {
                let xh = (v - mean[c]) * istd[c];
                dx.push(k * (d - mdy[c] - xh * mdyx[c]));
            }
        }
    }
    Ok(dx)
}

/// Gradient of the training form with respect to gamma: `sum(dy * x_hat)` with batch
/// statistics.
pub fn train_grad_gamma<T: Float>(dy: &[T], x: &[T], shape: &[usize], eps: T) -> KResult<Vec<T>> {
    let l = layout(shape)?;
    check(x.len(), l, &[])?;
    let (mean, var) = batch_stats(x, l);
    grad_gamma(dy, x, shape, &mean, &var, eps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_batch_norm() {
        // x [2, 1, 2]: channel values 1 2 3 4, mean 2.5, biased var 1.25
        let x = [1.0f64, 2.0, 3.0, 4.0];
        let shape = [2, 1, 2];
        let (m, v) = batch_stats(&x, layout(&shape).unwrap());
        assert_eq!((m[0], v[0]), (2.5, 1.25));
        let y = batch_norm_train(&x, &shape, &[2.0], &[1.0], 0.0).unwrap();
        let s = 1.25f64.sqrt();
        let want: Vec<f64> = x.iter().map(|v| 2.0 * (v - 2.5) / s + 1.0).collect();
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-15);
        }
        // given statistics: mean 1, var 3, eps 1 -> (x - 1) / 2 * gamma + beta
        let y = batch_norm(&x, &shape, &[4.0], &[0.5], &[1.0], &[3.0], 1.0).unwrap();
        assert_eq!(y, [0.5, 2.5, 4.5, 6.5]);
        assert_eq!(
            grad_input(&[1.0, 2.0, 3.0, 4.0], &shape, &[4.0], &[3.0], 1.0).unwrap(),
            [2.0, 4.0, 6.0, 8.0]
        );
        // sum(dy * x_hat) with dy = 1: x_hat sums to 0
        let g = grad_gamma(&[1.0; 4], &x, &shape, &[1.0], &[3.0], 1.0).unwrap();
        assert_eq!(g, [(0.0 + 1.0 + 2.0 + 3.0) / 2.0]);
        // the training gradient of a constant dy is 0 (mean removed)
        let dx = train_grad_input(&[1.0; 4], &x, &shape, &[1.0], 1e-5).unwrap();
        assert!(dx.iter().all(|d| d.abs() < 1e-12));
        assert!(batch_norm(&x, &shape, &[1.0, 2.0], &[0.0], &[0.0], &[1.0], 0.0).is_err());
    }

    #[test]
    fn train_grad_matches_finite_differences() {
        let x = [0.3f64, -1.2, 2.5, 0.7, -0.4, 1.9, 0.1, -2.2];
        let shape = [2, 2, 2];
        let gamma = [1.5, -0.5];
        let beta = [0.2, 0.1];
        let dy = [0.5, -1.0, 0.25, 2.0, -0.75, 1.5, 1.0, -0.5];
        let loss = |x: &[f64]| -> f64 {
            let y = batch_norm_train(x, &shape, &gamma, &beta, 1e-5).unwrap();
            y.iter().zip(&dy).map(|(a, b)| a * b).sum()
        };
        let dx = train_grad_input(&dy, &x, &shape, &gamma, 1e-5).unwrap();
        for i in 0..x.len() {
            let h = 1e-6;
            let mut xp = x;
            xp[i] += h;
            let mut xm = x;
            xm[i] -= h;
            let fd = (loss(&xp) - loss(&xm)) / (2.0 * h);
            assert!(
                (fd - dx[i]).abs() < 1e-7,
                "element {i}: fd {fd} vs {}",
                dx[i]
            );
        }
        let dg = train_grad_gamma(&dy, &x, &shape, 1e-5).unwrap();
        for c in 0..2 {
            let h = 1e-6;
            let f = |g: f64| {
                let mut gm = gamma;
                gm[c] = g;
                let y = batch_norm_train(&x, &shape, &gm, &beta, 1e-5).unwrap();
                y.iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>()
            };
            let fd = (f(gamma[c] + h) - f(gamma[c] - h)) / (2.0 * h);
            assert!((fd - dg[c]).abs() < 1e-7);
        }
    }
}
