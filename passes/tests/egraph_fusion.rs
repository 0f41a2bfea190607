//! The fusion rule set (`egraph::rules::fusion`, the `fuse` pass): relu and relu6 fused
//! into linear, conv2d and add, refused when the unfused value is used elsewhere or the op
//! already has an activation, with the interpreter confirming the values are kept.

mod egraph_support;

use egraph_support::{Tolerance, assert_equivalent, run_rules};
use passes::fuse::fuse_rules;

fn graph(body: &str) -> String {
    format!(
        "graph @t {{
  input %x: f32[B, 4]
  input %img: f32[B, 2, 5, 5]
  param %w: f32[3, 4] = lecun_uniform
  param %b: f32[3] = uniform(-1.0, 1.0)
  param %cw: f32[4, 2, 3, 3] = kaiming_uniform
  param %cb: f32[4] = uniform(-1.0, 1.0)

{body}
}}
"
    )
}

#[test]
fn fuse_each_op_with_each_activation() {
    let cases = [
        ("linear(%x, %w, %b)", "", "f32[B, 3]"),
        ("linear(%x, %w)", "", "f32[B, 3]"),
        (
            "conv2d(%img, %cw, %cb)",
            "padding = [1, 1, 1, 1]",
            "f32[B, 4, 5, 5]",
        ),
        ("conv2d(%img, %cw)", "stride = [2, 2]", "f32[B, 4, 2, 2]"),
        ("add(%x, %x)", "", "f32[B, 4]"),
    ];
    for (call, attrs, ty) in cases {
        let op = &call[..call.find('(').unwrap_or(0)];
        for act in ["relu", "relu6"] {
            let written = if attrs.is_empty() {
                String::new()
            } else {
                format!(" {{{attrs}}}")
            };
            let text = graph(&format!(
                "  %h = {call}{written} : {ty}
  %y = {act}(%h) : {ty}

  output y = %y"
            ));
            let r = run_rules(&text, fuse_rules());
            let rule = format!("fuse-{op}-{act}");
            assert!(r.applied(&rule), "{rule}");
            let fused = if attrs.is_empty() {
                format!("act = {act}")
            } else {
                format!("{attrs}, act = {act}")
            };
            assert_eq!(
                r.ops(),
                [format!("%y = {call} {{{fused}}} : {ty}")],
                "{rule}"
            );
            assert_equivalent(&r.before, &r.after, Tolerance::Exact);
        }
    }
}

#[test]
fn fusion_refuses_a_value_used_elsewhere() {
    // the linear result is an output too: fusing would compute the linear twice
    let text = graph(
        "  %h = linear(%x, %w, %b) : f32[B, 3]
  %y = relu(%h) : f32[B, 3]

  output h = %h
  output y = %y",
    );
    run_rules(&text, fuse_rules()).assert_unchanged();
    // ... or feeds another op
    let text = graph(
        "  %h = linear(%x, %w, %b) : f32[B, 3]
  %y = relu(%h) : f32[B, 3]
  %t = tanh(%h) : f32[B, 3]

  output y = %y
  output t = %t",
    );
    run_rules(&text, fuse_rules()).assert_unchanged();
}

#[test]
fn fusion_refuses_an_op_that_already_has_an_activation() {
    // relu(linear{act=relu6}) is not linear{act=relu}... nor anything with one act
    let text = graph(
        "  %h = linear(%x, %w, %b) {act = relu6} : f32[B, 3]
  %y = relu(%h) : f32[B, 3]

  output y = %y",
    );
    run_rules(&text, fuse_rules()).assert_unchanged();
}

#[test]
fn fusion_leaves_other_activations_alone() {
    let text = graph(
        "  %h = linear(%x, %w, %b) : f32[B, 3]
  %y = tanh(%h) : f32[B, 3]
  %m = matmul(%x, %w) {transpose_b = true} : f32[B, 3]
  %z = relu(%m) : f32[B, 3]

  output y = %y
  output z = %z",
    );
    run_rules(&text, fuse_rules()).assert_unchanged();
}
