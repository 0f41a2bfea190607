//! Hostile and careless input: inputs that must not bring qatc down, and outputs that must
//! not destroy a user's data. Every test here failed (abort, panic, silent damage) before
//! the fix it covers.

mod common;

use std::path::Path;

use common::{qatc_in, testdata};

fn tmp_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("writes");
    }
    dir
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).expect("reads")
}

/// A 100,000-character undefined name next to a 100,000-character defined one: the
/// did-you-mean search used to allocate 80 GB and abort.
#[test]
fn long_names_get_an_error_not_an_abort() {
    let n = 100_000;
    let text = format!(
        "graph @g {{\n  input %{}: f32[1]\n  output o = %{}\n}}\n",
        "a".repeat(n),
        "b".repeat(n)
    );
    let dir = tmp_with(&[("x.qir", text.as_bytes())]);
    let start = std::time::Instant::now();
    let run = qatc_in(dir.path(), &["check", "x.qir"], None);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("x.qir:3:14: error: use of undefined value '%bbbb"),
        "{}",
        &run.stderr[..run.stderr.len().min(300)]
    );
    assert!(!run.stderr.contains("did you mean"));
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
}

/// A temporary directory holding the digits model as `m.qir`, the QAT model as `q.qir`,
/// and a copy of the digits data in `data/`.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = common::repo_root();
    std::fs::copy(
        testdata().join("models/digits_mlp.qir"),
        dir.path().join("m.qir"),
    )
    .unwrap();
    std::fs::copy(
        root.join("crates/qatc-runtime/tests/models/digits_mlp_qat.qir"),
        dir.path().join("q.qir"),
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for e in std::fs::read_dir(testdata().join("digits")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), data.join(e.file_name())).unwrap();
    }
    dir
}

/// One line on stderr, `error: ` and `want`, exit code 1.
fn assert_error(run: &common::Run, want: &str) {
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert_eq!(run.stderr, format!("error: {want}\n"), "{}", run.all());
}

const QUICK: [&str; 6] = [
    "--epochs",
    "1",
    "--max-batches",
    "2",
    "--no-progress",
    "--backend",
];

