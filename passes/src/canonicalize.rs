//! `canonicalize`: removes what a graph does not need and folds what is known, without
//! changing any value an output, the loss or an update sees.
//!
//! Rewrites, iterated to a fixed point:
//! - **fold**: shape-only ops (`reshape`, `flatten`, `transpose`, `slice`, `concat`) whose
//!   operands are all constants with known values (`zeros`, `ones`, `fill`, inline values)
//!   become a new constant (the op's name if it had one, else `<const>.<op>`); a uniform
//!   result keeps its uniform initializer, other results are inline values up to
//!   `fold-limit` elements. Exact identities are removed: `reshape`/`flatten` to the same
//!   type, `transpose` with the identity permutation, a `slice` of a whole axis, `concat` of
//!   one input.
//! - **cse**: ops with the same op, attributes, operands (in order) and result type become
//!   one node; a name survives (the kept node takes the duplicate's name if it had none).
//! - **dce**: ops that reach no output, loss or update are removed, then constants nothing
//!   uses. Inputs, params and state are never removed (they are the model's interface), nor
//!   constants named by a per-axis quantized type (`!quant.uniform<..., %w.scales>`).
//!
//! Every op of the IR is pure, so merging and dropping ops is always exact. Each rewrite
//! removes an op or a node, so the iteration ends; `Changed::Yes` is reported only when a
//! rewrite fired.

use std::collections::{HashMap, HashSet};

use qir::types::QuantParams;
use qir::{Graph, Init, Inst, NodeId, NodeKind, Op, Type};

use crate::options::{OptionError, OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The `canonicalize` pass. `Default` enables every rewrite with a fold limit of 65536
/// elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canonicalize {
    /// Remove dead ops and unused constants.
    pub dce: bool,
    /// Merge identical ops.
    pub cse: bool,
    /// Fold shape ops of constants and remove identity shape ops.
    pub fold: bool,
    /// The largest number of elements a folded constant may be given as inline values.
    pub fold_limit: u64,
}

impl Default for Canonicalize {
    fn default() -> Canonicalize {
        Canonicalize {
            dce: true,
            cse: true,
            fold: true,
            fold_limit: 65536,
        }
    }
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "dce",
        kind: OptionKind::Bool,
        default: "true",
        doc: "remove ops that reach no output, loss or update, and unused constants",
    },
    OptionSpec {
        name: "cse",
        kind: OptionKind::Bool,
        default: "true",
        doc: "merge ops with the same op, attributes, operands and type",
    },
    OptionSpec {
        name: "fold",
        kind: OptionKind::Bool,
        default: "true",
        doc: "fold shape ops of constants and remove identity shape ops",
    },
    OptionSpec {
        name: "fold-limit",
        kind: OptionKind::UInt,
        default: "65536",
        doc: "largest folded constant (in elements) written as inline values",
    },
];

impl PassDef for Canonicalize {
    const INFO: PassInfo = PassInfo {
        name: "canonicalize",
        summary: "dead-code elimination, common-subexpression elimination and folding of constant shape ops",
        options: OPTIONS,
    };
    fn from_options(o: &Options) -> Result<Canonicalize, OptionError> {
        Ok(Canonicalize {
            dce: o.bool("dce")?,
            cse: o.bool("cse")?,
            fold: o.bool("fold")?,
            fold_limit: o.uint("fold-limit")?,
        })
    }
}

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        Self::INFO.name
    }

    fn options(&self) -> Vec<(&'static str, OptValue)> {
        let b = |v: bool| OptValue::Scalar(v.to_string());
        vec![
            ("dce", b(self.dce)),
            ("cse", b(self.cse)),
            ("fold", b(self.fold)),
            ("fold-limit", OptValue::Scalar(self.fold_limit.to_string())),
        ]
    }

    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        // Every productive round removes at least one op or node, so this bound is never
        // reached on a correct implementation.
        let rounds = g.node_count() + g.op_count() + 1;
        let mut changed = false;
        for _ in 0..rounds {
            let mut round = false;
            if self.fold {
                round |= fold(g, self.fold_limit)?;
            }
            if self.cse {
                round |= cse(g)?;
            }
            if self.dce {
                round |= dce(g);
            }
            if !round {
                return Ok(changed.into());
            }
            changed = true;
        }
        Err(PassError::new(
            "canonicalize did not reach a fixed point (internal error)",
        ))
    }
}

fn topo(g: &Graph) -> Result<Vec<NodeId>, PassError> {
    g.topo_order()
        .map_err(|_| PassError::new("the graph has a cycle"))
}

// ---- fold ---------------------------------------------------------------------------------

/// The shape-only ops this pass folds and simplifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShapeOp {
    Reshape,
    Flatten,
    Transpose,
    Slice,
    Concat,
}

