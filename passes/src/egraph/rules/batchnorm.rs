//! Batch-norm folding for inference graphs: `batch_norm(conv2d(x, w, b?), g, beta, m, v)`
//! with `k = g / sqrt(v + eps)` becomes `conv2d(x, w * reshape(k, [O, 1, 1, 1]),
//! (b - m) * k + beta)` (without a bias: `beta - m * k`), and the same for `linear` with
//! `reshape(k, [O, 1])`.
//!
//! The algebra is exact over the reals and equal to f32 rounding (within 1e-5 relative in
//! practice); the new weight and bias are computed from params and state only, which the
//! cost model prices as nearly free since convert constant-folds them. Applies only to f32
//! graphs, to a conv/linear without a fused activation, whose result has no other user
//! (otherwise the contraction would be computed twice). `eps` becomes an f32 scalar
//! constant, as batch_norm uses it. (QAT's simulated folding is a different pass.)

use egg::{Applier, Id, PatternAst, Subst, Symbol, Var};
use qir::{Attr, ElemType, Inst, Op};

use super::{Rewrite, merge_same_type, pattern, single_use, var};
use crate::egraph::analysis::{self, EGraph, QirAnalysis};
use crate::egraph::lang::{AttrLeaf, QirLang};

/// The applier for a match of `(batch_norm ?e ?y ?g ?beta ?m ?v)`.
struct FoldBatchNorm {
    inner: Op,
    vars: [Var; 6],
}

fn attrs(egraph: &mut EGraph, inst: Inst) -> Id {
    egraph.add(QirLang::Attrs(AttrLeaf { inst, ty: None }))
}

impl Applier<QirLang, QirAnalysis> for FoldBatchNorm {
    fn apply_one(
        &self,
        egraph: &mut EGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<QirLang>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let ids: Option<Vec<Id>> = self.vars.iter().map(|&v| subst.get(v).copied()).collect();
        let Some([e, y, g, beta, m, v]) = ids.and_then(|ids| <[Id; 6]>::try_from(ids).ok()) else {
            return Vec::new();
        };
        let f32_graph = analysis::ty(egraph, eclass).is_some_and(|t| t.elem == ElemType::F32);
        if !f32_graph || !single_use(egraph, y) {
            return Vec::new();
        }
        let Some(eps) = analysis::inst(egraph, e).and_then(|i| i.float("eps")) else {
            return Vec::new();
        };
        let candidates: Vec<(Inst, Vec<Id>)> = egraph[y]
            .nodes
            .iter()
            .filter_map(|node| {
                let (op, attr, operands) = node.split()?;
                let inst = analysis::inst(egraph, attr?)?;
                (op == self.inner && inst.choice("act") == Some("none"))
                    .then(|| (inst.clone(), operands.to_vec()))
            })
            .collect();
        let mut changed = Vec::new();
        for (inst, operands) in candidates {
            let (x, w, b) = match operands.as_slice() {
                [x, w] => (*x, *w, None),
                [x, w, b] => (*x, *w, Some(*b)),
                _ => continue,
            };
            let Some(out_channels) = analysis::ty(egraph, w)
                .and_then(|t| t.shape.dims().first().and_then(|d| d.fixed()))
            else {
                continue;
            };
            let mut shape = vec![out_channels as i64, 1];
            if self.inner == Op::Conv2d {
                shape.extend([1, 1]);
            }
            let Ok(reshape) = Inst::new(Op::Reshape).with("shape", Attr::Ints(shape)) else {
                continue;
            };
            let add_attrs = attrs(egraph, Inst::new(Op::Add));
            let eps = egraph.add(QirLang::scalar(eps as f32));
            let v_eps = egraph.add(QirLang::op(Op::Add, Some(add_attrs), &[v, eps]));
            let std = egraph.add(QirLang::op(Op::Sqrt, None, &[v_eps]));
            let k = egraph.add(QirLang::op(Op::Div, None, &[g, std]));
            let reshape_attrs = attrs(egraph, reshape);
            let k_col = egraph.add(QirLang::op(Op::Reshape, Some(reshape_attrs), &[k]));
            let new_w = egraph.add(QirLang::op(Op::Mul, None, &[w, k_col]));
            let new_b = match b {
                Some(b) => {
                    let centered = egraph.add(QirLang::op(Op::Sub, None, &[b, m]));
                    let scaled = egraph.add(QirLang::op(Op::Mul, None, &[centered, k]));
                    egraph.add(QirLang::op(Op::Add, Some(add_attrs), &[scaled, beta]))
                }
                None => {
                    let shift = egraph.add(QirLang::op(Op::Mul, None, &[m, k]));
                    egraph.add(QirLang::op(Op::Sub, None, &[beta, shift]))
                }
            };
            let conv_attrs = attrs(egraph, inst);
            let folded = egraph.add(QirLang::op(
                self.inner,
                Some(conv_attrs),
                &[x, new_w, new_b],
            ));
            changed.extend(merge_same_type(egraph, eclass, folded));
        }
        changed
    }

    fn vars(&self) -> Vec<Var> {
        self.vars.to_vec()
    }
}

/// The batch-norm folding rule set: `fold-batchnorm-conv2d`, `fold-batchnorm-linear`.
pub fn rules() -> Vec<Rewrite> {
    [(Op::Conv2d, "conv2d"), (Op::Linear, "linear")]
        .into_iter()
        .map(|(inner, inner_name)| {
            let name = format!("fold-batchnorm-{inner_name}");
            let applier = FoldBatchNorm {
                inner,
                vars: ["?e", "?y", "?g", "?beta", "?m", "?v"].map(var),
            };
            Rewrite::new(
                name.as_str(),
                pattern("(batch_norm ?e ?y ?g ?beta ?m ?v)"),
                applier,
            )
            .unwrap_or_else(|e| panic!("rule '{name}': {e}"))
        })
        .collect()
}
