//! Vector-Jacobian products: for every differentiable op, the backward ops that turn the
//! gradient of its result into contributions to the gradients of its operands, built from
//! the op table's backward ops or composed from forward primitives.
//!
//! Invariants: [`slot_kind`] covers the whole op table (exhaustive match, so a new op must
//! be classified); [`vjp`] returns contributions only for the operand slots marked wanted,
//! each with exactly that operand's type (every node is added through shape inference, so
//! a wrong rule fails loudly instead of building an ill-typed graph).

use std::collections::{HashMap, HashSet};

use qir::shape::inst_with;
use qir::{Attr, Dim, ElemType, Graph, Init, Inst, NodeId, Op, Type};

type R<T> = Result<T, String>;

/// How an op's result depends on one operand slot, for differentiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotKind {
    /// Differentiable: [`vjp`] has a rule for this slot.
    Diff,
    /// Gradients stop here by definition (labels, observed ranges, quantization parameters
    /// of the clipped STE, argmax, running statistics).
    Stop,
    /// No gradient rule exists (integer, backward and optimizer ops): a param whose path to
    /// the loss needs one is an error.
    NoRule,
}

/// The differentiability of operand `slot` of `inst`.
pub(super) fn slot_kind(inst: &Inst, slot: usize) -> SlotKind {
    use SlotKind::{Diff, NoRule, Stop};
    let first_only = if slot == 0 { Diff } else { Stop };
    match inst.op {
        Op::Linear
        | Op::Matmul
        | Op::Conv2d
        | Op::MaxPool2d
        | Op::AvgPool2d
        | Op::GlobalAvgPool
        | Op::BatchNorm
        | Op::BatchNormTrain
        | Op::Relu
        | Op::Relu6
        | Op::Sigmoid
        | Op::Tanh
        | Op::Gelu
        | Op::Neg
        | Op::Exp
        | Op::Log
        | Op::Sqrt
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Reshape
        | Op::Flatten
        | Op::Transpose
        | Op::Concat
        | Op::Slice
        | Op::ReduceSum
        | Op::ReduceMean
        | Op::Variance
        | Op::Softmax
        | Op::LogSoftmax => Diff,
        // The labels, the `like` operand (only its shape matters) and the scale and zero
        // point of the clipped STE carry no gradient.
        Op::SoftmaxCrossEntropy | Op::BroadcastLike | Op::SumToLike | Op::FakeQuant => first_only,
        Op::FakeQuantLsq => match slot {
            0 | 1 => Diff,
            2 if inst.boolean("learn_zero_point").unwrap_or(false) => Diff,
            _ => Stop,
        },
        // With the data-parallel convention (every parameter gradient is averaged over the
        // replicas), the gradient of a replica's input to an all-reduce by sum or mean is
        // the same all-reduce of the incoming gradients (see `vjp`); min and max reduce
        // observed ranges, which are not trained.
        Op::AllReduce => match inst.choice("op") {
            Some("sum" | "mean") => Diff,
            _ => Stop,
        },
        // Running statistics and observed ranges are bookkeeping, not functions to train.
        Op::Argmax
        | Op::Ema
        | Op::ObserveMin
        | Op::ObserveMax
        | Op::QparamsScale
        | Op::QparamsZeroPoint => Stop,
        Op::Quantize
        | Op::Dequantize
        | Op::Requantize
        | Op::Qlinear
        | Op::Qconv2d
        | Op::Qadd
        | Op::Qconcat
        | Op::QglobalAvgPool
        | Op::ReluGrad
        | Op::Relu6Grad
        | Op::SigmoidGrad
        | Op::TanhGrad
        | Op::GeluGrad
        | Op::Conv2dGradInput
        | Op::Conv2dGradWeight
        | Op::MaxPool2dGrad
        | Op::AvgPool2dGrad
        | Op::GlobalAvgPoolGrad
        | Op::BatchNormGradInput
        | Op::BatchNormGradGamma
        | Op::BatchNormTrainGradInput
        | Op::BatchNormTrainGradGamma
        | Op::ReduceMeanGrad
        | Op::VarianceGrad
        | Op::SoftmaxGrad
        | Op::LogSoftmaxGrad
        | Op::SoftmaxCrossEntropyGrad
        | Op::FakeQuantGrad
        | Op::FakeQuantLsqGradX
        | Op::FakeQuantLsqGradScale
        | Op::FakeQuantLsqGradZeroPoint
        | Op::SgdUpdate
        | Op::SgdMomentum
        | Op::AdamMoment
        | Op::AdamUpdate => NoRule,
    }
}

