//! The e-graph driver (`egraph::rewrite`), the graph ↔ e-graph conversion and the three
//! pass wrappers: unchanged graphs keep their exact text, names/comments survive rewrites,
//! limits stop runs and are reported, the passes work through the registry and pass
//! manager, and the interpreter oracle does catch a wrong rewrite.

mod egraph_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use egraph_support::{Tolerance, assert_equivalent, parse, run_rules, run_rules_with};
use passes::egraph::convert::{canonical, rebuild, to_egraph};
use passes::egraph::{Limits, QirLang, Stop, take_remarks};
use passes::fold_batchnorm::fold_batchnorm;
use passes::fuse::fuse;
use passes::simplify::{simplify, simplify_rules};
use passes::{Changed, Pass, PassManager};

fn models() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/models");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "qir"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 6,
        "expected the six test models in {}",
        dir.display()
    );
    v
}

fn model(name: &str) -> qir::Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../testdata/models/{name}.qir"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&text)
}

#[test]
fn every_model_rebuilds_from_its_own_e_nodes_to_the_same_text() {
    for path in models() {
        let text = std::fs::read_to_string(&path).unwrap();
        let g = parse(&text);
        let (egraph, map) = to_egraph(&g).unwrap();
        // choose, for every class, the source e-node it came from
        let mut chosen: HashMap<egg::Id, QirLang> = HashMap::new();
        for (_, n) in &map.ops {
            let c = canonical(&egraph, n);
            chosen.entry(egraph.lookup(c.clone()).unwrap()).or_insert(c);
        }
        for class in egraph.classes() {
            chosen
                .entry(class.id)
                .or_insert_with(|| class.nodes[0].clone());
        }
        let rebuilt = rebuild(&g, &map, &egraph, |c| &chosen[&egraph.find(c)]).unwrap();
        assert_eq!(
            qir::print::print(&rebuilt),
            qir::print::print(&g),
            "{}",
            path.display()
        );
    }
}

#[test]
fn every_model_is_left_alone_by_simplify() {
    for path in models() {
        let g = parse(&std::fs::read_to_string(&path).unwrap());
        let mut h = g.clone();
        let report = simplify(&mut h, &Limits::default()).unwrap();
        assert_eq!(report.changed, Changed::No, "{}", path.display());
        assert_eq!(report.stop, Stop::Saturated, "{}", path.display());
        assert_eq!(
            qir::print::print(&h),
            qir::print::print(&g),
            "{}",
            path.display()
        );
    }
}

#[test]
fn names_comments_and_locations_survive_a_rewrite() {
    let text = "// the model
graph @t {
  input %x: f32[B, 4]

  // first
  %h = tanh(%x) : f32[B, 4]
  // a double negation, gone after simplify
  %n = neg(%h) : f32[B, 4]
  %y = neg(%n) : f32[B, 4]
  // last
  %z = relu(%y) : f32[B, 4]

  // the result
  output z = %z
}
";
    let r = run_rules(text, simplify_rules());
    assert_eq!(
        qir::print::print(&r.after),
        "// the model
graph @t {
  input %x: f32[B, 4]

  // first
  %h = tanh(%x) : f32[B, 4]
  // a double negation, gone after simplify
  // last
  %z = relu(%h) : f32[B, 4]

  // the result
  output z = %z
}
"
    );
    let z = r.after.find("z").unwrap();
    let z0 = r.before.find("z").unwrap();
    assert_eq!(r.after.node(z).loc, r.before.node(z0).loc);
    assert!(r.after.node(z).loc.is_some());
}

/// A chain of `n` fake-quant / relu / reshape blocks: plenty of commuting for the runner.
fn long_chain(n: usize) -> String {
    let mut body = String::new();
    let mut prev = "%x".to_string();
    for i in 0..n {
        body.push_str(&format!(
            "  %a{i} = fake_quant({prev}, %s, %z) {{qmin = -128, qmax = 127}} : f32[B, 8]
  %r{i} = relu(%a{i}) : f32[B, 8]
  %m{i} = reshape(%r{i}) {{shape = [-1, 2, 4]}} : f32[B, 2, 4]
  %f{i} = reshape(%m{i}) {{shape = [-1, 8]}} : f32[B, 8]
"
        ));
        prev = format!("%f{i}");
    }
    format!(
        "graph @chain {{
  input %x: f32[B, 8]
  state %s: f32[] = fill(0.05)
  state %z: i32[] = zeros

{body}
  output y = {prev}
}}
"
    )
}

