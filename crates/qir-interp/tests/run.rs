//! Session behaviour: input checking and symbolic dimensions, store errors, the loss
//! check, observers in train and eval mode, updates, precision, and an integer pipeline
//! (quantize -> qlinear -> requantize -> dequantize) against its float reference.

mod common;

use common::*;
use qir::{
    Attr, Data, ElemType, Graph, Init, Inst, Op, QuantParams, QuantType, Shape, Storage, Tensor,
    Type,
};
use qir_interp::{InterpError, Precision, RunOptions, Session, Store, fill_store, init_store, run};

/// The digits MLP forward graph with its loss.
fn mlp() -> Graph {
    let mut g = Graph::new("mlp");
    let x = g.add_input("x", bt(ElemType::F32, &[0, 64])).unwrap();
    let label = g.add_input("label", bt(ElemType::I32, &[0])).unwrap();
    let w1 = g
        .add_param("fc1.w", f32t(&[32, 64]), Init::KaimingUniform)
        .unwrap();
    let b1 = g.add_param("fc1.b", f32t(&[32]), Init::Zeros).unwrap();
    let w2 = g
        .add_param("fc2.w", f32t(&[10, 32]), Init::LecunUniform)
        .unwrap();
    let b2 = g.add_param("fc2.b", f32t(&[10]), Init::Zeros).unwrap();
    let h = op(
        &mut g,
        Op::Linear,
        &[x, w1, b1],
        &[("act", Attr::Enum("relu"))],
        "fc1",
    );
    let logits = op(&mut g, Op::Linear, &[h, w2, b2], &[], "logits");
    let loss = op(
        &mut g,
        Op::SoftmaxCrossEntropy,
        &[logits, label],
        &[],
        "loss",
    );
    g.add_output("logits", logits);
    g.set_loss(Some(loss));
    g
}

fn batch(n: usize) -> Vec<(&'static str, Tensor)> {
    let x: Vec<f32> = values(n * 64, 3).into_iter().map(|v| v as f32).collect();
    let labels: Vec<i32> = (0..n as i32).map(|i| i % 10).collect();
    vec![
        ("x", f32v(&[n, 64], x)),
        ("label", Tensor::new(vec![n], Data::I32(labels)).unwrap()),
    ]
}

