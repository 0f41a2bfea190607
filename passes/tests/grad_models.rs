//! The grad pass on every test model in `testdata/models/`: the training step verifies and
//! prints and reparses to the same text for every optimizer and batch-norm mode, and its
//! gradients agree with finite differences in f64 (batch of 3, a random subset of the
//! elements of each param; tolerance as in `grad_common`).

mod grad_common;

use std::collections::HashMap;

use grad_common::*;
use passes::grad::{BnMode, GradOptions, Optimizer, grad};
use qir::{ElemType, Graph, Tensor};
use qir_interp::init_store;

/// Random inputs for a model: every float input uniform in [0, 1), labels in 0..10.
fn inputs(g: &Graph, batch: u64, rng: &mut Rng) -> HashMap<String, Tensor> {
    let syms = HashMap::from([("B".to_string(), batch)]);
    let mut out = HashMap::new();
    for id in g.inputs() {
        let node = g.node(id);
        let name = node.name.clone().unwrap_or_default();
        let shape = concrete(&node.ty, &syms);
        let n = shape.iter().product();
        let t = match node.ty.elem {
            ElemType::F64 => f64_tensor(&shape, rng.vec(n, 0.0, 1.0)),
            ElemType::I32 => i32_tensor(&shape, (0..n).map(|_| rng.below(10) as i32).collect()),
            ref e => panic!("input %{name} has unexpected type {e}"),
        };
        out.insert(name, t);
    }
    out
}

#[test]
fn every_model_matches_finite_differences() {
    for (k, name) in model_names().iter().enumerate() {
        let mut g = model(name);
        to_f64(&mut g);
        let mut rng = Rng::new(1000 + k as u64);
        let store = init_store(&g, 3).unwrap_or_else(|e| panic!("{name}: init_store: {e}"));
        let feed = inputs(&g, 3, &mut rng);
        let report = fd_check(&g, &store, &feed, BnMode::Train, Some(6), &mut rng);
        let mut params: Vec<String> = g
            .params()
            .into_iter()
            .filter_map(|p| g.node(p).name.clone())
            .collect();
        params.sort();
        assert_eq!(report.params, params, "{name}: every param gets a gradient");
        println!(
            "{name}: {} elements, max |a - n| = {:.2e}, max relative = {:.2e}",
            report.checked, report.max_abs_err, report.max_rel_err
        );
    }
}

#[test]
fn frozen_batch_norm_matches_finite_differences() {
    let mut g = model("mnist_cnn");
    to_f64(&mut g);
    let mut rng = Rng::new(77);
    let mut store = init_store(&g, 5).unwrap();
    // Running statistics away from their initial zeros and ones.
    for (stat, lo, hi) in [("bn1.mean", -0.2, 0.2), ("bn1.var", 0.5, 1.5)] {
        let t = store.get(stat).unwrap().clone();
        store.insert(stat, f64_tensor(&t.shape, rng.vec(t.numel(), lo, hi)));
    }
    let feed = inputs(&g, 2, &mut rng);
    let report = fd_check(&g, &store, &feed, BnMode::Frozen, Some(4), &mut rng);
    assert!(report.params.contains(&"bn1.gamma".to_string()));
}

#[test]
fn training_steps_verify_and_print_back() {
    let variants = [
        (Optimizer::None, 0.0, BnMode::Train),
        (Optimizer::Sgd, 0.0, BnMode::Train),
        (Optimizer::Sgd, 0.9, BnMode::Frozen),
        (Optimizer::Adam, 0.0, BnMode::Train),
        (Optimizer::AdamW, 0.0, BnMode::Frozen),
    ];
    for name in model_names() {
        let g = model(&name);
        for (optimizer, momentum, bn) in variants {
            let opts = GradOptions {
                optimizer,
                momentum,
                weight_decay: 1e-4,
                bn,
                ..GradOptions::default()
            };
            let step = grad(&g, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
            qir::verify::verify(&step).unwrap_or_else(|e| panic!("{name}: {e}"));
            let text = qir::print::print(&step);
            let back = qir_reader::parse_and_verify(&text)
                .unwrap_or_else(|d| panic!("{name}: {}", qir_reader::render(&d, &name, &text)));
            assert_eq!(
                qir::print::print(&back),
                text,
                "{name}: print -> parse -> print"
            );
            // Every param is trained (or its gradient is an output).
            for p in g.params() {
                let pn = g.node(p).name.clone().unwrap_or_default();
                match optimizer {
                    Optimizer::None => assert!(step.output(&format!("{pn}.grad")).is_some()),
                    _ => assert!(step.update_of(p).is_some(), "{name}: %{pn} has no update"),
                }
            }
            // The forward outputs and the loss are kept.
            assert_eq!(step.loss(), g.loss());
            for o in g.outputs() {
                assert_eq!(step.output(&o.name), Some(o.value));
            }
        }
    }
}
