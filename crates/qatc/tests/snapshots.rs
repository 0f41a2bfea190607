//! Snapshot tests over `testdata/` (DESIGN.md §7, §8). Folder membership is an assertion,
//! checked before anything is snapshotted:
//! - `parse/ok/`: parses, and print → parse → print is the identity; snapshot: the IR.
//! - `parse/err/`: does not parse, every diagnostic has a place; snapshot: the diagnostics.
//! - `verify/ok/`: parses and verifies; snapshot: the IR.
//! - `verify/err/`: parses but does not verify; snapshot: the diagnostics.
//! - `passes/<pass>/`: runs `<pass>` (or the pipeline of a first line
//!   `// RUN: passes=...` / `// RUN: pipeline=NAME{param=value}`) and verifies; snapshot: whether the
//!   graph changed, then the IR. `canonicalize` must also find nothing to do the second time.
//!   `passes/<pass>/err/`: the run must fail; snapshot: the error and annotated IR.
//! - `pipelines/<name>/`: runs the named pipeline end to end; snapshot as for passes.
//!
//! Each snapshot sits beside its input: `DIR/NAME.qir` → `DIR/snapshots/NAME.snap`.
//! Accept changes with `cargo insta review` (or `INSTA_UPDATE=always cargo test`).

mod common;

use std::path::Path;

use common::{rel, testdata};
use passes::{PassManager, RunError};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Snapshots `value` as `DIR/snapshots/NAME.snap` for input `DIR/NAME.qir`.
fn snapshot(input: &Path, value: &str) {
    let dir = input
        .parent()
        .expect("inputs live in a folder")
        .join("snapshots");
    let name = input
        .file_stem()
        .expect("inputs have a name")
        .to_string_lossy()
        .into_owned();
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(dir);
    s.remove_snapshot_suffix();
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s.set_input_file(input);
    s.bind(|| insta::assert_snapshot!(name, value));
}

fn render(diags: &[qir_reader::Diagnostic], path: &Path, src: &str) -> String {
    qir_reader::render(diags, &rel(path), src)
}

/// Every diagnostic of an error file must point into the file.
fn assert_all_placed(diags: &[qir_reader::Diagnostic], path: &Path, rendered: &str) {
    assert!(!diags.is_empty(), "{}: no diagnostics", rel(path));
    for d in diags {
        assert!(
            d.span.is_some(),
            "{}: diagnostic without a place: {}\n{rendered}",
            rel(path),
            d.message
        );
    }
}

/// print → parse → print gives the same text.
fn assert_round_trip(g: &qir::Graph, path: &Path) -> String {
    let printed = qir::print::print(g);
    let again = qir_reader::parse(&printed)
        .map(|g| qir::print::print(&g))
        .unwrap_or_else(|d| {
            panic!(
                "{}: the printed IR does not parse:\n{}\n{printed}",
                rel(path),
                qir_reader::render(&d, "printed", &printed)
            )
        });
    assert_eq!(
        again,
        printed,
        "{}: print → parse → print changed the text",
        rel(path)
    );
    printed
}

#[test]
fn parse_ok() {
    insta::glob!("../../../testdata/parse/ok", "*.qir", |path| {
        let src = read(path);
        let g = qir_reader::parse(&src).unwrap_or_else(|d| {
            panic!(
                "{} is in ok/ but does not parse:\n{}",
                rel(path),
                render(&d, path, &src)
            )
        });
        let printed = assert_round_trip(&g, path);
        snapshot(path, &printed);
    });
}

#[test]
fn parse_err() {
    insta::glob!("../../../testdata/parse/err", "*.qir", |path| {
        let src = read(path);
        let diags = match qir_reader::parse(&src) {
            Ok(_) => panic!("{} is in err/ but parses", rel(path)),
            Err(d) => d,
        };
        let rendered = render(&diags, path, &src);
        assert_all_placed(&diags, path, &rendered);
        snapshot(path, &rendered);
    });
}

#[test]
fn verify_ok() {
    insta::glob!("../../../testdata/verify/ok", "*.qir", |path| {
        let src = read(path);
        let g = qir_reader::parse_and_verify(&src).unwrap_or_else(|d| {
            panic!(
                "{} is in ok/ but has errors:\n{}",
                rel(path),
                render(&d, path, &src)
            )
        });
        let printed = assert_round_trip(&g, path);
        snapshot(path, &printed);
    });
}

#[test]
fn verify_err() {
    insta::glob!("../../../testdata/verify/err", "*.qir", |path| {
        let src = read(path);
        if let Err(d) = qir_reader::parse(&src) {
            panic!(
                "{} is in verify/err/ but does not even parse (it belongs in parse/err/):\n{}",
                rel(path),
                render(&d, path, &src)
            );
        }
        let diags = match qir_reader::parse_and_verify(&src) {
            Ok(_) => panic!("{} is in err/ but verifies", rel(path)),
            Err(d) => d,
        };
        let rendered = render(&diags, path, &src);
        assert_all_placed(&diags, path, &rendered);
        snapshot(path, &rendered);
    });
}

