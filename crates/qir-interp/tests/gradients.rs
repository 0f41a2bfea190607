//! Every backward op of the interpreter against central finite differences of its forward
//! op, run through the interpreter in f64: for a forward value `y` and an upstream
//! gradient `dy`, the backward op's result must equal d sum(dy * y) / d wrt.

mod common;

use std::collections::HashMap;

use common::*;
use qir::{Attr, ElemType, Graph, Init, Op, Tensor, Type};
use qir_interp::{Precision, RunOptions, init_store, run};

const OPTS: RunOptions = RunOptions {
    precision: Precision::F64,
    apply_updates: false,
};

/// A graph with f64 inputs, a forward output `y`, an upstream gradient input `dy` and a
/// gradient output `grad` with respect to input `wrt`.
struct Check {
    name: &'static str,
    g: Graph,
    inputs: HashMap<String, Tensor>,
    wrt: &'static str,
}

impl Check {
    fn new(name: &'static str, g: Graph, inputs: Vec<(&str, Tensor)>, wrt: &'static str) -> Check {
        Check {
            name,
            g,
            inputs: common::inputs(inputs),
            wrt,
        }
    }

    fn eval(&self, inputs: &HashMap<String, Tensor>) -> (Vec<f64>, Vec<f64>) {
        let mut store = init_store(&self.g, 0).unwrap();
        let r = run(&self.g, &mut store, inputs, &OPTS)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        (floats(&r.outputs["y"]), floats(&r.outputs["grad"]))
    }

    fn objective(&self, inputs: &HashMap<String, Tensor>) -> f64 {
        let (y, _) = self.eval(inputs);
        let dy = floats(&inputs["dy"]);
        assert_eq!(y.len(), dy.len(), "{}: dy must match y", self.name);
        y.iter().zip(&dy).map(|(a, b)| a * b).sum()
    }

    fn run(&self) {
        let (_, grad) = self.eval(&self.inputs);
        let base = floats(&self.inputs[self.wrt]);
        assert_eq!(grad.len(), base.len(), "{}: gradient shape", self.name);
        let h = 1e-6;
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                let mut inp = self.inputs.clone();
                let shape = inp[self.wrt].shape.clone();
                inp.insert(self.wrt.to_string(), f64t(&shape, v));
                self.objective(&inp)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            let err = (fd - grad[i]).abs();
            assert!(
                err <= 1e-6 * (1.0 + grad[i].abs()),
                "{}: d/d{}[{i}] is {} but finite differences give {fd} (error {err:e})",
                self.name,
                self.wrt,
                grad[i]
            );
        }
    }
}

fn input(g: &mut Graph, name: &str, dims: &[u64]) -> qir::NodeId {
    g.add_input(name, f32t(dims)).unwrap()
}

/// Elementwise ops: `y = f(x)`, `grad = f_grad(dy, x or y)`.
fn unary(name: &'static str, fwd: Op, bwd: Op, from_output: bool, xs: Vec<f64>) -> Check {
    let n = xs.len() as u64;
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", &[n]);
    let dy = input(&mut g, "dy", &[n]);
    let y = op(&mut g, fwd, &[x], &[], "y");
    let arg = if from_output { y } else { x };
    let d = op(&mut g, bwd, &[dy, arg], &[], "grad");
    g.add_output("y", y);
    g.add_output("grad", d);
    let len = xs.len();
    Check::new(
        name,
        g,
        vec![
            ("x", f64t(&[len], xs)),
            ("dy", f64t(&[len], values(len, 99))),
        ],
        "x",
    )
}

#[test]
fn elementwise_gradients() {
    // away from the kinks at 0 and 6
    let xs = vec![-2.5, -0.7, 0.3, 1.1, 4.0, 6.8, 7.5, -5.0];
    unary("relu", Op::Relu, Op::ReluGrad, false, xs.clone()).run();
    unary(
        "relu (from output)",
        Op::Relu,
        Op::ReluGrad,
        true,
        xs.clone(),
    )
    .run();
    unary("relu6", Op::Relu6, Op::Relu6Grad, false, xs.clone()).run();
    unary("sigmoid", Op::Sigmoid, Op::SigmoidGrad, true, xs.clone()).run();
    unary("tanh", Op::Tanh, Op::TanhGrad, true, xs.clone()).run();
    unary("gelu", Op::Gelu, Op::GeluGrad, false, xs).run();
}