/// Adds backward nodes to a graph, remembering which nodes it created and sharing scalar
/// constants.
pub(super) struct Builder<'g> {
    pub g: &'g mut Graph,
    created: HashSet<NodeId>,
    consts: HashMap<(String, u64), NodeId>,
}

impl<'g> Builder<'g> {
    /// A builder adding to `g`.
    pub fn new(g: &'g mut Graph) -> Builder<'g> {
        Builder {
            g,
            created: HashSet::new(),
            consts: HashMap::new(),
        }
    }

    /// True if `id` was added by this builder.
    pub fn created(&self, id: NodeId) -> bool {
        self.created.contains(&id)
    }

    /// Adds an anonymous op node (its type is inferred and so checked).
    pub fn emit(&mut self, inst: Inst, operands: &[NodeId]) -> R<NodeId> {
        let id = self.g.add_op(inst, operands, None).map_err(|e| e.0)?;
        self.created.insert(id);
        Ok(id)
    }

    /// Adds an anonymous op node without attributes.
    pub fn op(&mut self, op: Op, operands: &[NodeId]) -> R<NodeId> {
        self.emit(Inst::new(op), operands)
    }

    /// Adds an anonymous op node with attributes.
    pub fn op_with(&mut self, op: Op, operands: &[NodeId], attrs: &[(&str, Attr)]) -> R<NodeId> {
        self.emit(inst_with(op, attrs)?, operands)
    }

    /// The sum of gradient contributions (a left-to-right chain of `add`).
    pub fn sum(&mut self, parts: &[NodeId]) -> R<NodeId> {
        let (&first, rest) = parts
            .split_first()
            .ok_or_else(|| "no gradient contribution".to_string())?;
        let mut acc = first;
        for &p in rest {
            acc = self.op(Op::Add, &[acc, p])?;
        }
        Ok(acc)
    }

    /// A scalar constant of element type `elem`, named after `hint`, shared by value.
    pub fn scalar(&mut self, hint: &str, v: f64, elem: &ElemType) -> R<NodeId> {
        let key = (elem.to_string(), v.to_bits());
        if let Some(&id) = self.consts.get(&key) {
            return Ok(id);
        }
        let name = self.g.fresh_name(hint);
        let id = self
            .g
            .add_const(&name, Type::scalar(elem.clone()), Init::Dense(vec![v]))
            .map_err(|e| e.0)?;
        self.created.insert(id);
        self.consts.insert(key, id);
        Ok(id)
    }
}

const CONV_ATTRS: [&str; 4] = ["stride", "padding", "dilation", "groups"];

/// A new `op` instruction carrying the attributes `names` of `src` (absent ones stay
/// absent).
fn copy_attrs(src: &Inst, op: Op, names: &[&str]) -> R<Inst> {
    let mut i = Inst::new(op);
    for name in names {
        if let Some(v) = src.get(name) {
            i.set(name, v)?;
        }
    }
    Ok(i)
}

/// The fixed sizes of dimensions `idx` of `t`.
fn fixed_dims(t: &Type, idx: &[usize]) -> R<Vec<i64>> {
    idx.iter()
        .map(|&i| {
            t.shape
                .dims()
                .get(i)
                .and_then(Dim::fixed)
                .map(|n| n as i64)
                .ok_or_else(|| format!("dimension {i} of {t} must be a fixed size"))
        })
        .collect()
}

/// A `reshape` target for `dims`: fixed sizes as they are, the one symbolic size as -1.
fn reshape_target(dims: &[Dim], what: &Type) -> R<Vec<i64>> {
    let mut seen_sym = false;
    dims.iter()
        .map(|d| match d {
            Dim::Fixed(n) => Ok(*n as i64),
            Dim::Sym(_) if !seen_sym => {
                seen_sym = true;
                Ok(-1)
            }
            Dim::Sym(_) => Err(format!(
                "cannot reshape back to {what}: it has more than one symbolic dimension"
            )),
        })
        .collect()
}

/// Every axis but the channel axis 1, for batch-norm style reductions.
fn all_but_channel(rank: usize) -> Vec<i64> {
    (0..rank as i64).filter(|&a| a != 1).collect()
}

/// The gradient `dy` of an op result with a fused activation, taken back through it
/// (`y` is the op's output: relu and relu6 gradients accept it in place of their input).
fn act_grad(b: &mut Builder, inst: &Inst, y: NodeId, dy: NodeId) -> R<NodeId> {
    match inst.choice("act") {
        None | Some("none") => Ok(dy),
        Some("relu") => b.op(Op::ReluGrad, &[dy, y]),
        Some("relu6") => b.op(Op::Relu6Grad, &[dy, y]),
        Some(other) => Err(format!("no gradient for the fused activation '{other}'")),
    }
}

/// `g` summed down to the shape of `like` when `like` was broadcast, else `g` itself.
fn reduce_to(b: &mut Builder, g: NodeId, like: NodeId) -> R<NodeId> {
    if b.g.ty(g).shape == b.g.ty(like).shape {
        Ok(g)
    } else {
        b.op(Op::SumToLike, &[g, like])
    }
}

/// The contributions of op node `y` (instruction `inst`, operands `xs`, result gradient
/// `dy`) to the gradients of the operands whose slot is `want`ed.
pub(super) fn vjp(
    b: &mut Builder,
    y: NodeId,
    inst: &Inst,
    xs: &[NodeId],
    dy: NodeId,
    want: &[bool],
) -> R<Vec<(usize, NodeId)>> {
    let w = |s: usize| want.get(s).copied().unwrap_or(false);
    let x = |s: usize| {
        xs.get(s)
            .copied()
            .ok_or_else(|| format!("'{}' has no operand {s}", inst.op))
    };
    let mut out: Vec<(usize, NodeId)> = Vec::new();
    match inst.op {
        Op::Linear => {
            let dz = act_grad(b, inst, y, dy)?;
            if w(0) {
                out.push((0, b.op(Op::Matmul, &[dz, x(1)?])?));
            }
            if w(1) {
                let dw = b.op_with(Op::Matmul, &[dz, x(0)?], &[("transpose_a", true.into())])?;
                out.push((1, dw));
            }
            if w(2) {
                out.push((
                    2,
                    b.op_with(Op::ReduceSum, &[dz], &[("axes", vec![0].into())])?,
                ));
            }
        }
        Op::Matmul => {
            let ta = inst.boolean("transpose_a").unwrap_or(false);
            let tb = inst.boolean("transpose_b").unwrap_or(false);
            let (a, bm) = (x(0)?, x(1)?);
            // C = op(A) op(B): each gradient is again one matmul with transposes.
            if w(0) {
                let (l, r, fa, fb) = match (ta, tb) {
                    (false, false) => (dy, bm, false, true),
                    (false, true) => (dy, bm, false, false),
                    (true, false) => (bm, dy, false, true),
                    (true, true) => (bm, dy, true, true),
                };
                out.push((0, matmul(b, l, r, fa, fb)?));
            }
            if w(1) {
                let (l, r, fa, fb) = match (ta, tb) {
                    (false, false) => (a, dy, true, false),
                    (false, true) => (dy, a, true, false),
                    (true, false) => (a, dy, false, false),
                    (true, true) => (dy, a, true, true),
                };
                out.push((1, matmul(b, l, r, fa, fb)?));
            }
        }
        Op::Conv2d => {
            let dz = act_grad(b, inst, y, dy)?;
            let (xv, wv) = (x(0)?, x(1)?);
            if w(0) {
                let size = fixed_dims(b.g.ty(xv), &[2, 3])?;
                let i =
                    copy_attrs(inst, Op::Conv2dGradInput, &CONV_ATTRS)?.with("input_size", size)?;
                out.push((0, b.emit(i, &[dz, wv])?));
            }
            if w(1) {
                let kernel = fixed_dims(b.g.ty(wv), &[2, 3])?;
                let i =
                    copy_attrs(inst, Op::Conv2dGradWeight, &CONV_ATTRS)?.with("kernel", kernel)?;
                out.push((1, b.emit(i, &[dz, xv])?));
            }
            if w(2) {
                let db = b.op_with(Op::ReduceSum, &[dz], &[("axes", vec![0, 2, 3].into())])?;
                out.push((2, db));
            }
        }
        Op::MaxPool2d => {
            if w(0) {
                let i = copy_attrs(inst, Op::MaxPool2dGrad, &["kernel", "stride", "padding"])?;
                out.push((0, b.emit(i, &[dy, x(0)?])?));
            }
        }
        Op::AvgPool2d => {
            if w(0) {
                let size = fixed_dims(b.g.ty(x(0)?), &[2, 3])?;
                let names = ["kernel", "stride", "padding", "count_include_pad"];
                let i = copy_attrs(inst, Op::AvgPool2dGrad, &names)?.with("input_size", size)?;
                out.push((0, b.emit(i, &[dy])?));
            }
        }
        Op::GlobalAvgPool => {
            if w(0) {
                let size = fixed_dims(b.g.ty(x(0)?), &[2, 3])?;
                let i = Inst::new(Op::GlobalAvgPoolGrad).with("input_size", size)?;
                out.push((0, b.emit(i, &[dy])?));
            }
        }
        Op::BatchNorm => batch_norm(b, inst, xs, dy, want, &mut out)?,
        Op::BatchNormTrain => {
            let (xv, gamma) = (x(0)?, x(1)?);
            if w(0) {
                let i = copy_attrs(inst, Op::BatchNormTrainGradInput, &["eps"])?;
                out.push((0, b.emit(i, &[dy, xv, gamma])?));
            }
            if w(1) {
                let i = copy_attrs(inst, Op::BatchNormTrainGradGamma, &["eps"])?;
                out.push((1, b.emit(i, &[dy, xv])?));
            }
            if w(2) {
                let axes = all_but_channel(b.g.ty(xv).rank());
                out.push((
                    2,
                    b.op_with(Op::ReduceSum, &[dy], &[("axes", axes.into())])?,
                ));
            }
        }
        Op::Relu | Op::Relu6 | Op::Sigmoid | Op::Tanh => {
            // From the output: y > 0 iff x > 0, 0 < y < 6 iff 0 < x < 6, and sigmoid and
            // tanh derivatives are functions of y.
            let g = match inst.op {
                Op::Relu => Op::ReluGrad,
                Op::Relu6 => Op::Relu6Grad,
                Op::Sigmoid => Op::SigmoidGrad,
                _ => Op::TanhGrad,
            };
            if w(0) {
                out.push((0, b.op(g, &[dy, y])?));
            }
        }
        Op::Gelu => {
            if w(0) {
                out.push((0, b.op(Op::GeluGrad, &[dy, x(0)?])?));
            }
        }
        Op::Neg => {
            if w(0) {
                out.push((0, b.op(Op::Neg, &[dy])?));
            }
        }
        // `y = (1/R) Σ_r x_r` on every replica r, trained on `J = (1/R) Σ_r L_r` with the
        // parameter gradients averaged afterwards (the data-parallel pass's all-reduce by
        // mean): `∂J/∂x_r = (1/R) Σ_r' ∂L_r'/∂y · (1/R)`, which the final averaging over
        // replicas supplies one factor `1/R` of; so each replica back-propagates
        // `mean_r'(∂L_r'/∂y)` — an all-reduce by mean of `dy`. For a sum, by the same
        // argument, an all-reduce by sum. Min and max are not differentiated (`slot_kind`).
        Op::AllReduce => {
            if w(0) {
                let i = copy_attrs(inst, Op::AllReduce, &["op"])?;
                out.push((0, b.emit(i, &[dy])?));
            }
        }
        Op::Exp => {
            if w(0) {
                out.push((0, b.op(Op::Mul, &[dy, y])?));
            }
        }
        Op::Log => {
            if w(0) {
                out.push((0, b.op(Op::Div, &[dy, x(0)?])?));
            }
        }
        Op::Sqrt => {
            // d sqrt(x) = dy / (2 sqrt(x)), with 2y written y + y.
            if w(0) {
                let two_y = b.op(Op::Add, &[y, y])?;
                out.push((0, b.op(Op::Div, &[dy, two_y])?));
            }
        }
        Op::Add => {
            let dz = act_grad(b, inst, y, dy)?;
            for s in 0..2 {
                if w(s) {
                    out.push((s, reduce_to(b, dz, x(s)?)?));
                }
            }
        }
        Op::Sub => {
            if w(0) {
                out.push((0, reduce_to(b, dy, x(0)?)?));
            }
            if w(1) {
                let r = reduce_to(b, dy, x(1)?)?;
                out.push((1, b.op(Op::Neg, &[r])?));
            }
        }
        Op::Mul => {
            let (a, bv) = (x(0)?, x(1)?);
            if w(0) {
                let t = b.op(Op::Mul, &[dy, bv])?;
                out.push((0, reduce_to(b, t, a)?));
            }
            if w(1) {
                let t = b.op(Op::Mul, &[dy, a])?;
                out.push((1, reduce_to(b, t, bv)?));
            }
        }
        Op::Div => {
            // y = a / b: da = dy / b, db = -(dy / b) * y.
            let (a, bv) = (x(0)?, x(1)?);
            let t = b.op(Op::Div, &[dy, bv])?;
            if w(0) {
                out.push((0, reduce_to(b, t, a)?));
            }
            if w(1) {
                let ty = b.op(Op::Mul, &[t, y])?;
                let r = reduce_to(b, ty, bv)?;
                out.push((1, b.op(Op::Neg, &[r])?));
            }
        }
        Op::Reshape | Op::Flatten => {
            if w(0) {
                let xv = x(0)?;
                let xt = b.g.ty(xv).clone();
                if b.g.ty(dy).shape == xt.shape {
                    out.push((0, dy));
                } else {
                    let target = reshape_target(xt.shape.dims(), &xt)?;
                    out.push((
                        0,
                        b.op_with(Op::Reshape, &[dy], &[("shape", target.into())])?,
                    ));
                }
            }
        }
        Op::Transpose => {
            if w(0) {
                let perm = inst.ints("perm").unwrap_or_default();
                let mut inv = vec![0i64; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    let slot = usize::try_from(p)
                        .ok()
                        .and_then(|p| inv.get_mut(p))
                        .ok_or_else(|| format!("'perm' {perm:?} is not a permutation"))?;
                    *slot = i as i64;
                }
                out.push((0, b.op_with(Op::Transpose, &[dy], &[("perm", inv.into())])?));
            }
        }
        Op::Concat => concat(b, inst, y, xs, dy, want, &mut out)?,
        Op::Slice => {
            if w(0) {
                out.push((0, slice(b, inst, x(0)?, dy)?));
            }
        }
        Op::ReduceSum => {
            if w(0) {
                out.push((0, reduce_sum(b, inst, x(0)?, dy)?));
            }
        }
        Op::ReduceMean | Op::Variance => {
            let g = if inst.op == Op::ReduceMean {
                Op::ReduceMeanGrad
            } else {
                Op::VarianceGrad
            };
            if w(0) {
                let i = copy_attrs(inst, g, &["axes", "keepdims"])?;
                out.push((0, b.emit(i, &[dy, x(0)?])?));
            }
        }
        Op::Softmax | Op::LogSoftmax => {
            let g = if inst.op == Op::Softmax {
                Op::SoftmaxGrad
            } else {
                Op::LogSoftmaxGrad
            };
            if w(0) {
                let i = copy_attrs(inst, g, &["axis"])?;
                out.push((0, b.emit(i, &[dy, y])?));
            }
        }
        Op::SoftmaxCrossEntropy => {
            if w(0) {
                let i = copy_attrs(inst, Op::SoftmaxCrossEntropyGrad, &["reduction"])?;
                out.push((0, b.emit(i, &[dy, x(0)?, x(1)?])?));
            }
        }
        Op::BroadcastLike => {
            if w(0) {
                out.push((0, b.op(Op::SumToLike, &[dy, x(0)?])?));
            }
        }
        Op::SumToLike => {
            if w(0) {
                out.push((0, b.op(Op::BroadcastLike, &[dy, x(0)?])?));
            }
        }
        Op::FakeQuant => {
            if w(0) {
                let i = copy_attrs(inst, Op::FakeQuantGrad, &["qmin", "qmax", "axis"])?;
                out.push((0, b.emit(i, &[dy, x(0)?, x(1)?, x(2)?])?));
            }
        }
        Op::FakeQuantLsq => {
            let operands = [dy, x(0)?, x(1)?, x(2)?];
            if w(0) {
                let attrs = ["qmin", "qmax", "axis", "zero_point_rounding"];
                let i = copy_attrs(inst, Op::FakeQuantLsqGradX, &attrs)?;
                out.push((0, b.emit(i, &operands)?));
            }
            let with_scale = ["qmin", "qmax", "axis", "grad_scale", "zero_point_rounding"];
            if w(1) {
                let i = copy_attrs(inst, Op::FakeQuantLsqGradScale, &with_scale)?;
                out.push((1, b.emit(i, &operands)?));
            }
            if w(2) {
                let i = copy_attrs(inst, Op::FakeQuantLsqGradZeroPoint, &with_scale)?;
                out.push((2, b.emit(i, &operands)?));
            }
        }
        Op::Argmax
        | Op::Ema
        | Op::ObserveMin
        | Op::ObserveMax
        | Op::QparamsScale
        | Op::QparamsZeroPoint
        | Op::Quantize
        | Op::Dequantize
        | Op::Requantize
        | Op::Qlinear
        | Op::Qconv2d
        | Op::Qadd
        | Op::Qconcat
        | Op::QglobalAvgPool
        | Op::ReluGrad
        | Op::Relu6Grad
        | Op::SigmoidGrad
        | Op::TanhGrad
        | Op::GeluGrad
        | Op::Conv2dGradInput
        | Op::Conv2dGradWeight
        | Op::MaxPool2dGrad
        | Op::AvgPool2dGrad
        | Op::GlobalAvgPoolGrad
        | Op::BatchNormGradInput
        | Op::BatchNormGradGamma
        | Op::BatchNormTrainGradInput
        | Op::BatchNormTrainGradGamma
        | Op::ReduceMeanGrad
        | Op::VarianceGrad
        | Op::SoftmaxGrad
        | Op::LogSoftmaxGrad
        | Op::SoftmaxCrossEntropyGrad
        | Op::FakeQuantGrad
        | Op::FakeQuantLsqGradX
        | Op::FakeQuantLsqGradScale
        | Op::FakeQuantLsqGradZeroPoint
        | Op::SgdUpdate
        | Op::SgdMomentum
        | Op::AdamMoment
        | Op::AdamUpdate => {
            if want.contains(&true) {
                return Err(format!("'{}' has no gradient rule", inst.op));
            }
        }
    }
    Ok(out)
}

fn matmul(b: &mut Builder, l: NodeId, r: NodeId, ta: bool, tb: bool) -> R<NodeId> {
    b.op_with(
        Op::Matmul,
        &[l, r],
        &[("transpose_a", ta.into()), ("transpose_b", tb.into())],
    )
}

/// Eval-mode batch-norm `y = gamma (x - mean) / sqrt(var + eps) + beta`. The statistics are
/// normally state and get no gradient; should they depend on a param (statistics computed
/// in the graph), their gradients are composed from primitives:
/// `dmean = -sum(dy gamma / sqrt(var + eps))`, `dvar = -gamma sum(dy x_hat) / (2 (var + eps))`.
fn batch_norm(
    b: &mut Builder,
    inst: &Inst,
    xs: &[NodeId],
    dy: NodeId,
    want: &[bool],
    out: &mut Vec<(usize, NodeId)>,
) -> R<()> {
    let w = |s: usize| want.get(s).copied().unwrap_or(false);
    let [xv, gamma, _beta, mean, var] = xs else {
        return Err("'batch_norm' needs 5 operands".into());
    };
    let axes = all_but_channel(b.g.ty(*xv).rank());
    let dx = if w(0) || w(3) {
        let i = copy_attrs(inst, Op::BatchNormGradInput, &["eps"])?;
        Some(b.emit(i, &[dy, *gamma, *var])?)
    } else {
        None
    };
    let dgamma = if w(1) || w(4) {
        let i = copy_attrs(inst, Op::BatchNormGradGamma, &["eps"])?;
        Some(b.emit(i, &[dy, *xv, *mean, *var])?)
    } else {
        None
    };
    if let (true, Some(d)) = (w(0), dx) {
        out.push((0, d));
    }
    if let (true, Some(d)) = (w(1), dgamma) {
        out.push((1, d));
    }
    if w(2) {
        out.push((
            2,
            b.op_with(Op::ReduceSum, &[dy], &[("axes", axes.clone().into())])?,
        ));
    }
    if let (true, Some(d)) = (w(3), dx) {
        let s = b.op_with(Op::ReduceSum, &[d], &[("axes", axes.into())])?;
        out.push((3, b.op(Op::Neg, &[s])?));
    }
    if let (true, Some(dg)) = (w(4), dgamma) {
        let elem = b.g.ty(*var).elem.clone();
        let eps = inst.float("eps").unwrap_or(1e-5);
        let eps_c = b.scalar("bn.eps", eps, &elem)?;
        let half = b.scalar("half", 0.5, &elem)?;
        let t = b.op(Op::Mul, &[dg, *gamma])?;
        let t = b.op(Op::Mul, &[t, half])?;
        let den = b.op(Op::Add, &[*var, eps_c])?;
        let q = b.op(Op::Div, &[t, den])?;
        out.push((4, b.op(Op::Neg, &[q])?));
    }
    Ok(())
}

/// Concat: each input's gradient is its slice of `dy` along the axis.
fn concat(
    b: &mut Builder,
    inst: &Inst,
    y: NodeId,
    xs: &[NodeId],
    dy: NodeId,
    want: &[bool],
    out: &mut Vec<(usize, NodeId)>,
) -> R<()> {
    if let ([_], [true]) = (xs, want) {
        out.push((0, dy));
        return Ok(());
    }
    let yt = b.g.ty(y).clone();
    let axis = inst.int("axis").unwrap_or(0);
    let ax = yt
        .shape
        .axis(axis)
        .ok_or_else(|| format!("axis {axis} is out of range for {yt}"))?;
    let mut start = 0i64;
    for (s, &xv) in xs.iter().enumerate() {
        let size = fixed_dims(b.g.ty(xv), &[ax])?[0];
        if want.get(s).copied().unwrap_or(false) {
            let attrs = [
                ("axis", Attr::Int(ax as i64)),
                ("start", Attr::Int(start)),
                ("end", Attr::Int(start + size)),
            ];
            out.push((s, b.op_with(Op::Slice, &[dy], &attrs)?));
        }
        start += size;
    }
    Ok(())
}

/// Slice: `dy` padded with zeros back to the input's size along the axis. There is no pad
/// op, so the zero blocks are `broadcast_like(0, slice(x))` (exact zeros, whatever x holds)
/// and the pieces are joined by `concat`.
fn slice(b: &mut Builder, inst: &Inst, xv: NodeId, dy: NodeId) -> R<NodeId> {
    let xt = b.g.ty(xv).clone();
    let axis = inst.int("axis").unwrap_or(0);
    let ax = xt
        .shape
        .axis(axis)
        .ok_or_else(|| format!("axis {axis} is out of range for {xt}"))?;
    let d = fixed_dims(&xt, &[ax])?[0];
    let (start, end) = (inst.int("start").unwrap_or(0), inst.int("end").unwrap_or(d));
    if start == 0 && end == d {
        return Ok(dy);
    }
    let zero = b.scalar("zero", 0.0, &xt.elem)?;
    let zeros = |b: &mut Builder, s: i64, e: i64| -> R<NodeId> {
        let attrs = [
            ("axis", Attr::Int(ax as i64)),
            ("start", Attr::Int(s)),
            ("end", Attr::Int(e)),
        ];
        let like = b.op_with(Op::Slice, &[xv], &attrs)?;
        b.op(Op::BroadcastLike, &[zero, like])
    };
    let mut pieces = Vec::new();
    if start > 0 {
        pieces.push(zeros(b, 0, start)?);
    }
    pieces.push(dy);
    if end < d {
        pieces.push(zeros(b, end, d)?);
    }
    b.op_with(Op::Concat, &pieces, &[("axis", Attr::Int(ax as i64))])
}

/// Reduce-sum: `dy` broadcast back over the reduced axes; without `keepdims` and with
/// reduced axes that are not all leading, `dy` is first reshaped to the kept-dims shape so
/// that broadcasting aligns it.
fn reduce_sum(b: &mut Builder, inst: &Inst, xv: NodeId, dy: NodeId) -> R<NodeId> {
    let xt = b.g.ty(xv).clone();
    let mut axes: Vec<usize> = Vec::new();
    for a in inst.ints("axes").unwrap_or_default() {
        axes.push(
            xt.shape
                .axis(a)
                .ok_or_else(|| format!("axis {a} is out of range for {xt}"))?,
        );
    }
    axes.sort_unstable();
    let leading = axes.iter().enumerate().all(|(i, &a)| i == a);
    let keep = inst.boolean("keepdims").unwrap_or(false);
    let src = if keep || leading {
        dy
    } else {
        let dims: Vec<Dim> = xt
            .shape
            .dims()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    Dim::Fixed(1)
                } else {
                    d.clone()
                }
            })
            .collect();
        let target = reshape_target(&dims, &xt)?;
        b.op_with(Op::Reshape, &[dy], &[("shape", target.into())])?
    };
    b.op(Op::BroadcastLike, &[src, xv])
}
