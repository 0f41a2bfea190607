//! Every run filetest of `testdata/run/` on every executor, and the check that the files
//! cover every op of the op table.

use std::collections::BTreeSet;
use std::path::PathBuf;

use qir::Op;
use qir_exec::Executor;

fn files() -> Vec<(PathBuf, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/run");
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .expect("testdata/run")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "qir"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "testdata/run holds only {} files",
        files.len()
    );
    files
}

fn run_all(executor: &dyn Executor) {
    let mut failures = Vec::new();
    for (path, text) in files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let result = qir_filetest::parse(&text).and_then(|f| qir_filetest::run(&f, executor));
        if let Err(e) = result {
            failures.push(format!("testdata/run/{name}:\n{e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} run file(s) failed on {}:\n{}",
        failures.len(),
        executor.name(),
        failures.join("\n")
    );
}

#[test]
fn run_files_pass_on_the_interpreter() {
    run_all(&qir_interp::Interpreter::default());
}

#[test]
fn run_files_pass_on_the_jit() {
    run_all(&qir_jit::Jit::default());
}

#[test]
fn run_files_cover_every_op() {
    let mut seen = BTreeSet::new();
    for (path, text) in files() {
        let f = qir_filetest::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for id in f.graph.node_ids() {
            if let Some(op) = f.graph.node(id).op() {
                seen.insert(op);
            }
        }
    }
    let missing: Vec<&str> = Op::ALL
        .iter()
        .filter(|op| !seen.contains(*op))
        .map(|op| op.mnemonic())
        .collect();
    assert!(
        missing.is_empty(),
        "ops without a run file: {}",
        missing.join(", ")
    );
}

#[test]
fn malformed_run_files_are_errors() {
    let g = "graph @t {\n  input %x: f32[2]\n  %y = relu(%x) : f32[2]\n  output y = %y\n}\n";
    for (head, want) in [
        (
            "// tolerance: exact\n// input x: [1, 2]\n// expect y: [1, 2]\n",
            "run:",
        ),
        (
            "// run: r\n// input x: [1, 2]\n// expect y: [1, 2]\n",
            "tolerance",
        ),
        (
            "// run: r\n// tolerance: abs=1 rel=0\n// input x: [1, 2]\n// expect y: [1, 2]\n",
            "reason",
        ),
        (
            "// run: r\n// tolerance: exact\n// input x: [1, 2]\n",
            "expect",
        ),
        (
            "// run: r\n// tolerance: exact\n// input x: [1, two]\n// expect y: [1, 2]\n",
            "not a number",
        ),
    ] {
        let e = qir_filetest::parse(&format!("{head}{g}")).unwrap_err();
        assert!(e.contains(want), "{want}: {e}");
    }
    let f = qir_filetest::parse(&format!(
        "// run: r\n// tolerance: exact\n// input x: [1, 2, 3]\n// expect y: [1, 2]\n{g}"
    ))
    .unwrap();
    assert!(
        qir_filetest::input_tensors(&f)
            .unwrap_err()
            .contains("2 elements")
    );
    // a wrong expectation is reported with its line, index and both values
    let f = qir_filetest::parse(&format!(
        "// run: r\n// tolerance: exact\n// input x: [-1, 2]\n// expect y: [0, 3]\n{g}"
    ))
    .unwrap();
    let e = qir_filetest::run(&f, &qir_interp::Interpreter::default()).unwrap_err();
    assert!(e.contains("4: y[1]: expected 3.0, got 2.0"), "{e}");
}