fn conv_graph(grad_wrt_w: bool, attrs: &[(&str, Attr)]) -> Graph {
    // x [2, 4, 7, 6], w [6, 2, 3, 2] (groups 2)
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", &[2, 4, 7, 6]);
    let w = input(&mut g, "w", &[6, 2, 3, 2]);
    let y = op(&mut g, Op::Conv2d, &[x, w], attrs, "y");
    let yshape: Vec<u64> = g.ty(y).shape.as_fixed().unwrap();
    let dy = input(&mut g, "dy", &yshape);
    let d = if grad_wrt_w {
        let mut a = attrs.to_vec();
        a.push(("kernel", ints(&[3, 2])));
        op(&mut g, Op::Conv2dGradWeight, &[dy, x], &a, "grad")
    } else {
        let mut a = attrs.to_vec();
        a.push(("input_size", ints(&[7, 6])));
        op(&mut g, Op::Conv2dGradInput, &[dy, w], &a, "grad")
    };
    g.add_output("y", y);
    g.add_output("grad", d);
    g
}

#[test]
fn conv_gradients() {
    let attrs = [
        ("stride", ints(&[2, 1])),
        ("padding", ints(&[1, 0, 2, 1])),
        ("dilation", ints(&[1, 2])),
        ("groups", Attr::Int(2)),
    ];
    for wrt_w in [false, true] {
        let g = conv_graph(wrt_w, &attrs);
        let yshape: Vec<usize> = g
            .ty(g.output("y").unwrap())
            .shape
            .as_fixed()
            .unwrap()
            .iter()
            .map(|&d| d as usize)
            .collect();
        let ny: usize = yshape.iter().product();
        let inputs = vec![
            ("x", f64t(&[2, 4, 7, 6], values(2 * 4 * 7 * 6, 1))),
            ("w", f64t(&[6, 2, 3, 2], values(6 * 2 * 3 * 2, 2))),
            ("dy", f64t(&yshape, values(ny, 3))),
        ];
        let name = if wrt_w {
            "conv2d wrt w"
        } else {
            "conv2d wrt x"
        };
        Check::new(name, g, inputs, if wrt_w { "w" } else { "x" }).run();
    }
}

#[test]
fn pooling_gradients() {
    let x = values(2 * 3 * 5 * 5, 4);
    for (name, fwd, bwd) in [
        ("max_pool2d", Op::MaxPool2d, Op::MaxPool2dGrad),
        ("avg_pool2d", Op::AvgPool2d, Op::AvgPool2dGrad),
        ("avg_pool2d incl. padding", Op::AvgPool2d, Op::AvgPool2dGrad),
    ] {
        let mut attrs = vec![
            ("kernel", ints(&[3, 2])),
            ("stride", ints(&[2, 2])),
            ("padding", ints(&[1, 1, 1, 0])),
        ];
        if name.contains("incl") {
            attrs.push(("count_include_pad", Attr::Bool(true)));
        }
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", &[2, 3, 5, 5]);
        let y = op(&mut g, fwd, &[xi], &attrs, "y");
        let ys: Vec<u64> = g.ty(y).shape.as_fixed().unwrap();
        let dy = input(&mut g, "dy", &ys);
        let d = if fwd == Op::MaxPool2d {
            op(&mut g, bwd, &[dy, xi], &attrs, "grad")
        } else {
            attrs.push(("input_size", ints(&[5, 5])));
            op(&mut g, bwd, &[dy], &attrs, "grad")
        };
        g.add_output("y", y);
        g.add_output("grad", d);
        let ys: Vec<usize> = ys.iter().map(|&v| v as usize).collect();
        let ny = ys.iter().product();
        Check::new(
            name,
            g,
            vec![
                ("x", f64t(&[2, 3, 5, 5], x.clone())),
                ("dy", f64t(&ys, values(ny, 5))),
            ],
            "x",
        )
        .run();
    }
    let mut g = Graph::new("t");
    let xi = input(&mut g, "x", &[2, 3, 4, 5]);
    let y = op(&mut g, Op::GlobalAvgPool, &[xi], &[], "y");
    let dy = input(&mut g, "dy", &[2, 3, 1, 1]);
    let d = op(
        &mut g,
        Op::GlobalAvgPoolGrad,
        &[dy],
        &[("input_size", ints(&[4, 5]))],
        "grad",
    );
    g.add_output("y", y);
    g.add_output("grad", d);
    Check::new(
        "global_avg_pool",
        g,
        vec![
            ("x", f64t(&[2, 3, 4, 5], values(120, 6))),
            ("dy", f64t(&[2, 3, 1, 1], values(6, 7))),
        ],
        "x",
    )
    .run();
}

