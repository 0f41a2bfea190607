//! Bad input at run time is an [`ExecError`] from the JIT whose message names the input
//! or the op — never a panic or undefined behaviour: wrong shapes, a batch larger than a
//! fixed dimension, the wrong element type, missing and unknown inputs, labels out of
//! range, and a NaN loss (which must leave the store untouched).

use std::collections::HashMap;

use qir::{Data, Graph, Tensor};
use qir_exec::{ExecError, Executor, Inputs, Store, init_store};

fn parse(src: &str) -> Graph {
    qir_reader::parse_and_verify(src)
        .unwrap_or_else(|d| panic!("{}", qir_reader::render(&d, "t", src)))
}

fn digits_step() -> Graph {
    let path = format!(
        "{}/../../testdata/models/digits_mlp.qir",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut g = parse(&std::fs::read_to_string(path).unwrap());
    let pm = passes::PassManager::from_pipeline(
        &runtime::train::prepare_pipeline("tflite-int8").unwrap(),
    )
    .unwrap();
    pm.run(&mut g).unwrap();
    runtime::train::build_step(&g, &Default::default()).unwrap()
}

fn inputs(b: usize, per: usize, labels: Vec<i32>) -> Inputs {
    HashMap::from([
        (
            "x".to_string(),
            Tensor::f32(
                vec![b, per],
                (0..b * per).map(|i| (i % 7) as f32 / 7.0).collect(),
            )
            .unwrap(),
        ),
        (
            "label".to_string(),
            Tensor::new(vec![labels.len()], Data::I32(labels)).unwrap(),
        ),
        ("lr".to_string(), Tensor::scalar_f32(0.1)),
    ])
}

/// Runs `g` on the JIT and returns its error (the test fails if the run succeeds).
fn jit_err(g: &Graph, store: &mut Store, inputs: &Inputs) -> ExecError {
    let mut p = qir_jit::Jit::default().prepare(g, &[]).unwrap();
    match p.run(store, inputs) {
        Ok(_) => panic!("the JIT accepted bad input"),
        Err(e) => e,
    }
}

fn assert_names(e: &ExecError, what: &[&str]) {
    let m = e.to_string();
    for w in what {
        assert!(m.contains(w), "'{m}' does not name {w}");
    }
}

#[test]
fn jit_rejects_a_wrong_feature_size_naming_the_input() {
    let g = digits_step();
    let mut store = init_store(&g, 1).unwrap();
    let e = jit_err(&g, &mut store, &inputs(4, 63, vec![0, 1, 2, 3]));
    assert!(matches!(e, ExecError::Input(_)), "{e:?}");
    assert_names(&e, &["%x", "63", "64"]);
}

#[test]
fn jit_rejects_a_wrong_rank_and_a_batch_mismatch() {
    let g = digits_step();
    let mut store = init_store(&g, 1).unwrap();
    let mut bad = inputs(4, 64, vec![0, 1, 2, 3]);
    bad.insert(
        "x".into(),
        Tensor::f32(vec![4, 8, 8], vec![0.5; 256]).unwrap(),
    );
    let e = jit_err(&g, &mut store, &bad);
    assert!(matches!(e, ExecError::Input(_)), "{e:?}");
    assert_names(&e, &["%x"]);
    // 4 images but 3 labels: B cannot be both
    let e = jit_err(&g, &mut store, &inputs(4, 64, vec![0, 1, 2]));
    assert!(matches!(e, ExecError::Input(_)), "{e:?}");
    assert_names(&e, &["%label"]);
}

#[test]
fn jit_rejects_a_batch_larger_than_a_fixed_dimension() {
    let g = parse(
        "graph @fixed {
  input %x: f32[4, 3]
  param %w: f32[2, 3] = lecun_uniform
  %y = linear(%x, %w) : f32[4, 2]
  output y = %y
}",
    );
    let mut store = init_store(&g, 1).unwrap();
    let mut p = qir_jit::Jit::default().prepare(&g, &[]).unwrap();
    let ok = HashMap::from([(
        "x".to_string(),
        Tensor::f32(vec![4, 3], vec![1.0; 12]).unwrap(),
    )]);
    let r = p.run(&mut store, &ok).unwrap();
    assert_eq!(r.outputs["y"].shape, vec![4, 2]);
    for b in [5, 64] {
        let big = HashMap::from([(
            "x".to_string(),
            Tensor::f32(vec![b, 3], vec![1.0; b * 3]).unwrap(),
        )]);
        let e = p.run(&mut store, &big).unwrap_err();
        assert!(matches!(e, ExecError::Input(_)), "{e:?}");
        assert_names(&e, &["%x", &b.to_string(), "4"]);
    }
}

