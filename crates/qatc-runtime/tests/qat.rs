//! Calibration and quantization-aware training on the hand-prepared digits MLP.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use runtime::calibrate::{CalibrationConfig, Method, QSpec, calibrate, find_observers};
use runtime::data::{Feed, shuffled};
use runtime::executor::Interpreter;
use runtime::hooks::{FreezeObservers, Hook, HookCtx, ObserverMode};
use runtime::train::{CalibrationSetup, Prepare, QatSetup, TrainConfig, Trainer};

fn qat_model() -> qir::Graph {
    common::local_model("digits_mlp_qat.qir")
}

fn batches(g: &qir::Graph, n: usize) -> Vec<std::collections::HashMap<String, qir::Tensor>> {
    let data = common::digits();
    let feed = Feed::for_graph(g, data.train.example_dims()).unwrap();
    feed.batches(
        &data.train,
        shuffled(data.train.len(), 0, 0),
        32,
        1.0 / 16.0,
    )
    .take(n)
    .map(|b| b.unwrap().inputs)
    .collect()
}

fn f32s(store: &qir_interp::Store, name: &str) -> Vec<f32> {
    store.get(name).unwrap().as_f32().unwrap().to_vec()
}

#[test]
fn finds_observer_sites_with_their_rules() {
    let g = qat_model();
    let sites = find_observers(&g).unwrap();
    type Site = (String, Option<usize>, Option<String>, Option<String>);
    let desc: Vec<Site> = sites
        .iter()
        .map(|s| {
            (
                g.describe(s.value),
                s.axis,
                s.min_state.clone(),
                s.max_state.clone(),
            )
        })
        .collect();
    assert_eq!(
        desc,
        [
            (
                "%x".into(),
                None,
                Some("x.min".into()),
                Some("x.max".into())
            ),
            (
                "%fc1.w".into(),
                Some(0),
                Some("fc1.w.min".into()),
                Some("fc1.w.max".into())
            ),
            (
                "%relu1".into(),
                None,
                Some("relu1.min".into()),
                Some("relu1.max".into())
            ),
            (
                "%fc2.w".into(),
                Some(0),
                Some("fc2.w.min".into()),
                Some("fc2.w.max".into())
            ),
        ]
    );
    assert_eq!(sites[0].qspec, Some(QSpec::affine(0, 255)));
    let w = sites[1].qspec.unwrap();
    assert_eq!((w.qmin, w.qmax, w.symmetric), (-127, 127, true));
}

