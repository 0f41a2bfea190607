//! Calibration and quantization-aware training on the hand-prepared digits MLP, the
//! initialization of learned (LSQ) scales, and the batch-norm freeze a scheme asks for.

mod common;
use common::executor;

use std::cell::RefCell;
use std::rc::Rc;

use qir_interp::Interpreter;
use runtime::calibrate::{
    CalibrationConfig, Method, QSpec, calibrate, find_learned, find_observers,
};
use runtime::data::{Feed, shuffled};
use runtime::hooks::{FreezeObservers, Hook, HookCtx};
use runtime::train::{
    CalibrationSetup, Prepare, QatSetup, TrainConfig, Trainer, prepare_model, qat_setup,
};

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
        "graph @digits_mlp has no observers (observe_min / observe_max) or learned quantization scales (fake_quant_lsq) to calibrate"
    );
    let g = qat_model();
    let mut store = qir_interp::init_store(&g, 0).unwrap();
    let e = calibrate(
        &g,
        &mut store,
        &Vec::new(),
        &CalibrationConfig::default(),
        &Interpreter::default(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "calibration needs at least one batch");
}

/// Records the observer state of the first weight row after every epoch, and whether the
/// model still has observers.
struct Ranges(Rc<RefCell<Vec<(f32, f32, bool)>>>);

