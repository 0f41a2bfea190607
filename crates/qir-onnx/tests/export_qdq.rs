//! The fake-quant (prepared) model exported as QDQ ONNX computes in onnxruntime what qatc's
//! interpreter computes on the same graph. The graph is an MLP as `prepare` shapes it:
//! per-channel symmetric weights in [-127, 127] (a range narrower than int8, so the export
//! adds its clamp), affine per-tensor activations in [-128, 127] and an unsigned [0, 255]
//! output, observers with running ranges wide enough for the test batch (so that the
//! interpreter's observers, which also see the batch, keep exactly the frozen range).
//!
//! qatc's `fake_quant` multiplies by the f32 inverse of the scale (as PyTorch does),
//! QuantizeLinear divides by the scale: the two roundings can differ where `x / s` lies
//! within an f32 rounding of a half-integer, which moves a value by one quantization step.
//! So each output element must agree within one step of the output's scale, and nearly
//! all exactly.
//!
//! Needs `QATC_PYTHON` (see `common::python`); skipped without it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;

use common::builder::uniform;
use qir::Tensor;
use qir_interp::{Precision, RunOptions, Store};

const GRAPH: &str = "\
graph @qmlp {
  input %x: f32[B, 8]
  param %w1: f32[6, 8] = external
  param %b1: f32[6] = external
  param %w2: f32[3, 6] = external
  state %w1.min: f32[6] = external
  state %w1.max: f32[6] = external
  state %x.min: f32[] = [-2.5]
  state %x.max: f32[] = [3.0]
  state %h.min: f32[] = [-1.0]
  state %h.max: f32[] = [8.0]
  state %y.min: f32[] = [-8.0]
  state %y.max: f32[] = [8.0]

  %wmn = observe_min(%w1, %w1.min) {axis = 0} : f32[6]
  %wmx = observe_max(%w1, %w1.max) {axis = 0} : f32[6]
  %ws = qparams_scale(%wmn, %wmx) {qmin = -127, qmax = 127, symmetric = true} : f32[6]
  %wz = qparams_zero_point(%wmn, %wmx) {qmin = -127, qmax = 127, symmetric = true} : i32[6]
  %wq = fake_quant(%w1, %ws, %wz) {qmin = -127, qmax = 127, axis = 0} : f32[6, 8]
  %xmn = observe_min(%x, %x.min) : f32[]
  %xmx = observe_max(%x, %x.max) : f32[]
  %xs = qparams_scale(%xmn, %xmx) {qmin = -128, qmax = 127} : f32[]
  %xz = qparams_zero_point(%xmn, %xmx) {qmin = -128, qmax = 127} : i32[]
  %xq = fake_quant(%x, %xs, %xz) {qmin = -128, qmax = 127} : f32[B, 8]
  %h0 = linear(%xq, %wq, %b1) : f32[B, 6]
  %h = relu(%h0) : f32[B, 6]
  %hmn = observe_min(%h, %h.min) : f32[]
  %hmx = observe_max(%h, %h.max) : f32[]
  %hs = qparams_scale(%hmn, %hmx) {qmin = -128, qmax = 127} : f32[]
  %hz = qparams_zero_point(%hmn, %hmx) {qmin = -128, qmax = 127} : i32[]
  %hq = fake_quant(%h, %hs, %hz) {qmin = -128, qmax = 127} : f32[B, 6]
  %y0 = matmul(%hq, %w2) {transpose_b = true} : f32[B, 3]
  %ymn = observe_min(%y0, %y.min) : f32[]
  %ymx = observe_max(%y0, %y.max) : f32[]
  %ys = qparams_scale(%ymn, %ymx) {qmin = 0, qmax = 255} : f32[]
  %yz = qparams_zero_point(%ymn, %ymx) {qmin = 0, qmax = 255} : i32[]
  %y = fake_quant(%y0, %ys, %yz) {qmin = 0, qmax = 255} : f32[B, 3]

  output y = %y
}
";

fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::f32(shape.to_vec(), v).unwrap()
}

#[test]
fn fake_quant_model_matches_onnxruntime() {
    let Some(py) = common::python() else { return };
    let g = qir_reader::parse_and_verify(GRAPH).unwrap();
    let w1 = uniform(1, 48, 0.6);
    let (mut mn, mut mx) = (vec![0f32; 6], vec![0f32; 6]);
    for c in 0..6 {
        let row = &w1[c * 8..c * 8 + 8];
        mn[c] = row.iter().copied().fold(f32::INFINITY, f32::min);
        mx[c] = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    }
    let weights: BTreeMap<String, Tensor> = [
        ("w1", t(&[6, 8], w1)),
        ("b1", t(&[6], uniform(2, 6, 0.3))),
        ("w2", t(&[3, 6], uniform(3, 18, 0.5))),
        ("w1.min", t(&[6], mn)),
        ("w1.max", t(&[6], mx)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let batch = 64;
    let x = t(&[batch, 8], uniform(4, batch * 8, 2.5));

    let mut store: Store = weights.clone().into_iter().collect();
    qir_interp::fill_store(&g, &mut store, 0).unwrap();
    let inputs: HashMap<String, Tensor> = [("x".to_string(), x.clone())].into();
    let opts = RunOptions {
        precision: Precision::F32,
        apply_updates: false,
    };
    let ours = qir_interp::run(&g, &mut store, &inputs, &opts)
        .unwrap()
        .outputs;
    let ours = ours["y"].as_f32().unwrap().to_vec();

    let model = qir_onnx::export(&g, &weights).unwrap();
    let ops: Vec<&str> = model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type())
        .collect();
    assert_eq!(
        ops.iter().filter(|o| **o == "QuantizeLinear").count(),
        4,
        "{ops:?}"
    );
    assert_eq!(
        ops.iter().filter(|o| **o == "DequantizeLinear").count(),
        4,
        "{ops:?}"
    );
    // the weights' [-127, 127] is narrower than int8: one clamp
    assert_eq!(ops.iter().filter(|o| **o == "Max").count(), 1, "{ops:?}");

    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("qmlp.onnx");
    std::fs::write(&onnx, prost::Message::encode_to_vec(&model)).unwrap();
    let (inp, outp) = (dir.path().join("in.npz"), dir.path().join("out.npz"));
    runtime::io::write_npz(&inp, [("x", &x)]).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run_ort.py");
    let out = Command::new(&py)
        .arg(script)
        .arg(&onnx)
        .arg(&inp)
        .arg(&outp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ort = runtime::io::read_npz(&outp).unwrap();
    let ort = ort["y"].as_f32().unwrap().to_vec();

    // the output's scale: y observed in [-8, 8] on [0, 255]
    let step = 16f32 / 255.0;
    assert_eq!(ours.len(), ort.len());
    let mut exact = 0;
    for (i, (a, b)) in ours.iter().zip(&ort).enumerate() {
        // as quantized integers (both are (q - zp) * step for an integer q)
        let (qa, qb) = ((a / step).round() as i64, (b / step).round() as i64);
        assert!((qa - qb).abs() <= 1, "y[{i}]: {a} vs onnxruntime {b}");
        exact += (a == b) as usize;
    }
    eprintln!(
        "{exact} of {} outputs identical, the rest one step apart",
        ours.len()
    );
    assert!(
        exact * 100 >= ours.len() * 98,
        "only {exact} of {} identical",
        ours.len()
    );
    // and a range was actually used: the outputs are not all one value
    assert!(ours.iter().any(|&v| v != ours[0]));
}
