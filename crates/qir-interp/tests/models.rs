//! Every model in `testdata/models/` runs in the interpreter, and f32 agrees with f64:
//! logits within 1e-4 of the largest logit, the loss within 1e-5 relative.

mod common;

use std::collections::HashMap;

use common::*;
use qir::{Data, Dim, ElemType, Graph, Tensor};
use qir_interp::{Precision, RunOptions, Session, init_store};

fn models() -> Vec<(String, Graph)> {
    let dir = repo_root().join("testdata/models");
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries {
        let path = e.unwrap().path();
        if path.extension().and_then(|s| s.to_str()) != Some("qir") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let g = qir_reader::parse_and_verify(&src).unwrap_or_else(|d| {
            panic!(
                "{}: {}",
                path.display(),
                qir_reader::render(&d, "model", &src)
            )
        });
        out.push((path.file_name().unwrap().to_string_lossy().into_owned(), g));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Inputs for every declared input with the batch bound to `n`: floats in [0, 1) and
/// class labels for integer inputs.
fn feed(g: &Graph, n: usize, seed: u64) -> HashMap<String, Tensor> {
    let mut m = HashMap::new();
    for id in g.inputs() {
        let node = g.node(id);
        let shape: Vec<usize> = node
            .ty
            .shape
            .dims()
            .iter()
            .map(|d| match d {
                Dim::Fixed(v) => *v as usize,
                Dim::Sym(_) => n,
            })
            .collect();
        let len: usize = shape.iter().product();
        let t = match node.ty.elem {
            ElemType::I32 => Tensor::new(
                shape,
                Data::I32((0..len as i32).map(|i| (i * 7) % 10).collect()),
            ),
            ElemType::I64 => Tensor::new(
                shape,
                Data::I64((0..len as i64).map(|i| (i * 7) % 10).collect()),
            ),
            _ => Tensor::f32(
                shape,
                values(len, seed)
                    .into_iter()
                    .map(|v| (v as f32 + 1.0) / 2.0)
                    .collect(),
            ),
        };
        m.insert(node.name.clone().unwrap(), t.unwrap());
    }
    m
}

#[test]
fn every_test_model_runs_and_f32_agrees_with_f64() {
    let models = models();
    let names: Vec<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        models.len() >= 6,
        "expected the six test models, found {names:?}"
    );
    for (name, g) in &models {
        let sess = Session::new(g).unwrap();
        let mut store = init_store(g, 42).unwrap();
        let inputs = feed(g, 3, 5);
        let run = |p| {
            let opts = RunOptions {
                precision: p,
                apply_updates: false,
            };
            sess.run(&mut store.clone(), &inputs, &opts)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let r32 = run(Precision::F32);
        let r64 = run(Precision::F64);
        assert_eq!(
            r32.values.len(),
            g.node_count(),
            "{name}: every node has a value"
        );
        let l32 = floats(&r32.outputs["logits"]);
        let l64 = floats(&r64.outputs["logits"]);
        assert_eq!(r32.outputs["logits"].shape, [3, 10], "{name}");
        let scale = l64.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "{name}: logits are all ~0");
        for (a, b) in l32.iter().zip(&l64) {
            assert!((a - b).abs() <= 1e-4 * scale, "{name}: f32 {a} vs f64 {b}");
        }
        let (a, b) = (r32.loss.unwrap(), r64.loss.unwrap());
        assert!(
            (a - b).abs() <= 1e-5 * b.abs(),
            "{name}: loss f32 {a} vs f64 {b}"
        );
        // running a model does not change its store when updates are off
        let before = store.clone();
        sess.run(&mut store, &inputs, &RunOptions::default())
            .unwrap();
        assert_eq!(store, before, "{name}: a forward model has no updates");
    }
}
