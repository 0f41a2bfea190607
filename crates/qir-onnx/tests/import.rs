//! What an import produces, without Python: the printed graphs of the digits MLP and CNN
//! (as PyTorch exports them), names, parameter kinds, the loss, and the library's notes.

mod common;

use common::builder::{A, Builder, digits_cnn, digits_mlp};
use qir_onnx::{ImportOptions, LossSpec, import};

fn with_loss() -> ImportOptions {
    ImportOptions {
        loss: Some(LossSpec::cross_entropy()),
        ..ImportOptions::default()
    }
}

#[test]
fn digits_mlp_imports_as_linear_layers_with_external_params() {
    let imported = import(&digits_mlp().bytes(), &with_loss()).unwrap();
    let text = common::assert_canonical(&imported.graph, "mlp");
    assert_eq!(
        text,
        "\
// imported from ONNX (opset 17, producer qir-onnx tests)
graph @test_graph {
  input %input: f32[B, 64]
  input %label: i32[B]
  param %fc1.weight: f32[32, 64] = external
  param %fc1.bias: f32[32] = external
  param %fc2.weight: f32[10, 32] = external
  param %fc2.bias: f32[10] = external

  %_fc1_Gemm_output_0 = linear(%input, %fc1.weight, %fc1.bias) : f32[B, 32]
  %_relu_Relu_output_0 = relu(%_fc1_Gemm_output_0) : f32[B, 32]
  %logits = linear(%_relu_Relu_output_0, %fc2.weight, %fc2.bias) : f32[B, 10]
  %loss = softmax_cross_entropy(%logits, %label) : f32[]

  output logits = %logits
  loss %loss
}
"
    );
    let names: Vec<&str> = imported.weights.keys().map(String::as_str).collect();
    assert_eq!(names, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
    assert_eq!(imported.weights["fc1.weight"].shape, [32, 64]);
    assert!(imported.notes.is_empty());
}

#[test]
fn digits_cnn_keeps_batch_norm_statistics_as_state() {
    let opts = ImportOptions {
        name: Some("digits cnn".into()),
        ..ImportOptions::default()
    };
    let imported = import(&digits_cnn().bytes(), &opts).unwrap();
    let text = common::assert_canonical(&imported.graph, "cnn");
    assert!(text.contains("graph @digits_cnn {"), "{text}");
    assert!(
        text.contains("  state %bn.running_mean: f32[4] = external\n"),
        "{text}"
    );
    assert!(
        text.contains("  state %bn.running_var: f32[4] = external\n"),
        "{text}"
    );
    assert!(
        text.contains("  param %bn.weight: f32[4] = external\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  %c = conv2d(%x, %conv.weight, %conv.bias) {padding = [1, 1, 1, 1]} : f32[B, 4, 8, 8]\n"
        ),
        "{text}"
    );
    // epsilon 1e-5 (an f32 attribute) is the default and not written
    assert!(
        text.contains(
            "  %n = batch_norm(%c, %bn.weight, %bn.bias, %bn.running_mean, %bn.running_var) : f32[B, 4, 8, 8]\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("  %p = max_pool2d(%r) {kernel = [2, 2]} : f32[B, 4, 4, 4]\n"),
        "{text}"
    );
    assert!(text.contains("  %f = flatten(%p) : f32[B, 64]\n"), "{text}");
    assert_eq!(imported.weights.len(), 8);
}

#[test]
fn small_constants_are_inline_and_large_ones_external() {
    let mut b = Builder::new(17);
    b.input("x", &[None, Some(20)])
        .node("c", "Constant", &[], &["k"], vec![])
        .node("add", "Add", &["x", "k"], &["y"], vec![])
        .output("y");
    let values: Vec<f32> = (0..20).map(|i| i as f32 * 0.5).collect();
    let t = common::builder::f32_tensor("", &[20], &values);
    b.graph.node[0]
        .attribute
        .push(qir_onnx::proto::AttributeProto {
            name: Some("value".into()),
            r#type: Some(qir_onnx::proto::attribute_proto::AttributeType::Tensor as i32),
            t: Some(t),
            ..Default::default()
        });
    let big = import(&b.bytes(), &ImportOptions::default()).unwrap();
    let text = qir::print::print(&big.graph);
    assert!(text.contains("  const %k: f32[20] = external\n"), "{text}");
    assert_eq!(big.weights["k"].as_f32().unwrap(), values.as_slice());
    let opts = ImportOptions {
        inline_limit: 20,
        ..ImportOptions::default()
    };
    let small = import(&b.bytes(), &opts).unwrap();
    let text = common::assert_canonical(&small.graph, "inline");
    assert!(
        text.contains("  const %k: f32[20] = [0.0, 0.5, 1.0,"),
        "{text}"
    );
    assert!(small.weights.is_empty());
}

#[test]
fn constants_read_as_attributes_leave_no_declaration() {
    let mut b = Builder::new(17);
    b.input("x", &[None, Some(2), Some(3)])
        .init_i64("shape", &[0, -1])
        .init_f32("lo", &[], &[-1.0])
        .init_f32("hi", &[], &[2.0])
        .node("r", "Reshape", &["x", "shape"], &["r"], vec![])
        .node("clip", "Clip", &["r", "lo", "hi"], &["y"], vec![])
        .output("y");
    let imported = import(&b.bytes(), &ImportOptions::default()).unwrap();
    let g = &imported.graph;
    assert!(g.params().is_empty(), "{}", qir::print::print(g));
    assert!(g.find("shape").is_none() && g.find("lo").is_none());
    // the bounds live in the clip's own constants, under the output's name
    assert!(g.find("y.min").is_some() && g.find("y.neg_max").is_some());
    common::assert_canonical(g, "clip");
}

#[test]
fn onnx_names_are_sanitized_uniquely() {
    let mut b = Builder::new(17);
    b.input("0", &[None, Some(4)])
        .node("a", "Relu", &["0"], &["a/b"], vec![])
        .node("b", "Relu", &["a/b"], &["a_b"], vec![])
        .node("c", "Sigmoid", &["a_b"], &["1"], vec![])
        .output("1");
    let imported = import(&b.bytes(), &ImportOptions::default()).unwrap();
    let text = common::assert_canonical(&imported.graph, "names");
    assert!(text.contains("input %v0: f32[B, 4]"), "{text}");
    assert!(text.contains("%a_b.1 = relu(%v0)"), "{text}");
    assert!(text.contains("%a_b = relu(%a_b.1)"), "{text}");
    assert!(text.contains("%v1 = sigmoid(%a_b)"), "{text}");
    assert!(text.contains("output v1 = %v1"), "{text}");
}

#[test]
fn a_softmax_output_gets_the_loss_on_its_logits() {
    let mut b = digits_mlp();
    b.graph.node[2].output[0] = "z".into();
    b.node("sm", "Softmax", &["z"], &["probs"], vec![("axis", A::I(1))]);
    b.graph.output[0].name = Some("probs".into());
    let imported = import(&b.bytes(), &with_loss()).unwrap();
    assert_eq!(imported.notes.len(), 1, "{:?}", imported.notes);
    assert!(imported.notes[0].contains("%z"), "{:?}", imported.notes);
    let text = qir::print::print(&imported.graph);
    assert!(
        text.contains("%loss = softmax_cross_entropy(%z, %label)"),
        "{text}"
    );
    assert!(text.contains("output probs = %probs"), "{text}");
}

#[test]
fn initializers_listed_as_inputs_are_weights() {
    // IR version 3 models (and PyTorch with keep_initializers_as_inputs) list every
    // initializer among the inputs.
    let mut b = digits_mlp();
    let inits: Vec<_> = b
        .graph
        .initializer
        .iter()
        .map(|t| {
            common::builder::value_info(
                t.name.as_deref().unwrap(),
                qir_onnx::proto::tensor_proto::DataType::Float,
                &t.dims.iter().map(|&d| Some(d)).collect::<Vec<_>>(),
            )
        })
        .collect();
    b.graph.input.extend(inits);
    let imported = import(&b.bytes(), &ImportOptions::default()).unwrap();
    assert_eq!(imported.graph.inputs().len(), 1);
    assert_eq!(imported.graph.params().len(), 4);
}
