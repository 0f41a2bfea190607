//! The commands that run models: `run`, `grad`, `train`, `calibrate`, `eval` — their
//! output, the files they write, and their errors (exit code 1, one line naming the
//! cause).

mod common;

use std::path::{Path, PathBuf};

use common::{qatc, qatc_in, repo_root, testdata};
use qir::{Data, Tensor};

fn digits_mlp() -> String {
    testdata()
        .join("models/digits_mlp.qir")
        .display()
        .to_string()
}

fn qat_mlp() -> String {
    repo_root()
        .join("crates/qatc-runtime/tests/models/digits_mlp_qat.qir")
        .display()
        .to_string()
}

fn digits() -> String {
    testdata().join("digits").display().to_string()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// One line on stderr starting with `error: `, exit code 1.
fn assert_one_line_error(run: &common::Run, want: &str) {
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("error: ") && run.stderr.contains(want),
        "expected '{want}' in: {}",
        run.stderr
    );
}

/// Two digits from the bundled data as `x.npy` (f32[2, 64]) and `label.npy` (i32[2]).
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let data = runtime::data::Dataset::load(Path::new(&digits())).unwrap();
    let px: Vec<f32> = (0..2)
        .flat_map(|i| data.test.pixels(i).unwrap().to_vec())
        .map(|p| p as f32 / 16.0)
        .collect();
    let x = dir.join("x.npy");
    runtime::io::write_npy(&x, &Tensor::f32(vec![2, 64], px).unwrap()).unwrap();
    let labels: Vec<i32> = data.test.labels()[..2].iter().map(|&l| l as i32).collect();
    let l = dir.join("label.npy");
    runtime::io::write_npy(&l, &Tensor::new(vec![2], Data::I32(labels)).unwrap()).unwrap();
    (x, l)
}

#[test]
fn run_prints_outputs_and_writes_npz() {
    let dir = tempfile::tempdir().unwrap();
    let (x, l) = inputs(dir.path());
    let xi = format!("x={}", s(&x));
    let li = format!("label={}", s(&l));
    let run = qatc(&["run", &digits_mlp(), "--input", &xi, "--input", &li]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].starts_with("logits: f32[2, 10] = ["),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(", ... (4 more)]"), "{}", lines[0]);
    assert!(lines[1].starts_with("loss: f32[] = ["), "{}", lines[1]);
    let first = run.stdout.clone();

    let out = dir.path().join("out.npz");
    let run = qatc(&["run", &digits_mlp(), "-i", &xi, "-i", &li, "-o", &s(&out)]);
    assert_eq!((run.code, run.all().as_str()), (Some(0), ""));
    let arrays = runtime::io::read_npz(&out).unwrap();
    assert_eq!(arrays["logits"].shape, [2, 10]);
    assert_eq!(arrays["loss"].shape, Vec::<usize>::new());
    // The initialization is seeded: the same run gives the same numbers.
    let again = qatc(&["run", &digits_mlp(), "-i", &xi, "-i", &li]);
    assert_eq!(again.stdout, first);
}

