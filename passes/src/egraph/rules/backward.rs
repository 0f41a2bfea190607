//! Simplification of derived (backward) graphs, and the algebra they need: identities the
//! grad pass leaves behind (multiplying by ones, adding zeros, double negation, reshapes
//! of reshapes, broadcasts and reductions to the same type, transposes that undo each
//! other) and redundant gradient masks. Duplicated subexpressions need no rule: the
//! e-graph shares equal e-nodes.
//!
//! Also: `slice` of a two-input `concat` that takes exactly one input back, and
//! `fake_quant_grad(dy, fake_quant(x))` with the same parameters, which is `dy` (a value
//! already on the quantization grid is inside the range, so the STE mask is all ones; see
//! the idempotence argument in `fake_quant.rs`).
//!
//! All rules are exact bit for bit, except `add-zero*`, which maps `-0.0 + 0.0 = +0.0` to
//! `-0.0` (equal as numbers, different sign bit). Rules whose right side is an operand
//! check that the operand has the matched value's type (broadcasting could change the
//! shape: `x * ones[4]` with `x: f32[1]` is `f32[4]`, not `x`). Facts used:
//! `relu_grad(dy, x) = dy * (x > 0)` and `relu(x) > 0` iff `x > 0`; `0 < relu6(x) < 6` iff
//! `0 < x < 6`; `x + (-y) = x - y` in IEEE arithmetic.

use egg::{Applier, Id, PatternAst, Subst, Symbol, Var};
use qir::{Attr, Inst, Op};

use super::fake_quant::{narrow_range, zero_point_in_range};
use super::{
    Guard, Rewrite, act_none, both, const_is, inst_of, merge_same_type, pattern, plain, rule,
    same_type_as_match, ty_of, var,
};
use crate::egraph::analysis::{self, EGraph, QirAnalysis};
use crate::egraph::lang::{AttrLeaf, QirLang};

/// `transpose(transpose(x, p1), p2)` is `transpose(x, q)` with `q[i] = p1[p2[i]]`, or `x`
/// when `q` is the identity.
struct ComposeTransposes {
    outer: Var,
    inner: Var,
    x: Var,
}

impl Applier<QirLang, QirAnalysis> for ComposeTransposes {
    fn apply_one(
        &self,
        egraph: &mut EGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<QirLang>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let (Some(&o), Some(&i), Some(&x)) = (
            subst.get(self.outer),
            subst.get(self.inner),
            subst.get(self.x),
        ) else {
            return Vec::new();
        };
        let perm = |id| analysis::inst(egraph, id).and_then(|i| i.ints("perm"));
        let (Some(p2), Some(p1)) = (perm(o), perm(i)) else {
            return Vec::new();
        };
        let composed: Option<Vec<i64>> = p2
            .iter()
            .map(|&k| usize::try_from(k).ok().and_then(|k| p1.get(k).copied()))
            .collect();
        let Some(q) = composed else {
            return Vec::new();
        };
        let identity = q.iter().enumerate().all(|(n, &k)| k == n as i64);
        let new = if identity {
            x
        } else {
            let Ok(inst) = Inst::new(Op::Transpose).with("perm", Attr::Ints(q)) else {
                return Vec::new();
            };
            let attr = egraph.add(QirLang::Attrs(AttrLeaf { inst, ty: None }));
            egraph.add(QirLang::op(Op::Transpose, Some(attr), &[x]))
        };
        merge_same_type(egraph, eclass, new)
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.outer, self.inner, self.x]
    }
}

/// Guard for `(slice ?s (concat ?c ?a ?b))`: the slice takes exactly input `?a` (`first`)
/// or `?b` back, along the concat's axis.
fn slice_takes_input(first: bool) -> Guard {
    let (sv, cv, av, bv) = (var("?s"), var("?c"), var("?a"), var("?b"));
    Box::new(move |eg, _, subst| {
        let check = || -> Option<bool> {
            let (sl, cat) = (inst_of(eg, subst, sv)?, inst_of(eg, subst, cv)?);
            let (ta, tb) = (ty_of(eg, subst, av)?, ty_of(eg, subst, bv)?);
            let axis = ta.shape.axis(cat.int("axis")?)?;
            if ta.shape.axis(sl.int("axis")?)? != axis {
                return Some(false);
            }
            let la = i64::try_from(ta.shape.dims().get(axis)?.fixed()?).ok()?;
            let lb = i64::try_from(tb.shape.dims().get(axis)?.fixed()?).ok()?;
            let (start, end) = (sl.int("start")?, sl.int("end")?);
            Some(if first {
                start == 0 && end == la
            } else {
                start == la && end == la + lb
            })
        };
        check().unwrap_or(false)
    })
}

