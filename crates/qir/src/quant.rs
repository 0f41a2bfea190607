//! The quantization math of qatc, defined once for every executor and pass: quantization
//! parameters from an observed range (`qparams`), and the exact fixed-point arithmetic of
//! the integer ops — rounding right shifts on i128, the decomposition of a real rescale
//! factor into a Q0.31 multiplier and a shift, and exact sums of rescaled terms.
//!
//! The rescale of an integer `v` by `(multiplier, shift)` is `round(v * multiplier /
//! 2^(31 + shift))` computed exactly with a single rounding in the named mode (not
//! gemmlowp's two successive roundings). The interpreter, the JIT's integer epilogues and
//! the convert passes all call these functions, so they agree bit for bit.

/// A rounding policy of the integer ops (the IR's `rounding` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Ties to the even neighbour (IEEE's default, ONNX, NumPy).
    HalfEven,
    /// Ties away from zero (gemmlowp, TFLite, C's `round`).
    HalfAwayFromZero,
}

impl Rounding {
    /// The IR attribute spelling.
    pub fn name(self) -> &'static str {
        match self {
            Rounding::HalfEven => "half_even",
            Rounding::HalfAwayFromZero => "half_away_from_zero",
        }
    }
    /// The policy named by the IR attribute value (`half_even`, `half_away_from_zero`).
    pub fn from_name(s: &str) -> Option<Rounding> {
        match s {
            "half_even" => Some(Rounding::HalfEven),
            "half_away_from_zero" => Some(Rounding::HalfAwayFromZero),
            _ => None,
        }
    }
}

/// `round(v / 2^s)`, exact, ties by `r`. Shifts of 127 and more give 0 (no i128 operand
/// reaches 2^126 in the integer ops).
pub fn shift_round(v: i128, s: u32, r: Rounding) -> i128 {
    if s == 0 {
        return v;
    }
    if s >= 127 {
        return 0;
    }
    let q = v >> s; // floor
    let rem = v - (q << s); // in [0, 2^s)
    let half = 1i128 << (s - 1);
    if rem > half {
        q + 1
    } else if rem < half {
        q
    } else {
        match r {
            Rounding::HalfEven => q + (q & 1),
            // v / 2^s = q + 1/2: away from zero is q + 1 for v >= 0, q below
            Rounding::HalfAwayFromZero => {
                if v >= 0 {
                    q + 1
                } else {
                    q
                }
            }
        }
    }
}

/// Rescales `v` by the Q0.31 `multiplier` and right `shift` (negative: left):
/// `round(v * multiplier / 2^(31 + shift))`. `None` if `shift < -31` (the IR allows
/// [-31, 62]).
pub fn rescale(v: i64, multiplier: i64, shift: i64, r: Rounding) -> Option<i128> {
    let total = u32::try_from(31 + shift).ok()?;
    Some(shift_round(v as i128 * multiplier as i128, total, r))
}

/// `(m, e)` with `x = m * 2^e` and `m` in [0.5, 1) for finite positive `x`.
pub fn frexp(x: f64) -> Option<(f64, i32)> {
    if !(x.is_finite() && x > 0.0) {
        return None;
    }
    // scale subnormals into the normal range first
    let (x, bias) = if x < f64::MIN_POSITIVE {
        (x * 2f64.powi(64), -64)
    } else {
        (x, 0)
    };
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let m = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    Some((m, exp - 1022 + bias))
}

/// Decomposes a positive real rescale factor into `(multiplier, shift)` with `multiplier`
/// a Q0.31 value in [2^30, 2^31) and `real ≈ multiplier * 2^-(31 + shift)`, the
/// multiplier rounded to nearest. `None` for non-positive or non-finite factors and for
/// factors whose shift falls outside the IR's [-31, 62].
pub fn quantize_multiplier(real: f64) -> Option<(i64, i64)> {
    let (m, e) = frexp(real)?;
    let mut q = (m * 2f64.powi(31)).round() as i64;
    let mut e = e as i64;
    if q == 1i64 << 31 {
        q = 1 << 30;
        e += 1;
    }
    let shift = -e;
    (-31..=62).contains(&shift).then_some((q, shift))
}

/// Rescales `v` by a real factor through [`quantize_multiplier`]; `None` when the factor
/// cannot be represented.
pub fn rescale_real(v: i64, real: f64, r: Rounding) -> Option<i128> {
    let (m, s) = quantize_multiplier(real)?;
    rescale(v, m, s, r)
}

