//! Helpers of the integration tests: the Python interpreter with onnx and onnxruntime
//! (from `QATC_PYTHON`), the models `make_models.py` generates with it, and running an
//! imported graph with the reference interpreter.

#![allow(dead_code)]

pub mod builder;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use qir::Tensor;
use qir_interp::{Precision, RunOptions, Store};

/// The Python interpreter of the test environment (`QATC_PYTHON`, made by
/// `scripts/python-env.sh`). `None` when it is unset — the caller skips, after this has
/// printed why — unless `QATC_REQUIRE_PYTHON=1`, where a missing interpreter fails the test.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("QATC_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            let why = "QATC_PYTHON is not set: this test compares with onnxruntime and needs \
                       the Python environment of scripts/python-env.sh \
                       (export QATC_PYTHON=\"$(scripts/python-env.sh | tail -n 1)\")";
            if std::env::var("QATC_REQUIRE_PYTHON").as_deref() == Ok("1") {
                panic!("QATC_REQUIRE_PYTHON=1 but {why}");
            }
            // Written to the process's stderr directly, past the test harness's capture,
            // so that a plain `cargo test` shows why nothing was compared.
            let _ = writeln!(std::io::stderr(), "skipped: {why}");
            None
        }
    }
}

/// One generated test model.
pub struct Generated {
    pub name: String,
    pub opset: i64,
    pub onnx: PathBuf,
    /// `in.<input>` and `out.<output>` arrays.
    pub arrays: BTreeMap<String, Tensor>,
}

struct Dir {
    _tmp: tempfile::TempDir,
    path: PathBuf,
}

static GENERATED: OnceLock<Dir> = OnceLock::new();

/// The folder `make_models.py` wrote its models into (generated once per test binary).
pub fn generated_dir(python: &Path) -> &'static Path {
    &GENERATED
        .get_or_init(|| {
            let tmp = tempfile::tempdir().expect("temp dir");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/make_models.py");
            let out = Command::new(python)
                .arg(&script)
                .arg(tmp.path())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
            assert!(
                out.status.success(),
                "{} {} failed:\n{}{}",
                python.display(),
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let path = tmp.path().to_path_buf();
            Dir { _tmp: tmp, path }
        })
        .path
}

/// Every generated model, in manifest order.
pub fn generated(python: &Path) -> Vec<Generated> {
    let dir = generated_dir(python);
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest JSON");
    let mut out = Vec::new();
    for entry in manifest.as_array().expect("a list of models") {
        let name = entry["name"].as_str().expect("name").to_string();
        let opset = entry["opset"].as_i64().expect("opset");
        let arrays =
            runtime::io::read_npz(&dir.join(format!("{name}.npz"))).expect("npz of a model");
        out.push(Generated {
            onnx: dir.join(format!("{name}.onnx")),
            name,
            opset,
            arrays,
        });
    }
    out
}

/// A store holding an import's weights and every other declaration's initial value.
pub fn store(imported: &qir_onnx::Imported) -> Store {
    let mut store: Store = imported
        .weights
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    qir_interp::fill_store(&imported.graph, &mut store, 0).expect("store");
    store
}

/// Runs an imported graph on inputs given by their ONNX names; outputs by qir name.
pub fn run(
    imported: &qir_onnx::Imported,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<BTreeMap<String, Tensor>, String> {
    let mut store = store(imported);
    let inputs: HashMap<String, Tensor> = inputs
        .iter()
        .map(|(k, v)| (qir_onnx::names::sanitize(k), v.clone()))
        .collect();
    let opts = RunOptions {
        precision: Precision::F32,
        apply_updates: false,
    };
    qir_interp::run(&imported.graph, &mut store, &inputs, &opts)
        .map(|r| r.outputs)
        .map_err(|e| e.to_string())
}

/// Parses printed text back and checks that printing it again gives the same text.
pub fn assert_canonical(g: &qir::Graph, what: &str) -> String {
    let text = qir::print::print(g);
    let back = match qir_reader::parse_and_verify(&text) {
        Ok(b) => b,
        Err(d) => panic!("{what}:\n{}", qir_reader::render(&d, what, &text)),
    };
    assert_eq!(qir::print::print(&back), text, "{what}: print/parse/print");
    text
}
