//! The Q/DQ and requantize rule sets (`egraph::rules::{qdq, requant}`): each rule
//! rewriting a tiny integer graph, each guard refusing where the rewrite would be wrong,
//! and the interpreter confirming the integer results are identical.

mod egraph_support;

use egraph_support::{Tolerance, assert_equivalent, run_rules};
use passes::egraph::rules::{qdq, requant};

const Q8: &str = "!quant.uniform<i8:f32, 0.1:-3>";

#[test]
fn quantize_dequantize_cancels_on_the_same_type() {
    let text = format!(
        "graph @t {{
  input %q: {Q8}[B, 4]

  %d = dequantize(%q) : f32[B, 4]
  %r = quantize(%d) {{rounding = half_even}} : {Q8}[B, 4]
  %y = dequantize(%r) : f32[B, 4]

  output y = %y
}}
"
    );
    let r = run_rules(&text, qdq::rules());
    assert!(r.applied("quantize-dequantize"));
    assert_eq!(r.ops(), ["%d = dequantize(%q) : f32[B, 4]"]);
    assert!(qir::print::print(&r.after).contains("output y = %d"));
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn quantize_dequantize_cancels_per_axis_and_with_either_rounding() {
    let qa = "!quant.uniform<i8<-127:127>:f32:1, {0.5, 0.25, 0.125, 3.0}>";
    let text = format!(
        "graph @t {{
  input %q: {qa}[B, 4]

  %d = dequantize(%q) : f32[B, 4]
  %r = quantize(%d) {{rounding = half_away_from_zero}} : {qa}[B, 4]

  output y = %r
}}
"
    );
    let r = run_rules(&text, qdq::rules());
    assert!(r.applied("quantize-dequantize"));
    assert!(r.ops().is_empty(), "{:?}", r.ops());
    assert!(qir::print::print(&r.after).contains("output y = %q"));
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn quantize_dequantize_keeps_a_change_of_type() {
    for target in [
        "!quant.uniform<i8:f32, 0.2:-3>",
        "!quant.uniform<i8:f32, 0.1:-2>",
        "!quant.uniform<i8<-127:127>:f32, 0.1:-3>",
        "!quant.uniform<u8:f32, 0.1:125>",
    ] {
        let text = format!(
            "graph @t {{
  input %q: {Q8}[B, 4]

  %d = dequantize(%q) : f32[B, 4]
  %r = quantize(%d) {{rounding = half_even}} : {target}[B, 4]

  output y = %r
}}
"
        );
        run_rules(&text, qdq::rules()).assert_unchanged();
    }
}

#[test]
fn quantize_dequantize_keeps_wide_ranges() {
    // i32 storage: k * s / s is no longer exact for |k| up to 2^31
    let q32 = "!quant.uniform<i32:f32, 0.001>";
    let text = format!(
        "graph @t {{
  input %q: {q32}[B, 4]

  %d = dequantize(%q) : f32[B, 4]
  %r = quantize(%d) {{rounding = half_even}} : {q32}[B, 4]

  output y = %r
}}
"
    );
    run_rules(&text, qdq::rules()).assert_unchanged();
}

/// An identity requantize (M = 1: multiplier 2^30, shift -1) from `x` to `mid`, then a
/// real one (M = 0.6) to int8.
fn chain(x: &str, mid: &str, inner_act: &str) -> String {
    format!(
        "graph @t {{
  input %x: {x}[B, 4]

  %m = requantize(%x) {{multiplier = [1073741824], shift = [-1], rounding = half_away_from_zero{inner_act}}} : {mid}[B, 4]
  %y = requantize(%m) {{multiplier = [1288490189], shift = [0], rounding = half_away_from_zero}} : !quant.uniform<i8:f32, 0.05:-5>[B, 4]

  output y = %y
}}
"
    )
}

#[test]
fn requantize_fold_identity_when_the_inner_clamp_cannot_clip() {
    // int8 into int16 with the same zero point: the inner requantize only widens
    let text = chain(
        "!quant.uniform<i8:f32, 0.1:3>",
        "!quant.uniform<i16:f32, 0.1:3>",
        "",
    );
    let r = run_rules(&text, requant::rules());
    assert!(r.applied("requantize-fold-identity"));
    assert_eq!(
        r.ops(),
        [
            "%y = requantize(%x) {multiplier = [1288490189], shift = [0], rounding = half_away_from_zero} : !quant.uniform<i8:f32, 0.05:-5>[B, 4]"
        ]
    );
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn requantize_fold_identity_when_the_outer_op_saturates_first() {
    // i32 accumulators clamped to [-128, 127] then scaled by 2: whatever the inner clamp
    // cuts, the outer clamp would cut too
    let text = "graph @t {
  input %x: i32[B, 4]

  %m = requantize(%x) {multiplier = [1073741824], shift = [-1], rounding = half_away_from_zero} : !quant.uniform<i8:f32, 0.1>[B, 4]
  %y = requantize(%m) {multiplier = [1073741824], shift = [-2], rounding = half_away_from_zero} : !quant.uniform<i8:f32, 0.05>[B, 4]

  output y = %y
}
";
    let r = run_rules(text, requant::rules());
    assert!(r.applied("requantize-fold-identity"));
    assert_eq!(
        r.ops(),
        [
            "%y = requantize(%x) {multiplier = [1073741824], shift = [-2], rounding = half_away_from_zero} : !quant.uniform<i8:f32, 0.05>[B, 4]"
        ]
    );
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn requantize_fold_identity_refuses_a_clipping_inner_clamp() {
    // i32 accumulators clamped to int8, then scaled by 0.6: values the inner clamp cut
    // (say 1000 -> 127 -> 76) would survive the outer op alone (1000 -> 127 after 600)
    let text = chain("i32", "!quant.uniform<i8:f32, 0.1>", "");
    run_rules(&text, requant::rules()).assert_unchanged();
    // the narrowed range of an inner relu clips too
    let text = chain(
        "!quant.uniform<i8:f32, 0.1:3>",
        "!quant.uniform<i16:f32, 0.1:3>",
        ", act = relu",
    );
    run_rules(&text, requant::rules()).assert_unchanged();
}

#[test]
fn requantize_fold_identity_refuses_an_inner_rescale() {
    // inner M = 0.5 is not transparent
    let text = "graph @t {
  input %x: !quant.uniform<i8:f32, 0.1:3>[B, 4]

  %m = requantize(%x) {multiplier = [1073741824], shift = [0], rounding = half_away_from_zero} : !quant.uniform<i16:f32, 0.2:3>[B, 4]
  %y = requantize(%m) {multiplier = [1288490189], shift = [0], rounding = half_away_from_zero} : !quant.uniform<i8:f32, 0.05:-5>[B, 4]

  output y = %y
}
";
    run_rules(text, requant::rules()).assert_unchanged();
}
