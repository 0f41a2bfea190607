//! The lowered graph: what a qir graph becomes once its shapes are known for one batch
//! size. Every qir op expands into one or more lowered nodes of four kinds:
//!
//! - [`LKind::Map`]: an elementwise function of its arguments (each broadcast onto the
//!   node's dimensions), written as a small expression ([`Ex`]); maps are what the fusion
//!   pass merges into loops;
//! - [`LKind::Reduce`]: a min, max or sum of its argument over some of its dimensions;
//!   it can join the loop that computes its argument;
//! - [`LKind::Kernel`]: a call to a runtime kernel (contractions, convolution helpers,
//!   pooling, softmax, the integer ops);
//! - [`LKind::View`]: the same data under new dimensions (reshape, flatten).
//!
//! Invariants: arguments precede their users (the node list is a topological order);
//! every node's `dims` are concrete; a node's `strides`, when set, describe where element
//! `i` of the row-major index space lives in its buffer (a physical layout other than
//! row-major, chosen so that a kernel can read or write it directly).

use qir::NodeId;

use crate::dtype::DType;
use crate::kernels::Kernel;

/// Index of a lowered node.
pub type LId = usize;

/// How a map's argument runs along the map's dimensions: for every argument dimension,
/// the map dimension it follows (an argument dimension of size 1 broadcasts).
pub type ArgDims = Vec<usize>;

/// A lowered node.
#[derive(Clone, Debug)]
pub struct LNode {
    /// What the node computes.
    pub kind: LKind,
    /// The nodes it reads.
    pub args: Vec<LId>,
    /// Its dimensions (row-major index space).
    pub dims: Vec<usize>,
    /// Its element type.
    pub dtype: DType,
    /// Physical strides in elements (`None`: row-major).
    pub strides: Option<Vec<usize>>,
    /// Set once a kernel or a view relies on the layout (a map's layout is free until
    /// then).
    pub layout_fixed: bool,
    /// The qir node it lowers (for names in plans and errors).
    pub origin: Option<NodeId>,
    /// A short description for printed plans (`%relu1`, `%conv1 (im2col)`).
    pub label: String,
    /// Bytes the node's buffer holds after its value (a max pool's argmax indices, read by
    /// its gradient).
    pub extra_bytes: usize,
}

impl LNode {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
    /// Bytes of the node's buffer.
    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.size() + self.extra_bytes
    }
    /// The physical strides (row-major when none are set).
    pub fn phys_strides(&self) -> Vec<usize> {
        self.strides
            .clone()
            .unwrap_or_else(|| row_major(&self.dims))
    }
    /// True when the node is laid out row-major.
    pub fn is_row_major(&self) -> bool {
        match &self.strides {
            None => true,
            Some(s) => same_layout(s, &row_major(&self.dims), &self.dims),
        }
    }
}

/// Row-major strides of `dims`.
pub fn row_major(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![0; dims.len()];
    let mut acc = 1;
    for i in (0..dims.len()).rev() {
        s[i] = acc;
        acc *= dims[i];
    }
    s
}

/// True when two stride lists address the same elements (dimensions of size 1 do not
/// matter).
pub fn same_layout(a: &[usize], b: &[usize], dims: &[usize]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .zip(dims)
            .all(|((x, y), &d)| d <= 1 || x == y)
}

/// What a lowered node computes.
#[derive(Clone, Debug)]
pub enum LKind {
    /// A graph input, fed by name.
    Input(String),
    /// A parameter, state or constant, read from the store by name.
    Stored(String),
    /// Data the program owns (quantization parameters of types).
    Const(qir::Data),
    /// An elementwise function of the arguments.
    Map(MapFn),
    /// A reduction of argument 0.
    Reduce(Reduce),
    /// A runtime kernel.
    Kernel(Box<Kernel>),
    /// Argument 0's data under this node's dimensions (the argument is row-major).
    View,
}

/// An elementwise function: `body` is evaluated per element, in order; `Ex::Arg(i)` reads
/// argument `i` broadcast by `arg_dims[i]`; the value of `body[out]` is the node's.
#[derive(Clone, Debug, PartialEq)]
pub struct MapFn {
    /// How each argument runs along the node's dimensions.
    pub arg_dims: Vec<ArgDims>,
    /// The expression, in SSA order (operands refer to earlier entries).
    pub body: Vec<Ex>,
    /// The entry that is the result.
    pub out: usize,
}

/// The value types of a loop body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// f32.
    F,
    /// i32 (every integer element type is widened or narrowed to it).
    I,
    /// A comparison result.
    M,
}

/// A math function called per element (the same functions the interpreter uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fun {
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Ln,
    /// Hyperbolic tangent.
    Tanh,
    /// The error function.
    Erf,
    /// Rounds a positive scale up to a power of two.
    Pow2Ceil,
}

