//! Activation fusion: `relu(linear{act=none}(..))` becomes `linear{act=relu}(..)`, and the
//! same for `relu6`, `conv2d` and `add`.
//!
//! Exact: the fused activation is applied to the op's own result in the same precision.
//! Applies only when the op's result has no other user (and is not a graph output): the
//! unfused value would otherwise still be computed and the contraction done twice. The
//! cost model prices a fused op like the bare op, so the fused form wins extraction.

use egg::{Applier, Id, PatternAst, Subst, Symbol, Var};
use qir::{Attr, Op};

use super::{Rewrite, merge_same_type, pattern, single_use, var};
use crate::egraph::analysis::{EGraph, QirAnalysis};
use crate::egraph::lang::{AttrLeaf, QirLang};

/// The applier: for a match of `(act ?y)`, every `inner{act=none}` e-node of `?y`'s class
/// gets a fused twin merged with the match.
struct FuseActivation {
    inner: Op,
    act: &'static str,
    y: Var,
}

impl Applier<QirLang, QirAnalysis> for FuseActivation {
    fn apply_one(
        &self,
        egraph: &mut EGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<QirLang>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let Some(&y) = subst.get(self.y) else {
            return Vec::new();
        };
        if !single_use(egraph, y) {
            return Vec::new();
        }
        let mut fused = Vec::new();
        for node in &egraph[y].nodes {
            let Some((op, Some(attr), operands)) = node.split() else {
                continue;
            };
            let Some(leaf) = egraph[attr].data.attrs.as_ref() else {
                continue;
            };
            if op != self.inner || leaf.inst.choice("act") != Some("none") {
                continue;
            }
            let mut inst = leaf.inst.clone();
            if inst.set("act", Attr::Enum(self.act)).is_ok() {
                fused.push((inst, operands.to_vec()));
            }
        }
        let mut changed = Vec::new();
        for (inst, operands) in fused {
            let attr = egraph.add(QirLang::Attrs(AttrLeaf { inst, ty: None }));
            let new = egraph.add(QirLang::op(self.inner, Some(attr), &operands));
            changed.extend(merge_same_type(egraph, eclass, new));
        }
        changed
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.y]
    }
}

/// The fusion rule set: `fuse-{linear,conv2d,add}-{relu,relu6}`.
pub fn rules() -> Vec<Rewrite> {
    let mut v = Vec::new();
    for (inner, inner_name) in [
        (Op::Linear, "linear"),
        (Op::Conv2d, "conv2d"),
        (Op::Add, "add"),
    ] {
        for act in ["relu", "relu6"] {
            let name = format!("fuse-{inner_name}-{act}");
            let applier = FuseActivation {
                inner,
                act,
                y: var("?y"),
            };
            v.push(
                Rewrite::new(name.as_str(), pattern(&format!("({act} ?y)")), applier)
                    .unwrap_or_else(|e| panic!("rule '{name}': {e}")),
            );
        }
    }
    v
}
