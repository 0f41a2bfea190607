//! The grad pass's output as text: the training step of the digits MLP in full, the names
//! and placement of optimizer state, batch-norm in training and frozen mode, which values
//! get gradients, and the errors a user can hit. No interpreter here: the numbers are
//! checked in `grad_ops.rs`, `grad_models.rs` and `grad_train.rs`.

use std::path::PathBuf;

use passes::grad::{BnMode, GradError, GradOptions, Optimizer, grad, train_mode};
use passes::{Changed, PassManager};
use qir::{Graph, Op};

fn model(name: &str) -> Graph {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/models")
        .join(format!("{name}.qir"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse(&text)
}

fn parse(text: &str) -> Graph {
    qir_reader::parse_and_verify(text)
        .unwrap_or_else(|d| panic!("{}", qir_reader::render(&d, "test.qir", text)))
}

fn with(optimizer: Optimizer) -> GradOptions {
    GradOptions {
        optimizer,
        ..GradOptions::default()
    }
}

fn step_text(g: &Graph, opts: &GradOptions) -> String {
    let step = grad(g, opts).unwrap_or_else(|e| panic!("{e}"));
    let text = qir::print::print(&step);
    // Whatever grad prints reads back to the same graph text.
    let back = parse(&text);
    assert_eq!(qir::print::print(&back), text);
    text
}

#[test]
fn digits_mlp_training_step() {
    let text = step_text(&model("digits_mlp"), &with(Optimizer::Sgd));
    let expected = "\
// Two-layer perceptron for the 8x8 UCI digits (64 -> 32 -> 10).
// The default model of `qatc train`: inputs are the 64 pixels scaled to [0, 1].
graph @digits_mlp {
  input %x: f32[B, 64]
  input %label: i32[B]
  input %lr: f32[]
  param %fc1.w: f32[32, 64] = kaiming_uniform
  param %fc1.b: f32[32] = zeros
  param %fc2.w: f32[10, 32] = lecun_uniform
  param %fc2.b: f32[10] = zeros
  const %loss.grad: f32[] = [1.0]

  %fc1 = linear(%x, %fc1.w, %fc1.b) : f32[B, 32]
  %relu1 = relu(%fc1) : f32[B, 32]
  %logits = linear(%relu1, %fc2.w, %fc2.b) : f32[B, 10]
  %loss = softmax_cross_entropy(%logits, %label) : f32[]
  %logits.grad = softmax_cross_entropy_grad(%loss.grad, %logits, %label) : f32[B, 10]
  %relu1.grad = matmul(%logits.grad, %fc2.w) : f32[B, 32]
  %fc2.w.grad = matmul(%logits.grad, %relu1) {transpose_a = true} : f32[10, 32]
  %fc2.b.grad = reduce_sum(%logits.grad) {axes = [0]} : f32[10]
  %fc1.grad = relu_grad(%relu1.grad, %relu1) : f32[B, 32]
  %fc1.w.grad = matmul(%fc1.grad, %x) {transpose_a = true} : f32[32, 64]
  %fc1.b.grad = reduce_sum(%fc1.grad) {axes = [0]} : f32[32]
  %fc1.w.new = sgd_update(%fc1.w, %fc1.w.grad, %lr) : f32[32, 64]
  %fc1.b.new = sgd_update(%fc1.b, %fc1.b.grad, %lr) : f32[32]
  %fc2.w.new = sgd_update(%fc2.w, %fc2.w.grad, %lr) : f32[10, 32]
  %fc2.b.new = sgd_update(%fc2.b, %fc2.b.grad, %lr) : f32[10]

  output logits = %logits
  loss %loss
  update %fc1.w = %fc1.w.new
  update %fc1.b = %fc1.b.new
  update %fc2.w = %fc2.w.new
  update %fc2.b = %fc2.b.new
}
";
    assert_eq!(text, expected);
}

#[test]
fn optimizer_state_and_weight_decay_placement() {
    let g = model("digits_mlp");
    let sgd = step_text(
        &g,
        &GradOptions {
            momentum: 0.9,
            weight_decay: 0.01,
            ..with(Optimizer::Sgd)
        },
    );
    for line in [
        "state %fc1.w.momentum: f32[32, 64] = zeros",
        "%fc1.w.momentum.new = sgd_momentum(%fc1.w.momentum, %fc1.w.grad, %fc1.w) {momentum = 0.9, weight_decay = 0.01} : f32[32, 64]",
        "%fc1.w.new = sgd_update(%fc1.w, %fc1.w.momentum.new, %lr) : f32[32, 64]",
        "update %fc1.w.momentum = %fc1.w.momentum.new",
    ] {
        assert!(sgd.contains(line), "missing `{line}` in\n{sgd}");
    }
    let plain = step_text(
        &g,
        &GradOptions {
            weight_decay: 0.01,
            ..with(Optimizer::Sgd)
        },
    );
    assert!(plain.contains("sgd_update(%fc2.b, %fc2.b.grad, %lr) {weight_decay = 0.01}"));
    assert!(!plain.contains("momentum"));

    let adam_opts = GradOptions {
        weight_decay: 0.01,
        beta1: 0.8,
        ..with(Optimizer::Adam)
    };
    let adam = step_text(&g, &adam_opts);
    for line in [
        "state %opt.step: f32[] = zeros",
        "const %opt.one: f32[] = [1.0]",
        "state %fc2.w.adam_m: f32[10, 32] = zeros",
        "state %fc2.w.adam_v: f32[10, 32] = zeros",
        "%opt.step.new = add(%opt.step, %opt.one) : f32[]",
        "%fc2.w.adam_m.new = adam_moment(%fc2.w.adam_m, %fc2.w.grad, %fc2.w) {beta = 0.8, weight_decay = 0.01} : f32[10, 32]",
        "%fc2.w.adam_v.new = adam_moment(%fc2.w.adam_v, %fc2.w.grad, %fc2.w) {beta = 0.999, order = 2, weight_decay = 0.01} : f32[10, 32]",
        "%fc2.w.new = adam_update(%fc2.w, %fc2.w.adam_m.new, %fc2.w.adam_v.new, %opt.step.new, %lr) {beta1 = 0.8} : f32[10, 32]",
        "update %opt.step = %opt.step.new",
    ] {
        assert!(adam.contains(line), "missing `{line}` in\n{adam}");
    }
    let adamw = step_text(
        &g,
        &GradOptions {
            optimizer: Optimizer::AdamW,
            ..adam_opts
        },
    );
    assert!(adamw.contains(
        "%fc2.w.new = adam_update(%fc2.w, %fc2.w.adam_m.new, %fc2.w.adam_v.new, %opt.step.new, %lr) {beta1 = 0.8, weight_decay = 0.01}"
    ));
    assert!(adamw.contains("adam_moment(%fc2.w.adam_m, %fc2.w.grad, %fc2.w) {beta = 0.8} :"));
    // One step counter however many params.
    assert_eq!(adamw.matches("state %opt.step").count(), 1);
}

#[test]
fn optimizer_none_outputs_the_gradients() {
    let text = step_text(&model("digits_mlp"), &with(Optimizer::None));
    assert!(text.contains("output fc1.w.grad = %fc1.w.grad"));
    assert!(text.contains("output fc2.b.grad = %fc2.b.grad"));
    assert!(!text.contains("update") && !text.contains("%lr"));
}

#[test]
fn batch_norm_train_and_frozen() {
    let g = model("mnist_cnn");
    let train = step_text(&g, &with(Optimizer::Sgd));
    for line in [
        "%bn1 = batch_norm_train(%conv1, %bn1.gamma, %bn1.beta) : f32[B, 8, 28, 28]",
        "%0 = reduce_mean(%conv1) {axes = [0, 2, 3]} : f32[8]",
        "%bn1.mean.new = ema(%bn1.mean, %0) : f32[8]",
        "%1 = variance(%conv1) {axes = [0, 2, 3]} : f32[8]",
        "%bn1.var.new = ema(%bn1.var, %1) : f32[8]",
        "update %bn1.mean = %bn1.mean.new",
        "update %bn2.var = %bn2.var.new",
        "%conv1.grad = batch_norm_train_grad_input(%bn1.grad, %conv1, %bn1.gamma) : f32[B, 8, 28, 28]",
        "%bn1.gamma.grad = batch_norm_train_grad_gamma(%bn1.grad, %conv1) : f32[8]",
        "%bn1.beta.grad = reduce_sum(%bn1.grad) {axes = [0, 2, 3]} : f32[8]",
    ] {
        assert!(train.contains(line), "missing `{line}` in\n{train}");
    }
    // The first conv's input is data: no gradient and no conv2d_grad_input for it.
    assert!(!train.contains("%x.grad"));
    assert_eq!(train.matches("conv2d_grad_input").count(), 1);

    let frozen = step_text(
        &g,
        &GradOptions {
            bn: BnMode::Frozen,
            ..with(Optimizer::Sgd)
        },
    );
    for line in [
        "%bn1 = batch_norm(%conv1, %bn1.gamma, %bn1.beta, %bn1.mean, %bn1.var) : f32[B, 8, 28, 28]",
        "%conv1.grad = batch_norm_grad_input(%bn1.grad, %bn1.gamma, %bn1.var) : f32[B, 8, 28, 28]",
        "%bn1.gamma.grad = batch_norm_grad_gamma(%bn1.grad, %conv1, %bn1.mean, %bn1.var) : f32[8]",
    ] {
        assert!(frozen.contains(line), "missing `{line}` in\n{frozen}");
    }
    assert!(!frozen.contains("ema(") && !frozen.contains("%bn1.mean.grad"));
}

#[test]
fn train_mode_alone() {
    let mut g = model("depthwise");
    let before = g.op_count();
    assert_eq!(train_mode(&mut g, 0.01).unwrap(), 3);
    qir::verify::verify(&g).unwrap();
    assert_eq!(g.op_count(), before + 3 * 4);
    assert_eq!(g.updates().len(), 6);
    let text = qir::print::print(&g);
    assert!(text.contains("%dw.bn.var.new = ema(%dw.bn.var, %3) {momentum = 0.01} : f32[16]"));
    assert!(text.contains("%3 = variance(%dw) {axes = [0, 2, 3]} : f32[16]"));
    // Nothing left to convert; statistics that already have updates are refused.
    assert_eq!(train_mode(&mut g, 0.1).unwrap(), 0);
    let mut g2 = model("depthwise");
    let mean = g2.find("dw.bn.mean").unwrap();
    let w = g2.find("dw.bn.var").unwrap();
    g2.add_update(mean, w);
    let e = train_mode(&mut g2, 0.1).unwrap_err();
    assert!(e.to_string().contains("already has an update"), "{e}");
}

#[test]
fn only_values_between_params_and_the_loss_get_gradients() {
    let g = parse(
        "graph @m {
  input %x: f32[B, 4]
  input %label: i32[B]
  param %w: f32[3, 4] = lecun_uniform
  param %side: f32[3, 4] = lecun_uniform
  param %unused: f32[2] = zeros
  const %k: f32[3] = [1.0, 2.0, 3.0]

  %h = linear(%x, %w) : f32[B, 3]
  %hk = add(%h, %k) : f32[B, 3]
  %loss = softmax_cross_entropy(%hk, %label) : f32[]
  %s = linear(%x, %side) : f32[B, 3]
  %pred = argmax(%s) : i64[B]

  output pred = %pred
  loss %loss
}
",
    );
    let text = step_text(&g, &with(Optimizer::Sgd));
    // %hk's gradient passes through the add unchanged to %h (k was broadcast, h was not),
    // so %h's gradient is the node %hk.grad.
    assert!(text.contains("%hk.grad = softmax_cross_entropy_grad(%loss.grad, %hk, %label)"));
    assert!(text.contains("%w.grad = matmul(%hk.grad, %x) {transpose_a = true} : f32[3, 4]"));
    for absent in [
        "%x.grad",
        "%label.grad",
        "%k.grad",
        "%side.grad",
        "%unused.grad",
        "%s.grad",
    ] {
        assert!(!text.contains(absent), "{absent} should not exist:\n{text}");
    }
    assert!(text.contains("update %w = %w.new"));
    assert!(!text.contains("update %side") && !text.contains("update %unused"));
}

#[test]
fn fan_out_is_summed_with_add() {
    let g = parse(
        "graph @m {
  input %label: i32[B]
  input %x: f32[B, 4]
  param %w: f32[4, 4] = lecun_uniform

  %h = linear(%x, %w) : f32[B, 4]
  %a = relu(%h) : f32[B, 4]
  %b = tanh(%h) : f32[B, 4]
  %s = add(%a, %b) : f32[B, 4]
  %loss = softmax_cross_entropy(%s, %label) : f32[]

  loss %loss
}
",
    );
    let text = step_text(&g, &with(Optimizer::None));
    // Contributions arrive in reverse order of the users and are summed left to right.
    assert!(
        text.contains("%0 = tanh_grad(%s.grad, %b) : f32[B, 4]"),
        "{text}"
    );
    assert!(
        text.contains("%1 = relu_grad(%s.grad, %a) : f32[B, 4]"),
        "{text}"
    );
    assert!(text.contains("%h.grad = add(%0, %1) : f32[B, 4]"), "{text}");
}

