//! Elementwise float ops: activations and their gradients, the unary math functions, and
//! the broadcasting binary ops with an optional fused activation.
//!
//! Choices where the op docs leave room (all as PyTorch): relu(NaN) = NaN; relu6 clamps
//! with NaN passing through; sigmoid uses `1 / (1 + e^-x)` for x >= 0 and `e^x / (1 + e^x)`
//! below so that neither side overflows; gelu is the exact erf form.

use super::{KResult, broadcast_shapes, broadcast_strides, numel, walk};
use crate::num::Float;

/// A fused activation (the `act` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Relu6,
}

impl Act {
    /// The activation named by the attribute value.
    pub fn from_name(s: &str) -> Option<Act> {
        match s {
            "none" => Some(Act::None),
            "relu" => Some(Act::Relu),
            "relu6" => Some(Act::Relu6),
            _ => None,
        }
    }
    /// Applies the activation in place.
    pub fn apply<T: Float>(self, v: &mut [T]) {
        match self {
            Act::None => {}
            Act::Relu => v.iter_mut().for_each(|x| *x = relu(*x)),
            Act::Relu6 => v.iter_mut().for_each(|x| *x = relu6(*x)),
        }
    }
}

pub fn relu<T: Float>(x: T) -> T {
    if x < T::ZERO { T::ZERO } else { x }
}

pub fn relu6<T: Float>(x: T) -> T {
    let six = T::from_f64(6.0);
    if x < T::ZERO {
        T::ZERO
    } else if x > six {
        six
    } else {
        x
    }
}

pub fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

pub fn gelu<T: Float>(x: T) -> T {
    let half = T::from_f64(0.5);
    x * half * (T::ONE + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf())
}

/// d gelu / dx = Phi(x) + x * phi(x).
pub fn gelu_grad<T: Float>(x: T) -> T {
    let half = T::from_f64(0.5);
    let cdf = half * (T::ONE + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf());
    let pdf = (-(x * x) * half).exp()
        * T::from_f64(0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
    cdf + x * pdf
}

/// Elementwise map.
pub fn map<T: Float>(x: &[T], f: impl Fn(T) -> T) -> Vec<T> {
    x.iter().map(|&v| f(v)).collect()
}

/// Elementwise map of two same-length slices.
pub fn zip<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> KResult<Vec<T>> {
    if a.len() != b.len() {
        return Err(format!(
            "operands have {} and {} elements",
            a.len(),
            b.len()
        ));
    }
    Ok(a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect())
}

/// Broadcasting binary op: returns the output shape and values.
pub fn binary<T: Float>(
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    f: impl Fn(T, T) -> T,
) -> KResult<(Vec<usize>, Vec<T>)> {
    let out = broadcast_shapes(sa, sb)?;
    let n = numel(&out)?;
    if a.len() != numel(sa)? || b.len() != numel(sb)? {
        return Err("operand data does not match its shape".into());
    }
    if sa == sb {
        return Ok((out, a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()));
    }
    if b.len() == 1 && a.len() == n {
        let y = b[0];
        return Ok((out, a.iter().map(|&x| f(x, y)).collect()));
    }
    if a.len() == 1 && b.len() == n {
        let x = a[0];
        return Ok((out, b.iter().map(|&y| f(x, y)).collect()));
    }
    // general case: walk the output, the innermost dimension in a tight loop
    let ta = broadcast_strides(sa, &out)?;
    let tb = broadcast_strides(sb, &out)?;
    let r = out.len();
    let inner = out[r - 1];
    let (ia, ib) = (ta[r - 1], tb[r - 1]);
    let outer_shape = &out[..r - 1];
    let mut offs = Vec::with_capacity(n / inner.max(1));
    // pair the two operands' row offsets by walking with interleaved strides
    let mut oa = Vec::new();
    walk(outer_shape, &ta[..r - 1], |o| oa.push(o));
    walk(outer_shape, &tb[..r - 1], |o| offs.push(o));
    let mut v = Vec::with_capacity(n);
    for (&ra, &rb) in oa.iter().zip(&offs) {
        for j in 0..inner {
            v.push(f(a[ra + j * ia], b[rb + j * ib]));
        }
    }
    Ok((out, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations() {
        assert_eq!(relu(-1.0f32), 0.0);
        assert_eq!(relu6(7.5f64), 6.0);
        assert_eq!(relu6(3.0f32), 3.0);
        assert_eq!(sigmoid(0.0f64), 0.5);
        assert!((sigmoid(-800.0f64)).abs() < 1e-300);
        assert_eq!(sigmoid(800.0f32), 1.0);
        // gelu(1) = 0.5 * (1 + erf(1/sqrt 2)) = 0.8413447460685429
        assert!((gelu(1.0f64) - 0.8413447460685429).abs() < 1e-15);
        // gelu'(0) = 0.5
        assert!((gelu_grad(0.0f64) - 0.5).abs() < 1e-15);
        // gelu'(1) = Phi(1) + phi(1) = 0.8413447460685429 + 0.24197072451914337
        assert!((gelu_grad(1.0f64) - 1.0833154705876864).abs() < 1e-15);
    }

    #[test]
    fn broadcasting_binary() {
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let (s, v) = binary(&a, &[2, 3], &[10.0, 20.0, 30.0], &[3], |x, y| x + y).unwrap();
        assert_eq!(s, [2, 3]);
        assert_eq!(v, [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        let (s, v) = binary(
            &[1.0f32, 2.0],
            &[2, 1],
            &[10.0, 20.0, 30.0],
            &[1, 3],
            |x, y| x * y,
        )
        .unwrap();
        assert_eq!(s, [2, 3]);
        assert_eq!(v, [10.0, 20.0, 30.0, 20.0, 40.0, 60.0]);
        let (_, v) = binary(&[2.0f64], &[], &a.map(f64::from), &[2, 3], |x, y| x - y).unwrap();
        assert_eq!(v, [1.0, 0.0, -1.0, -2.0, -3.0, -4.0]);
        assert!(binary(&a, &[2, 3], &a[..2], &[2], |x, y| x + y).is_err());
    }
}
