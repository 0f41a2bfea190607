//! The syntax tree the grammar builds: the text's structure with byte spans, before any
//! name is resolved. Identifiers that name element types, initializers, storage types and
//! ops stay strings here; the lowering step resolves them and reports unknown ones.
//!
//! Invariant: every span is a byte range into the source the tree was parsed from.

use std::ops::Range;

/// A value with the byte span it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sp<T> {
    pub node: T,
    pub span: Range<usize>,
}

/// A whole file: `graph @name { items }`.
#[derive(Clone, Debug, PartialEq)]
pub struct File<'a> {
    pub name: Sp<&'a str>,
    pub items: Vec<Item<'a>>,
    pub span: Range<usize>,
}

/// One statement inside the graph body, with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Item<'a> {
    pub kind: ItemKind<'a>,
    pub span: Range<usize>,
}

/// The kind of declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclKind {
    Param,
    State,
    Const,
}

/// The statements of the language.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemKind<'a> {
    /// `input %x: type`
    Input { value: Sp<&'a str>, ty: TypeAst<'a> },
    /// `param|state|const %x: type = init`
    Decl {
        kind: DeclKind,
        value: Sp<&'a str>,
        ty: TypeAst<'a>,
        init: InitAst<'a>,
    },
    /// `%x = op(%a, %b) {attrs} : type`
    Op {
        result: Sp<&'a str>,
        op: Sp<&'a str>,
        operands: Vec<Sp<&'a str>>,
        attrs: Vec<AttrAst<'a>>,
        ty: Option<TypeAst<'a>>,
    },
    /// `output name = %x`
    Output {
        name: Sp<&'a str>,
        value: Sp<&'a str>,
    },
    /// `loss %x`
    Loss { value: Sp<&'a str> },
    /// `update %target = %value`
    Update {
        target: Sp<&'a str>,
        value: Sp<&'a str>,
    },
}

/// A number as written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NumKind<'a> {
    /// An integer literal (fits `i64` or `u64`).
    Int(i128),
    /// A float literal's text.
    Float(&'a str),
    Inf,
    NegInf,
    Nan,
}

/// A number with its span.
pub type Num<'a> = Sp<NumKind<'a>>;

/// An attribute value as written.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValueAst<'a> {
    Num(Num<'a>),
    Bool(bool),
    Ident(&'a str),
    List(Vec<Num<'a>>),
}

/// `name = value` inside `{...}`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttrAst<'a> {
    pub name: Sp<&'a str>,
    pub value: Sp<AttrValueAst<'a>>,
}

/// One shape dimension: a size or a symbol.
#[derive(Clone, Debug, PartialEq)]
pub enum DimAst<'a> {
    Fixed(i128),
    Sym(&'a str),
}

/// The element part of a type.
#[derive(Clone, Debug, PartialEq)]
pub enum ElemAst<'a> {
    /// `f32`, `i8`, ... (resolved in lowering).
    Named(Sp<&'a str>),
    Quant(Box<QuantAst<'a>>),
}

/// `elem[dims]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeAst<'a> {
    pub elem: ElemAst<'a>,
    pub dims: Vec<Sp<DimAst<'a>>>,
    pub span: Range<usize>,
}

/// `!quant.uniform<storage[<qmin:qmax>]:expressed[:axis], params>`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantAst<'a> {
    pub dialect: Sp<&'a str>,
    pub storage: Sp<&'a str>,
    pub range: Option<(Sp<i128>, Sp<i128>)>,
    pub expressed: Sp<&'a str>,
    pub axis: Option<Sp<i128>>,
    pub params: QParamsAst<'a>,
}

/// `scale[:zero_point]`.
#[derive(Clone, Debug, PartialEq)]
pub struct QpAst<'a> {
    pub scale: Num<'a>,
    pub zero_point: Option<Sp<i128>>,
}

/// The parameter part of a quantized type.
#[derive(Clone, Debug, PartialEq)]
pub enum QParamsAst<'a> {
    PerTensor(QpAst<'a>),
    PerAxis(Vec<QpAst<'a>>),
    Ref {
        scales: Sp<&'a str>,
        zero_points: Option<Sp<&'a str>>,
    },
}

/// An initializer as written.
#[derive(Clone, Debug, PartialEq)]
pub enum InitAst<'a> {
    /// `zeros`, `kaiming_uniform`, ...
    Named(Sp<&'a str>),
    /// `fill(v)`, `uniform(lo, hi)`, `normal(mean, std)`.
    Call {
        name: Sp<&'a str>,
        args: Vec<Num<'a>>,
        span: Range<usize>,
    },
    /// `[v, ...]`
    Dense(Vec<Num<'a>>),
}
