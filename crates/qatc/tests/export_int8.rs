//! Converted integer models exported as ONNX QDQ run in onnxruntime and agree with qatc's
//! integer model: the same argmax on every test image and every logit within one step of
//! the output's quantization scale (the two round at different places: QuantizeLinear
//! after f32 products, `requantize` on the exact product). And the whole loop on digits:
//! an ONNX MLP built with the onnx package, imported with a loss, trained with QAT,
//! converted and exported, classifies the test set in onnxruntime exactly as `qatc eval`
//! does on the integer model.
//!
//! Needs the Python environment (`QATC_PYTHON`, see `common::python`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Run, qatc_in, repo_root, testdata};
use qir::Tensor;

fn ok(run: &Run) {
    assert_eq!(run.code, Some(0), "{}", run.all());
}

/// Runs `model` in onnxruntime on `x.npy`, writing `out.npy` (the first output).
const ORT: &str = "
import sys, numpy as np, onnxruntime as ort
model, x, out = sys.argv[1:4]
s = ort.InferenceSession(model, providers=['CPUExecutionProvider'])
np.save(out, s.run(None, {s.get_inputs()[0].name: np.load(x)})[0])
";

fn onnxruntime(py: &Path, d: &Path, model: &str, x: &str, out: &str) {
    let o = Command::new(py)
        .current_dir(d)
        .args(["-c", ORT, model, x, out])
        .output()
        .expect("python runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn read_npy(path: &Path) -> Tensor {
    runtime::io::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first `n` test images of `data` as f32 `[n, dims...]` scaled by `1 / scale`.
fn images(data: &Path, n: usize, dims: &[usize], scale: f32) -> Tensor {
    let set = runtime::data::Dataset::load(data).unwrap().test;
    let n = n.min(set.len());
    let v: Vec<f32> = (0..n)
        .flat_map(|i| set.pixels(i).unwrap().iter().map(|&p| p as f32 / scale))
        .collect();
    let mut shape = vec![n];
    shape.extend_from_slice(dims);
    Tensor::f32(shape, v).unwrap()
}

/// Logits as rows of f64.
fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    let c = *t.shape.last().unwrap();
    t.data.to_f64().chunks(c).map(|r| r.to_vec()).collect()
}

fn argmax(r: &[f64]) -> usize {
    (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b })
}

/// The scale of the integer model's dequantized output (`%logits = dequantize(%q)`).
fn output_scale(int8: &str) -> f64 {
    let line = int8
        .lines()
        .find(|l| l.contains("= requantize(") && l.contains("%logits"))
        .expect("the logits' requantize");
    let t = line.rsplit("!quant.uniform<").next().unwrap();
    let scale = t.split(", ").nth(1).unwrap().split(':').next().unwrap();
    scale.parse().unwrap()
}

struct Case {
    model: &'static str,
    data: PathBuf,
    dims: Vec<usize>,
    scale: f32,
    train: bool,
}