/// One entry of a map's expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Ex {
    /// Argument `i` at the current element.
    Arg(usize),
    /// An f32 constant.
    F(f32),
    /// An i32 constant.
    I(i32),
    /// `-a` (f32 or i32).
    Neg(usize),
    /// `sqrt(a)`.
    Sqrt(usize),
    /// Round half to even.
    Round(usize),
    /// Round half away from zero.
    RoundAway(usize),
    /// Truncate toward zero.
    Trunc(usize),
    /// `a + b` (both f32 or both i32).
    Add(usize, usize),
    /// `a - b`.
    Sub(usize, usize),
    /// `a * b`.
    Mul(usize, usize),
    /// `a / b` (f32).
    Div(usize, usize),
    /// Fused `a * b + c` with one rounding (f32).
    Fma(usize, usize, usize),
    /// `a < b`.
    Lt(usize, usize),
    /// `a <= b`.
    Le(usize, usize),
    /// `a > b`.
    Gt(usize, usize),
    /// `a >= b`.
    Ge(usize, usize),
    /// `a == b`.
    Eq(usize, usize),
    /// `a` is NaN.
    IsNan(usize),
    /// Both masks.
    And(usize, usize),
    /// Either mask.
    Or(usize, usize),
    /// The inverse mask.
    Not(usize),
    /// `m ? a : b`.
    Sel(usize, usize, usize),
    /// A function of an f32.
    Call(Fun, usize),
    /// Adam's bias correction `1 - beta^step`, computed in f64 from the f32 step and
    /// rounded once (as the interpreter and PyTorch compute it).
    AdamCorrection(f64, usize),
    /// f32 to i32 of a value the lowering has rounded and clamped into an integer range
    /// (NaN lanes are replaced by a select after it): the conversion itself needs no
    /// saturation, and vectors use the plain truncating instruction.
    FToI(usize),
    /// i32 to f32.
    IToF(usize),
}

impl Ex {
    /// The entries this one reads.
    pub fn operands(&self) -> Vec<usize> {
        match *self {
            Ex::Arg(_) | Ex::F(_) | Ex::I(_) => vec![],
            Ex::Neg(a)
            | Ex::Sqrt(a)
            | Ex::Round(a)
            | Ex::RoundAway(a)
            | Ex::Trunc(a)
            | Ex::IsNan(a)
            | Ex::Not(a)
            | Ex::Call(_, a)
            | Ex::AdamCorrection(_, a)
            | Ex::FToI(a)
            | Ex::IToF(a) => vec![a],
            Ex::Add(a, b)
            | Ex::Sub(a, b)
            | Ex::Mul(a, b)
            | Ex::Div(a, b)
            | Ex::Lt(a, b)
            | Ex::Le(a, b)
            | Ex::Gt(a, b)
            | Ex::Ge(a, b)
            | Ex::Eq(a, b)
            | Ex::And(a, b)
            | Ex::Or(a, b) => vec![a, b],
            Ex::Fma(a, b, c) | Ex::Sel(a, b, c) => vec![a, b, c],
        }
    }

    /// The same entry with its operands renumbered by `f`.
    pub fn remap(&self, f: impl Fn(usize) -> usize) -> Ex {
        match *self {
            Ex::Arg(i) => Ex::Arg(i),
            Ex::F(v) => Ex::F(v),
            Ex::I(v) => Ex::I(v),
            Ex::Neg(a) => Ex::Neg(f(a)),
            Ex::Sqrt(a) => Ex::Sqrt(f(a)),
            Ex::Round(a) => Ex::Round(f(a)),
            Ex::RoundAway(a) => Ex::RoundAway(f(a)),
            Ex::Trunc(a) => Ex::Trunc(f(a)),
            Ex::IsNan(a) => Ex::IsNan(f(a)),
            Ex::Not(a) => Ex::Not(f(a)),
            Ex::Call(g, a) => Ex::Call(g, f(a)),
            Ex::AdamCorrection(b, a) => Ex::AdamCorrection(b, f(a)),
            Ex::FToI(a) => Ex::FToI(f(a)),
            Ex::IToF(a) => Ex::IToF(f(a)),
            Ex::Add(a, b) => Ex::Add(f(a), f(b)),
            Ex::Sub(a, b) => Ex::Sub(f(a), f(b)),
            Ex::Mul(a, b) => Ex::Mul(f(a), f(b)),
            Ex::Div(a, b) => Ex::Div(f(a), f(b)),
            Ex::Lt(a, b) => Ex::Lt(f(a), f(b)),
            Ex::Le(a, b) => Ex::Le(f(a), f(b)),
            Ex::Gt(a, b) => Ex::Gt(f(a), f(b)),
            Ex::Ge(a, b) => Ex::Ge(f(a), f(b)),
            Ex::Eq(a, b) => Ex::Eq(f(a), f(b)),
            Ex::And(a, b) => Ex::And(f(a), f(b)),
            Ex::Or(a, b) => Ex::Or(f(a), f(b)),
            Ex::Fma(a, b, c) => Ex::Fma(f(a), f(b), f(c)),
            Ex::Sel(a, b, c) => Ex::Sel(f(a), f(b), f(c)),
        }
    }
}

