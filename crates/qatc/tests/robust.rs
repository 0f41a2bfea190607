//! Hostile and careless input: inputs that must not bring qatc down, and outputs that must
//! not destroy a user's data. Every test here failed (abort, panic, silent damage) before
//! the fix it covers.

mod common;

use std::path::Path;

use common::qatc_in;

fn tmp_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("writes");
    }
    dir
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).expect("reads")
}

/// A 100,000-character undefined name next to a 100,000-character defined one: the
/// did-you-mean search used to allocate 80 GB and abort.
#[test]
fn long_names_get_an_error_not_an_abort() {
    let n = 100_000;
    let text = format!(
        "graph @g {{\n  input %{}: f32[1]\n  output o = %{}\n}}\n",
        "a".repeat(n),
        "b".repeat(n)
    );
    let dir = tmp_with(&[("x.qir", text.as_bytes())]);
    let start = std::time::Instant::now();
    let run = qatc_in(dir.path(), &["check", "x.qir"], None);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.starts_with("x.qir:3:14: error: use of undefined value '%bbbb"),
        "{}",
        &run.stderr[..run.stderr.len().min(300)]
    );
    assert!(!run.stderr.contains("did you mean"));
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
}
