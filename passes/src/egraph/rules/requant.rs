//! Requantize folding: `requantize_o(requantize_i(x)) = requantize_o(x)` where the inner
//! requantize is transparent.
//!
//! Semantics (the op table's): a requantize maps its input `x` to `v = x - zx` (`zx` the
//! input's zero point, 0 for i32 accumulators), computes `clamp(round(v * M) + zy, lo, hi)`
//! with `M = multiplier / 2^(31 + shift)` rounded once in the op's rounding mode, `zy` the
//! result's zero point and `[lo, hi]` its range narrowed by a fused activation.
//!
//! The rule applies exactly when all of these hold:
//! 1. every inner multiplier/shift pair is exactly `M = 1` (`multiplier = 2^(31 + shift)`),
//!    so the inner op is `y = clamp(v + z1, lo1, hi1)` and the outer op sees
//!    `y - z1 = clamp(v, lo1 - z1, hi1 - z1)`;
//! 2. the inner activation is `none` or `relu` (relu narrows `lo1` to `max(lo1, z1)`), its
//!    result type is per-tensor, and `x` is i32 or a per-tensor quantized type (so the
//!    range of `v` is known);
//! 3. the inner clamp changes nothing the outer op keeps, on each side separately: either
//!    it cannot clip there (the range of `v` lies inside it), or the outer op already
//!    saturates at that bound (for every outer multiplier, `round((lo1 - z1) * M2) + z2 <=
//!    lo2`, resp. `round((hi1 - z1) * M2) + z2 >= hi2`, with the outer result type
//!    per-tensor); since the outer map is monotone, values clipped by the inner clamp then
//!    land on the same outer bound either way. The outer activation only narrows the outer
//!    range, which keeps the check sound (it is made on the wider range).
//!
//! A typical case is an identity rescale between two int8 types of equal range inserted by
//! a conversion. A negative example: an inner clamp to `[-128, 127]` from i32 accumulators
//! followed by an outer `M < 1` clips values the outer op would have kept — not rewritten.

use qir::quant::{Rounding, rescale};
use qir::{ElemType, QuantParams, QuantType, Type};

use super::qdq::written_type;
use super::{Guard, Rewrite, inst_of, rule, ty_of, var};

/// True if the pair is exactly `M = 1`.
fn is_unit(multiplier: i64, shift: i64) -> bool {
    (0..=30).contains(&(31 + shift)) && multiplier == 1i64 << (31 + shift)
}

/// `(qmin, qmax, zero point)` of a per-tensor quantized type.
fn per_tensor(t: &Type) -> Option<(i64, i64, i64)> {
    match t.elem.quant()? {
        QuantType {
            qmin,
            qmax,
            params: QuantParams::PerTensor { zero_point, .. },
            ..
        } => Some((*qmin, *qmax, *zero_point)),
        QuantType { .. } => None,
    }
}

/// The range of `v = x - zx` for an input of type `t`.
fn centered_range(t: &Type) -> Option<(i64, i64)> {
    if t.elem == ElemType::I32 {
        return Some((i32::MIN as i64, i32::MAX as i64));
    }
    let (lo, hi, z) = per_tensor(t)?;
    Some((lo - z, hi - z))
}

/// Guard: the inner requantize (attributes `i`) of input `x` is transparent to the outer
/// one (attributes `o`); see the module doc.
fn inner_is_transparent(o: &str, i: &str, x: &str) -> Guard {
    let (o, i, x) = (var(o), var(i), var(x));
    Box::new(move |eg, _, s| {
        let check = || -> Option<bool> {
            let inner = inst_of(eg, s, i)?;
            let outer = inst_of(eg, s, o)?;
            let (m1, s1) = (inner.ints("multiplier")?, inner.ints("shift")?);
            if m1.len() != s1.len() || !m1.iter().zip(&s1).all(|(&m, &sh)| is_unit(m, sh)) {
                return Some(false);
            }
            let (mut lo1, hi1, z1) = per_tensor(written_type(eg, s, i)?)?;
            match inner.choice("act")? {
                "none" => {}
                "relu" => lo1 = lo1.max(z1),
                _ => return Some(false),
            }
            let (vmin, vmax) = centered_range(ty_of(eg, s, x)?)?;
            let (a, b) = (lo1 - z1, hi1 - z1);
            let mode = Rounding::from_name(outer.choice("rounding")?)?;
            let (m2, s2) = (outer.ints("multiplier")?, outer.ints("shift")?);
            let outer_range = per_tensor(written_type(eg, s, o)?);
            // outer value at v for every channel, before its clamp
            let outer_at = |v: i64| -> Option<Vec<i128>> {
                let (_, _, z2) = outer_range?;
                m2.iter()
                    .zip(&s2)
                    .map(|(&m, &sh)| Some(rescale(v, m, sh, mode)? + i128::from(z2)))
                    .collect()
            };
            let low_ok = vmin >= a
                || outer_range.is_some_and(|(lo2, _, _)| {
                    outer_at(a).is_some_and(|vs| vs.iter().all(|&u| u <= i128::from(lo2)))
                });
            let high_ok = vmax <= b
                || outer_range.is_some_and(|(_, hi2, _)| {
                    outer_at(b).is_some_and(|vs| vs.iter().all(|&u| u >= i128::from(hi2)))
                });
            Some(low_ok && high_ok)
        };
        check().unwrap_or(false)
    })
}

/// The requantize rule set.
pub fn rules() -> Vec<Rewrite> {
    vec![rule(
        "requantize-fold-identity",
        "(requantize ?o (requantize ?i ?x))",
        "(requantize ?o ?x)",
        inner_is_transparent("?o", "?i", "?x"),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_rounds_once() {
        // 5 * 2^30 / 2^31 = 2.5
        assert_eq!(rescale(5, 1 << 30, 0, Rounding::HalfEven), Some(2));
        assert_eq!(rescale(5, 1 << 30, 0, Rounding::HalfAwayFromZero), Some(3));
        assert_eq!(
            rescale(-5, 1 << 30, 0, Rounding::HalfAwayFromZero),
            Some(-3)
        );
        assert_eq!(rescale(-5, 1 << 30, 0, Rounding::HalfEven), Some(-2));
        // M = 1: 2^30 with a left shift of one
        assert!(is_unit(1 << 30, -1));
        assert_eq!(rescale(-77, 1 << 30, -1, Rounding::HalfEven), Some(-77));
        assert!(!is_unit(1 << 30, 0));
        assert!(is_unit(1, -31));
    }
}
