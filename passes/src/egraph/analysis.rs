//! The e-class analysis ([`QirAnalysis`]): for every e-class its value's type, the
//! attributes of attribute leaves, a known constant value, and whether the value depends
//! only on parameters, constants and state ("weight-like", folded away at convert time).
//!
//! Invariants: a class's type is inferred with `qir::shape::infer` from its children
//! exactly as the verifier would; declarations take their type from the source graph.
//! Rules only merge classes of equal type; a merge of two different known types is a bug
//! in a rule and is recorded in [`QirAnalysis::conflicts`] (the pass then fails instead of
//! producing a wrong graph).

use std::collections::HashMap;

use egg::{Analysis, DidMerge, Id};
use qir::{Inst, Type, shape};

use super::lang::{AttrLeaf, QirLang, TypeTable};

/// The e-graph type of this crate.
pub type EGraph = egg::EGraph<QirLang, QirAnalysis>;

/// What the analysis knows about a declaration of the source graph.
#[derive(Clone, Debug)]
pub struct LeafInfo {
    /// The declared type.
    pub ty: Type,
    /// The value of every element, when the declaration is a constant whose elements are
    /// all equal.
    pub constant: Option<f64>,
    /// Params, consts and state are weight-like; inputs are not.
    pub weight_like: bool,
}

/// Per-class data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Data {
    /// The type of the value (`None` for attribute leaves and for ill-typed nodes).
    pub ty: Option<Type>,
    /// The attributes, for an attribute-leaf class.
    pub attrs: Option<AttrLeaf>,
    /// The value of every element when it is known and all elements are equal.
    pub constant: Option<f64>,
    /// True when the value depends only on params, consts and state.
    pub weight_like: bool,
}

/// The analysis: the tables that e-node creation needs, plus the record of merge conflicts.
#[derive(Debug, Default)]
pub struct QirAnalysis {
    /// Result types written on ops such as `quantize`, interned.
    pub types: TypeTable,
    /// The declarations of the source graph by node index.
    pub leaves: HashMap<u32, LeafInfo>,
    /// The classes of the graph's roots (outputs, loss, update values, unused ops): a value
    /// in one of them is used outside the e-graph.
    pub roots: Vec<Id>,
    /// Merges of classes with different types (each one a rule bug).
    pub conflicts: Vec<String>,
}

impl QirAnalysis {
    /// True if `id` is (now) the class of a root.
    pub fn is_root(&self, egraph: &EGraph, id: Id) -> bool {
        let id = egraph.find(id);
        self.roots.iter().any(|&r| egraph.find(r) == id)
    }
}

/// The type an op e-node computes, from its children's classes: `None` if a child has no
/// type or inference fails. Leaves give their own type.
pub fn node_type(egraph: &EGraph, enode: &QirLang) -> Option<Type> {
    match enode {
        QirLang::Op(..) => {
            let (op, attr, operands) = enode.split()?;
            let (inst, written) = match attr {
                Some(a) => {
                    let leaf = egraph[a].data.attrs.as_ref()?;
                    let written = match leaf.ty {
                        Some(t) => Some(egraph.analysis.types.get(t)?),
                        None => None,
                    };
                    (leaf.inst.clone(), written)
                }
                None => (Inst::new(op), None),
            };
            let tys: Option<Vec<&Type>> = operands
                .iter()
                .map(|&c| egraph[c].data.ty.as_ref())
                .collect();
            shape::infer(&inst, &tys?, written).ok()
        }
        QirLang::Attrs(_) => None,
        QirLang::Leaf(n) => egraph.analysis.leaves.get(n).map(|l| l.ty.clone()),
        QirLang::Scalar(_) => Some(Type::scalar(qir::ElemType::F32)),
    }
}

/// The attributes of the op whose attribute child is `id`.
pub fn inst(egraph: &EGraph, id: Id) -> Option<&Inst> {
    egraph[id].data.attrs.as_ref().map(|l| &l.inst)
}

/// The type of class `id`.
pub fn ty(egraph: &EGraph, id: Id) -> Option<&Type> {
    egraph[id].data.ty.as_ref()
}

/// The known all-equal constant value of class `id`.
pub fn constant(egraph: &EGraph, id: Id) -> Option<f64> {
    egraph[id].data.constant
}

/// The value of every element of a constant initializer, if they are all equal.
pub fn uniform_value(init: &qir::Init) -> Option<f64> {
    match init {
        qir::Init::Zeros => Some(0.0),
        qir::Init::Ones => Some(1.0),
        qir::Init::Fill(v) => Some(*v),
        qir::Init::Dense(vs) => {
            let first = *vs.first()?;
            vs.iter()
                .all(|v| v.to_bits() == first.to_bits())
                .then_some(first)
        }
        qir::Init::Uniform(..)
        | qir::Init::Normal(..)
        | qir::Init::KaimingUniform
        | qir::Init::KaimingNormal
        | qir::Init::XavierUniform
        | qir::Init::XavierNormal
        | qir::Init::LecunUniform
        | qir::Init::External => None,
    }
}

impl Analysis<QirLang> for QirAnalysis {
    type Data = Data;

    fn make(egraph: &mut EGraph, enode: &QirLang, _id: Id) -> Data {
        match enode {
            QirLang::Op(..) => {
                let weight_like = enode
                    .split()
                    .map(|(_, _, operands)| operands.iter().all(|&c| egraph[c].data.weight_like))
                    .unwrap_or(false);
                Data {
                    ty: node_type(egraph, enode),
                    attrs: None,
                    constant: None,
                    weight_like,
                }
            }
            QirLang::Attrs(leaf) => Data {
                ty: None,
                attrs: Some(leaf.clone()),
                constant: None,
                weight_like: true,
            },
            QirLang::Leaf(n) => match egraph.analysis.leaves.get(n) {
                Some(info) => Data {
                    ty: Some(info.ty.clone()),
                    attrs: None,
                    constant: info.constant,
                    weight_like: info.weight_like,
                },
                None => Data::default(),
            },
            QirLang::Scalar(bits) => Data {
                ty: Some(Type::scalar(qir::ElemType::F32)),
                attrs: None,
                constant: Some(f32::from_bits(*bits) as f64),
                weight_like: true,
            },
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut a_changed = false;
        let mut b_changed = false;
        match (&a.ty, b.ty) {
            (None, Some(t)) => {
                a.ty = Some(t);
                a_changed = true;
            }
            (Some(_), None) => b_changed = true,
            (Some(x), Some(y)) => {
                if *x != y {
                    self.conflicts
                        .push(format!("merged values of types {x} and {y}"));
                }
            }
            (None, None) => {}
        }
        match (&a.attrs, b.attrs) {
            (None, Some(l)) => {
                a.attrs = Some(l);
                a_changed = true;
            }
            (Some(_), None) => b_changed = true,
            _ => {}
        }
        match (a.constant, b.constant) {
            (None, Some(c)) => {
                a.constant = Some(c);
                a_changed = true;
            }
            (Some(_), None) => b_changed = true,
            (Some(x), Some(y)) => {
                if x.to_bits() != y.to_bits() {
                    self.conflicts.push(format!("merged constants {x} and {y}"));
                }
            }
            (None, None) => {}
        }
        if a.weight_like != b.weight_like {
            if b.weight_like {
                a.weight_like = true;
                a_changed = true;
            } else {
                b_changed = true;
            }
        }
        DidMerge(a_changed, b_changed)
    }
}
