//! The backward-simplification rule set (`egraph::rules::backward`): each rule rewriting a
//! tiny graph, each guard refusing where the rewrite would be wrong (broadcasting, fused
//! activations), and the interpreter confirming bit for bit that values are kept.

mod egraph_support;

use egraph_support::{Tolerance, assert_equivalent, run_rules};
use passes::egraph::rules::backward;

fn graph(body: &str) -> String {
    format!(
        "graph @t {{
  input %x: f32[B, 4]
  input %dy: f32[B, 4]
  input %col: f32[B, 1]
  const %one: f32[] = [1.0]
  const %ones4: f32[4] = ones
  const %zero: f32[] = zeros
  const %zeros4: f32[4] = fill(0.0)

{body}
}}
"
    )
}

/// Runs the backward rules, checks `rule` fired, the ops are `expect` and the values kept.
fn fires(body: &str, rule: &str, expect: &[&str]) {
    let r = run_rules(&graph(body), backward::rules());
    assert!(
        r.applied(rule),
        "{rule} did not fire: {:?}",
        r.report.applied
    );
    assert_eq!(r.ops(), expect, "{rule}");
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

fn unchanged(body: &str) {
    run_rules(&graph(body), backward::rules()).assert_unchanged();
}

#[test]
fn mul_by_one_both_sides() {
    fires(
        "  %h = tanh(%x) : f32[B, 4]
  %y = mul(%h, %one) : f32[B, 4]

  output y = %y",
        "mul-by-one",
        &["%h = tanh(%x) : f32[B, 4]"],
    );
    fires(
        "  %h = tanh(%x) : f32[B, 4]
  %y = mul(%ones4, %h) : f32[B, 4]

  output y = %y",
        "mul-by-one-left",
        &["%h = tanh(%x) : f32[B, 4]"],
    );
}

#[test]
fn mul_by_one_keeps_a_broadcasting_multiply() {
    // f32[B, 1] * ones[4] is f32[B, 4]: not the same value as the column
    unchanged(
        "  %h = tanh(%col) : f32[B, 1]
  %y = mul(%h, %ones4) : f32[B, 4]

  output y = %y",
    );
}

#[test]
fn add_zero_both_sides() {
    fires(
        "  %h = tanh(%x) : f32[B, 4]
  %y = add(%h, %zero) : f32[B, 4]

  output y = %y",
        "add-zero",
        &["%h = tanh(%x) : f32[B, 4]"],
    );
    fires(
        "  %h = tanh(%x) : f32[B, 4]
  %y = add(%zeros4, %h) : f32[B, 4]

  output y = %y",
        "add-zero-left",
        &["%h = tanh(%x) : f32[B, 4]"],
    );
}

#[test]
fn add_zero_keeps_a_fused_activation_and_a_broadcast() {
    unchanged(
        "  %h = tanh(%x) : f32[B, 4]
  %y = add(%h, %zero) {act = relu} : f32[B, 4]

  output y = %y",
    );
    unchanged(
        "  %h = tanh(%col) : f32[B, 1]
  %y = add(%h, %zeros4) : f32[B, 4]

  output y = %y",
    );
}

#[test]
fn neg_neg() {
    fires(
        "  %h = tanh(%x) : f32[B, 4]
  %n = neg(%h) : f32[B, 4]
  %y = neg(%n) : f32[B, 4]

  output y = %y",
        "neg-neg",
        &["%h = tanh(%x) : f32[B, 4]"],
    );
}

#[test]
fn negation_moves_out_of_a_reshape_to_become_a_subtraction() {
    // alone, the commuted form costs the same: nothing changes
    unchanged(
        "  %n = neg(%dy) : f32[B, 4]
  %y = reshape(%n) {shape = [-1, 2, 2]} : f32[B, 2, 2]

  output y = %y",
    );
    // under an add, neg(reshape) lets add-neg fire: one op fewer
    let r = run_rules(
        &graph(
            "  %n = neg(%dy) : f32[B, 4]
  %r = reshape(%n) {shape = [-1, 2, 2]} : f32[B, 2, 2]
  %h = reshape(%x) {shape = [-1, 2, 2]} : f32[B, 2, 2]
  %y = add(%h, %r) : f32[B, 2, 2]

  output y = %y",
        ),
        backward::rules(),
    );
    assert!(
        r.applied("reshape-neg") && r.applied("add-neg"),
        "{:?}",
        r.report.applied
    );
    assert_eq!(
        r.ops(),
        [
            // the reshape of dy is a new value (the old %r was reshape(neg(dy)))
            "%h = reshape(%x) {shape = [-1, 2, 2]} : f32[B, 2, 2]",
            "%0 = reshape(%dy) {shape = [-1, 2, 2]} : f32[B, 2, 2]",
            "%y = sub(%h, %0) : f32[B, 2, 2]",
        ]
    );
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn add_of_a_negation_is_a_subtraction() {
    fires(
        "  %n = neg(%dy) : f32[B, 4]
  %y = add(%x, %n) : f32[B, 4]

  output y = %y",
        "add-neg",
        &["%y = sub(%x, %dy) : f32[B, 4]"],
    );
    fires(
        "  %n = neg(%dy) : f32[B, 4]
  %y = add(%n, %x) : f32[B, 4]

  output y = %y",
        "add-neg-left",
        &["%y = sub(%x, %dy) : f32[B, 4]"],
    );
    // a fused activation is not a plain sum
    unchanged(
        "  %n = neg(%dy) : f32[B, 4]
  %y = add(%x, %n) {act = relu} : f32[B, 4]

  output y = %y",
    );
}

#[test]
fn reshape_of_reshape_and_identities() {
    fires(
        "  %a = reshape(%x) {shape = [-1, 2, 2]} : f32[B, 2, 2]
  %b = reshape(%a) {shape = [-1, 1, 4]} : f32[B, 1, 4]

  output y = %b",
        "reshape-reshape",
        &["%b = reshape(%x) {shape = [-1, 1, 4]} : f32[B, 1, 4]"],
    );
    fires(
        "  %h = tanh(%x) : f32[B, 4]
  %a = reshape(%h) {shape = [-1, 4]} : f32[B, 4]

  output y = %a",
        "reshape-identity",
        &["%h = tanh(%x) : f32[B, 4]"],
    );
    fires(
        "  %h = tanh(%x) : f32[B, 4]
  %a = flatten(%h) : f32[B, 4]

  output y = %a",
        "flatten-identity",
        &["%h = tanh(%x) : f32[B, 4]"],
    );
}

#[test]
fn sum_to_like_and_broadcast_like_to_the_same_type() {
    fires(
        "  %h = tanh(%x) : f32[B, 4]
  %s = sum_to_like(%h, %dy) : f32[B, 4]

  output y = %s",
        "sum-to-like-identity",
        &["%h = tanh(%x) : f32[B, 4]"],
    );
    fires(
        "  %h = tanh(%x) : f32[B, 4]
  %s = broadcast_like(%h, %dy) : f32[B, 4]

  output y = %s",
        "broadcast-like-identity",
        &["%h = tanh(%x) : f32[B, 4]"],
    );
    // a real reduction and a real broadcast stay
    unchanged(
        "  %h = tanh(%x) : f32[B, 4]
  %s = sum_to_like(%h, %ones4) : f32[4]
  %c = tanh(%col) : f32[B, 1]
  %b = broadcast_like(%c, %dy) : f32[B, 4]

  output y = %s
  output z = %b",
    );
}

#[test]
fn relu_relu() {
    fires(
        "  %a = relu(%x) : f32[B, 4]
  %b = relu(%a) : f32[B, 4]

  output y = %b",
        "relu-relu",
        &["%a = relu(%x) : f32[B, 4]"],
    );
}

#[test]
fn relu_grad_masks() {
    fires(
        "  %g = relu_grad(%dy, %x) : f32[B, 4]
  %h = relu_grad(%g, %x) : f32[B, 4]

  output y = %h",
        "relu-grad-idempotent",
        &["%g = relu_grad(%dy, %x) : f32[B, 4]"],
    );
    fires(
        "  %r = relu(%x) : f32[B, 4]
  %g = relu_grad(%dy, %r) : f32[B, 4]

  output y = %g",
        "relu-grad-of-relu",
        &["%g = relu_grad(%dy, %x) : f32[B, 4]"],
    );
    fires(
        "  %r = relu6(%x) : f32[B, 4]
  %g = relu6_grad(%dy, %r) : f32[B, 4]

  output y = %g",
        "relu6-grad-of-relu6",
        &["%g = relu6_grad(%dy, %x) : f32[B, 4]"],
    );
    // a mask by a different value is not redundant
    unchanged(
        "  %g = relu_grad(%dy, %x) : f32[B, 4]
  %h = relu_grad(%g, %dy) : f32[B, 4]

  output y = %h",
    );
    // relu6 is not relu: relu_grad(dy, relu6(x)) stays
    unchanged(
        "  %r = relu6(%x) : f32[B, 4]
  %g = relu_grad(%dy, %r) : f32[B, 4]

  output y = %g",
    );
}

#[test]
fn transposes_that_undo_each_other_vanish() {
    fires(
        "  %h = tanh(%x) : f32[B, 4]
  %t = transpose(%h) {perm = [1, 0]} : f32[4, B]
  %u = transpose(%t) {perm = [1, 0]} : f32[B, 4]

  output y = %u",
        "transpose-transpose",
        &["%h = tanh(%x) : f32[B, 4]"],
    );
}

#[test]
fn transposes_compose_into_one() {
    let text = "graph @t {
  input %x: f32[2, 3, 4]

  %t = transpose(%x) {perm = [1, 0, 2]} : f32[3, 2, 4]
  %u = transpose(%t) {perm = [0, 2, 1]} : f32[3, 4, 2]

  output y = %u
}
";
    let r = run_rules(text, backward::rules());
    assert!(r.applied("transpose-transpose"));
    // out[i] = x[p1[p2[i]]]: p1 = [1, 0, 2], p2 = [0, 2, 1] -> [1, 2, 0]
    assert_eq!(
        r.ops(),
        ["%u = transpose(%x) {perm = [1, 2, 0]} : f32[3, 4, 2]"]
    );
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn duplicated_subexpressions_are_shared() {
    let r = run_rules(
        &graph(
            "  %a = tanh(%x) : f32[B, 4]
  %b = tanh(%x) : f32[B, 4]
  %s = add(%a, %b) : f32[B, 4]

  output y = %s",
        ),
        backward::rules(),
    );
    assert_eq!(
        r.ops(),
        ["%a = tanh(%x) : f32[B, 4]", "%s = add(%a, %a) : f32[B, 4]"]
    );
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn slice_of_concat_takes_an_input_back() {
    let body = "  %a = tanh(%x) : f32[B, 4]
  %b = neg(%x) : f32[B, 4]
  %c = concat(%a, %b) {axis = 1} : f32[B, 8]
  %s = slice(%c) {axis = 1, start = SPAN} : f32[B, 4]
  %t = relu(%s) : f32[B, 4]

  output y = %t";
    fires(
        &body.replace("SPAN", "0, end = 4"),
        "slice-concat-first",
        &["%a = tanh(%x) : f32[B, 4]", "%t = relu(%a) : f32[B, 4]"],
    );
    fires(
        &body.replace("SPAN", "4, end = 8"),
        "slice-concat-second",
        &["%b = neg(%x) : f32[B, 4]", "%t = relu(%b) : f32[B, 4]"],
    );
    // a slice across both inputs stays
    unchanged(&body.replace("SPAN", "2, end = 6"));
}

#[test]
fn fake_quant_grad_of_a_fake_quantized_value_passes_dy_through() {
    let text = "graph @t {
  input %x: f32[B, 4]
  input %dy: f32[B, 4]
  state %s: f32[] = fill(0.05)
  state %s2: f32[] = fill(0.01)
  state %z: i32[] = zeros

  %q = fake_quant(%x, %s, %z) {qmin = -128, qmax = 127} : f32[B, 4]
  %g = fake_quant_grad(%dy, %q, %s, %z) {qmin = -128, qmax = 127} : f32[B, 4]
  %h = tanh(%g) : f32[B, 4]
  %g2 = fake_quant_grad(%dy, %q, %s2, %z) {qmin = -128, qmax = 127} : f32[B, 4]

  output y = %h
  output y2 = %g2
}
";
    let r = run_rules(text, backward::rules());
    assert!(r.applied("fake-quant-grad-of-fake-quant"));
    // the mask with another scale (%g2) is kept: values on the 0.05 grid can leave the
    // 0.01 range
    assert_eq!(
        r.ops(),
        [
            "%q = fake_quant(%x, %s, %z) {qmin = -128, qmax = 127} : f32[B, 4]",
            "%h = tanh(%dy) : f32[B, 4]",
            "%g2 = fake_quant_grad(%dy, %q, %s2, %z) {qmin = -128, qmax = 127} : f32[B, 4]",
        ]
    );
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}
