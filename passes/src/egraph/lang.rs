//! The e-graph language of qir ([`QirLang`]): one e-node per op, with the op's attributes
//! as an attribute-leaf child, declarations as leaves, and scalar constants created by rules.
//!
//! Invariants: an op e-node whose op has attributes or a written result type
//! ([`has_attr_child`]) has exactly one more child than operands, and that first child is
//! an e-class holding a single [`QirLang::Attrs`] node. Two ops with equal attributes
//! therefore share the attribute e-class, so rule patterns compare attributes by binding
//! the attribute child to one variable (`(fake_quant ?a (fake_quant ?a ?x ?s ?z) ?s ?z)`).
//! The op's mnemonic is its e-graph symbol: `Display` prints it and [`egg::FromOp`] parses
//! it, the same string as the text form of the IR.

use std::collections::HashMap;
use std::fmt;

use egg::{FromOp, Id, Language};
use qir::float::fmt_f32;
use qir::{Inst, Op, Type};

/// Index of a type interned in a [`TypeTable`] (`qir::Type` is not `Hash`, so e-nodes hold
/// this index instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeId(pub u32);

/// Interned types, keyed by their printed text (which is unique per type).
#[derive(Clone, Debug, Default)]
pub struct TypeTable {
    types: Vec<Type>,
    by_text: HashMap<String, TypeId>,
}

impl TypeTable {
    /// The index of `ty`, interning it on first sight.
    pub fn intern(&mut self, ty: &Type) -> TypeId {
        let text = ty.to_string();
        if let Some(&id) = self.by_text.get(&text) {
            return id;
        }
        let id = TypeId(self.types.len() as u32);
        self.types.push(ty.clone());
        self.by_text.insert(text, id);
        id
    }

    /// The type interned as `id`.
    pub fn get(&self, id: TypeId) -> Option<&Type> {
        self.types.get(id.0 as usize)
    }
}

/// The attribute leaf of an op: its attributes and, for ops whose result type is written
/// ([`Op::result_type_is_written`]), that type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttrLeaf {
    /// The op and its attributes.
    pub inst: Inst,
    /// The written result type, for ops that need one.
    pub ty: Option<TypeId>,
}

/// An e-node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QirLang {
    /// An op applied to its children: the attribute leaf first when [`has_attr_child`],
    /// then the operands in slot order.
    Op(Op, Vec<Id>),
    /// The attributes (and written result type) of an op.
    Attrs(AttrLeaf),
    /// A declaration (input, param, state or const) of the source graph, by node index.
    Leaf(u32),
    /// A scalar f32 constant created by a rule, by its bits; rebuilding the graph turns it
    /// into a `const` declaration.
    Scalar(u32),
}

/// True for ops whose e-node carries an attribute-leaf child.
pub fn has_attr_child(op: Op) -> bool {
    !op.info().attrs.is_empty() || op.result_type_is_written()
}

impl QirLang {
    /// An op e-node from the attribute class (when the op has one) and the operands.
    pub fn op(op: Op, attrs: Option<Id>, operands: &[Id]) -> QirLang {
        let mut children = Vec::with_capacity(operands.len() + 1);
        children.extend(attrs);
        children.extend_from_slice(operands);
        QirLang::Op(op, children)
    }

    /// The scalar node of an f32 value.
    pub fn scalar(v: f32) -> QirLang {
        QirLang::Scalar(v.to_bits())
    }

    /// For an op node: the attribute child (if the op has one) and the operands.
    pub fn split(&self) -> Option<(Op, Option<Id>, &[Id])> {
        match self {
            QirLang::Op(op, children) => {
                if has_attr_child(*op) {
                    let (first, rest) = children.split_first()?;
                    Some((*op, Some(*first), rest))
                } else {
                    Some((*op, None, children))
                }
            }
            QirLang::Attrs(_) | QirLang::Leaf(_) | QirLang::Scalar(_) => None,
        }
    }
}

/// What e-nodes are indexed by: the op, or the kind of leaf.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Discriminant {
    /// An op node (any arity).
    Op(Op),
    Attrs,
    Leaf,
    Scalar,
}

impl Language for QirLang {
    type Discriminant = Discriminant;