#[test]
fn exported_int8_models_agree_with_qatc_in_onnxruntime() {
    let Some(py) = common::python() else { return };
    let digits = testdata().join("digits");
    let mnist = repo_root().join("../shared/data/mnist");
    let cases = [
        Case {
            model: "digits_mlp",
            data: digits.clone(),
            dims: vec![64],
            scale: 16.0,
            train: true,
        },
        Case {
            model: "residual",
            data: digits.clone(),
            dims: vec![1, 8, 8],
            scale: 16.0,
            train: true,
        },
        Case {
            model: "depthwise",
            data: digits.clone(),
            dims: vec![1, 8, 8],
            scale: 16.0,
            train: true,
        },
        Case {
            model: "concat",
            data: digits.clone(),
            dims: vec![1, 8, 8],
            scale: 16.0,
            train: true,
        },
        Case {
            model: "mnist_cnn",
            data: mnist.clone(),
            dims: vec![1, 28, 28],
            scale: 255.0,
            train: false,
        },
        Case {
            model: "mnist_mlp",
            data: mnist.clone(),
            dims: vec![784],
            scale: 255.0,
            train: false,
        },
    ];
    for c in cases {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = testdata().join(format!("models/{}.qir", c.model));
        let (m, data) = (m.to_string_lossy(), c.data.to_string_lossy());
        // trained QAT weights (digits), or the seeded ones calibrated on MNIST
        if c.train {
            ok(&qatc_in(
                d,
                &[
                    "train",
                    &m,
                    "--data",
                    &data,
                    "--scheme",
                    "tflite-int8",
                    "--epochs",
                    "2",
                    "--no-progress",
                    "-o",
                    "w.st",
                ],
                None,
            ));
            ok(&qatc_in(
                d,
                &[
                    "convert",
                    &m,
                    "--scheme",
                    "tflite-int8",
                    "--weights",
                    "w.st",
                    "-o",
                    "m.int8.qir",
                ],
                None,
            ));
        } else {
            ok(&qatc_in(
                d,
                &["prepare", &m, "--scheme", "tflite-int8", "-o", "q.qir"],
                None,
            ));
            ok(&qatc_in(
                d,
                &[
                    "calibrate",
                    "q.qir",
                    "--data",
                    &data,
                    "--batches",
                    "4",
                    "-o",
                    "w.st",
                ],
                None,
            ));
            ok(&qatc_in(
                d,
                &["convert", "q.qir", "--weights", "w.st", "-o", "m.int8.qir"],
                None,
            ));
        }
        ok(&qatc_in(
            d,
            &[
                "export",
                "m.int8.qir",
                "--weights",
                "m.int8.safetensors",
                "-o",
                "m.int8.onnx",
            ],
            None,
        ));
        let x = images(&c.data, 300, &c.dims, c.scale);
        runtime::io::write_npy(&d.join("x.npy"), &x).unwrap();
        ok(&qatc_in(
            d,
            &[
                "run",
                "m.int8.qir",
                "--weights",
                "m.int8.safetensors",
                "-i",
                "x=x.npy",
                "-o",
                "qatc.npz",
            ],
            None,
        ));
        onnxruntime(&py, d, "m.int8.onnx", "x.npy", "ort.npy");
        let qatc = runtime::io::read_npz(&d.join("qatc.npz")).unwrap();
        let (_, qatc) = qatc.iter().next().expect("one output");
        let (a, b) = (rows(qatc), rows(&read_npy(&d.join("ort.npy"))));
        assert_eq!(a.len(), b.len());
        let step = output_scale(&std::fs::read_to_string(d.join("m.int8.qir")).unwrap());
        let (mut worst, mut differ) = (0.0f64, 0usize);
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert_eq!(
                argmax(p),
                argmax(q),
                "{}: image {i}: {p:?} vs {q:?}",
                c.model
            );
            for (u, v) in p.iter().zip(q) {
                let lsb = (u - v).abs() / step;
                worst = worst.max(lsb);
                differ += (lsb > 0.5) as usize;
            }
        }
        assert!(worst <= 1.0 + 1e-3, "{}: {worst} LSB", c.model);
        println!(
            "{}: {} images, argmax identical, {differ} of {} logits differ (at most {worst:.3} LSB)",
            c.model,
            a.len(),
            a.len() * a[0].len()
        );
    }
}

/// An MLP as PyTorch's exporter writes one (Gemm with transB, Relu), made with the onnx
/// package's helpers.
const MAKE_MLP: &str = "
import sys, numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto
rng = np.random.default_rng(1)
w1 = (rng.standard_normal((32, 64)) * 0.15).astype(np.float32)
b1 = np.zeros(32, np.float32)
w2 = (rng.standard_normal((10, 32)) * 0.2).astype(np.float32)
b2 = np.zeros(10, np.float32)
nodes = [
    helper.make_node('Gemm', ['input', 'fc1.weight', 'fc1.bias'], ['h'], transB=1),
    helper.make_node('Relu', ['h'], ['r']),
    helper.make_node('Gemm', ['r', 'fc2.weight', 'fc2.bias'], ['logits'], transB=1),
]
g = helper.make_graph(nodes, 'mlp',
    [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['batch', 64])],
    [helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['batch', 10])],
    [numpy_helper.from_array(w1, 'fc1.weight'), numpy_helper.from_array(b1, 'fc1.bias'),
     numpy_helper.from_array(w2, 'fc2.weight'), numpy_helper.from_array(b2, 'fc2.bias')])
m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])
onnx.checker.check_model(m)
onnx.save(m, sys.argv[1])
";