impl Hook for Ranges {
    fn after_epoch(&mut self, ctx: &mut HookCtx<'_>) -> runtime::Result<()> {
        let mn = ctx.store.get("fc1.w.min").unwrap().as_f32().unwrap()[0];
        let mx = ctx.store.get("relu1.max").unwrap().as_f32().unwrap()[0];
        let frozen = !ctx.model.node_ids().into_iter().any(|id| {
            matches!(
                ctx.model.node(id).op(),
                Some(qir::Op::ObserveMin | qir::Op::ObserveMax)
            )
        });
        self.0.borrow_mut().push((mn, mx, frozen));
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
    let mut trainer = Trainer::new(&qat_model(), cfg, executor()).unwrap();
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
    assert!(!seen[0].2 && seen[1].2 && seen[2].2, "{seen:?}");
    assert!(trainer.observers_frozen());
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
    let t = Trainer::new(
        &float,
        cfg(Prepare::Pipeline("canonicalize".into())),
        executor(),
    )
    .unwrap();
    assert_eq!(t.model().op_count(), float.op_count());
    let e = Trainer::new(
        &float,
        cfg(Prepare::Pipeline("no-such-pass".into())),
        executor(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.starts_with("unknown pass 'no-such-pass'"), "{e}");
    // Preparing by scheme needs the prepare-qat pipeline; without it the error says so,
    // with it the model gets fake quantization.
    match (
        passes::named("prepare-qat"),
        Trainer::new(
            &float,
            cfg(Prepare::Scheme("tflite-int8".into())),
            executor(),
        ),
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

/// The digits MLP prepared with the `lsq` preset.
fn lsq_model() -> qir::Graph {
    let mut g = common::model("digits_mlp.qir");
    prepare_model(&mut g, &Prepare::Scheme("lsq".into())).unwrap();
    g
}

#[test]
fn calibration_initializes_learned_scales_from_data() {
    let g = lsq_model();
    assert!(find_observers(&g).unwrap().is_empty());
    let sites = find_learned(&g).unwrap();
    assert_eq!(sites.len(), 5);
    assert!(sites.iter().all(|s| s.is_learned()));
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
    assert!(report.sites.is_empty());
    assert_eq!(
        report.headlines(),
        ["initialized 8 learned quantization parameter(s) (LSQ) on 4 batch(es)"]
    );
    let names: Vec<&str> = report.learned.iter().map(|l| l.param.as_str()).collect();
    assert_eq!(
        names,
        [
            "x.scale",
            "x.zp",
            "fc1.w.scale",
            "fc2.w.scale",
            "relu1.scale",
            "relu1.zp",
            "logits.scale",
            "logits.zp"
        ]
    );
    // LSQ+ on the input: pixels in [0, 1] over int8 [-128, 127] give s = 1/255 and zero
    // point -128 (the op's default backward rounds the zero point as its forward does).
    assert_eq!(f32s(&store, "x.scale"), [(1.0f64 / 255.0) as f32]);
    assert_eq!(f32s(&store, "x.zp"), [-128.0]);
    assert_eq!(report.learned[1].summary(), "%x.zp = -128");
    // LSQ on the weights, per output channel: 2 * mean(|w|) / sqrt(127).
    let w = f32s(&store, "fc1.w");
    let ws = f32s(&store, "fc1.w.scale");
    for r in 0..32 {
        let mean = w[r * 64..(r + 1) * 64]
            .iter()
            .map(|v| v.abs() as f64)
            .sum::<f64>()
            / 64.0;
        let want = (2.0 * mean / 127f64.sqrt()) as f32;
        assert!(
            (ws[r] - want).abs() <= want * 1e-6,
            "row {r}: {} vs {want}",
            ws[r]
        );
    }
    // The activations' range is that of the float model over all four batches (fake
    // quantization bypassed): relu1 in [0, max] gives s = max / 255.
    let float = common::model("digits_mlp.qir");
    let mut fstore = qir_interp::Store::new();
    for n in ["fc1.w", "fc1.b", "fc2.w", "fc2.b"] {
        fstore.insert(n, store.get(n).unwrap().clone());
    }
    let relu = float.find("relu1").unwrap();
    let mut per_batch = Vec::new();
    for b in &bs {
        let opts = qir_interp::RunOptions {
            apply_updates: false,
            ..Default::default()
        };
        let r = qir_interp::run(&float, &mut fstore, b, &opts).unwrap();
        let v = r.values[&relu].as_f32().unwrap();
        per_batch.push(v.iter().copied().fold(0.0f32, f32::max));
    }
    let mx = per_batch.iter().copied().fold(0.0f32, f32::max);
    assert_ne!(per_batch[0], mx, "the batches differ: all four count");
    assert_eq!(f32s(&store, "relu1.scale"), [(mx as f64 / 255.0) as f32]);
    assert_eq!(f32s(&store, "relu1.zp"), [-128.0]);
    // Logits take both signs: the zero point is an integer strictly inside the grid.
    let z = f32s(&store, "logits.zp")[0];
    assert_eq!(z.fract(), 0.0, "{z}");
    assert!(-128.0 < z && z < 127.0, "{z}");
}

#[test]
fn lsq_preset_trains_to_float_accuracy() {
    // Prepared by the trainer, calibrated (LSQ initialization) before the first epoch,
    // trained with the defaults (10 epochs, SGD with momentum, cosine): 98.33%, as
    // tflite-int8 with the same settings.
    let data = common::digits();
    let float = common::model("digits_mlp.qir");
    let qat = qat_setup(
        &float,
        Some(Prepare::Scheme("lsq".into())),
        Some(CalibrationSetup {
            config: CalibrationConfig::default(),
            batches: 8,
        }),
    )
    .unwrap();
    let cfg = TrainConfig {
        qat,
        ..TrainConfig::default()
    };
    let mut calibrated = Vec::new();
    let mut on_cal = CalibrationLog(&mut calibrated, 0);
    let mut t = Trainer::new(&float, cfg, executor()).unwrap();
    let s = t.fit(&data, &mut [&mut on_cal]).unwrap();
    let acc = s.final_accuracy().unwrap();
    assert!(acc > 0.97, "LSQ accuracy {acc}: {:?}", s.epochs);
    assert_eq!(
        calibrated,
        [(0, 8)],
        "one calibration report, before any epoch"
    );
    // The learned scales moved during training and stayed positive.
    let x_scale = f32s(t.store(), "x.scale")[0];
    assert!(
        x_scale > 0.0 && x_scale != (1.0f64 / 255.0) as f32,
        "{x_scale}"
    );
    assert!(f32s(t.store(), "fc1.w.scale").iter().all(|&s| s > 0.0));
}

/// Records (epochs seen so far, learned params initialized) at each calibration report.
struct CalibrationLog<'a>(&'a mut Vec<(usize, usize)>, usize);

impl runtime::metrics::Monitor for CalibrationLog<'_> {
    fn on_epoch(&mut self, _: &runtime::metrics::EpochMetrics) -> runtime::Result<()> {
        self.1 += 1;
        Ok(())
    }
    fn on_calibration(
        &mut self,
        report: &runtime::calibrate::CalibrationReport,
    ) -> runtime::Result<()> {
        self.0.push((self.1, report.learned.len()));
        Ok(())
    }
}

/// Records the batch-norm running variance after every step.
struct BnVar(Rc<RefCell<Vec<Vec<f32>>>>);

impl Hook for BnVar {
    fn after_step(&mut self, ctx: &mut HookCtx<'_>) -> runtime::Result<()> {
        let v = ctx.store.get("bn.var").unwrap().as_f32().unwrap().to_vec();
        self.0.borrow_mut().push(v);
        Ok(())
    }
}

/// The step after which the recorded statistics stop moving (they move at every step
/// before it).
fn frozen_after(seen: &[Vec<f32>]) -> usize {
    let last_move = (1..seen.len()).rev().find(|&i| seen[i] != seen[i - 1]);
    let n = last_move.map_or(0, |i| i + 1);
    assert!(
        (1..n).all(|i| seen[i] != seen[i - 1]),
        "the statistics stood still before step {n}"
    );
    n
}

#[test]
fn the_scheme_freezes_batch_norm_and_the_config_overrides_it() {
    // testdata/schemes/freeze-after-20.toml freezes batch-norm statistics after 20
    // steps: fold-batchnorm-qat notes it in the prepared graph and the trainer adds the
    // FreezeBatchNorm hook by itself; `freeze_bn_after` in the configuration wins.
    let data = common::digits();
    let scheme = common::repo().join("testdata/schemes/freeze-after-20.toml");
    let cnn = common::local_model("digits_cnn.qir");
    let run = |freeze_bn_after: Option<u64>| {
        let cfg = TrainConfig {
            epochs: 1,
            max_train_batches: Some(30),
            freeze_bn_after,
            qat: Some(QatSetup {
                prepare: Some(Prepare::Scheme(scheme.display().to_string())),
                calibration: None,
            }),
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(&cnn, cfg, executor()).unwrap();
        let seen = Rc::new(RefCell::new(Vec::new()));
        t.add_hook(Box::new(BnVar(seen.clone())));
        t.fit(&data, &mut []).unwrap();
        let seen = seen.borrow().clone();
        assert_eq!(seen.len(), 30);
        let updates_bn = t
            .step_graph()
            .updates()
            .iter()
            .any(|u| t.step_graph().node(u.target).name.as_deref() == Some("bn.var"));
        (t.freeze_bn_after(), frozen_after(&seen), updates_bn)
    };
    assert_eq!(run(None), (Some(20), 20, false));
    assert_eq!(run(Some(5)), (Some(5), 5, false));
    // Without the note (and no setting) the statistics move at every step.
    let cfg = TrainConfig {
        epochs: 1,
        max_train_batches: Some(30),
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(&cnn, cfg, executor()).unwrap();
    assert_eq!(t.freeze_bn_after(), None);
    let seen = Rc::new(RefCell::new(Vec::new()));
    t.add_hook(Box::new(BnVar(seen.clone())));
    t.fit(&data, &mut []).unwrap();
    assert_eq!(frozen_after(&seen.borrow()), 30);
}

/// The trainer trains exactly the graph `qatc opt --pipeline train-step{...}` prints: the
/// named pipeline with the scheme and the trainer's grad options as parameters.
#[test]
fn the_trainer_trains_the_graph_the_train_step_pipeline_prints() {
    let float = common::model("mnist_cnn.qir");
    for (optimizer, scheme) in [
        (runtime::train::OptimizerKind::Momentum, "tflite-int8"),
        (runtime::train::OptimizerKind::Adam, "lsq"),
    ] {
        let cfg = TrainConfig {
            optimizer,
            qat: Some(QatSetup {
                prepare: Some(Prepare::Scheme(scheme.into())),
                calibration: None,
            }),
            ..TrainConfig::default()
        };
        let t = Trainer::new(&float, cfg.clone(), executor()).unwrap();
        let grad_spec = runtime::train::step_pipeline(&cfg.grad_options()).passes[0].clone();
        let mut params = vec![("scheme", passes::OptValue::Scalar(scheme.into()))];
        params.extend(
            grad_spec
                .options
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone())),
        );
        let pipeline = passes::named_with("train-step", &params).unwrap();
        let mut g = float.clone();
        passes::PassManager::from_pipeline(&pipeline)
            .unwrap()
            .run(&mut g)
            .unwrap();
        assert_eq!(
            qir::print::print(t.step_graph()),
            qir::print::print(&g),
            "{scheme} with {optimizer:?}"
        );
    }
}