/// `round(sum_i v_i * r_i)` for real factors `r_i`, each decomposed by
/// [`quantize_multiplier`], summed exactly at a common power of two and rounded once, ties
/// as `r` says; `None` when a factor or the sum cannot be represented.
pub fn rescale_sum(terms: &[(i64, f64)], r: Rounding) -> Option<i128> {
    let mut parts = Vec::with_capacity(terms.len());
    let mut e = 0u32;
    for &(v, real) in terms {
        let (m, s) = quantize_multiplier(real)?;
        let total = u32::try_from(31 + s).ok()?;
        e = e.max(total);
        parts.push((v as i128 * m as i128, total));
    }
    let mut num = 0i128;
    for (p, total) in parts {
        let up = e - total;
        let scaled = if up == 0 {
            p
        } else if up < 100 {
            p.checked_mul(1i128 << up)?
        } else {
            return None;
        };
        num = num.checked_add(scaled)?;
    }
    Some(shift_round(num, e, r))
}

/// Settings of `qparams_scale` / `qparams_zero_point`: the integer range and how the range
/// maps onto it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QparamRule {
    /// Smallest quantized value.
    pub qmin: i64,
    /// Largest quantized value.
    pub qmax: i64,
    /// Symmetric (zero point fixed) instead of affine.
    pub symmetric: bool,
    /// Round the scale up to a power of two.
    pub power_of_two: bool,
    /// The smallest scale (a degenerate range never gives 0).
    pub eps: f64,
}

macro_rules! float_qparams {
    ($qparams:ident, $pow2:ident, $t:ty) => {
        /// Rounds a positive scale up to the next power of two (powers of two are kept).
        pub fn $pow2(s: $t) -> $t {
            match frexp(s as f64) {
                Some((0.5, _)) => s,
                Some((_, e)) => 2f64.powi(e) as $t,
                None => s,
            }
        }

        /// `(scale, zero point)` from an observed range, as PyTorch's `_calculate_qparams`,
        /// in the float type's own arithmetic: the range is widened to include 0; affine
        /// `s = (max - min) / (qmax - qmin)`, `z = clamp(qmin - round(min / s), qmin, qmax)`;
        /// symmetric `s = max(-min, max) / ((qmax - qmin) / 2)`, `z = 0` for signed ranges
        /// and `(qmin + qmax + 1) / 2` for unsigned ones; then `s = max(s, eps)` (NaN
        /// propagating), and with `power_of_two` `s` rounds up to a power of two before the
        /// zero point is derived. A NaN range gives a NaN scale and the zero point `qmin`.
        pub fn $qparams(mn: $t, mx: $t, r: QparamRule) -> ($t, i64) {
            let max_nan = |a: $t, b: $t| -> $t {
                if a.is_nan() || b.is_nan() {
                    if a.is_nan() { a } else { b }
                } else if b > a {
                    b
                } else {
                    a
                }
            };
            let lo = if mn < 0.0 || mn.is_nan() { mn } else { 0.0 };
            let hi = if mx > 0.0 || mx.is_nan() { mx } else { 0.0 };
            let span = (r.qmax - r.qmin) as f64;
            let mut s = if r.symmetric {
                max_nan(-lo, hi) / (span / 2.0) as $t
            } else {
                (hi - lo) / span as $t
            };
            s = max_nan(s, r.eps as $t);
            if r.power_of_two {
                s = $pow2(s);
            }
            let z = if r.symmetric {
                if r.qmin < 0 {
                    0
                } else {
                    (r.qmin + r.qmax + 1) / 2
                }
            } else {
                let q = (lo / s).round_ties_even() as f64;
                let q = if q.is_nan() { 0.0 } else { q };
                (r.qmin as f64 - q).clamp(r.qmin as f64, r.qmax as f64) as i64
            };
            (s, z)
        }
    };
}

float_qparams!(qparams_f32, pow2_ceil_f32, f32);
float_qparams!(qparams_f64, pow2_ceil_f64, f64);

