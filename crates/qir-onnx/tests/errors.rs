//! What the importer refuses, and how it says so: an unsupported node names itself, its op
//! type and the opset; a truncated or corrupt file, a bad external data location and every
//! form the importer cannot translate exactly are errors, never panics or approximations.

mod common;

use common::builder::{A, Builder, digits_cnn, digits_mlp};
use prost::Message;
use qir_onnx::proto::{OperatorSetIdProto, tensor_proto::DataLocation};
use qir_onnx::{ImportError, ImportOptions, LossSpec, import, import_file};

fn err(b: &Builder) -> String {
    match import(&b.bytes(), &ImportOptions::default()) {
        Ok(i) => panic!("imported:\n{}", qir::print::print(&i.graph)),
        Err(e) => e.to_string(),
    }
}

/// y = op(x) on f32[N, 4], with the given attributes.
fn unary(op: &str, attrs: Vec<(&str, A)>) -> Builder {
    let mut b = Builder::new(17);
    b.input("x", &[None, Some(4)])
        .node("the_node", op, &["x"], &["y"], attrs)
        .output("y");
    b
}

#[test]
fn an_unsupported_op_names_the_node_its_op_type_and_the_opset() {
    let mut b = digits_mlp();
    b.node("/head/Gather", "Gather", &["logits", "idx"], &["g"], vec![])
        .init_i64("idx", &[0]);
    let e = err(&b);
    assert!(
        e.starts_with("node '/head/Gather' (Gather, opset 17): op 'Gather' is not supported (the importer covers Add, AveragePool,"),
        "{e}"
    );
    // A node without a name is named by its position and first output.
    b.graph.node[3].name = None;
    let e = err(&b);
    assert!(
        e.starts_with("node #3 (output 'g') (Gather, opset 17): "),
        "{e}"
    );
    // The opset is the model's.
    b.opset = 21;
    assert!(err(&b).contains("(Gather, opset 21)"));
}

#[test]
fn ops_of_other_domains_are_refused_with_their_domain_and_version() {
    let mut b = unary("FusedConv", vec![]);
    b.graph.node[0].domain = Some("com.microsoft".into());
    let mut m = b.model();
    m.opset_import.push(OperatorSetIdProto {
        domain: Some("com.microsoft".into()),
        version: Some(1),
    });
    let e = import(&m.encode_to_vec(), &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "node 'the_node' (com.microsoft.FusedConv, opset 1): ops of domain 'com.microsoft' are not supported (only the default ONNX domain is)"
    );
}

#[test]
fn opsets_outside_13_to_28_are_refused() {
    for v in [1, 12, 29] {
        let mut b = unary("Relu", vec![]);
        b.opset = v;
        assert_eq!(
            err(&b),
            format!("opset {v} is not supported (the importer covers opsets 13 to 28)")
        );
    }
    let mut m = unary("Relu", vec![]).model();
    m.opset_import.clear();
    let e = import(&m.encode_to_vec(), &ImportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("imports no opset"), "{e}");
}

#[test]
fn every_truncation_of_a_model_is_an_error() {
    for (name, b) in [("mlp", digits_mlp()), ("cnn", digits_cnn())] {
        let bytes = b.bytes();
        for n in 0..bytes.len() {
            match import(&bytes[..n], &ImportOptions::default()) {
                Err(ImportError::Decode(_) | ImportError::Model(_)) => {}
                Err(e) => panic!("{name}, {n} of {} bytes: unexpected error {e}", bytes.len()),
                Ok(_) => panic!("{name}: {n} of {} bytes imported", bytes.len()),
            }
        }
        assert!(import(&bytes, &ImportOptions::default()).is_ok());
    }
    let e = import(b"not an onnx file at all", &ImportOptions::default()).unwrap_err();
    assert!(e.to_string().starts_with("not a valid ONNX model: "), "{e}");
}