/// What an input without a RUN line runs: the pass or the named pipeline of its folder.
#[derive(Clone, Copy)]
enum Default<'a> {
    Pass(&'a str),
    Pipeline(&'a str),
}

/// The pipeline a test input asks for: its `// RUN:` line, or `default`.
fn pipeline_for(src: &str, default: Default, path: &Path) -> passes::Pipeline {
    let first = src.lines().next().unwrap_or("");
    let Some(run) = first.strip_prefix("// RUN:").map(str::trim) else {
        return match default {
            Default::Pass(name) => passes::Pipeline {
                passes: vec![passes::PassSpec::new(name)],
            },
            Default::Pipeline(name) => {
                passes::named(name).unwrap_or_else(|e| panic!("{}: {e}", rel(path)))
            }
        };
    };
    let result = if let Some(text) = run.strip_prefix("passes=") {
        passes::pipeline::parse(text).map_err(passes::ConfigError::from)
    } else if let Some(spec) = run.strip_prefix("pipeline=") {
        // `convert{weights=...}`: a named pipeline with its parameters
        passes::named_spec(spec)
    } else {
        panic!(
            "{}: a RUN line is `// RUN: passes=...` or `// RUN: pipeline=...`",
            rel(path)
        )
    };
    result.unwrap_or_else(|e| panic!("{}: {e}", rel(path)))
}

/// Runs the pipeline an input asks for; the snapshot text of a successful run.
fn run_ok(path: &Path, default: Default) -> String {
    let src = read(path);
    let pipeline = pipeline_for(&src, default, path);
    let pm = PassManager::from_pipeline(&pipeline).unwrap_or_else(|e| panic!("{}: {e}", rel(path)));
    let mut g = qir_reader::parse_and_verify(&src).unwrap_or_else(|d| {
        panic!(
            "{}: the input must verify:\n{}",
            rel(path),
            render(&d, path, &src)
        )
    });
    let report = pm
        .run(&mut g)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", rel(path), error_ir(&e)));
    let printed = assert_round_trip(&g, path);
    if pipeline.passes.iter().all(|p| p.name == "canonicalize") {
        let again = pm
            .run(&mut g)
            .unwrap_or_else(|e| panic!("{}: {e}", rel(path)));
        assert!(
            !again.changed().changed(),
            "{}: canonicalize changed its own output:\n{printed}",
            rel(path)
        );
    }
    format!("// changed: {}\n{printed}", report.changed())
}

fn error_ir(e: &RunError) -> &str {
    match e {
        RunError::InvalidInput { ir, .. } | RunError::VerifyFailed { ir, .. } => ir,
        RunError::PassFailed { ir, .. } => ir.as_deref().unwrap_or(""),
    }
}

/// The folder directly holding `path` (a pass or pipeline name).
fn folder_name(path: &Path, up: usize) -> String {
    let mut p = path.parent();
    for _ in 0..up {
        p = p.and_then(Path::parent);
    }
    p.and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn passes_ok() {
    insta::glob!("../../../testdata/passes", "*/*.qir", |path| {
        let pass = folder_name(path, 0);
        assert!(
            passes::registry::lookup(&pass).is_some(),
            "testdata/passes/{pass}/ is not named after a registered pass"
        );
        snapshot(path, &run_ok(path, Default::Pass(&pass)));
    });
}

#[test]
fn passes_err() {
    let mut settings = insta::Settings::clone_current();
    settings.set_allow_empty_glob(true);
    settings.bind(|| {
        insta::glob!("../../../testdata/passes", "*/err/*.qir", |path| {
            let pass = folder_name(path, 1);
            let src = read(path);
            let pipeline = pipeline_for(&src, Default::Pass(&pass), path);
            let pm = PassManager::from_pipeline(&pipeline)
                .unwrap_or_else(|e| panic!("{}: {e}", rel(path)));
            let mut g = qir_reader::parse_and_verify(&src).unwrap_or_else(|d| {
                panic!(
                    "{}: the input must verify:\n{}",
                    rel(path),
                    render(&d, path, &src)
                )
            });
            match pm.run(&mut g) {
                Ok(_) => panic!("{} is in err/ but the passes succeed", rel(path)),
                Err(e) => snapshot(path, &format!("error: {e}\n{}", error_ir(&e))),
            }
        });
    });
}

#[test]
fn pipelines() {
    insta::glob!("../../../testdata/pipelines", "*/*.qir", |path| {
        let name = folder_name(path, 0);
        assert!(
            passes::named_pipelines().any(|p| p.name == name),
            "testdata/pipelines/{name}/ is not named after a named pipeline"
        );
        snapshot(path, &run_ok(path, Default::Pipeline(&name)));
    });
}

#[test]
fn every_named_pipeline_is_tested_end_to_end() {
    for p in passes::named_pipelines() {
        let dir = testdata().join("pipelines").join(p.name);
        assert!(
            !common::qir_files(&dir).is_empty(),
            "named pipeline '{}' has no end-to-end test: add inputs to testdata/pipelines/{}/",
            p.name,
            p.name
        );
    }
}