fn err(g: &Graph, store: &mut Store, inp: Vec<(&str, Tensor)>) -> String {
    run(g, store, &inputs(inp), &RunOptions::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn symbolic_batch_binds_from_the_inputs() {
    let g = mlp();
    let mut store = init_store(&g, 1).unwrap();
    for n in [1, 7, 32] {
        let r = run(&g, &mut store, &inputs(batch(n)), &RunOptions::default()).unwrap();
        assert_eq!(r.outputs["logits"].shape, [n, 10]);
        let loss = r.loss.unwrap();
        // a freshly initialized 10-class classifier starts near ln 10
        assert!((loss - 10f64.ln()).abs() < 1.0, "loss {loss}");
    }
}

#[test]
fn input_errors_name_the_input() {
    let g = mlp();
    let mut store = init_store(&g, 1).unwrap();
    let mut b = batch(3);
    b[0].1 = f32v(&[3, 65], vec![0.0; 195]);
    assert_eq!(
        err(&g, &mut store, b),
        "input %x: expected f32[B, 64], got shape [3, 65]"
    );
    let mut b = batch(32);
    b[1].1 = Tensor::new(vec![31], Data::I32(vec![0; 31])).unwrap();
    assert_eq!(
        err(&g, &mut store, b),
        "input %label: expected i32[B], got shape [31] (B = 32 from %x)"
    );
    let mut b = batch(2);
    b[0].1 = Tensor::new(vec![2, 64], Data::I32(vec![0; 128])).unwrap();
    assert_eq!(
        err(&g, &mut store, b),
        "input %x: expected f32[B, 64], got i32 data"
    );
    let mut b = batch(2);
    b.remove(1);
    assert_eq!(err(&g, &mut store, b), "missing input %label (i32[B])");
    let mut b = batch(2);
    b.push(("lable", Tensor::scalar_f32(0.0)));
    assert_eq!(
        err(&g, &mut store, b),
        "unknown input 'lable': the graph has no input %lable (did you mean %label? the graph's inputs: %x, %label)"
    );
    // a tensor whose data does not fill its shape
    let mut b = batch(2);
    b[0].1 = Tensor {
        shape: vec![2, 64],
        data: Data::F32(vec![0.0; 3]),
    };
    assert_eq!(
        err(&g, &mut store, b),
        "input %x: shape [2, 64] needs 128 elements but the data holds 3"
    );
}

#[test]
fn store_and_data_errors_name_the_value() {
    let g = mlp();
    let mut store = init_store(&g, 1).unwrap();
    store.remove("fc2.b");
    let e = err(&g, &mut store, batch(2));
    assert!(e.starts_with("%fc2.b (f32[10]) is not in the store"), "{e}");
    store.insert("fc2.b", f32v(&[11], vec![0.0; 11]));
    assert_eq!(
        err(&g, &mut store, batch(2)),
        "stored value %fc2.b: expected f32[10], got shape [11]"
    );
    let mut store = init_store(&g, 1).unwrap();
    let mut b = batch(2);
    b[1].1 = Tensor::new(vec![2], Data::I32(vec![3, 10])).unwrap();
    assert_eq!(
        err(&g, &mut store, b),
        "%loss: 'softmax_cross_entropy' label 10 of row 1 is outside [0, 10)"
    );
    // a NaN loss is an error naming the loss
    let mut b = batch(2);
    b[0].1 = f32v(&[2, 64], vec![f32::NAN; 128]);
    let e = run(&g, &mut store, &inputs(b), &RunOptions::default()).unwrap_err();
    assert!(matches!(e, InterpError::Loss { .. }));
    assert_eq!(e.to_string(), "loss %loss is NaN");
    // an unverifiable graph is refused up front
    let mut bad = mlp();
    bad.name = "not valid".into();
    assert!(matches!(
        Session::new(&bad),
        Err(InterpError::InvalidGraph(_))
    ));
}

/// x -> observe_min/observe_max (EMA) into state, updates written back.
fn observer_graph() -> Graph {
    let mut g = Graph::new("obs");
    let x = g.add_input("x", f32t(&[4])).unwrap();
    let mn = g
        .add_state("mn", f32t(&[]), Init::Fill(f64::INFINITY))
        .unwrap();
    let mx = g
        .add_state("mx", f32t(&[]), Init::Fill(f64::NEG_INFINITY))
        .unwrap();
    let a = [("averaging", Attr::Float(0.5))];
    let mn1 = op(&mut g, Op::ObserveMin, &[x, mn], &a, "mn1");
    let mx1 = op(&mut g, Op::ObserveMax, &[x, mx], &a, "mx1");
    let q = [("qmin", Attr::Int(-128)), ("qmax", Attr::Int(127))];
    let s = op(&mut g, Op::QparamsScale, &[mn1, mx1], &q, "s");
    let z = op(&mut g, Op::QparamsZeroPoint, &[mn1, mx1], &q, "z");
    let y = op(&mut g, Op::FakeQuant, &[x, s, z], &q, "y");
    g.add_output("y", y);
    g.add_output("s", s);
    g.add_output("z", z);
    g.add_update(mn, mn1);
    g.add_update(mx, mx1);
    g
}

#[test]
fn observers_update_in_train_mode_only() {
    let g = observer_graph();
    let mut store = init_store(&g, 0).unwrap();
    let sess = Session::new(&g).unwrap();
    let feed = |v: [f32; 4]| inputs(vec![("x", f32v(&[4], v.to_vec()))]);
    // first batch replaces the infinite "nothing observed" values
    let r = sess
        .run(
            &mut store,
            &feed([-1.0, 0.5, 2.0, 3.0]),
            &RunOptions::default(),
        )
        .unwrap();
    assert_eq!(store.get("mn").unwrap().as_f32().unwrap(), [-1.0]);
    assert_eq!(store.get("mx").unwrap().as_f32().unwrap(), [3.0]);
    // s = 4 / 255, z = -128 - round(-1 / s) = -64
    assert_eq!(r.outputs["s"].as_f32().unwrap(), [4.0f32 / 255.0]);
    assert_eq!(r.outputs["z"].data, Data::I32(vec![-64]));
    // second batch: EMA with c = 0.5: min -1 + 0.5 * (-3 - -1) = -2, max 3 + 0.5 * (1 - 3) = 2
    sess.run(
        &mut store,
        &feed([-3.0, 0.0, 1.0, 0.5]),
        &RunOptions::default(),
    )
    .unwrap();
    assert_eq!(store.get("mn").unwrap().as_f32().unwrap(), [-2.0]);
    assert_eq!(store.get("mx").unwrap().as_f32().unwrap(), [2.0]);
    // Freezing observers is a graph rewrite (`freeze-observers` in the passes crate, which
    // has its own test); the interpreter has no run-time mode.
    // without apply_updates nothing is written
    let no = RunOptions {
        apply_updates: false,
        ..RunOptions::default()
    };
    sess.run(&mut store, &feed([-9.0, 0.0, 9.0, 0.0]), &no)
        .unwrap();
    assert_eq!(store.get("mn").unwrap().as_f32().unwrap(), [-2.0]);
}

#[test]
fn a_failed_run_leaves_the_store_untouched() {
    let mut g = observer_graph();
    let x = g.find("x").unwrap();
    let label = g
        .add_const(
            "label",
            Type::new(ElemType::I32, Shape::fixed(&[1])),
            Init::Dense(vec![7.0]),
        )
        .unwrap();
    let logits = op(
        &mut g,
        Op::Reshape,
        &[x],
        &[("shape", ints(&[1, 4]))],
        "logits",
    );
    let loss = op(
        &mut g,
        Op::SoftmaxCrossEntropy,
        &[logits, label],
        &[],
        "loss",
    );
    g.set_loss(Some(loss));
    let mut store = init_store(&g, 0).unwrap();
    let before = store.clone();
    let e = run(
        &g,
        &mut store,
        &inputs(vec![("x", f32v(&[4], vec![1.0; 4]))]),
        &RunOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "%loss: 'softmax_cross_entropy' label 7 of row 0 is outside [0, 4)"
    );
    assert_eq!(store, before);
}

#[test]
fn f64_precision_widens_and_updates_keep_the_declared_type() {
    let mut g = Graph::new("sgd");
    let w = g
        .add_param("w", f32t(&[3]), Init::Dense(vec![1.0, 2.0, 3.0]))
        .unwrap();
    let gr = g.add_input("g", f32t(&[3])).unwrap();
    let lr = g.add_const("lr", f32t(&[]), Init::Fill(0.1)).unwrap();
    let w1 = op(&mut g, Op::SgdUpdate, &[w, gr, lr], &[], "w1");
    g.add_output("w1", w1);
    g.add_update(w, w1);
    let mut store = init_store(&g, 0).unwrap();
    let opts = RunOptions {
        precision: Precision::F64,
        ..RunOptions::default()
    };
    let r = run(
        &g,
        &mut store,
        &inputs(vec![("g", f32v(&[3], vec![1.0, 1.0, 1.0]))]),
        &opts,
    )
    .unwrap();
    // computed in f64 from the widened f32 values: 0.1f32 as f64 is 0.10000000149011612
    let lr64 = 0.1f32 as f64;
    assert_eq!(
        r.outputs["w1"].as_f64().unwrap(),
        [1.0 - lr64, 2.0 - lr64, 3.0 - lr64]
    );
    // written back as f32
    assert_eq!(
        store.get("w").unwrap().as_f32().unwrap(),
        [
            (1.0 - lr64) as f32,
            (2.0 - lr64) as f32,
            (3.0 - lr64) as f32
        ]
    );
    // f64 data is accepted for f32 inputs
    let r = run(
        &g,
        &mut store,
        &inputs(vec![("g", f64t(&[3], vec![0.0; 3]))]),
        &RunOptions::default(),
    )
    .unwrap();
    assert!(r.outputs["w1"].as_f32().is_some());
    assert!(r.values.len() == g.node_count());
}

#[test]
fn external_values_come_from_the_store() {
    let mut g = mlp();
    let id = g.find("fc2.b").unwrap();
    g.node_mut(id).kind = qir::NodeKind::Param(Init::External);
    assert_eq!(
        init_store(&g, 0).unwrap_err().to_string(),
        "param %fc2.b: is external: load it from the weights file into the store first"
    );
    let mut store = Store::new();
    store.insert("fc2.b", f32v(&[10], vec![0.5; 10]));
    fill_store(&g, &mut store, 0).unwrap();
    assert_eq!(store.len(), 4);
    assert_eq!(store.get("fc2.b").unwrap().as_f32().unwrap(), [0.5; 10]);
}

/// quantize (u8) -> qlinear with per-channel weights whose scales are a named constant
/// -> requantize (i8, fused relu) -> dequantize, against the float computation on the
/// dequantized operands: within one output step everywhere.
#[test]
fn integer_pipeline_matches_its_float_reference() {
    let (sx, zx) = (0.05f32, 10i64);
    let ws = [0.02f32, 0.01, 0.04];
    let (sy, zy) = (0.1f32, -20i64);
    let mut g = Graph::new("int");
    let x = g.add_input("x", bt(ElemType::F32, &[0, 4])).unwrap();
    let xq_ty = bt(
        ElemType::Quant(Box::new(QuantType::per_tensor(Storage::U8, 0, 255, sx, zx))),
        &[0, 4],
    );
    let xq = g
        .add_op_typed(
            Inst::new(Op::Quantize)
                .with("rounding", Attr::Enum("half_even"))
                .unwrap(),
            &[x],
            xq_ty,
            Some("xq"),
        )
        .unwrap();
    g.add_const(
        "w.scales",
        f32t(&[3]),
        Init::Dense(ws.iter().map(|&s| s as f64).collect()),
    )
    .unwrap();
    let wq_ty = Type::new(
        ElemType::Quant(Box::new(QuantType {
            storage: Storage::I8,
            qmin: -127,
            qmax: 127,
            params: QuantParams::PerAxisRef {
                axis: 0,
                scales: "w.scales".into(),
                zero_points: None,
            },
        })),
        Shape::fixed(&[3, 4]),
    );
    let wv: Vec<f64> = vec![
        -127.0, 40.0, 3.0, 90.0, 12.0, -60.0, 127.0, 0.0, -5.0, 77.0, -100.0, 33.0,
    ];
    let wq = g.add_const("wq", wq_ty, Init::Dense(wv.clone())).unwrap();
    let bias_real = [0.3f64, -0.2, 0.05];
    let bv: Vec<f64> = bias_real
        .iter()
        .zip(ws)
        .map(|(b, s)| (b / (sx as f64 * s as f64)).round())
        .collect();
    let b = g
        .add_const(
            "bq",
            Type::new(ElemType::I32, Shape::fixed(&[3])),
            Init::Dense(bv.clone()),
        )
        .unwrap();
    let acc = op(&mut g, Op::Qlinear, &[xq, wq, b], &[], "acc");
    let (mut mult, mut shift) = (Vec::new(), Vec::new());
    for s in ws {
        let (m, sh) = qir::quant::quantize_multiplier(sx as f64 * s as f64 / sy as f64).unwrap();
        mult.push(m);
        shift.push(sh);
    }
    let yq_ty = bt(
        ElemType::Quant(Box::new(QuantType::per_tensor(
            Storage::I8,
            -128,
            127,
            sy,
            zy,
        ))),
        &[0, 3],
    );
    let rq = Inst::new(Op::Requantize)
        .with("multiplier", mult)
        .unwrap()
        .with("shift", shift)
        .unwrap()
        .with("axis", 1i64)
        .unwrap()
        .with("rounding", Attr::Enum("half_away_from_zero"))
        .unwrap()
        .with("act", Attr::Enum("relu"))
        .unwrap();
    let yq = g.add_op_typed(rq, &[acc], yq_ty, Some("yq")).unwrap();
    let y = op(&mut g, Op::Dequantize, &[yq], &[], "y");
    g.add_output("y", y);
    g.add_output("yq", yq);
    g.add_output("xq", xq);
    qir::verify::verify(&g).unwrap();

    let n = 16;
    let xs: Vec<f32> = values(n * 4, 21)
        .into_iter()
        .map(|v| (v * 5.0 + 4.0) as f32)
        .collect();
    let mut store = init_store(&g, 0).unwrap();
    let r = run(
        &g,
        &mut store,
        &inputs(vec![("x", f32v(&[n, 4], xs))]),
        &RunOptions::default(),
    )
    .unwrap();
    let Data::U8(xq) = &r.outputs["xq"].data else {
        panic!("u8 activations expected")
    };
    let Data::I8(yq) = &r.outputs["yq"].data else {
        panic!("i8 outputs expected")
    };
    for row in 0..n {
        for c in 0..3 {
            let mut acc = bias_real[c];
            for k in 0..4 {
                let xf = (xq[row * 4 + k] as f64 - zx as f64) * sx as f64;
                let wf = wv[c * 4 + k] * ws[c] as f64;
                acc += xf * wf;
            }
            let want = ((acc / sy as f64).round() + zy as f64).clamp(zy as f64, 127.0);
            let got = yq[row * 3 + c] as f64;
            assert!(
                (got - want).abs() <= 1.0,
                "row {row} channel {c}: {got} vs {want}"
            );
        }
    }
    // not a vacuous comparison: a good share of outputs is above the relu floor and below 127
    let live = yq.iter().filter(|&&q| q as i64 > zy && q < 127).count();
    assert!(
        live >= n,
        "only {live} of {} outputs are in range",
        yq.len()
    );
    // the dequantized output is (q - zy) * sy, and relu held it at >= 0
    let yf = r.outputs["y"].as_f32().unwrap();
    for (q, f) in yq.iter().zip(yf) {
        assert_eq!(*f, (*q as i64 - zy) as f32 * sy);
        assert!(*f >= 0.0);
    }
}
