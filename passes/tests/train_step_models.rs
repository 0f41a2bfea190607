//! The derived training step of every model in `testdata/models/`, snapshotted so that any
//! change to the backward graph shows in review: the float step (`grad`, SGD) and the QAT
//! step (the `train-step` pipeline: prepare-qat with tflite-int8, grad, simplify).
//! Snapshots live in `testdata/pipelines/train-step/models/`. Each step must verify and
//! print back to itself through the reader.

mod prepare_common;

use passes::grad::{GradOptions, grad};
use passes::{OptValue, PassManager, named_with};
use prepare_common::{MODELS, model, repo_root};
use qir::Graph;

fn snapshot(name: &str, value: &str) {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(repo_root().join("testdata/pipelines/train-step/models"));
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s.bind(|| insta::assert_snapshot!(name, value));
}

/// Verifies `g`, checks that its text reads back to the same text, and returns the text.
fn checked_text(g: &Graph) -> String {
    qir::verify::verify(g).unwrap_or_else(|e| panic!("{e}"));
    let text = qir::print::print(g);
    let back = qir_reader::parse_and_verify(&text)
        .unwrap_or_else(|d| panic!("{}", qir_reader::render(&d, "<step>", &text)));
    assert_eq!(
        qir::print::print(&back),
        text,
        "the step does not round-trip"
    );
    text
}

#[test]
fn float_training_step_of_every_model() {
    for m in MODELS {
        let step = grad(&model(m), &GradOptions::default()).unwrap_or_else(|e| panic!("{m}: {e}"));
        snapshot(&format!("{m}.grad"), &checked_text(&step));
    }
}

#[test]
fn qat_training_step_of_every_model() {
    let pipeline = named_with(
        "train-step",
        &[("scheme", OptValue::Scalar("tflite-int8".into()))],
    )
    .unwrap();
    let pm = PassManager::from_pipeline(&pipeline).unwrap();
    for m in MODELS {
        let mut g = model(m);
        pm.run(&mut g).unwrap_or_else(|e| panic!("{m}: {e}"));
        let text = checked_text(&g);
        // every weight's gradient passes through the clipped straight-through estimator
        assert!(text.contains("fake_quant_grad("), "{m}: no STE in the step");
        snapshot(&format!("{m}.train-step"), &text);
    }
}
