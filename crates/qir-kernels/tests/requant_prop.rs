//! Property tests of the requantize: random Q0.31 multipliers, shifts over the IR's whole
//! range [-31, 62], accumulators over all of i32, both roundings, random zero points and
//! clamps, on every available path; the reference is exact 128-bit arithmetic written here
//! (`round(acc * M / 2^(31 + shift))` by floor division and an explicit tie rule) and,
//! independently, the interpreter's public `qir::quant::rescale`.

use proptest::prelude::*;
use qir_kernels::*;

/// `round(v / 2^s)` in i128 with ties by `r`: floor division, remainder against the half.
fn round_shift(v: i128, s: u32, r: Rounding) -> i128 {
    if s == 0 {
        return v;
    }
    if s >= 127 {
        return 0;
    }
    let d = 1i128 << s;
    let q = v.div_euclid(d);
    let rem = v.rem_euclid(d);
    match (2 * rem).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => match r {
            Rounding::HalfEven => q + (q & 1),
            Rounding::HalfAwayFromZero => {
                if v >= 0 {
                    q + 1
                } else {
                    q
                }
            }
        },
    }
}

fn reference(acc: i32, m: i64, shift: i64, zp: i32, c: Clamp, r: Rounding) -> i32 {
    let v = round_shift(acc as i128 * m as i128, (31 + shift) as u32, r);
    (zp as i128 + v).clamp(c.lo as i128, c.hi as i128) as i32
}

fn interp_rounding(r: Rounding) -> qir::quant::Rounding {
    match r {
        Rounding::HalfEven => qir::quant::Rounding::HalfEven,
        Rounding::HalfAwayFromZero => qir::quant::Rounding::HalfAwayFromZero,
    }
}

fn rounding() -> impl Strategy<Value = Rounding> {
    prop_oneof![Just(Rounding::HalfEven), Just(Rounding::HalfAwayFromZero)]
}

/// Accumulators: anything, small values, and exact ties of the rescale.
fn accs(len: usize) -> impl Strategy<Value = Vec<i32>> {
    prop::collection::vec(
        prop_oneof![
            any::<i32>(),
            -70_000i32..70_000,
            (-1000i32..1000).prop_map(|v| v * 1024 + 512)
        ],
        len,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn requantize_matches_128_bit_reference(
        mults in prop::collection::vec(prop_oneof![0i64..(1 << 31), (1i64 << 30)..(1 << 31), Just((1i64 << 31) - 1), Just(1i64 << 30)], 1..40),
        shift_base in -31i64..=62,
        shift_jitter in prop::collection::vec(-2i64..=2, 40),
        zp in -128i32..=127,
        lohi in (-128i32..=127, -128i32..=127),
        r in rounding(),
        acc in accs(120),
        cols in 1usize..40,
    ) {
        let ch = mults.len();
        let shifts: Vec<i64> = (0..ch).map(|i| (shift_base + shift_jitter[i]).clamp(-31, 62)).collect();
        let clamp = Clamp { lo: lohi.0.min(lohi.1), hi: lohi.0.max(lohi.1) };
        let q = Requant::new(r, &mults, &shifts, zp, clamp).unwrap();
        // per-channel along columns: a [rows, ch] matrix
        let rows = acc.len() / ch;
        let src = &acc[..rows * ch];
        for path in Path::available().into_iter().chain([Path::AmxEmulated]) {
            let mut out = vec![0i8; src.len()];
            requantize(path, src, rows, ch, &q, ChannelAxis::Cols, Output::I8(&mut out)).unwrap();
            for (i, (&a, &y)) in src.iter().zip(&out).enumerate() {
                let c = i % ch;
                let want = reference(a, mults[c], shifts[c], zp, clamp, r);
                prop_assert_eq!(y as i32, want, "{} acc {} m {} shift {}", path.name(), a, mults[c], shifts[c]);
                let v = qir::quant::rescale(a as i64, mults[c], shifts[c], interp_rounding(r)).unwrap();
                prop_assert_eq!(want as i128, (zp as i128 + v).clamp(clamp.lo as i128, clamp.hi as i128));
                prop_assert_eq!(q.apply(a, c), want);
            }
        }
        // per-tensor, u8 output, along rows of an NCHW-like [rows, cols] matrix
        let rows = acc.len() / cols;
        let src = &acc[..rows * cols];
        let q1 = Requant::per_tensor(r, mults[0], shifts[0], zp.max(0), Clamp::full(OutType::U8)).unwrap();
        for path in Path::available() {
            let mut out = vec![0u8; src.len()];
            requantize(path, src, rows, cols, &q1, ChannelAxis::Rows, Output::U8(&mut out)).unwrap();
            for (&a, &y) in src.iter().zip(&out) {
                prop_assert_eq!(y as i32, reference(a, mults[0], shifts[0], zp.max(0), Clamp::full(OutType::U8), r));
            }
        }
    }

    #[test]
    fn multiplier_decomposition_matches_the_interpreter(x in prop_oneof![1e-12f64..1e-6, 1e-6f64..1.0, 1.0f64..1e9, (-40i32..30).prop_map(|e| 2f64.powi(e)), (-40i32..30).prop_map(|e| 2f64.powi(e) * (1.0 - 1e-12))]) {
        prop_assert_eq!(quantize_multiplier(x), qir::quant::quantize_multiplier(x));
    }
}
