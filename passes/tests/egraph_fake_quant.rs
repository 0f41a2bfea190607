//! The fake-quant rule set (`egraph::rules::fake_quant`): each rule rewriting a tiny graph,
//! each guard refusing where the rewrite would be wrong, and the interpreter confirming
//! bit for bit that the rewritten graphs compute the same values.

mod egraph_support;

use egraph_support::{Tolerance, assert_equivalent, only, run_rules};
use passes::egraph::rules::fake_quant;
use passes::simplify::simplify_rules;

/// A graph with the usual declarations and the given ops and outputs.
fn graph(body: &str) -> String {
    format!(
        "graph @t {{
  input %x: f32[B, 8]
  input %x4: f32[B, 2, 4, 4]
  state %s: f32[] = fill(0.05)
  state %s2: f32[] = fill(0.1)
  state %z: i32[] = zeros
  state %sc: f32[2] = [0.05, 0.2]
  state %zc: i32[2] = zeros
  const %z0: i32[] = zeros
  const %z3: i32[] = [3]
  state %zf: f32[] = zeros

{body}
}}
"
    )
}

const FQ: &str = "{qmin = -128, qmax = 127}";

#[test]
fn fake_quant_idempotent_collapses_a_repeated_fake_quant() {
    let text = graph(&format!(
        "  %a = fake_quant(%x, %s, %z) {FQ} : f32[B, 8]
  %b = fake_quant(%a, %s, %z) {FQ} : f32[B, 8]

  output y = %b"
    ));
    let r = run_rules(&text, fake_quant::rules());
    assert!(r.applied("fake-quant-idempotent"));
    assert_eq!(
        r.ops(),
        [format!("%a = fake_quant(%x, %s, %z) {FQ} : f32[B, 8]")]
    );
    assert!(qir::print::print(&r.after).contains("output y = %a"));
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn fake_quant_idempotent_needs_the_same_scale_and_attributes() {
    for second in [
        format!("fake_quant(%a, %s2, %z) {FQ}"),
        "fake_quant(%a, %s, %z) {qmin = -128, qmax = 100}".to_string(),
        "fake_quant(%a, %s, %z0) {qmin = -128, qmax = 127}".to_string(),
    ] {
        let text = graph(&format!(
            "  %a = fake_quant(%x, %s, %z) {FQ} : f32[B, 8]
  %b = {second} : f32[B, 8]

  output y = %b"
        ));
        run_rules(&text, fake_quant::rules()).assert_unchanged();
    }
}

#[test]
fn fake_quant_idempotent_leaves_lsq_alone() {
    // LSQ trains its scale: applying it once or twice gives different scale gradients
    let text = graph(&format!(
        "  %a = fake_quant_lsq(%x, %s, %zf) {FQ} : f32[B, 8]
  %b = fake_quant_lsq(%a, %s, %zf) {FQ} : f32[B, 8]

  output y = %b"
    ));
    run_rules(&text, fake_quant::rules()).assert_unchanged();
}

#[test]
fn fake_quant_absorbs_relu_when_the_range_starts_at_zero() {
    let text = graph(
        "  %r = relu(%x) : f32[B, 8]
  %q = fake_quant(%r, %s, %z0) {qmin = 0, qmax = 255} : f32[B, 8]

  output y = %q",
    );
    let r = run_rules(&text, fake_quant::rules());
    assert!(r.applied("fake-quant-absorbs-relu"));
    assert_eq!(
        r.ops(),
        ["%q = fake_quant(%x, %s, %z0) {qmin = 0, qmax = 255} : f32[B, 8]"]
    );
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn fake_quant_keeps_relu_when_the_zero_point_is_not_qmin_or_unknown() {
    for zp in ["%z3", "%z"] {
        let text = graph(&format!(
            "  %r = relu(%x) : f32[B, 8]
  %q = fake_quant(%r, %s, {zp}) {{qmin = 0, qmax = 255}} : f32[B, 8]

  output y = %q"
        ));
        run_rules(&text, fake_quant::rules()).assert_unchanged();
    }
    // with qmin = -128 the zero point 0 is not the bottom of the range: relu matters
    let text = graph(&format!(
        "  %r = relu(%x) : f32[B, 8]
  %q = fake_quant(%r, %s, %z0) {FQ} : f32[B, 8]

  output y = %q"
    ));
    run_rules(&text, fake_quant::rules()).assert_unchanged();
}

#[test]
fn commute_fake_quant_relu_exposes_a_repeated_fake_quant() {
    // fq(relu(fq(x))) = relu(fq(fq(x))) = relu(fq(x))
    let text = graph(&format!(
        "  %a = fake_quant(%x, %s, %z) {FQ} : f32[B, 8]
  %r = relu(%a) : f32[B, 8]
  %b = fake_quant(%r, %s, %z) {FQ} : f32[B, 8]

  output y = %b"
    ));
    let r = run_rules(&text, fake_quant::rules());
    assert!(r.applied("commute-fake-quant-relu"));
    assert!(r.applied("fake-quant-idempotent"));
    assert_eq!(
        r.ops(),
        [
            format!("%a = fake_quant(%x, %s, %z) {FQ} : f32[B, 8]"),
            "%r = relu(%a) : f32[B, 8]".to_string(),
        ]
    );
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn commute_relu_fake_quant_merges_the_two_orders() {
    // relu(fq(x)) and fq(relu(x)) are one value
    let text = graph(&format!(
        "  %a = fake_quant(%x, %s, %z) {FQ} : f32[B, 8]
  %r = relu(%a) : f32[B, 8]
  %p = relu(%x) : f32[B, 8]
  %q = fake_quant(%p, %s, %z) {FQ} : f32[B, 8]

  output y1 = %r
  output y2 = %q"
    ));
    let r = run_rules(
        &text,
        only(fake_quant::rules(), &["commute-relu-fake-quant"]),
    );
    assert!(r.applied("commute-relu-fake-quant"));
    assert_eq!(r.ops().len(), 2, "{:?}", r.ops());
    let after = qir::print::print(&r.after);
    let y1 = r.after.output("y1");
    assert_eq!(y1, r.after.output("y2"), "{after}");
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn commute_relu_fake_quant_then_relu_relu() {
    // relu(fq(relu(x))) = fq(relu(relu(x))) = fq(relu(x))
    let text = graph(&format!(
        "  %p = relu(%x) : f32[B, 8]
  %a = fake_quant(%p, %s, %z) {FQ} : f32[B, 8]
  %r = relu(%a) : f32[B, 8]

  output y = %r"
    ));
    let r = run_rules(&text, simplify_rules());
    assert!(r.applied("commute-relu-fake-quant"));
    assert!(r.applied("relu-relu"));
    assert_eq!(
        r.ops(),
        [
            "%p = relu(%x) : f32[B, 8]".to_string(),
            format!("%a = fake_quant(%p, %s, %z) {FQ} : f32[B, 8]"),
        ]
    );
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn commute_fake_quant_max_pool_per_tensor_and_per_channel() {
    for (scale, zp, attrs) in [
        ("%s", "%z", FQ.to_string()),
        (
            "%sc",
            "%zc",
            "{qmin = -128, qmax = 127, axis = 1}".to_string(),
        ),
    ] {
        let text = graph(&format!(
            "  %a = fake_quant(%x4, {scale}, {zp}) {attrs} : f32[B, 2, 4, 4]
  %p = max_pool2d(%a) {{kernel = [2, 2]}} : f32[B, 2, 2, 2]
  %b = fake_quant(%p, {scale}, {zp}) {attrs} : f32[B, 2, 2, 2]

  output y = %b"
        ));
        let r = run_rules(&text, fake_quant::rules());
        assert!(r.applied("commute-fake-quant-max-pool"), "{attrs}");
        assert_eq!(
            r.ops(),
            [
                format!("%a = fake_quant(%x4, {scale}, {zp}) {attrs} : f32[B, 2, 4, 4]"),
                "%p = max_pool2d(%a) {kernel = [2, 2]} : f32[B, 2, 2, 2]".to_string(),
            ]
        );
        assert_equivalent(&r.before, &r.after, Tolerance::Exact);
    }
}

#[test]
fn commute_max_pool_fake_quant_merges_the_two_orders() {
    let text = graph(&format!(
        "  %a = fake_quant(%x4, %s, %z) {FQ} : f32[B, 2, 4, 4]
  %p = max_pool2d(%a) {{kernel = [2, 2]}} : f32[B, 2, 2, 2]
  %m = max_pool2d(%x4) {{kernel = [2, 2]}} : f32[B, 2, 2, 2]
  %q = fake_quant(%m, %s, %z) {FQ} : f32[B, 2, 2, 2]

  output y1 = %p
  output y2 = %q"
    ));
    let r = run_rules(
        &text,
        only(fake_quant::rules(), &["commute-max-pool-fake-quant"]),
    );
    assert!(r.applied("commute-max-pool-fake-quant"));
    assert_eq!(r.ops().len(), 2, "{:?}", r.ops());
    assert_eq!(r.after.output("y1"), r.after.output("y2"));
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn fake_quant_along_a_spatial_axis_is_not_commuted_through_max_pool() {
    // pooling along W does not cross H, but the rule only trusts axes 0 and 1
    let text = graph(
        "  state %sh: f32[4] = [0.05, 0.1, 0.2, 0.4]
  state %zh: i32[4] = zeros
  %a = fake_quant(%x4, %sh, %zh) {qmin = -128, qmax = 127, axis = 2} : f32[B, 2, 4, 4]
  %p = max_pool2d(%a) {kernel = [1, 2]} : f32[B, 2, 4, 2]
  %b = fake_quant(%p, %sh, %zh) {qmin = -128, qmax = 127, axis = 2} : f32[B, 2, 4, 2]

  output y = %b",
    );
    // (declarations inside the body are fine: the printer groups them)
    run_rules(&text, fake_quant::rules()).assert_unchanged();
}

#[test]
fn commute_fake_quant_reshape_flatten_transpose() {
    let cases = [
        (
            "commute-fake-quant-reshape",
            "%x",
            "f32[B, 8]",
            "reshape(%a) {shape = [-1, 2, 4]}",
            "f32[B, 2, 4]",
        ),
        (
            "commute-fake-quant-flatten",
            "%x4",
            "f32[B, 2, 4, 4]",
            "flatten(%a)",
            "f32[B, 32]",
        ),
        (
            "commute-fake-quant-transpose",
            "%x",
            "f32[B, 8]",
            "transpose(%a) {perm = [1, 0]}",
            "f32[8, B]",
        ),
    ];
    for (rule, x, xty, mid, mty) in cases {
        let text = graph(&format!(
            "  %a = fake_quant({x}, %s, %z) {FQ} : {xty}
  %m = {mid} : {mty}
  %b = fake_quant(%m, %s, %z) {FQ} : {mty}

  output y = %b"
        ));
        let r = run_rules(&text, fake_quant::rules());
        assert!(r.applied(rule), "{rule}");
        assert_eq!(
            r.ops(),
            [
                format!("%a = fake_quant({x}, %s, %z) {FQ} : {xty}"),
                format!("%m = {mid} : {mty}"),
            ],
            "{rule}"
        );
        assert_equivalent(&r.before, &r.after, Tolerance::Exact);
    }
}

#[test]
fn commute_reshape_flatten_transpose_fake_quant_merge_the_two_orders() {
    let cases = [
        (
            "commute-reshape-fake-quant",
            "%x",
            "f32[B, 8]",
            "reshape",
            "{shape = [-1, 2, 4]}",
            "f32[B, 2, 4]",
        ),
        (
            "commute-flatten-fake-quant",
            "%x4",
            "f32[B, 2, 4, 4]",
            "flatten",
            "",
            "f32[B, 32]",
        ),
        (
            "commute-transpose-fake-quant",
            "%x",
            "f32[B, 8]",
            "transpose",
            "{perm = [1, 0]}",
            "f32[8, B]",
        ),
    ];
    for (rule, x, xty, op, attrs, mty) in cases {
        let text = graph(&format!(
            "  %a = fake_quant({x}, %s, %z) {FQ} : {xty}
  %m = {op}(%a) {attrs} : {mty}
  %n = {op}({x}) {attrs} : {mty}
  %b = fake_quant(%n, %s, %z) {FQ} : {mty}

  output y1 = %m
  output y2 = %b"
        ));
        let r = run_rules(&text, only(fake_quant::rules(), &[rule]));
        assert!(r.applied(rule), "{rule}");
        assert_eq!(r.ops().len(), 2, "{rule}: {:?}", r.ops());
        assert_eq!(r.after.output("y1"), r.after.output("y2"), "{rule}");
        assert_equivalent(&r.before, &r.after, Tolerance::Exact);
    }
}

#[test]
fn per_channel_fake_quant_is_not_commuted_through_reshape() {
    // the same graph per-tensor collapses; per-channel it is left alone
    let w = "  param %w: f32[2, 8] = lecun_uniform";
    let per_tensor = graph(&format!(
        "{w}
  %a = fake_quant(%w, %s, %z) {FQ} : f32[2, 8]
  %m = reshape(%a) {{shape = [2, 2, 4]}} : f32[2, 2, 4]
  %b = fake_quant(%m, %s, %z) {FQ} : f32[2, 2, 4]

  output y = %b"
    ));
    assert!(
        run_rules(&per_tensor, fake_quant::rules())
            .report
            .changed
            .changed()
    );
    let per_channel = graph(&format!(
        "{w}
  %a = fake_quant(%w, %sc, %zc) {{qmin = -128, qmax = 127, axis = 0}} : f32[2, 8]
  %m = reshape(%a) {{shape = [2, 2, 4]}} : f32[2, 2, 4]
  %b = fake_quant(%m, %sc, %zc) {{qmin = -128, qmax = 127, axis = 0}} : f32[2, 2, 4]

  output y = %b"
    ));
    run_rules(&per_channel, fake_quant::rules()).assert_unchanged();
}

#[test]
fn commute_concat_fake_quant_shares_one_fake_quant() {
    // concat(fq(a), fq(b)) with one parameter set is fq(concat(a, b))
    let text = graph(&format!(
        "  input %y: f32[B, 8]
  %a = fake_quant(%x, %s, %z) {FQ} : f32[B, 8]
  %b = fake_quant(%y, %s, %z) {FQ} : f32[B, 8]
  %c = concat(%a, %b) {{axis = 1}} : f32[B, 16]

  output y = %c"
    ));
    let r = run_rules(&text, fake_quant::rules());
    assert!(r.applied("commute-concat-fake-quant"));
    assert_eq!(
        r.ops(),
        [
            "%0 = concat(%x, %y) {axis = 1} : f32[B, 16]".to_string(),
            format!("%c = fake_quant(%0, %s, %z) {FQ} : f32[B, 16]"),
        ]
    );
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn commute_fake_quant_concat_removes_the_outer_fake_quant() {
    // fq(concat(fq(a), fq(b))) = concat(fq(fq(a)), fq(fq(b))) = fq(concat(a, b))
    let text = graph(&format!(
        "  input %y: f32[B, 8]
  %a = fake_quant(%x, %s, %z) {FQ} : f32[B, 8]
  %b = fake_quant(%y, %s, %z) {FQ} : f32[B, 8]
  %c = concat(%a, %b) {{axis = 1}} : f32[B, 16]
  %q = fake_quant(%c, %s, %z) {FQ} : f32[B, 16]

  output y = %q"
    ));
    let r = run_rules(&text, fake_quant::rules());
    assert!(r.applied("commute-fake-quant-concat"));
    assert_eq!(r.ops().len(), 2, "{:?}", r.ops());
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn per_channel_fake_quants_are_not_merged_across_concat() {
    let text = graph(
        "  input %y: f32[2, 8]
  input %u: f32[2, 8]
  %a = fake_quant(%u, %sc, %zc) {qmin = -128, qmax = 127, axis = 0} : f32[2, 8]
  %b = fake_quant(%y, %sc, %zc) {qmin = -128, qmax = 127, axis = 0} : f32[2, 8]
  %c = concat(%a, %b) {axis = 1} : f32[2, 16]

  output y = %c",
    );
    run_rules(&text, fake_quant::rules()).assert_unchanged();
}
