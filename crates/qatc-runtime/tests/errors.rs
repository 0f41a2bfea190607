//! Errors a user meets: data that do not fit the model, bad settings, bad directories.

mod common;
use common::executor;

use runtime::data::Dataset;
use runtime::train::{TrainConfig, Trainer};

fn err(model: &qir::Graph, cfg: TrainConfig) -> String {
    let data = common::digits();
    match Trainer::new(model, cfg, executor()) {
        Err(e) => e.to_string(),
        Ok(mut t) => t
            .fit(&data, &mut [])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    }
}

fn parse(src: &str) -> qir::Graph {
    qir_reader::parse_and_verify(src)
        .unwrap_or_else(|d| panic!("{}", qir_reader::render(&d, "t", src)))
}

#[test]
fn image_shape_mismatch_names_the_input() {
    let e = err(&common::model("mnist_mlp.qir"), TrainConfig::default());
    assert_eq!(
        e,
        "image input %x: f32[B, 784] takes 784 values per example but the data have 8×8 = 64 pixels"
    );
}

#[test]
fn labels_beyond_the_classes() {
    let g = parse(
        "graph @m {
  input %x: f32[B, 64]
  input %label: i32[B]
  param %w: f32[8, 64] = lecun_uniform
  %logits = linear(%x, %w) : f32[B, 8]
  %loss = softmax_cross_entropy(%logits, %label) : f32[]
  output logits = %logits
  loss %loss
}",
    );
    assert_eq!(
        err(&g, TrainConfig::default()),
        "the training labels go up to 9 but output logits has 8 classes"
    );
}

#[test]
fn model_without_loss_or_labels() {
    let g = parse(
        "graph @m {
  input %x: f32[B, 64]
  param %w: f32[10, 64] = lecun_uniform
  %logits = linear(%x, %w) : f32[B, 10]
  output logits = %logits
}",
    );
    let e = err(&g, TrainConfig::default());
    assert!(
        e.starts_with("pass 'grad' failed: the graph has no loss"),
        "{e}"
    );
}

#[test]
fn bad_settings() {
    let g = common::model("digits_mlp.qir");
    let cases = [
        (
            TrainConfig {
                epochs: 0,
                ..TrainConfig::default()
            },
            "epochs must be at least 1",
        ),
        (
            TrainConfig {
                batch_size: 0,
                ..TrainConfig::default()
            },
            "the batch size must be at least 1",
        ),
        (
            TrainConfig {
                lr: f64::NAN,
                ..TrainConfig::default()
            },
            "the learning rate must be a positive number, found NaN",
        ),
        (
            TrainConfig {
                momentum: 1.5,
                ..TrainConfig::default()
            },
            "option 'momentum' of pass 'grad' expects a number in [0, 1), found '1.5'",
        ),
    ];
    for (cfg, want) in cases {
        assert_eq!(err(&g, cfg), want);
    }
}

#[test]
fn data_directory_errors() {
    let d = tempfile::tempdir().unwrap();
    let e = Dataset::load(d.path()).unwrap_err().to_string();
    assert!(
        e.ends_with(": no train-images-idx3-ubyte or train-images-idx3-ubyte.gz in this directory"),
        "{e}"
    );
    // A labels file that is not IDX.
    for f in [
        "train-images-idx3-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::copy(
            common::repo().join("testdata/digits").join(f),
            d.path().join(f),
        )
        .unwrap();
    }
    std::fs::write(d.path().join("train-labels-idx1-ubyte"), b"not idx").unwrap();
    let e = Dataset::load(d.path()).unwrap_err().to_string();
    assert!(
        e.ends_with("train-labels-idx1-ubyte: bad magic number 0x6e6f7420: not an IDX file (expected 0x0000080N for u8 data with N dimensions)"),
        "{e}"
    );
    // Truncated images.
    std::fs::copy(
        common::repo().join("testdata/digits/train-labels-idx1-ubyte"),
        d.path().join("train-labels-idx1-ubyte"),
    )
    .unwrap();
    let img = std::fs::read(d.path().join("t10k-images-idx3-ubyte")).unwrap();
    std::fs::write(
        d.path().join("t10k-images-idx3-ubyte"),
        &img[..img.len() - 10],
    )
    .unwrap();
    let e = Dataset::load(d.path()).unwrap_err().to_string();
    assert!(
        e.ends_with("t10k-images-idx3-ubyte: truncated data: the header declares 360×8×8 = 23040 bytes but only 23030 follow"),
        "{e}"
    );
}