macro_rules! float_quantize {
    ($name:ident, $t:ty) => {
        /// The `quantize` of one value in the float type's own arithmetic:
        /// `v = x * (1 / scale)`, rounded as `r` says, plus the zero point, clamped to
        /// `[qmin, qmax]`; NaN gives the zero point. The interpreter and the JIT's quantize
        /// kernel compute every value with it (the JIT's loop form and vector path keep
        /// the same operations in the same order).
        pub fn $name(x: $t, scale: $t, zp: i64, qmin: i64, qmax: i64, r: Rounding) -> i64 {
            let v = x * (1.0 / scale);
            let v = match r {
                Rounding::HalfEven => v.round_ties_even(),
                Rounding::HalfAwayFromZero => v.round(),
            };
            let q = zp as $t + v;
            if q.is_nan() {
                return zp;
            }
            let q = (q as f64).clamp(qmin as f64, qmax as f64) as i64;
            q.clamp(qmin, qmax)
        }
    };
}

float_quantize!(quantize_f32, f32);
float_quantize!(quantize_f64, f64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_round_ties_both_ways() {
        use Rounding::*;
        // 5/2 = 2.5, -5/2 = -2.5, 3/2 = 1.5, -3/2 = -1.5, -1/2 = -0.5
        assert_eq!(shift_round(5, 1, HalfEven), 2);
        assert_eq!(shift_round(5, 1, HalfAwayFromZero), 3);
        assert_eq!(shift_round(-5, 1, HalfEven), -2);
        assert_eq!(shift_round(-5, 1, HalfAwayFromZero), -3);
        assert_eq!(shift_round(3, 1, HalfEven), 2);
        assert_eq!(shift_round(-3, 1, HalfEven), -2);
        assert_eq!(shift_round(-1, 1, HalfEven), 0);
        assert_eq!(shift_round(-1, 1, HalfAwayFromZero), -1);
        // not ties: -11/4 = -2.75 -> -3, -9/4 = -2.25 -> -2
        assert_eq!(shift_round(-11, 2, HalfEven), -3);
        assert_eq!(shift_round(-9, 2, HalfAwayFromZero), -2);
        assert_eq!(shift_round(7, 0, HalfEven), 7);
    }

    #[test]
    fn multiplier_decomposition() {
        // 0.5 = 2^30 / 2^31
        assert_eq!(quantize_multiplier(0.5), Some((1 << 30, 0)));
        // 1.0 = 2^30 / 2^31 * 2^1: a left shift by one
        assert_eq!(quantize_multiplier(1.0), Some((1 << 30, -1)));
        // 0.1 = 0.8 * 2^-3: multiplier round(0.8 * 2^31) = 1717986918, shift 3
        assert_eq!(quantize_multiplier(0.1), Some((1717986918, 3)));
        assert_eq!(quantize_multiplier(0.0), None);
        assert_eq!(quantize_multiplier(f64::NAN), None);
        // identity rescale is exact
        for v in [-129i64, -1, 0, 1, 77, 1 << 40] {
            assert_eq!(rescale_real(v, 1.0, Rounding::HalfEven), Some(v as i128));
        }
        // 100 * 0.1 = 10 (the multiplier is 0.1 rounded to Q0.31, off by 2^-34 relative)
        assert_eq!(rescale_real(100, 0.1, Rounding::HalfEven), Some(10));
        assert_eq!(frexp(8.0), Some((0.5, 4)));
        assert_eq!(frexp(0.75), Some((0.75, 0)));
        // a subnormal: 2^-1025 = 0.5 * 2^-1024
        assert_eq!(frexp(f64::MIN_POSITIVE / 8.0), Some((0.5, -1024)));
        assert_eq!(frexp(3.0 * f64::MIN_POSITIVE / 8.0), Some((0.75, -1023)));
    }

    fn rule(qmin: i64, qmax: i64, symmetric: bool, power_of_two: bool) -> QparamRule {
        QparamRule {
            qmin,
            qmax,
            symmetric,
            power_of_two,
            eps: f32::EPSILON as f64,
        }
    }

    #[test]
    fn qparams_hand_computed() {
        // affine int8 over [-1, 3]: s = 4 / 255, z = -128 - round(-1 / s) = -128 + 64 = -64
        // (-1 / (4/255) = -63.75 -> -64)
        let (s, z) = qparams_f32(-1.0f32, 3.0, rule(-128, 127, false, false));
        assert_eq!(s, 4.0f32 / 255.0);
        assert_eq!(z, -64);
        // the range is widened to include 0: [0.5, 2] acts as [0, 2]: z = qmin
        let (s, z) = qparams_f32(0.5f32, 2.0, rule(0, 255, false, false));
        assert_eq!((s, z), (2.0f32 / 255.0, 0));
        // negative-only range [-2, -1] -> [-2, 0]: z = 0 - round(-2 / (2/255)) = 255
        let (s, z) = qparams_f64(-2.0f64, -1.0, rule(0, 255, false, false));
        assert_eq!((s, z), (2.0 / 255.0, 255));
        // symmetric int8 over [-1, 3]: s = 3 / 127.5, z = 0
        let (s, z) = qparams_f32(-1.0f32, 3.0, rule(-128, 127, true, false));
        assert_eq!((s, z), (3.0f32 / 127.5, 0));
        // symmetric narrow range [-127, 127]: s = 3 / 127
        let (s, _) = qparams_f32(-1.0f32, 3.0, rule(-127, 127, true, false));
        assert_eq!(s, 3.0f32 / 127.0);
        // symmetric unsigned: z is the midpoint (0 + 255 + 1) / 2 = 128
        assert_eq!(qparams_f32(-1.0f32, 3.0, rule(0, 255, true, false)).1, 128);
        // degenerate range -> eps scale
        let (s, z) = qparams_f32(0.0f32, 0.0, rule(-128, 127, false, false));
        assert_eq!((s, z), (f32::EPSILON, -128));
        let (s, _) = qparams_f32(
            f32::INFINITY,
            f32::NEG_INFINITY,
            rule(-128, 127, true, false),
        );
        assert_eq!(s, f32::EPSILON);
        // power of two: 3/127.5 = 0.0235... -> 2^-5 = 0.03125; exact powers stay
        let (s, z) = qparams_f32(-1.0f32, 3.0, rule(-128, 127, true, true));
        assert_eq!((s, z), (0.03125, 0));
        // affine with power of two: s = 4/255 = 0.0157 rounds up to 2^-5 (2^-6 = 0.015625
        // is below), then z = -128 - round(-1 / 0.03125) = -96
        let (s, z) = qparams_f32(-1.0f32, 3.0, rule(-128, 127, false, true));
        assert_eq!((s, z), (0.03125, -96));
        assert_eq!(pow2_ceil_f32(0.25f32), 0.25);
        assert_eq!(pow2_ceil_f64(0.3f64), 0.5);
        // a positive-only range is widened to start at 0, so z = qmin
        let (s, z) = qparams_f32(1e-30f32, 1.5, rule(-8, 7, false, false));
        assert_eq!((s, z), (0.1, -8));
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Requantization of a real scale against a 64-bit float reference: the Q0.31
            /// multiplier is within 2^-31 (relative) of the scale, and the exact rescale of an
            /// accumulator is `v * scale` rounded, off by at most that relative error.
            #[test]
            fn rescale_real_against_f64(
                v in any::<i32>(),
                real in prop_oneof![1e-9f64..1e-3, 1e-3f64..1.0, 1.0f64..1e3],
                ties in any::<bool>(),
            ) {
                let r = if ties { Rounding::HalfEven } else { Rounding::HalfAwayFromZero };
                let (m, sh) = quantize_multiplier(real).unwrap();
                prop_assert!((1i64 << 30..1i64 << 31).contains(&m));
                let approx = m as f64 * 2f64.powi(-(31 + sh as i32));
                prop_assert!((approx - real).abs() <= real * 2f64.powi(-31), "{real} -> {m} >> {sh}");
                let got = rescale_real(v as i64, real, r).unwrap() as f64;
                let want = v as f64 * real;
                let bound = 0.5 + want.abs() * 2f64.powi(-31) + 1e-9;
                prop_assert!((got - want).abs() <= bound, "{v} * {real}: {got} vs {want}");
            }

            /// The exact sum of rescaled terms (qadd, qconcat) against f64.
            #[test]
            fn rescale_sum_against_f64(
                a in -(1i64 << 20)..(1i64 << 20),
                b in -(1i64 << 20)..(1i64 << 20),
                ra in 1e-4f64..10.0,
                rb in 1e-4f64..10.0,
            ) {
                let got = rescale_sum(&[(a, ra), (b, rb)], Rounding::HalfEven).unwrap() as f64;
                let want = a as f64 * ra + b as f64 * rb;
                let bound = 0.5 + (a as f64 * ra).abs().max((b as f64 * rb).abs()) * 2f64.powi(-30) + 1e-9;
                prop_assert!((got - want).abs() <= bound, "{got} vs {want}");
            }
        }
    }
}
