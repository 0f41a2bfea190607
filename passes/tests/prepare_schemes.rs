//! Scheme files and overrides: the example files of `passes/schemes/` load, the error
//! files of `testdata/schemes/err/` give their exact message, and overrides ("first conv
//! and last linear 8-bit, rest 4-bit", skip a named layer, skip depthwise convs) are
//! honoured in the prepared graph, checked with the placement checker.

mod prepare_common;

use std::collections::HashMap;

use passes::scheme::{BnFolding, Scheme, freeze_bn_after};
use passes::{PassManager, RunError};
use prepare_common::{check_placement, default_weights, model, prepare, repo_root};
use qir::Op;

fn path(rel: &str) -> String {
    repo_root().join(rel).display().to_string()
}

#[test]
fn example_files_load() {
    let dir = repo_root().join("passes/schemes");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let s = Scheme::load(&p.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
            s.validate().unwrap();
            n += 1;
        }
    }
    assert_eq!(n, 6, "the examples of passes/schemes/README.md");
    let s = Scheme::load(&path("passes/schemes/unfolded-bn-frozen.toml")).unwrap();
    assert_eq!(s.name, "tflite-int8-unfolded-bn");
    assert_eq!(s.batch_norm, BnFolding::Unfolded);
    assert_eq!(s.freeze_bn_after, Some(2000));
    let s = Scheme::load(&path("passes/schemes/uint8-minmax.toml")).unwrap();
    assert_eq!(s.name, "uint8-minmax");
    assert_eq!(
        s.describe(),
        "scheme uint8-minmax\n  weights:     int8 [-127, 127] symmetric per-channel, last-value observer\n  activations: uint8 [0, 255] affine per-tensor, min-max observer\n  batch-norm:  simulated"
    );
}

#[test]
fn error_files_say_what_and_where() {
    let cases = [
        (
            "unknown_preset",
            "1:10: unknown scheme preset 'tflite' (valid presets: tflite-int8, onnx-qdq, tensorrt, w4a8, pot, lsq); did you mean 'tflite-int8'?",
        ),
        ("bad_bits", "3:8: weights.bits must be in 2..=8, found 12"),
        (
            "unknown_key",
            "3:1: unknown field `observerr`, expected one of `bits`, `signed`, `narrow-range`, `symmetric`, `per-channel`, `power-of-two`, `observer`, `averaging`, `learned`",
        ),
        (
            "unknown_kind",
            "2:6: op: unknown layer kind 'depthwise' (an op mnemonic such as conv2d or linear, or one of depthwise_conv2d, layer, input)",
        ),
        (
            "bad_averaging",
            "2:13: activations.averaging must be in (0, 1], found 1.5",
        ),
        (
            "no_selector",
            "1:1: override 1 needs exactly one selector of node, op, first and last, found 0",
        ),
        (
            "lsq_affine",
            "2:1: weights: learned = \"lsq\" needs symmetric = true (an affine range needs a learned zero point: use \"lsq+\")",
        ),
        (
            "wrong_type",
            "1:10: invalid type: integer `8`, expected a string",
        ),
    ];
    let dir = repo_root().join("testdata/schemes/err");
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        cases.len(),
        "every file of testdata/schemes/err is tested"
    );
    for (name, want) in cases {
        let p = dir.join(format!("{name}.toml")).display().to_string();
        let e = Scheme::load(&p).unwrap_err().to_string();
        assert_eq!(e, format!("{p}:{want}"), "{name}");
    }
    let e = Scheme::load("no/such/scheme.toml").unwrap_err().to_string();
    assert!(
        e.starts_with("no/such/scheme.toml: cannot read the scheme file: "),
        "{e}"
    );
}

#[test]
fn a_bad_scheme_option_is_a_pipeline_error() {
    let e = PassManager::parse("insert-fake-quant{scheme=tflite}")
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        e,
        "option 'scheme' of pass 'insert-fake-quant': unknown scheme preset 'tflite' (valid presets: tflite-int8, onnx-qdq, tensorrt, w4a8, pot, lsq); did you mean 'tflite-int8'? (or give the path of a .toml scheme file)"
    );
    let file = path("testdata/schemes/err/bad_bits.toml");
    let e = PassManager::parse(&format!("fold-batchnorm-qat{{scheme=\"{file}\"}}"))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        e,
        format!(
            "option 'scheme' of pass 'fold-batchnorm-qat': {file}:3:8: weights.bits must be in 2..=8, found 12"
        )
    );
}

/// The bits of every weight fake-quant, by the weight param it quantizes.
fn weight_bits(g: &qir::Graph) -> HashMap<String, i64> {
    let names = qir::print::value_names(g);
    let mut m = HashMap::new();
    for id in g.node_ids() {
        if g.node(id).op() != Some(Op::FakeQuant) {
            continue;
        }
        let x = g.operands(id)[0];
        let param = match g.node(x).op() {
            Some(Op::Mul) => g.operands(x)[0],
            _ => x,
        };
        if g.node(param).is_param() {
            let qmax = g.node(id).inst().unwrap().int("qmax").unwrap();
            let bits = (qmax + 1).trailing_zeros() as i64 + 1;
            m.insert(names[&param].clone(), bits);
        }
    }
    m
}