#[test]
fn learned_quantization_parameters_are_trained() {
    let g = parse(
        "graph @m {
  input %x: f32[B, 4]
  input %label: i32[B]
  param %w: f32[3, 4] = lecun_uniform
  param %w.scale: f32[3] = fill(0.05)
  param %w.zp: f32[3] = zeros
  param %a.scale: f32[] = fill(0.1)
  const %a.zp: f32[] = [0.0]

  %wq = fake_quant_lsq(%w, %w.scale, %w.zp) {qmin = -7, qmax = 7, axis = 0, learn_zero_point = true} : f32[3, 4]
  %h = linear(%x, %wq) : f32[B, 3]
  %hq = fake_quant_lsq(%h, %a.scale, %a.zp) {qmin = 0, qmax = 255} : f32[B, 3]
  %loss = softmax_cross_entropy(%hq, %label) : f32[]

  loss %loss
}
",
    );
    let text = step_text(&g, &with(Optimizer::Adam));
    for line in [
        "%h.grad = fake_quant_lsq_grad_x(%hq.grad, %h, %a.scale, %a.zp) {qmin = 0, qmax = 255} : f32[B, 3]",
        "%a.scale.grad = fake_quant_lsq_grad_scale(%hq.grad, %h, %a.scale, %a.zp) {qmin = 0, qmax = 255} : f32[]",
        "%w.grad = fake_quant_lsq_grad_x(%wq.grad, %w, %w.scale, %w.zp) {qmin = -7, qmax = 7, axis = 0} : f32[3, 4]",
        "%w.scale.grad = fake_quant_lsq_grad_scale(%wq.grad, %w, %w.scale, %w.zp) {qmin = -7, qmax = 7, axis = 0} : f32[3]",
        "%w.zp.grad = fake_quant_lsq_grad_zero_point(%wq.grad, %w, %w.scale, %w.zp) {qmin = -7, qmax = 7, axis = 0} : f32[3]",
        "update %a.scale = %a.scale.new",
        "update %w.zp.adam_v = %w.zp.adam_v.new",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    assert!(!text.contains("%a.zp.grad"));
}

