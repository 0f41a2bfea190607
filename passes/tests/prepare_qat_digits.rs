//! Quantization-aware training reaches float accuracy within one point: the same model,
//! seed and schedule trained in float and with QAT (`prepare-qat` → calibrate 4 batches →
//! grad → train), both with the reference interpreter through the runtime's trainer,
//! evaluated on the 360 held-out images of `testdata/digits/` (the QAT model in eval
//! mode: observers frozen, fake-quant on, so its accuracy is the simulated int8 model's).
//! The digits MLP with `tflite-int8`, and the depthwise-separable model (batch-norm,
//! relu6, depthwise conv) with both batch-norm modes, simulated folding and unfolded.

mod prepare_common;

use passes::scheme::{Learned, Scheme};
use prepare_common::{executor, model, repo_root};
use runtime::calibrate::CalibrationConfig;
use runtime::data::Dataset;
use runtime::train::{CalibrationSetup, OptimizerKind, Prepare, QatSetup, TrainConfig, Trainer};

fn config(qat: Option<&str>) -> TrainConfig {
    TrainConfig {
        epochs: 4,
        seed: 1,
        qat: qat.map(qat_setup),
        ..TrainConfig::default()
    }
}

fn qat_setup(scheme: &str) -> QatSetup {
    QatSetup {
        prepare: Some(Prepare::Scheme(scheme.to_string())),
        calibration: Some(CalibrationSetup {
            config: CalibrationConfig::default(),
            batches: 4,
        }),
    }
}

fn train(data: &Dataset, qat: Option<&str>) -> (f64, Trainer) {
    train_with(data, "digits_mlp", config(qat))
}

fn train_with(data: &Dataset, m: &str, cfg: TrainConfig) -> (f64, Trainer) {
    let mut t = Trainer::new(&model(m), cfg, executor()).unwrap_or_else(|e| panic!("{e}"));
    let s = t.fit(data, &mut []).unwrap_or_else(|e| panic!("{e}"));
    (s.final_accuracy().unwrap(), t)
}

#[test]
fn qat_of_the_digits_mlp_reaches_float_accuracy() {
    let dir = repo_root().join("testdata/digits");
    let data = Dataset::load(&dir)
        .unwrap_or_else(|e| panic!("the digits data set ({}): {e}", dir.display()));
    assert_eq!((data.train.len(), data.test.len()), (1437, 360));
    let (float, _) = train(&data, None);
    let (qat, t) = train(&data, Some("tflite-int8"));
    println!(
        "digits MLP, 4 epochs: float {:.2}%, QAT tflite-int8 {:.2}%",
        float * 100.0,
        qat * 100.0
    );
    assert!(float > 0.90, "float accuracy {float}");
    assert!(
        qat >= float - 0.01,
        "QAT accuracy {qat} is more than 1 point below float {float}"
    );
    // The trained QAT model holds calibrated, trained ranges: the input's is [0, 1].
    let x_max = t.store().get("x.max").unwrap().as_f32().unwrap()[0];
    assert_eq!(x_max, 1.0);
    assert!(t.model().op_count() > model("digits_mlp").op_count());
}

#[test]
fn qat_with_batch_norm_in_both_modes_reaches_float_accuracy() {
    // From scratch the activation ranges grow, so the scheme observes them with running
    // min-max (passes/schemes/tflite-int8-minmax.toml explains why EMA 0.01 lags here).
    let data = Dataset::load(&repo_root().join("testdata/digits")).unwrap();
    let cfg = |qat: Option<QatSetup>| TrainConfig {
        epochs: 10,
        seed: 1,
        optimizer: OptimizerKind::Adam,
        lr: 0.01,
        qat,
        ..TrainConfig::default()
    };
    let minmax = repo_root().join("passes/schemes/tflite-int8-minmax.toml");
    let unfolded = repo_root().join("testdata/schemes/unfolded-minmax.toml");
    let (float, _) = train_with(&data, "depthwise", cfg(None));
    assert!(float > 0.90, "float accuracy {float}");
    for (mode, scheme) in [("simulated", &minmax), ("unfolded", &unfolded)] {
        let setup = qat_setup(&scheme.display().to_string());
        let (qat, t) = train_with(&data, "depthwise", cfg(Some(setup)));
        println!(
            "depthwise, 10 epochs: float {:.2}%, QAT with {mode} batch-norm {:.2}%",
            float * 100.0,
            qat * 100.0
        );
        assert!(
            qat >= float - 0.01,
            "{mode}: QAT accuracy {qat} is more than 1 point below float {float}"
        );
        let folded = t.model().find("stem.w.folded").is_some();
        assert_eq!(folded, mode == "simulated");
    }
}

