//! Every op of the op table runs in the interpreter on a tiny hand-computed example. The
//! table below matches on `Op` exhaustively, so a new op does not compile until it has a
//! case here, and the test walks `Op::ALL` so none is skipped.

mod common;

use std::collections::HashMap;

use common::*;
use qir::{Attr, Data, ElemType, Graph, Init, Inst, NodeId, Op, QuantType, Shape, Storage, Type};
use qir_interp::{RunOptions, init_store, run};

/// Expected value of output `y`.
enum Want {
    F(Vec<f64>),
    I(Vec<i64>),
}

struct B {
    g: Graph,
    n: usize,
}

impl B {
    fn new() -> B {
        B {
            g: Graph::new("t"),
            n: 0,
        }
    }
    fn name(&mut self) -> String {
        self.n += 1;
        format!("c{}", self.n)
    }
    fn decl(&mut self, ty: Type, v: &[f64]) -> NodeId {
        let name = self.name();
        self.g
            .add_const(&name, ty, Init::Dense(v.to_vec()))
            .unwrap()
    }
    /// An f32 constant.
    fn f(&mut self, dims: &[u64], v: &[f64]) -> NodeId {
        self.decl(f32t(dims), v)
    }
    /// An integer constant.
    fn i(&mut self, elem: ElemType, dims: &[u64], v: &[f64]) -> NodeId {
        self.decl(Type::new(elem, Shape::fixed(dims)), v)
    }
    /// A quantized constant (storage values).
    fn q(&mut self, qt: QuantType, dims: &[u64], v: &[f64]) -> NodeId {
        self.decl(qty(qt, dims), v)
    }
    /// The op under test, named `y`, result type inferred.
    fn y(mut self, op: Op, args: &[NodeId], attrs: &[(&str, Attr)]) -> Graph {
        let y = common::op(&mut self.g, op, args, attrs, "y");
        self.g.add_output("y", y);
        self.g
    }
    /// The op under test with a written (quantized) result type.
    fn yt(mut self, op: Op, args: &[NodeId], attrs: &[(&str, Attr)], ty: Type) -> Graph {
        let mut inst = Inst::new(op);
        for (k, v) in attrs {
            inst.set(k, v.clone()).unwrap();
        }
        let y = self.g.add_op_typed(inst, args, ty, Some("y")).unwrap();
        self.g.add_output("y", y);
        self.g
    }
}

