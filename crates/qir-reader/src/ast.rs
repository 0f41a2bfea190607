//! The syntax tree the grammar builds: the text's structure with byte spans, before any
//! name is resolved. Identifiers that name element types, initializers, storage types and
//! ops stay strings here; the lowering step resolves them and reports unknown ones.
//!
//! Invariant: every span is a byte range into the source the tree was parsed from.

use std::ops::Range;

/// A value with the byte span it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sp<T> {
    /// The value.
    pub node: T,
    /// Where it was written.
    pub span: Range<usize>,
}

/// A whole file: `graph @name { items }`.
#[derive(Clone, Debug, PartialEq)]
pub struct File<'a> {
    /// The graph name, without `@`.
    pub name: Sp<&'a str>,
    /// The statements in text order.
    pub items: Vec<Item<'a>>,
    /// From `graph` to the closing brace.
    pub span: Range<usize>,
}

/// One statement inside the graph body, with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Item<'a> {
    /// What the statement is.
    pub kind: ItemKind<'a>,
    /// The whole statement.
    pub span: Range<usize>,
}

/// The kind of declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclKind {
    /// `param`: trained.
    Param,
    /// `state`: carried across runs, not trained.
    State,
    /// `const`: fixed.
    Const,
}

/// The statements of the language.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemKind<'a> {
    /// `input %x: type`
    Input {
        /// The value defined (without `%`).
        value: Sp<&'a str>,
        /// Its type.
        ty: TypeAst<'a>,
    },
    /// `param|state|const %x: type = init`
    Decl {
        /// Which declaration.
        kind: DeclKind,
        /// The value defined (without `%`).
        value: Sp<&'a str>,
        /// Its type.
        ty: TypeAst<'a>,
        /// Its initializer.
        init: InitAst<'a>,
    },
    /// `%x = op(%a, %b) {attrs} : type`
    Op {
        /// The value defined (without `%`).
        result: Sp<&'a str>,
        /// The op mnemonic.
        op: Sp<&'a str>,
        /// The operand values (without `%`), in order.
        operands: Vec<Sp<&'a str>>,
        /// The written attributes, in text order.
        attrs: Vec<AttrAst<'a>>,
        /// The written result type, if any.
        ty: Option<TypeAst<'a>>,
    },
    /// `output name = %x`
    Output {
        /// The output name.
        name: Sp<&'a str>,
        /// The value output (without `%`).
        value: Sp<&'a str>,
    },
    /// `loss %x`
    Loss {
        /// The loss value (without `%`).
        value: Sp<&'a str>,
    },
    /// `update %target = %value`
    Update {
        /// The param or state updated (without `%`).
        target: Sp<&'a str>,
        /// Its next value (without `%`).
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
    /// `inf`
    Inf,
    /// `-inf`
    NegInf,
    /// `nan`
    Nan,
}

/// A number with its span.
pub type Num<'a> = Sp<NumKind<'a>>;

/// An attribute value as written.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValueAst<'a> {
    /// A number.
    Num(Num<'a>),
    /// `true` or `false`.
    Bool(bool),
    /// An identifier (resolved against the attribute's allowed values).
    Ident(&'a str),
    /// `[n, ...]`
    List(Vec<Num<'a>>),
}

/// `name = value` inside `{...}`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttrAst<'a> {
    /// The attribute name.
    pub name: Sp<&'a str>,
    /// Its value.
    pub value: Sp<AttrValueAst<'a>>,
}

/// One shape dimension: a size or a symbol.
#[derive(Clone, Debug, PartialEq)]
pub enum DimAst<'a> {
    /// A size as written (checked to be non-negative in lowering).
    Fixed(i128),
    /// A symbolic size such as `B`.
    Sym(&'a str),
}

/// The element part of a type.
#[derive(Clone, Debug, PartialEq)]
pub enum ElemAst<'a> {
    /// `f32`, `i8`, ... (resolved in lowering).
    Named(Sp<&'a str>),
    /// `!quant.uniform<...>`
    Quant(Box<QuantAst<'a>>),
}

/// `elem[dims]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeAst<'a> {
    /// The element type.
    pub elem: ElemAst<'a>,
    /// The dimensions.
    pub dims: Vec<Sp<DimAst<'a>>>,
    /// The whole type.
    pub span: Range<usize>,
}

/// `!quant.uniform<storage[<qmin:qmax>]:expressed[:axis], params>`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantAst<'a> {
    /// `!quant.uniform` (anything else is an error in lowering).
    pub dialect: Sp<&'a str>,
    /// The storage type name.
    pub storage: Sp<&'a str>,
    /// `<qmin:qmax>`, if written.
    pub range: Option<(Sp<i128>, Sp<i128>)>,
    /// The expressed type name (must be `f32`).
    pub expressed: Sp<&'a str>,
    /// The quantization axis, if written.
    pub axis: Option<Sp<i128>>,
    /// The scales and zero points.
    pub params: QParamsAst<'a>,
}

/// `scale[:zero_point]`.
#[derive(Clone, Debug, PartialEq)]
pub struct QpAst<'a> {
    /// The scale.
    pub scale: Num<'a>,
    /// The zero point, if written (0 otherwise).
    pub zero_point: Option<Sp<i128>>,
}

/// The parameter part of a quantized type.
#[derive(Clone, Debug, PartialEq)]
pub enum QParamsAst<'a> {
    /// `scale[:zp]`
    PerTensor(QpAst<'a>),
    /// `{scale[:zp], ...}`
    PerAxis(Vec<QpAst<'a>>),
    /// `%scales[:%zero_points]`
    Ref {
        /// The constant holding the scales (without `%`).
        scales: Sp<&'a str>,
        /// The constant holding the zero points (without `%`), if written.
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
        /// The initializer name.
        name: Sp<&'a str>,
        /// Its arguments.
        args: Vec<Num<'a>>,
        /// The whole call.
        span: Range<usize>,
    },
    /// `[v, ...]`
    Dense(Vec<Num<'a>>),
}
