//! Requantization parameters and their scalar reference: `y = clamp(zp + round(acc * M /
//! 2^(31 + shift)), lo, hi)` with one exact rounding in a named [`Rounding`] policy.
//!
//! Invariants kept by [`Requant::new`]: every multiplier is a Q0.31 value in `[0, 2^31)`,
//! every shift in the IR's `[-31, 62]`, `lo <= hi` and `zp` inside `[lo, hi]`'s type range.
//! Internally a shift is stored as the total right shift `t = 31 + shift`; a channel whose
//! `t` is 63 or more always rounds to 0 (|acc * M| < 2^62) and is stored as `M = 0, t = 0`,
//! so every path works with `t` in `[0, 62]` and never overflows i64: `|acc * M| < 2^62`
//! and the rounding addend is below `2^61`.

use crate::error::{KResult, invalid};

pub use qir::quant::Rounding;

/// The 8-bit storage type of a requantized output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutType {
    /// Signed bytes, `[-128, 127]`.
    I8,
    /// Unsigned bytes, `[0, 255]`.
    U8,
}

impl OutType {
    /// The full range of the type.
    pub fn range(self) -> (i32, i32) {
        match self {
            OutType::I8 => (-128, 127),
            OutType::U8 => (0, 255),
        }
    }
}

/// A fused activation, folded into the output clamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// No activation: the clamp is the storage range `[qmin, qmax]`.
    None,
    /// `max(x, 0)`: the clamp's lower bound becomes the output zero point.
    Relu,
    /// `min(max(x, 0), 6)`: the upper bound becomes the quantized value of 6.
    Relu6,
}

/// Output clamp bounds `[lo, hi]` (inclusive), the fused activation already folded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Clamp {
    /// Smallest output value.
    pub lo: i32,
    /// Largest output value.
    pub hi: i32,
}

impl Clamp {
    /// The full range of `ty`.
    pub fn full(ty: OutType) -> Clamp {
        let (lo, hi) = ty.range();
        Clamp { lo, hi }
    }

    /// The bounds of an output quantized with `[qmin, qmax]`, `zero_point` and `scale` under
    /// a fused activation, exactly as the reference interpreter folds them: relu raises the
    /// lower bound to the zero point; relu6 lowers the upper bound to
    /// `clamp(zp + round_half_even(6 * (1 / scale)), qmin, qmax)` computed in f32 (the
    /// interpreter's default precision; its f64 mode may differ on a tie).
    pub fn for_activation(
        act: Activation,
        qmin: i32,
        qmax: i32,
        zero_point: i32,
        scale: f32,
    ) -> Clamp {
        match act {
            Activation::None => Clamp { lo: qmin, hi: qmax },
            Activation::Relu => Clamp {
                lo: zero_point.max(qmin),
                hi: qmax,
            },
            Activation::Relu6 => {
                let v = (6.0f32 * (1.0f32 / scale)).round_ties_even();
                let q = zero_point as f32 + v;
                let q6 = if q.is_nan() {
                    zero_point as i64
                } else {
                    (q as f64).clamp(qmin as f64, qmax as f64) as i64
                };
                Clamp {
                    lo: zero_point.max(qmin),
                    hi: (q6 as i32).clamp(qmin, qmax),
                }
            }
        }
    }
}

/// Requantize parameters, prepared once (at model load): per-channel (or one per-tensor)
/// Q0.31 multipliers and shifts, a per-tensor output zero point, clamp bounds and the
/// rounding policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requant {
    pub(crate) rounding: Rounding,
    /// Multiplier per channel, in `[0, 2^31)` (0 for channels that always round to 0).
    pub(crate) mult: Vec<i32>,
    /// Total right shift `31 + shift` per channel, in `[0, 62]`.
    pub(crate) tsh: Vec<i32>,
    pub(crate) zp: i32,
    pub(crate) lo: i32,
    pub(crate) hi: i32,
}

impl Requant {
    /// Checks and prepares the parameters. `multipliers` and `shifts` have one entry per
    /// output channel, or one entry for a per-tensor rescale; multipliers must lie in
    /// `[0, 2^31)`, shifts in `[-31, 62]` (the IR's ranges); `clamp` must be non-empty and
    /// `zero_point` inside i8 or u8 range.
    pub fn new(
        rounding: Rounding,
        multipliers: &[i64],
        shifts: &[i64],
        zero_point: i32,
        clamp: Clamp,
    ) -> KResult<Requant> {
        if multipliers.is_empty() || multipliers.len() != shifts.len() {
            return invalid(format!(
                "requantize needs as many multipliers as shifts (at least one), found {} and {}",
                multipliers.len(),
                shifts.len()
            ));
        }
        if clamp.lo > clamp.hi {
            return invalid(format!("empty clamp [{}, {}]", clamp.lo, clamp.hi));
        }
        if !(-128..=255).contains(&zero_point) {
            return invalid(format!(
                "output zero point {zero_point} is not an 8-bit value"
            ));
        }
        let mut mult = Vec::with_capacity(multipliers.len());
        let mut tsh = Vec::with_capacity(multipliers.len());
        for (&m, &s) in multipliers.iter().zip(shifts) {
            if !(0..1i64 << 31).contains(&m) || !(-31..=62).contains(&s) {
                return invalid(format!(
                    "multiplier {m} / shift {s} is outside Q0.31 [0, 2^31) / [-31, 62]"
                ));
            }
            let t = 31 + s;
            if t >= 63 {
                mult.push(0);
                tsh.push(0);
            } else {
                mult.push(m as i32);
                tsh.push(t as i32);
            }
        }
        Ok(Requant {
            rounding,
            mult,
            tsh,
            zp: zero_point,
            lo: clamp.lo,
            hi: clamp.hi,
        })
    }

