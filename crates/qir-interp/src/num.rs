//! The float element trait: every float kernel is written once over [`Float`] and runs in
//! f32 (the default) or f64 ([`crate::Precision::F64`], for finite-difference checks).
//!
//! Invariant: the methods are the IEEE operations of the type itself (no hidden widening),
//! so an f32 kernel rounds exactly where PyTorch's f32 kernels round.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

use qir::Data;

/// A float element type (f32 or f64).
pub trait Float:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Send
    + Sync
    + 'static
{
    /// The IR name of the type (`f32`, `f64`).
    const NAME: &'static str;
    const ZERO: Self;
    const ONE: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;

    /// Rounds an f64 to this type (exact for f64).
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// `v as Self` (exact for the integers quantized values use).
    fn from_i64(v: i64) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn erf(self) -> Self;
    fn trunc(self) -> Self;
    /// Round half to even (C's `nearbyint` in the default rounding mode).
    fn round_even(self) -> Self;
    /// Fused multiply-add `self * a + b` with one rounding.
    fn mul_add(self, a: Self, b: Self) -> Self;
    fn is_nan(self) -> bool;
    fn is_finite(self) -> bool;
    /// The data of a tensor of this type, if it is one.
    fn slice(d: &Data) -> Option<&[Self]>;
    /// Wraps a vector as tensor data.
    fn into_data(v: Vec<Self>) -> Data;
    /// `(scale, zero point)` of an observed range in this type's arithmetic
    /// ([`qir::quant::qparams_f32`] / [`qir::quant::qparams_f64`]).
    fn qparams(mn: Self, mx: Self, rule: qir::quant::QparamRule) -> (Self, i64);
    /// One value's `quantize` in this type's arithmetic ([`qir::quant::quantize_f32`] /
    /// [`qir::quant::quantize_f64`]).
    fn quantize(self, scale: Self, zp: i64, qmin: i64, qmax: i64, r: qir::quant::Rounding) -> i64;
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $variant:ident, $erf:path, $qparams:path, $quantize:path) => {
        impl Float for $t {
            const NAME: &'static str = $name;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = <$t>::INFINITY;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_i64(v: i64) -> Self {
                v as $t
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn erf(self) -> Self {
                $erf(self)
            }
            fn trunc(self) -> Self {
                <$t>::trunc(self)
            }
            fn round_even(self) -> Self {
                <$t>::round_ties_even(self)
            }
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn slice(d: &Data) -> Option<&[Self]> {
                match d {
                    Data::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_data(v: Vec<Self>) -> Data {
                Data::$variant(v)
            }
            fn qparams(mn: Self, mx: Self, rule: qir::quant::QparamRule) -> (Self, i64) {
                $qparams(mn, mx, rule)
            }
            fn quantize(
                self,
                scale: Self,
                zp: i64,
                qmin: i64,
                qmax: i64,
                r: qir::quant::Rounding,
            ) -> i64 {
                $quantize(self, scale, zp, qmin, qmax, r)
            }
        }
    };
}

impl_float!(
    f32,
    "f32",
    F32,
    libm::erff,
    qir::quant::qparams_f32,
    qir::quant::quantize_f32
);
impl_float!(
    f64,
    "f64",
    F64,
    libm::erf,
    qir::quant::qparams_f64,
    qir::quant::quantize_f64
);

/// `max` that propagates NaN from either side (as PyTorch's `maximum`).
pub fn max_nan<T: Float>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        if a.is_nan() { a } else { b }
    } else if b > a {
        b
    } else {
        a
    }
}

/// `min` that propagates NaN from either side (as PyTorch's `minimum`).
pub fn min_nan<T: Float>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        if a.is_nan() { a } else { b }
    } else if b < a {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_modes() {
        assert_eq!(Float::round_even(2.5f32), 2.0);
        assert_eq!(Float::round_even(-2.5f32), -2.0);
        assert_eq!(Float::round_even(3.5f64), 4.0);
        // quantize rounds ties by its policy: 0.625 / 0.25 = 2.5
        use qir::quant::Rounding::{HalfAwayFromZero, HalfEven};
        assert_eq!(Float::quantize(0.625f32, 0.25, 0, -128, 127, HalfEven), 2);
        assert_eq!(
            Float::quantize(0.625f32, 0.25, 0, -128, 127, HalfAwayFromZero),
            3
        );
        assert_eq!(
            Float::quantize(-0.625f64, 0.25, 0, -128, 127, HalfAwayFromZero),
            -3
        );
        assert_eq!(Float::quantize(f32::NAN, 0.25, 5, -128, 127, HalfEven), 5);
        assert_eq!(Float::quantize(1e9f32, 0.25, 5, -128, 127, HalfEven), 127);
    }

    #[test]
    fn nan_propagating_extremes() {
        assert!(max_nan(1.0f32, f32::NAN).is_nan());
        assert!(min_nan(f64::NAN, 1.0).is_nan());
        assert_eq!(max_nan(1.0f32, 2.0), 2.0);
        assert_eq!(min_nan(1.0f32, 2.0), 1.0);
    }
}