fn shape_op(op: Op) -> Option<ShapeOp> {
    match op {
        Op::Reshape => Some(ShapeOp::Reshape),
        Op::Flatten => Some(ShapeOp::Flatten),
        Op::Transpose => Some(ShapeOp::Transpose),
        Op::Slice => Some(ShapeOp::Slice),
        Op::Concat => Some(ShapeOp::Concat),
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
        | Op::ReduceSum
        | Op::ReduceMean
        | Op::Variance
        | Op::Softmax
        | Op::LogSoftmax
        | Op::SoftmaxCrossEntropy
        | Op::Argmax
        | Op::Ema
        | Op::BroadcastLike
        | Op::SumToLike
        | Op::FakeQuant
        | Op::FakeQuantLsq
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
        | Op::AdamUpdate
        | Op::AllReduce => None,
    }
}

/// Folds and simplifies every shape op, in topological order (so chains fold in one
/// sweep). Returns whether anything changed.
fn fold(g: &mut Graph, limit: u64) -> Result<bool, PassError> {
    let mut changed = false;
    for id in topo(g)? {
        if !g.contains(id) {
            continue;
        }
        let Some(inst) = g.node(id).inst().cloned() else {
            continue;
        };
        let Some(kind) = shape_op(inst.op) else {
            continue;
        };
        let operands = g.operands(id);
        if let Some(src) = identity_source(g, id, &inst, kind, &operands) {
            g.replace_all_uses(id, src);
            g.remove_node(id);
            changed = true;
        } else if let Some(init) = fold_values(g, id, &inst, kind, &operands, limit) {
            replace_by_const(g, id, &operands, init)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// The operand an op is an exact identity of, if it is one.
fn identity_source(
    g: &Graph,
    id: NodeId,
    inst: &Inst,
    kind: ShapeOp,
    operands: &[NodeId],
) -> Option<NodeId> {
    let [src] = operands else { return None };
    if g.ty(*src) != g.ty(id) {
        return None;
    }
    let exact = match kind {
        // Row-major data does not move when the shape stays the same.
        ShapeOp::Reshape | ShapeOp::Flatten | ShapeOp::Concat => true,
        // Same type means the slice spans the whole axis (start >= 0, end <= size).
        ShapeOp::Slice => true,
        ShapeOp::Transpose => inst
            .ints("perm")
            .is_some_and(|p| p.iter().enumerate().all(|(i, &a)| a == i as i64)),
    };
    exact.then_some(*src)
}

/// The values of a constant: one repeated value (kept as its initializer) or inline data.
enum Values<'a> {
    Uniform(&'a Init),
    Dense(&'a [f64]),
}

fn const_values(g: &Graph, id: NodeId) -> Option<Values<'_>> {
    match &g.node(id).kind {
        NodeKind::Const(init @ (Init::Zeros | Init::Ones | Init::Fill(_))) => {
            Some(Values::Uniform(init))
        }
        NodeKind::Const(Init::Dense(v)) => Some(Values::Dense(v)),
        NodeKind::Const(
            Init::Uniform(..)
            | Init::Normal(..)
            | Init::KaimingUniform
            | Init::KaimingNormal
            | Init::XavierUniform
            | Init::XavierNormal
            | Init::LecunUniform
            | Init::External,
        )
        | NodeKind::Input
        | NodeKind::Param(_)
        | NodeKind::State(_)
        | NodeKind::Op(_) => None,
    }
}

fn uniform_value(init: &Init) -> Option<f64> {
    match init {
        Init::Zeros => Some(0.0),
        Init::Ones => Some(1.0),
        Init::Fill(v) => Some(*v),
        Init::Uniform(..)
        | Init::Normal(..)
        | Init::KaimingUniform
        | Init::KaimingNormal
        | Init::XavierUniform
        | Init::XavierNormal
        | Init::LecunUniform
        | Init::External
        | Init::Dense(_) => None,
    }
}

fn dims(ty: &Type) -> Option<Vec<usize>> {
    ty.shape
        .as_fixed()?
        .into_iter()
        .map(|d| usize::try_from(d).ok())
        .collect()
}

fn numel(d: &[usize]) -> Option<usize> {
    d.iter().try_fold(1usize, |a, &n| a.checked_mul(n))
}

/// The initializer of the constant an op of constants evaluates to, or `None` when the op
/// cannot be folded (an operand is not a known constant, a shape is not fixed, or an inline
/// result would exceed `limit` elements).
fn fold_values(
    g: &Graph,
    id: NodeId,
    inst: &Inst,
    kind: ShapeOp,
    operands: &[NodeId],
    limit: u64,
) -> Option<Init> {
    let vals: Vec<Values> = operands
        .iter()
        .map(|&o| const_values(g, o))
        .collect::<Option<_>>()?;
    let first = vals.first()?;
    let out_dims = dims(g.ty(id))?;
    let out_n = numel(&out_dims)?;
    // A uniform result: every operand holds the same repeated value.
    if let Values::Uniform(init) = first
        && vals
            .iter()
            .all(|v| matches!(v, Values::Uniform(i) if i == init))
    {
        return Some((*init).clone());
    }
    if out_n as u64 > limit {
        return None;
    }
    // Expand every operand to inline data.
    let mut data: Vec<Vec<f64>> = Vec::with_capacity(vals.len());
    let mut in_dims: Vec<Vec<usize>> = Vec::with_capacity(vals.len());
    for (&o, v) in operands.iter().zip(&vals) {
        let d = dims(g.ty(o))?;
        let n = numel(&d)?;
        if n as u64 > limit {
            return None;
        }
        let values = match v {
            Values::Uniform(init) => vec![uniform_value(init)?; n],
            Values::Dense(x) if x.len() == n => x.to_vec(),
            Values::Dense(_) => return None,
        };
        data.push(values);
        in_dims.push(d);
    }
    let x = data.first()?;
    let xd = in_dims.first()?;
    let out = match kind {
        ShapeOp::Reshape | ShapeOp::Flatten => x.clone(),
        ShapeOp::Transpose => {
            let perm: Vec<usize> = inst
                .ints("perm")?
                .into_iter()
                .map(|p| usize::try_from(p).ok())
                .collect::<Option<_>>()?;
            transpose(x, xd, &perm)?
        }
        ShapeOp::Slice => {
            let ty = g.ty(*operands.first()?);
            let axis = ty.shape.axis(inst.int("axis")?)?;
            let start = usize::try_from(inst.int("start")?).ok()?;
            let end = usize::try_from(inst.int("end")?).ok()?;
            slice(x, xd, axis, start, end)?
        }
        ShapeOp::Concat => {
            let ty = g.ty(*operands.first()?);
            let axis = ty.shape.axis(inst.int("axis")?)?;
            concat(&data, &in_dims, axis)?
        }
    };
    (out.len() == out_n).then_some(Init::Dense(out))
}

fn strides(d: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; d.len()];
    for i in (0..d.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * d[i + 1];
    }
    s
}

/// `out[i0, .., ik] = x[j]` where input axis `perm[a]` takes index `ia`.
fn transpose(x: &[f64], d: &[usize], perm: &[usize]) -> Option<Vec<f64>> {
    if perm.len() != d.len() {
        return None;
    }
    let in_strides = strides(d);
    let out_dims: Vec<usize> = perm
        .iter()
        .map(|&p| d.get(p).copied())
        .collect::<Option<_>>()?;
    let n = numel(&out_dims)?;
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; out_dims.len()];
    for _ in 0..n {
        let src: usize = idx.iter().zip(perm).map(|(&i, &p)| i * in_strides[p]).sum();
        out.push(*x.get(src)?);
        // advance the output multi-index, last axis fastest
        for a in (0..idx.len()).rev() {
            idx[a] += 1;
            if idx[a] < out_dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    Some(out)
}

fn slice(x: &[f64], d: &[usize], axis: usize, start: usize, end: usize) -> Option<Vec<f64>> {
    let outer = numel(d.get(..axis)?)?;
    let size = *d.get(axis)?;
    let inner = numel(d.get(axis + 1..)?)?;
    if start > end || end > size {
        return None;
    }
    let mut out = Vec::with_capacity(outer * (end - start) * inner);
    for o in 0..outer {
        let base = o * size * inner;
        out.extend_from_slice(x.get(base + start * inner..base + end * inner)?);
    }
    Some(out)
}

fn concat(xs: &[Vec<f64>], ds: &[Vec<usize>], axis: usize) -> Option<Vec<f64>> {
    let d0 = ds.first()?;
    let outer = numel(d0.get(..axis)?)?;
    let inner = numel(d0.get(axis + 1..)?)?;
    let mut out = Vec::new();
    for o in 0..outer {
        for (x, d) in xs.iter().zip(ds) {
            let chunk = d.get(axis)? * inner;
            out.extend_from_slice(x.get(o * chunk..(o + 1) * chunk)?);
        }
    }
    Some(out)
}

/// Replaces op `id` by a new constant holding `init`, keeping its name and comments.
fn replace_by_const(
    g: &mut Graph,
    id: NodeId,
    operands: &[NodeId],
    init: Init,
) -> Result<(), PassError> {
    let node = g.node(id);
    let ty = node.ty.clone();
    let comments = node.comments.clone();
    let loc = node.loc;
    let mnemonic = node.op().map_or("folded", Op::mnemonic);
    let name = match node.name.clone() {
        Some(n) => {
            g.rename(id, None)?;
            n
        }
        None => {
            let base = operands
                .first()
                .and_then(|&o| g.node(o).name.clone())
                .unwrap_or_else(|| "folded".to_string());
            g.fresh_name(&format!("{base}.{mnemonic}"))
        }
    };
    let c = g.add_const(&name, ty, init)?;
    let node = g.node_mut(c);
    node.comments = comments;
    node.loc = loc;
    g.replace_all_uses(id, c);
    g.remove_node(id);
    Ok(())
}

// ---- cse ----------------------------------------------------------------------------------

/// Merges ops equal in op, attributes, operands and result type. Returns whether anything
/// changed.
fn cse(g: &mut Graph) -> Result<bool, PassError> {
    let mut seen: HashMap<(Inst, Vec<NodeId>), Vec<NodeId>> = HashMap::new();
    let mut changed = false;
    for id in topo(g)? {
        let Some(inst) = g.get(id).and_then(|n| n.inst()).cloned() else {
            continue;
        };
        // Operands are read now: earlier merges have already redirected them.
        let key = (inst, g.operands(id));
        let candidates = seen.entry(key).or_default();
        match candidates.iter().copied().find(|&c| g.ty(c) == g.ty(id)) {
            Some(keep) => {
                merge_into(g, keep, id)?;
                changed = true;
            }
            None => candidates.push(id),
        }
    }
    Ok(changed)
}

/// Makes every use of `dup` use `keep`, removes `dup`, and keeps its name and comments
/// when `keep` has none.
fn merge_into(g: &mut Graph, keep: NodeId, dup: NodeId) -> Result<(), PassError> {
    g.replace_all_uses(dup, keep);
    let Some(removed) = g.remove_node(dup) else {
        return Ok(());
    };
    if g.node(keep).name.is_none() && removed.name.is_some() {
        g.rename(keep, removed.name)?;
    }
    let kept = g.node_mut(keep);
    for c in removed.comments {
        if !kept.comments.contains(&c) {
            kept.comments.push(c);
        }
    }
    Ok(())
}

// ---- dce ----------------------------------------------------------------------------------

/// Removes ops that reach no root, then constants nothing uses or names. Returns whether
/// anything changed.
fn dce(g: &mut Graph) -> bool {
    let mut stack: Vec<NodeId> = g.outputs().iter().map(|o| o.value).collect();
    stack.extend(g.loss());
    for u in g.updates() {
        stack.push(u.value);
        stack.push(u.target);
    }
    let mut live = HashSet::new();
    while let Some(n) = stack.pop() {
        if g.contains(n) && live.insert(n) {
            stack.extend(g.operands(n));
        }
    }
    let dead: Vec<NodeId> = g
        .node_ids()
        .into_iter()
        .filter(|&n| g.node(n).op().is_some() && !live.contains(&n))
        .collect();
    let mut changed = !dead.is_empty();
    for n in dead {
        g.remove_node(n);
    }
    let referenced = quant_param_refs(g);
    let unused: Vec<NodeId> = g
        .consts()
        .into_iter()
        .filter(|&c| {
            !g.is_used(c)
                && g.node(c)
                    .name
                    .as_ref()
                    .is_none_or(|n| !referenced.contains(n.as_str()))
        })
        .collect();
    changed |= !unused.is_empty();
    for c in unused {
        g.remove_node(c);
    }
    changed
}

/// Names of the constants that per-axis quantized types refer to.
fn quant_param_refs(g: &Graph) -> HashSet<String> {
    let mut refs = HashSet::new();
    for id in g.node_ids() {
        if let Some(q) = g.node(id).ty.elem.quant()
            && let QuantParams::PerAxisRef {
                scales,
                zero_points,
                ..
            } = &q.params
        {
            refs.insert(scales.clone());
            refs.extend(zero_points.clone());
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use qir::print::print;
    use qir::types::{ElemType, QuantType, Shape, Storage};
    use qir::{Attr, Dim};

    fn f32t(d: &[u64]) -> Type {
        Type::new(ElemType::F32, Shape::fixed(d))
    }
    fn batch(d: &[u64]) -> Type {
        let mut dims = vec![Dim::from("B")];
        dims.extend(d.iter().map(|&n| Dim::Fixed(n)));
        Type::f32(&dims)
    }
    fn inst(op: Op, attrs: &[(&str, Attr)]) -> Inst {
        qir::shape::inst_with(op, attrs).unwrap()
    }
    fn run(g: &mut Graph) -> Changed {
        let c = Canonicalize::default().run(g).unwrap();
        qir::verify::verify(g).unwrap_or_else(|e| panic!("{e}\n{}", print(g)));
        // canonical means a second run finds nothing to do
        assert_eq!(
            Canonicalize::default().run(g).unwrap(),
            Changed::No,
            "{}",
            print(g)
        );
        c
    }
    fn dense(g: &Graph, name: &str) -> Vec<f64> {
        let id = g
            .find(name)
            .unwrap_or_else(|| panic!("no %{name}\n{}", print(g)));
        match &g.node(id).kind {
            NodeKind::Const(Init::Dense(v)) => v.clone(),
            other => panic!("%{name} is {other:?}"),
        }
    }

    #[test]
    fn dce_removes_dead_ops_and_unused_consts_only() {
        let mut g = Graph::new("m");
        let x = g.add_input("x", batch(&[4])).unwrap();
        let unused_in = g.add_input("unused_in", batch(&[4])).unwrap();
        let p = g.add_param("p", f32t(&[4]), Init::Zeros).unwrap();
        let s = g.add_state("s", f32t(&[4]), Init::Zeros).unwrap();
        let c = g.add_const("c", f32t(&[4]), Init::Ones).unwrap();
        let _c2 = g.add_const("c2", f32t(&[4]), Init::Ones).unwrap();
        let y = g.op(Op::Relu, &[x]).unwrap();
        // a dead chain, the last one named; it uses %p and %c
        let d1 = g.op(Op::Add, &[x, p]).unwrap();
        let d2 = g.op(Op::Mul, &[d1, c]).unwrap();
        g.rename(d2, Some("dead".into())).unwrap();
        g.add_output("y", y);
        assert_eq!(run(&mut g), Changed::Yes);
        assert_eq!(g.op_count(), 1);
        for kept in ["x", "unused_in", "p", "s"] {
            assert!(g.find(kept).is_some(), "%{kept} must stay");
        }
        for gone in ["c", "c2", "dead"] {
            assert!(g.find(gone).is_none(), "%{gone} must go");
        }
        let _ = (unused_in, s);
    }

    #[test]
    fn dce_keeps_what_updates_and_the_loss_need() {
        let mut g = Graph::new("m");
        let x = g.add_input("x", f32t(&[4])).unwrap();
        let s = g.add_state("s", f32t(&[4]), Init::Zeros).unwrap();
        let m = g.add_const("m", f32t(&[]), Init::Fill(0.1)).unwrap();
        let e = g
            .add_op(inst(Op::Ema, &[]), &[s, x], Some("s.new"))
            .unwrap();
        let sq = g.op(Op::Mul, &[x, m]).unwrap();
        let l = g
            .add_op(
                inst(Op::ReduceSum, &[("axes", Attr::Ints(vec![0]))]),
                &[sq],
                Some("l"),
            )
            .unwrap();
        g.add_update(s, e);
        g.set_loss(Some(l));
        let before = print(&g);
        assert_eq!(run(&mut g), Changed::No);
        assert_eq!(print(&g), before);
    }

    #[test]
    fn dce_keeps_consts_named_by_per_axis_quant_types() {
        let mut g = Graph::new("m");
        g.add_const("w.scales", f32t(&[2]), Init::Dense(vec![0.5, 0.25]))
            .unwrap();
        let q = QuantType {
            storage: Storage::I8,
            qmin: -127,
            qmax: 127,
            params: QuantParams::PerAxisRef {
                axis: 0,
                scales: "w.scales".into(),
                zero_points: None,
            },
        };
        let wq = g
            .add_const(
                "wq",
                Type::new(ElemType::Quant(Box::new(q)), Shape::fixed(&[2, 2])),
                Init::Dense(vec![1.0, -2.0, 3.0, 4.0]),
            )
            .unwrap();
        let w = g.op(Op::Dequantize, &[wq]).unwrap();
        g.add_output("w", w);
        assert_eq!(run(&mut g), Changed::No);
        assert!(g.find("w.scales").is_some());
    }

    #[test]
    fn cse_merges_equal_ops_and_keeps_a_name() {
        let mut g = Graph::new("m");
        let x = g.add_input("x", batch(&[4])).unwrap();
        let a = g.op(Op::Relu, &[x]).unwrap();
        let b = g.add_op(Inst::new(Op::Relu), &[x], Some("r")).unwrap();
        let c = g.op(Op::Relu, &[x]).unwrap();
        let s1 = g.op(Op::Add, &[a, b]).unwrap();
        let s2 = g.op(Op::Add, &[c, a]).unwrap(); // becomes add(%r, %r) like s1 after merging
        g.add_output("s1", s1);
        g.add_output("s2", s2);
        assert_eq!(run(&mut g), Changed::Yes);
        assert_eq!(
            print(&g),
            "graph @m {\n  input %x: f32[B, 4]\n\n  %r = relu(%x) : f32[B, 4]\n  %0 = add(%r, %r) : f32[B, 4]\n\n  output s1 = %0\n  output s2 = %0\n}\n"
        );
    }

    #[test]
    fn cse_respects_attributes_operand_order_and_types() {
        let mut g = Graph::new("m");
        let x = g.add_input("x", batch(&[4])).unwrap();
        let y = g.add_input("y", batch(&[4])).unwrap();
        let d1 = g.op(Op::Sub, &[x, y]).unwrap();
        let d2 = g.op(Op::Sub, &[y, x]).unwrap();
        let s1 = g
            .add_op(inst(Op::Softmax, &[("axis", Attr::Int(0))]), &[x], None)
            .unwrap();
        let s2 = g.add_op(inst(Op::Softmax, &[]), &[x], None).unwrap();
        let quant = |scale| {
            Type::new(
                ElemType::Quant(Box::new(QuantType::per_tensor(
                    Storage::I8,
                    -128,
                    127,
                    scale,
                    0,
                ))),
                Shape(vec![Dim::from("B"), Dim::Fixed(4)]),
            )
        };
        let quantize = || inst(Op::Quantize, &[("rounding", Attr::Enum("half_even"))]);
        let q1 = g.add_op_typed(quantize(), &[x], quant(0.5), None).unwrap();
        let q2 = g.add_op_typed(quantize(), &[x], quant(0.25), None).unwrap();
        for (i, v) in [d1, d2, s1, s2, q1, q2].into_iter().enumerate() {
            g.add_output(&format!("o{i}"), v);
        }
        assert_eq!(run(&mut g), Changed::No);
        assert_eq!(g.op_count(), 6);
    }

    /// `%src` a constant of type f32[2, 3] holding 0..6, then `op` applied to it (and to
    /// `extra` for concat).
    fn fold_one(op: Inst, extra: Option<(Type, Init)>) -> Graph {
        let mut g = Graph::new("m");
        let c = g
            .add_const(
                "src",
                f32t(&[2, 3]),
                Init::Dense((0..6).map(f64::from).collect()),
            )
            .unwrap();
        let mut operands = vec![c];
        if let Some((ty, init)) = extra {
            operands.push(g.add_const("extra", ty, init).unwrap());
        }
        let r = g.add_op(op, &operands, None).unwrap();
        g.add_output("y", r);
        assert_eq!(run(&mut g), Changed::Yes);
        assert_eq!(g.op_count(), 0, "{}", print(&g));
        assert!(g.find("src").is_none(), "the folded-away source is dead");
        g
    }

    #[test]
    fn folds_transpose() {
        let g = fold_one(
            inst(Op::Transpose, &[("perm", Attr::Ints(vec![1, 0]))]),
            None,
        );
        assert_eq!(dense(&g, "src.transpose"), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(
            g.ty(g.find("src.transpose").unwrap()).to_string(),
            "f32[3, 2]"
        );
    }

    #[test]
    fn folds_transpose_rank3() {
        let mut g = Graph::new("m");
        let c = g
            .add_const(
                "c",
                f32t(&[2, 3, 2]),
                Init::Dense((0..12).map(f64::from).collect()),
            )
            .unwrap();
        let t = g
            .add_op(
                inst(Op::Transpose, &[("perm", Attr::Ints(vec![2, 0, 1]))]),
                &[c],
                Some("t"),
            )
            .unwrap();
        g.add_output("t", t);
        run(&mut g);
        // t[k, i, j] = c[i, j, k] = 6i + 2j + k
        let want: Vec<f64> = (0..2)
            .flat_map(|k| (0..2).flat_map(move |i| (0..3).map(move |j| (6 * i + 2 * j + k) as f64)))
            .collect();
        assert_eq!(dense(&g, "t"), want);
        assert_eq!(g.ty(g.find("t").unwrap()).to_string(), "f32[2, 2, 3]");
    }

    #[test]
    fn folds_reshape_and_flatten() {
        let g = fold_one(
            inst(Op::Reshape, &[("shape", Attr::Ints(vec![3, -1]))]),
            None,
        );
        assert_eq!(dense(&g, "src.reshape"), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(
            g.ty(g.find("src.reshape").unwrap()).to_string(),
            "f32[3, 2]"
        );
        let g = fold_one(inst(Op::Flatten, &[("axis", Attr::Int(0))]), None);
        assert_eq!(g.ty(g.find("src.flatten").unwrap()).to_string(), "f32[6]");
    }

    #[test]
    fn folds_slice() {
        let attrs = [
            ("axis", Attr::Int(-1)),
            ("start", Attr::Int(1)),
            ("end", Attr::Int(3)),
        ];
        let g = fold_one(inst(Op::Slice, &attrs), None);
        assert_eq!(dense(&g, "src.slice"), [1.0, 2.0, 4.0, 5.0]);
        let attrs = [
            ("axis", Attr::Int(0)),
            ("start", Attr::Int(1)),
            ("end", Attr::Int(2)),
        ];
        let g = fold_one(inst(Op::Slice, &attrs), None);
        assert_eq!(dense(&g, "src.slice"), [3.0, 4.0, 5.0]);
    }

    #[test]
    fn folds_concat_of_mixed_constants() {
        let extra = (f32t(&[2, 1]), Init::Fill(9.0));
        let g = fold_one(inst(Op::Concat, &[("axis", Attr::Int(1))]), Some(extra));
        assert_eq!(
            dense(&g, "src.concat"),
            [0.0, 1.0, 2.0, 9.0, 3.0, 4.0, 5.0, 9.0]
        );
        let extra = (f32t(&[1, 3]), Init::Dense(vec![7.0, 8.0, 9.0]));
        let g = fold_one(inst(Op::Concat, &[("axis", Attr::Int(0))]), Some(extra));
        assert_eq!(
            dense(&g, "src.concat"),
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0, 9.0]
        );
    }

    #[test]
    fn uniform_constants_stay_uniform_whatever_their_size() {
        let mut g = Graph::new("m");
        let z = g.add_const("z", f32t(&[512, 512]), Init::Zeros).unwrap();
        let z2 = g.add_const("z2", f32t(&[512, 512]), Init::Zeros).unwrap();
        let c = g
            .add_op(inst(Op::Concat, &[("axis", Attr::Int(0))]), &[z, z2], None)
            .unwrap();
        let t = g
            .add_op(
                inst(Op::Transpose, &[("perm", Attr::Ints(vec![1, 0]))]),
                &[c],
                Some("zt"),
            )
            .unwrap();
        g.add_output("zt", t);
        assert_eq!(run(&mut g), Changed::Yes);
        let id = g.find("zt").unwrap();
        assert_eq!(g.node(id).kind, NodeKind::Const(Init::Zeros));
        assert_eq!(g.ty(id).to_string(), "f32[512, 1024]");
        assert_eq!(g.node_count(), 1);
    }

    #[test]
    fn fold_limit_and_unknown_values_stop_folding() {
        let mut g = Graph::new("m");
        let c = g
            .add_const("c", f32t(&[2, 2]), Init::Dense(vec![1.0, 2.0, 3.0, 4.0]))
            .unwrap();
        let w = g.add_param("w", f32t(&[2, 2]), Init::LecunUniform).unwrap();
        let e = g.add_const("e", f32t(&[2, 2]), Init::External).unwrap();
        for (i, src) in [c, w, e].into_iter().enumerate() {
            let t = g
                .add_op(
                    inst(Op::Transpose, &[("perm", Attr::Ints(vec![1, 0]))]),
                    &[src],
                    None,
                )
                .unwrap();
            g.add_output(&format!("t{i}"), t);
        }
        let pass = Canonicalize {
            fold_limit: 3,
            ..Canonicalize::default()
        };
        assert_eq!(pass.run(&mut g).unwrap(), Changed::No);
        assert_eq!(g.op_count(), 3);
        assert_eq!(Canonicalize::default().run(&mut g).unwrap(), Changed::Yes);
        assert_eq!(
            g.op_count(),
            2,
            "only the inline constant folds:\n{}",
            print(&g)
        );
    }

    #[test]
    fn folded_constant_takes_the_op_name_and_chains_fold() {
        let mut g = Graph::new("m");
        let x = g.add_input("x", batch(&[6])).unwrap();
        let c = g
            .add_const(
                "c",
                f32t(&[6]),
                Init::Dense((0..6).map(f64::from).collect()),
            )
            .unwrap();
        let r = g
            .add_op(
                inst(Op::Reshape, &[("shape", Attr::Ints(vec![2, 3]))]),
                &[c],
                None,
            )
            .unwrap();
        let t = g
            .add_op(
                inst(Op::Transpose, &[("perm", Attr::Ints(vec![1, 0]))]),
                &[r],
                None,
            )
            .unwrap();
        let f = g
            .add_op(
                inst(Op::Flatten, &[("axis", Attr::Int(0))]),
                &[t],
                Some("bias"),
            )
            .unwrap();
        g.node_mut(f).comments.push(" the bias, reordered".into());
        let y = g.op(Op::Add, &[x, f]).unwrap();
        g.add_output("y", y);
        run(&mut g);
        assert_eq!(dense(&g, "bias"), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(
            print(&g),
            "graph @m {\n  input %x: f32[B, 6]\n  // the bias, reordered\n  const %bias: f32[6] = [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]\n\n  %0 = add(%x, %bias) : f32[B, 6]\n\n  output y = %0\n}\n"
        );
    }

    #[test]
    fn removes_exact_identities() {
        let mut g = Graph::new("m");
        let x = g.add_input("x", batch(&[3, 3])).unwrap();
        let r = g
            .add_op(
                inst(Op::Reshape, &[("shape", Attr::Ints(vec![-1, 3, 3]))]),
                &[x],
                None,
            )
            .unwrap();
        let t = g
            .add_op(
                inst(Op::Transpose, &[("perm", Attr::Ints(vec![0, 1, 2]))]),
                &[r],
                None,
            )
            .unwrap();
        let c = g
            .add_op(inst(Op::Concat, &[("axis", Attr::Int(1))]), &[t], None)
            .unwrap();
        let attrs = [
            ("axis", Attr::Int(2)),
            ("start", Attr::Int(0)),
            ("end", Attr::Int(3)),
        ];
        let s = g.add_op(inst(Op::Slice, &attrs), &[c], None).unwrap();
        let f = g
            .add_op(inst(Op::Flatten, &[("axis", Attr::Int(2))]), &[s], None)
            .unwrap();
        let y = g.op(Op::Relu, &[f]).unwrap();
        g.add_output("y", y);
        assert_eq!(run(&mut g), Changed::Yes);
        assert_eq!(
            print(&g),
            "graph @m {\n  input %x: f32[B, 3, 3]\n\n  %0 = relu(%x) : f32[B, 3, 3]\n\n  output y = %0\n}\n"
        );
    }

    #[test]
    fn keeps_shape_ops_that_move_data() {
        let mut g = Graph::new("m");
        let x = g.add_input("x", batch(&[3, 3])).unwrap();
        // same type, not an identity
        let t = g
            .add_op(
                inst(Op::Transpose, &[("perm", Attr::Ints(vec![0, 2, 1]))]),
                &[x],
                None,
            )
            .unwrap();
        let attrs = [
            ("axis", Attr::Int(2)),
            ("start", Attr::Int(1)),
            ("end", Attr::Int(3)),
        ];
        let s = g.add_op(inst(Op::Slice, &attrs), &[t], None).unwrap();
        let c = g
            .add_op(inst(Op::Concat, &[("axis", Attr::Int(2))]), &[s, s], None)
            .unwrap();
        let r = g
            .add_op(
                inst(Op::Reshape, &[("shape", Attr::Ints(vec![-1, 12]))]),
                &[c],
                None,
            )
            .unwrap();
        g.add_output("y", r);
        assert_eq!(run(&mut g), Changed::No);
        assert_eq!(g.op_count(), 4);
    }

    #[test]
    fn options_switch_rewrites_off() {
        let build = || {
            let mut g = Graph::new("m");
            let x = g.add_input("x", batch(&[4])).unwrap();
            let a = g.op(Op::Relu, &[x]).unwrap();
            let b = g.op(Op::Relu, &[x]).unwrap();
            let _dead = g.op(Op::Tanh, &[x]).unwrap();
            let r = g
                .add_op(
                    inst(Op::Reshape, &[("shape", Attr::Ints(vec![-1, 4]))]),
                    &[a],
                    None,
                )
                .unwrap();
            let s = g.op(Op::Add, &[r, b]).unwrap();
            g.add_output("y", s);
            g
        };
        let off = Canonicalize {
            dce: false,
            cse: false,
            fold: false,
            ..Canonicalize::default()
        };
        let mut g = build();
        assert_eq!(off.run(&mut g).unwrap(), Changed::No);
        assert_eq!(g.op_count(), 5);
        for (pass, ops) in [
            (
                Canonicalize {
                    dce: true,
                    ..off.clone()
                },
                4,
            ),
            (
                Canonicalize {
                    cse: true,
                    ..off.clone()
                },
                4,
            ),
            (
                Canonicalize {
                    fold: true,
                    ..off.clone()
                },
                4,
            ),
            (Canonicalize::default(), 2),
        ] {
            let mut g = build();
            assert_eq!(pass.run(&mut g).unwrap(), Changed::Yes);
            assert_eq!(g.op_count(), ops, "{pass:?}\n{}", print(&g));
        }
    }

    #[test]
    fn created_from_options() {
        let o = Options::new(
            "canonicalize",
            OPTIONS,
            &[
                ("fold-limit".into(), OptValue::Scalar("7".into())),
                ("cse".into(), OptValue::Scalar("false".into())),
            ],
        )
        .unwrap();
        let p = Canonicalize::from_options(&o).unwrap();
        assert_eq!(
            p,
            Canonicalize {
                cse: false,
                fold_limit: 7,
                ..Canonicalize::default()
            }
        );
    }
}