fn qty(qt: QuantType, dims: &[u64]) -> Type {
    Type::new(ElemType::Quant(Box::new(qt)), Shape::fixed(dims))
}
fn i8q(scale: f32, zp: i64) -> QuantType {
    QuantType::per_tensor(Storage::I8, -128, 127, scale, zp)
}
fn int(v: i64) -> Attr {
    Attr::Int(v)
}
fn fl(v: f64) -> Attr {
    Attr::Float(v)
}
fn i32e() -> ElemType {
    ElemType::I32
}
fn q8() -> [(&'static str, Attr); 2] {
    [("qmin", int(-128)), ("qmax", int(127))]
}

/// `[1, -3] op [2]` (broadcast).
fn binary(mut b: B, op: Op, attrs: &[(&str, Attr)], want: &[f64]) -> (Graph, Want) {
    let x = b.f(&[2], &[1.0, -3.0]);
    let s = b.f(&[1], &[2.0]);
    (b.y(op, &[x, s], attrs), Want::F(want.to_vec()))
}

/// A reduction of `[[1, 2], [3, 5]]` over axis 1.
fn reduction(mut b: B, op: Op, want: &[f64]) -> (Graph, Want) {
    let x = b.f(&[2, 2], &[1.0, 2.0, 3.0, 5.0]);
    (
        b.y(op, &[x], &[("axes", ints(&[1]))]),
        Want::F(want.to_vec()),
    )
}

/// An LSQ gradient with dy = 1, scale 0.5, zero point 0, grad_scale 1 where it applies.
fn lsq(mut b: B, op: Op, want: &[f64]) -> (Graph, Want) {
    let (dy, x) = (b.f(&[2], &[1.0, 1.0]), b.f(&[2], &[0.3, 100.0]));
    let (s, z) = (b.f(&[], &[0.5]), b.f(&[], &[0.0]));
    let mut a = q8().to_vec();
    if op != Op::FakeQuantLsqGradX {
        a.push(("grad_scale", fl(1.0)));
    }
    (b.y(op, &[dy, x, s, z], &a), Want::F(want.to_vec()))
}

/// The graph and the expected `y` of each op.
fn case(op: Op) -> (Graph, Want) {
    use Want::{F, I};
    let mut b = B::new();
    let ln3 = 3f64.ln();
    match op {
        Op::Linear => {
            let x = b.f(&[1, 2], &[1.0, 2.0]);
            let w = b.f(&[2, 2], &[1.0, 0.0, 1.0, -1.0]);
            let bias = b.f(&[2], &[0.5, 0.0]);
            // [1 + 0.5, 1 - 2] then relu
            (
                b.y(op, &[x, w, bias], &[("act", Attr::Enum("relu"))]),
                F(vec![1.5, 0.0]),
            )
        }
        Op::Matmul => {
            let a = b.f(&[1, 2], &[1.0, 2.0]);
            let m = b.f(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
            (
                b.y(op, &[a, m], &[("transpose_b", Attr::Bool(true))]),
                F(vec![1.0, 2.0, 3.0]),
            )
        }
        Op::Conv2d => {
            let x = b.f(
                &[1, 1, 3, 3],
                &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
            );
            let w = b.f(&[1, 1, 2, 2], &[1.0; 4]);
            let bias = b.f(&[1], &[1.0]);
            (b.y(op, &[x, w, bias], &[]), F(vec![13.0, 17.0, 25.0, 29.0]))
        }
        Op::MaxPool2d | Op::AvgPool2d => {
            let x = b.f(&[1, 1, 2, 2], &[1.0, 4.0, 3.0, 2.0]);
            let want = if op == Op::MaxPool2d { 4.0 } else { 2.5 };
            (b.y(op, &[x], &[("kernel", ints(&[2, 2]))]), F(vec![want]))
        }
        Op::GlobalAvgPool => {
            let x = b.f(&[1, 1, 2, 2], &[1.0, 4.0, 3.0, 2.0]);
            (b.y(op, &[x], &[]), F(vec![2.5]))
        }
        Op::BatchNorm => {
            let x = b.f(&[1, 1, 2], &[1.0, 3.0]);
            let (g, be, m, v) = (
                b.f(&[1], &[2.0]),
                b.f(&[1], &[1.0]),
                b.f(&[1], &[1.0]),
                b.f(&[1], &[3.0]),
            );
            // 2 * (x - 1) / sqrt(3 + 1e-5) + 1
            (
                b.y(op, &[x, g, be, m, v], &[]),
                F(vec![1.0, 3.309397227766331]),
            )
        }
        Op::BatchNormTrain => {
            let x = b.f(&[2, 1], &[1.0, 3.0]);
            let (g, be) = (b.f(&[1], &[1.0]), b.f(&[1], &[0.0]));
            (
                b.y(op, &[x, g, be], &[("eps", fl(0.0))]),
                F(vec![-1.0, 1.0]),
            )
        }
        Op::Relu => {
            let x = b.f(&[2], &[-1.0, 2.0]);
            (b.y(op, &[x], &[]), F(vec![0.0, 2.0]))
        }
        Op::Relu6 => {
            let x = b.f(&[3], &[-1.0, 7.0, 3.0]);
            (b.y(op, &[x], &[]), F(vec![0.0, 6.0, 3.0]))
        }
        Op::Sigmoid => {
            let x = b.f(&[1], &[0.0]);
            (b.y(op, &[x], &[]), F(vec![0.5]))
        }
        Op::Tanh => {
            let x = b.f(&[1], &[0.5]);
            (b.y(op, &[x], &[]), F(vec![0.46211715726000974]))
        }
        Op::Gelu => {
            let x = b.f(&[1], &[1.0]);
            (b.y(op, &[x], &[]), F(vec![0.8413447460685429]))
        }
        Op::Neg => {
            let x = b.f(&[2], &[1.0, -2.0]);
            (b.y(op, &[x], &[]), F(vec![-1.0, 2.0]))
        }
        Op::Exp => {
            let x = b.f(&[2], &[0.0, 1.0]);
            (b.y(op, &[x], &[]), F(vec![1.0, std::f64::consts::E]))
        }
        Op::Log => {
            let x = b.f(&[2], &[1.0, std::f64::consts::E]);
            (b.y(op, &[x], &[]), F(vec![0.0, 1.0]))
        }
        Op::Sqrt => {
            let x = b.f(&[2], &[4.0, 2.25]);
            (b.y(op, &[x], &[]), F(vec![2.0, 1.5]))
        }
        Op::Add => binary(b, op, &[("act", Attr::Enum("relu"))], &[3.0, 0.0]),
        Op::Sub => binary(b, op, &[], &[-1.0, -5.0]),
        Op::Mul => binary(b, op, &[], &[2.0, -6.0]),
        Op::Div => binary(b, op, &[], &[0.5, -1.5]),
        Op::Reshape => {
            let x = b.f(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
            (
                b.y(op, &[x], &[("shape", ints(&[3, -1]))]),
                F(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            )
        }
        Op::Flatten => {
            let x = b.f(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
            (b.y(op, &[x], &[]), F(vec![1.0, 2.0, 3.0, 4.0]))
        }
        Op::Transpose => {
            let x = b.f(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
            (
                b.y(op, &[x], &[("perm", ints(&[1, 0]))]),
                F(vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]),
            )
        }
        Op::Concat => {
            let x = b.f(&[2], &[1.0, 2.0]);
            let z = b.f(&[1], &[3.0]);
            (
                b.y(op, &[x, z], &[("axis", int(0))]),
                F(vec![1.0, 2.0, 3.0]),
            )
        }
        Op::Slice => {
            let x = b.f(&[4], &[1.0, 2.0, 3.0, 4.0]);
            let a = [("axis", int(0)), ("start", int(1)), ("end", int(3))];
            (b.y(op, &[x], &a), F(vec![2.0, 3.0]))
        }
        // rows [1, 2] and [3, 5]
        Op::ReduceSum => reduction(b, op, &[3.0, 8.0]),
        Op::ReduceMean => reduction(b, op, &[1.5, 4.0]),
        Op::Variance => reduction(b, op, &[0.25, 1.0]),
        Op::Softmax | Op::LogSoftmax => {
            let x = b.f(&[2], &[0.0, ln3]);
            let want = if op == Op::Softmax {
                vec![0.25, 0.75]
            } else {
                vec![0.25f64.ln(), 0.75f64.ln()]
            };
            (b.y(op, &[x], &[]), F(want))
        }
        Op::SoftmaxCrossEntropy => {
            let x = b.f(&[1, 2], &[0.0, ln3]);
            let l = b.i(i32e(), &[1], &[1.0]);
            (b.y(op, &[x, l], &[]), F(vec![-(0.75f64.ln())]))
        }
        Op::Argmax => {
            let x = b.f(&[1, 3], &[1.0, 3.0, 2.0]);
            (b.y(op, &[x], &[]), I(vec![1]))
        }
        Op::Ema => {
            let (r, v) = (b.f(&[1], &[1.0]), b.f(&[1], &[3.0]));
            (b.y(op, &[r, v], &[("momentum", fl(0.25))]), F(vec![1.5]))
        }
        Op::BroadcastLike => {
            let (x, like) = (b.f(&[1], &[7.0]), b.f(&[2], &[0.0, 0.0]));
            (b.y(op, &[x, like], &[]), F(vec![7.0, 7.0]))
        }
        Op::SumToLike => {
            let (x, like) = (b.f(&[2, 2], &[1.0, 2.0, 3.0, 4.0]), b.f(&[2], &[0.0, 0.0]));
            (b.y(op, &[x, like], &[]), F(vec![4.0, 6.0]))
        }
        Op::FakeQuant => {
            let x = b.f(&[3], &[0.3, 0.7, 100.0]);
            let (s, z) = (b.f(&[], &[0.5]), b.i(i32e(), &[], &[0.0]));
            // 0.6 -> 1, 1.4 -> 1, 200 -> 127
            (b.y(op, &[x, s, z], &q8()), F(vec![0.5, 0.5, 63.5]))
        }
        Op::FakeQuantLsq => {
            let x = b.f(&[1], &[0.3]);
            let (s, z) = (b.f(&[], &[0.5]), b.f(&[], &[0.4]));
            (b.y(op, &[x, s, z], &q8()), F(vec![0.5]))
        }
        Op::ObserveMin | Op::ObserveMax => {
            let x = b.f(&[2], &[3.0, -2.0]);
            let init = if op == Op::ObserveMin {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            };
            let r = b.f(&[], &[init]);
            let want = if op == Op::ObserveMin { -2.0 } else { 3.0 };
            (b.y(op, &[x, r], &[]), F(vec![want]))
        }
        Op::QparamsScale | Op::QparamsZeroPoint => {
            let (mn, mx) = (b.f(&[], &[-1.0]), b.f(&[], &[3.0]));
            let g = b.y(op, &[mn, mx], &q8());
            if op == Op::QparamsScale {
                (g, F(vec![(4.0f32 / 255.0) as f64]))
            } else {
                (g, I(vec![-64]))
            }
        }
        Op::Quantize => {
            let x = b.f(&[3], &[0.25, 1.0, -0.75]);
            // x / 0.5 + 1: 0.5 -> 0 (ties to even), 2, -1.5 -> -2
            (
                b.yt(
                    op,
                    &[x],
                    &[("rounding", Attr::Enum("half_even"))],
                    qty(i8q(0.5, 1), &[3]),
                ),
                I(vec![1, 3, -1]),
            )
        }
        Op::Dequantize => {
            let q = b.q(i8q(0.5, 1), &[2], &[1.0, 3.0]);
            (b.y(op, &[q], &[]), F(vec![0.0, 1.0]))
        }
        Op::Requantize => {
            let acc = b.i(i32e(), &[2], &[10.0, -12.0]);
            // x / 8: 1.25 -> 1, -1.5 -> -2 (half away from zero)
            let a = [
                ("multiplier", ints(&[1 << 30])),
                ("shift", ints(&[2])),
                ("rounding", Attr::Enum("half_away_from_zero")),
            ];
            (b.yt(op, &[acc], &a, qty(i8q(1.0, 0), &[2])), I(vec![1, -2]))
        }
        Op::Qlinear => {
            let x = b.q(i8q(0.5, 1), &[1, 2], &[3.0, 1.0]);
            let w = b.q(i8q(1.0, 0), &[1, 2], &[4.0, 5.0]);
            let bias = b.i(i32e(), &[1], &[7.0]);
            // (3 - 1) * 4 + (1 - 1) * 5 + 7
            (b.y(op, &[x, w, bias], &[]), I(vec![15]))
        }
        Op::Qconv2d => {
            let x = b.q(i8q(0.5, 1), &[1, 1, 2, 2], &[2.0, 3.0, 4.0, 5.0]);
            let w = b.q(i8q(1.0, 0), &[1, 1, 2, 2], &[1.0; 4]);
            let bias = b.i(i32e(), &[1], &[1.0]);
            (b.y(op, &[x, w, bias], &[]), I(vec![11]))
        }
        Op::Qadd => {
            let x = b.q(i8q(0.5, 0), &[1], &[2.0]);
            let z = b.q(i8q(0.25, 0), &[1], &[2.0]);
            // 1 + 0.5 = 1.5 -> 2 (half away from zero), plus zero point 3
            (
                b.yt(
                    op,
                    &[x, z],
                    &[("rounding", Attr::Enum("half_away_from_zero"))],
                    qty(i8q(1.0, 3), &[1]),
                ),
                I(vec![5]),
            )
        }
        Op::Qconcat => {
            let x = b.q(i8q(1.0, 0), &[1], &[1.0]);
            let z = b.q(i8q(0.5, 0), &[1], &[4.0]);
            (
                b.yt(
                    op,
                    &[x, z],
                    &[
                        ("axis", int(0)),
                        ("rounding", Attr::Enum("half_away_from_zero")),
                    ],
                    qty(i8q(1.0, 0), &[2]),
                ),
                I(vec![1, 2]),
            )
        }
        Op::QglobalAvgPool => {
            let x = b.q(i8q(1.0, 0), &[1, 1, 2, 2], &[1.0, 2.0, 3.0, 5.0]);
            // mean 2.75 -> 3
            (
                b.yt(
                    op,
                    &[x],
                    &[("rounding", Attr::Enum("half_away_from_zero"))],
                    qty(i8q(1.0, 0), &[1, 1, 1, 1]),
                ),
                I(vec![3]),
            )
        }
        Op::ReluGrad => {
            let (dy, x) = (b.f(&[2], &[1.0, 1.0]), b.f(&[2], &[-1.0, 2.0]));
            (b.y(op, &[dy, x], &[]), F(vec![0.0, 1.0]))
        }
        Op::Relu6Grad => {
            let (dy, x) = (b.f(&[3], &[1.0; 3]), b.f(&[3], &[-1.0, 3.0, 7.0]));
            (b.y(op, &[dy, x], &[]), F(vec![0.0, 1.0, 0.0]))
        }
        Op::SigmoidGrad => {
            let (dy, y) = (b.f(&[1], &[2.0]), b.f(&[1], &[0.25]));
            (b.y(op, &[dy, y], &[]), F(vec![0.375]))
        }
        Op::TanhGrad => {
            let (dy, y) = (b.f(&[1], &[1.0]), b.f(&[1], &[0.5]));
            (b.y(op, &[dy, y], &[]), F(vec![0.75]))
        }
        Op::GeluGrad => {
            let (dy, x) = (b.f(&[1], &[1.0]), b.f(&[1], &[0.0]));
            (b.y(op, &[dy, x], &[]), F(vec![0.5]))
        }
        Op::Conv2dGradInput => {
            let dy = b.f(&[1, 1, 1, 1], &[1.0]);
            let w = b.f(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
            (
                b.y(op, &[dy, w], &[("input_size", ints(&[2, 2]))]),
                F(vec![1.0, 2.0, 3.0, 4.0]),
            )
        }
        Op::Conv2dGradWeight => {
            let dy = b.f(&[1, 1, 1, 1], &[2.0]);
            let x = b.f(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
            (
                b.y(op, &[dy, x], &[("kernel", ints(&[2, 2]))]),
                F(vec![2.0, 4.0, 6.0, 8.0]),
            )
        }
        Op::MaxPool2dGrad => {
            let dy = b.f(&[1, 1, 1, 1], &[5.0]);
            let x = b.f(&[1, 1, 2, 2], &[1.0, 4.0, 3.0, 2.0]);
            (
                b.y(op, &[dy, x], &[("kernel", ints(&[2, 2]))]),
                F(vec![0.0, 5.0, 0.0, 0.0]),
            )
        }
        Op::AvgPool2dGrad => {
            let dy = b.f(&[1, 1, 1, 1], &[4.0]);
            let a = [("kernel", ints(&[2, 2])), ("input_size", ints(&[2, 2]))];
            (b.y(op, &[dy], &a), F(vec![1.0; 4]))
        }
        Op::GlobalAvgPoolGrad => {
            let dy = b.f(&[1, 1, 1, 1], &[4.0]);
            (
                b.y(op, &[dy], &[("input_size", ints(&[2, 2]))]),
                F(vec![1.0; 4]),
            )
        }
        Op::BatchNormGradInput => {
            let dy = b.f(&[1, 1, 2], &[1.0, 2.0]);
            let (g, v) = (b.f(&[1], &[2.0]), b.f(&[1], &[3.0]));
            (b.y(op, &[dy, g, v], &[("eps", fl(1.0))]), F(vec![1.0, 2.0]))
        }
        Op::BatchNormGradGamma => {
            let dy = b.f(&[1, 1, 2], &[1.0, 1.0]);
            let x = b.f(&[1, 1, 2], &[1.0, 3.0]);
            let (m, v) = (b.f(&[1], &[1.0]), b.f(&[1], &[3.0]));
            // sum((x - 1) / 2)
            (b.y(op, &[dy, x, m, v], &[("eps", fl(1.0))]), F(vec![1.0]))
        }
        Op::BatchNormTrainGradInput => {
            let dy = b.f(&[3, 1], &[1.0, 0.0, 0.0]);
            let x = b.f(&[3, 1], &[0.0, 1.0, 5.0]);
            let g = b.f(&[1], &[1.0]);
            let want = vec![
                0.1763466856709622,
                -0.2204333570887027,
                0.044086671417740544,
            ];
            (b.y(op, &[dy, x, g], &[("eps", fl(0.0))]), F(want))
        }
        Op::BatchNormTrainGradGamma => {
            let dy = b.f(&[3, 1], &[1.0, 0.0, 0.0]);
            let x = b.f(&[3, 1], &[0.0, 1.0, 5.0]);
            // x_hat[0] = (0 - 2) / sqrt(14 / 3)
            (
                b.y(op, &[dy, x], &[("eps", fl(0.0))]),
                F(vec![-0.9258200997725514]),
            )
        }
        Op::ReduceMeanGrad => {
            let dy = b.f(&[2], &[3.0, 6.0]);
            let x = b.f(&[2, 3], &[0.0; 6]);
            (
                b.y(op, &[dy, x], &[("axes", ints(&[1]))]),
                F(vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]),
            )
        }
        Op::VarianceGrad => {
            let dy = b.f(&[], &[1.0]);
            let x = b.f(&[2], &[1.0, 3.0]);
            (
                b.y(op, &[dy, x], &[("axes", ints(&[0]))]),
                F(vec![-1.0, 1.0]),
            )
        }
        Op::SoftmaxGrad => {
            let (dy, y) = (b.f(&[2], &[1.0, 0.0]), b.f(&[2], &[0.25, 0.75]));
            (b.y(op, &[dy, y], &[]), F(vec![0.1875, -0.1875]))
        }
        Op::LogSoftmaxGrad => {
            let (dy, y) = (
                b.f(&[2], &[1.0, 0.0]),
                b.f(&[2], &[0.25f64.ln(), 0.75f64.ln()]),
            );
            (b.y(op, &[dy, y], &[]), F(vec![0.75, -0.75]))
        }
        Op::SoftmaxCrossEntropyGrad => {
            let d = b.f(&[], &[2.0]);
            let x = b.f(&[1, 2], &[0.0, ln3]);
            let l = b.i(i32e(), &[1], &[1.0]);
            (b.y(op, &[d, x, l], &[]), F(vec![0.5, -0.5]))
        }
        Op::FakeQuantGrad => {
            let (dy, x) = (b.f(&[2], &[1.0, 1.0]), b.f(&[2], &[0.3, 100.0]));
            let (s, z) = (b.f(&[], &[0.5]), b.i(i32e(), &[], &[0.0]));
            (b.y(op, &[dy, x, s, z], &q8()), F(vec![1.0, 0.0]))
        }
        // x = 0.3 is inside the range, x = 100 above it
        Op::FakeQuantLsqGradX => lsq(b, op, &[1.0, 0.0]),
        // (1 * 0.5 - 0.3) / 0.5 inside, qmax - zp = 127 outside
        Op::FakeQuantLsqGradScale => lsq(b, op, &[127.4]),
        // 0 inside, -scale outside
        Op::FakeQuantLsqGradZeroPoint => lsq(b, op, &[-0.5]),
        Op::AllReduce => {
            // one process: the identity, whatever the reduction
            let x = b.f(&[3], &[1.5, -2.0, 0.25]);
            (
                b.y(op, &[x], &[("op", Attr::Enum("max"))]),
                F(vec![1.5, -2.0, 0.25]),
            )
        }
        Op::SgdUpdate => {
            let (p, g, lr) = (b.f(&[1], &[1.0]), b.f(&[1], &[0.5]), b.f(&[], &[0.1]));
            (
                b.y(op, &[p, g, lr], &[("weight_decay", fl(0.01))]),
                F(vec![0.949]),
            )
        }
        Op::SgdMomentum => {
            let (buf, g, p) = (b.f(&[1], &[2.0]), b.f(&[1], &[1.0]), b.f(&[1], &[5.0]));
            let a = [("momentum", fl(0.9)), ("dampening", fl(0.1))];
            (b.y(op, &[buf, g, p], &a), F(vec![2.7]))
        }
        Op::AdamMoment => {
            let (m, g, p) = (b.f(&[1], &[0.0]), b.f(&[1], &[2.0]), b.f(&[1], &[2.0]));
            let a = [("beta", fl(0.9)), ("weight_decay", fl(0.5))];
            (b.y(op, &[m, g, p], &a), F(vec![0.3]))
        }
        Op::AdamUpdate => {
            let (p, m, v) = (b.f(&[1], &[1.0]), b.f(&[1], &[0.03]), b.f(&[1], &[0.00009]));
            let (step, lr) = (b.f(&[], &[1.0]), b.f(&[], &[0.01]));
            // first step: m_hat = 0.3, sqrt(v_hat) = 0.3
            (
                b.y(op, &[p, m, v, step, lr], &[]),
                F(vec![0.9900000003333334]),
            )
        }
    }
}

#[test]
fn every_op_runs_on_a_hand_computed_example() {
    let mut checked = 0;
    for &op in Op::ALL {
        let (g, want) = case(op);
        qir::verify::verify(&g).unwrap_or_else(|e| panic!("{op}: {e}"));
        assert_eq!(
            g.node(g.output("y").unwrap()).op(),
            Some(op),
            "the case of {op} tests another op"
        );
        let mut store = init_store(&g, 0).unwrap();
        let r = run(&g, &mut store, &HashMap::new(), &RunOptions::default())
            .unwrap_or_else(|e| panic!("{op}: {e}"));
        let y = &r.outputs["y"];
        match want {
            Want::F(w) => {
                let got = floats(y);
                assert_eq!(got.len(), w.len(), "{op}: {got:?} vs {w:?}");
                for (a, b) in got.iter().zip(&w) {
                    assert!(
                        (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                        "{op}: got {got:?}, expected {w:?}"
                    );
                }
            }
            Want::I(w) => {
                let got: Vec<i64> = match &y.data {
                    Data::I8(v) => v.iter().map(|&x| x as i64).collect(),
                    Data::U8(v) => v.iter().map(|&x| x as i64).collect(),
                    Data::I32(v) => v.iter().map(|&x| x as i64).collect(),
                    Data::I64(v) => v.clone(),
                    d => panic!("{op}: expected integers, got {} data", d.dtype()),
                };
                assert_eq!(got, w, "{op}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, Op::ALL.len());
}