#[test]
fn a_node_limit_stops_the_run_and_is_reported() {
    let limits = Limits {
        node_limit: 10,
        ..Limits::default()
    };
    let r = run_rules_with(&long_chain(6), simplify_rules(), &limits);
    assert!(
        matches!(r.report.stop, Stop::NodeLimit(n) if n > 10),
        "{:?}",
        r.report.stop
    );
    let remark = r.report.remark().unwrap();
    assert!(
        remark.starts_with("remark: pass 'test' stopped by the node limit ("),
        "{remark}"
    );
    assert!(remark.contains("raise node-limit"), "{remark}");
    // without the limit the same graph saturates and simplifies further
    let full = run_rules(&long_chain(6), simplify_rules());
    assert_eq!(full.report.stop, Stop::Saturated);
    assert!(full.report.remark().is_none());
    assert!(full.ops().len() < r.ops().len() || !r.report.changed.changed());
    // a stopped run is still a correct run
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
    assert_equivalent(&full.before, &full.after, Tolerance::Exact);
}

#[test]
fn iteration_and_time_limits_stop_the_run_and_are_reported() {
    let limits = Limits {
        iter_limit: 1,
        ..Limits::default()
    };
    let r = run_rules_with(&long_chain(3), simplify_rules(), &limits);
    assert_eq!(r.report.stop, Stop::IterLimit(1));
    assert_eq!(r.report.iterations, 1);
    assert!(
        r.report
            .remark()
            .unwrap()
            .contains("stopped by the iteration limit (1 round);")
    );
    let limits = Limits {
        time_limit: Duration::ZERO,
        ..Limits::default()
    };
    let r = run_rules_with(&long_chain(3), simplify_rules(), &limits);
    assert!(
        matches!(r.report.stop, Stop::TimeLimit(_)),
        "{:?}",
        r.report.stop
    );
    assert!(r.report.remark().unwrap().contains("time limit"));
}

#[test]
fn the_fully_simplified_chain_is_one_fake_quant_and_one_relu() {
    let r = run_rules(&long_chain(4), simplify_rules());
    assert_eq!(
        r.ops(),
        [
            "%a0 = fake_quant(%x, %s, %z) {qmin = -128, qmax = 127} : f32[B, 8]",
            "%r0 = relu(%a0) : f32[B, 8]",
        ]
    );
    assert!(qir::print::print(&r.after).contains("output y = %r0"));
    assert_equivalent(&r.before, &r.after, Tolerance::Exact);
}

#[test]
fn passes_come_from_the_registry_with_their_options_and_report_limits() {
    let pm =
        PassManager::parse("simplify{node-limit=10},fuse,fold-batchnorm{iter-limit=3}").unwrap();
    assert_eq!(
        pm.pipeline().to_string(),
        "simplify{node-limit=10,iter-limit=30,time-limit-ms=10000},fuse{node-limit=50000,iter-limit=30,time-limit-ms=10000},fold-batchnorm{node-limit=50000,iter-limit=3,time-limit-ms=10000}"
    );
    let mut g = parse(&long_chain(6));
    let _ = take_remarks();
    let report = pm.run(&mut g).unwrap();
    assert_eq!(report.runs[0].name, "simplify");
    let remarks = take_remarks();
    assert!(
        remarks
            .iter()
            .any(|r| r.starts_with("remark: pass 'simplify' stopped by the node limit")),
        "{remarks:?}"
    );
    assert_eq!(passes::Simplify::default().name(), "simplify");
    assert_eq!(passes::Fuse::default().name(), "fuse");
    assert_eq!(passes::FoldBatchNorm::default().name(), "fold-batchnorm");
}

