//! Helpers shared by the integration tests: the repository root, the test models and the
//! bundled digits data.

#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root (two levels above this crate).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A test model from `testdata/models/`, parsed and verified.
pub fn model(name: &str) -> qir::Graph {
    let path = repo().join("testdata/models").join(name);
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match qir_reader::parse_and_verify(&src) {
        Ok(g) => g,
        Err(d) => panic!("{}", qir_reader::render(&d, name, &src)),
    }
}

/// The bundled digits data set.
pub fn digits() -> runtime::data::Dataset {
    runtime::data::Dataset::load(&repo().join("testdata/digits")).expect("testdata/digits")
}

/// A model from this crate's `tests/models/`, parsed and verified.
pub fn local_model(name: &str) -> qir::Graph {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name);
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match qir_reader::parse_and_verify(&src) {
        Ok(g) => g,
        Err(d) => panic!("{}", qir_reader::render(&d, name, &src)),
    }
}

/// The executor the runtime's tests run graphs with: the reference interpreter.
pub fn executor() -> runtime::executor::SharedExecutor {
    std::sync::Arc::new(qir_interp::Interpreter::default())
}

/// The JIT executor.
pub fn jit() -> runtime::executor::SharedExecutor {
    std::sync::Arc::new(qir_jit::Jit::default())
}
