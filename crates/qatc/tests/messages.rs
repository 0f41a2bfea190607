//! Messages that used to mislead (issue 11): each test runs the command a user ran and
//! checks the message now names the cause.

mod common;

use std::path::Path;

use common::{qatc, repo_root, testdata};
use qir::Tensor;

fn digits_mlp() -> String {
    s(&testdata().join("models/digits_mlp.qir"))
}

fn qat_mlp() -> String {
    s(&repo_root().join("crates/qatc-runtime/tests/models/digits_mlp_qat.qir"))
}

fn digits() -> String {
    s(&testdata().join("digits"))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// One line on stderr starting with `error: ` and containing `want`, exit code 1.
fn assert_one_line_error(run: &common::Run, want: &str) {
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("error: ") && run.stderr.contains(want),
        "expected '{want}' in: {}",
        run.stderr
    );
}

const FQ: &str = "graph @g {
  input %x: f32[2]
  %y = relu(%x) : f32[2]
  output y = %y
}
";

#[test]
fn an_unknown_input_is_named_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("relu.qir");
    std::fs::write(&model, FQ).unwrap();
    let x = dir.path().join("x.npy");
    runtime::io::write_npy(&x, &Tensor::f32(vec![2], vec![0.2, 1.0]).unwrap()).unwrap();
    for backend in ["interp", "jit"] {
        let run = qatc(&[
            "run",
            &s(&model),
            "--backend",
            backend,
            "-i",
            &format!("y={}", s(&x)),
        ]);
        assert_one_line_error(
            &run,
            "unknown input 'y': the graph has no input %y (did you mean %x? \
             the graph's inputs: %x)",
        );
    }
}

#[test]
fn run_weights_without_a_param_suggest_init_missing_which_initializes_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.qir");
    std::fs::write(
        &model,
        "graph @g {
  input %x: f32[2]
  param %a: f32[2] = ones
  param %b: f32[2] = ones
  %m = mul(%x, %a) : f32[2]
  %y = add(%m, %b) : f32[2]
  output y = %y
}
",
    )
    .unwrap();
    let x = dir.path().join("x.npy");
    runtime::io::write_npy(&x, &Tensor::f32(vec![2], vec![1.0, 2.0]).unwrap()).unwrap();
    let w = dir.path().join("w.safetensors");
    let a = Tensor::f32(vec![2], vec![3.0, 4.0]).unwrap();
    runtime::io::write_safetensors(&w, [("a", &a)], &Default::default()).unwrap();
    let xi = format!("x={}", s(&x));
    let run = qatc(&["run", &s(&model), "-i", &xi, "--weights", &s(&w)]);
    assert_one_line_error(
        &run,
        "the weights have no tensor for param %b: f32[2] \
         (pass --init-missing to initialize it with --seed)",
    );
    let run = qatc(&[
        "run",
        &s(&model),
        "-i",
        &xi,
        "--weights",
        &s(&w),
        "--init-missing",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    // a from the file, b from its initializer (ones): 1*3+1, 2*4+1
    assert_eq!(run.stdout, "y: f32[2] = [4.0, 9.0]\n");
}

#[test]
fn eval_refuses_a_qat_checkpoint_on_the_float_model() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("qat.safetensors");
    let run = qatc(&[
        "train",
        &qat_mlp(),
        "--data",
        &digits(),
        "--epochs",
        "1",
        "--max-batches",
        "2",
        "--no-progress",
        "-o",
        &s(&ckpt),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    // The epoch line reports training and evaluation time apart.
    let epoch = run
        .stdout
        .lines()
        .find(|l| l.starts_with("epoch 1/1"))
        .unwrap();
    assert!(
        epoch.contains(" s  eval ") && epoch.ends_with(" s") && epoch.contains("  train "),
        "{epoch}"
    );
    // The QAT model accepts its own checkpoint.
    let run = qatc(&[
        "eval",
        &qat_mlp(),
        "--data",
        &digits(),
        "--weights",
        &s(&ckpt),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let run = qatc(&[
        "eval",
        &digits_mlp(),
        "--data",
        &digits(),
        "--weights",
        &s(&ckpt),
    ]);
    assert_one_line_error(&run, "the weights hold tensors the model does not use (%");
    assert!(
        run.stderr.contains("checkpoint of another model"),
        "{}",
        run.stderr
    );
}

#[test]
fn grad_without_params_says_there_is_nothing_to_differentiate() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("noparam.qir");
    std::fs::write(
        &model,
        "graph @g {
  input %x: f32[2]
  %m = mul(%x, %x) : f32[2]
  %l = reduce_sum(%m) {axes = [0]} : f32[]
  output l = %l
  loss %l
}
",
    )
    .unwrap();
    let run = qatc(&["grad", &s(&model)]);
    assert_one_line_error(
        &run,
        "noparam.qir: the graph has no param: there is nothing to differentiate",
    );
}

#[test]
fn help_describes_the_tool_and_lists_closed_sets() {
    let run = qatc(&["--help"]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(
        run.stdout.contains("quantization-aware-training compiler"),
        "{}",
        run.stdout
    );
    let run = qatc(&["train", "--help"]);
    let help = &run.stdout;
    for want in [
        "Passes over the training set",
        "Training examples per step",
        "Weight decay",
        "- sgd:      Plain SGD",
        "- adamw:    AdamW (decoupled weight decay)",
        "- interp:",
    ] {
        assert!(help.contains(want), "no '{want}' in:\n{help}");
    }
    let run = qatc(&[
        "train",
        &digits_mlp(),
        "--data",
        &digits(),
        "--optimizer",
        "adamm",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(run.stderr.contains("possible values"), "{}", run.stderr);
    // the scheme is a preset or a file: every command that takes one lists the presets
    for cmd in ["train", "prepare", "convert", "bench"] {
        let help = qatc(&[cmd, "--help"]).stdout.replace('\n', " ");
        for (preset, _) in passes::scheme::PRESETS {
            assert!(
                help.contains(&format!("{preset},")) || help.contains(&format!("{preset})")),
                "{cmd} --help does not list the preset {preset}"
            );
        }
    }
}
