//! The loop the importer exists for: an ONNX model (the digits MLP and a conv-BN-ReLU CNN,
//! built as PyTorch exports them, with PyTorch's initialization) imported with a
//! cross-entropy loss, its weights loaded from the import, trained a few epochs on the
//! bundled digits set through `qatc-runtime` — float, and quantization-aware — to an
//! accuracy far above chance (10%).

mod common;

use std::path::PathBuf;

use qir_onnx::{ImportOptions, LossSpec, import};
use runtime::calibrate::{CalibrationConfig, HISTOGRAM_BINS, Method};
use runtime::data::Dataset;
use runtime::io::TensorFile;
use runtime::train::{CalibrationSetup, OptimizerKind, Prepare, TrainConfig, Trainer, qat_setup};

fn digits() -> Dataset {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/digits");
    Dataset::load(&dir).expect("testdata/digits")
}

fn train(onnx: &[u8], config: TrainConfig) -> f64 {
    let opts = ImportOptions {
        loss: Some(LossSpec::cross_entropy()),
        ..ImportOptions::default()
    };
    let imported = import(onnx, &opts).expect("import");
    let weights = TensorFile {
        tensors: imported.weights.clone(),
        metadata: Default::default(),
    };
    let mut trainer = Trainer::with_weights(
        &imported.graph,
        config,
        std::sync::Arc::new(qir_jit::Jit::default()),
        &weights,
    )
    .expect("trainer");
    // The imported weights are the starting point: the store holds them before training.
    for (name, t) in &imported.weights {
        assert_eq!(trainer.store().get(name), Some(t), "{name}");
    }
    let summary = trainer.fit(&digits(), &mut []).expect("training");
    let acc = summary.final_accuracy().unwrap();
    eprintln!("final test accuracy {:.2}%", acc * 100.0);
    acc
}

#[test]
fn an_imported_mlp_trains_on_digits() {
    let config = TrainConfig {
        epochs: 4,
        ..TrainConfig::default()
    };
    let acc = train(&common::builder::digits_mlp().bytes(), config);
    assert!(acc > 0.9, "test accuracy {acc}");
}

#[test]
fn an_imported_mlp_trains_quantization_aware() {
    let onnx = common::builder::digits_mlp().bytes();
    let opts = ImportOptions {
        loss: Some(LossSpec::cross_entropy()),
        ..ImportOptions::default()
    };
    let graph = import(&onnx, &opts).unwrap().graph;
    let calibration = CalibrationSetup {
        config: CalibrationConfig {
            method: Method::MinMax,
            bins: HISTOGRAM_BINS,
        },
        batches: 4,
    };
    let qat = qat_setup(
        &graph,
        Some(Prepare::Scheme("tflite-int8".into())),
        Some(calibration),
    )
    .expect("qat setup");
    assert!(qat.is_some());
    let config = TrainConfig {
        epochs: 4,
        qat,
        ..TrainConfig::default()
    };
    let acc = train(&onnx, config);
    assert!(acc > 0.85, "test accuracy {acc}");
}

#[test]
fn an_imported_conv_bn_relu_cnn_trains_on_digits() {
    let config = TrainConfig {
        epochs: 2,
        optimizer: OptimizerKind::Adam,
        lr: 0.01,
        ..TrainConfig::default()
    };
    let acc = train(&common::builder::digits_cnn().bytes(), config);
    assert!(acc > 0.85, "test accuracy {acc}");
}