#[test]
fn jit_rejects_the_wrong_element_type() {
    let g = digits_step();
    let mut store = init_store(&g, 1).unwrap();
    let mut bad = inputs(2, 64, vec![0, 1]);
    bad.insert(
        "label".into(),
        Tensor::f32(vec![2], vec![0.0, 1.0]).unwrap(),
    );
    let e = jit_err(&g, &mut store, &bad);
    assert!(matches!(e, ExecError::Input(_)), "{e:?}");
    assert_names(&e, &["%label", "i32"]);
    let mut bad = inputs(2, 64, vec![0, 1]);
    bad.insert(
        "x".into(),
        Tensor::new(vec![2, 64], Data::I32(vec![0; 128])).unwrap(),
    );
    let e = jit_err(&g, &mut store, &bad);
    assert_names(&e, &["%x", "f32"]);
}

#[test]
fn jit_rejects_missing_and_unknown_inputs() {
    let g = digits_step();
    let mut store = init_store(&g, 1).unwrap();
    let mut missing = inputs(2, 64, vec![0, 1]);
    missing.remove("label");
    let e = jit_err(&g, &mut store, &missing);
    assert!(matches!(e, ExecError::Input(_)), "{e:?}");
    assert_names(&e, &["label"]);
    let mut missing_lr = inputs(2, 64, vec![0, 1]);
    missing_lr.remove("lr");
    assert_names(&jit_err(&g, &mut store, &missing_lr), &["lr"]);
    let mut unknown = inputs(2, 64, vec![0, 1]);
    unknown.insert("pixels".into(), Tensor::scalar_f32(1.0));
    let e = jit_err(&g, &mut store, &unknown);
    assert!(matches!(e, ExecError::Input(_)), "{e:?}");
    assert_names(&e, &["pixels"]);
}

#[test]
fn jit_rejects_labels_out_of_range_naming_the_op() {
    let g = digits_step();
    let mut store = init_store(&g, 1).unwrap();
    let before = store.clone();
    for label in [10, -1] {
        let e = jit_err(&g, &mut store, &inputs(2, 64, vec![0, label]));
        assert_names(&e, &["softmax_cross_entropy", "label", "%loss"]);
    }
    assert_stores_equal(&before, &store);
}

/// The training step of the float digits MLP (no fake-quant: a NaN input reaches the loss).
fn digits_float_step() -> Graph {
    let path = format!(
        "{}/../../testdata/models/digits_mlp.qir",
        env!("CARGO_MANIFEST_DIR")
    );
    let g = parse(&std::fs::read_to_string(path).unwrap());
    runtime::train::build_step(&g, &Default::default()).unwrap()
}

/// In a QAT step a NaN input makes the observed range, so the computed scale, NaN: both
/// executors stop at the fake-quant with the same message, before the store changes.
#[test]
fn jit_nan_scale_is_the_interpreters_error_and_leaves_the_store_untouched() {
    let g = digits_step();
    let mut store = init_store(&g, 1).unwrap();
    let mut p = qir_jit::Jit::default().prepare(&g, &[]).unwrap();
    p.run(&mut store, &inputs(3, 64, vec![0, 1, 2])).unwrap();
    let before = store.clone();
    let mut bad = inputs(3, 64, vec![0, 1, 2]);
    let mut x = vec![0.25f32; 3 * 64];
    x[70] = f32::NAN;
    bad.insert("x".into(), Tensor::f32(vec![3, 64], x).unwrap());
    let e = p.run(&mut store, &bad).unwrap_err();
    let mut i = qir_interp::Interpreter::default().prepare(&g, &[]).unwrap();
    let ei = i.run(&mut store.clone(), &bad).unwrap_err();
    assert_eq!(e.to_string(), ei.to_string());
    assert!(
        e.to_string()
            .contains("'fake_quant' the scale is NaN: scales must be positive and finite"),
        "{e}"
    );
    assert_stores_equal(&before, &store);
}

