//! End to end: the training step the grad pass derives for the digits MLP
//! (`testdata/models/digits_mlp.qir`), run by the reference interpreter alone on the 8×8
//! UCI digits (`testdata/digits/`, pixels 0..16 scaled by 1/16), learns: the mean training
//! loss falls and the test accuracy on the 360 held-out images exceeds 90%.

mod grad_common;

use std::collections::HashMap;
use std::path::Path;

use grad_common::{Rng, model, repo_root};
use passes::grad::{GradOptions, Optimizer, grad};
use qir::{Graph, Tensor};
use qir_interp::{Precision, RunOptions, Store, init_store, run};

/// One IDX file: its dimensions and its u8 data.
fn read_idx(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        bytes.len() >= 4,
        "{}: too short for an IDX header",
        path.display()
    );
    assert_eq!(
        &bytes[..3],
        &[0, 0, 8],
        "{}: not u8 IDX data",
        path.display()
    );
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    assert!(
        bytes.len() >= header,
        "{}: truncated header",
        path.display()
    );
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let n: usize = dims.iter().product();
    assert_eq!(
        bytes.len(),
        header + n,
        "{}: size does not match the header",
        path.display()
    );
    (dims, bytes[header..].to_vec())
}

struct Split {
    images: Vec<f32>,
    labels: Vec<i32>,
    n: usize,
}

fn load(prefix: &str) -> Split {
    let dir = repo_root().join("testdata/digits");
    let (dims, px) = read_idx(&dir.join(format!("{prefix}-images-idx3-ubyte")));
    let (ldims, labels) = read_idx(&dir.join(format!("{prefix}-labels-idx1-ubyte")));
    assert_eq!(&dims[1..], &[8, 8]);
    assert_eq!(dims[0], ldims[0]);
    Split {
        images: px.iter().map(|&p| p as f32 / 16.0).collect(),
        labels: labels.iter().map(|&l| l as i32).collect(),
        n: dims[0],
    }
}

fn batch(split: &Split, idx: &[usize]) -> HashMap<String, Tensor> {
    let mut x = Vec::with_capacity(idx.len() * 64);
    let mut y = Vec::with_capacity(idx.len());
    for &i in idx {
        x.extend_from_slice(&split.images[i * 64..(i + 1) * 64]);
        y.push(split.labels[i]);
    }
    HashMap::from([
        (
            "x".to_string(),
            Tensor::f32(vec![idx.len(), 64], x).expect("shape"),
        ),
        (
            "label".to_string(),
            Tensor::new(vec![idx.len()], qir::Data::I32(y)).expect("shape"),
        ),
    ])
}

fn accuracy(fwd: &Graph, store: &mut Store, split: &Split) -> f64 {
    let eval = RunOptions {
        precision: Precision::F32,
        apply_updates: false,
    };
    let all: Vec<usize> = (0..split.n).collect();
    let mut correct = 0;
    for chunk in all.chunks(120) {
        let r = run(fwd, store, &batch(split, chunk), &eval).expect("eval run");
        let logits = r.outputs["logits"].data.to_f64();
        for (row, &i) in logits.chunks_exact(10).zip(chunk) {
            let pred = (0..10)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            correct += usize::from(pred as i32 == split.labels[i]);
        }
    }
    correct as f64 / split.n as f64
}

/// Trains the digits MLP with `opts` for `epochs` epochs of batches of 32 at learning rate
/// `lr`; returns the mean training loss of each epoch and the final test accuracy.
fn train(opts: &GradOptions, lr: f32, epochs: usize) -> (Vec<f64>, f64) {
    let fwd = model("digits_mlp");
    let step = grad(&fwd, opts).unwrap();
    let train = load("train");
    let test = load("t10k");
    assert_eq!((train.n, test.n), (1437, 360));

    let mut store = init_store(&step, 42).unwrap();
    let mut rng = Rng::new(5);
    let lr = Tensor::scalar_f32(lr);
    let mut losses = Vec::new();
    let mut order: Vec<usize> = (0..train.n).collect();
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        let (mut sum, mut count) = (0.0, 0);
        for chunk in order.chunks(32) {
            let mut feed = batch(&train, chunk);
            feed.insert("lr".into(), lr.clone());
            let r = run(&step, &mut store, &feed, &RunOptions::default()).expect("training step");
            sum += r.loss.expect("loss") * chunk.len() as f64;
            count += chunk.len();
        }
        losses.push(sum / count as f64);
    }
    (losses, accuracy(&fwd, &mut store, &test))
}

#[test]
fn digits_mlp_trains_to_over_90_percent() {
    let adam = GradOptions {
        optimizer: Optimizer::Adam,
        ..GradOptions::default()
    };
    let sgd = GradOptions {
        optimizer: Optimizer::Sgd,
        momentum: 0.9,
        ..GradOptions::default()
    };
    for (name, opts, lr) in [("adam", adam, 0.01), ("sgd momentum", sgd, 0.05)] {
        let (losses, acc) = train(&opts, lr, 8);
        println!("{name}: mean training loss per epoch {losses:.4?}; test accuracy {acc:.4}");
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        assert!(
            last < 0.5 * first,
            "{name}: the loss should at least halve: {losses:?}"
        );
        assert!(acc > 0.90, "{name}: test accuracy {acc} should exceed 90%");
    }
}
