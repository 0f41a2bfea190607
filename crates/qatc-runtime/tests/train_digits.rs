//! Float training of the digits models with the interpreter: accuracy, checkpoints,
//! divergence, batch-norm freezing.

mod common;
use common::executor;

use runtime::RuntimeError;
use runtime::executor::eval_graph;
use runtime::hooks::{FreezeBatchNorm, Hook, HookCtx};
use runtime::io::weights::{Require, read_safetensors, store_from_file};
use runtime::metrics::EpochMetrics;
use runtime::train::{OptimizerKind, TrainConfig, Trainer};

#[test]
fn digits_mlp_trains_above_90_percent() {
    let data = common::digits();
    assert_eq!((data.train.len(), data.test.len()), (1437, 360));
    let cfg = TrainConfig {
        epochs: 3,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&common::model("digits_mlp.qir"), cfg, executor()).unwrap();
    let mut lines: Vec<EpochMetrics> = Vec::new();
    let mut mon = |m: &EpochMetrics| lines.push(m.clone());
    let summary = trainer.fit(&data, &mut [&mut mon]).unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines, summary.epochs);
    let acc = summary.final_accuracy().unwrap();
    assert!(acc > 0.90, "test accuracy {acc}");
    assert!(lines[2].train_loss < lines[0].train_loss, "{lines:?}");
    assert!(
        lines.iter().all(|m| m.steps == 45),
        "1437 examples in batches of 32"
    );
    assert_eq!(trainer.global_step(), 135);
}

#[test]
fn same_seed_same_run() {
    let data = common::digits();
    let cfg = TrainConfig {
        epochs: 1,
        max_train_batches: Some(10),
        optimizer: OptimizerKind::Adam,
        lr: 0.01,
        seed: 7,
        ..TrainConfig::default()
    };
    let model = common::model("digits_mlp.qir");
    let run = || {
        let mut t = Trainer::new(&model, cfg.clone(), executor()).unwrap();
        let s = t.fit(&data, &mut []).unwrap();
        (s.epochs[0].train_loss, t.store().clone())
    };
    let (l1, s1) = run();
    let (l2, s2) = run();
    assert_eq!(l1, l2);
    assert_eq!(s1, s2);
    assert!(
        s1.get("fc1.w.adam_m").is_some(),
        "adam state is in the store"
    );
}

#[test]
fn checkpoint_round_trip_gives_the_same_accuracy() {
    let data = common::digits();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("digits.safetensors");
    let model = common::model("digits_mlp.qir");
    let cfg = TrainConfig {
        epochs: 1,
        checkpoint: Some(ckpt.clone()),
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&model, cfg.clone(), executor()).unwrap();
    let summary = trainer.fit(&data, &mut []).unwrap();
    let acc = summary.final_accuracy().unwrap();
    assert!(acc > 0.8, "{acc}");

    // The checkpoint holds params and optimizer state, with metadata.
    let file = read_safetensors(&ckpt).unwrap();
    let mut names: Vec<&str> = file.tensors.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "fc1.b",
            "fc1.b.momentum",
            "fc1.w",
            "fc1.w.momentum",
            "fc2.b",
            "fc2.b.momentum",
            "fc2.w",
            "fc2.w.momentum"
        ]
    );
    assert_eq!(file.metadata["epoch"], "1");
    assert_eq!(file.metadata["graph"], "digits_mlp");

    // A fresh trainer with another seed, loaded from the checkpoint, evaluates the same.
    let mut other = Trainer::new(&model, TrainConfig { seed: 99, ..cfg }, executor()).unwrap();
    let before = other.evaluate(&data.test).unwrap().accuracy();
    other.load_checkpoint(&ckpt).unwrap();
    let ev = other.evaluate(&data.test).unwrap();
    assert_eq!(ev.accuracy(), acc);
    assert_eq!(ev.examples, 360);
    assert_ne!(before, acc, "the loaded weights are what is evaluated");

    // The weights alone, through the library entry used by `qatc eval`.
    let mut store = store_from_file(&model, &file, Require::ParamsAndState, 5).unwrap();
    let feed = runtime::data::Feed::for_graph(&model, data.test.example_dims()).unwrap();
    let mut prog = executor()
        .prepare(&eval_graph(&model).unwrap(), &[])
        .unwrap();
    let ev2 = runtime::eval::evaluate(
        prog.as_mut(),
        &mut store,
        &data.test,
        &feed,
        1.0 / 16.0,
        256,
    )
    .unwrap();
    assert_eq!(ev2.correct, ev.correct);
    assert_eq!(ev2.loss, ev.loss);

    // A checkpoint missing a param is refused, naming it.
    let mut partial = file.clone();
    partial.tensors.remove("fc2.b");
    let e = store_from_file(&model, &partial, Require::Params, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the weights have no tensor for param %fc2.b: f32[10]"
    );
    let p2 = dir.path().join("partial.safetensors");
    runtime::io::write_safetensors(
        &p2,
        partial.tensors.iter().map(|(k, v)| (k.as_str(), v)),
        &Default::default(),
    )
    .unwrap();
    let e = Trainer::new(&model, TrainConfig::default(), executor())
        .unwrap()
        .load_checkpoint(&p2)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("partial.safetensors: no tensor for param %fc2.b: f32[10]"),
        "{e}"
    );
}