#[test]
fn jit_nan_loss_is_an_error_and_leaves_the_store_untouched() {
    let g = digits_float_step();
    let mut store = init_store(&g, 1).unwrap();
    // one good step first, so observers and moments hold real values
    let mut p = qir_jit::Jit::default().prepare(&g, &[]).unwrap();
    p.run(&mut store, &inputs(3, 64, vec![0, 1, 2])).unwrap();
    let before = store.clone();
    let mut bad = inputs(3, 64, vec![0, 1, 2]);
    let mut x = vec![0.25f32; 3 * 64];
    x[70] = f32::NAN;
    bad.insert("x".into(), Tensor::f32(vec![3, 64], x).unwrap());
    let e = p.run(&mut store, &bad).unwrap_err();
    match &e {
        ExecError::Loss { node, value } => {
            assert!(value.is_nan(), "{e}");
            assert!(node.contains("%loss"), "{e}");
        }
        other => panic!("expected a loss error, got {other:?}"),
    }
    assert_stores_equal(&before, &store);
    // the program still works afterwards
    let r = p.run(&mut store, &inputs(3, 64, vec![0, 1, 2])).unwrap();
    assert!(r.loss.unwrap().is_finite());
}

fn assert_stores_equal(a: &Store, b: &Store) {
    for (k, t) in a.iter() {
        let u = b.get(k).unwrap();
        let (x, y) = (t.data.to_f64(), u.data.to_f64());
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{k} changed"
        );
    }
}

/// The digits MLP's training step prepared with `scheme`.
fn digits_step_with(scheme: &str) -> Graph {
    let path = format!(
        "{}/../../testdata/models/digits_mlp.qir",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut g = parse(&std::fs::read_to_string(path).unwrap());
    let pm = passes::PassManager::from_pipeline(&runtime::train::prepare_pipeline(scheme).unwrap())
        .unwrap();
    pm.run(&mut g).unwrap();
    runtime::train::build_step(&g, &Default::default()).unwrap()
}

/// A program keeps what it checked between runs (the shapes of the inputs it bound, the
/// store versions it found valid); no change slips through that: after a good run the same
/// program rejects a changed input, a stored value of the wrong shape, a removed value and
/// a learned scale made negative, and runs again once each change is undone.
#[test]
fn jit_rechecks_what_changed_between_runs() {
    let g = digits_step_with("lsq");
    let mut store = init_store(&g, 1).unwrap();
    let mut p = qir_jit::Jit::default().prepare(&g, &[]).unwrap();
    let good = inputs(4, 64, vec![0, 1, 2, 3]);
    p.run(&mut store, &good).unwrap();

    let e = p
        .run(&mut store, &inputs(4, 63, vec![0, 1, 2, 3]))
        .unwrap_err();
    assert!(matches!(e, ExecError::Input(_)), "{e:?}");
    assert_names(&e, &["%x", "63"]);
    let mut ints = good.clone();
    ints.insert(
        "x".into(),
        Tensor::new(vec![4, 64], Data::I32(vec![0; 256])).unwrap(),
    );
    let e = p.run(&mut store, &ints).unwrap_err();
    assert!(matches!(e, ExecError::Input(_)), "{e:?}");
    assert_names(&e, &["%x", "i32"]);
    p.run(&mut store, &good).unwrap();

    let w = store.get("fc1.w").unwrap().clone();
    store.insert("fc1.w", Tensor::f32(vec![2], vec![0.0; 2]).unwrap());
    let e = p.run(&mut store, &good).unwrap_err();
    assert!(matches!(e, ExecError::Store(_)), "{e:?}");
    assert_names(&e, &["%fc1.w"]);
    store.remove("fc1.w");
    let e = p.run(&mut store, &good).unwrap_err();
    assert_names(&e, &["%fc1.w", "not in the store"]);
    store.insert("fc1.w", w);
    p.run(&mut store, &good).unwrap();

    let s = store.get("fc1.w.scale").unwrap().clone();
    let mut neg = s.clone();
    neg.data = Data::F32(vec![-0.5; s.numel()]);
    store.insert("fc1.w.scale", neg);
    let e = p.run(&mut store, &good).unwrap_err();
    assert_names(&e, &["%fc1.w.scale", "positive and finite"]);
    store.insert("fc1.w.scale", s);
    p.run(&mut store, &good).unwrap();
}
