//! The rule sets, one file per theme, each a function returning its rewrites with
//! kebab-case names, and the pieces they share: [`Checked`] (a pattern right-hand side
//! merged only when its guard holds and its type equals the matched value's type), guard
//! helpers, and [`single_use`].
//!
//! Invariant of every rule here: it merges only values that are equal for every input
//! (bit for bit unless its doc says otherwise), and never merges values of different
//! types (the [`Checked`] applier and the custom appliers compare the types first).

pub mod backward;
pub mod batchnorm;
pub mod fake_quant;
pub mod fusion;
pub mod qdq;
pub mod requant;

use std::collections::HashSet;

use egg::{Applier, Id, Language, Pattern, PatternAst, Subst, Symbol, Var};
use qir::{Inst, Type};

use super::analysis::{self, EGraph, QirAnalysis};
use super::lang::QirLang;

/// A rewrite of this crate's e-graphs.
pub type Rewrite = egg::Rewrite<QirLang, QirAnalysis>;

/// A side condition: the e-graph, the matched class and the substitution.
pub type Guard = Box<dyn Fn(&EGraph, Id, &Subst) -> bool + Send + Sync>;

/// Parses a pattern of a rule table (static text: a malformed one is a bug that every test
/// of the rule set reports).
pub fn pattern(text: &str) -> Pattern<QirLang> {
    text.parse()
        .unwrap_or_else(|e| panic!("rule pattern '{text}' does not parse: {e}"))
}

/// A pattern variable (`?x`) of a rule table.
pub fn var(name: &str) -> Var {
    name.parse()
        .unwrap_or_else(|e| panic!("'{name}' is not a pattern variable: {e}"))
}

/// Instantiates a pattern and merges it with the matched class when the guard holds and
/// the instantiated value has the matched value's type.
pub struct Checked {
    rhs: Pattern<QirLang>,
    guard: Guard,
}

impl Applier<QirLang, QirAnalysis> for Checked {
    fn apply_one(
        &self,
        egraph: &mut EGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<QirLang>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        if !(self.guard)(egraph, eclass, subst) {
            return Vec::new();
        }
        let id = egraph.add_instantiation(&self.rhs.ast, subst);
        merge_same_type(egraph, eclass, id)
    }

    fn vars(&self) -> Vec<Var> {
        self.rhs.vars()
    }
}

/// Merges `new` into `eclass` if both have the same known type; returns the changed class.
pub fn merge_same_type(egraph: &mut EGraph, eclass: Id, new: Id) -> Vec<Id> {
    let same = matches!(
        (analysis::ty(egraph, new), analysis::ty(egraph, eclass)),
        (Some(a), Some(b)) if a == b
    );
    if same && egraph.union(eclass, new) {
        vec![new]
    } else {
        Vec::new()
    }
}

/// A guarded rule `lhs => rhs`.
pub fn rule(name: &str, lhs: &str, rhs: &str, guard: Guard) -> Rewrite {
    Rewrite::new(
        name,
        pattern(lhs),
        Checked {
            rhs: pattern(rhs),
            guard,
        },
    )
    .unwrap_or_else(|e| panic!("rule '{name}': {e}"))
}

/// An unguarded rule (the type check still applies).
pub fn plain(name: &str, lhs: &str, rhs: &str) -> Rewrite {
    rule(name, lhs, rhs, always())
}

/// The guard that always holds.
pub fn always() -> Guard {
    Box::new(|_, _, _| true)
}

/// Both guards.
pub fn both(a: Guard, b: Guard) -> Guard {
    Box::new(move |eg, c, s| a(eg, c, s) && b(eg, c, s))
}

/// The attributes bound to the attribute variable `a`.
pub fn inst_of<'e>(egraph: &'e EGraph, subst: &Subst, a: Var) -> Option<&'e Inst> {
    analysis::inst(egraph, *subst.get(a)?)
}

/// The type of the class bound to `x`.
pub fn ty_of<'e>(egraph: &'e EGraph, subst: &Subst, x: Var) -> Option<&'e Type> {
    analysis::ty(egraph, *subst.get(x)?)
}

/// The known all-equal constant value of the class bound to `x`.
pub fn const_of(egraph: &EGraph, subst: &Subst, x: Var) -> Option<f64> {
    analysis::constant(egraph, *subst.get(x)?)
}

/// Guard: the op whose attributes are bound to `a` has no `axis` (per-tensor).
pub fn per_tensor(a: &str) -> Guard {
    let a = var(a);
    Box::new(move |eg, _, s| inst_of(eg, s, a).is_some_and(|i| i.int("axis").is_none()))
}

/// Guard: the op whose attributes are bound to `a` has no fused activation.
pub fn act_none(a: &str) -> Guard {
    let a = var(a);
    Box::new(move |eg, _, s| inst_of(eg, s, a).is_some_and(|i| i.choice("act") == Some("none")))
}

/// Guard: the class bound to `x` is a constant whose every element equals `value`.
pub fn const_is(x: &str, value: f64) -> Guard {
    let x = var(x);
    Box::new(move |eg, _, s| const_of(eg, s, x) == Some(value))
}

/// Guard: the class bound to `x` has the matched value's type (for `... => ?x` rules
/// where broadcasting could change the shape; [`Checked`] checks it too).
pub fn same_type_as_match(x: &str) -> Guard {
    let x = var(x);
    Box::new(
        move |eg, c, s| matches!((ty_of(eg, s, x), analysis::ty(eg, c)), (Some(a), Some(b)) if a == b),
    )
}

/// True if the value of `id` has exactly one user in the e-graph (one distinct parent
/// e-node) and is not a graph root: rewriting that user cannot duplicate the value.
/// The extractor counts a shared value once per use, so rules that fold a value into its
/// user (fusion, batch-norm folding) check this to avoid computing it twice.
pub fn single_use(egraph: &EGraph, id: Id) -> bool {
    if egraph.analysis.is_root(egraph, id) {
        return false;
    }
    let users: HashSet<QirLang> = egraph[id]
        .parents()
        .map(|p| {
            egraph
                .id_to_node(p)
                .clone()
                .map_children(|c| egraph.find(c))
        })
        .collect();
    users.len() == 1
}

/// Every rule of every theme (for listing and for checking that names are unique).
pub fn all() -> Vec<Rewrite> {
    let mut v = fake_quant::rules();
    v.extend(qdq::rules());
    v.extend(requant::rules());
    v.extend(backward::rules());
    v.extend(fusion::rules());
    v.extend(batchnorm::rules());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_are_unique_and_kebab_case() {
        let mut seen = HashSet::new();
        for r in all() {
            let name = r.name.to_string();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "rule '{name}' is not kebab-case"
            );
            assert!(seen.insert(name.clone()), "rule '{name}' is defined twice");
        }
        assert!(seen.len() >= 30, "{} rules", seen.len());
    }
}
