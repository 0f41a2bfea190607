//! The QAT training step of the MNIST CNN: `prepare-qat` then `grad`, before and after
//! `simplify`. Simplification of the derived graph must keep it verifying and keep what
//! it computes (checked with the interpreter on one step), and should make it smaller.
//!
//! Counts (tflite-int8, SGD): 156 nodes (124 ops) before simplify, 154 (122 ops) after.
//! The grad pass already avoids the usual waste (no zero seeds, no identity reshapes or
//! sums), so what simplify removes is what algebra alone finds: `reshape-neg` moves the
//! negation out of the reshape in the gradient of each folded batch-norm factor and
//! `add-neg` turns `add(reshape(neg(a)), b)` into `sub(b, reshape(a))`, one op per
//! batch-norm layer.

mod prepare_common;

use std::collections::HashMap;

use passes::grad::{GradOptions, grad};
use passes::{Pass, Simplify};
use prepare_common::{model, prepare};
use qir::{Graph, Op, Tensor};
use qir_interp::{RunOptions, init_store, run};

fn count(g: &Graph, op: Op) -> usize {
    g.node_ids()
        .into_iter()
        .filter(|&id| g.node(id).op() == Some(op))
        .count()
}

/// The training step of the MNIST CNN and the same after `simplify`.
fn steps() -> (Graph, Graph) {
    let prepared = prepare(&model("mnist_cnn"), "tflite-int8");
    let step = grad(&prepared, &GradOptions::default()).unwrap();
    let mut simple = step.clone();
    Simplify::default().run(&mut simple).unwrap();
    qir::verify::verify(&simple).unwrap();
    (step, simple)
}

#[test]
fn simplify_shrinks_the_training_step() {
    let (step, simple) = steps();
    assert!(
        simple.node_count() < step.node_count() && simple.op_count() < step.op_count(),
        "simplify should shrink the step: {} -> {} nodes",
        step.node_count(),
        simple.node_count()
    );
    assert_eq!((simple.node_count(), simple.op_count()), (154, 122));
    // the two batch-norm factor gradients are now subtractions
    assert_eq!(count(&step, Op::Sub), 0);
    assert_eq!(count(&simple, Op::Sub), 2);
    assert_eq!(count(&step, Op::Neg) - count(&simple, Op::Neg), 2);
}

#[test]
fn simplify_keeps_the_training_step() {
    let (step, simple) = steps();
    let (before, after) = (step.node_count(), simple.node_count());
    let (ops_before, ops_after) = (step.op_count(), simple.op_count());
    println!(
        "mnist_cnn QAT training step (prepare-qat + grad): {before} nodes ({ops_before} ops) before simplify, {after} nodes ({ops_after} ops) after"
    );
    println!(
        "fake_quant_grad: {} -> {}",
        count(&step, Op::FakeQuantGrad),
        count(&simple, Op::FakeQuantGrad)
    );
    // The step's size: a change in what prepare-qat or grad emits shows here.
    assert_eq!((before, ops_before), (156, 124));
    assert_eq!(count(&step, Op::FakeQuant), 7);
    // every fake-quant but the input's is on the path from a param to the loss
    assert_eq!(count(&step, Op::FakeQuantGrad), 6);
    assert!(after <= before && ops_after <= ops_before);

    // One training step computes the same loss and updates before and after.
    let mut s1 = init_store(&step, 9).unwrap();
    let mut s2 = s1.clone();
    let n = 2;
    let x: Vec<f32> = (0..n * 784)
        .map(|i| ((i * 37) % 101) as f32 / 100.0)
        .collect();
    let inputs = HashMap::from([
        ("x".to_string(), Tensor::f32(vec![n, 1, 28, 28], x).unwrap()),
        (
            "label".to_string(),
            Tensor::new(vec![n], qir::Data::I32(vec![3, 7])).unwrap(),
        ),
        ("lr".to_string(), Tensor::scalar_f32(0.05)),
    ]);
    let r1 = run(&step, &mut s1, &inputs, &RunOptions::default()).unwrap();
    let r2 = run(&simple, &mut s2, &inputs, &RunOptions::default()).unwrap();
    assert_eq!(r1.loss, r2.loss);
    for name in s1.names() {
        assert_eq!(s1.get(name), s2.get(name), "%{name} after one step");
    }
}
