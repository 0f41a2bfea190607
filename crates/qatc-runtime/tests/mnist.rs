//! MNIST from the shared data folder (gzipped IDX): loading, pixel scaling, and a short
//! training run of the MNIST MLP that must clearly learn.

mod common;
use common::executor;

use runtime::data::{Dataset, Feed, PixelScale};
use runtime::train::{TrainConfig, Trainer};

fn mnist() -> Dataset {
    let dir = common::repo().join("../shared/data/mnist");
    assert!(
        dir.is_dir(),
        "the shared MNIST data is missing: expected {} (the shared/ folder beside the repository)",
        dir.display()
    );
    Dataset::load(&dir).unwrap()
}

#[test]
fn mnist_loads_and_feeds_both_model_layouts() {
    let data = mnist();
    assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));
    assert_eq!(data.train.example_dims(), [28, 28]);
    assert_eq!(data.train.max_pixel(), 255);
    assert_eq!(PixelScale::Auto.factor(data.train.max_pixel()), 1.0 / 255.0);
    // Known first labels of the training and test sets.
    assert_eq!(&data.train.labels()[..5], &[5, 0, 4, 1, 9]);
    assert_eq!(&data.test.labels()[..5], &[7, 2, 1, 0, 4]);
    let counts = data.train.labels().iter().fold([0usize; 10], |mut c, &l| {
        c[l as usize] += 1;
        c
    });
    assert_eq!(
        counts,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    for (model, shape) in [
        ("mnist_mlp.qir", vec![2, 784]),
        ("mnist_cnn.qir", vec![2, 1, 28, 28]),
    ] {
        let feed = Feed::for_graph(&common::model(model), data.train.example_dims()).unwrap();
        let b = feed.batch(&data.train, &[0, 1], 1.0 / 255.0).unwrap();
        assert_eq!(b.inputs["x"].shape, shape);
        let x = b.inputs["x"].as_f32().unwrap();
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(x.contains(&1.0));
    }
}

#[test]
fn mnist_mlp_learns_in_a_short_run() {
    let mut data = mnist();
    data.test = data.test.take(1000);
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 64,
        max_train_batches: Some(60),
        lr: 0.05,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(&common::model("mnist_mlp.qir"), cfg, executor()).unwrap();
    let s = t.fit(&data, &mut []).unwrap();
    let acc = s.final_accuracy().unwrap();
    // 60 steps of 64 examples (6% of one epoch) already separate the digits well.
    assert!(acc > 0.8, "accuracy {acc} after {:?}", s.epochs);
}