    /// One rescale for every channel (per-tensor).
    pub fn per_tensor(
        rounding: Rounding,
        multiplier: i64,
        shift: i64,
        zero_point: i32,
        clamp: Clamp,
    ) -> KResult<Requant> {
        Requant::new(rounding, &[multiplier], &[shift], zero_point, clamp)
    }

    /// The number of channels (1 for a per-tensor rescale, which applies to every channel).
    pub fn channels(&self) -> usize {
        self.mult.len()
    }
    /// The rounding policy.
    pub fn rounding(&self) -> Rounding {
        self.rounding
    }
    /// The output zero point.
    pub fn zero_point(&self) -> i32 {
        self.zp
    }
    /// The clamp bounds.
    pub fn clamp(&self) -> Clamp {
        Clamp {
            lo: self.lo,
            hi: self.hi,
        }
    }

    /// Whether the clamp fits the storage type `ty`.
    pub fn fits(&self, ty: OutType) -> bool {
        let (a, b) = ty.range();
        a <= self.lo && self.hi <= b
    }

    /// Checks that the parameters cover `channels` output channels.
    pub(crate) fn check_channels(&self, channels: usize) -> KResult<()> {
        if self.channels() == 1 || self.channels() == channels {
            Ok(())
        } else {
            invalid(format!(
                "requantize has {} channels, the output has {channels}",
                self.channels()
            ))
        }
    }

    /// The parameter index of channel `c`.
    #[inline(always)]
    pub(crate) fn idx(&self, c: usize) -> usize {
        if self.mult.len() == 1 { 0 } else { c }
    }

    /// The requantized value of accumulator `acc` in channel `channel` (the scalar
    /// reference every SIMD path matches bit for bit).
    #[inline]
    pub fn apply(&self, acc: i32, channel: usize) -> i32 {
        let i = self.idx(channel);
        requant_scalar(
            acc,
            self.mult[i],
            self.tsh[i] as u32,
            self.zp,
            self.lo,
            self.hi,
            self.rounding,
        )
    }
}

/// `clamp(zp + round(acc * m / 2^t), lo, hi)` for `t` in `[0, 62]`, exact in i64.
#[inline(always)]
pub(crate) fn requant_scalar(
    acc: i32,
    m: i32,
    t: u32,
    zp: i32,
    lo: i32,
    hi: i32,
    r: Rounding,
) -> i32 {
    let p = acc as i64 * m as i64;
    let q = if t == 0 {
        p
    } else {
        let half = 1i64 << (t - 1);
        match r {
            // floor((p + half) / 2^t) for p >= 0, floor((p + half - 1) / 2^t) below 0
            Rounding::HalfAwayFromZero => (p + half + (p >> 63)) >> t,
            // floor((p + half - 1 + (floor(p / 2^t) & 1)) / 2^t): a tie goes up only from odd
            Rounding::HalfEven => (p + half - 1 + ((p >> t) & 1)) >> t,
        }
    };
    (q.clamp((lo - zp) as i64, (hi - zp) as i64) as i32) + zp
}

pub use qir::quant::quantize_multiplier;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_ties() {
        use Rounding::*;
        // factor 1/4 (2^30 with total shift 32): ties at 2 mod 4
        for (acc, away, even) in [
            (2, 1, 0),
            (6, 2, 2),
            (-2, -1, 0),
            (-6, -2, -2),
            (5, 1, 1),
            (-5, -1, -1),
        ] {
            assert_eq!(
                requant_scalar(acc, 1 << 30, 32, 0, -1000, 1000, HalfAwayFromZero),
                away,
                "{acc}"
            );
            assert_eq!(
                requant_scalar(acc, 1 << 30, 32, 0, -1000, 1000, HalfEven),
                even,
                "{acc}"
            );
        }
        // t = 0: a plain product, saturated by the clamp
        assert_eq!(requant_scalar(3, 5, 0, 1, -128, 127, HalfEven), 16);
        assert_eq!(
            requant_scalar(i32::MIN, i32::MAX, 0, 0, -128, 127, HalfEven),
            -128
        );
    }

    #[test]
    fn multiplier_decomposition() {
        assert_eq!(quantize_multiplier(0.5), Some((1 << 30, 0)));
        assert_eq!(quantize_multiplier(1.0), Some((1 << 30, -1)));
        assert_eq!(quantize_multiplier(0.1), Some((1717986918, 3)));
        assert_eq!(quantize_multiplier(0.0), None);
    }

    #[test]
    fn relu6_bound() {
        // scale 0.05, zp -10: 6 / 0.05 = 120 -> 110
        let c = Clamp::for_activation(Activation::Relu6, -128, 127, -10, 0.05);
        assert_eq!(c, Clamp { lo: -10, hi: 110 });
        let c = Clamp::for_activation(Activation::Relu, 0, 255, 3, 0.05);
        assert_eq!(c, Clamp { lo: 3, hi: 255 });
    }
}
