//! Quantization-aware training of the digits MLP with the `tflite-int8` scheme reaches
//! its float accuracy within one point: the same model, seed and schedule trained in
//! float and with QAT (`prepare-qat` → calibrate 4 batches → grad → train), both with the
//! reference interpreter through the runtime's trainer, evaluated on the 360 held-out
//! images of `testdata/digits/` (the QAT model in eval mode: observers frozen, fake-quant
//! on, so its accuracy is the simulated int8 model's).

mod prepare_common;

use passes::scheme::{Learned, Scheme};
use prepare_common::{model, repo_root};
use runtime::calibrate::CalibrationConfig;
use runtime::data::Dataset;
use runtime::train::{CalibrationSetup, Prepare, QatSetup, TrainConfig, Trainer};

fn config(qat: Option<&str>) -> TrainConfig {
    TrainConfig {
        epochs: 4,
        seed: 1,
        qat: qat.map(|scheme| QatSetup {
            prepare: Some(Prepare::Scheme(scheme.to_string())),
            calibration: Some(CalibrationSetup {
                config: CalibrationConfig::default(),
                batches: 4,
            }),
        }),
        ..TrainConfig::default()
    }
}

fn train(data: &Dataset, qat: Option<&str>) -> (f64, Trainer) {
    let mut t = Trainer::new(&model("digits_mlp"), config(qat)).unwrap_or_else(|e| panic!("{e}"));
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