#[test]
fn onnx_to_qat_to_int8_to_onnx_classifies_as_qatc_does() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = Command::new(&py)
        .current_dir(d)
        .args(["-c", MAKE_MLP, "mlp.onnx"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = testdata().join("digits");
    let data = data.to_string_lossy();
    ok(&qatc_in(
        d,
        &[
            "import",
            "mlp.onnx",
            "--loss",
            "cross-entropy",
            "-o",
            "mlp.qir",
        ],
        None,
    ));
    ok(&qatc_in(
        d,
        &[
            "train",
            "mlp.qir",
            "--init",
            "mlp.safetensors",
            "--data",
            &data,
            "--scheme",
            "tflite-int8",
            "--epochs",
            "3",
            "--no-progress",
            "-o",
            "qat.st",
        ],
        None,
    ));
    ok(&qatc_in(
        d,
        &[
            "convert",
            "mlp.qir",
            "--scheme",
            "tflite-int8",
            "--weights",
            "qat.st",
            "-o",
            "mlp.int8.qir",
        ],
        None,
    ));
    ok(&qatc_in(
        d,
        &[
            "export",
            "mlp.int8.qir",
            "--weights",
            "mlp.int8.safetensors",
            "-o",
            "mlp.int8.onnx",
        ],
        None,
    ));
    // qatc's accuracy of the integer model on the whole test set
    let run = qatc_in(
        d,
        &[
            "eval",
            "mlp.int8.qir",
            "--weights",
            "mlp.int8.safetensors",
            "--data",
            &data,
            "--no-progress",
        ],
        None,
    );
    ok(&run);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("test accuracy"))
        .expect("an accuracy line");
    let counts = line.split('(').nth(1).unwrap().split(')').next().unwrap();
    let (right, total): (usize, usize) = {
        let mut it = counts.split('/').map(|s| s.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    // onnxruntime's on the same images
    let set = runtime::data::Dataset::load(Path::new(&*data))
        .unwrap()
        .test;
    assert_eq!(set.len(), total);
    let x = images(Path::new(&*data), total, &[64], 16.0);
    runtime::io::write_npy(&d.join("x.npy"), &x).unwrap();
    onnxruntime(&py, d, "mlp.int8.onnx", "x.npy", "ort.npy");
    let ort_right = rows(&read_npy(&d.join("ort.npy")))
        .iter()
        .zip(set.labels())
        .filter(|(r, l)| argmax(r) == **l as usize)
        .count();
    println!("digits test set: qatc INT8 {right}/{total}, onnxruntime {ort_right}/{total}");
    assert_eq!(ort_right, right);
    assert!(
        right as f64 / total as f64 > 0.8,
        "{right}/{total}: the loop trained nothing"
    );
}

/// A model trained with learned step sizes (`lsq`: fused `linear {act = relu}`,
/// `fake_quant_lsq`) exports as QDQ with its trained steps and fused activations as their
/// own nodes; onnxruntime computes qatc's logits.
#[test]
fn lsq_model_exports_with_its_learned_steps() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = testdata().join("models/digits_mlp.qir");
    let data = testdata().join("digits");
    let (m, data) = (m.to_string_lossy(), data.to_string_lossy());
    ok(&qatc_in(
        d,
        &[
            "train",
            &m,
            "--data",
            &data,
            "--scheme",
            "lsq",
            "--epochs",
            "2",
            "--no-progress",
            "-o",
            "lsq.st",
        ],
        None,
    ));
    ok(&qatc_in(
        d,
        &["prepare", &m, "--scheme", "lsq", "-o", "lsq.qir"],
        None,
    ));
    let text = std::fs::read_to_string(d.join("lsq.qir")).unwrap();
    assert!(
        text.contains("fake_quant_lsq(") && text.contains("act = relu"),
        "{text}"
    );
    ok(&qatc_in(
        d,
        &["export", "lsq.qir", "--weights", "lsq.st", "-o", "lsq.onnx"],
        None,
    ));
    let x = images(Path::new(&*data), 200, &[64], 16.0);
    runtime::io::write_npy(&d.join("x.npy"), &x).unwrap();
    let labels = Tensor::new(vec![200], qir::Data::I32(vec![0; 200])).unwrap();
    runtime::io::write_npy(&d.join("l.npy"), &labels).unwrap();
    ok(&qatc_in(
        d,
        &[
            "run",
            "lsq.qir",
            "--weights",
            "lsq.st",
            "-i",
            "x=x.npy",
            "-i",
            "label=l.npy",
            "-o",
            "q.npz",
        ],
        None,
    ));
    onnxruntime(&py, d, "lsq.onnx", "x.npy", "ort.npy");
    let q = runtime::io::read_npz(&d.join("q.npz")).unwrap();
    let (a, b) = (rows(&q["logits"]), rows(&read_npy(&d.join("ort.npy"))));
    let mut worst = 0.0f64;
    for (p, r) in a.iter().zip(&b) {
        assert_eq!(argmax(p), argmax(r));
        for (u, v) in p.iter().zip(r) {
            worst = worst.max((u - v).abs());
        }
    }
    println!("lsq: 200 images, argmax identical, largest logit difference {worst:e}");
    assert!(worst < 1e-3, "{worst}");
}
