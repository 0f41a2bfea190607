//! Op attributes: their values, their declared kinds and defaults (part of the op table),
//! and the per-node container.
//!
//! Invariant: an [`Attrs`] is aligned with its op's `attrs` table — slot `i` holds the value
//! of `info.attrs[i]` or `None` when the attribute is absent or equal to its default, so that
//! there is exactly one stored form of every attribute set (the canonical form prints only
//! what is stored).

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::float::fmt_f64;

/// An attribute value.
#[derive(Clone, Debug)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Bool(bool),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    /// One of the identifiers the attribute's spec allows.
    Enum(&'static str),
}

impl Attr {
    fn key(&self) -> (u8, Vec<u64>, &'static str) {
        match self {
            Attr::Int(v) => (0, vec![*v as u64], ""),
            Attr::Float(v) => (1, vec![v.to_bits()], ""),
            Attr::Bool(v) => (2, vec![*v as u64], ""),
            Attr::Ints(v) => (3, v.iter().map(|&x| x as u64).collect(), ""),
            Attr::Floats(v) => (4, v.iter().map(|x| x.to_bits()).collect(), ""),
            Attr::Enum(s) => (5, Vec::new(), s),
        }
    }
    pub fn kind_name(&self) -> &'static str {
        match self {
            Attr::Int(_) => "integer",
            Attr::Float(_) => "float",
            Attr::Bool(_) => "boolean",
            Attr::Ints(_) => "integer list",
            Attr::Floats(_) => "float list",
            Attr::Enum(_) => "identifier",
        }
    }
}

/// Floats compare by bits, so `Attr` is a lawful `Eq + Hash` (needed by e-graph nodes).
impl PartialEq for Attr {
    fn eq(&self, other: &Attr) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Attr {}
impl Hash for Attr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}
/// A total order by kind then bits (meaningless numerically; used by e-graph nodes).
impl PartialOrd for Attr {
    fn partial_cmp(&self, other: &Attr) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Attr {
    fn cmp(&self, other: &Attr) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            Attr::Float(v) => f.write_str(&fmt_f64(*v)),
            Attr::Bool(v) => write!(f, "{v}"),
            Attr::Ints(v) => {
                let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                write!(f, "[{}]", s.join(", "))
            }
            Attr::Floats(v) => {
                let s: Vec<String> = v.iter().map(|&x| fmt_f64(x)).collect();
                write!(f, "[{}]", s.join(", "))
            }
            Attr::Enum(s) => f.write_str(s),
        }
    }
}

/// The declared kind of an attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    Int,
    Float,
    Bool,
    Ints,
    Floats,
    Enum(&'static [&'static str]),
}

impl AttrKind {
    pub fn describe(self) -> String {
        match self {
            AttrKind::Int => "integer".into(),
            AttrKind::Float => "float".into(),
            AttrKind::Bool => "boolean".into(),
            AttrKind::Ints => "integer list".into(),
            AttrKind::Floats => "float list".into(),
            AttrKind::Enum(vs) => format!("one of {}", vs.join(", ")),
        }
    }
}