#[test]
fn a_param_behind_an_integer_op_is_an_error() {
    let g = parse(
        "graph @m {
  input %x: f32[B, 4]
  input %label: i32[B]
  param %w: f32[3, 4] = lecun_uniform

  %wq = quantize(%w) {rounding = half_even} : !quant.uniform<i8:f32, 0.1>[3, 4]
  %wd = dequantize(%wq) : f32[3, 4]
  %h = linear(%x, %wd) : f32[B, 3]
  %loss = softmax_cross_entropy(%h, %label) : f32[]

  loss %loss
}
",
    );
    let e = grad(&g, &GradOptions::default()).unwrap_err();
    assert!(matches!(
        e,
        GradError::NotDifferentiable {
            op: Op::Quantize,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "%w reaches the loss through 'quantize' (%wq), which has no gradient"
    );
}

#[test]
fn other_errors() {
    let mut g = model("digits_mlp");
    let e = grad(
        &{
            let mut h = g.clone();
            h.set_loss(None);
            h
        },
        &GradOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e, GradError::NoLoss);

    let bad = GradOptions {
        beta1: 1.5,
        ..GradOptions::default()
    };
    assert_eq!(
        grad(&g, &bad).unwrap_err().to_string(),
        "option 'beta1' of pass 'grad' expects a number in [0, 1), found '1.5'"
    );

    // A param that already has an update cannot get an optimizer step.
    let w = g.find("fc1.w").unwrap();
    let b = g.find("fc1.b").unwrap();
    let mut upd = g.clone();
    upd.add_update(b, b);
    let e = grad(&upd, &GradOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("%fc1.b already has an update"),
        "{e}"
    );

    // `lr` must be free for the learning-rate input.
    g.rename(w, Some("lr".into())).unwrap();
    let e = grad(&g, &GradOptions::default()).unwrap_err();
    assert!(e.to_string().contains("%lr is taken"), "{e}");
}

#[test]
fn runs_as_a_registered_pass() {
    let mut g = model("residual");
    let pm = PassManager::parse("grad{optimizer=adamw,weight-decay=0.05,bn=frozen}").unwrap();
    pm.run(&mut g).unwrap();
    let text = qir::print::print(&g);
    assert!(text.contains("{weight_decay = 0.05}"));
    assert!(!text.contains("batch_norm_train"));
    // A pass instance prints back its options.
    let pass = passes::registry::parse_and_create("grad{momentum=0.9}").unwrap();
    let opts: Vec<String> = pass[0]
        .options()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(
        opts.join(","),
        "optimizer=sgd,momentum=0.9,weight-decay=0.0,beta1=0.9,beta2=0.999,eps=1e-8,bn=train,bn-momentum=0.1"
    );
    let mut g = model("digits_mlp");
    assert_eq!(pass[0].run(&mut g).unwrap(), Changed::Yes);
}