#[test]
fn run_with_weights_matches_eval() {
    let dir = tempfile::tempdir().unwrap();
    let (x, l) = inputs(dir.path());
    let ck = dir.path().join("w.safetensors");
    let run = qatc(&[
        "train",
        &digits_mlp(),
        "--data",
        &digits(),
        "--epochs",
        "2",
        "-o",
        &s(&ck),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let out = dir.path().join("out.npz");
    let run = qatc(&[
        "run",
        &digits_mlp(),
        "-i",
        &format!("x={}", s(&x)),
        "-i",
        &format!("label={}", s(&l)),
        "--weights",
        &s(&ck),
        "-o",
        &s(&out),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let logits = runtime::io::read_npz(&out).unwrap()["logits"].clone();
    let pred = runtime::eval::argmax_rows(&logits).unwrap();
    let data = runtime::data::Dataset::load(Path::new(&digits())).unwrap();
    let want: Vec<usize> = data.test.labels()[..2]
        .iter()
        .map(|&l| l as usize)
        .collect();
    assert_eq!(
        pred, want,
        "a trained model classifies the first two test digits"
    );
}

#[test]
fn run_errors_name_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let (x, l) = inputs(dir.path());
    let xi = format!("x={}", s(&x));
    let run = qatc(&["run", &digits_mlp(), "--input", &xi]);
    assert_one_line_error(&run, "missing input %label (i32[B])");
    // Labels given as floats, and images of the wrong shape.
    let lf = dir.path().join("lf.npy");
    runtime::io::write_npy(&lf, &Tensor::f32(vec![2], vec![1.0, 2.0]).unwrap()).unwrap();
    let run = qatc(&[
        "run",
        &digits_mlp(),
        "-i",
        &xi,
        "-i",
        &format!("label={}", s(&lf)),
    ]);
    assert_one_line_error(&run, "input %label: expected i32[B], got f32 data");
    let run = qatc(&[
        "run",
        &digits_mlp(),
        "-i",
        &format!("x={}", s(&l)),
        "-i",
        &format!("label={}", s(&l)),
    ]);
    assert_one_line_error(&run, "input %x: expected f32[B, 64], got i32 data");
    let x3 = dir.path().join("x3.npy");
    runtime::io::write_npy(&x3, &Tensor::f32(vec![2, 63], vec![0.0; 126]).unwrap()).unwrap();
    let run = qatc(&[
        "run",
        &digits_mlp(),
        "-i",
        &format!("x={}", s(&x3)),
        "-i",
        &format!("label={}", s(&l)),
    ]);
    assert_one_line_error(&run, "input %x: expected f32[B, 64], got shape [2, 63]");
    let run = qatc(&["run", &digits_mlp(), "-i", "x"]);
    assert_one_line_error(&run, "--input 'x': expected NAME=FILE.npy or FILE.npz");
    let run = qatc(&["run", &digits_mlp(), "-i", "x=/nonexistent/x.npy"]);
    assert_one_line_error(&run, "/nonexistent/x.npy: no such file or directory");
    let bad = dir.path().join("bad.npy");
    std::fs::write(&bad, b"\x93NUMPY garbage").unwrap();
    let run = qatc(&["run", &digits_mlp(), "-i", &format!("x={}", s(&bad))]);
    assert_one_line_error(&run, "bad.npy: not a valid .npy file");
}

#[test]
fn grad_prints_the_training_step() {
    let run = qatc(&["grad", &digits_mlp(), "--optimizer", "adam"]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let text = &run.stdout;
    assert!(text.contains("  input %lr: f32[]\n"), "{text}");
    assert!(text.contains("adam_update("), "{text}");
    assert!(text.contains("  update %fc1.w = "), "{text}");
    // The printed step graph parses and verifies.
    qir_reader::parse_and_verify(text).unwrap();
    let run = qatc(&["grad", &digits_mlp(), "--optimizer", "none"]);
    assert!(
        run.stdout.contains("output fc1.w.grad = "),
        "{}",
        run.stdout
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("step.qir");
    let run = qatc(&["grad", &digits_mlp(), "-o", &s(&out)]);
    assert_eq!((run.code, run.all().as_str()), (Some(0), ""));
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("sgd_update(")
    );
}

#[test]
fn grad_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("noloss.qir");
    std::fs::write(
        &m,
        "graph @m {\n  input %x: f32[B, 4]\n  param %w: f32[2, 4] = zeros\n\n  %y = linear(%x, %w) : f32[B, 2]\n\n  output y = %y\n}\n",
    )
    .unwrap();
    let run = qatc(&["grad", &s(&m)]);
    assert_one_line_error(&run, "pass 'grad' failed: the graph has no loss");
    // closed sets are clap value enums: the usage error lists the values
    let run = qatc(&["grad", &digits_mlp(), "--optimizer", "lion"]);
    assert_ne!(run.code, Some(0), "{}", run.all());
    assert!(
        run.stderr
            .starts_with("error: invalid value 'lion' for '--optimizer <OPTIMIZER>'")
            && run
                .stderr
                .contains("[possible values: sgd, momentum, adam, adamw, none]"),
        "{}",
        run.stderr
    );
    let run = qatc(&["grad", &digits_mlp(), "--bn", "eval"]);
    assert!(
        run.stderr.contains("[possible values: train, frozen]"),
        "{}",
        run.stderr
    );
    let run = qatc(&[
        "grad",
        &digits_mlp(),
        "--optimizer",
        "momentum",
        "--momentum",
        "1.5",
    ]);
    assert_one_line_error(
        &run,
        "option 'momentum' of pass 'grad' expects a number in [0, 1)",
    );
}

#[test]
fn train_first_run_defaults_then_eval() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("m.jsonl");
    let csv = dir.path().join("m.csv");
    // The documented first run, from a fresh directory: the checkpoint is named after
    // the model.
    let run = qatc_in(
        dir.path(),
        &[
            "train",
            &digits_mlp(),
            "--data",
            &digits(),
            "--epochs",
            "3",
            "--metrics",
            &s(&metrics),
            "--metrics-csv",
            &s(&csv),
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.all());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(
        lines[0].starts_with("epoch 1/3  train loss "),
        "{}",
        lines[0]
    );
    assert!(
        lines[3].starts_with("wrote digits_mlp.safetensors ("),
        "{}",
        lines[3]
    );
    let ck = dir.path().join("digits_mlp.safetensors");
    assert!(ck.is_file());
    let jl = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(jl.lines().count(), 3);
    let last: serde_json::Value = serde_json::from_str(jl.lines().last().unwrap()).unwrap();
    let acc = last["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.9, "{acc}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 4);

    // eval with the checkpoint gives the accuracy of the last epoch.
    let run = qatc(&[
        "eval",
        &digits_mlp(),
        "--data",
        &digits(),
        "--weights",
        &s(&ck),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let correct = (acc * 360.0).round() as usize;
    assert!(
        run.stdout.starts_with(&format!(
            "test accuracy {:.2}% ({correct}/360), test loss ",
            acc * 100.0
        )),
        "{}",
        run.stdout
    );
}

#[test]
fn train_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = s(&dir.path().join("c.safetensors"));
    let run = qatc(&["train", &digits_mlp(), "--data", "/nonexistent", "-o", &out]);
    assert_one_line_error(&run, "/nonexistent: not a directory");
    let run = qatc(&[
        "train",
        &digits_mlp(),
        "--data",
        &digits(),
        "--lr",
        "1e30",
        "--optimizer",
        "sgd",
        "--schedule",
        "constant",
        "-o",
        &out,
    ]);
    assert_one_line_error(&run, "training diverged: the loss is ");
    assert!(run.stderr.contains("at epoch 1, step 2"), "{}", run.stderr);
    let run = qatc(&[
        "train",
        &digits_mlp(),
        "--data",
        &digits(),
        "--schedule",
        "linear",
        "-o",
        &out,
    ]);
    assert_one_line_error(&run, "--schedule: unknown learning-rate schedule 'linear'");
    let run = qatc(&[
        "train",
        &testdata()
            .join("models/mnist_mlp.qir")
            .display()
            .to_string(),
        "--data",
        &digits(),
        "-o",
        &out,
    ]);
    assert_one_line_error(
        &run,
        "image input %x: f32[B, 784] takes 784 values per example but the data have 8×8 = 64 pixels",
    );
    let run = qatc(&[
        "train",
        &digits_mlp(),
        "--data",
        &digits(),
        "--epochs",
        "0",
        "-o",
        &out,
    ]);
    assert_one_line_error(&run, "epochs must be at least 1");
    let run = qatc(&[
        "train",
        &digits_mlp(),
        "--data",
        &digits(),
        "--scheme",
        "no-such-scheme",
        "-o",
        &out,
    ]);
    assert_one_line_error(
        &run,
        "--scheme: unknown scheme preset 'no-such-scheme' (valid presets: ",
    );
}

#[test]
fn qat_train_calibrates_and_freezes() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("q.safetensors");
    let run = qatc(&[
        "train",
        &qat_mlp(),
        "--data",
        &digits(),
        "--epochs",
        "2",
        "--freeze-observers-after",
        "1",
        "--calibrate",
        "percentile:99.9",
        "-o",
        &s(&ck),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    // Calibration is reported when it happens, before the first epoch.
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert_eq!(
        lines[0],
        "calibrated 4 observer site(s) on 8 batch(es) with percentile:99.9"
    );
    assert!(lines[1].starts_with("epoch 1/2  "), "{}", run.stdout);
    assert!(lines[3].starts_with("wrote "), "{}", run.stdout);
    let w = runtime::io::read_safetensors(&ck).unwrap();
    assert!(w.tensors.contains_key("relu1.max"));
    let run = qatc(&[
        "eval",
        &qat_mlp(),
        "--data",
        &digits(),
        "--weights",
        &s(&ck),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
}

#[test]
fn calibrate_writes_state() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cal.safetensors");
    let run = qatc(&[
        "calibrate",
        &qat_mlp(),
        "--data",
        &digits(),
        "--batches",
        "4",
        "-o",
        &s(&out),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(
        run.stdout
            .starts_with("calibrated 4 observer site(s) on 4 batch(es) with minmax\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  %x -> %x.min, %x.max: [0, 1]\n"),
        "{}",
        run.stdout
    );
    let f = runtime::io::read_safetensors(&out).unwrap();
    assert_eq!(f.tensors["x.max"].as_f32().unwrap(), [1.0]);
    assert_eq!(f.tensors["fc1.w.min"].shape, [32]);
    assert_eq!(f.metadata["method"], "minmax");
    // The calibrated file evaluates (params and state are all there).
    let run = qatc(&[
        "eval",
        &qat_mlp(),
        "--data",
        &digits(),
        "--weights",
        &s(&out),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
}

#[test]
fn calibrate_and_eval_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = s(&dir.path().join("cal.safetensors"));
    let run = qatc(&["calibrate", &digits_mlp(), "--data", &digits(), "-o", &out]);
    assert_one_line_error(
        &run,
        "graph @digits_mlp has no observers (observe_min / observe_max) or learned quantization scales (fake_quant_lsq) to calibrate",
    );
    let run = qatc(&[
        "calibrate",
        &qat_mlp(),
        "--data",
        &digits(),
        "--method",
        "kl",
        "-o",
        &out,
    ]);
    assert_one_line_error(&run, "--method: unknown calibration method 'kl'");
    let run = qatc(&[
        "eval",
        &digits_mlp(),
        "--data",
        &digits(),
        "--weights",
        "/nonexistent.safetensors",
    ]);
    assert_one_line_error(&run, "/nonexistent.safetensors: no such file or directory");
    let trunc = dir.path().join("t.safetensors");
    std::fs::write(&trunc, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let run = qatc(&[
        "eval",
        &digits_mlp(),
        "--data",
        &digits(),
        "--weights",
        &s(&trunc),
    ]);
    assert_one_line_error(&run, "t.safetensors: not a valid safetensors file");
    // Weights of another model.
    let other = dir.path().join("o.safetensors");
    let t = Tensor::f32(vec![1], vec![0.0]).unwrap();
    runtime::io::write_safetensors(&other, [("w", &t)], &Default::default()).unwrap();
    let run = qatc(&[
        "eval",
        &digits_mlp(),
        "--data",
        &digits(),
        "--weights",
        &s(&other),
    ]);
    assert_one_line_error(
        &run,
        "the weights have no tensor for param %fc1.w: f32[32, 64]",
    );
}

/// The final test accuracy from `train`'s last line (`wrote F (S s, final test accuracy
/// A%)`), as a fraction.
fn final_accuracy(stdout: &str) -> f64 {
    let last = stdout.lines().last().unwrap_or_default();
    let pct = last
        .strip_suffix("%)")
        .and_then(|l| l.rsplit_once("final test accuracy "))
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("no final accuracy in {stdout}"));
    pct.parse::<f64>().unwrap() / 100.0
}

#[test]
fn train_with_every_scheme_preset() {
    // Two epochs of QAT from scratch on the digits MLP with each preset (seed 0, the
    // defaults otherwise): prepared, calibrated before the first epoch, trained. Measured:
    // tflite-int8 91.67%, onnx-qdq 91.67%, tensorrt 90.83%, w4a8 91.67%, pot 90.56%,
    // lsq 91.39% (chance is 10%).
    let dir = tempfile::tempdir().unwrap();
    let ck = s(&dir.path().join("p.safetensors"));
    for preset in ["tflite-int8", "onnx-qdq", "tensorrt", "w4a8", "pot", "lsq"] {
        let run = qatc(&[
            "train",
            &digits_mlp(),
            "--data",
            &digits(),
            "--scheme",
            preset,
            "--epochs",
            "2",
            "--no-progress",
            "-o",
            &ck,
        ]);
        assert_eq!(run.code, Some(0), "{preset}: {}", run.all());
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{preset}: {}", run.stdout);
        let want = if preset == "lsq" {
            "initialized 8 learned quantization parameter(s) (LSQ) on 8 batch(es)"
        } else {
            "calibrated 5 observer site(s) on 8 batch(es) with minmax"
        };
        assert_eq!(lines[0], want, "{preset}");
        let acc = final_accuracy(&run.stdout);
        println!("{preset}: {:.2}%", acc * 100.0);
        assert!(acc > 0.85, "{preset}: accuracy {acc} after 2 epochs");
    }
}

#[test]
fn lsq_trains_as_well_as_tflite_int8() {
    // The default 10 epochs: LSQ (scales initialized from data, then learned) reaches
    // 98.33%, as tflite-int8 (observed ranges) does.
    let dir = tempfile::tempdir().unwrap();
    let ck = s(&dir.path().join("l.safetensors"));
    let mut acc = Vec::new();
    for preset in ["tflite-int8", "lsq"] {
        let run = qatc(&[
            "train",
            &digits_mlp(),
            "--data",
            &digits(),
            "--scheme",
            preset,
            "--no-progress",
            "-o",
            &ck,
        ]);
        assert_eq!(run.code, Some(0), "{preset}: {}", run.all());
        acc.push(final_accuracy(&run.stdout));
    }
    let (tflite, lsq) = (acc[0], acc[1]);
    println!("10 epochs: tflite-int8 {tflite}, lsq {lsq}");
    assert!(lsq > 0.97, "lsq accuracy {lsq}");
    assert!(
        lsq >= tflite - 0.01,
        "lsq {lsq} is more than a point below tflite-int8 {tflite}"
    );
    // The checkpoint holds the learned scales.
    let w = runtime::io::read_safetensors(Path::new(&ck)).unwrap();
    let x_scale = w.tensors["x.scale"].as_f32().unwrap()[0];
    assert!(x_scale > 0.0, "{x_scale}");
}

#[test]
fn calibrate_initializes_learned_scales() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("lsq.qir");
    let run = qatc(&[
        "prepare",
        &digits_mlp(),
        "--scheme",
        "lsq",
        "-o",
        &s(&model),
    ]);
    assert_eq!((run.code, run.all().as_str()), (Some(0), ""));
    let out = dir.path().join("cal.safetensors");
    let run = qatc(&[
        "calibrate",
        &s(&model),
        "--data",
        &digits(),
        "--batches",
        "4",
        "-o",
        &s(&out),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 10, "{}", run.stdout);
    assert_eq!(
        lines[0],
        "initialized 8 learned quantization parameter(s) (LSQ) on 4 batch(es)"
    );
    assert_eq!(lines[1], "  %x.scale = 0.003922");
    assert_eq!(lines[2], "  %x.zp = -128");
    assert!(
        lines[3].starts_with("  %fc1.w.scale (32 values) in ["),
        "{}",
        lines[3]
    );
    let f = runtime::io::read_safetensors(&out).unwrap();
    assert_eq!(f.tensors["x.zp"].as_f32().unwrap(), [-128.0]);
    // The model trains from the calibrated file (calibration is not redone: --init).
    let run = qatc(&[
        "train",
        &s(&model),
        "--data",
        &digits(),
        "--epochs",
        "1",
        "--init",
        &s(&out),
        "--no-progress",
        "-o",
        &s(&dir.path().join("t.safetensors")),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(run.stdout.starts_with("epoch 1/1  "), "{}", run.stdout);
}

#[test]
fn init_skips_calibration_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("q.safetensors");
    let train = |extra: &[&str]| {
        let mut argv = vec![
            "train".to_string(),
            qat_mlp(),
            "--data".into(),
            digits(),
            "--epochs".into(),
            "1".into(),
            "--no-progress".into(),
        ];
        argv.extend(extra.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let run = qatc(&argv);
        assert_eq!(run.code, Some(0), "{}", run.all());
        run.stdout
    };
    let first = train(&["-o", &s(&ck)]);
    assert!(
        first.starts_with("calibrated 4 observer site(s)"),
        "{first}"
    );
    // Resuming keeps the checkpoint's ranges ...
    let out = s(&dir.path().join("r.safetensors"));
    let resumed = train(&["--init", &s(&ck), "-o", &out]);
    assert!(resumed.starts_with("epoch 1/1  "), "{resumed}");
    // ... unless --calibrate asks for a new calibration.
    let recal = train(&["--init", &s(&ck), "--calibrate", "minmax", "-o", &out]);
    assert!(
        recal.starts_with("calibrated 4 observer site(s) on 8 batch(es) with minmax\n"),
        "{recal}"
    );
}

/// `N/360` of an `eval` line.
fn correct_of(stdout: &str) -> usize {
    stdout
        .split_once('(')
        .and_then(|(_, r)| r.split_once('/'))
        .map(|(n, _)| n.parse().unwrap())
        .unwrap_or_else(|| panic!("no count in {stdout}"))
}

#[test]
fn convert_then_eval_run_and_bench_the_integer_model() {
    // QAT-train the digits MLP (tflite-int8, 2 epochs), convert it, and run the integer
    // model with every command that takes a model, on both backends.
    let dir = tempfile::tempdir().unwrap();
    let ck = s(&dir.path().join("mlp.safetensors"));
    let run = qatc(&[
        "train",
        &digits_mlp(),
        "--data",
        &digits(),
        "--scheme",
        "tflite-int8",
        "--epochs",
        "2",
        "--no-progress",
        "-o",
        &ck,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let fq_correct = (final_accuracy(&run.stdout) * 360.0).round() as usize;
    let int = s(&dir.path().join("mlp.int8.qir"));
    let run = qatc(&[
        "convert",
        &digits_mlp(),
        "--weights",
        &ck,
        "--scheme",
        "tflite-int8",
        "-o",
        &int,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let text = std::fs::read_to_string(&int).unwrap();
    for op in ["quantize(", "qlinear(", "requantize(", "dequantize("] {
        assert!(text.contains(op), "{op} missing:\n{text}");
    }
    assert!(
        !text.contains("fake_quant") && !text.contains("param "),
        "{text}"
    );
    // the integer tensors: i8 weights (large constants go to the file)
    let tensors = runtime::io::weights::read_safetensors(&dir.path().join("mlp.int8.safetensors"))
        .unwrap()
        .tensors;
    assert_eq!(tensors["fc1.w.q"].data.dtype(), "i8");
    assert_eq!(tensors["fc1.w.q"].shape, vec![32, 64]);
    let w = s(&dir.path().join("mlp.int8.safetensors"));
    let mut counts = Vec::new();
    for backend in ["jit", "interp"] {
        let run = qatc(&[
            "eval",
            &int,
            "--data",
            &digits(),
            "--weights",
            &w,
            "--backend",
            backend,
        ]);
        assert_eq!(run.code, Some(0), "{}", run.all());
        counts.push(correct_of(&run.stdout));
    }
    assert_eq!(counts[0], counts[1], "jit and interpreter disagree");
    // measured: the integer model classifies exactly the images the fake-quant model does
    assert!(
        counts[0].abs_diff(fq_correct) <= 1,
        "int8 {}/360, fake-quant {fq_correct}/360",
        counts[0]
    );
    let (x, _) = inputs(dir.path());
    let mut outs = Vec::new();
    for backend in ["jit", "interp"] {
        let run = qatc(&[
            "run",
            &int,
            "--weights",
            &w,
            "-i",
            &format!("x={}", s(&x)),
            "--backend",
            backend,
        ]);
        assert_eq!(run.code, Some(0), "{}", run.all());
        assert!(run.stdout.contains("logits"), "{}", run.stdout);
        outs.push(run.stdout);
    }
    assert_eq!(outs[0], outs[1]);
    for backend in ["jit", "interp"] {
        let run = qatc(&[
            "bench",
            &int,
            "--weights",
            &w,
            "--batch",
            "8",
            "--runs",
            "2",
            "--min-seconds",
            "0",
            "--backend",
            backend,
        ]);
        assert_eq!(run.code, Some(0), "{}", run.all());
        assert!(run.stdout.contains("samples/s"), "{}", run.stdout);
    }
}

#[test]
fn w4a8_converts_to_packed_i4_weights_that_both_backends_run() {
    // QAT-train the digits MLP with 4-bit weights, convert it: the weights are i4 in the
    // IR and packed two per byte in the tensor file, and the integer model read back from
    // the pair classifies as the fake-quant model does, on both backends.
    let dir = tempfile::tempdir().unwrap();
    let ck = s(&dir.path().join("mlp.safetensors"));
    let run = qatc(&[
        "train",
        &digits_mlp(),
        "--data",
        &digits(),
        "--scheme",
        "w4a8",
        "--epochs",
        "2",
        "--no-progress",
        "-o",
        &ck,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let fq_correct = (final_accuracy(&run.stdout) * 360.0).round() as usize;
    let int = s(&dir.path().join("mlp.int4.qir"));
    let run = qatc(&[
        "convert",
        &digits_mlp(),
        "--weights",
        &ck,
        "--scheme",
        "w4a8",
        "-o",
        &int,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let text = std::fs::read_to_string(&int).unwrap();
    assert!(
        text.contains("const %fc1.w.q: !quant.uniform<i4<-7:7>:f32:0, %fc1.w.scales>[32, 64]"),
        "{text}"
    );
    let path = dir.path().join("mlp.int4.safetensors");
    // on disk: 32 x 64 values in 1024 bytes, marked by the metadata entry
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["fc1.w.q"]["dtype"], "U8", "{header}");
    assert_eq!(
        header["fc1.w.q"]["shape"],
        serde_json::json!([1024]),
        "{header}"
    );
    let file = runtime::io::weights::read_safetensors(&path).unwrap();
    assert_eq!(file.metadata["i4:fc1.w.q"], "32,64");
    let w = &file.tensors["fc1.w.q"];
    assert_eq!((w.data.dtype(), w.shape.clone()), ("i8", vec![32, 64]));
    assert!(w.data.to_f64().iter().all(|&v| (-8.0..=7.0).contains(&v)));
    let mut counts = Vec::new();
    for backend in ["jit", "interp"] {
        let run = qatc(&[
            "eval",
            &int,
            "--data",
            &digits(),
            "--weights",
            &s(&path),
            "--backend",
            backend,
        ]);
        assert_eq!(run.code, Some(0), "{}", run.all());
        counts.push(correct_of(&run.stdout));
    }
    assert_eq!(counts[0], counts[1], "jit and interpreter disagree");
    assert!(
        counts[0].abs_diff(fq_correct) <= 1,
        "int4 weights {}/360, fake-quant {fq_correct}/360",
        counts[0]
    );
}

#[test]
fn convert_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = s(&dir.path().join("o.qir"));
    let run = qatc(&[
        "convert",
        &digits_mlp(),
        "--weights",
        "nope.safetensors",
        "-o",
        &out,
    ]);
    assert_one_line_error(&run, "the model has no fake-quant: give the --scheme");
    let run = qatc(&[
        "convert",
        &digits_mlp(),
        "--weights",
        "nope.safetensors",
        "--scheme",
        "tflite-int8",
        "-o",
        &out,
    ]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stderr.contains("cannot read nope.safetensors"),
        "{}",
        run.stderr
    );
    let run = qatc(&[
        "convert",
        &qat_mlp(),
        "--weights",
        "x",
        "--scheme",
        "tflite-int8",
        "-o",
        &out,
    ]);
    assert_one_line_error(&run, "already prepared");
    // a float checkpoint holds no observer ranges
    let ck = s(&dir.path().join("float.safetensors"));
    let run = qatc(&[
        "train",
        &digits_mlp(),
        "--data",
        &digits(),
        "--epochs",
        "1",
        "--no-progress",
        "-o",
        &ck,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let run = qatc(&[
        "convert",
        &digits_mlp(),
        "--weights",
        &ck,
        "--scheme",
        "tflite-int8",
        "-o",
        &out,
    ]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stderr.contains("the range %x.min was never observed"),
        "{}",
        run.stderr
    );
}
