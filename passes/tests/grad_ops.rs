//! Finite-difference checks of the grad pass, one tiny f64 graph per differentiable op:
//! `loss = sum(op(params...) * r)` with a random input `r`, the analytic gradient of every
//! param (from `grad{optimizer=none}` run by the interpreter in f64) against the central
//! difference `(L(p + h) - L(p - h)) / 2h`, h = 1e-6, on every element, within
//! `|a - n| <= 1e-6 + 1e-5 * max(|a|, |n|)` (see `grad_common`).
//!
//! Fake quantization is piecewise constant (its true derivative is 0 almost everywhere),
//! so its rules are checked against their formulas instead: the clipped STE for
//! `fake_quant`, LSQ's gradients for `fake_quant_lsq`.

mod grad_common;

use grad_common::*;
use passes::grad::BnMode;
use qir::{Attr, Dim, ElemType, Init, Op, Shape, Type};
use qir_interp::init_store;

/// Attributes as written in a test case.
type Attrs = Vec<(&'static str, Attr)>;

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

fn b() -> Dim {
    Dim::from("B")
}

fn fixed(n: u64) -> Dim {
    Dim::Fixed(n)
}

/// Checks the case, asserts the params with gradients, and that the training step uses
/// the backward op `uses` (when given).
fn check(case: Case, params: &[&str], uses: &[Op]) {
    check_case(&case, params);
    let store = init_store(&case.g, 7).unwrap();
    let (step, _) = analytic(&case.g, &store, &case.inputs, BnMode::Train);
    let ops = ops(&step);
    for op in uses {
        assert!(ops.contains(op), "the training step should use '{op}'");
    }
}

#[test]
fn linear_with_each_fused_activation() {
    for (i, act) in ["none", "relu", "relu6"].into_iter().enumerate() {
        let mut c = Case::new("linear", 100 + i as u64);
        let x = c.param("x", &[3, 4], -3.0, 3.0);
        let w = c.param("w", &[5, 4], -2.0, 2.0);
        let bias = c.param("bias", &[5], -1.0, 1.0);
        let y = c.op(Op::Linear, &[x, w, bias], &[("act", Attr::Enum(act))]);
        let c = c.finish(y);
        check(c, &["bias", "w", "x"], &[Op::Matmul, Op::ReduceSum]);
    }
    // An input gets no gradient; a linear without bias.
    let mut c = Case::new("linear_input", 103);
    let x = c.input("x", &[b(), fixed(4)], -1.0, 1.0);
    let w = c.param("w", &[2, 4], -1.0, 1.0);
    let y = c.op(Op::Linear, &[x, w], &[]);
    check(c.finish(y), &["w"], &[]);
}

#[test]
fn matmul_with_every_transpose() {
    for (i, (ta, tb)) in [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .enumerate()
    {
        let mut c = Case::new("matmul", 200 + i as u64);
        let a_dims = if ta { [4, 3] } else { [3, 4] };
        let b_dims = if tb { [5, 4] } else { [4, 5] };
        let a = c.param("a", &a_dims, -1.0, 1.0);
        let bm = c.param("b", &b_dims, -1.0, 1.0);
        let y = c.op(
            Op::Matmul,
            &[a, bm],
            &[
                ("transpose_a", Attr::Bool(ta)),
                ("transpose_b", Attr::Bool(tb)),
            ],
        );
        check(c.finish(y), &["a", "b"], &[]);
    }
}

#[test]
fn conv2d_stride_padding_dilation_groups() {
    // (x dims, w dims, attrs)
    let cases: Vec<([u64; 4], [u64; 4], Attrs)> = vec![
        // stride 2 with asymmetric padding
        (
            [2, 3, 7, 6],
            [4, 3, 3, 2],
            vec![("stride", ints(&[2, 2])), ("padding", ints(&[1, 0, 2, 1]))],
        ),
        // dilation 2
        (
            [2, 2, 7, 7],
            [3, 2, 3, 3],
            vec![
                ("dilation", ints(&[2, 2])),
                ("padding", ints(&[2, 2, 2, 2])),
            ],
        ),
        // two groups, fused relu
        (
            [2, 4, 5, 5],
            [6, 2, 3, 3],
            vec![
                ("groups", Attr::Int(2)),
                ("padding", ints(&[1, 1, 1, 1])),
                ("act", Attr::Enum("relu")),
            ],
        ),
        // depthwise, stride 2, fused relu6
        (
            [2, 3, 6, 6],
            [3, 1, 3, 3],
            vec![
                ("groups", Attr::Int(3)),
                ("stride", ints(&[2, 2])),
                ("padding", ints(&[1, 1, 1, 1])),
                ("act", Attr::Enum("relu6")),
            ],
        ),
        // stride 3 leaving input rows unused, dilation 2 in one direction
        (
            [1, 2, 8, 9],
            [2, 2, 2, 3],
            vec![("stride", ints(&[3, 2])), ("dilation", ints(&[1, 2]))],
        ),
    ];
    for (i, (xd, wd, attrs)) in cases.into_iter().enumerate() {
        let mut c = Case::new("conv", 300 + i as u64);
        let x = c.param("x", &xd, -2.0, 2.0);
        let w = c.param("w", &wd, -2.0, 2.0);
        let bias = c.param("bias", &[wd[0]], -1.0, 1.0);
        let y = c.op(Op::Conv2d, &[x, w, bias], &attrs);
        check(
            c.finish(y),
            &["bias", "w", "x"],
            &[Op::Conv2dGradInput, Op::Conv2dGradWeight],
        );
    }
}

#[test]
fn pooling() {
    let k = |v: &[i64]| ("kernel", ints(v));
    let cases: Vec<(Op, [u64; 4], Attrs, Op)> = vec![
        (
            Op::MaxPool2d,
            [2, 2, 4, 6],
            vec![k(&[2, 2])],
            Op::MaxPool2dGrad,
        ),
        (
            Op::MaxPool2d,
            [2, 2, 5, 5],
            vec![
                k(&[3, 3]),
                ("stride", ints(&[2, 2])),
                ("padding", ints(&[1, 1, 1, 1])),
            ],
            Op::MaxPool2dGrad,
        ),
        (
            Op::AvgPool2d,
            [2, 2, 5, 5],
            vec![
                k(&[3, 3]),
                ("stride", ints(&[2, 2])),
                ("padding", ints(&[1, 1, 1, 1])),
            ],
            Op::AvgPool2dGrad,
        ),
        (
            Op::AvgPool2d,
            [2, 2, 5, 5],
            vec![
                k(&[3, 2]),
                ("stride", ints(&[1, 2])),
                ("padding", ints(&[1, 0, 1, 1])),
                ("count_include_pad", Attr::Bool(true)),
            ],
            Op::AvgPool2dGrad,
        ),
        (
            Op::GlobalAvgPool,
            [2, 3, 3, 4],
            vec![],
            Op::GlobalAvgPoolGrad,
        ),
    ];
    for (i, (op, xd, attrs, grad_op)) in cases.into_iter().enumerate() {
        let mut c = Case::new("pool", 400 + i as u64);
        let x = c.param("x", &xd, -2.0, 2.0);
        let y = c.op(op, &[x], &attrs);
        check(c.finish(y), &["x"], &[grad_op]);
    }
}

fn bn_case(seed: u64, xd: &[u64]) -> (Case, [qir::NodeId; 3]) {
    let mut c = Case::new("bn", seed);
    let ch = xd[1];
    let x = c.param("x", xd, -2.0, 3.0);
    let gamma = c.param("gamma", &[ch], 0.5, 2.0);
    let beta = c.param("beta", &[ch], -1.0, 1.0);
    (c, [x, gamma, beta])
}

#[test]
fn batch_norm_eval_mode() {
    let (mut c, [x, gamma, beta]) = bn_case(500, &[3, 4, 2, 2]);
    let mean = c.state("mean", &[4], vec![0.1, -0.2, 0.3, 0.0]);
    let var = c.state("var", &[4], vec![0.5, 1.5, 2.0, 0.8]);
    let y = c.op(Op::BatchNorm, &[x, gamma, beta, mean, var], &[]);
    let c = c.finish(y);
    let store = init_store(&c.g, 7).unwrap();
    let mut rng = Rng::new(1);
    let r = fd_check(&c.g, &store, &c.inputs, BnMode::Frozen, None, &mut rng);
    assert_eq!(r.params, ["beta", "gamma", "x"]);
    let (step, _) = analytic(&c.g, &store, &c.inputs, BnMode::Frozen);
    let ops = ops(&step);
    assert!(ops.contains(&Op::BatchNormGradInput) && ops.contains(&Op::BatchNormGradGamma));
    assert!(ops.contains(&Op::BatchNorm) && !ops.contains(&Op::BatchNormTrain));
}

#[test]
fn batch_norm_with_trained_statistics() {
    // Statistics that are params (not state) are differentiated too, by the composed
    // rules for mean and var.
    let (mut c, [x, gamma, beta]) = bn_case(501, &[2, 3, 2, 3]);
    let mean = c.param("mean", &[3], -0.5, 0.5);
    let var = c.param("var", &[3], 0.5, 2.0);
    let y = c.op(
        Op::BatchNorm,
        &[x, gamma, beta, mean, var],
        &[("eps", Attr::Float(0.01))],
    );
    let c = c.finish(y);
    let store = init_store(&c.g, 7).unwrap();
    let mut rng = Rng::new(2);
    let r = fd_check(&c.g, &store, &c.inputs, BnMode::Frozen, None, &mut rng);
    assert_eq!(r.params, ["beta", "gamma", "mean", "var", "x"]);
}

#[test]
fn batch_norm_train() {
    for (i, xd) in [[4u64, 3, 2, 2].as_slice(), &[5, 3]]
        .into_iter()
        .enumerate()
    {
        let (mut c, [x, gamma, beta]) = bn_case(502 + i as u64, xd);
        let y = c.op(
            Op::BatchNormTrain,
            &[x, gamma, beta],
            &[("eps", Attr::Float(1e-3))],
        );
        check(
            c.finish(y),
            &["beta", "gamma", "x"],
            &[Op::BatchNormTrainGradInput, Op::BatchNormTrainGradGamma],
        );
    }
}

#[test]
fn batch_norm_switched_to_training_mode() {
    // Eval-mode batch_norm with state statistics: grad trains it with batch statistics,
    // and the finite differences run the train-mode forward graph.
    let (mut c, [x, gamma, beta]) = bn_case(510, &[3, 2, 3, 2]);
    let mean = c.state("mean", &[2], vec![5.0, -5.0]);
    let var = c.state("var", &[2], vec![9.0, 0.1]);
    let y = c.op(Op::BatchNorm, &[x, gamma, beta, mean, var], &[]);
    let c = c.finish(y);
    check(
        c,
        &["beta", "gamma", "x"],
        &[Op::BatchNormTrainGradInput, Op::Ema, Op::Variance],
    );
}

#[test]
fn elementwise_activations_and_primitives() {
    let cases: [(Op, f64, f64, &[Op]); 9] = [
        (Op::Relu, -2.0, 2.0, &[Op::ReluGrad]),
        (Op::Relu6, -3.0, 9.0, &[Op::Relu6Grad]),
        (Op::Sigmoid, -4.0, 4.0, &[Op::SigmoidGrad]),
        (Op::Tanh, -3.0, 3.0, &[Op::TanhGrad]),
        (Op::Gelu, -3.0, 3.0, &[Op::GeluGrad]),
        (Op::Neg, -2.0, 2.0, &[Op::Neg]),
        (Op::Exp, -2.0, 2.0, &[]),
        (Op::Log, 0.2, 3.0, &[Op::Div]),
        (Op::Sqrt, 0.2, 3.0, &[Op::Div]),
    ];
    for (i, (op, lo, hi, uses)) in cases.into_iter().enumerate() {
        let mut c = Case::new("unary", 600 + i as u64);
        let x = c.param("x", &[3, 5], lo, hi);
        let y = c.op(op, &[x], &[]);
        check(c.finish(y), &["x"], uses);
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    // (a dims, b dims, b range): same shape, b broadcast from the right with a 1, a
    // broadcast, a scalar b.
    let shapes: [(&[u64], &[u64]); 4] = [
        (&[2, 3], &[2, 3]),
        (&[2, 3, 4], &[3, 1]),
        (&[4], &[2, 3, 4]),
        (&[2, 3], &[]),
    ];
    for (op, act) in [
        (Op::Add, "none"),
        (Op::Add, "relu"),
        (Op::Sub, "none"),
        (Op::Mul, "none"),
        (Op::Div, "none"),
    ] {
        for (i, (ad, bd)) in shapes.into_iter().enumerate() {
            let mut c = Case::new("binary", 700 + i as u64);
            let a = c.param("a", ad, -2.0, 2.0);
            let bv = c.param("b", bd, 0.5, 2.0);
            let attrs: Vec<(&str, Attr)> = if act == "none" {
                vec![]
            } else {
                vec![("act", Attr::Enum(act))]
            };
            let y = c.op(op, &[a, bv], &attrs);
            let c = c.finish(y);
            check_case(&c, &["a", "b"]);
            let store = init_store(&c.g, 7).unwrap();
            let (step, _) = analytic(&c.g, &store, &c.inputs, BnMode::Train);
            let broadcast = ad != bd;
            assert_eq!(
                ops(&step).contains(&Op::SumToLike),
                broadcast,
                "{op} of {ad:?} and {bd:?}: sum_to_like exactly when an operand was broadcast"
            );
        }
    }
}

#[test]
fn reshape_flatten_transpose() {
    let mut c = Case::new("reshape", 800);
    let x = c.param("x", &[2, 3, 4], -1.0, 1.0);
    let y = c.op(Op::Reshape, &[x], &[("shape", ints(&[4, -1]))]);
    check(c.finish(y), &["x"], &[Op::Reshape]);

    let mut c = Case::new("flatten", 801);
    let x = c.param("x", &[2, 3, 2, 2], -1.0, 1.0);
    let y = c.op(Op::Flatten, &[x], &[("axis", Attr::Int(2))]);
    check(c.finish(y), &["x"], &[Op::Reshape]);

    // With a symbolic batch the gradient reshapes back with -1.
    let mut c = Case::new("reshape_sym", 802);
    let x = c.input("x", &[b(), fixed(3), fixed(4)], -1.0, 1.0);
    let w = c.param("w", &[3, 4], -1.0, 1.0);
    let h = c.op(Op::Mul, &[x, w], &[]);
    let y = c.op(Op::Reshape, &[h], &[("shape", ints(&[-1, 12]))]);
    let c = c.finish(y);
    check_case(&c, &["w"]);
    let store = init_store(&c.g, 7).unwrap();
    let (step, _) = analytic(&c.g, &store, &c.inputs, BnMode::Train);
    assert!(qir::print::print(&step).contains("{shape = [-1, 3, 4]} : f64[B, 3, 4]"));

    let mut c = Case::new("transpose", 803);
    let x = c.param("x", &[2, 3, 4], -1.0, 1.0);
    let y = c.op(Op::Transpose, &[x], &[("perm", ints(&[2, 0, 1]))]);
    let c = c.finish(y);
    check_case(&c, &["x"]);
    let store = init_store(&c.g, 7).unwrap();
    let (step, _) = analytic(&c.g, &store, &c.inputs, BnMode::Train);
    assert!(qir::print::print(&step).contains("{perm = [1, 2, 0]}"));
}

#[test]
fn concat_and_slice() {
    let mut c = Case::new("concat", 900);
    let a = c.param("a", &[2, 2, 3], -1.0, 1.0);
    let k = c.constant("k", &[2, 1, 3], -1.0, 1.0);
    let d = c.param("d", &[2, 3, 3], -1.0, 1.0);
    let y = c.op(Op::Concat, &[a, k, d], &[("axis", Attr::Int(-2))]);
    check(c.finish(y), &["a", "d"], &[Op::Slice]);

    for (i, (start, end)) in [(1, 3), (0, 2), (2, 4), (0, 4)].into_iter().enumerate() {
        let mut c = Case::new("slice", 910 + i as u64);
        let x = c.param("x", &[3, 4, 2], -1.0, 1.0);
        let y = c.op(
            Op::Slice,
            &[x],
            &[
                ("axis", Attr::Int(1)),
                ("start", Attr::Int(start)),
                ("end", Attr::Int(end)),
            ],
        );
        check(c.finish(y), &["x"], &[]);
    }
}

#[test]
fn reductions() {
    let cases: [(Op, &[i64], bool); 8] = [
        (Op::ReduceSum, &[1], false),
        (Op::ReduceSum, &[0, 2], true),
        (Op::ReduceSum, &[0], false),
        (Op::ReduceSum, &[-1, 0, 1], false),
        (Op::ReduceMean, &[1, 2], false),
        (Op::ReduceMean, &[0], true),
        (Op::Variance, &[0], false),
        (Op::Variance, &[1], true),
    ];
    for (i, (op, axes, keep)) in cases.into_iter().enumerate() {
        let mut c = Case::new("reduce", 1000 + i as u64);
        let x = c.param("x", &[2, 3, 4], -2.0, 2.0);
        let y = c.op(
            op,
            &[x],
            &[("axes", ints(axes)), ("keepdims", Attr::Bool(keep))],
        );
        check(c.finish(y), &["x"], &[]);
    }
    // A non-leading reduction of a value with a symbolic batch (reshape with -1).
    let mut c = Case::new("reduce_sym", 1010);
    let x = c.input("x", &[b(), fixed(3), fixed(4)], -1.0, 1.0);
    let w = c.param("w", &[3, 4], -1.0, 1.0);
    let h = c.op(Op::Mul, &[x, w], &[]);
    let y = c.op(Op::ReduceSum, &[h], &[("axes", ints(&[1]))]);
    check(c.finish(y), &["w"], &[Op::Reshape, Op::BroadcastLike]);
}

#[test]
fn softmax_log_softmax_and_cross_entropy() {
    for (i, (op, axis)) in [
        (Op::Softmax, -1),
        (Op::Softmax, 0),
        (Op::LogSoftmax, -1),
        (Op::LogSoftmax, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Case::new("softmax", 1100 + i as u64);
        let x = c.param("x", &[3, 5], -3.0, 3.0);
        let y = c.op(op, &[x], &[("axis", Attr::Int(axis))]);
        check(c.finish(y), &["x"], &[]);
    }
    for (i, red) in ["mean", "sum"].into_iter().enumerate() {
        let mut c = Case::new("sce", 1110 + i as u64);
        let x = c.input("x", &[b(), fixed(4)], -1.0, 1.0);
        let w = c.param("w", &[5, 4], -2.0, 2.0);
        let logits = c.op(Op::Linear, &[x, w], &[]);
        let label = c.labels("label", 5);
        let y = c.op(
            Op::SoftmaxCrossEntropy,
            &[logits, label],
            &[("reduction", Attr::Enum(red))],
        );
        check(c.finish(y), &["w"], &[Op::SoftmaxCrossEntropyGrad]);
    }
}

#[test]
fn broadcast_like_and_sum_to_like() {
    let mut c = Case::new("broadcast_like", 1200);
    let x = c.param("x", &[3, 1], -1.0, 1.0);
    let like = c.constant("like", &[2, 3, 4], -1.0, 1.0);
    let y = c.op(Op::BroadcastLike, &[x, like], &[]);
    check(c.finish(y), &["x"], &[Op::SumToLike]);

    let mut c = Case::new("sum_to_like", 1201);
    let x = c.param("x", &[2, 3, 4], -1.0, 1.0);
    let like = c.param("like", &[3, 1], -1.0, 1.0);
    let y = c.op(Op::SumToLike, &[x, like], &[]);
    // `like` only gives the shape: it gets no gradient even as a param.
    check(c.finish(y), &["x"], &[Op::BroadcastLike]);
}

#[test]
fn fan_out_accumulates_with_add() {
    let mut c = Case::new("fan_out", 1300);
    let p = c.param("p", &[2, 3], -1.0, 1.0);
    let sq = c.op(Op::Mul, &[p, p], &[]);
    let e = c.op(Op::Exp, &[p], &[]);
    let s = c.op(Op::Add, &[sq, e], &[]);
    let y = c.op(Op::Mul, &[s, p], &[]);
    let c = c.finish(y);
    check_case(&c, &["p"]);
    let store = init_store(&c.g, 7).unwrap();
    let (step, _) = analytic(&c.g, &store, &c.inputs, BnMode::Train);
    let text = qir::print::print(&step);
    assert!(text.contains("%p.grad = add("), "{text}");
}

// ---- fake quantization: the rules against their formulas ---------------------------------

/// Round half to even, as the fake-quant ops do.
fn round_even(v: f64) -> f64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - v.signum()
    } else {
        r
    }
}

fn close(a: f64, e: f64) -> bool {
    (a - e).abs() <= ABS_TOL + REL_TOL * a.abs().max(e.abs())
}

fn assert_close(what: &str, a: &[f64], e: &[f64]) {
    assert_eq!(a.len(), e.len(), "{what}: length");
    for (i, (x, y)) in a.iter().zip(e).enumerate() {
        assert!(close(*x, *y), "{what}[{i}]: got {x}, expected {y}");
    }
}

/// The quantized value `round(x / s) + z` (multiplying by the inverse scale, as PyTorch).
fn q(x: f64, s: f64, z: f64) -> f64 {
    round_even(x * (1.0 / s)) + z
}

#[test]
fn fake_quant_is_the_clipped_ste() {
    // Per tensor, then per channel along axis 0.
    for per_channel in [false, true] {
        let mut c = Case::new("fq", 1400);
        let x = c.param("x", &[3, 4], -1.3, 1.3);
        let (scales, zps): (Vec<f64>, Vec<f64>) = if per_channel {
            (vec![0.1, 0.05, 0.2], vec![-2.0, 0.0, 3.0])
        } else {
            (vec![0.1], vec![-2.0])
        };
        let pshape: &[u64] = if per_channel { &[3] } else { &[] };
        let s =
            c.g.add_const(
                "s",
                Type::new(ElemType::F64, Shape::fixed(pshape)),
                Init::Dense(scales.clone()),
            )
            .unwrap();
        let z =
            c.g.add_const(
                "z",
                Type::new(ElemType::I32, Shape::fixed(pshape)),
                Init::Dense(zps.clone()),
            )
            .unwrap();
        let mut attrs = vec![("qmin", Attr::Int(-8)), ("qmax", Attr::Int(7))];
        if per_channel {
            attrs.push(("axis", Attr::Int(0)));
        }
        let y = c.op(Op::FakeQuant, &[x, s, z], &attrs);
        let c = c.finish(y);
        let store = init_store(&c.g, 7).unwrap();
        let (step, grads) = analytic(&c.g, &store, &c.inputs, BnMode::Train);
        assert!(ops(&step).contains(&Op::FakeQuantGrad));
        assert_eq!(grads.keys().collect::<Vec<_>>(), ["x"]);
        let xs = store.get("x").unwrap().data.to_f64();
        let r = c.inputs["r"].data.to_f64();
        let (mut inside, mut outside) = (0, 0);
        let expect: Vec<f64> = (0..12)
            .map(|i| {
                let ch = if per_channel { i / 4 } else { 0 };
                let qv = q(xs[i], scales[ch], zps[ch]);
                if (-8.0..=7.0).contains(&qv) {
                    inside += 1;
                    r[i]
                } else {
                    outside += 1;
                    0.0
                }
            })
            .collect();
        assert!(inside > 0 && outside > 0, "the data should hit both cases");
        assert_close("dx", &grads["x"], &expect);
    }
}

#[test]
fn fake_quant_parameters_from_observers_get_no_gradient() {
    let mut c = Case::new("fq_observed", 1410);
    let x = c.param("x", &[2, 5], -1.0, 1.0);
    let mn = c.state("x.min", &[], vec![f64::INFINITY]);
    let mx = c.state("x.max", &[], vec![f64::NEG_INFINITY]);
    let mn1 = c.op(Op::ObserveMin, &[x, mn], &[]);
    let mx1 = c.op(Op::ObserveMax, &[x, mx], &[]);
    let range = [("qmin", Attr::Int(-128)), ("qmax", Attr::Int(127))];
    let s = c.op(Op::QparamsScale, &[mn1, mx1], &range);
    let z = c.op(Op::QparamsZeroPoint, &[mn1, mx1], &range);
    let y = c.op(Op::FakeQuant, &[x, s, z], &range);
    let c = c.finish(y);
    let store = init_store(&c.g, 7).unwrap();
    let (step, grads) = analytic(&c.g, &store, &c.inputs, BnMode::Train);
    assert_eq!(grads.keys().collect::<Vec<_>>(), ["x"]);
    // The observed range covers x, so the STE passes every element through.
    assert_close("dx", &grads["x"], &c.inputs["r"].data.to_f64());
    let text = qir::print::print(&step);
    assert!(!text.contains("x.min.grad") && !text.contains("x.max.grad"));
}

struct Lsq {
    per_channel: bool,
    learn_zero_point: bool,
    grad_scale: Option<f64>,
    /// `zero_point_rounding = torch` (PyTorch's backward rounding) instead of the default.
    torch_rounding: bool,
}

#[test]
fn fake_quant_lsq_gradients_follow_the_formulas() {
    for cfg in [
        Lsq {
            per_channel: false,
            learn_zero_point: false,
            grad_scale: None,
            torch_rounding: false,
        },
        Lsq {
            per_channel: false,
            learn_zero_point: true,
            grad_scale: Some(0.5),
            torch_rounding: false,
        },
        Lsq {
            per_channel: true,
            learn_zero_point: true,
            grad_scale: None,
            torch_rounding: false,
        },
        Lsq {
            per_channel: true,
            learn_zero_point: true,
            grad_scale: None,
            torch_rounding: true,
        },
    ] {
        lsq_case(&cfg);
    }
}

fn lsq_case(cfg: &Lsq) {
    let (qmin, qmax) = (-8.0, 7.0);
    let mut c = Case::new("lsq", 1420);
    let x = c.param("x", &[3, 4], -1.3, 1.3);
    let (scales, zps): (Vec<f64>, Vec<f64>) = if cfg.per_channel {
        (vec![0.1, 0.05, 0.2], vec![-2.0, 0.0, 3.0])
    } else {
        (vec![0.1], vec![-2.0])
    };
    let pshape: &[u64] = if cfg.per_channel { &[3] } else { &[] };
    let s = c.param_values("s", pshape, scales.clone());
    let z = if cfg.learn_zero_point {
        c.param_values("z", pshape, zps.clone())
    } else {
        c.g.add_const(
            "z",
            Type::new(ElemType::F64, Shape::fixed(pshape)),
            Init::Dense(zps.clone()),
        )
        .unwrap()
    };
    let mut attrs = vec![
        ("qmin", Attr::Int(qmin as i64)),
        ("qmax", Attr::Int(qmax as i64)),
        ("learn_zero_point", Attr::Bool(cfg.learn_zero_point)),
    ];
    if cfg.per_channel {
        attrs.push(("axis", Attr::Int(0)));
    }
    if let Some(gs) = cfg.grad_scale {
        attrs.push(("grad_scale", Attr::Float(gs)));
    }
    if cfg.torch_rounding {
        attrs.push(("zero_point_rounding", Attr::Enum("torch")));
    }
    let y = c.op(Op::FakeQuantLsq, &[x, s, z], &attrs);
    let c = c.finish(y);
    let store = init_store(&c.g, 7).unwrap();
    let (step, grads) = analytic(&c.g, &store, &c.inputs, BnMode::Train);
    let mut want = vec!["s", "x"];
    if cfg.learn_zero_point {
        want.push("z");
    }
    assert_eq!(grads.keys().collect::<Vec<_>>(), want);
    let used = ops(&step);
    assert!(used.contains(&Op::FakeQuantLsqGradX) && used.contains(&Op::FakeQuantLsqGradScale));
    assert_eq!(
        used.contains(&Op::FakeQuantLsqGradZeroPoint),
        cfg.learn_zero_point
    );

    let xs = store.get("x").unwrap().data.to_f64();
    let r = c.inputs["r"].data.to_f64();
    let nch = scales.len();
    let per = 12 / nch;
    let gs = cfg.grad_scale.unwrap_or(1.0 / (per as f64 * qmax).sqrt());
    let mut dx = vec![0.0; 12];
    let mut ds = vec![0.0; nch];
    let mut dz = vec![0.0; nch];
    let (mut below, mut inside, mut above) = (0, 0, 0);
    for i in 0..12 {
        let ch = i / per;
        // By default the backward rounds the zero point as the forward does; PyTorch's
        // learnable backward (`zero_point_rounding = torch`) takes `trunc(clamp(z + 0.5))`
        // instead, so -2.0 acts as -1 there.
        let sv = scales[ch];
        let zv = if cfg.torch_rounding {
            (zps[ch] + 0.5).clamp(qmin, qmax).trunc()
        } else {
            round_even(zps[ch].clamp(qmin, qmax))
        };
        let qv = q(xs[i], sv, zv);
        if qv < qmin {
            below += 1;
            ds[ch] += r[i] * (qmin - zv) * gs;
            dz[ch] += -r[i] * sv * gs;
        } else if qv > qmax {
            above += 1;
            ds[ch] += r[i] * (qmax - zv) * gs;
            dz[ch] += -r[i] * sv * gs;
        } else {
            inside += 1;
            dx[i] = r[i];
            ds[ch] += r[i] * (round_even(xs[i] / sv) - xs[i] / sv) * gs;
        }
    }
    assert!(
        below > 0 && inside > 0 && above > 0,
        "the data should hit every case"
    );
    assert_close("dx", &grads["x"], &dx);
    assert_close("dscale", &grads["s"], &ds);
    if cfg.learn_zero_point {
        assert_close("dzero_point", &grads["z"], &dz);
    }
}
