//! Every model of `testdata/models/` prepared with every scheme preset (and the test
//! scheme files: skipped layers, mixed bit widths, unsigned activations, unfolded
//! batch-norm) converts to an integer-only model (`freeze-observers`, `bind-state`,
//! `convert-integer`, the same as the passes of the `convert` pipeline one by one): the
//! result verifies, holds no fake-quant or observer and no float layer but those a scheme
//! skips, round-trips through its text, and on random inputs (observer ranges and LSQ
//! steps from a min-max calibration) its logits agree with the fake-quant model's
//! evaluation: every logit within one step of the logits' grid, the argmax on at least 63
//! of 64 examples (measured: 64/64 everywhere, 0 or 1 LSB at most).

mod prepare_common;

use std::collections::{BTreeMap, HashMap};

use passes::scheme::PRESETS;
use prepare_common::{MODELS, model, prepare};
use qir::quant::Rounding;
use qir::{Dim, ElemType, Graph, Op, Tensor};
use qir_interp::{RunOptions, init_store, run};

/// A tiny deterministic generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn inputs(g: &Graph, batch: usize, rng: &mut Rng) -> HashMap<String, Tensor> {
    let x = g.find("x").expect("every model has an input %x");
    let dims: Vec<usize> = g
        .ty(x)
        .shape
        .dims()
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n as usize,
            Dim::Sym(_) => batch,
        })
        .collect();
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.next()).collect();
    let mut m = HashMap::from([("x".to_string(), Tensor::f32(dims, v).unwrap())]);
    if g.find("label").is_some() {
        m.insert(
            "label".into(),
            Tensor::new(vec![batch], qir::Data::I32(vec![0; batch])).unwrap(),
        );
    }
    m
}

/// The integer model of a prepared graph with the values of `store` bound. The passes of
/// the named pipeline `convert` run one by one (each result verified by the pass manager)
/// give the very same model as the pass `convert-integer`, which chains them.
fn convert(prepared: &Graph, store: &qir_interp::Store) -> Graph {
    let mut g = prepared.clone();
    passes::freeze_observers::freeze_observers(&mut g, &[]).unwrap();
    let tensors: BTreeMap<String, Tensor> = store
        .iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    passes::bind_state::bind_tensors(&mut g, &tensors).unwrap();
    let int = passes::convert_integer::convert_integer(&g, Rounding::HalfEven)
        .unwrap_or_else(|e| panic!("{e}\n{}", qir::print::print(&g)));
    // the pipeline after freeze-observers and bind-state (done above)
    let mut pipeline = passes::named("convert").unwrap();
    pipeline
        .passes
        .retain(|p| !matches!(p.name.as_str(), "freeze-observers" | "bind-state"));
    let mut chained = g.clone();
    passes::PassManager::from_pipeline(&pipeline)
        .unwrap()
        .run(&mut chained)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        qir::print::print(&chained),
        qir::print::print(&int),
        "the convert pipeline's passes and convert-integer differ"
    );
    int
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

