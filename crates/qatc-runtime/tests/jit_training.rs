//! Training with the JIT reaches the accuracy training with the interpreter reaches, on
//! the same seed: the digits MLP (float and QAT) and the MNIST MLP with QAT (one epoch of
//! the benchmark settings). The two executors sum in different orders, so the
//! trajectories are not bit-identical; the final accuracies must agree within 0.3 points.

mod common;

use runtime::data::Dataset;
use runtime::train::{CalibrationSetup, OptimizerKind, Prepare, TrainConfig, Trainer, qat_setup};

fn accuracy(model: &qir::Graph, data: &Dataset, cfg: &TrainConfig, jit: bool) -> f64 {
    let exec = if jit {
        common::jit()
    } else {
        common::executor()
    };
    let mut t = Trainer::new(model, cfg.clone(), exec).unwrap();
    t.fit(data, &mut []).unwrap().final_accuracy().unwrap()
}

fn qat(model: &qir::Graph, scheme: &str) -> Option<runtime::train::QatSetup> {
    qat_setup(
        model,
        Some(Prepare::Scheme(scheme.into())),
        Some(CalibrationSetup {
            config: Default::default(),
            batches: 8,
        }),
    )
    .unwrap()
}

#[test]
fn jit_trains_the_digits_mlp_like_the_interpreter() {
    let data = common::digits();
    let model = common::model("digits_mlp.qir");
    for scheme in [None, Some("tflite-int8")] {
        let cfg = TrainConfig {
            qat: scheme.and_then(|s| qat(&model, s)),
            ..TrainConfig::default()
        };
        let a = accuracy(&model, &data, &cfg, false);
        let b = accuracy(&model, &data, &cfg, true);
        assert!(a > 0.95, "{scheme:?}: interpreter accuracy {a}");
        assert!(
            (a - b).abs() <= 0.003,
            "{scheme:?}: interpreter {a}, jit {b}"
        );
    }
}

#[test]
fn jit_trains_mnist_like_the_interpreter() {
    let dir = common::repo().join("../shared/data/mnist");
    let data = Dataset::load(&dir).expect("the shared MNIST data");
    let model = common::model("mnist_mlp.qir");
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 128,
        optimizer: OptimizerKind::Adam,
        lr: 1e-4,
        qat: qat(&model, "tflite-int8"),
        ..TrainConfig::default()
    };
    let a = accuracy(&model, &data, &cfg, false);
    let b = accuracy(&model, &data, &cfg, true);
    assert!(a > 0.85, "interpreter accuracy {a}");
    assert!((a - b).abs() <= 0.003, "interpreter {a}, jit {b}");
}

/// Compiling the programs ahead (`Trainer::warm_up`, which `qatc train` calls while the data
/// loads) changes when the JIT compiles, nothing else: two epochs of QAT on the digits
/// give the same losses, accuracies and final tensors, bit for bit, with and without it.
#[test]
fn jit_warm_up_changes_nothing_but_when_it_compiles() {
    let data = common::digits();
    let model = common::model("digits_mlp.qir");
    let cfg = TrainConfig {
        epochs: 2,
        qat: qat(&model, "tflite-int8"),
        ..TrainConfig::default()
    };
    let run = |warm: bool| {
        let mut t = Trainer::new(&model, cfg.clone(), common::jit()).unwrap();
        if warm {
            t.warm_up();
        }
        let summary = t.fit(&data, &mut []).unwrap();
        let metrics: Vec<(f64, Option<f64>, f64)> = summary
            .epochs
            .iter()
            .map(|e| (e.train_loss, e.test_loss, e.test_accuracy))
            .collect();
        let mut tensors: Vec<(String, qir::Tensor)> = t
            .store()
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        (metrics, tensors)
    };
    let (cold, warm) = (run(false), run(true));
    assert_eq!(cold.0, warm.0);
    assert_eq!(cold.1, warm.1);
}