#[test]
fn external_data_is_read_inside_the_model_folder_only() {
    let dir = tempfile::tempdir().unwrap();
    let plain = digits_mlp();
    // fc1.weight goes to an external file, at an offset, as onnx.save_model does.
    let mut b = plain.clone();
    let t = &mut b.graph.initializer[0];
    let raw = t.raw_data.take().unwrap();
    let mut file = vec![7u8; 16];
    file.extend(&raw);
    std::fs::write(dir.path().join("weights.bin"), &file).unwrap();
    t.data_location = Some(DataLocation::External as i32);
    let kv = |k: &str, v: &str| qir_onnx::proto::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    t.external_data = vec![
        kv("location", "weights.bin"),
        kv("offset", "16"),
        kv("length", &raw.len().to_string()),
    ];
    let model = dir.path().join("model.onnx");
    std::fs::write(&model, b.bytes()).unwrap();
    let ext = import_file(&model, &ImportOptions::default()).unwrap();
    let inline = import(&plain.bytes(), &ImportOptions::default()).unwrap();
    assert_eq!(ext.weights, inline.weights);

    // From bytes, there is no folder to read from.
    let e = import(&b.bytes(), &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("was not read from a file"), "{e}");

    let with_location = |loc: &str| {
        let mut bad = b.clone();
        bad.graph.initializer[0].external_data[0] = kv("location", loc);
        std::fs::write(&model, bad.bytes()).unwrap();
        import_file(&model, &ImportOptions::default())
            .unwrap_err()
            .to_string()
    };
    std::fs::write(dir.path().join("../escaped.bin"), &file).ok();
    for loc in ["../escaped.bin", "/etc/hostname", "sub/../../escaped.bin"] {
        let e = with_location(loc);
        assert!(
            e.starts_with("initializer 'fc1.weight': external data location")
                && e.contains("is not a relative path inside the model's folder"),
            "{loc}: {e}"
        );
    }
    let e = with_location("missing.bin");
    assert!(e.contains("cannot open external data file"), "{e}");
    #[cfg(unix)]
    {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("w.bin"), &file).unwrap();
        std::os::unix::fs::symlink(outside.path().join("w.bin"), dir.path().join("link.bin"))
            .unwrap();
        let e = with_location("link.bin");
        assert!(e.contains("leads out of the model's folder"), "{e}");
    }
    // A file too short for the offset and length.
    std::fs::write(dir.path().join("weights.bin"), &file[..100]).unwrap();
    std::fs::write(&model, b.bytes()).unwrap();
    let e = import_file(&model, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds 100 bytes, too few"), "{e}");
}

