//! Pictures of training: `train --plot DIR` and `qatc plot RUN...`. The SVG files are
//! checked for what they must show — axis titles, one marker per epoch and curve, every
//! site's histogram with its range — and the site data for exact counts.

mod common;

use std::path::Path;

use common::{Run, qatc_in, testdata};

fn svg(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()));
    assert!(
        text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
        "{name}"
    );
    text
}

fn ok(run: &Run) {
    assert_eq!(run.code, Some(0), "{}", run.all());
}

fn train(d: &Path, scheme: Option<&str>, plot: &str) -> Run {
    let model = testdata().join("models/digits_mlp.qir");
    let data = testdata().join("digits");
    let (m, dd) = (model.to_string_lossy(), data.to_string_lossy());
    let out = format!("{plot}.st");
    let mut args = vec![
        "train",
        &m,
        "--data",
        &dd,
        "--epochs",
        "3",
        "--plot",
        plot,
        "-o",
        &out,
        "--no-progress",
    ];
    if let Some(s) = scheme {
        args.extend(["--scheme", s]);
    }
    qatc_in(d, &args, None)
}

#[test]
fn train_plot_draws_every_epoch_and_every_site() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = train(d, Some("tflite-int8"), "qat");
    ok(&run);
    assert!(
        run.stdout
            .contains("wrote the pictures to qat (3 curves, 5 site histogram(s))"),
        "{}",
        run.stdout
    );
    let qat = d.join("qat");
    let loss = svg(&qat, "loss.svg");
    for text in [
        "epoch",
        "mean cross-entropy loss",
        "train loss",
        "test loss",
    ] {
        assert!(loss.contains(text), "loss.svg lacks {text}");
    }
    // a marker per epoch on the train and test curves
    assert_eq!(loss.matches("<circle").count(), 2 * 3);
    let acc = svg(&qat, "accuracy.svg");
    assert!(acc.contains("test accuracy (%)"));
    assert_eq!(acc.matches("<circle").count(), 3);
    assert!(svg(&qat, "lr.svg").contains("learning rate"));
    // the metrics the curves were drawn from
    let metrics = std::fs::read_to_string(qat.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);

    // one histogram per fake-quant site, titled with its value, bits and clipped share
    for (site, title) in [
        ("x", "%x — 8-bit, scale"),
        ("relu1", "%relu1 — 8-bit, scale"),
        ("logits", "%logits — 8-bit, scale"),
        ("fc1.w", "%fc1.w — 8-bit per channel (32 channels)"),
        ("fc2.w", "%fc2.w — 8-bit per channel (10 channels)"),
    ] {
        let s = svg(&qat.join("sites"), &format!("{site}.svg"));
        assert!(s.contains(title), "{site}.svg lacks '{title}'");
        assert!(s.contains("% clipped"), "{site}");
        assert!(s.contains("range ["), "{site}");
        assert!(s.contains("count (log scale)"), "{site}");
    }
    // the data behind them: weights counted once, pixels of 8 batches of 32, and the
    // input's range (observed over all of training) clips none of them
    let sites: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(qat.join("sites.json")).unwrap()).unwrap();
    let by_name = |n: &str| {
        sites
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("no site {n}"))
            .clone()
    };
    assert_eq!(by_name("%fc1.w")["total"], 32 * 64);
    assert_eq!(by_name("%x")["total"], 8 * 32 * 64);
    assert_eq!(by_name("%x")["clipped"], 0);
    let counts: u64 = by_name("%x")["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(counts, 8 * 32 * 64);

    // `qatc plot DIR` draws the same pictures again from the files
    std::fs::remove_file(qat.join("loss.svg")).unwrap();
    std::fs::remove_dir_all(qat.join("sites")).unwrap();
    let run = qatc_in(d, &["plot", "qat"], None);
    ok(&run);
    assert_eq!(run.stdout, "wrote 8 picture(s) to qat\n");
    // the same points (the title names the run by its directory now)
    let markers = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("<circle"))
            .map(str::to_string)
            .collect()
    };
    let again = svg(&qat, "loss.svg");
    assert!(
        markers(&again) == markers(&loss),
        "the redrawn loss.svg differs"
    );
    assert!(again.contains("loss per epoch — qat"));
    assert!(qat.join("sites/fc1.w.svg").is_file());
}

#[test]
fn plot_overlays_runs_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&train(d, None, "float"));
    ok(&train(d, Some("tflite-int8"), "qat"));
    // a float run has no sites
    assert!(!d.join("float/sites").exists());
    let run = qatc_in(d, &["plot", "float", "qat", "-o", "both"], None);
    ok(&run);
    let loss = svg(&d.join("both"), "loss.svg");
    for label in [
        "float: train loss",
        "float: test loss",
        "qat: train loss",
        "qat: test loss",
    ] {
        assert!(loss.contains(label), "{label}");
    }
    assert!(loss.contains("float vs qat"));
    assert_eq!(loss.matches("<circle").count(), 4 * 3);
    // a metrics file is a run too
    let run = qatc_in(d, &["plot", "qat/metrics.jsonl", "-o", "one"], None);
    ok(&run);
    assert!(svg(&d.join("one"), "accuracy.svg").contains("test accuracy"));

    let err = |run: &Run, want: &str| {
        assert_eq!(run.code, Some(1), "{}", run.all());
        assert_eq!(run.stderr, format!("error: {want}\n"));
    };
    err(
        &qatc_in(d, &["plot", "missing"], None),
        "give the directory for the pictures with -o DIR",
    );
    err(
        &qatc_in(d, &["plot", "missing", "-o", "x"], None),
        "missing: no such run directory or metrics file",
    );
    std::fs::write(d.join("bad.jsonl"), "{\"epoch\": 1}\n").unwrap();
    let run = qatc_in(d, &["plot", "bad.jsonl", "-o", "x"], None);
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stderr
            .starts_with("error: bad.jsonl: line 1: not a metrics record"),
        "{}",
        run.stderr
    );
    // --plot on a file fails before training
    std::fs::write(d.join("afile"), "").unwrap();
    let run = train(d, None, "afile");
    err(&run, "--plot afile is a file; give a directory");
    assert_eq!(run.stdout, "");
}