#[test]
fn first_conv_and_last_linear_keep_8_bits() {
    let file = path("passes/schemes/w4a8-first-last-8bit.toml");
    let scheme = Scheme::load(&file).unwrap();
    let float = model("depthwise");
    let g = prepare(&float, &file);
    let bits = weight_bits(&g);
    let want: HashMap<String, i64> = [("stem.w", 8), ("dw.w", 4), ("pw.w", 4), ("fc.w", 8)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(bits, want);
    let mut expect = default_weights(&float, &scheme);
    let mut eight = scheme.weights;
    eight.bits = 8;
    expect.insert("stem.w".into(), Some(eight));
    expect.insert("fc.w".into(), Some(eight));
    let bad = check_placement(&float, &g, &scheme.activations, &expect);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // On an MLP there is no conv: only the last linear keeps 8 bits.
    let g = prepare(&model("mnist_mlp"), &file);
    let bits = weight_bits(&g);
    assert_eq!((bits["fc1.w"], bits["fc2.w"], bits["fc3.w"]), (4, 4, 8));
}

#[test]
fn a_named_layer_can_stay_in_float() {
    let file = path("passes/schemes/skip-fc2.toml");
    let scheme = Scheme::load(&file).unwrap();
    let float = model("mnist_mlp");
    let g = prepare(&float, &file);
    let mut expect = default_weights(&float, &scheme);
    expect.insert("fc2.w".into(), None);
    let bad = check_placement(&float, &g, &scheme.activations, &expect);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let text = qir::print::print(&g);
    // fc2 computes in float; fc3 still reads a quantized input (relu2's own fake-quant).
    for line in [
        "%relu2 = linear(%relu1.fq, %fc2.w, %fc2.b) {act = relu} : f32[B, 128]",
        "%logits = linear(%relu2.fq, %fc3.w.fq, %fc3.b) : f32[B, 10]",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    // The layer can be named by its weight, or by the relu fused into it, too.
    for name in ["fc2.w", "relu2"] {
        let mut s = scheme.clone();
        s.overrides[0].selector = passes::scheme::Selector::Nodes(vec![name.into()]);
        let mut g2 = float.clone();
        passes::insert_fake_quant::insert_fake_quant(&mut g2, &s).unwrap();
        assert!(!qir::print::print(&g2).contains("%fc2.w.fq"), "{name}");
    }
}

#[test]
fn depthwise_convolutions_can_stay_in_float() {
    let file = path("passes/schemes/skip-depthwise.toml");
    let scheme = Scheme::load(&file).unwrap();
    let float = model("depthwise");
    let g = prepare(&float, &file);
    let mut expect = default_weights(&float, &scheme);
    expect.insert("dw.w".into(), None);
    let bad = check_placement(&float, &g, &scheme.activations, &expect);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let bits = weight_bits(&g);
    assert!(!bits.contains_key("dw.w") && bits.contains_key("pw.w") && bits.contains_key("stem.w"));
}

#[test]
fn an_override_naming_no_layer_is_an_error() {
    let mut scheme = Scheme::preset("tflite-int8").unwrap();
    scheme.overrides.push(passes::scheme::Override {
        selector: passes::scheme::Selector::Nodes(vec!["fc9".into()]),
        skip: true,
        weights: Default::default(),
        activations: Default::default(),
    });
    let mut pm = PassManager::new();
    pm.add(Box::new(passes::InsertFakeQuant::new(scheme)));
    let mut g = model("mnist_mlp");
    match pm.run(&mut g) {
        Err(RunError::PassFailed { error, .. }) => assert_eq!(
            error.to_string(),
            "scheme 'tflite-int8', override 1: no quantized layer or input is named 'fc9' (a layer is named by its op, a batch-norm or relu fused into it, or its weight)"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn activation_overrides_change_one_output() {
    let src = "preset = \"tflite-int8\"\n[[override]]\nnode = \"relu1\"\nactivations = { signed = false, observer = \"minmax\" }\n[[override]]\nop = \"input\"\nactivations = { bits = 6 }\n";
    let scheme = Scheme::from_toml(src, "inline.toml").unwrap();
    let mut g = model("digits_mlp");
    passes::insert_fake_quant::insert_fake_quant(&mut g, &scheme).unwrap();
    let text = qir::print::print(&g);
    for line in [
        "%relu1.min.new = observe_min(%relu1, %relu1.min) : f32[]",
        "%relu1.fq = fake_quant(%relu1, %relu1.scale, %relu1.zp) {qmin = 0, qmax = 255} : f32[B, 32]",
        "%x.fq = fake_quant(%x, %x.scale, %x.zp) {qmin = -32, qmax = 31} : f32[B, 64]",
        "%logits.fq = fake_quant(%logits, %logits.scale, %logits.zp) {qmin = -128, qmax = 127} : f32[B, 10]",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
}

#[test]
fn unfolded_batch_norm_and_the_freeze_note() {
    let file = path("passes/schemes/unfolded-bn-frozen.toml");
    let float = model("mnist_cnn");
    let g = prepare(&float, &file);
    assert_eq!(freeze_bn_after(&g), Some(2000));
    let text = qir::print::print(&g);
    assert!(
        text.starts_with("// qat: freeze-bn-after = 2000\n")
            || text.contains("\n// qat: freeze-bn-after = 2000\n"),
        "{text}"
    );
    // conv -> batch_norm with nothing between, the weight quantized unfolded
    for line in [
        "%conv1 = conv2d(%x.fq, %conv1.w.fq) {padding = [1, 1, 1, 1]} : f32[B, 8, 28, 28]",
        "%bn1 = batch_norm(%conv1, %bn1.gamma, %bn1.beta, %bn1.mean, %bn1.var) : f32[B, 8, 28, 28]",
        "%relu1.fq = fake_quant(%relu1, %relu1.scale, %relu1.zp) {qmin = -128, qmax = 127} : f32[B, 8, 28, 28]",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    let scheme = Scheme::load(&file).unwrap();
    let bad = check_placement(
        &float,
        &g,
        &scheme.activations,
        &default_weights(&float, &scheme),
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // An MLP has no batch-norm: no note.
    assert_eq!(freeze_bn_after(&prepare(&model("mnist_mlp"), &file)), None);
}