#[test]
fn batch_norm_gradients() {
    let shape = [3usize, 2, 2, 2];
    let x = values(24, 8);
    let gamma = vec![1.5, -0.7];
    let mean = vec![0.1, -0.2];
    let var = vec![0.8, 1.7];
    let dyv = values(24, 9);
    for wrt in ["x", "gamma"] {
        // inference form with given statistics
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", &[3, 2, 2, 2]);
        let gi = input(&mut g, "gamma", &[2]);
        let beta = g
            .add_const("beta", f32t(&[2]), Init::Dense(vec![0.3, -0.1]))
            .unwrap();
        let m = g
            .add_const("mean", f32t(&[2]), Init::Dense(mean.clone()))
            .unwrap();
        let v = g
            .add_const("var", f32t(&[2]), Init::Dense(var.clone()))
            .unwrap();
        let dy = input(&mut g, "dy", &[3, 2, 2, 2]);
        let y = op(&mut g, Op::BatchNorm, &[xi, gi, beta, m, v], &[], "y");
        let d = if wrt == "x" {
            op(&mut g, Op::BatchNormGradInput, &[dy, gi, v], &[], "grad")
        } else {
            op(&mut g, Op::BatchNormGradGamma, &[dy, xi, m, v], &[], "grad")
        };
        g.add_output("y", y);
        g.add_output("grad", d);
        let inputs = vec![
            ("x", f64t(&shape, x.clone())),
            ("gamma", f64t(&[2], gamma.clone())),
            ("dy", f64t(&shape, dyv.clone())),
        ];
        Check::new("batch_norm", g, inputs, wrt).run();

        // training form with batch statistics
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", &[3, 2, 2, 2]);
        let gi = input(&mut g, "gamma", &[2]);
        let beta = g
            .add_const("beta", f32t(&[2]), Init::Dense(vec![0.3, -0.1]))
            .unwrap();
        let dy = input(&mut g, "dy", &[3, 2, 2, 2]);
        let y = op(
            &mut g,
            Op::BatchNormTrain,
            &[xi, gi, beta],
            &[("eps", Attr::Float(1e-3))],
            "y",
        );
        let d = if wrt == "x" {
            op(
                &mut g,
                Op::BatchNormTrainGradInput,
                &[dy, xi, gi],
                &[("eps", Attr::Float(1e-3))],
                "grad",
            )
        } else {
            op(
                &mut g,
                Op::BatchNormTrainGradGamma,
                &[dy, xi],
                &[("eps", Attr::Float(1e-3))],
                "grad",
            )
        };
        g.add_output("y", y);
        g.add_output("grad", d);
        let inputs = vec![
            ("x", f64t(&shape, x.clone())),
            ("gamma", f64t(&[2], gamma.clone())),
            ("dy", f64t(&shape, dyv.clone())),
        ];
        Check::new("batch_norm_train", g, inputs, wrt).run();
    }
}