#[test]
fn forms_that_cannot_be_translated_exactly_are_errors() {
    let cases: Vec<(Builder, &str)> = vec![
        (
            unary("Relu", vec![("alpha", A::F(0.1))]),
            "node 'the_node' (Relu, opset 17): unexpected attribute 'alpha' (the importer knows of none for this op)",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(4)])
                    .input("s", &[Some(2)])
                    .node("r", "Reshape", &["x", "s"], &["y"], vec![])
                    .output("y");
                b
            },
            "input 'shape' ('s') must be a constant (an initializer or a Constant)",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(4), Some(3)])
                    .init_i64("s", &[-1])
                    .node("r", "Reshape", &["x", "s"], &["y"], vec![])
                    .output("y");
                b
            },
            "merges the symbolic batch dimension with others",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(1), Some(8), Some(8)])
                    .node(
                        "p",
                        "MaxPool",
                        &["x"],
                        &["y"],
                        vec![
                            ("kernel_shape", A::Is(vec![3, 3])),
                            ("strides", A::Is(vec![2, 2])),
                            ("ceil_mode", A::I(1)),
                        ],
                    )
                    .output("y");
                b
            },
            "ceil_mode = 1 gives 4 windows along axis 2 where qir's pools (which round down) give 3",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(1), Some(8), Some(8)])
                    .node(
                        "p",
                        "MaxPool",
                        &["x"],
                        &["y", "idx"],
                        vec![("kernel_shape", A::Is(vec![2, 2]))],
                    )
                    .output("y")
                    .output("idx");
                b
            },
            "output 1 ('idx') is used, but the importer only translates the first output of MaxPool",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(1), Some(8), Some(8)])
                    .node(
                        "p",
                        "AveragePool",
                        &["x"],
                        &["y"],
                        vec![
                            ("kernel_shape", A::Is(vec![2, 2])),
                            ("dilations", A::Is(vec![1, 1])),
                        ],
                    )
                    .output("y");
                b
            },
            "unexpected attribute 'dilations'",
        ),
        (
            {
                let mut b = Builder::new(19);
                b.input("x", &[None, Some(1), Some(8), Some(8)])
                    .node(
                        "p",
                        "AveragePool",
                        &["x"],
                        &["y"],
                        vec![
                            ("kernel_shape", A::Is(vec![2, 2])),
                            ("dilations", A::Is(vec![2, 2])),
                        ],
                    )
                    .output("y");
                b
            },
            "dilations [2, 2] are not supported",
        ),
        (
            {
                let mut b = digits_cnn();
                b.graph.node[1]
                    .attribute
                    .push(qir_onnx::proto::AttributeProto {
                        name: Some("training_mode".into()),
                        i: Some(1),
                        r#type: Some(2),
                        ..Default::default()
                    });
                b
            },
            "node 'bn' (BatchNormalization, opset 17): training_mode = 1 is not supported",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(4)]).graph.initializer.push(
                    qir_onnx::proto::TensorProto {
                        name: Some("t".into()),
                        data_type: Some(9),
                        int32_data: vec![1],
                        ..Default::default()
                    },
                );
                b.init_f32("r", &[], &[0.5])
                    .node("d", "Dropout", &["x", "r", "t"], &["y"], vec![])
                    .output("y");
                b
            },
            "training_mode is true",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(4)])
                    .input("lo", &[])
                    .node("c", "Clip", &["x", "lo"], &["y"], vec![])
                    .output("y");
                b
            },
            "input 'min' ('lo') must be a constant",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(2), Some(3), Some(4)])
                    .init_f32("w", &[4, 5], &[0.0; 20])
                    .node("m", "MatMul", &["x", "w"], &["y"], vec![])
                    .output("y");
                b
            },
            "MatMul of f32[B, 2, 3, 4] and f32[4, 5] is not supported",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, None])
                    .node("r", "Relu", &["x"], &["y"], vec![])
                    .output("y");
                b
            },
            "input 'x' has the symbolic dimension 'N' at axis 1; only the first (batch) dimension may be symbolic",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(4)])
                    .node("a", "Relu", &["z"], &["y"], vec![])
                    .node("b", "Relu", &["x"], &["z"], vec![])
                    .output("y");
                b
            },
            "node 'a' (Relu, opset 17): input 'z' is not defined before the node",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(4)])
                    .node("a", "Relu", &["x"], &["y"], vec![])
                    .node("b", "Relu", &["x"], &["y"], vec![])
                    .output("y");
                b
            },
            "node 'b' (Relu, opset 17): value 'y' is defined twice",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(4)])
                    .node("a", "Relu", &["x"], &["y"], vec![])
                    .output("nope");
                b
            },
            "output 'nope' is not computed by any node",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(4)])
                    .init_f32("w", &[2], &[1.0, 2.0])
                    .node("a", "Add", &["x", "w"], &["y"], vec![])
                    .output("y");
                b
            },
            "node 'a' (Add, opset 17): add: shapes [B, 4] and [2] do not broadcast (4 vs 2)",
        ),
        (
            {
                let mut b = unary("Relu", vec![]);
                b.graph.initializer.push(qir_onnx::proto::TensorProto {
                    name: Some("h".into()),
                    dims: vec![2],
                    data_type: Some(10),
                    raw_data: Some(vec![0; 4]),
                    ..Default::default()
                });
                b
            },
            "initializer 'h': element type FLOAT16 is not supported",
        ),
        (
            {
                let mut b = Builder::new(17);
                b.input("x", &[None, Some(1), Some(8), Some(8)])
                    .init_f32("w", &[2, 1, 3, 3], &[0.0; 18])
                    .node(
                        "c",
                        "Conv",
                        &["x", "w"],
                        &["y"],
                        vec![
                            ("auto_pad", A::S("SAME_UPPER")),
                            ("pads", A::Is(vec![1, 1, 1, 1])),
                        ],
                    )
                    .output("y");
                b
            },
            "attributes 'pads' and 'auto_pad' = SAME_UPPER cannot be used together",
        ),
    ];
    for (b, want) in cases {
        let e = err(&b);
        assert!(e.contains(want), "expected '{want}' in:\n{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn loss_errors_name_the_problem() {
    let opts = |label: &str, logits: Option<&str>| ImportOptions {
        loss: Some(LossSpec {
            label: label.into(),
            logits: logits.map(str::to_string),
            ..LossSpec::cross_entropy()
        }),
        ..ImportOptions::default()
    };
    let bytes = digits_mlp().bytes();
    let e = import(&bytes, &opts("input", None))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "--loss: the model already has a value named 'input'; choose another label name"
    );
    let e = import(&bytes, &opts("label", Some("probs")))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "--loss: the model has no output 'probs' (its outputs: 'logits')"
    );
    let mut two = digits_mlp();
    two.output("/relu/Relu_output_0");
    // several outputs: the one named logits
    let ok = import(&two.bytes(), &opts("y", None)).unwrap();
    let loss = ok.graph.loss().unwrap();
    assert_eq!(
        ok.graph.operands(loss)[0],
        ok.graph.output("logits").unwrap()
    );
    let ok = import(&two.bytes(), &opts("y", Some("/relu/Relu_output_0"))).unwrap();
    let loss = ok.graph.loss().unwrap();
    assert_eq!(
        ok.graph.operands(loss)[0],
        ok.graph.find("_relu_Relu_output_0").unwrap()
    );
    two.graph.node[2].output[0] = "z".into();
    two.graph.output[0].name = Some("z".into());
    let e = import(&two.bytes(), &opts("label", None))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "--loss: the model has several outputs ('z', '/relu/Relu_output_0') and none is named 'logits'; name the logits output"
    );
    let e = import(&digits_cnn().bytes(), &opts("label", Some("logits")));
    assert!(e.is_ok());
    let mut b = Builder::new(17);
    b.input("x", &[None, Some(2), Some(5)])
        .node("r", "Relu", &["x"], &["y"], vec![])
        .output("y");
    let e = import(&b.bytes(), &opts("label", None))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "--loss: cross-entropy needs float logits [batch, classes], output 'y' is f32[B, 2, 5]"
    );
}
