//! The batch-norm folding rule set (`egraph::rules::batchnorm`, the `fold-batchnorm`
//! pass): conv2d and linear, with and without bias, refused when the contraction is used
//! elsewhere or has a fused activation; the interpreter confirms the folded graph computes
//! the same values within 1e-5 relative (the algebra is exact, f32 rounding is not).

mod egraph_support;

use egraph_support::{Tolerance, assert_equivalent, run_rules};
use passes::fold_batchnorm::fold_batchnorm_rules;

/// Relative tolerance of the folded graph against the original: a few f32 roundings of
/// the per-channel factor over a 18-term dot product.
const TOL: Tolerance = Tolerance::Relative(1e-5);

fn graph(body: &str) -> String {
    format!(
        "graph @t {{
  input %x: f32[B, 4]
  input %img: f32[B, 2, 5, 5]
  param %w: f32[3, 4] = lecun_uniform
  param %b: f32[3] = uniform(-1.0, 1.0)
  param %cw: f32[4, 2, 3, 3] = kaiming_uniform
  param %cb: f32[4] = uniform(-1.0, 1.0)
  param %g: f32[4] = uniform(0.5, 2.0)
  param %beta: f32[4] = uniform(-1.0, 1.0)
  state %mean: f32[4] = uniform(-0.5, 0.5)
  state %var: f32[4] = uniform(0.25, 4.0)
  param %g3: f32[3] = uniform(0.5, 2.0)
  param %beta3: f32[3] = uniform(-1.0, 1.0)
  state %mean3: f32[3] = uniform(-0.5, 0.5)
  state %var3: f32[3] = uniform(0.25, 4.0)

{body}
}}
"
    )
}

#[test]
fn fold_batchnorm_conv2d_with_bias() {
    let text = graph(
        "  %c = conv2d(%img, %cw, %cb) {padding = [1, 1, 1, 1]} : f32[B, 4, 5, 5]
  %n = batch_norm(%c, %g, %beta, %mean, %var) {eps = 0.001} : f32[B, 4, 5, 5]

  output y = %n",
    );
    let r = run_rules(&text, fold_batchnorm_rules());
    assert!(r.applied("fold-batchnorm-conv2d"));
    assert_eq!(
        r.ops(),
        [
            "%0 = add(%var, %cst) : f32[4]",
            "%1 = sqrt(%0) : f32[4]",
            "%2 = div(%g, %1) : f32[4]",
            "%3 = reshape(%2) {shape = [4, 1, 1, 1]} : f32[4, 1, 1, 1]",
            "%4 = mul(%cw, %3) : f32[4, 2, 3, 3]",
            "%5 = sub(%cb, %mean) : f32[4]",
            "%6 = mul(%5, %2) : f32[4]",
            "%7 = add(%6, %beta) : f32[4]",
            "%n = conv2d(%img, %4, %7) {padding = [1, 1, 1, 1]} : f32[B, 4, 5, 5]",
        ]
    );
    let text = qir::print::print(&r.after);
    assert!(text.contains("const %cst: f32[] = [0.001]"), "{text}");
    assert_equivalent(&r.before, &r.after, TOL);
}

#[test]
fn fold_batchnorm_conv2d_without_bias_and_depthwise() {
    let text = graph(
        "  param %dw: f32[2, 1, 3, 3] = kaiming_uniform
  param %g2: f32[2] = uniform(0.5, 2.0)
  param %beta2: f32[2] = uniform(-1.0, 1.0)
  state %mean2: f32[2] = uniform(-0.5, 0.5)
  state %var2: f32[2] = uniform(0.25, 4.0)
  %c = conv2d(%img, %dw) {groups = 2} : f32[B, 2, 3, 3]
  %n = batch_norm(%c, %g2, %beta2, %mean2, %var2) : f32[B, 2, 3, 3]

  output y = %n",
    );
    let r = run_rules(&text, fold_batchnorm_rules());
    assert!(r.applied("fold-batchnorm-conv2d"));
    let ops = r.ops();
    assert_eq!(ops.len(), 8, "{ops:?}");
    assert_eq!(ops[5], "%5 = mul(%mean2, %2) : f32[2]");
    assert_eq!(ops[6], "%6 = sub(%beta2, %5) : f32[2]");
    assert_eq!(
        ops[7],
        "%n = conv2d(%img, %4, %6) {groups = 2} : f32[B, 2, 3, 3]"
    );
    assert_equivalent(&r.before, &r.after, TOL);
}

#[test]
fn fold_batchnorm_linear() {
    let text = graph(
        "  %h = linear(%x, %w, %b) : f32[B, 3]
  %n = batch_norm(%h, %g3, %beta3, %mean3, %var3) : f32[B, 3]

  output y = %n",
    );
    let r = run_rules(&text, fold_batchnorm_rules());
    assert!(r.applied("fold-batchnorm-linear"));
    let ops = r.ops();
    assert_eq!(ops[3], "%3 = reshape(%2) {shape = [3, 1]} : f32[3, 1]");
    assert_eq!(
        ops.last().map(String::as_str),
        Some("%n = linear(%x, %4, %7) : f32[B, 3]")
    );
    assert_equivalent(&r.before, &r.after, TOL);
}

#[test]
fn fold_batchnorm_refuses_a_shared_conv_and_a_fused_activation() {
    // the conv result is also an output: folding would run the conv twice
    let text = graph(
        "  %c = conv2d(%img, %cw, %cb) : f32[B, 4, 3, 3]
  %n = batch_norm(%c, %g, %beta, %mean, %var) : f32[B, 4, 3, 3]

  output c = %c
  output y = %n",
    );
    run_rules(&text, fold_batchnorm_rules()).assert_unchanged();
    // batch_norm(relu(conv)) is not foldable
    let text = graph(
        "  %c = conv2d(%img, %cw, %cb) {act = relu} : f32[B, 4, 3, 3]
  %n = batch_norm(%c, %g, %beta, %mean, %var) : f32[B, 4, 3, 3]

  output y = %n",
    );
    run_rules(&text, fold_batchnorm_rules()).assert_unchanged();
}

#[test]
fn fold_batchnorm_refuses_a_non_weight_like_scale_when_it_does_not_pay() {
    // gamma computed from the input every run: the folded weight is no longer free, and
    // the cost model keeps the batch norm
    let text = graph(
        "  input %gin: f32[4]
  %c = conv2d(%img, %cw, %cb) : f32[B, 4, 3, 3]
  %n = batch_norm(%c, %gin, %beta, %mean, %var) : f32[B, 4, 3, 3]

  output y = %n",
    );
    let r = run_rules(&text, fold_batchnorm_rules());
    assert!(r.applied("fold-batchnorm-conv2d"));
    r.assert_unchanged();
}
