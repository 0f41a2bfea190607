//! Optimizer updates, elementwise in the element type, with the formulas of the op table
//! (PyTorch's SGD and Adam/AdamW): weight decay `wd`, momentum buffers and Adam moments.
//!
//! Adam's bias corrections `1 - beta^t` are computed in f64 from the step value (as
//! PyTorch does in Python) and rounded once; a step below 1 is an error.

use super::KResult;
use super::elementwise::zip;
use crate::num::Float;

/// `p - lr * (g + wd * p)`.
pub fn sgd_update<T: Float>(p: &[T], g: &[T], lr: T, wd: T) -> KResult<Vec<T>> {
    zip(p, g, |p, g| p - lr * (g + wd * p))
}

/// `momentum * buf + (1 - dampening) * (g + wd * p)`.
pub fn sgd_momentum<T: Float>(
    buf: &[T],
    g: &[T],
    p: &[T],
    momentum: T,
    dampening: T,
    wd: T,
) -> KResult<Vec<T>> {
    let gd = zip(g, p, |g, p| g + wd * p)?;
    zip(buf, &gd, |b, g| momentum * b + (T::ONE - dampening) * g)
}

/// `beta * m + (1 - beta) * (g + wd * p)^order`, order 1 or 2.
pub fn adam_moment<T: Float>(
    m: &[T],
    g: &[T],
    p: &[T],
    beta: T,
    order: i64,
    wd: T,
) -> KResult<Vec<T>> {
    if order != 1 && order != 2 {
        return Err(format!("'order' must be 1 or 2, found {order}"));
    }
    let gd = zip(g, p, |g, p| g + wd * p)?;
    zip(m, &gd, |m, g| {
        let g = if order == 2 { g * g } else { g };
        beta * m + (T::ONE - beta) * g
    })
}

/// Adam(W) settings.
#[derive(Clone, Copy, Debug)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// `p - s * m / (sqrt(v) * r + eps) - lr * wd * p` with the per-step scalars
/// `s = lr / (1 - beta1^t)` and `r = 1 / sqrt(1 - beta2^t)`, rounded to `T` in that order
/// (the op table's definition, which the JIT computes the same way).
pub fn adam_update<T: Float>(
    p: &[T],
    m: &[T],
    v: &[T],
    step: T,
    lr: T,
    a: Adam,
) -> KResult<Vec<T>> {
    let t = step.to_f64();
    if t.is_nan() || t < 1.0 {
        return Err(format!("step must be >= 1 (steps count from 1), found {t}"));
    }
    if m.len() != p.len() || v.len() != p.len() {
        return Err("param and moments have different sizes".into());
    }
    let bc1 = T::from_f64(1.0 - a.beta1.powf(t));
    let bc2 = T::from_f64(1.0 - a.beta2.powf(t));
    let (eps, wd) = (T::from_f64(a.eps), T::from_f64(a.weight_decay));
    let (s, r) = (lr / bc1, T::from_f64(1.0) / bc2.sqrt());
    Ok(p.iter()
        .zip(m)
        .zip(v)
        .map(|((&p, &m), &v)| p - s * m / (v.sqrt() * r + eps) - lr * wd * p)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_follow_the_formulas() {
        // sgd: 1 - 0.1 * (0.5 + 0.01 * 1) = 0.949
        let p = sgd_update(&[1.0f64, -2.0], &[0.5, 0.25], 0.1, 0.01).unwrap();
        assert!(
            (p[0] - 0.949).abs() < 1e-15 && (p[1] - (-2.0 - 0.1 * (0.25 - 0.02))).abs() < 1e-15
        );
        // momentum: 0.9 * 2 + (1 - 0.1) * (1 + 0 * p) = 2.7
        let b = sgd_momentum(&[2.0f64], &[1.0], &[5.0], 0.9, 0.1, 0.0).unwrap();
        assert!((b[0] - 2.7).abs() < 1e-15);
        // first moment: 0.9 * 0 + 0.1 * (2 + 0.5 * 2) = 0.3; second: 0.001 * 3^2 = 0.009
        let m = adam_moment(&[0.0f64], &[2.0], &[2.0], 0.9, 1, 0.5).unwrap();
        assert!((m[0] - 0.3).abs() < 1e-15);
        let v = adam_moment(&[0.0f64], &[2.0], &[2.0], 0.999, 2, 0.5).unwrap();
        assert!((v[0] - 0.009).abs() < 1e-15);
        // first Adam step moves by lr * sign(g) (bias-corrected m / sqrt(v) = 1), minus decay
        let a = Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let g = 0.3f64;
        let m = [0.1 * g];
        let v = [0.001 * g * g];
        let p = adam_update(&[1.0f64], &m, &v, 1.0, 0.01, a).unwrap();
        let want = 1.0 - 0.01 * 1.0 / (1.0 + 1e-8 / g) - 0.01 * 0.01;
        assert!((p[0] - want).abs() < 1e-12, "{} vs {want}", p[0]);
        assert!(adam_update(&[1.0f64], &m, &v, 0.0, 0.01, a).is_err());
        assert!(adam_moment(&[0.0f64], &[2.0], &[2.0], 0.9, 3, 0.0).is_err());
    }
}
