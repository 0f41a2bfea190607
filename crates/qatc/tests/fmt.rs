//! `qatc fmt` over `testdata/`: every `.qir` outside an `err/` folder is in canonical form
//! (`fmt --check` passes on all of them), and the reader accepts non-canonical text — the
//! inputs below, each formatted by `qatc fmt -` into exactly its canonical form in
//! `testdata/parse/ok/` (which the snapshot tests parse, round-trip and snapshot).

mod common;

use common::{qatc, qatc_in, qir_files, rel, repo_root, testdata};

/// A non-canonical input and the `testdata/parse/ok/` file holding its canonical form.
struct Case {
    /// The file stem in `testdata/parse/ok/`.
    name: &'static str,
    /// What is not canonical about the input.
    what: &'static str,
    input: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "not_canonical_layout",
        what: "declarations out of order, odd spacing, an output before a state",
        input: r#"// canonical order and spacing: declarations first, grouped by kind, then ops, then outputs (the input written out of order is in crates/qatc/tests/fmt.rs)
graph   @m{
  param %w: f32[3,4] = lecun_uniform
  input %x : f32[ B , 4 ]
  param %b: f32[3] = zeros
  %h=linear( %x,%w , %b ) :f32[B,3]
  output   y=%h
  state %count: i64[] = zeros
}
"#,
    },
    Case {
        name: "anonymous_values_renumbered",
        what: "anonymous values numbered out of order",
        input: r#"// anonymous values are renumbered in print order (the input numbered out of order is in crates/qatc/tests/fmt.rs)
graph @m {
  input %x: f32[B, 4]
  %7 = relu(%x) : f32[B, 4]
  %3 = tanh(%7) : f32[B, 4]
  %10 = add(%7, %3) : f32[B, 4]
  output y = %10
}
"#,
    },
    Case {
        name: "attributes",
        what: "attributes written with their default values",
        input: r#"// attributes of every kind; attributes written with their default value are dropped when printed (crates/qatc/tests/fmt.rs)
graph @attrs {
  input %x: f32[B, 4, 8, 8]
  param %w: f32[4, 1, 3, 3] = kaiming_uniform

  %c = conv2d(%x, %w) {stride = [1, 1], padding = [1, 1, 1, 1], dilation = [1, 1], groups = 4, act = relu} : f32[B, 4, 8, 8]
  %p = max_pool2d(%c) {kernel = [2, 2]} : f32[B, 4, 4, 4]
  %m = reduce_mean(%p) {axes = [2, 3], keepdims = true} : f32[B, 4, 1, 1]
  %f = flatten(%m) {axis = 1} : f32[B, 4]
  %s = softmax(%f) {axis = -1} : f32[B, 4]
  %e = ema(%s, %s) {momentum = 0.25} : f32[B, 4]

  output e = %e
}
"#,
    },
    Case {
        name: "comments_everywhere",
        what: "no blank line before the comment at the closing brace",
        input: r#"// a comment before the graph
graph @m {
  // before an input
  input %x: f32[B, 4]

  // before an op
  %y = relu(%x) : f32[B, 4]

  // before an output
  output y = %y
  // before the closing brace
}
"#,
    },
    Case {
        name: "initializers",
        what: "a float written in exponent form",
        input: r#"graph @inits {
  param %a: f32[2, 3] = zeros
  param %b: f32[2, 3] = ones
  param %c: f32[2, 3] = fill(0.5)
  param %d: f32[2, 3] = uniform(-0.1, 0.1)
  param %e: f32[2, 3] = normal(0.0, 0.02)
  param %f: f32[2, 3] = kaiming_uniform
  param %g: f32[2, 3] = kaiming_normal
  param %h: f32[2, 3] = xavier_uniform
  param %i: f32[2, 3] = xavier_normal
  param %j: f32[2, 3] = lecun_uniform
  param %k: f32[2, 3] = external
  const %l: f32[2] = [0.1, -2.5e-3]
  const %m: i32[3] = [1, -2, 3]
  const %n: f64[1] = [0.1]
  const %o: f32[3] = [inf, -inf, nan]
  const %p: bool[2] = [1, 0]
}
"#,
    },
    Case {
        name: "quant_types",
        what: "a scale with more digits than the shortest round trip",
        input: r#"// every form of quantized type
graph @quant {
  input %a: !quant.uniform<i8:f32, 0.1:-3>[B, 64]
  input %b: !quant.uniform<u8:f32, 0.0039215689:128>[B, 64]
  input %c: !quant.uniform<i8<-127:127>:f32, 0.5>[B, 64]
  input %d: !quant.uniform<i16:f32, 0.001>[B, 64]
  input %e: !quant.uniform<i32:f32, 0.0005>[B, 64]
  const %w.scales: f32[2] = [0.5, 0.25]
  const %w.zps: i32[2] = [0, 0]
  const %w1: !quant.uniform<i8<-127:127>:f32:0, {0.5, 0.25}>[2, 4] = [1, 2, 3, 4, -1, -2, -3, -4]
  const %w2: !quant.uniform<u8:f32:1, {0.5:1, 0.25:2}>[1, 2] = [0, 255]
  const %w3: !quant.uniform<i8<-127:127>:f32:0, %w.scales>[2, 4] = [1, 2, 3, 4, 5, 6, 7, 8]
  const %w4: !quant.uniform<i8:f32:0, %w.scales:%w.zps>[2, 1] = [1, 2]
}
"#,
    },
    Case {
        name: "symbolic_dims",
        what: "no blank lines between the sections",
        input: r#"graph @sym {
  input %x: f32[B, 16]
  input %seq: f32[B, T, 8]
  %r = reshape(%x) {shape = [-1, 4, 4]} : f32[B, 4, 4]
  %s = softmax(%seq) : f32[B, T, 8]
  output r = %r
  output s = %s
}
"#,
    },
];

#[test]
fn non_canonical_inputs_format_to_their_canonical_files() {
    for case in CASES {
        let path = testdata()
            .join("parse/ok")
            .join(format!("{}.qir", case.name));
        let want =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_ne!(
            case.input, want,
            "{}: the input must not be canonical already ({})",
            case.name, case.what
        );
        let run = qatc_in(&repo_root(), &["fmt", "-"], Some(case.input));
        assert_eq!(run.code, Some(0), "{}: {}", case.name, run.stderr);
        assert_eq!(
            run.stdout,
            want,
            "{} ({}): fmt output differs from {}",
            case.name,
            case.what,
            rel(&path)
        );
        // --check on the non-canonical input names it and fails.
        let run = qatc_in(&repo_root(), &["fmt", "--check", "-"], Some(case.input));
        assert_eq!((run.code, run.stdout.as_str()), (Some(1), "<stdin>\n"));
    }
}

#[test]
fn every_qir_outside_err_folders_is_canonical() {
    let files: Vec<String> = qir_files(&testdata())
        .into_iter()
        .filter(|p| {
            !p.strip_prefix(testdata())
                .unwrap_or(p)
                .components()
                .any(|c| c.as_os_str() == "err")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        files.len() > 50,
        "only {} .qir files found under {}",
        files.len(),
        testdata().display()
    );
    let mut argv = vec!["fmt", "--check"];
    argv.extend(files.iter().map(String::as_str));
    let run = qatc(&argv);
    assert_eq!(
        run.code,
        Some(0),
        "not in canonical form (run `qatc fmt FILE`, or move a deliberately non-canonical input into crates/qatc/tests/fmt.rs):\n{}",
        run.all()
    );
    assert_eq!(run.all(), "");
}
