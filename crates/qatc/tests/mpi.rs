//! Data-parallel training over MPI: `mpirun -np 2 qatc train ...` against one process.
//!
//! These tests need the `mpi` feature and `mpirun` (OpenMPI; `scripts/test.sh` installs
//! it and runs `cargo test -p qatc --features mpi --test mpi`); without either they print
//! why and pass without checking anything — unless `QATC_REQUIRE_MPI` is set (as
//! `scripts/test.sh` does), which makes that a failure.
//!
//! What they assert:
//! - both ranks hold bit-identical parameters and state (observer ranges, batch-norm
//!   running statistics, optimizer buffers) after every step (`QATC_DP_TRACE`);
//! - two ranks on shards of each global batch end where one process with the same global
//!   batch ends, within [`REL_TOL`];
//! - a failing rank (`QATC_DP_FAIL`) ends the job with its error (or, killed, with
//!   mpirun's report of its signal), and the checkpoint of
//!   the last finished epoch is intact.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use runtime::io::read_safetensors;

/// Largest difference allowed between the 2-rank and the 1-process results, relative to
/// the tensor's largest magnitude: averaging two shard gradients rounds differently from
/// one mean over the global batch (and `E[x²] - E[x]²` from the two-pass variance), a few
/// f32 ulps per step (measured: 1.3e-7 for the MLP, 2.4e-7 for the batch-norm model after
/// 12 steps).
const REL_TOL: f64 = 1e-5;

const QATC: &str = env!("CARGO_BIN_EXE_qatc");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `mpirun` when the tests can run, else `None` after printing why. With
/// `QATC_REQUIRE_MPI=1` (set by `scripts/test.sh`, which installs OpenMPI) a missing
/// feature or `mpirun` fails the test instead.
fn mpirun() -> Option<&'static str> {
    let skip = |why: &str| {
        assert!(
            std::env::var_os("QATC_REQUIRE_MPI").is_none(),
            "QATC_REQUIRE_MPI is set but {why}"
        );
        eprintln!("skipping the MPI test: {why}");
        None
    };
    if !cfg!(feature = "mpi") {
        return skip("qatc was built without the `mpi` feature");
    }
    match Command::new("mpirun").arg("--version").output() {
        Ok(o) if o.status.success() => Some("mpirun"),
        _ => skip("`mpirun` is not installed (apt-get install openmpi-bin libopenmpi-dev)"),
    }
}