/// The result types of a body, given the argument types; `Err` names the first entry
/// whose operands do not fit.
pub fn infer_types(body: &[Ex], arg: &dyn Fn(usize) -> Ty) -> Result<Vec<Ty>, String> {
    let mut tys: Vec<Ty> = Vec::with_capacity(body.len());
    for (i, e) in body.iter().enumerate() {
        let t = |k: usize| tys.get(k).copied().ok_or(format!("entry {i} reads {k}"));
        let num = |a: usize, b: usize| -> Result<Ty, String> {
            let (x, y) = (t(a)?, t(b)?);
            if x != y || x == Ty::M {
                return Err(format!("entry {i}: operands {x:?} and {y:?}"));
            }
            Ok(x)
        };
        let want = |a: usize, ty: Ty| -> Result<(), String> {
            if t(a)? == ty {
                Ok(())
            } else {
                Err(format!("entry {i}: operand {a} is not {ty:?}"))
            }
        };
        let ty = match *e {
            Ex::Arg(k) => arg(k),
            Ex::F(_) => Ty::F,
            Ex::I(_) => Ty::I,
            Ex::Neg(a) => {
                let x = t(a)?;
                if x == Ty::M {
                    return Err(format!("entry {i}: negating a mask"));
                }
                x
            }
            Ex::Sqrt(a) | Ex::Round(a) | Ex::RoundAway(a) | Ex::Trunc(a) | Ex::Call(_, a) => {
                want(a, Ty::F)?;
                Ty::F
            }
            Ex::AdamCorrection(_, a) => {
                want(a, Ty::F)?;
                Ty::F
            }
            Ex::Add(a, b) | Ex::Sub(a, b) | Ex::Mul(a, b) => num(a, b)?,
            Ex::Div(a, b) => {
                want(a, Ty::F)?;
                want(b, Ty::F)?;
                Ty::F
            }
            Ex::Fma(a, b, c) => {
                want(a, Ty::F)?;
                want(b, Ty::F)?;
                want(c, Ty::F)?;
                Ty::F
            }
            Ex::Lt(a, b) | Ex::Le(a, b) | Ex::Gt(a, b) | Ex::Ge(a, b) | Ex::Eq(a, b) => {
                num(a, b)?;
                Ty::M
            }
            Ex::IsNan(a) => {
                want(a, Ty::F)?;
                Ty::M
            }
            Ex::And(a, b) | Ex::Or(a, b) => {
                want(a, Ty::M)?;
                want(b, Ty::M)?;
                Ty::M
            }
            Ex::Not(a) => {
                want(a, Ty::M)?;
                Ty::M
            }
            Ex::Sel(m, a, b) => {
                want(m, Ty::M)?;
                num(a, b)?
            }
            Ex::FToI(a) => {
                want(a, Ty::F)?;
                Ty::I
            }
            Ex::IToF(a) => {
                want(a, Ty::I)?;
                Ty::F
            }
        };
        tys.push(ty);
    }
    Ok(tys)
}

/// A reduction of a node's argument 0 over `axes` (true = reduced) of the argument's
/// dimensions. The node's dimensions are the argument's with the reduced ones removed or
/// kept as 1 (the same memory either way).
#[derive(Clone, Debug, PartialEq)]
pub struct Reduce {
    /// How elements combine.
    pub op: RedOp,
    /// Per argument dimension: reduced or kept.
    pub axes: Vec<bool>,
    /// For sums: the result is `sum / div` (1 for a plain sum, the count for a mean),
    /// computed in f64 and rounded once.
    pub div: f64,
}

/// How a reduction combines elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedOp {
    /// Sum, accumulated in f64.
    Sum,
    /// Minimum, NaN propagating.
    Min,
    /// Maximum, NaN propagating.
    Max,
}

/// The lowered graph of one batch size.
#[derive(Clone, Debug, Default)]
pub struct LGraph {
    /// The nodes, in a topological order.
    pub nodes: Vec<LNode>,
}

impl LGraph {
    /// Appends a node and returns its id.
    pub fn push(&mut self, n: LNode) -> LId {
        self.nodes.push(n);
        self.nodes.len() - 1
    }
    /// The users of every node.
    pub fn users(&self) -> Vec<Vec<LId>> {
        let mut u = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &a in &n.args {
                if !u[a].contains(&i) {
                    u[a].push(i);
                }
            }
        }
        u
    }
}
