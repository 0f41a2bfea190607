//! Batch-norm under QAT, numerically, with the reference interpreter: on every model with
//! batch-norm, with non-trivial statistics, the prepared graph with its fake-quants
//! bypassed computes the float model's function within 1e-5 — in evaluation (running
//! statistics) and in training (batch statistics, after the grad pass's train-mode
//! conversion) — for simulated folding (mode a) and for unfolded batch-norm (mode b).

mod prepare_common;

use std::collections::HashMap;

use passes::grad::train_mode;
use passes::scheme::{BnFolding, Scheme};
use prepare_common::{bypass_fake_quant, model, prepare};
use qir::{Graph, Op, Tensor};
use qir_interp::{RunOptions, Store, init_store, run};

/// SplitMix64 in [lo, hi).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// The float model's store with random batch-norm statistics and affine parameters.
fn float_store(g: &Graph, rng: &mut Rng) -> Store {
    let mut store = init_store(g, 3).unwrap();
    for id in g.node_ids() {
        if g.node(id).op() != Some(Op::BatchNorm) {
            continue;
        }
        let ops = g.operands(id);
        let c = g.ty(ops[1]).shape.numel().unwrap() as usize;
        for (slot, lo, hi) in [(1, 0.5, 1.5), (2, -0.3, 0.3), (3, -0.5, 0.5), (4, 0.3, 2.0)] {
            let name = g.node(ops[slot]).name.clone().unwrap();
            store.insert(&name, Tensor::f32(vec![c], rng.vec(c, lo, hi)).unwrap());
        }
    }
    store
}

/// `prepared`'s store: its own initializers, then every value of the float store.
fn prepared_store(prepared: &Graph, float: &Store) -> Store {
    let mut store = init_store(prepared, 3).unwrap();
    for n in float.names() {
        store.insert(n, float.get(n).unwrap().clone());
    }
    store
}

fn logits(g: &Graph, store: &mut Store, x: &Tensor) -> Vec<f32> {
    let inputs = HashMap::from([
        ("x".to_string(), x.clone()),
        (
            "label".to_string(),
            Tensor::new(vec![x.shape[0]], qir::Data::I32(vec![0; x.shape[0]])).unwrap(),
        ),
    ]);
    let opts = RunOptions {
        apply_updates: false,
        ..RunOptions::default()
    };
    let r = run(g, store, &inputs, &opts).unwrap_or_else(|e| panic!("{e}"));
    r.outputs["logits"].as_f32().unwrap().to_vec()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_mode(folding: BnFolding) {
    let mut scheme = Scheme::preset("tflite-int8").unwrap();
    scheme.batch_norm = folding;
    for m in ["mnist_cnn", "depthwise", "residual"] {
        let float = model(m);
        let mut g = float.clone();
        passes::fold_batchnorm_qat::fold_batchnorm_qat(&mut g, &scheme).unwrap();
        passes::insert_fake_quant::insert_fake_quant(&mut g, &scheme).unwrap();
        let folds = g
            .node_ids()
            .into_iter()
            .filter(|&id| {
                g.node(id)
                    .name
                    .as_deref()
                    .is_some_and(|n| n.ends_with(".folded"))
            })
            .count();
        let bns = float
            .node_ids()
            .into_iter()
            .filter(|&id| float.node(id).op() == Some(Op::BatchNorm))
            .count();
        match folding {
            BnFolding::Simulated => assert_eq!(folds, bns, "{m}: every batch-norm folds"),
            BnFolding::Unfolded => assert_eq!(folds, 0, "{m}: nothing folds"),
        }
        let plain = bypass_fake_quant(&g);
        let mut rng = Rng(11);
        let mut fstore = float_store(&float, &mut rng);
        let mut pstore = prepared_store(&plain, &fstore);
        let dims: Vec<usize> = float.ty(float.find("x").unwrap()).shape.dims()[1..]
            .iter()
            .map(|d| d.fixed().unwrap() as usize)
            .collect();
        let n: usize = 4 * dims.iter().product::<usize>();
        let mut shape = vec![4];
        shape.extend(dims);
        let x = Tensor::f32(shape, rng.vec(n, 0.0, 1.0)).unwrap();

        // Evaluation: running statistics.
        let a = logits(&float, &mut fstore, &x);
        let b = logits(&plain, &mut pstore, &x);
        let d = max_diff(&a, &b);
        assert!(d <= 1e-5, "{m} {folding:?} eval: max difference {d}");
        assert!(
            a.iter().any(|v| v.abs() > 0.1),
            "{m}: logits are not trivial"
        );

        // Training: batch statistics (the grad pass's train-mode batch-norm).
        let (mut ft, mut pt) = (float.clone(), plain.clone());
        assert_eq!(train_mode(&mut ft, 0.1).unwrap(), bns);
        assert_eq!(train_mode(&mut pt, 0.1).unwrap(), bns);
        let a = logits(&ft, &mut fstore, &x);
        let b = logits(&pt, &mut pstore, &x);
        let d = max_diff(&a, &b);
        assert!(d <= 1e-5, "{m} {folding:?} train: max difference {d}");
    }
}

#[test]
fn simulated_folding_computes_the_float_function() {
    check_mode(BnFolding::Simulated);
}

#[test]
fn unfolded_batch_norm_computes_the_float_function() {
    check_mode(BnFolding::Unfolded);
}

#[test]
fn simulated_folding_quantizes_the_folded_weight() {
    // In evaluation the fake-quant sees w * gamma / sqrt(var + eps): its per-channel
    // range is the folded weight's, and the conv computes with its quantized values.
    let float = model("mnist_cnn");
    let g = prepare(&float, "tflite-int8");
    let mut rng = Rng(5);
    let fstore = float_store(&float, &mut rng);
    let mut store = prepared_store(&g, &fstore);
    let x = Tensor::f32(vec![2, 1, 28, 28], rng.vec(2 * 784, 0.0, 1.0)).unwrap();
    let inputs = HashMap::from([
        ("x".to_string(), x),
        (
            "label".to_string(),
            Tensor::new(vec![2], qir::Data::I32(vec![0, 1])).unwrap(),
        ),
    ]);
    let r = run(&g, &mut store, &inputs, &RunOptions::default()).unwrap();
    let v = |n: &str| r.values[&g.find(n).unwrap()].as_f32().unwrap().to_vec();
    let (w, gamma, var) = (v("conv1.w"), v("bn1.gamma"), v("bn1.var"));
    let folded = v("conv1.w.folded");
    let fq = v("conv1.w.folded.fq");
    let scale = v("conv1.w.folded.scale");
    for c in 0..8 {
        let f = gamma[c] / (var[c] + 1e-5).sqrt();
        let row = &folded[c * 9..(c + 1) * 9];
        for k in 0..9 {
            assert!((row[k] - w[c * 9 + k] * f).abs() <= 1e-6 * row[k].abs().max(1.0));
        }
        // symmetric narrow range: scale = max|w_c| / 127, and the fake-quant is on its grid
        let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert_eq!(scale[c], amax / 127.0, "channel {c}");
        for k in 0..9 {
            let q = fq[c * 9 + k] / scale[c];
            assert!((q - q.round()).abs() < 1e-3 && q.abs() <= 127.0 + 1e-3);
        }
    }
}
