//! Fake-quant ≡ INT8 parity end to end: the MNIST MLP and CNN trained for one epoch with
//! QAT (tflite-int8, on the JIT), converted to integer-only models (`convert` pipeline:
//! freeze-observers, bind-state, convert-integer, canonicalize), and both evaluated on the
//! full MNIST test set with the JIT. Reported (run with `--nocapture`): the float
//! accuracy (fake-quant disabled), the fake-quant and integer accuracies, the histogram
//! of logit differences in steps (LSB) of the logits' grid and the argmax agreement.
//! Asserted: the integer accuracy within 0.1 point of the fake-quant accuracy and the
//! argmax agreeing on at least 99.9% of the images. The digits MLP is the quick check.

mod common;

use std::collections::BTreeMap;

use qir::{ElemType, Graph, QuantParams, Tensor};
use runtime::data::{Dataset, Feed, PixelScale};
use runtime::executor::{Executor, eval_graph};
use runtime::train::{CalibrationSetup, Prepare, TrainConfig, Trainer, qat_setup};

/// Per-image logits of `g` on the test set (JIT).
fn logits(g: &Graph, store: &qir_exec::Store, data: &Dataset) -> (Vec<Vec<f32>>, Vec<usize>) {
    let feed = Feed::for_graph(g, data.test.example_dims()).unwrap();
    let scale = PixelScale::Auto.factor(data.train.max_pixel());
    let mut prog = qir_jit::Jit::default().prepare(g, &[]).unwrap();
    let mut store = store.clone();
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    let all: Vec<usize> = (0..data.test.len()).collect();
    for chunk in all.chunks(500) {
        let batch = feed.batch(&data.test, chunk, scale).unwrap();
        let out = prog.run(&mut store, &batch.inputs).unwrap();
        let t = &out.outputs["logits"];
        let classes = t.shape[1];
        rows.extend(t.as_f32().unwrap().chunks(classes).map(<[f32]>::to_vec));
        labels.extend(batch.labels);
    }
    (rows, labels)
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn accuracy(rows: &[Vec<f32>], labels: &[usize]) -> f64 {
    let ok = rows
        .iter()
        .zip(labels)
        .filter(|(r, l)| argmax(r) == **l)
        .count();
    ok as f64 / labels.len() as f64
}

/// Trains `model` (QAT, tflite-int8, one epoch on the JIT), converts it and compares.
fn parity(model: &str, data: &Dataset, max_batches: Option<usize>) -> String {
    let float = common::model(model);
    let qat = qat_setup(
        &float,
        Some(Prepare::Scheme("tflite-int8".into())),
        Some(CalibrationSetup {
            config: Default::default(),
            batches: 8,
        }),
    )
    .unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        max_train_batches: max_batches,
        qat,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(&float, cfg, common::jit()).unwrap();
    t.fit(data, &mut []).unwrap();
    let prepared = t.model().clone();
    let store = t.store().clone();

    // the three models: float (fake-quant disabled), fake-quant, integer
    let mut float_eval = eval_graph(&prepared).unwrap();
    passes::disable_fake_quant::disable_fake_quant(&mut float_eval, &[]).unwrap();
    let fq_eval = eval_graph(&prepared).unwrap();
    let mut int = prepared.clone();
    passes::freeze_observers::freeze_observers(&mut int, &[]).unwrap();
    let tensors: BTreeMap<String, Tensor> =
        runtime::io::weights::params_and_state(&prepared, &store)
            .into_iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect();
    passes::bind_state::bind_tensors(&mut int, &tensors).unwrap();
    let int =
        passes::convert_integer::convert_integer(&int, qir::quant::Rounding::HalfEven).unwrap();
    qir::verify::verify(&int).unwrap();
    let int_store = qir_exec::init_store(&int, 0).unwrap();

    let (fl, labels) = logits(&float_eval, &store, data);
    let (fq, _) = logits(&fq_eval, &store, data);
    let (iq, _) = logits(&int, &int_store, data);

    // the logits' grid
    let q = int.operands(int.output("logits").unwrap())[0];
    let ElemType::Quant(qt) = &int.ty(q).elem else {
        panic!("the logits are not dequantized")
    };
    let QuantParams::PerTensor { scale, .. } = qt.params else {
        panic!("per-tensor logits")
    };
    let mut hist = BTreeMap::<i64, usize>::new();
    for (a, b) in fq.iter().zip(&iq) {
        for (x, y) in a.iter().zip(b) {
            *hist.entry(((x - y) / scale).round() as i64).or_default() += 1;
        }
    }
    let agree = fq
        .iter()
        .zip(&iq)
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count() as f64
        / fq.len() as f64;
    let (acc_float, acc_fq, acc_int) = (
        accuracy(&fl, &labels),
        accuracy(&fq, &labels),
        accuracy(&iq, &labels),
    );
    let report = format!(
        "{model}: {} images, accuracy float {:.2}%, fake-quant {:.2}%, int8 {:.2}%; argmax agreement {:.3}%; logit difference (fake-quant - int8) in LSB: {hist:?}",
        labels.len(),
        acc_float * 100.0,
        acc_fq * 100.0,
        acc_int * 100.0,
        agree * 100.0
    );
    println!("{report}");
    assert!(
        (acc_int - acc_fq).abs() <= 0.001,
        "integer accuracy more than 0.1 point from fake-quant: {report}"
    );
    assert!(agree >= 0.999, "argmax agreement below 99.9%: {report}");
    // a conversion that loses the model would agree with nothing
    assert!(acc_fq > 0.5, "{report}");
    report
}

#[test]
fn parity_digits_mlp() {
    parity("digits_mlp.qir", &common::digits(), None);
}

#[test]
fn parity_mnist_mlp_and_cnn() {
    let data =
        Dataset::load(&common::repo().join("../shared/data/mnist")).expect("the shared MNIST data");
    parity("mnist_mlp.qir", &data, None);
    parity("mnist_cnn.qir", &data, None);
}