#[test]
fn nan_loss_stops_training_naming_the_step() {
    let data = common::digits();
    let cfg = TrainConfig {
        epochs: 2,
        lr: 1e30,
        optimizer: OptimizerKind::Sgd,
        schedule: runtime::schedule::LrSchedule::Constant,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&common::model("digits_mlp.qir"), cfg, executor()).unwrap();
    let e = trainer.fit(&data, &mut []).unwrap_err();
    let RuntimeError::Diverged {
        epoch,
        step,
        global_step,
        value,
    } = e
    else {
        panic!("expected divergence, got {e}");
    };
    assert_eq!((epoch, step, global_step), (1, 2, 2));
    assert!(!value.is_finite());
    assert!(
        e.to_string().starts_with("training diverged: the loss is "),
        "{e}"
    );
    assert!(
        e.to_string().contains("at epoch 1, step 2 (global step 2)"),
        "{e}"
    );
    // The store keeps the last finite step: one update was applied.
    assert_eq!(trainer.global_step(), 1);
}

/// Records the batch-norm running mean after every step.
struct RecordMean(Vec<Vec<f32>>);

impl Hook for RecordMean {
    fn after_step(&mut self, ctx: &mut HookCtx<'_>) -> runtime::Result<()> {
        let t = ctx.store.get("bn.mean").unwrap();
        self.0.push(t.as_f32().unwrap().to_vec());
        Ok(())
    }
}

#[test]
fn cnn_on_image_shaped_input_and_batch_norm_freezing() {
    let data = common::digits();
    let cfg = TrainConfig {
        epochs: 1,
        schedule: runtime::schedule::LrSchedule::Constant,
        ..TrainConfig::default()
    };
    let mut trainer =
        Trainer::new(&common::local_model("digits_cnn.qir"), cfg, executor()).unwrap();
    assert!(qir::print::print(trainer.step_graph()).contains("batch_norm_train"));
    trainer.add_hook(Box::new(FreezeBatchNorm { after_steps: 30 }));
    let rec = std::rc::Rc::new(std::cell::RefCell::new(RecordMean(Vec::new())));
    struct Shared(std::rc::Rc<std::cell::RefCell<RecordMean>>);
    impl Hook for Shared {
        fn after_step(&mut self, ctx: &mut HookCtx<'_>) -> runtime::Result<()> {
            self.0.borrow_mut().after_step(ctx)
        }
    }
    trainer.add_hook(Box::new(Shared(rec.clone())));
    let s = trainer.fit(&data, &mut []).unwrap();
    assert!(s.final_accuracy().unwrap() > 0.8, "{:?}", s.epochs);
    let means = &rec.borrow().0;
    assert_eq!(means.len(), 45);
    // Running statistics move during the first 30 steps, and not after the freeze (the
    // step graph was rebuilt with eval-mode batch-norm after step 30).
    assert_ne!(means[28], means[29]);
    assert!(means[30..].iter().all(|m| *m == means[29]), "{means:?}");
    let text = qir::print::print(trainer.step_graph());
    assert!(!text.contains("batch_norm_train"), "{text}");
}