#[test]
fn outputs_that_are_inputs_are_refused() {
    let dir = workspace();
    let d = dir.path();
    let model = read(d, "m.qir");
    let labels = read(d, "data/train-labels-idx1-ubyte");
    let run = qatc_in(
        d,
        &["train", "m.qir", "--data", "data", "-o", "m.qir"],
        None,
    );
    assert_error(
        &run,
        "-o m.qir is the model: qatc does not overwrite its inputs; choose another output file",
    );
    let run = qatc_in(
        d,
        &[
            "train",
            "m.qir",
            "--data",
            "data",
            "-o",
            "data/train-labels-idx1-ubyte",
        ],
        None,
    );
    assert_error(
        &run,
        "-o data/train-labels-idx1-ubyte is a file of --data: qatc does not overwrite its inputs; choose another output file",
    );
    // the same file under another name: a hard link, and a path through `..`
    std::fs::hard_link(d.join("m.qir"), d.join("alias.qir")).unwrap();
    let run = qatc_in(d, &["prepare", "m.qir", "-o", "alias.qir"], None);
    assert_error(
        &run,
        "-o alias.qir is the model (m.qir): qatc does not overwrite its inputs; choose another output file",
    );
    let run = qatc_in(d, &["prepare", "m.qir", "-o", "data/../m.qir"], None);
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert_eq!(read(d, "m.qir"), model);
    assert_eq!(read(d, "data/train-labels-idx1-ubyte"), labels);

    // run -o an --input file, calibrate -o its --weights
    let x = "x.npy";
    let t = qir::Tensor::f32(vec![1, 64], vec![0.5; 64]).unwrap();
    runtime::io::write_npy(&d.join(x), &t).unwrap();
    let before = read(d, x);
    let run = qatc_in(d, &["run", "m.qir", "-i", "x=x.npy", "-o", x], None);
    assert_error(
        &run,
        "-o x.npy is an --input file: qatc does not overwrite its inputs; choose another output file",
    );
    assert_eq!(read(d, x), before);
    let run = qatc_in(
        d,
        &[
            "calibrate",
            "q.qir",
            "--data",
            "data",
            "--batches",
            "1",
            "-o",
            "w.st",
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.all());
    let w = read(d, "w.st");
    let run = qatc_in(
        d,
        &[
            "calibrate",
            "q.qir",
            "--data",
            "data",
            "--weights",
            "w.st",
            "-o",
            "w.st",
        ],
        None,
    );
    assert_error(
        &run,
        "-o w.st is the --weights file: qatc does not overwrite its inputs; choose another output file",
    );
    assert_eq!(read(d, "w.st"), w);
    // fmt is in place by design: still allowed
    let run = qatc_in(d, &["fmt", "m.qir"], None);
    assert_eq!(run.code, Some(0), "{}", run.all());
}

/// convert, export and import check their outputs against their inputs (and each other)
/// before any work, as the other commands do.
#[test]
fn conversion_outputs_that_are_inputs_are_refused() {
    let dir = workspace();
    let d = dir.path();
    let run = qatc_in(
        d,
        &["prepare", "m.qir", "--scheme", "tflite-int8", "-o", "q.qir"],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.all());
    let calibrate = [
        "calibrate",
        "q.qir",
        "--data",
        "data",
        "--batches",
        "1",
        "-o",
        "w.st",
    ];
    let run = qatc_in(d, &calibrate, None);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let (model, w) = (read(d, "q.qir"), read(d, "w.st"));
    let refused = |flag: &str, file: &str, what: &str| {
        format!(
            "{flag} {file} is {what}: qatc does not overwrite its inputs; choose another output file"
        )
    };
    let run = qatc_in(
        d,
        &["convert", "q.qir", "--weights", "w.st", "-o", "w.st"],
        None,
    );
    assert_error(&run, &refused("-o", "w.st", "the --weights file"));
    let run = qatc_in(
        d,
        &["convert", "q.qir", "--weights", "w.st", "-o", "q.qir"],
        None,
    );
    assert_error(&run, &refused("-o", "q.qir", "the model"));
    // the tensor file beside the output: its default name, and the one given
    std::fs::copy(d.join("w.st"), d.join("int.safetensors")).unwrap();
    let run = qatc_in(
        d,
        &[
            "convert",
            "q.qir",
            "--weights",
            "int.safetensors",
            "-o",
            "int.qir",
        ],
        None,
    );
    assert_error(
        &run,
        &refused("--weights-out", "int.safetensors", "the --weights file"),
    );
    let run = qatc_in(
        d,
        &[
            "convert",
            "q.qir",
            "--weights",
            "w.st",
            "-o",
            "i.qir",
            "--weights-out",
            "i.qir",
        ],
        None,
    );
    assert_error(&run, &refused("--weights-out", "i.qir", "the -o file"));
    let run = qatc_in(
        d,
        &["export", "q.qir", "--weights", "w.st", "-o", "w.st"],
        None,
    );
    assert_error(&run, &refused("-o", "w.st", "the --weights file"));
    // import checks before it reads the model
    std::fs::write(d.join("x.onnx"), b"not a model").unwrap();
    let run = qatc_in(d, &["import", "x.onnx", "-o", "x.onnx"], None);
    assert_error(&run, &refused("-o", "x.onnx", "the model"));
    let run = qatc_in(
        d,
        &["import", "x.onnx", "-o", "y.qir", "--weights", "y.qir"],
        None,
    );
    assert_error(&run, &refused("--weights", "y.qir", "the -o file"));
    assert_eq!(read(d, "q.qir"), model);
    assert_eq!(read(d, "w.st"), w);
    assert_eq!(std::fs::read(d.join("x.onnx")).unwrap(), b"not a model");
    // and a good conversion still goes through
    let run = qatc_in(
        d,
        &["convert", "q.qir", "--weights", "w.st", "-o", "i.qir"],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.all());
}

#[test]
fn a_bad_output_location_fails_before_training() {
    let dir = workspace();
    let d = dir.path();
    std::fs::create_dir(d.join("sub")).unwrap();
    let run = qatc_in(
        d,
        &["train", "m.qir", "--data", "data", "-o", "missing/c.st"],
        None,
    );
    assert_error(
        &run,
        "-o missing/c.st: the directory missing does not exist",
    );
    assert_eq!(run.stdout, "", "no epoch ran");
    let run = qatc_in(d, &["train", "m.qir", "--data", "data", "-o", "sub"], None);
    assert_error(&run, "-o sub is a directory; give a file name");
    let run = qatc_in(
        d,
        &[
            "train",
            "m.qir",
            "--data",
            "data",
            "--metrics",
            "nope/m.jsonl",
            "-o",
            "c.st",
        ],
        None,
    );
    assert_error(
        &run,
        "--metrics nope/m.jsonl: the directory nope does not exist",
    );
}

#[cfg(unix)]
#[test]
fn writes_go_through_links_to_the_target_with_one_file_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = workspace();
    let d = dir.path();
    let ugly = b"graph @m{\n  input %x : f32[B,4]\n  %y=relu(%x):f32[B,4]\n  output y=%y\n}\n";
    std::fs::create_dir(d.join("real")).unwrap();
    std::fs::write(d.join("real/u.qir"), ugly).unwrap();
    std::os::unix::fs::symlink("real/u.qir", d.join("link.qir")).unwrap();
    let run = qatc_in(d, &["fmt", "link.qir"], None);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(
        std::fs::symlink_metadata(d.join("link.qir"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let formatted = String::from_utf8(read(d, "real/u.qir")).unwrap();
    assert!(
        formatted.contains("%y = relu(%x) : f32[B, 4]"),
        "{formatted}"
    );
    // a hard link stays one file
    std::fs::write(d.join("real/u.qir"), ugly).unwrap();
    std::fs::hard_link(d.join("real/u.qir"), d.join("hard.qir")).unwrap();
    let run = qatc_in(d, &["fmt", "hard.qir"], None);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(std::fs::metadata(d.join("hard.qir")).unwrap().nlink(), 2);
    assert_eq!(read(d, "real/u.qir"), formatted.as_bytes());
    // train -o a symbolic link writes the checkpoint into its target
    std::os::unix::fs::symlink("real/ck.st", d.join("ck.st")).unwrap();
    let mut args = vec!["train", "m.qir", "--data", "data", "-o", "ck.st"];
    args.extend(QUICK);
    args.push("interp");
    let run = qatc_in(d, &args, None);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(
        std::fs::symlink_metadata(d.join("ck.st"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(d.join("real/ck.st").is_file());

    // every new output gets the mode of an ordinary new file (0666 less the umask)
    std::fs::write(d.join("probe"), b"").unwrap();
    let usual = std::fs::metadata(d.join("probe"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    for args in [
        vec!["prepare", "m.qir", "-o", "p.qir"],
        vec!["grad", "m.qir", "-o", "g.qir"],
        vec!["opt", "m.qir", "--passes", "simplify", "-o", "o.qir"],
        vec!["dot", "m.qir", "-o", "m.dot"],
    ] {
        let run = qatc_in(d, &args, None);
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.all());
        let out = d.join(args[args.len() - 1]);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, usual, "{args:?}");
    }
    let mode = std::fs::metadata(d.join("real/ck.st"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, usual);
}

#[test]
fn stale_temporaries_are_cleaned_on_the_next_start() {
    let dir = workspace();
    let d = dir.path();
    std::fs::write(d.join(".ck.st.a1B2c3.tmp"), b"torn checkpoint").unwrap();
    let mut args = vec!["train", "m.qir", "--data", "data", "-o", "ck.st"];
    args.extend(QUICK);
    args.push("interp");
    let run = qatc_in(d, &args, None);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(!d.join(".ck.st.a1B2c3.tmp").exists());
    assert!(d.join("ck.st").is_file());
}

#[test]
fn zero_batches_are_rejected() {
    let dir = workspace();
    let d = dir.path();
    let run = qatc_in(
        d,
        &[
            "eval",
            "m.qir",
            "--data",
            "data",
            "--weights",
            "w.st",
            "--batch-size",
            "0",
        ],
        None,
    );
    assert_error(&run, "--batch-size must be at least 1");
    let run = qatc_in(
        d,
        &[
            "train",
            "q.qir",
            "--data",
            "data",
            "--calibration-batches",
            "0",
            "-o",
            "c.st",
        ],
        None,
    );
    assert_error(
        &run,
        "--calibration-batches must be at least 1 (use --calibrate none to skip calibration)",
    );
    let run = qatc_in(
        d,
        &["train", "m.qir", "--data", "data", "--batch-size", "0"],
        None,
    );
    assert_error(&run, "--batch-size must be at least 1");
    let empty = qir::Tensor::f32(vec![0, 64], Vec::new()).unwrap();
    runtime::io::write_npy(&d.join("x.npy"), &empty).unwrap();
    let run = qatc_in(d, &["run", "m.qir", "-i", "x=x.npy"], None);
    assert_error(
        &run,
        "--input 'x=x.npy': the array has shape [0, 64], no elements (an empty batch has nothing to evaluate)",
    );
}

#[test]
fn sizes_read_from_input_are_bounded() {
    let dir = workspace();
    let d = dir.path();
    let run = qatc_in(
        d,
        &[
            "calibrate",
            "q.qir",
            "--data",
            "data",
            "--method",
            "mse",
            "--bins",
            "1000000000",
            "-o",
            "c.st",
        ],
        None,
    );
    assert_error(
        &run,
        "--bins 1000000000: at most 16384 bins (every observed channel keeps a histogram of that many)",
    );
    // 642 bytes whose header length field says 0xFFFFFFF0
    let mut npy = b"\x93NUMPY\x02\x00".to_vec();
    npy.extend(0xFFFF_FFF0u32.to_le_bytes());
    npy.resize(642, b' ');
    std::fs::write(d.join("h.npy"), &npy).unwrap();
    let run = qatc_in(d, &["run", "m.qir", "-i", "x=h.npy"], None);
    assert_error(
        &run,
        "h.npy: not a valid .npy file: the header length field says 4294967280 bytes but the file has 630 bytes after it",
    );
}

/// momentum and adam at --lr 1e6 drove the loss to 1e5–1e20 and exited 0 with a garbage
/// checkpoint; the rule: a finite loss above 10^4 times the first step's (at least 1)
/// stops training, naming the step.
#[test]
fn a_loss_that_explodes_without_nan_stops_training() {
    let dir = workspace();
    let d = dir.path();
    for opt in ["momentum", "adam"] {
        let run = qatc_in(
            d,
            &[
                "train",
                "m.qir",
                "--data",
                "data",
                "--lr",
                "1e6",
                "--optimizer",
                opt,
                "--epochs",
                "3",
                "--no-progress",
                "-o",
                "c.st",
            ],
            None,
        );
        assert_eq!(run.code, Some(1), "{}", run.all());
        assert_eq!(run.stdout, "", "stopped in the first epoch");
        assert!(
            run.stderr.starts_with("error: training diverged: the loss is ")
                && run.stderr.contains(" at epoch 1, step 2 (global step 2), more than 1e4 times the first step's 2.3873; try a lower learning rate\n"),
            "{}",
            run.stderr
        );
        assert!(!d.join("c.st").exists(), "no garbage checkpoint");
    }
}

/// SIGTERM (as SIGINT) during training: the step finishes, the checkpoint is written with
/// the steps done, the exit code is 1. It used to kill the run with the work since the
/// last epoch lost.
#[cfg(unix)]
#[test]
fn a_signal_during_training_writes_the_checkpoint_and_exits_1() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let dir = workspace();
    let d = dir.path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_qatc"))
        .args([
            "train",
            "m.qir",
            "--data",
            "data",
            "--epochs",
            "100000",
            "--no-progress",
            "--backend",
            "interp",
            "-o",
            "c.st",
        ])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("epoch 1/100000 "), "{first}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("\nnote: interrupted: finishing the step and writing the checkpoint"),
        "{stderr}"
    );
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: interrupted at epoch ")
            && last.ends_with("; wrote the checkpoint c.st"),
        "{stderr}"
    );
    // the checkpoint's step count is the one the message names
    let global: u64 = last
        .split("(global step ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let f = runtime::io::read_safetensors(&d.join("c.st")).unwrap();
    assert_eq!(f.metadata["global_step"], global.to_string());
    assert!(global >= 12, "at least the first epoch: {global}");
    let names: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !names.iter().any(|n| n.to_string_lossy().ends_with(".tmp")),
        "{names:?}"
    );
}

const BIG_PARAM: &str = "graph @big {\n  input %x: f32[B, 64]\n  param %fc.w: f32[1000000000, 64] = zeros\n  param %fc.b: f32[1000000000] = zeros\n  %y = linear(%x, %fc.w, %fc.b) : f32[B, 1000000000]\n  output y = %y\n}\n";
const UNUSED: &str = "graph @unused {\n  input %x: f32[B, 64]\n  param %w: f32[1000000000, 1000000000] = zeros\n  %y = relu(%x) : f32[B, 64]\n  output y = %y\n}\n";
const FILL: &str = "graph @fill {\n  input %x: f32[B, 64]\n  const %c: f32[100000, 100000] = fill(1.0)\n  %y = relu(%x) : f32[B, 64]\n  output y = %y\n}\n";
const PAD: &str = "graph @pad {\n  input %x: f32[B, 1, 8, 8]\n  param %w: f32[1, 1, 3, 3] = kaiming_uniform\n  param %b: f32[1] = zeros\n  %y = conv2d(%x, %w, %b) {padding = [1000000, 1000000, 1000000, 1000000]} : f32[B, 1, 2000006, 2000006]\n  output y = %y\n}\n";

/// The memory check counts the values live at once, not only the largest: ten values of
/// 4 MB that are all read at the end need 40 MB, while a chain of ten needs two at a time.
#[test]
fn the_memory_check_counts_the_values_live_at_once() {
    let fan = {
        let mut t = String::from("graph @fan {\n  input %x: f32[B, 1000]\n");
        for i in 0..10 {
            t.push_str(&format!("  %y{i} = mul(%x, %x) : f32[B, 1000]\n"));
        }
        let mut acc = "%y0".to_string();
        for i in 1..10 {
            t.push_str(&format!("  %s{i} = add({acc}, %y{i}) : f32[B, 1000]\n"));
            acc = format!("%s{i}");
        }
        t.push_str(&format!("  output y = {acc}\n}}\n"));
        t
    };
    let chain = {
        let mut t = String::from("graph @chain {\n  input %x: f32[B, 1000]\n");
        let mut prev = "%x".to_string();
        for i in 0..19 {
            t.push_str(&format!("  %c{i} = mul({prev}, {prev}) : f32[B, 1000]\n"));
            prev = format!("%c{i}");
        }
        t.push_str(&format!("  output y = {prev}\n}}\n"));
        t
    };
    let dir = tmp_with(&[("fan.qir", fan.as_bytes()), ("chain.qir", chain.as_bytes())]);
    let d = dir.path();
    let x = qir::Tensor::f32(vec![1000, 1000], vec![0.5; 1_000_000]).unwrap();
    runtime::io::write_npy(&d.join("x.npy"), &x).unwrap();
    for backend in ["jit", "interp"] {
        let run = qatc_in(
            d,
            &[
                "run",
                "fan.qir",
                "-i",
                "x=x.npy",
                "--max-memory",
                "30M",
                "--backend",
                backend,
                "-o",
                "y.npz",
            ],
            None,
        );
        // 11 values of 4 MB at the peak (ten products and a sum), whichever is last
        assert_eq!(run.code, Some(1), "{}", run.all());
        assert!(
            run.stderr
                .starts_with("error: the values live at once after %")
                && run.stderr.ends_with(
                    " with B = 1000 needs 44.0 MB, more than the --max-memory limit (30.0 MB)\n"
                ),
            "{backend}: {}",
            run.stderr
        );
        // 19 values of 4 MB (76 MB in all), two alive at a time
        let run = qatc_in(
            d,
            &[
                "run",
                "chain.qir",
                "-i",
                "x=x.npy",
                "--max-memory",
                "30M",
                "--backend",
                backend,
                "-o",
                "y.npz",
            ],
            None,
        );
        assert_eq!(run.code, Some(0), "{backend}: {}", run.all());
    }
}

/// Huge declarations and intermediates used to abort `run` and `train` with `memory
/// allocation of ... failed` (exit 134): now an error naming the value and its size,
/// on both executors, before anything that large is allocated.
#[test]
fn huge_tensors_are_refused_with_their_size() {
    let dir = tmp_with(&[
        ("big.qir", BIG_PARAM.as_bytes()),
        ("unused.qir", UNUSED.as_bytes()),
        ("fill.qir", FILL.as_bytes()),
        ("pad.qir", PAD.as_bytes()),
    ]);
    let d = dir.path();
    let x = qir::Tensor::f32(vec![2, 64], vec![0.5; 128]).unwrap();
    runtime::io::write_npy(&d.join("x.npy"), &x).unwrap();
    let img = qir::Tensor::f32(vec![1, 1, 8, 8], vec![0.5; 64]).unwrap();
    runtime::io::write_npy(&d.join("img.npy"), &img).unwrap();
    for backend in ["jit", "interp"] {
        for (file, input, want) in [
            (
                "big.qir",
                "x=x.npy",
                "param %fc.w: f32[1000000000, 64] needs 256.0 GB, more than ",
            ),
            (
                "unused.qir",
                "x=x.npy",
                "param %w: f32[1000000000, 1000000000] needs 4000000.0 TB, more than ",
            ),
            (
                "fill.qir",
                "x=x.npy",
                "const %c: f32[100000, 100000] needs 40.0 GB, more than ",
            ),
            (
                "pad.qir",
                "x=img.npy",
                "value %y: f32[B, 1, 2000006, 2000006] with B = 1 needs 16.0 TB, more than ",
            ),
        ] {
            let run = qatc_in(d, &["run", file, "-i", input, "--backend", backend], None);
            assert_eq!(run.code, Some(1), "{file} {backend}: {}", run.all());
            assert!(
                run.stderr.starts_with(&format!("error: {want}"))
                    && run.stderr.lines().count() == 1,
                "{file} {backend}: {}",
                run.stderr
            );
        }
        // a limit the user sets
        let run = qatc_in(
            d,
            &[
                "run",
                "pad.qir",
                "-i",
                "x=img.npy",
                "--backend",
                backend,
                "--max-memory",
                "1M",
            ],
            None,
        );
        assert_error(
            &run,
            "value %y: f32[B, 1, 2000006, 2000006] with B = 1 needs 16.0 TB, more than the --max-memory limit (1.0 MB)",
        );
    }
    // small enough for the machine, not for the limit: 40 kB of constant
    let small = FILL.replace("100000, 100000", "100, 100");
    std::fs::write(d.join("small.qir"), small).unwrap();
    let run = qatc_in(d, &["run", "small.qir", "-i", "x=x.npy"], None);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let run = qatc_in(
        d,
        &["run", "small.qir", "-i", "x=x.npy", "--max-memory", "10k"],
        None,
    );
    assert_error(
        &run,
        "const %c: f32[100, 100] needs 40.0 kB, more than the --max-memory limit (10.0 kB)",
    );
    let run = qatc_in(
        d,
        &["run", "small.qir", "-i", "x=x.npy", "--max-memory", "lots"],
        None,
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("expected a positive size such as 512M or 8G, got 'lots'"),
        "{}",
        run.stderr
    );

    // train: refused before the first step
    let model = std::fs::read_to_string(testdata().join("models/digits_mlp.qir")).unwrap();
    let model = model.replace(
        "  param %fc2.b: f32[10] = zeros\n",
        "  param %fc2.b: f32[10] = zeros\n  param %huge: f32[1000000000, 64] = zeros\n",
    );
    std::fs::write(d.join("m.qir"), model).unwrap();
    let data = testdata().join("digits").display().to_string();
    let run = qatc_in(d, &["train", "m.qir", "--data", &data, "-o", "c.st"], None);
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stderr
            .starts_with("error: param %huge: f32[1000000000, 64] needs 256.0 GB, more than "),
        "{}",
        run.stderr
    );
}

const FQ: &str = "graph @fq {\n  input %x: f32[B, 4]\n  const %s: f32[] = fill(0.0)\n  const %z: i32[] = zeros\n  %y = fake_quant(%x, %s, %z) {qmin = -128, qmax = 127} : f32[B, 4]\n  output y = %y\n}\n";

/// A constant scale of 0, -1 or inf made `fake_quant` return NaN or garbage with exit 0:
/// the verifier rejects it with a location, and a scale fed, stored or computed is checked
/// at run time, naming the op, on both executors.
#[test]
fn fake_quant_scales_must_be_positive_and_finite() {
    let neg = FQ.replace("fill(0.0)", "fill(-1.0)");
    let inf = FQ.replace("fill(0.0)", "[inf]");
    let fed = FQ.replace("  const %s: f32[] = fill(0.0)\n", "  input %s: f32[]\n");
    let dir = tmp_with(&[
        ("zero.qir", FQ.as_bytes()),
        ("neg.qir", neg.as_bytes()),
        ("inf.qir", inf.as_bytes()),
        ("fed.qir", fed.as_bytes()),
    ]);
    let d = dir.path();
    for (file, shown) in [("zero.qir", "0.0"), ("neg.qir", "-1.0"), ("inf.qir", "inf")] {
        let run = qatc_in(d, &["check", file], None);
        assert_eq!(run.code, Some(1), "{}", run.all());
        assert!(
            run.stderr.starts_with(&format!(
                "{file}:5:3: error: %y: 'fake_quant' scale %s is the constant {shown}: scales must be positive and finite\n"
            )),
            "{}",
            run.stderr
        );
    }
    let x = qir::Tensor::f32(vec![2, 4], vec![0.5; 8]).unwrap();
    runtime::io::write_npy(&d.join("x.npy"), &x).unwrap();
    for (v, shown) in [(0.0f32, "0"), (-1.0, "-1"), (f32::INFINITY, "inf")] {
        let s = qir::Tensor::f32(vec![], vec![v]).unwrap();
        runtime::io::write_npy(&d.join("s.npy"), &s).unwrap();
        let run = qatc_in(
            d,
            &["run", "fed.qir", "-i", "x=x.npy", "-i", "s=s.npy"],
            None,
        );
        assert_error(
            &run,
            &format!(
                "%y: 'fake_quant' scale %s holds {shown}.0: scales must be positive and finite"
            )
            .replace("inf.0", "inf"),
        );
        let run = qatc_in(
            d,
            &[
                "run",
                "fed.qir",
                "-i",
                "x=x.npy",
                "-i",
                "s=s.npy",
                "--backend",
                "interp",
            ],
            None,
        );
        assert_error(
            &run,
            &format!("%y: 'fake_quant' the scale is {shown}: scales must be positive and finite"),
        );
    }
    // scales the graph computes (here the square of an input), per tensor and per channel:
    // the same message from both executors
    let computed = "graph @fq {\n  input %x: f32[B, 4]\n  input %t: f32[4]\n  const %z: i32[4] = zeros\n  %s = mul(%t, %t) : f32[4]\n  %y = fake_quant(%x, %s, %z) {qmin = -128, qmax = 127, axis = 1} : f32[B, 4]\n  output y = %y\n}\n";
    std::fs::write(d.join("computed.qir"), computed).unwrap();
    for (t, shown) in [
        ([1.0f32, 2.0, 0.0, 1.0], "the scale of channel 2 is 0"),
        (
            [1.0, f32::INFINITY, 1.0, 1.0],
            "the scale of channel 1 is inf",
        ),
        ([f32::NAN, 1.0, 1.0, 1.0], "the scale of channel 0 is NaN"),
    ] {
        let tt = qir::Tensor::f32(vec![4], t.to_vec()).unwrap();
        runtime::io::write_npy(&d.join("t.npy"), &tt).unwrap();
        for backend in ["jit", "interp"] {
            let run = qatc_in(
                d,
                &[
                    "run",
                    "computed.qir",
                    "-i",
                    "x=x.npy",
                    "-i",
                    "t=t.npy",
                    "--backend",
                    backend,
                ],
                None,
            );
            assert_error(
                &run,
                &format!("%y: 'fake_quant' {shown}: scales must be positive and finite"),
            );
        }
    }
    // and good computed scales run
    let tt = qir::Tensor::f32(vec![4], vec![0.1, 0.2, 0.3, 0.4]).unwrap();
    runtime::io::write_npy(&d.join("t.npy"), &tt).unwrap();
    let run = qatc_in(
        d,
        &["run", "computed.qir", "-i", "x=x.npy", "-i", "t=t.npy"],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.all());
}

/// A chain of 8,000 `relu`s through `fuse`: egg's extractor swept every class once per
/// level of the chain (quadratic: 4,000 took 33 s, 8,000 over two minutes in a debug
/// build); the Knuth–Dijkstra extraction is O(n log n) — about 2 s here.
#[test]
fn egraph_passes_grow_about_linearly() {
    let n = 8000;
    let mut text = String::from("graph @chain {\n  input %x: f32[B, 4]\n");
    let mut prev = "%x".to_string();
    for i in 0..n {
        text.push_str(&format!("  %r{i} = relu({prev}) : f32[B, 4]\n"));
        prev = format!("%r{i}");
    }
    text.push_str(&format!("  output y = {prev}\n}}\n"));
    let dir = tmp_with(&[("chain.qir", text.as_bytes())]);
    for pass in ["fuse", "simplify"] {
        let start = std::time::Instant::now();
        let run = qatc_in(
            dir.path(),
            &["opt", "chain.qir", "--passes", pass, "-o", "out.qir"],
            None,
        );
        let took = start.elapsed();
        assert_eq!(run.code, Some(0), "{}", run.all());
        assert!(took.as_secs() < 40, "{pass}: {took:?}");
        let out = String::from_utf8(read(dir.path(), "out.qir")).unwrap();
        let relus = out.matches("= relu(").count();
        match pass {
            // nothing to fuse into
            "fuse" => assert_eq!(relus, n),
            // relu(relu(x)) = relu(x): the chain collapses
            _ => assert_eq!(relus, 1),
        }
    }
    // the time limit bounds the whole pass (conversions and extraction included), up to
    // one search iteration: 20 ms on a chain whose search alone takes longer (in an
    // optimized build too: the whole pass there is ~0.2 s, a 300 ms limit was not hit)
    let run = qatc_in(
        dir.path(),
        &[
            "opt",
            "chain.qir",
            "--passes",
            "simplify{time-limit-ms=20}",
            "--time-passes",
            "-o",
            "limited.qir",
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(
        run.stderr.contains("stopped by the time limit"),
        "{}",
        run.stderr
    );
    let seconds: f64 = run
        .stderr
        .lines()
        .find(|l| l.trim_end().ends_with(" simplify"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no time for simplify in: {}", run.stderr));
    assert!(
        seconds < 0.9,
        "simplify took {seconds} s with a 20 ms limit"
    );
}