/// Guard: the ops whose attributes are bound to `q` and `a` have the same `qmin`, `qmax`
/// and `axis` (their attribute leaves differ: they are different ops).
fn same_range(q: &str, a: &str) -> Guard {
    let (q, a) = (var(q), var(a));
    Box::new(
        move |eg, _, s| match (inst_of(eg, s, q), inst_of(eg, s, a)) {
            (Some(x), Some(y)) => ["qmin", "qmax", "axis"]
                .iter()
                .all(|k| x.int(k) == y.int(k)),
            _ => false,
        },
    )
}

/// The backward-simplification rule set.
pub fn rules() -> Vec<Rewrite> {
    vec![
        rule(
            "mul-by-one",
            "(mul ?x ?c)",
            "?x",
            both(const_is("?c", 1.0), same_type_as_match("?x")),
        ),
        rule(
            "mul-by-one-left",
            "(mul ?c ?x)",
            "?x",
            both(const_is("?c", 1.0), same_type_as_match("?x")),
        ),
        rule(
            "add-zero",
            "(add ?a ?x ?c)",
            "?x",
            both(
                act_none("?a"),
                both(const_is("?c", 0.0), same_type_as_match("?x")),
            ),
        ),
        rule(
            "add-zero-left",
            "(add ?a ?c ?x)",
            "?x",
            both(
                act_none("?a"),
                both(const_is("?c", 0.0), same_type_as_match("?x")),
            ),
        ),
        plain("neg-neg", "(neg (neg ?x))", "?x"),
        rule(
            "add-neg",
            "(add ?a ?x (neg ?y))",
            "(sub ?x ?y)",
            act_none("?a"),
        ),
        rule(
            "add-neg-left",
            "(add ?a (neg ?y) ?x)",
            "(sub ?x ?y)",
            act_none("?a"),
        ),
        // Negation commutes with a reshape bit for bit (it only flips sign bits). Moving
        // the `neg` outward lets `add-neg` turn `add(reshape(neg(a)), b)` — what the
        // gradient of a divisor produces — into `sub(b, reshape(a))`.
        plain(
            "reshape-neg",
            "(reshape ?a (neg ?x))",
            "(neg (reshape ?a ?x))",
        ),
        plain(
            "reshape-reshape",
            "(reshape ?a (reshape ?b ?x))",
            "(reshape ?a ?x)",
        ),
        rule(
            "reshape-identity",
            "(reshape ?a ?x)",
            "?x",
            same_type_as_match("?x"),
        ),
        rule(
            "flatten-identity",
            "(flatten ?a ?x)",
            "?x",
            same_type_as_match("?x"),
        ),
        rule(
            "sum-to-like-identity",
            "(sum_to_like ?x ?l)",
            "?x",
            same_type_as_match("?x"),
        ),
        rule(
            "broadcast-like-identity",
            "(broadcast_like ?x ?l)",
            "?x",
            same_type_as_match("?x"),
        ),
        plain("relu-relu", "(relu (relu ?x))", "(relu ?x)"),
        rule(
            "slice-concat-first",
            "(slice ?s (concat ?c ?a ?b))",
            "?a",
            slice_takes_input(true),
        ),
        rule(
            "slice-concat-second",
            "(slice ?s (concat ?c ?a ?b))",
            "?b",
            slice_takes_input(false),
        ),
        rule(
            "fake-quant-grad-of-fake-quant",
            "(fake_quant_grad ?q ?dy (fake_quant ?a ?x ?s ?z) ?s ?z)",
            "?dy",
            both(
                both(same_range("?q", "?a"), narrow_range("?a")),
                both(zero_point_in_range("?a", "?z"), same_type_as_match("?dy")),
            ),
        ),
        plain(
            "relu-grad-idempotent",
            "(relu_grad (relu_grad ?dy ?x) ?x)",
            "(relu_grad ?dy ?x)",
        ),
        plain(
            "relu-grad-of-relu",
            "(relu_grad ?dy (relu ?x))",
            "(relu_grad ?dy ?x)",
        ),
        plain(
            "relu6-grad-of-relu6",
            "(relu6_grad ?dy (relu6 ?x))",
            "(relu6_grad ?dy ?x)",
        ),
        Rewrite::new(
            "transpose-transpose",
            pattern("(transpose ?p2 (transpose ?p1 ?x))"),
            ComposeTransposes {
                outer: var("?p2"),
                inner: var("?p1"),
                x: var("?x"),
            },
        )
        .unwrap_or_else(|e| panic!("rule 'transpose-transpose': {e}")),
    ]
}