#[test]
fn min_max_calibration_sets_the_observed_extremes() {
    let g = qat_model();
    let mut store = qir_interp::init_store(&g, 0).unwrap();
    let bs = batches(&g, 4);
    let report = calibrate(
        &g,
        &mut store,
        &bs,
        &CalibrationConfig::default(),
        &Interpreter::default(),
    )
    .unwrap();
    assert_eq!(report.batches, 4);
    // Pixels scaled by 1/16 over 128 digits: the range is exactly [0, 1].
    assert_eq!(f32s(&store, "x.min"), [0.0]);
    assert_eq!(f32s(&store, "x.max"), [1.0]);
    // Per-channel weight ranges are the row extremes of the weights.
    let w = f32s(&store, "fc1.w");
    let (mn, mx) = (f32s(&store, "fc1.w.min"), f32s(&store, "fc1.w.max"));
    for r in 0..32 {
        let row = &w[r * 64..(r + 1) * 64];
        assert_eq!(mn[r], row.iter().copied().fold(f32::INFINITY, f32::min));
        assert_eq!(mx[r], row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    }
    // The relu output range starts at 0 and is what the float model computes: fake
    // quantization was bypassed while collecting.
    assert_eq!(f32s(&store, "relu1.min"), [0.0]);
    let relu_max = f32s(&store, "relu1.max")[0];
    let float = common::model("digits_mlp.qir");
    let mut fstore = qir_interp::Store::new();
    for n in ["fc1.w", "fc1.b", "fc2.w", "fc2.b"] {
        fstore.insert(n, store.get(n).unwrap().clone());
    }
    let mut mx = f32::NEG_INFINITY;
    for b in &bs {
        let opts = qir_interp::RunOptions {
            apply_updates: false,
            ..Default::default()
        };
        let r = qir_interp::run(&float, &mut fstore, b, &opts).unwrap();
        let relu = float.find("relu1").unwrap();
        mx = r.values[&relu]
            .as_f32()
            .unwrap()
            .iter()
            .copied()
            .fold(mx, f32::max);
    }
    assert_eq!(relu_max, mx);
}

#[test]
fn percentile_and_mse_calibration_clip_inside_min_max() {
    let g = qat_model();
    let bs = batches(&g, 4);
    let run = |method| {
        let mut store = qir_interp::init_store(&g, 0).unwrap();
        let cfg = CalibrationConfig {
            method,
            ..CalibrationConfig::default()
        };
        calibrate(&g, &mut store, &bs, &cfg, &Interpreter::default()).unwrap();
        store
    };
    let mm = run(Method::MinMax);
    let pc = run(Method::Percentile(99.0));
    let ms = run(Method::Mse);
    for name in ["relu1.max", "fc1.w.max", "fc2.w.max"] {
        let (a, b, c) = (f32s(&mm, name), f32s(&pc, name), f32s(&ms, name));
        for i in 0..a.len() {
            assert!(
                b[i] <= a[i] && c[i] <= a[i],
                "{name}[{i}]: {} {} {}",
                a[i],
                b[i],
                c[i]
            );
        }
    }
    // 99% of the activations lie well below the largest one.
    assert!(f32s(&pc, "relu1.max")[0] < 0.9 * f32s(&mm, "relu1.max")[0]);
}

#[test]
fn calibration_errors() {
    let float = common::model("digits_mlp.qir");
    let mut store = qir_interp::init_store(&float, 0).unwrap();
    let e = calibrate(
        &float,
        &mut store,
        &batches(&float, 1),
        &CalibrationConfig::default(),
        &Interpreter::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "graph @digits_mlp has no observers (observe_min / observe_max) to calibrate"
    );
    let g = qat_model();
    let mut store = qir_interp::init_store(&g, 0).unwrap();
    let e = calibrate(
        &g,
        &mut store,
        &[],
        &CalibrationConfig::default(),
        &Interpreter::default(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "calibration needs at least one batch");
}

/// Records the observer state of the first weight row after every epoch.
struct Ranges(Rc<RefCell<Vec<(f32, f32, ObserverMode)>>>);

impl Hook for Ranges {
    fn after_epoch(&mut self, ctx: &mut HookCtx<'_>) -> runtime::Result<()> {
        let mn = ctx.store.get("fc1.w.min").unwrap().as_f32().unwrap()[0];
        let mx = ctx.store.get("relu1.max").unwrap().as_f32().unwrap()[0];
        self.0.borrow_mut().push((mn, mx, *ctx.observers));
        Ok(())
    }
}

#[test]
fn calibrate_then_train_in_one_call_with_frozen_observers() {
    let data = common::digits();
    let cfg = TrainConfig {
        epochs: 3,
        qat: Some(QatSetup {
            prepare: None,
            calibration: Some(CalibrationSetup {
                config: CalibrationConfig::default(),
                batches: 4,
            }),
        }),
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&qat_model(), cfg).unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    trainer.add_hook(Box::new(FreezeObservers { after_epoch: 2 }));
    trainer.add_hook(Box::new(Ranges(seen.clone())));
    let s = trainer.fit(&data, &mut []).unwrap();
    let cal = s.calibration.as_ref().unwrap();
    assert_eq!(cal.sites.len(), 4);
    assert_eq!(cal.sites[0].max, [1.0]);
    let acc = s.final_accuracy().unwrap();
    assert!(acc > 0.9, "QAT accuracy {acc}: {:?}", s.epochs);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 3);
    // Epoch 2 still moved the ranges; epoch 3 ran with frozen observers.
    assert_ne!(seen[0], seen[1]);
    assert_eq!((seen[2].0, seen[2].1), (seen[1].0, seen[1].1));
    assert_eq!(seen[2].2, ObserverMode::Frozen);
    assert_eq!(trainer.observer_mode(), ObserverMode::Frozen);
}

#[test]
fn preparation_by_pipeline_and_by_scheme() {
    let float = common::model("digits_mlp.qir");
    let cfg = |p| TrainConfig {
        qat: Some(QatSetup {
            prepare: Some(p),
            calibration: None,
        }),
        ..TrainConfig::default()
    };
    let t = Trainer::new(&float, cfg(Prepare::Pipeline("canonicalize".into()))).unwrap();
    assert_eq!(t.model().op_count(), float.op_count());
    let e = Trainer::new(&float, cfg(Prepare::Pipeline("no-such-pass".into())))
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("unknown pass 'no-such-pass'"), "{e}");
    // Preparing by scheme needs the prepare-qat pipeline; without it the error says so,
    // with it the model gets fake quantization.
    match (
        passes::named("prepare-qat"),
        Trainer::new(&float, cfg(Prepare::Scheme("tflite-int8".into()))),
    ) {
        (Err(_), Err(e)) => assert!(
            e.to_string()
                .starts_with("QAT preparation needs the 'prepare-qat' pipeline"),
            "{e}"
        ),
        (Ok(_), Ok(t)) => assert!(
            t.model().node_ids().into_iter().any(|id| t
                .model()
                .node(id)
                .op()
                .is_some_and(|op| op.is_fake_quant()))
        ),
        (p, t) => panic!(
            "pipeline {:?} but trainer {:?}",
            p.is_ok(),
            t.err().map(|e| e.to_string())
        ),
    }
}
