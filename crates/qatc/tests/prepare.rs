//! `qatc prepare`: the prepare-qat pipeline with a scheme preset or file, its output, and
//! its errors (exit 1, never a panic).

mod common;

use common::{qatc, qatc_in, repo_root};

#[test]
fn prepare_writes_the_prepared_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mlp.qat.qir");
    let out_s = out.display().to_string();
    let r = qatc(&["prepare", "testdata/models/digits_mlp.qir", "-o", &out_s]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    let text = std::fs::read_to_string(&out).unwrap();
    for line in [
        "%x.fq = fake_quant(%x, %x.scale, %x.zp) {qmin = -128, qmax = 127} : f32[B, 64]",
        "%fc1.w.fq = fake_quant(%fc1.w, %fc1.w.scale, %fc1.w.zp) {qmin = -127, qmax = 127, axis = 0} : f32[32, 64]",
        "%relu1 = linear(%x.fq, %fc1.w.fq, %fc1.b) {act = relu} : f32[B, 32]",
        "output logits = %logits.fq",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    // The output is a valid model: preparing it again changes nothing.
    let again = qatc(&["prepare", &out_s]);
    assert_eq!(again.code, Some(0), "{}", again.all());
    assert_eq!(again.stdout, text);
}

#[test]
fn prepare_reads_scheme_files_and_shows_them() {
    let r = qatc(&[
        "prepare",
        "testdata/models/depthwise.qir",
        "--scheme",
        "passes/schemes/w4a8-first-last-8bit.toml",
        "--show-scheme",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(
        r.stderr
            .starts_with("scheme w4a8-first-last-8bit\n  weights:     int4 [-7, 7]"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("override first = conv2d: weights int8 [-127, 127]")
    );
    for line in [
        "%stem.w.folded.fq = fake_quant(%stem.w.folded, %stem.w.folded.scale, %stem.w.folded.zp) {qmin = -127, qmax = 127, axis = 0}",
        "%dw.w.folded.fq = fake_quant(%dw.w.folded, %dw.w.folded.scale, %dw.w.folded.zp) {qmin = -7, qmax = 7, axis = 0}",
        "%fc.w.fq = fake_quant(%fc.w, %fc.w.scale, %fc.w.zp) {qmin = -127, qmax = 127, axis = 0}",
    ] {
        assert!(r.stdout.contains(line), "missing `{line}` in\n{}", r.stdout);
    }
}

#[test]
fn prepare_errors_exit_1() {
    let r = qatc(&[
        "prepare",
        "testdata/models/digits_mlp.qir",
        "--scheme",
        "tflite",
    ]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        "error: --scheme: unknown scheme preset 'tflite' (valid presets: tflite-int8, onnx-qdq, tensorrt, w4a8, pot, lsq); did you mean 'tflite-int8'? (or give the path of a .toml scheme file)\n"
    );
    let r = qatc(&[
        "prepare",
        "testdata/models/digits_mlp.qir",
        "--scheme",
        "testdata/schemes/err/bad_bits.toml",
    ]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        "error: --scheme: testdata/schemes/err/bad_bits.toml:3:8: weights.bits must be in 2..=8, found 12\n"
    );
    let r = qatc(&["prepare", "no/such/model.qir"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.starts_with("error: cannot read no/such/model.qir"),
        "{}",
        r.stderr
    );
}

#[test]
fn prepare_shows_the_ir_when_a_pass_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.toml"),
        "[[override]]\nnode = \"fc9\"\nskip = true\n",
    )
    .unwrap();
    let model = repo_root().join("testdata/models/digits_mlp.qir");
    let r = qatc_in(
        dir.path(),
        &[
            "prepare",
            &model.display().to_string(),
            "--scheme",
            "s.toml",
        ],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        "error: pass 'insert-fake-quant' failed: scheme 's', override 1: no quantized layer or input is named 'fc9' (a layer is named by its op, a batch-norm or relu fused into it, or its weight)\n"
    );
    // A broken model gives its diagnostics.
    let r = qatc_in(
        dir.path(),
        &["prepare", "-"],
        Some("graph @m {\n  %y = relu(%x) : f32[2]\n}\n"),
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("<stdin>:2:"), "{}", r.stderr);
}
