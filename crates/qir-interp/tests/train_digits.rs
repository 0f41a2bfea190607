//! Trains the 8x8 digits MLP (64 -> 32 -> 10, batch 32) with a hand-written training-step
//! graph (forward, backward ops, SGD updates) in the interpreter: five epochs over the
//! 1437 training images must reach at least 90% accuracy on the 360 test images (a
//! freshly initialized network scores about 10%). The elapsed time is printed, not
//! asserted.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::*;
use qir::{Attr, Data, ElemType, Graph, Init, Op, Tensor};
use qir_interp::{RunOptions, Session, init_store};

/// An IDX file of u8 data: (dimensions, bytes).
fn idx(name: &str) -> (Vec<usize>, Vec<u8>) {
    let path = repo_root().join("testdata/digits").join(name);
    let b = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        b.len() >= 4 && b[0] == 0 && b[1] == 0 && b[2] == 8,
        "{name}: not u8 IDX"
    );
    let rank = b[3] as usize;
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let data = b[4 + 4 * rank..].to_vec();
    assert_eq!(
        data.len(),
        dims.iter().product::<usize>(),
        "{name}: truncated"
    );
    (dims, data)
}

/// The training step: forward, loss, backward and SGD updates of all four parameters.
fn train_step() -> Graph {
    let mut g = Graph::new("digits_train");
    let x = g.add_input("x", bt(ElemType::F32, &[0, 64])).unwrap();
    let label = g.add_input("label", bt(ElemType::I32, &[0])).unwrap();
    let lr = g.add_input("lr", f32t(&[])).unwrap();
    let w1 = g
        .add_param("fc1.w", f32t(&[32, 64]), Init::KaimingUniform)
        .unwrap();
    let b1 = g.add_param("fc1.b", f32t(&[32]), Init::Zeros).unwrap();
    let w2 = g
        .add_param("fc2.w", f32t(&[10, 32]), Init::LecunUniform)
        .unwrap();
    let b2 = g.add_param("fc2.b", f32t(&[10]), Init::Zeros).unwrap();
    let one = g.add_const("one", f32t(&[]), Init::Ones).unwrap();

    let h = op(&mut g, Op::Linear, &[x, w1, b1], &[], "fc1");
    let a = op(&mut g, Op::Relu, &[h], &[], "relu1");
    let logits = op(&mut g, Op::Linear, &[a, w2, b2], &[], "logits");
    let loss = op(
        &mut g,
        Op::SoftmaxCrossEntropy,
        &[logits, label],
        &[],
        "loss",
    );
    let pred = op(&mut g, Op::Argmax, &[logits], &[], "pred");

    let dlogits = op(
        &mut g,
        Op::SoftmaxCrossEntropyGrad,
        &[one, logits, label],
        &[],
        "logits.grad",
    );
    let ta = [("transpose_a", Attr::Bool(true))];
    let dw2 = op(&mut g, Op::Matmul, &[dlogits, a], &ta, "fc2.w.grad");
    let db2 = op(
        &mut g,
        Op::ReduceSum,
        &[dlogits],
        &[("axes", ints(&[0]))],
        "fc2.b.grad",
    );
    let da = op(&mut g, Op::Matmul, &[dlogits, w2], &[], "relu1.grad");
    let dh = op(&mut g, Op::ReluGrad, &[da, h], &[], "fc1.grad");
    let dw1 = op(&mut g, Op::Matmul, &[dh, x], &ta, "fc1.w.grad");
    let db1 = op(
        &mut g,
        Op::ReduceSum,
        &[dh],
        &[("axes", ints(&[0]))],
        "fc1.b.grad",
    );

    for (p, d, n) in [
        (w1, dw1, "fc1.w.new"),
        (b1, db1, "fc1.b.new"),
        (w2, dw2, "fc2.w.new"),
        (b2, db2, "fc2.b.new"),
    ] {
        let u = op(&mut g, Op::SgdUpdate, &[p, d, lr], &[], n);
        g.add_update(p, u);
    }
    g.add_output("logits", logits);
    g.add_output("pred", pred);
    g.set_loss(Some(loss));
    g
}

fn batch(images: &[u8], labels: &[u8], idx: &[usize]) -> (Tensor, Tensor) {
    let mut x = Vec::with_capacity(idx.len() * 64);
    for &i in idx {
        x.extend(
            images[i * 64..(i + 1) * 64]
                .iter()
                .map(|&p| p as f32 / 16.0),
        );
    }
    let l: Vec<i32> = idx.iter().map(|&i| labels[i] as i32).collect();
    (
        f32v(&[idx.len(), 64], x),
        Tensor::new(vec![idx.len()], Data::I32(l)).unwrap(),
    )
}

fn accuracy(sess: &Session, store: &mut qir_interp::Store, images: &[u8], labels: &[u8]) -> f64 {
    let n = labels.len();
    let all: Vec<usize> = (0..n).collect();
    let (x, l) = batch(images, labels, &all);
    let feed = HashMap::from([
        ("x".to_string(), x),
        ("label".to_string(), l),
        ("lr".to_string(), Tensor::scalar_f32(0.0)),
    ]);
    let opts = RunOptions {
        apply_updates: false,
        ..RunOptions::default()
    };
    let r = sess.run(store, &feed, &opts).unwrap();
    let Data::I64(pred) = &r.outputs["pred"].data else {
        panic!("argmax gives i64")
    };
    pred.iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as i64)
        .count() as f64
        / n as f64
}

#[test]
fn digits_mlp_trains_to_90_percent() {
    let (dims, train_x) = idx("train-images-idx3-ubyte");
    let (_, train_y) = idx("train-labels-idx1-ubyte");
    let (_, test_x) = idx("t10k-images-idx3-ubyte");
    let (_, test_y) = idx("t10k-labels-idx1-ubyte");
    assert_eq!(dims, [1437, 8, 8]);
    assert_eq!(test_y.len(), 360);

    let g = train_step();
    let sess = Session::new(&g).unwrap();
    let mut store = init_store(&g, 0).unwrap();
    let before = accuracy(&sess, &mut store, &test_x, &test_y);

    let start = Instant::now();
    let mut order: Vec<usize> = (0..train_y.len()).collect();
    let mut rng = 12345u64;
    let mut losses = Vec::new();
    for epoch in 0..5 {
        // Fisher-Yates with a fixed LCG: the run is deterministic
        for i in (1..order.len()).rev() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let mut total = 0.0;
        let mut steps = 0;
        for chunk in order.chunks(32) {
            let (x, l) = batch(&train_x, &train_y, chunk);
            let feed = HashMap::from([
                ("x".to_string(), x),
                ("label".to_string(), l),
                ("lr".to_string(), Tensor::scalar_f32(0.1)),
            ]);
            let r = sess.run(&mut store, &feed, &RunOptions::default()).unwrap();
            total += r.loss.unwrap();
            steps += 1;
        }
        losses.push(total / steps as f64);
        eprintln!("epoch {epoch}: mean loss {:.4}", total / steps as f64);
    }
    let elapsed = start.elapsed();
    let after = accuracy(&sess, &mut store, &test_x, &test_y);
    eprintln!(
        "5 epochs ({} steps) in {elapsed:.2?}; test accuracy {before:.3} -> {after:.3}",
        5 * train_y.len().div_ceil(32)
    );
    assert!(before < 0.3, "untrained accuracy {before}");
    assert!(after >= 0.90, "accuracy after 5 epochs is only {after}");
    // the mean loss falls every epoch, to under a quarter of the first epoch's
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "losses {losses:?}");
    assert!(losses[4] < losses[0] / 4.0, "losses {losses:?}");
}