    fn discriminant(&self) -> Discriminant {
        match self {
            QirLang::Op(op, _) => Discriminant::Op(*op),
            QirLang::Attrs(_) => Discriminant::Attrs,
            QirLang::Leaf(_) => Discriminant::Leaf,
            QirLang::Scalar(_) => Discriminant::Scalar,
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (QirLang::Op(a, xs), QirLang::Op(b, ys)) => a == b && xs.len() == ys.len(),
            (QirLang::Attrs(a), QirLang::Attrs(b)) => a == b,
            (QirLang::Leaf(a), QirLang::Leaf(b)) => a == b,
            (QirLang::Scalar(a), QirLang::Scalar(b)) => a == b,
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            QirLang::Op(_, children) => children,
            QirLang::Attrs(_) | QirLang::Leaf(_) | QirLang::Scalar(_) => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            QirLang::Op(_, children) => children,
            QirLang::Attrs(_) | QirLang::Leaf(_) | QirLang::Scalar(_) => &mut [],
        }
    }
}

impl fmt::Display for QirLang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QirLang::Op(op, _) => f.write_str(op.mnemonic()),
            QirLang::Attrs(leaf) => {
                let attrs: Vec<String> = leaf
                    .inst
                    .written_attrs()
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect();
                write!(f, "{{{}}}", attrs.join(", "))?;
                if let Some(t) = leaf.ty {
                    write!(f, ":type{}", t.0)?;
                }
                Ok(())
            }
            QirLang::Leaf(n) => write!(f, "#{n}"),
            QirLang::Scalar(bits) => f.write_str(&fmt_f32(f32::from_bits(*bits))),
        }
    }
}

/// Why a symbol does not name an e-node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseNodeError {
    /// An op with the wrong number of children.
    #[error("'{op}' takes {expected} children (attribute leaf included), found {found}")]
    Arity {
        op: &'static str,
        expected: String,
        found: usize,
    },
    /// Neither an op mnemonic, a `#n` leaf nor a number.
    #[error("unknown e-node symbol '{0}'")]
    Unknown(String),
}

/// Parses op mnemonics (with their children), `#n` declaration leaves and f32 scalars.
/// Attribute leaves have no text form: patterns bind them with a variable.
impl FromOp for QirLang {
    type Error = ParseNodeError;

    fn from_op(symbol: &str, children: Vec<Id>) -> Result<Self, Self::Error> {
        if let Some(op) = Op::from_mnemonic(symbol) {
            let extra = usize::from(has_attr_child(op));
            let (min, max) = op.info().arity();
            let n = children.len();
            let ok = n >= min + extra && max.is_none_or(|m| n <= m + extra);
            if !ok {
                let expected = match max {
                    Some(m) if m == min => format!("{}", m + extra),
                    Some(m) => format!("{} to {}", min + extra, m + extra),
                    None => format!("at least {}", min + extra),
                };
                return Err(ParseNodeError::Arity {
                    op: op.mnemonic(),
                    expected,
                    found: n,
                });
            }
            return Ok(QirLang::Op(op, children));
        }
        if children.is_empty() {
            if let Some(n) = symbol.strip_prefix('#').and_then(|s| s.parse().ok()) {
                return Ok(QirLang::Leaf(n));
            }
            if let Ok(v) = symbol.parse::<f32>() {
                return Ok(QirLang::scalar(v));
            }
        }
        Err(ParseNodeError::Unknown(symbol.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egg::RecExpr;

    #[test]
    fn mnemonics_parse_and_print_back() {
        let e: RecExpr<QirLang> = "(relu (neg #3))".parse().unwrap();
        assert_eq!(e.to_string(), "(relu (neg #3))");
        let e: RecExpr<QirLang> = "(mul #0 1.5)".parse().unwrap();
        assert_eq!(e.to_string(), "(mul #0 1.5)");
    }

    #[test]
    fn arity_counts_the_attribute_leaf() {
        // relu has no attributes: one child
        assert!("(relu #1 #2)".parse::<RecExpr<QirLang>>().is_err());
        // linear: attribute leaf + x, w, b?
        let err = QirLang::from_op("linear", vec![Id::from(0)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'linear' takes 3 to 4 children (attribute leaf included), found 1"
        );
        assert!(QirLang::from_op("linear", vec![Id::from(0); 3]).is_ok());
        assert!(QirLang::from_op("concat", vec![Id::from(0); 9]).is_ok());
        assert!(QirLang::from_op("nonsense", vec![]).is_err());
    }

    #[test]
    fn types_intern_by_text() {
        let mut t = TypeTable::default();
        let a = t.intern(&Type::f32(&["B".into(), 4u64.into()]));
        let b = t.intern(&Type::f32(&[4u64.into()]));
        let c = t.intern(&Type::f32(&["B".into(), 4u64.into()]));
        assert_eq!(a, c);
        assert_ne!(a, b);
        assert_eq!(t.get(b).unwrap().to_string(), "f32[4]");
    }
}