#[test]
fn reduction_and_softmax_gradients() {
    for (name, fwd, bwd, axes, keep) in [
        (
            "reduce_mean",
            Op::ReduceMean,
            Op::ReduceMeanGrad,
            vec![1i64],
            false,
        ),
        (
            "reduce_mean keepdims",
            Op::ReduceMean,
            Op::ReduceMeanGrad,
            vec![0, 2],
            true,
        ),
        ("variance", Op::Variance, Op::VarianceGrad, vec![0, 2], true),
        (
            "variance last axis",
            Op::Variance,
            Op::VarianceGrad,
            vec![-1],
            false,
        ),
    ] {
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", &[2, 3, 4]);
        let attrs = [("axes", ints(&axes)), ("keepdims", Attr::Bool(keep))];
        let y = op(&mut g, fwd, &[xi], &attrs, "y");
        let ys: Vec<u64> = g.ty(y).shape.as_fixed().unwrap();
        let dy = input(&mut g, "dy", &ys);
        let d = op(&mut g, bwd, &[dy, xi], &attrs, "grad");
        g.add_output("y", y);
        g.add_output("grad", d);
        let ys: Vec<usize> = ys.iter().map(|&v| v as usize).collect();
        let ny = ys.iter().product();
        Check::new(
            name,
            g,
            vec![
                ("x", f64t(&[2, 3, 4], values(24, 10))),
                ("dy", f64t(&ys, values(ny, 11))),
            ],
            "x",
        )
        .run();
    }
    for (name, fwd, bwd, axis) in [
        ("softmax", Op::Softmax, Op::SoftmaxGrad, 0i64),
        ("softmax last", Op::Softmax, Op::SoftmaxGrad, -1),
        ("log_softmax", Op::LogSoftmax, Op::LogSoftmaxGrad, 1),
    ] {
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", &[3, 4]);
        let dy = input(&mut g, "dy", &[3, 4]);
        let y = op(&mut g, fwd, &[xi], &[("axis", Attr::Int(axis))], "y");
        let d = op(&mut g, bwd, &[dy, y], &[("axis", Attr::Int(axis))], "grad");
        g.add_output("y", y);
        g.add_output("grad", d);
        Check::new(
            name,
            g,
            vec![
                ("x", f64t(&[3, 4], values(12, 12))),
                ("dy", f64t(&[3, 4], values(12, 13))),
            ],
            "x",
        )
        .run();
    }
    for reduction in ["mean", "sum"] {
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", &[3, 4]);
        let labels = g
            .add_const(
                "labels",
                Type::new(ElemType::I32, qir::Shape::fixed(&[3])),
                Init::Dense(vec![2.0, 0.0, 3.0]),
            )
            .unwrap();
        let dy = input(&mut g, "dy", &[]);
        let attrs = [(
            "reduction",
            Attr::Enum(if reduction == "mean" { "mean" } else { "sum" }),
        )];
        let y = op(&mut g, Op::SoftmaxCrossEntropy, &[xi, labels], &attrs, "y");
        let d = op(
            &mut g,
            Op::SoftmaxCrossEntropyGrad,
            &[dy, xi, labels],
            &attrs,
            "grad",
        );
        g.add_output("y", y);
        g.add_output("grad", d);
        Check::new(
            "softmax_cross_entropy",
            g,
            vec![
                ("x", f64t(&[3, 4], values(12, 14))),
                ("dy", f64t(&[], vec![0.7])),
            ],
            "x",
        )
        .run();
    }
}

#[test]
fn broadcast_adjoint() {
    // y = x + broadcast_like(b, x); the gradient wrt b is sum_to_like(dy, b)
    let mut g = Graph::new("t");
    let xi = input(&mut g, "x", &[2, 3]);
    let b = input(&mut g, "b", &[1, 3]);
    let bb = op(&mut g, Op::BroadcastLike, &[b, xi], &[], "bb");
    let y = op(&mut g, Op::Mul, &[xi, bb], &[], "y");
    let dy = input(&mut g, "dy", &[2, 3]);
    // d sum(dy * x * b) / db = sum over rows of dy * x
    let dyx = op(&mut g, Op::Mul, &[dy, xi], &[], "dyx");
    let d = op(&mut g, Op::SumToLike, &[dyx, b], &[], "grad");
    g.add_output("y", y);
    g.add_output("grad", d);
    Check::new(
        "broadcast_like / sum_to_like",
        g,
        vec![
            ("x", f64t(&[2, 3], values(6, 15))),
            ("b", f64t(&[1, 3], values(3, 16))),
            ("dy", f64t(&[2, 3], values(6, 17))),
        ],
        "b",
    )
    .run();
}
