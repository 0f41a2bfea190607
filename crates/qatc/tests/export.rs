//! `qatc export` through the binary: a trained float model exported to ONNX and imported
//! back classifies the test set exactly as the original does; what the exporter cannot
//! express is one `error:` line naming the op.

mod common;

use common::{qatc_in, testdata};

fn accuracy_line(stdout: &str) -> String {
    // "test accuracy 98.33% (354/360), test loss 0.0895": the loss needs the label input,
    // which the exported inference model no longer has
    stdout
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn export_then_import_classifies_like_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = testdata().join("models/digits_mlp.qir");
    let model = model.to_string_lossy();
    let data = testdata().join("digits");
    let data = data.to_string_lossy();
    let r = qatc_in(
        d,
        &[
            "train",
            &model,
            "--data",
            &data,
            "--epochs",
            "3",
            "--no-progress",
            "-o",
            "w.safetensors",
        ],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.all());
    let r = qatc_in(
        d,
        &[
            "export",
            &model,
            "--weights",
            "w.safetensors",
            "-o",
            "m.onnx",
        ],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.all());
    let r = qatc_in(d, &["import", "m.onnx", "-o", "m.qir"], None);
    assert_eq!(r.code, Some(0), "{}", r.all());
    let eval = |m: &str, w: &str| {
        let r = qatc_in(d, &["eval", m, "--data", &data, "--weights", w], None);
        assert_eq!(r.code, Some(0), "{m}: {}", r.all());
        accuracy_line(&r.stdout)
    };
    let original = eval(&model, "w.safetensors");
    let round_trip = eval("m.qir", "m.safetensors");
    assert!(original.starts_with("test accuracy"), "{original}");
    assert_eq!(original, round_trip);
}

#[test]
fn an_op_the_exporter_cannot_express_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("e.qir"),
        "graph @e {\n  input %x: f32[B, 4]\n\n  %y = exp(%x) : f32[B, 4]\n\n  output y = %y\n}\n",
    )
    .unwrap();
    let r = qatc_in(d, &["export", "e.qir", "-o", "e.onnx"], None);
    assert_eq!(r.code, Some(1), "{}", r.all());
    assert!(r.stderr.contains("exp"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(!d.join("e.onnx").exists());
}
