//! `qatc import`: an ONNX model becomes a .qir graph and its safetensors weights that the
//! other commands take as they take a hand-written model (check, fmt, train --init, eval);
//! a model the importer refuses is one `error:` line, exit code 1.

mod common;

use std::path::Path;

use common::{qatc_in, testdata};
use prost::Message;
use qir_onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType,
    tensor_shape_proto::Dimension, tensor_shape_proto::dimension, type_proto,
};

fn tensor(name: &str, dims: &[i64], seed: u64) -> TensorProto {
    let n: i64 = dims.iter().product();
    let bound = 1.0 / (dims.last().copied().unwrap_or(1) as f32).sqrt();
    let mut s = seed;
    let data: Vec<u8> = (0..n)
        .flat_map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            ((2.0 * u - 1.0) * bound).to_le_bytes()
        })
        .collect();
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data),
        ..Default::default()
    }
}

fn gemm(name: &str, inputs: [&str; 3], output: &str) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some("Gemm".into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: vec![qir_onnx::proto::AttributeProto {
            name: Some("transB".into()),
            i: Some(1),
            r#type: Some(AttributeType::Int as i32),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The digits MLP (64 -> 32 -> 10) as PyTorch exports it, with `extra` nodes appended.
fn mlp(extra: Vec<NodeProto>) -> Vec<u8> {
    let dim = |v| Dimension {
        value: Some(v),
        ..Default::default()
    };
    let input = ValueInfoProto {
        name: Some("input".into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: vec![
                        dim(dimension::Value::DimParam("batch".into())),
                        dim(dimension::Value::DimValue(64)),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let relu = NodeProto {
        name: Some("/relu/Relu".into()),
        op_type: Some("Relu".into()),
        input: vec!["/fc1/Gemm_output_0".into()],
        output: vec!["/relu/Relu_output_0".into()],
        ..Default::default()
    };
    let mut node = vec![
        gemm(
            "/fc1/Gemm",
            ["input", "fc1.weight", "fc1.bias"],
            "/fc1/Gemm_output_0",
        ),
        relu,
        gemm(
            "/fc2/Gemm",
            ["/relu/Relu_output_0", "fc2.weight", "fc2.bias"],
            "logits",
        ),
    ];
    node.extend(extra);
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("pytorch".into()),
        producer_version: Some("2.5.0".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("main_graph".into()),
            input: vec![input],
            output: vec![ValueInfoProto {
                name: Some("logits".into()),
                ..Default::default()
            }],
            initializer: vec![
                tensor("fc1.weight", &[32, 64], 1),
                tensor("fc1.bias", &[32], 2),
                tensor("fc2.weight", &[10, 32], 3),
                tensor("fc2.bias", &[10], 4),
            ],
            node,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn import_then_check_fmt_train_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("mlp.onnx"), mlp(Vec::new())).unwrap();
    let r = qatc_in(
        d,
        &[
            "import",
            "mlp.onnx",
            "-o",
            "digits.qir",
            "--loss",
            "cross-entropy",
        ],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert_eq!(
        r.stdout,
        "wrote digits.qir (opset 17, 4 ops, 4 params, 0 state, with a loss) and digits.safetensors (4 tensors)\n"
    );
    let text = std::fs::read_to_string(d.join("digits.qir")).unwrap();
    assert!(text.starts_with(
        "// imported from ONNX (opset 17, producer pytorch 2.5.0)\ngraph @digits {\n"
    ));
    assert!(
        text.contains("  param %fc1.weight: f32[32, 64] = external\n"),
        "{text}"
    );
    for args in [["check", "digits.qir"], ["fmt", "--check"]] {
        let mut a = args.to_vec();
        if a[0] == "fmt" {
            a.push("digits.qir");
        }
        let r = qatc_in(d, &a, None);
        assert_eq!(r.code, Some(0), "{a:?}: {}", r.all());
    }
    let data = s(&testdata().join("digits"));
    let r = qatc_in(
        d,
        &[
            "train",
            "digits.qir",
            "--data",
            &data,
            "--init",
            "digits.safetensors",
            "--epochs",
            "3",
            "--no-progress",
            "-o",
            "trained.safetensors",
        ],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(r.stdout.contains("epoch 3/3"), "{}", r.stdout);
    let r = qatc_in(
        d,
        &[
            "eval",
            "digits.qir",
            "--data",
            &data,
            "--weights",
            "trained.safetensors",
        ],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.all());
    let acc: f64 = r
        .stdout
        .strip_prefix("test accuracy ")
        .and_then(|t| t.split('%').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(acc > 90.0, "{}", r.stdout);
}

#[test]
fn graph_to_standard_output_needs_a_weights_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("mlp.onnx"), mlp(Vec::new())).unwrap();
    let r = qatc_in(d, &["import", "mlp.onnx", "-o", "-"], None);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        "error: writing the graph to standard output needs --weights for its weights\n"
    );
    let r = qatc_in(
        d,
        &[
            "import",
            "mlp.onnx",
            "-o",
            "-",
            "--weights",
            "w.safetensors",
            "--name",
            "m",
        ],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(r.stdout.contains("graph @m {"), "{}", r.stdout);
    assert!(d.join("w.safetensors").exists());
}

#[test]
fn refused_models_are_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gather = NodeProto {
        name: Some("/head/Gather".into()),
        op_type: Some("Gather".into()),
        input: vec!["logits".into(), "logits".into()],
        output: vec!["g".into()],
        ..Default::default()
    };
    std::fs::write(d.join("gather.onnx"), mlp(vec![gather])).unwrap();
    let full = mlp(Vec::new());
    std::fs::write(d.join("cut.onnx"), &full[..full.len() / 2]).unwrap();
    for (args, want) in [
        (
            vec!["import", "gather.onnx", "-o", "g.qir"],
            "error: node '/head/Gather' (Gather, opset 17): op 'Gather' is not supported",
        ),
        (
            vec!["import", "cut.onnx", "-o", "c.qir"],
            "error: not a valid ONNX model: ",
        ),
        (
            vec!["import", "missing.onnx", "-o", "m.qir"],
            "error: missing.onnx: ",
        ),
        (
            vec!["import", "cut.onnx", "-o", "c.qir", "--loss", "mse"],
            "error: --loss: unknown loss 'mse' (valid: cross-entropy)",
        ),
    ] {
        let r = qatc_in(d, &args, None);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.all());
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.starts_with(want), "{args:?}: {}", r.stderr);
    }
    // nothing was written for a refused model
    assert!(!d.join("g.qir").exists() && !d.join("g.safetensors").exists());
}
