//! The driver over every model in `testdata/models/`: `check` and `fmt --check` pass, `dot`
//! renders one graph node per IR node, and the `cleanup` pipeline leaves a valid model.
//! Runs the built binary, as a user would.

mod common;

use std::path::PathBuf;

use common::{qatc, qir_files, rel, testdata};

fn models() -> Vec<PathBuf> {
    let files = qir_files(&testdata().join("models"));
    assert!(
        !files.is_empty(),
        "no models in {}: the test models are part of the repository",
        testdata().join("models").display()
    );
    files
}

fn args(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|p| p.display().to_string()).collect()
}

#[test]
fn check_accepts_every_model() {
    let files = args(&models());
    let mut argv = vec!["check"];
    argv.extend(files.iter().map(String::as_str));
    let run = qatc(&argv);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(run.all(), "", "check prints nothing for good files");
}

#[test]
fn every_model_is_in_canonical_form() {
    let files = args(&models());
    let mut argv = vec!["fmt", "--check"];
    argv.extend(files.iter().map(String::as_str));
    let run = qatc(&argv);
    assert_eq!(run.code, Some(0), "not canonical:\n{}", run.all());
    assert_eq!(run.all(), "");
}

#[test]
fn dot_renders_every_model() {
    for path in models() {
        let p = path.display().to_string();
        let run = qatc(&["dot", &p]);
        assert_eq!(run.code, Some(0), "{}: {}", rel(&path), run.stderr);
        let src = std::fs::read_to_string(&path).expect("model reads");
        let g = qir_reader::parse_and_verify(&src).expect("model verifies");
        assert!(
            run.stdout
                .starts_with(&format!("digraph \"{}\" {{\n", g.name)),
            "{}: {}",
            rel(&path),
            run.stdout
        );
        assert!(run.stdout.ends_with("}\n"));
        let node_lines = run
            .stdout
            .lines()
            .filter(|l| {
                l.strip_prefix("  n")
                    .and_then(|r| r.split_once(' '))
                    .is_some_and(|(id, rest)| {
                        id.bytes().all(|b| b.is_ascii_digit()) && rest.starts_with("[label=")
                    })
            })
            .count();
        assert_eq!(
            node_lines,
            g.node_count(),
            "{}: one dot node per IR node",
            rel(&path)
        );
        let edges = run
            .stdout
            .lines()
            .filter(|l| l.starts_with("  n") && l.contains(" -> n") && !l.contains("update"))
            .count();
        assert_eq!(
            edges,
            g.petgraph().edge_count(),
            "{}: one dot edge per operand",
            rel(&path)
        );
    }
}

#[test]
fn cleanup_keeps_every_model_valid() {
    for path in models() {
        let p = path.display().to_string();
        let run = qatc(&["opt", &p, "--pipeline", "cleanup"]);
        assert_eq!(run.code, Some(0), "{}: {}", rel(&path), run.stderr);
        let before = qir_reader::parse_and_verify(&std::fs::read_to_string(&path).expect("reads"))
            .expect("model verifies");
        let after = qir_reader::parse_and_verify(&run.stdout).unwrap_or_else(|d| {
            panic!(
                "{}: output does not verify:\n{}",
                rel(&path),
                qir_reader::render(&d, "out", &run.stdout)
            )
        });
        assert!(after.op_count() <= before.op_count(), "{}", rel(&path));
        assert_eq!(
            after.params().len(),
            before.params().len(),
            "{}: params are kept",
            rel(&path)
        );
        assert_eq!(
            after.inputs().len(),
            before.inputs().len(),
            "{}: inputs are kept",
            rel(&path)
        );
        assert_eq!(
            after.outputs().len(),
            before.outputs().len(),
            "{}",
            rel(&path)
        );
    }
}
