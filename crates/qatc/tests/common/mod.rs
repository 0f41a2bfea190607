//! Helpers shared by the driver's integration tests: where the repository and its
//! `testdata/` are, how to run the built `qatc` binary, and how to list `.qir` files.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `testdata/` at the repository root.
pub fn testdata() -> PathBuf {
    repo_root().join("testdata")
}

/// `path` relative to `testdata/`, with `/` separators, for stable names in snapshots.
pub fn rel(path: &Path) -> String {
    let td = testdata();
    let p = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    p.strip_prefix(&td)
        .unwrap_or(&p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Every `.qir` file under `dir`, recursively, sorted.
pub fn qir_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "qir") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The result of running the binary.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together, for messages.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the built `qatc` with `args` in `dir`, with `stdin` as standard input.
pub fn qatc_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    use std::io::Write as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qatc"));
    cmd.args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the qatc binary runs");
    if let Some(text) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        // a binary that exits early may close the pipe: not a failure of the test
        let _ = pipe.write_all(text.as_bytes());
    }
    finish(child.wait_with_output().expect("qatc finishes"))
}

/// Runs the built `qatc` with `args` in the repository root.
pub fn qatc(args: &[&str]) -> Run {
    qatc_in(&repo_root(), args, None)
}

/// The Python interpreter with onnx and onnxruntime (`QATC_PYTHON`, made by
/// `scripts/python-env.sh`). `None` when it is unset — the caller returns after this has
/// printed why — unless `QATC_REQUIRE_PYTHON=1` (the README's test command), where a
/// missing interpreter fails the test.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("QATC_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            let why = "QATC_PYTHON is not set: this test compares with onnxruntime and needs \
                       the Python environment of scripts/python-env.sh";
            if std::env::var("QATC_REQUIRE_PYTHON").as_deref() == Ok("1") {
                panic!("QATC_REQUIRE_PYTHON=1 but {why}");
            }
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "not compared with onnxruntime: {why}");
            None
        }
    }
}