#[test]
fn fold_batchnorm_then_fuse_on_the_cnn() {
    let g = model("mnist_cnn");
    let mut h = g.clone();
    let folded = fold_batchnorm(&mut h, &Limits::default()).unwrap();
    assert_eq!(folded.changed, Changed::Yes);
    assert_eq!(folded.applied.get("fold-batchnorm-conv2d"), Some(&2));
    let fused = fuse(&mut h, &Limits::default()).unwrap();
    assert_eq!(fused.changed, Changed::Yes);
    let ops = egraph_support::ops(&h);
    assert!(
        ops.contains(
            &"%relu1 = conv2d(%x, %4, %6) {padding = [1, 1, 1, 1], act = relu} : f32[B, 8, 28, 28]"
                .to_string()
        ),
        "{ops:#?}"
    );
    assert!(
        !ops.iter()
            .any(|l| l.contains("batch_norm") || l.contains("= relu(")),
        "{ops:#?}"
    );
    // the block comments moved to the first op of their block
    let text = qir::print::print(&h);
    assert!(
        text.contains("// block 2\n  %7 = add(%bn2.var, %cst)"),
        "{text}"
    );
    assert_equivalent(&g, &h, Tolerance::Relative(1e-5));
    // nothing left to do the second time
    let mut again = h.clone();
    assert_eq!(
        fold_batchnorm(&mut again, &Limits::default())
            .unwrap()
            .changed,
        Changed::No
    );
    assert_eq!(
        fuse(&mut again, &Limits::default()).unwrap().changed,
        Changed::No
    );
}

#[test]
fn simplify_keeps_training_graphs_exact() {
    for name in ["mnist_cnn", "residual", "concat", "depthwise"] {
        let mut g = model(name);
        passes::Grad::default().run(&mut g).unwrap();
        let mut h = g.clone();
        let report = simplify(&mut h, &Limits::default()).unwrap();
        assert_eq!(report.stop, Stop::Saturated, "{name}");
        assert_equivalent(&g, &h, Tolerance::Exact);
    }
}

#[test]
fn the_oracle_catches_wrong_rewrites() {
    // the rewrites the guards refuse would change values: check the oracle sees it
    let wrong = [
        (
            // relu absorbed although the zero point is not qmin
            "graph @t {
  input %x: f32[B, 8]
  state %s: f32[] = fill(0.05)
  const %z: i32[] = zeros

  %r = relu(%x) : f32[B, 8]
  %q = fake_quant(%r, %s, %z) {qmin = -128, qmax = 127} : f32[B, 8]

  output y = %q
}
",
            "%q = fake_quant(%x, %s, %z) {qmin = -128, qmax = 127} : f32[B, 8]",
        ),
        (
            // an inner requantize that clips, folded away
            "graph @t {
  input %x: i32[B, 4]

  %m = requantize(%x) {multiplier = [1073741824], shift = [-1], rounding = half_away_from_zero} : !quant.uniform<i8:f32, 0.1>[B, 4]
  %q = requantize(%m) {multiplier = [1288490189], shift = [0], rounding = half_away_from_zero} : !quant.uniform<i8:f32, 0.05:-5>[B, 4]

  output y = %q
}
",
            "%q = requantize(%x) {multiplier = [1288490189], shift = [0], rounding = half_away_from_zero} : !quant.uniform<i8:f32, 0.05:-5>[B, 4]",
        ),
    ];
    for (text, replacement) in wrong {
        let before = parse(text);
        let op_lines: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with('%'))
            .collect();
        let mut rewritten = text.to_string();
        for l in &op_lines {
            rewritten = rewritten.replace(&format!("{l}\n"), "");
        }
        rewritten = rewritten.replace("\n  output", &format!("  {replacement}\n\n  output"));
        let after = parse(&rewritten);
        let caught = std::panic::catch_unwind(|| {
            assert_equivalent(&before, &after, Tolerance::Exact);
        });
        assert!(caught.is_err(), "the oracle accepted:\n{rewritten}");
    }
}