/// Records batch-norm running statistics after every step.
struct Stats(std::rc::Rc<std::cell::RefCell<Vec<Vec<f32>>>>);

impl runtime::hooks::Hook for Stats {
    fn after_step(&mut self, ctx: &mut runtime::hooks::HookCtx<'_>) -> runtime::Result<()> {
        let v = ctx
            .store
            .get("stem.bn.var")
            .unwrap()
            .as_f32()
            .unwrap()
            .to_vec();
        self.0.borrow_mut().push(v);
        Ok(())
    }
}

#[test]
fn the_freeze_note_drives_the_trainers_batch_norm_freeze() {
    // The scheme freezes batch-norm statistics after 20 steps; fold-batchnorm-qat notes it
    // in the prepared graph, and the trainer's FreezeBatchNorm hook reads it from there.
    let data = Dataset::load(&repo_root().join("testdata/digits")).unwrap();
    let scheme = repo_root().join("testdata/schemes/freeze-after-20.toml");
    let cfg = TrainConfig {
        epochs: 1,
        max_train_batches: Some(30),
        seed: 1,
        qat: Some(qat_setup(&scheme.display().to_string())),
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(&model("depthwise"), cfg, executor()).unwrap();
    let steps = passes::scheme::freeze_bn_after(t.model()).unwrap();
    assert_eq!(steps, 20);
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    t.add_hook(Box::new(Stats(seen.clone())));
    t.add_hook(Box::new(runtime::hooks::FreezeBatchNorm {
        after_steps: steps,
    }));
    t.fit(&data, &mut []).unwrap();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 30);
    // The running variance moves until step 20, then stays where step 20 left it.
    assert_ne!(seen[18], seen[19]);
    assert!(
        seen[19..].iter().all(|v| *v == seen[19]),
        "{:?}",
        &seen[19..]
    );
}

#[test]
fn lsq_scales_train_from_a_data_init() {
    // LSQ: the scales are params; lsq::initialize sets them from one batch, and training
    // moves them (the grad pass gives them gradients).
    let float = model("digits_mlp");
    let g = prepare_common::prepare(&float, "lsq");
    assert_eq!(
        Scheme::preset("lsq").unwrap().activations.learned,
        Learned::LsqPlus
    );
    let dir = repo_root().join("testdata/digits");
    let data = Dataset::load(&dir).unwrap();
    let mut store = qir_interp::init_store(&g, 0).unwrap();
    let feed = runtime::data::Feed::for_graph(&g, data.train.example_dims()).unwrap();
    let batch = feed
        .batches(&data.train, (0..64).collect(), 64, 1.0 / 16.0)
        .next()
        .unwrap()
        .unwrap();
    let opts = qir_interp::RunOptions {
        apply_updates: false,
        ..Default::default()
    };
    let r = qir_interp::run(&g, &mut store, &batch.inputs, &opts).unwrap();
    let init = passes::scheme::lsq::initialize(&g, &|id| r.values.get(&id).cloned()).unwrap();
    let names: Vec<&str> = init.iter().map(|(n, _)| n.as_str()).collect();
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
    let get = |n: &str| {
        init.iter()
            .find(|(k, _)| k == n)
            .unwrap()
            .1
            .as_f32()
            .unwrap()
            .to_vec()
    };
    // The input is in [0, 1]: LSQ+ takes the affine range, s = 1 / 255, z = -128.
    assert_eq!(get("x.scale"), [1.0 / 255.0]);
    assert_eq!(get("x.zp"), [-128.0]);
    // Weights: 2 * mean|w| / sqrt(127) per output channel.
    let w = store.get("fc1.w").unwrap().as_f32().unwrap().to_vec();
    let mean0 = w[..64].iter().map(|v| v.abs() as f64).sum::<f64>() / 64.0;
    let s0 = get("fc1.w.scale")[0] as f64;
    assert!((s0 - 2.0 * mean0 / 127f64.sqrt()).abs() < 1e-7, "{s0}");
}