/// What happens when an attribute is not written.
#[derive(Clone, Copy, Debug)]
pub enum AttrDefault {
    /// The attribute must be written.
    Required,
    /// The attribute may be absent; absence has its own meaning (documented per op).
    Optional,
    Int(i64),
    Float(f64),
    Bool(bool),
    Ints(&'static [i64]),
    Enum(&'static str),
}

impl AttrDefault {
    pub fn value(self) -> Option<Attr> {
        match self {
            AttrDefault::Required | AttrDefault::Optional => None,
            AttrDefault::Int(v) => Some(Attr::Int(v)),
            AttrDefault::Float(v) => Some(Attr::Float(v)),
            AttrDefault::Bool(v) => Some(Attr::Bool(v)),
            AttrDefault::Ints(v) => Some(Attr::Ints(v.to_vec())),
            AttrDefault::Enum(v) => Some(Attr::Enum(v)),
        }
    }
}

/// One attribute of an op: name, kind, default.
#[derive(Clone, Copy, Debug)]
pub struct AttrSpec {
    pub name: &'static str,
    pub kind: AttrKind,
    pub default: AttrDefault,
}

impl AttrSpec {
    /// Converts a value written in text (or built by a pass) to this attribute's kind:
    /// integers are accepted where floats are expected, identifiers are checked against the
    /// allowed list. The error says what was expected.
    pub fn coerce(&self, value: Attr) -> Result<Attr, String> {
        let bad = |v: &Attr| {
            Err(format!(
                "attribute '{}' expects {}, found {}",
                self.name,
                self.kind.describe(),
                v.kind_name()
            ))
        };
        match (self.kind, value) {
            (AttrKind::Int, v @ Attr::Int(_)) => Ok(v),
            (AttrKind::Float, v @ Attr::Float(_)) => Ok(v),
            (AttrKind::Float, Attr::Int(i)) => Ok(Attr::Float(i as f64)),
            (AttrKind::Bool, v @ Attr::Bool(_)) => Ok(v),
            (AttrKind::Ints, v @ Attr::Ints(_)) => Ok(v),
            (AttrKind::Floats, v @ Attr::Floats(_)) => Ok(v),
            (AttrKind::Floats, Attr::Ints(v)) => {
                Ok(Attr::Floats(v.into_iter().map(|i| i as f64).collect()))
            }
            (AttrKind::Enum(allowed), Attr::Enum(s)) => match allowed.iter().find(|a| **a == s) {
                Some(a) => Ok(Attr::Enum(a)),
                None => Err(format!(
                    "attribute '{}' must be one of {}, found '{s}'",
                    self.name,
                    allowed.join(", ")
                )),
            },
            (_, v) => bad(&v),
        }
    }

    /// Resolves an identifier written in text against this attribute's allowed values.
    pub fn enum_value(&self, ident: &str) -> Result<Attr, String> {
        match self.kind {
            AttrKind::Enum(allowed) => match allowed.iter().find(|a| **a == ident) {
                Some(a) => Ok(Attr::Enum(a)),
                None => Err(format!(
                    "attribute '{}' must be one of {}, found '{ident}'",
                    self.name,
                    allowed.join(", ")
                )),
            },
            AttrKind::Bool => match ident {
                "true" => Ok(Attr::Bool(true)),
                "false" => Ok(Attr::Bool(false)),
                _ => Err(format!(
                    "attribute '{}' expects a boolean, found '{ident}'",
                    self.name
                )),
            },
            kind => Err(format!(
                "attribute '{}' expects {}, found identifier '{ident}'",
                self.name,
                kind.describe()
            )),
        }
    }
}

/// Const constructors used by the op table.
pub mod spec {
    use super::*;
    pub const fn int(name: &'static str, d: i64) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Int,
            default: AttrDefault::Int(d),
        }
    }
    pub const fn int_req(name: &'static str) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Int,
            default: AttrDefault::Required,
        }
    }
    pub const fn int_opt(name: &'static str) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Int,
            default: AttrDefault::Optional,
        }
    }
    pub const fn float(name: &'static str, d: f64) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Float,
            default: AttrDefault::Float(d),
        }
    }
    pub const fn float_req(name: &'static str) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Float,
            default: AttrDefault::Required,
        }
    }
    pub const fn float_opt(name: &'static str) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Float,
            default: AttrDefault::Optional,
        }
    }
    pub const fn boolean(name: &'static str, d: bool) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Bool,
            default: AttrDefault::Bool(d),
        }
    }
    pub const fn ints(name: &'static str, d: &'static [i64]) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Ints,
            default: AttrDefault::Ints(d),
        }
    }
    pub const fn ints_req(name: &'static str) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Ints,
            default: AttrDefault::Required,
        }
    }
    pub const fn ints_opt(name: &'static str) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Ints,
            default: AttrDefault::Optional,
        }
    }
    pub const fn floats_req(name: &'static str) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Floats,
            default: AttrDefault::Required,
        }
    }
    /// An identifier attribute that must be written (a policy no file may leave implicit,
    /// such as a rounding mode).
    pub const fn choice_req(name: &'static str, allowed: &'static [&'static str]) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Enum(allowed),
            default: AttrDefault::Required,
        }
    }
    pub const fn choice(
        name: &'static str,
        allowed: &'static [&'static str],
        d: &'static str,
    ) -> AttrSpec {
        AttrSpec {
            name,
            kind: AttrKind::Enum(allowed),
            default: AttrDefault::Enum(d),
        }
    }
}

/// The attributes of one op node, aligned with the op's attribute table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Attrs(pub(crate) Vec<Option<Attr>>);

impl Attrs {
    /// An attribute set with nothing written, for an op with `n` attribute slots.
    pub fn empty(n: usize) -> Attrs {
        Attrs(vec![None; n])
    }
    /// The stored (non-default) value in slot `i`.
    pub fn slot(&self, i: usize) -> Option<&Attr> {
        self.0.get(i).and_then(|a| a.as_ref())
    }
    pub(crate) fn set_slot(&mut self, i: usize, v: Option<Attr>) {
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i] = v;
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}
