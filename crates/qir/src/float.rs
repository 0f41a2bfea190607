//! Exact float text: every float prints as the shortest decimal that parses back to the same
//! bits (Rust's `{:?}` form, which always shows a `.` or an exponent), or as `inf`, `-inf`,
//! `nan`. Scales are f32 and print in f32's shortest form, so `0.1` stays `0.1`.

/// Shortest round-trip text of an f32.
pub fn fmt_f32(v: f32) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v:?}")
    }
}

/// Shortest round-trip text of an f64.
pub fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v:?}")
    }
}

/// Parses the float forms `fmt_f32`/`fmt_f64` print (and plain integers).
pub fn parse_f64(s: &str) -> Option<f64> {
    match s {
        "nan" => Some(f64::NAN),
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn f32_text_round_trips(bits in any::<u32>()) {
            let v = f32::from_bits(bits);
            let back: f32 = if v.is_nan() { f32::NAN } else { fmt_f32(v).parse().unwrap() };
            if v.is_nan() { prop_assert!(back.is_nan()) } else { prop_assert_eq!(back.to_bits(), v.to_bits()) }
        }

        #[test]
        fn f64_text_round_trips(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            let back = parse_f64(&fmt_f64(v)).unwrap();
            if v.is_nan() { prop_assert!(back.is_nan()) } else { prop_assert_eq!(back.to_bits(), v.to_bits()) }
        }
    }

    #[test]
    fn forms() {
        assert_eq!(fmt_f32(0.1), "0.1");
        assert_eq!(fmt_f32(1.0), "1.0");
        assert_eq!(fmt_f64(1e-5), "1e-5");
        assert_eq!(fmt_f32(f32::NEG_INFINITY), "-inf");
    }
}