/// Prepares model `m` with `scheme` (a preset or a scheme file), calibrates it (min-max
/// ranges, LSQ steps), converts it and compares the two on random inputs; a report line.
fn check(m: &str, scheme: &str, skipped: usize, rng: &mut Rng) -> String {
    let preset = scheme;
    let g = prepare(&model(m), scheme);
    let mut store = init_store(&g, 3).unwrap();
    let batches = vec![inputs(&g, 32, rng)];
    runtime::calibrate::calibrate(
        &g,
        &mut store,
        &batches,
        &runtime::calibrate::CalibrationConfig::default(),
        &qir_interp::Interpreter::default(),
    )
    .unwrap();
    let int = convert(&g, &store);
    let text = qir::print::print(&int);
    qir::verify::verify(&int).unwrap_or_else(|e| panic!("{m} {preset}: {e:?}\n{text}"));
    let back = qir_reader::parse_and_verify(&text)
        .unwrap_or_else(|d| panic!("{}", qir_reader::render(&d, m, &text)));
    assert_eq!(
        qir::print::print(&back),
        text,
        "{m} {preset}: no round trip"
    );
    let mut float_layers = 0;
    for id in int.node_ids() {
        let op = int.node(id).op();
        assert!(
            !matches!(
                op,
                Some(Op::FakeQuant | Op::FakeQuantLsq | Op::ObserveMin | Op::ObserveMax)
            ),
            "{m} {preset}: {op:?} left\n{text}"
        );
        if matches!(op, Some(Op::Linear | Op::Conv2d | Op::BatchNorm)) {
            float_layers += 1;
        }
    }
    // only the layers a scheme skips stay in float
    assert_eq!(float_layers, skipped, "{m} {preset}: float layers\n{text}");
    // the logits of the fake-quant evaluation and of the integer model
    let eval = runtime::executor::eval_graph(&g).unwrap();
    let x = inputs(&g, 64, rng);
    let fq = run(&eval, &mut store.clone(), &x, &RunOptions::default()).unwrap();
    let mut int_store = init_store(&int, 0).unwrap();
    let mut xi = x.clone();
    xi.remove("label");
    let iq = run(&int, &mut int_store, &xi, &RunOptions::default()).unwrap();
    let (a, b) = (
        fq.outputs["logits"].as_f32().unwrap(),
        iq.outputs["logits"].as_f32().unwrap(),
    );
    let deq = int.output("logits").unwrap();
    let q = int.operands(deq)[0];
    let ElemType::Quant(qt) = &int.ty(q).elem else {
        panic!("{m} {preset}: the logits are not dequantized")
    };
    let qir::QuantParams::PerTensor { scale, .. } = qt.params else {
        panic!("per-tensor logits")
    };
    let lsb: Vec<i64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) / scale).abs().round() as i64)
        .collect();
    let within1 = lsb.iter().filter(|&&d| d <= 1).count() as f64 / lsb.len() as f64;
    let agree = a
        .chunks(10)
        .zip(b.chunks(10))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    let mut distinct: Vec<u32> = a.iter().map(|v| v.to_bits()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() > 20,
        "{m} {preset}: degenerate logits, {} distinct values",
        distinct.len()
    );
    let max = *lsb.iter().max().unwrap();
    assert!(max <= 1, "{m} {preset}: logits differ by {max} LSB");
    assert!(agree >= 63, "{m} {preset}: argmax agrees on {agree}/64");
    format!(
        "{m:10} {preset} max {} LSB, within 1 LSB {:.1}%, argmax {agree}/64, {} distinct logits\n",
        lsb.iter().max().unwrap(),
        within1 * 100.0,
        distinct.len()
    )
}

#[test]
fn parity_every_model_with_every_preset_converts() {
    let mut rng = Rng(11);
    let mut report = String::new();
    for m in MODELS {
        for (preset, _) in PRESETS {
            report.push_str(&check(m, preset, 0, &mut rng));
        }
    }
    println!("{report}");
}

#[test]
fn parity_scheme_files_convert() {
    // the test schemes of passes/schemes/: skipped layers (kept in float), mixed 4/8-bit
    // weights, unsigned activations, unfolded batch-norm
    let mut rng = Rng(12);
    let mut report = String::new();
    let dir = prepare_common::repo_root().join("passes/schemes");
    for (m, file, skipped) in [
        ("mnist_mlp", "skip-fc2.toml", 1),
        // the skipped depthwise conv keeps its batch-norm: two float ops
        ("depthwise", "skip-depthwise.toml", 2),
        ("mnist_mlp", "w4a8-first-last-8bit.toml", 0),
        ("mnist_cnn", "uint8-minmax.toml", 0),
        ("mnist_cnn", "unfolded-bn-frozen.toml", 0),
        ("residual", "tflite-int8-minmax.toml", 0),
    ] {
        let path = dir.join(file).display().to_string();
        report.push_str(&check(m, &path, skipped, &mut rng));
    }
    println!("{report}");
}
