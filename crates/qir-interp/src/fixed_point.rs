//! Exact fixed-point arithmetic of the integer ops: rounding right shifts on i128 and the
//! decomposition of a real rescale factor into a Q0.31 multiplier and a shift.
//!
//! The rescale of an integer `v` by `(multiplier, shift)` is `round(v * multiplier /
//! 2^(31 + shift))` computed exactly with a single rounding in the named mode (not
//! gemmlowp's two successive roundings): the JIT's integer epilogues must reproduce these
//! functions bit for bit.

/// A rounding policy of the integer ops (the IR's `rounding` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Ties to the even neighbour (IEEE's default, ONNX, NumPy).
    HalfEven,
    /// Ties away from zero (gemmlowp, TFLite, C's `round`).
    HalfAwayFromZero,
}

impl Rounding {
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
}