/// Runs `cmd`, killing it (and failing) if it takes longer than two minutes: a hang is
/// what a failing rank must not cause.
fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the run did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn train_args(model: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "train".into(),
        root()
            .join("testdata/models")
            .join(model)
            .display()
            .to_string(),
        "--data".into(),
        root().join("testdata/digits").display().to_string(),
        "--scheme".into(),
        "tflite-int8".into(),
        "--batch-size".into(),
        "32".into(),
        "--calibration-batches".into(),
        "2".into(),
        "--no-progress".into(),
        "-o".into(),
        out.display().to_string(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn mpi_command(np: usize, args: &[String]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(np.to_string())
        .arg(QATC)
        .args(args);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Trains `model` on 2 ranks and on one process with the same global batches and checks
/// the ranks' traces and the final checkpoints; returns the names traced.
fn ranks_agree_and_match_one_process(model: &str, steps: usize, extra: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (dp_ckpt, one_ckpt) = (
        dir.path().join("dp.safetensors"),
        dir.path().join("one.safetensors"),
    );

    let mut cmd = mpi_command(2, &train_args(model, &dp_ckpt, extra));
    cmd.env("QATC_DP_TRACE", dir.path());
    let out = run(cmd);
    assert!(
        out.status.success(),
        "mpirun failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    // rank 0 alone reports
    assert_eq!(stdout.matches("wrote ").count(), 1, "{stdout}");

    let t0 = std::fs::read_to_string(dir.path().join("rank0.trace")).unwrap();
    let t1 = std::fs::read_to_string(dir.path().join("rank1.trace")).unwrap();
    assert_eq!(t0.lines().count(), steps, "one trace line per step");
    for (step, (a, b)) in t0.lines().zip(t1.lines()).enumerate() {
        assert_eq!(a, b, "the ranks differ after step {}", step + 1);
    }
    let names: Vec<String> = t0
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .skip(2)
        .map(|kv| kv.split(':').next().unwrap().to_string())
        .collect();

    let mut one = Command::new(QATC);
    one.args(train_args(model, &one_ckpt, extra));
    let out = run(one);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let dp = read_safetensors(&dp_ckpt).unwrap();
    let single = read_safetensors(&one_ckpt).unwrap();
    assert_eq!(
        dp.tensors.keys().collect::<Vec<_>>(),
        single.tensors.keys().collect::<Vec<_>>()
    );
    let mut worst = (0.0f64, String::new());
    for (name, t) in &single.tensors {
        let a = t.data.to_f64();
        let b = dp.tensors[name].data.to_f64();
        let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
        let diff = a
            .iter()
            .zip(&b)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
            / scale;
        if diff > worst.0 {
            worst = (diff, name.clone());
        }
    }
    eprintln!(
        "{model}: largest relative difference to one process: {:.3e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= REL_TOL,
        "{model}: %{} differs by {:.3e} (relative) from one process",
        worst.1,
        worst.0
    );
    names
}

#[test]
fn mpi_digits_mlp_two_ranks_match_one_process() {
    if mpirun().is_none() {
        return;
    }
    let names = ranks_agree_and_match_one_process(
        "digits_mlp.qir",
        12,
        &["--epochs", "2", "--max-batches", "6"],
    );
    // observer ranges are traced (and so identical on both ranks)
    assert!(names.iter().any(|n| n == "relu1.min"), "{names:?}");
    assert!(names.iter().any(|n| n == "x.max"), "{names:?}");
}

#[test]
fn mpi_batch_norm_model_two_ranks_match_one_process() {
    if mpirun().is_none() {
        return;
    }
    let names = ranks_agree_and_match_one_process(
        "residual.qir",
        12,
        &["--epochs", "2", "--max-batches", "6"],
    );
    // batch-norm running statistics are traced (and so identical on both ranks)
    assert!(names.iter().any(|n| n == "res.bn1.var"), "{names:?}");
    assert!(names.iter().any(|n| n == "stem.bn.mean"), "{names:?}");
}

#[test]
fn mpi_failing_rank_ends_the_job_and_keeps_the_checkpoint() {
    if mpirun().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    // 4 steps per epoch: rank 1 fails after step 6, in epoch 2
    let args = train_args(
        "digits_mlp.qir",
        &ckpt,
        &["--epochs", "3", "--max-batches", "4"],
    );
    let mut cmd = mpi_command(2, &args);
    cmd.env("QATC_DP_FAIL", "1:6");
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the job must fail");
    assert!(
        stderr.contains("rank 1 failed") && stderr.contains("injected failure"),
        "{stderr}"
    );
    let file = read_safetensors(&ckpt).expect("the last checkpoint is intact");
    assert_eq!(file.metadata.get("epoch").map(String::as_str), Some("1"));
    assert_eq!(
        file.metadata.get("global_step").map(String::as_str),
        Some("4")
    );
    assert!(file.tensors.contains_key("fc1.w"));
}

#[test]
fn mpi_killed_rank_ends_the_job_and_keeps_the_checkpoint() {
    if mpirun().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    // rank 1 aborts (SIGABRT, no error handling of ours) after step 6, in epoch 2: mpirun
    // must end the job instead of leaving rank 0 waiting in its next all-reduce
    let args = train_args(
        "digits_mlp.qir",
        &ckpt,
        &["--epochs", "3", "--max-batches", "4"],
    );
    let mut cmd = mpi_command(2, &args);
    cmd.env("QATC_DP_FAIL", "1:6:kill");
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the job must fail");
    assert!(
        stderr.contains("signal") || stderr.contains("abort"),
        "mpirun names the dead rank's signal: {stderr}"
    );
    let file = read_safetensors(&ckpt).expect("the last checkpoint is intact");
    assert_eq!(file.metadata.get("epoch").map(String::as_str), Some("1"));
    assert!(file.tensors.contains_key("fc1.w"));
}
