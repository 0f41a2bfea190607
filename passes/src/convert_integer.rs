//! `convert-integer`: lowers a fake-quant model whose trained parameters and observer
//! ranges are bound as constants (`freeze-observers`, then `bind-state`) to an
//! integer-only model, as DESIGN §2 describes:
//!
//! - every value the model computes from constants alone (batch-norm factors, folded
//!   weights, quantization parameters) is evaluated here, in f32 as the executors do;
//! - a fake-quantized constant weight becomes an integer constant (per channel when its
//!   fake-quant was, with the scales in a constant `%<w>.q.scales`);
//! - `linear` / `conv2d` on a quantized input becomes `qlinear` / `qconv2d` with an int32
//!   accumulator; the per-channel affine ops that follow it (the batch-norm of
//!   `fold-batchnorm-qat`: `div` by the folding factor, `batch_norm` with running
//!   statistics, any `mul`/`div`/`add`/`sub` by a per-channel constant) are folded into a
//!   per-channel real factor `a` and offset `c`; at the next fake-quant the offset becomes
//!   the int32 bias `round(c / a)` (scale `a = s_in·s_w·...`) and the factor the Q0.31
//!   multiplier and shift of `requantize` (`qir::quant::quantize_multiplier`), ReLU/ReLU6
//!   folded into its clamp;
//! - `add` of two quantized values followed by a fake-quant becomes `qadd`, `concat` of
//!   quantized values `qconcat`, `global_avg_pool` followed by a fake-quant
//!   `qglobal_avg_pool`, each rescaling to the fake-quant's grid;
//! - `max_pool2d`, `reshape` and `flatten` run directly on the quantized values;
//! - a fake-quant of a float input becomes `quantize`, a fake-quant of a quantized value
//!   on another grid `requantize`, and every output that is quantized is `dequantize`d;
//! - what the scheme left in float (a skipped layer, and what reads it until the next
//!   fake-quant) stays a float op, its quantized operands dequantized and its constants
//!   f32 constants: a mixed-precision model converts too.
//!
//! The loss, and inputs only the loss reads (labels), are dropped: the result is an
//! inference model. Option `rounding` (default `half_even`, the rounding of `fake_quant`)
//! names the rounding of every rescaling op.
//!
//! Errors name the value the lowering cannot handle: a parameter without bound values, a
//! layer whose input is not quantized, a float op on quantized values it has no integer
//! form for, a negative or unrepresentable rescale factor.

use std::collections::HashMap;

use qir::quant::{QparamRule, Rounding, qparams_f32, quantize_multiplier};
use qir::{ElemType, Graph, Init, Inst, NodeId, NodeKind, Op, QuantParams, QuantType, Shape, Storage, Type};

use crate::options::{OptionError, OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The `convert-integer` pass.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertInteger {
    /// The rounding of every rescaling op.
    pub rounding: Rounding,
}

impl Default for ConvertInteger {
    fn default() -> Self {
        ConvertInteger {
            rounding: Rounding::HalfEven,
        }
    }
}

/// An f32 constant, row-major.
#[derive(Clone, Debug)]
struct Ct {
    shape: Vec<usize>,
    v: Vec<f32>,
}

/// Grid of a quantized value (per tensor).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Grid {
    storage: Storage,
    qmin: i64,
    qmax: i64,
    scale: f32,
    zp: i64,
}

impl Grid {
    fn elem(self) -> ElemType {
        ElemType::Quant(Box::new(QuantType::per_tensor(
            self.storage,
            self.qmin,
            self.qmax,
            self.scale,
            self.zp,
        )))
    }
}

/// A fake-quantized constant: its integer values and parameters.
#[derive(Clone, Debug)]
struct QConst {
    q: Vec<i64>,
    shape: Vec<usize>,
    scales: Vec<f32>,
    zps: Vec<i64>,
    axis: Option<usize>,
    qmin: i64,
    qmax: i64,
}

/// What a value of the source graph has become.
#[derive(Clone, Debug)]
enum V {
    /// A float value of the new graph (a model input).
    Float(NodeId),
    /// A constant, with its integer form if it is a fake-quant of a constant.
    Const(Ct, Option<QConst>),
    /// A quantized value of the new graph on a per-tensor grid.
    Quant(NodeId, Grid),
    /// An int32 accumulator `acc` of the new graph standing for the real value
    /// `a[c] * acc + c[c]` per channel (axis 1), then `act`.
    Acc {
        node: NodeId,
        a: Vec<f64>,
        c: Vec<f64>,
        act: &'static str,
    },
    /// `a + b` of two quantized values, then `act`, waiting for its grid.
    Sum {
        a: NodeId,
        b: NodeId,
        act: &'static str,
        ty: Shape,
    },
    /// The global average pool of a quantized value, waiting for its grid.
    Gap { x: NodeId },
    /// A concatenation of layer results or quantized values, waiting for its grid.
    Cat { parts: Vec<(V, Type)>, axis: i64 },
}

fn err(g: &Graph, id: NodeId, msg: impl std::fmt::Display) -> PassError {
    PassError::at(id, format!("{}: {msg}", g.describe(id)))
}

fn tensor_of_init(init: &Init, shape: &[usize]) -> Option<Vec<f32>> {
    let n: usize = shape.iter().product();
    Some(match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Fill(v) => vec![*v as f32; n],
        Init::Dense(v) if v.len() == n => v.iter().map(|&x| x as f32).collect(),
        Init::Dense(v) if v.len() == 1 => vec![v[0] as f32; n],
        _ => return None,
    })
}

/// Broadcast binary op on constants (NumPy rules).
fn broadcast(a: &Ct, b: &Ct, f: impl Fn(f32, f32) -> f32) -> Option<Ct> {
    let r = a.shape.len().max(b.shape.len());
    let pad = |s: &[usize]| {
        let mut p = vec![1; r - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (sa, sb) = (pad(&a.shape), pad(&b.shape));
    let mut shape = Vec::with_capacity(r);
    for i in 0..r {
        shape.push(match (sa[i], sb[i]) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        });
    }
    let n: usize = shape.iter().product();
    let strides = |s: &[usize]| {
        let mut st = vec![0; r];
        let mut acc = 1;
        for i in (0..r).rev() {
            st[i] = if s[i] == 1 { 0 } else { acc };
            acc *= s[i];
        }
        st
    };
    let (ta, tb) = (strides(&sa), strides(&sb));
    let mut v = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let (mut ia, mut ib) = (0, 0);
        for d in 0..r {
            ia += idx[d] * ta[d];
            ib += idx[d] * tb[d];
        }
        v.push(f(a.v[ia], b.v[ib]));
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(Ct { shape, v })
}

/// Per-channel values of a constant for `channels` channels: a scalar broadcasts, else the
/// constant must hold exactly one value per channel.
fn per_channel(k: &Ct, channels: usize) -> Option<Vec<f64>> {
    match k.v.len() {
        1 => Some(vec![k.v[0] as f64; channels]),
        n if n == channels => Some(k.v.iter().map(|&x| x as f64).collect()),
        _ => None,
    }
}

/// `(outer, channels, inner)` of a shape split at `axis`.
fn layout(shape: &[usize], axis: Option<usize>) -> (usize, usize, usize) {
    match axis {
        None => (1, 1, shape.iter().product()),
        Some(a) => (
            shape[..a].iter().product(),
            shape[a],
            shape[a + 1..].iter().product(),
        ),
    }
}

/// Fake quantization of a constant, as the executors compute it (f32, inverse scale,
/// ties to even): the integer values.
fn fake_quant_ints(x: &Ct, scales: &[f32], zps: &[i64], axis: Option<usize>, qmin: i64, qmax: i64) -> Vec<i64> {
    let (outer, ch, inner) = layout(&x.shape, axis);
    let mut q = vec![0i64; x.v.len()];
    for o in 0..outer {
        for c in 0..ch {
            let (s, z) = if scales.len() == 1 {
                (scales[0], zps[0])
            } else {
                (scales[c], zps[c])
            };
            let inv = 1.0f32 / s;
            for i in 0..inner {
                let k = (o * ch + c) * inner + i;
                let g = z as f32 + (x.v[k] * inv).round_ties_even();
                q[k] = (g.clamp(qmin as f32, qmax as f32)) as i64;
            }
        }
    }
    q
}

fn dims(g: &Graph, id: NodeId) -> Option<Vec<usize>> {
    g.ty(id)
        .shape
        .as_fixed()
        .map(|v| v.into_iter().map(|d| d as usize).collect())
}

struct Lowering<'a> {
    src: &'a Graph,
    out: Graph,
    vals: HashMap<NodeId, V>,
    rounding: Rounding,
    /// The dequantized float form of quantized values, made once each.
    dequantized: HashMap<NodeId, NodeId>,
}

impl Lowering<'_> {
    fn rounding_attr(&self) -> &'static str {
        self.rounding.name()
    }

    fn name(&self, base: &str) -> String {
        self.out.fresh_name(base)
    }

    fn src_name(&self, id: NodeId) -> String {
        self.src
            .node(id)
            .name
            .clone()
            .unwrap_or_else(|| format!("v{}", id.index()))
    }

    fn edit(&self, id: NodeId) -> impl Fn(qir::graph::EditError) -> PassError + '_ {
        move |e| err(self.src, id, e.0)
    }

    fn inst(&self, id: NodeId, op: Op, attrs: &[(&str, qir::Attr)]) -> Result<Inst, PassError> {
        let mut inst = Inst::new(op);
        for (k, v) in attrs {
            inst.set(k, v.clone()).map_err(|e| err(self.src, id, e))?;
        }
        Ok(inst)
    }

    fn constant(&mut self, base: &str, ty: Type, v: Vec<f64>) -> Result<NodeId, PassError> {
        let n = self.name(base);
        self.out
            .add_const(&n, ty, Init::Dense(v))
            .map_err(|e| PassError::new(e.0))
    }

    fn get(&self, id: NodeId) -> Result<&V, PassError> {
        self.vals
            .get(&id)
            .ok_or_else(|| err(self.src, id, "value was not lowered"))
    }

    fn ct(&self, id: NodeId) -> Option<Ct> {
        match self.vals.get(&id) {
            Some(V::Const(c, _)) => Some(c.clone()),
            _ => None,
        }
    }

    /// The integer form of a fake-quantized constant weight: a new constant.
    fn weight(&mut self, id: NodeId, w: NodeId) -> Result<(NodeId, QConst), PassError> {
        let Some(V::Const(_, Some(q))) = self.vals.get(&w).cloned() else {
            return Err(err(
                self.src,
                id,
                format!(
                    "the weight {} is not a fake-quantized constant",
                    self.src.describe(w)
                ),
            ));
        };
        if q.zps.iter().any(|&z| z != 0) {
            return Err(err(self.src, id, "weights with non-zero zero points are not supported"));
        }
        let storage = if q.qmin >= -128 && q.qmax <= 127 {
            Storage::I8
        } else {
            return Err(err(self.src, id, format!("weight range [{}, {}] does not fit i8", q.qmin, q.qmax)));
        };
        // named after the weight the fake-quant reads (`fc.w.q`, `conv1.w.folded.q`)
        let base = self
            .src
            .operands(w)
            .first()
            .and_then(|&o| self.src.node(o).name.clone())
            .unwrap_or_else(|| self.src_name(w));
        let params = match q.axis {
            Some(axis) if q.scales.len() > 1 => {
                let sname = self.constant(
                    &format!("{base}.scales"),
                    Type::new(ElemType::F32, Shape::fixed(&[q.scales.len() as u64])),
                    q.scales.iter().map(|&s| s as f64).collect(),
                )?;
                QuantParams::PerAxisRef {
                    axis,
                    scales: self.out.node(sname).name.clone().unwrap_or_default(),
                    zero_points: None,
                }
            }
            _ => QuantParams::PerTensor {
                scale: q.scales[0],
                zero_point: 0,
            },
        };
        let elem = ElemType::Quant(Box::new(QuantType {
            storage,
            qmin: q.qmin,
            qmax: q.qmax,
            params,
        }));
        let shape = Shape::fixed(&q.shape.iter().map(|&d| d as u64).collect::<Vec<_>>());
        let node = self.constant(
            &format!("{base}.q"),
            Type::new(elem, shape),
            q.q.iter().map(|&x| x as f64).collect(),
        )?;
        Ok((node, q))
    }

    /// Lowers one source node.
    fn lower(&mut self, id: NodeId) -> Result<(), PassError> {
        let src = self.src;
        let node = src.node(id);
        let v = match &node.kind {
            NodeKind::Input => {
                let n = node.name.clone().unwrap_or_default();
                let nid = self
                    .out
                    .add_input(&n, node.ty.clone())
                    .map_err(self.edit(id))?;
                V::Float(nid)
            }
            NodeKind::Param(init) | NodeKind::State(init) | NodeKind::Const(init) => {
                let shape = dims(src, id).ok_or_else(|| err(src, id, "a constant needs a fixed shape"))?;
                let v = tensor_of_init(init, &shape).ok_or_else(|| {
                    err(src, id, "has no bound value (run bind-state with the trained weights first)")
                })?;
                V::Const(Ct { shape, v }, None)
            }
            NodeKind::Op(inst) => self.lower_op(id, inst)?,
        };
        self.vals.insert(id, v);
        Ok(())
    }

    fn lower_op(&mut self, id: NodeId, inst: &Inst) -> Result<V, PassError> {
        let src = self.src;
        let ops = src.operands(id);
        let consts: Option<Vec<Ct>> = ops.iter().map(|&o| self.ct(o)).collect();
        // constant folding of what depends on constants alone
        if let Some(cs) = &consts
            && let Some(v) = self.fold(id, inst, cs)?
        {
            return Ok(v);
        }
        if self.needs_float(inst, &ops)? {
            return self.float_op(id, inst, &ops);
        }
        match inst.op {
            Op::FakeQuant | Op::FakeQuantLsq => self.fake_quant(id, inst, &ops),
            Op::Linear | Op::Conv2d => self.layer(id, inst, &ops),
            Op::Relu | Op::Relu6 => {
                let act = if inst.op == Op::Relu { "relu" } else { "relu6" };
                match self.get(ops[0])?.clone() {
                    V::Acc { node, a, c, act: "none" } => Ok(V::Acc { node, a, c, act }),
                    V::Sum { a, b, act: "none", ty } => Ok(V::Sum { a, b, act, ty }),
                    _ => Err(err(src, id, "an activation must follow a layer or an addition")),
                }
            }
            Op::Div | Op::Mul | Op::Add | Op::Sub | Op::BatchNorm => self.affine(id, inst, &ops),
            Op::MaxPool2d | Op::Reshape | Op::Flatten => {
                let V::Quant(x, grid) = self.get(ops[0])?.clone() else {
                    return Err(err(src, id, "needs a quantized operand"));
                };
                let ty = src.ty(id).with_elem(grid.elem());
                let n = self.name(&self.src_name(id));
                let nid = self
                    .out
                    .add_op_typed(inst.clone(), &[x], ty, Some(&n))
                    .map_err(self.edit(id))?;
                Ok(V::Quant(nid, grid))
            }
            Op::GlobalAvgPool => {
                let V::Quant(x, _) = self.get(ops[0])?.clone() else {
                    return Err(err(src, id, "needs a quantized operand"));
                };
                Ok(V::Gap { x })
            }
            Op::Concat => {
                let mut parts = Vec::new();
                for &o in &ops {
                    let v = self.get(o)?.clone();
                    if !matches!(v, V::Quant(..) | V::Acc { .. }) {
                        return Err(err(src, id, "concatenates a value that is neither quantized nor a layer's result"));
                    }
                    parts.push((v, src.ty(o).clone()));
                }
                let axis = inst.int("axis").unwrap_or(0);
                // inputs that share one grid concatenate exactly on it
                if let Some(V::Quant(_, g0)) = parts.first().map(|p| &p.0)
                    && parts.iter().all(|p| matches!(&p.0, V::Quant(_, g) if g == g0))
                {
                    let grid = *g0;
                    let ty = src.ty(id).with_elem(grid.elem());
                    let name = self.name(&self.src_name(id));
                    let nid = self.concat(id, axis, &parts, grid, ty, &name)?;
                    return Ok(V::Quant(nid, grid));
                }
                Ok(V::Cat { parts, axis })
            }
            _ => self.float_op(id, inst, &ops),
        }
    }

    /// Whether `inst` stays a float op: it reads a float value (a layer the scheme skips,
    /// or what follows it), or it is a layer whose input or weight is not quantized. A
    /// fake-quant of a float value is the model's `quantize`, not a float op.
    fn needs_float(&self, inst: &Inst, ops: &[NodeId]) -> Result<bool, PassError> {
        if matches!(inst.op, Op::FakeQuant | Op::FakeQuantLsq) {
            return Ok(false);
        }
        for &o in ops {
            if matches!(self.get(o)?, V::Float(_)) {
                return Ok(true);
            }
        }
        Ok(match inst.op {
            Op::Linear | Op::Conv2d => {
                !matches!(self.get(ops[0])?, V::Quant(..))
                    || !matches!(self.vals.get(&ops[1]), Some(V::Const(_, Some(_))))
            }
            _ => false,
        })
    }

    /// `inst` as a float op of the new graph: quantized operands are dequantized,
    /// constants become f32 constants.
    fn float_op(&mut self, id: NodeId, inst: &Inst, ops: &[NodeId]) -> Result<V, PassError> {
        let src = self.src;
        let mut operands = Vec::with_capacity(ops.len());
        for &o in ops {
            let n = match self.get(o)?.clone() {
                V::Float(n) => n,
                V::Quant(q, _) => match self.dequantized.get(&q) {
                    Some(&d) => d,
                    None => {
                        let name = self.name(&format!("{}.real", self.src_name(o)));
                        let ty = src.ty(o).with_elem(ElemType::F32);
                        let d = self
                            .out
                            .add_op_typed(Inst::new(Op::Dequantize), &[q], ty, Some(&name))
                            .map_err(self.edit(id))?;
                        self.dequantized.insert(q, d);
                        d
                    }
                },
                V::Const(ct, _) => {
                    let shape: Vec<u64> = ct.shape.iter().map(|&d| d as u64).collect();
                    let elem = src.ty(o).elem.clone();
                    self.constant(
                        &self.src_name(o),
                        Type::new(elem, Shape::fixed(&shape)),
                        ct.v.iter().map(|&x| x as f64).collect(),
                    )?
                }
                _ => {
                    return Err(err(
                        src,
                        id,
                        format!(
                            "{} has no integer form and reads {}, a layer result without a fake-quant",
                            inst.op,
                            src.describe(o)
                        ),
                    ));
                }
            };
            operands.push(n);
        }
        let name = self.name(&self.src_name(id));
        let nid = self
            .out
            .add_op_typed(inst.clone(), &operands, src.ty(id).clone(), Some(&name))
            .map_err(self.edit(id))?;
        Ok(V::Float(nid))
    }

    /// Evaluates an op of constants; `None` when the op is not one evaluated here.
    fn fold(&mut self, id: NodeId, inst: &Inst, cs: &[Ct]) -> Result<Option<V>, PassError> {
        let src = self.src;
        let bin = |f: fn(f32, f32) -> f32| -> Result<Option<V>, PassError> {
            broadcast(&cs[0], &cs[1], f)
                .map(|c| Some(V::Const(c, None)))
                .ok_or_else(|| err(src, id, "operands do not broadcast"))
        };
        let rule = || QparamRule {
            qmin: inst.int("qmin").unwrap_or(-128),
            qmax: inst.int("qmax").unwrap_or(127),
            symmetric: inst.boolean("symmetric").unwrap_or(false),
            power_of_two: inst.boolean("power_of_two").unwrap_or(false),
            eps: inst.float("eps").unwrap_or(f32::EPSILON as f64),
        };
        match inst.op {
            Op::Add => bin(|a, b| a + b),
            Op::Sub => bin(|a, b| a - b),
            Op::Mul => bin(|a, b| a * b),
            Op::Div => bin(|a, b| a / b),
            Op::Sqrt => Ok(Some(V::Const(
                Ct {
                    shape: cs[0].shape.clone(),
                    v: cs[0].v.iter().map(|x| x.sqrt()).collect(),
                },
                None,
            ))),
            Op::Reshape | Op::Flatten => {
                let shape = dims(src, id).ok_or_else(|| err(src, id, "needs a fixed shape"))?;
                Ok(Some(V::Const(
                    Ct {
                        shape,
                        v: cs[0].v.clone(),
                    },
                    None,
                )))
            }
            Op::QparamsScale | Op::QparamsZeroPoint => {
                if cs[0].v.len() != cs[1].v.len() {
                    return Err(err(src, id, "min and max differ in size"));
                }
                // a range never observed (+inf, -inf) would quantize with the smallest
                // scale: the checkpoint holds no calibrated ranges
                if cs[0].v.iter().zip(&cs[1].v).any(|(mn, mx)| mn > mx) {
                    let o = src.operands(id)[0];
                    return Err(err(
                        src,
                        id,
                        format!(
                            "the range {} was never observed (train or calibrate with the scheme first)",
                            src.describe(o)
                        ),
                    ));
                }
                let r = rule();
                let v = cs[0]
                    .v
                    .iter()
                    .zip(&cs[1].v)
                    .map(|(&mn, &mx)| {
                        let (s, z) = qparams_f32(mn, mx, r);
                        if inst.op == Op::QparamsScale { s } else { z as f32 }
                    })
                    .collect();
                Ok(Some(V::Const(
                    Ct {
                        shape: cs[0].shape.clone(),
                        v,
                    },
                    None,
                )))
            }
            Op::FakeQuant | Op::FakeQuantLsq => {
                let (qmin, qmax) = (inst.int("qmin").unwrap_or(-128), inst.int("qmax").unwrap_or(127));
                let (scales, zps) = self.fq_params(id, inst, &cs[1], &cs[2], qmin, qmax)?;
                let axis = match inst.int("axis") {
                    Some(a) => Some(
                        qir::Shape::fixed(&cs[0].shape.iter().map(|&d| d as u64).collect::<Vec<_>>())
                            .axis(a)
                            .ok_or_else(|| err(src, id, "axis out of range"))?,
                    ),
                    None => None,
                };
                let q = fake_quant_ints(&cs[0], &scales, &zps, axis, qmin, qmax);
                let (_, ch, inner) = layout(&cs[0].shape, axis);
                let v = q
                    .iter()
                    .enumerate()
                    .map(|(k, &qv)| {
                        let c = if scales.len() == 1 { 0 } else { (k / inner) % ch };
                        (qv - zps[c]) as f32 * scales[c]
                    })
                    .collect();
                Ok(Some(V::Const(
                    Ct {
                        shape: cs[0].shape.clone(),
                        v,
                    },
                    Some(QConst {
                        q,
                        shape: cs[0].shape.clone(),
                        scales,
                        zps,
                        axis,
                        qmin,
                        qmax,
                    }),
                )))
            }
            _ => Ok(None),
        }
    }

    /// Scales and integer zero points of a fake-quant (LSQ zero points are rounded and
    /// clamped as its forward does).
    fn fq_params(
        &self,
        id: NodeId,
        inst: &Inst,
        s: &Ct,
        z: &Ct,
        qmin: i64,
        qmax: i64,
    ) -> Result<(Vec<f32>, Vec<i64>), PassError> {
        if s.v.len() != z.v.len() || s.v.is_empty() {
            return Err(err(self.src, id, "scale and zero point differ in size"));
        }
        if let Some(bad) = s.v.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
            return Err(err(self.src, id, format!("scale {bad} is not positive and finite")));
        }
        let zps = z
            .v
            .iter()
            .map(|&x| {
                if inst.op == Op::FakeQuantLsq {
                    (x.round_ties_even() as i64).clamp(qmin, qmax)
                } else {
                    x as i64
                }
            })
            .collect();
        Ok((s.v.clone(), zps))
    }

    fn fake_quant(&mut self, id: NodeId, inst: &Inst, ops: &[NodeId]) -> Result<V, PassError> {
        let src = self.src;
        let (Some(s), Some(z)) = (self.ct(ops[1]), self.ct(ops[2])) else {
            return Err(err(src, id, "quantization parameters are not constants (freeze the observers and bind the state first)"));
        };
        let (qmin, qmax) = (inst.int("qmin").unwrap_or(-128), inst.int("qmax").unwrap_or(127));
        let (scales, zps) = self.fq_params(id, inst, &s, &z, qmin, qmax)?;
        if scales.len() != 1 {
            return Err(err(src, id, "per-channel quantization of activations is not supported"));
        }
        let storage = if qmin >= -128 && qmax <= 127 {
            Storage::I8
        } else if qmin >= 0 && qmax <= 255 {
            Storage::U8
        } else {
            return Err(err(src, id, format!("range [{qmin}, {qmax}] fits no 8-bit storage")));
        };
        let grid = Grid {
            storage,
            qmin,
            qmax,
            scale: scales[0],
            zp: zps[0],
        };
        let ty = src.ty(id).with_elem(grid.elem());
        let name = self.name(&self.src_name(id));
        let round = qir::Attr::Enum(self.rounding_attr());
        let nid = match self.get(ops[0])?.clone() {
            V::Float(x) => {
                let i = self.inst(id, Op::Quantize, &[("rounding", round)])?;
                self.out.add_op_typed(i, &[x], ty, Some(&name))
            }
            V::Quant(x, g) if g == grid => return Ok(V::Quant(x, g)),
            V::Quant(x, g) => {
                let real = g.scale as f64 / grid.scale as f64;
                let (m, sh) = quantize_multiplier(real)
                    .ok_or_else(|| err(src, id, format!("rescale factor {real} is not representable")))?;
                let i = self.inst(
                    id,
                    Op::Requantize,
                    &[
                        ("multiplier", qir::Attr::Ints(vec![m])),
                        ("shift", qir::Attr::Ints(vec![sh])),
                        ("rounding", round),
                    ],
                )?;
                self.out.add_op_typed(i, &[x], ty, Some(&name))
            }
            V::Acc { node, a, c, act } => return self.requantize(id, node, &a, &c, act, grid, ty, &name),
            V::Cat { parts, axis } => {
                return Ok(V::Quant(self.concat(id, axis, &parts, grid, ty, &name)?, grid));
            }
            V::Sum { a, b, act, .. } => {
                let i = self.inst(id, Op::Qadd, &[("rounding", round), ("act", qir::Attr::Enum(act))])?;
                self.out.add_op_typed(i, &[a, b], ty, Some(&name))
            }
            V::Gap { x, .. } => {
                let i = self.inst(id, Op::QglobalAvgPool, &[("rounding", round)])?;
                self.out.add_op_typed(i, &[x], ty, Some(&name))
            }
            V::Const(..) => unreachable!("constants are folded"),
        }
        .map_err(self.edit(id))?;
        Ok(V::Quant(nid, grid))
    }

    /// `qconcat` of `parts`, each first brought onto `grid` (a layer's result requantized
    /// onto it directly).
    fn concat(
        &mut self,
        id: NodeId,
        axis: i64,
        parts: &[(V, Type)],
        grid: Grid,
        ty: Type,
        name: &str,
    ) -> Result<NodeId, PassError> {
        let mut xs = Vec::new();
        for (v, pty) in parts {
            let x = match v {
                V::Quant(x, _) => *x,
                V::Acc { node, a, c, act } => {
                    let pname = self.name(&format!("{name}.in"));
                    let ty = pty.with_elem(grid.elem());
                    match self.requantize(id, *node, a, c, act, grid, ty, &pname)? {
                        V::Quant(x, _) => x,
                        _ => unreachable!(),
                    }
                }
                _ => return Err(err(self.src, id, "concatenates a value without an integer form")),
            };
            xs.push(x);
        }
        let i = self.inst(
            id,
            Op::Qconcat,
            &[
                ("axis", qir::Attr::Int(axis)),
                ("rounding", qir::Attr::Enum(self.rounding_attr())),
            ],
        )?;
        self.out
            .add_op_typed(i, &xs, ty, Some(name))
            .map_err(self.edit(id))
    }

    /// The int32 bias and the requantization of an accumulator onto `grid`.
    #[allow(clippy::too_many_arguments)]
    fn requantize(
        &mut self,
        id: NodeId,
        acc: NodeId,
        a: &[f64],
        c: &[f64],
        act: &'static str,
        grid: Grid,
        ty: Type,
        name: &str,
    ) -> Result<V, PassError> {
        let src = self.src;
        let mut mults = Vec::with_capacity(a.len());
        let mut shifts = Vec::with_capacity(a.len());
        let mut bias = Vec::with_capacity(a.len());
        for (ch, (&ac, &cc)) in a.iter().zip(c).enumerate() {
            if !(ac.is_finite() && ac > 0.0) {
                return Err(err(src, id, format!("channel {ch} has the non-positive scale {ac}")));
            }
            let b = (cc / ac).round_ties_even();
            if !(b.is_finite() && b.abs() <= i32::MAX as f64) {
                return Err(err(src, id, format!("the bias of channel {ch} does not fit i32")));
            }
            bias.push(b);
            let real = ac / grid.scale as f64;
            let (m, s) = quantize_multiplier(real)
                .ok_or_else(|| err(src, id, format!("rescale factor {real} is not representable")))?;
            mults.push(m);
            shifts.push(s);
        }
        // the bias joins the accumulator: operand 2 of qlinear / qconv2d
        if bias.iter().any(|&b| b != 0.0) {
            let base = self.out.node(acc).name.clone().unwrap_or_default();
            let base = base.strip_suffix(".acc").unwrap_or(&base);
            let bq = self.constant(
                &format!("{base}.bias.q"),
                Type::new(ElemType::I32, Shape::fixed(&[bias.len() as u64])),
                bias,
            )?;
            let mut operands = self.out.operands(acc);
            operands.truncate(2);
            operands.push(bq);
            self.out.set_operands(acc, &operands);
        }
        let uniform = mults.iter().all(|&m| m == mults[0]) && shifts.iter().all(|&s| s == shifts[0]);
        let mut attrs = vec![];
        if uniform {
            attrs.push(("multiplier", qir::Attr::Ints(vec![mults[0]])));
            attrs.push(("shift", qir::Attr::Ints(vec![shifts[0]])));
        } else {
            attrs.push(("multiplier", qir::Attr::Ints(mults)));
            attrs.push(("shift", qir::Attr::Ints(shifts)));
            attrs.push(("axis", qir::Attr::Int(1)));
        }
        attrs.push(("rounding", qir::Attr::Enum(self.rounding_attr())));
        attrs.push(("act", qir::Attr::Enum(act)));
        let i = self.inst(id, Op::Requantize, &attrs)?;
        let nid = self
            .out
            .add_op_typed(i, &[acc], ty, Some(name))
            .map_err(self.edit(id))?;
        Ok(V::Quant(nid, grid))
    }

    fn layer(&mut self, id: NodeId, inst: &Inst, ops: &[NodeId]) -> Result<V, PassError> {
        let src = self.src;
        let V::Quant(x, xg) = self.get(ops[0])?.clone() else {
            return Err(err(src, id, "the layer input is not quantized (a fake-quant must precede it)"));
        };
        let (wq, q) = self.weight(id, ops[1])?;
        let out_ch = q.shape[0];
        let bias = match ops.get(2) {
            Some(&b) => {
                let c = self
                    .ct(b)
                    .ok_or_else(|| err(src, id, "the bias is not a constant"))?;
                per_channel(&c, out_ch).ok_or_else(|| err(src, id, "bias size differs from the output channels"))?
            }
            None => vec![0.0; out_ch],
        };
        let sw: Vec<f64> = (0..out_ch)
            .map(|c| q.scales[if q.scales.len() == 1 { 0 } else { c }] as f64)
            .collect();
        let a: Vec<f64> = sw.iter().map(|&s| xg.scale as f64 * s).collect();
        let (op, mut attrs) = if inst.op == Op::Linear {
            (Op::Qlinear, vec![])
        } else {
            let mut v = vec![];
            for k in ["stride", "padding", "dilation"] {
                if let Some(x) = inst.ints(k) {
                    v.push((k, qir::Attr::Ints(x)));
                }
            }
            if let Some(gr) = inst.int("groups") {
                v.push(("groups", qir::Attr::Int(gr)));
            }
            (Op::Qconv2d, v)
        };
        let i = self.inst(id, op, &std::mem::take(&mut attrs))?;
        let ty = src.ty(id).with_elem(ElemType::I32);
        let n = self.name(&format!("{}.acc", self.src_name(id)));
        let node = self
            .out
            .add_op_typed(i, &[x, wq], ty, Some(&n))
            .map_err(self.edit(id))?;
        let act = inst.choice("act").unwrap_or("none");
        Ok(V::Acc { node, a, c: bias, act })
    }

    /// A per-channel affine op on an accumulator, or an addition of quantized values.
    fn affine(&mut self, id: NodeId, inst: &Inst, ops: &[NodeId]) -> Result<V, PassError> {
        let src = self.src;
        if inst.op == Op::Add
            && let (V::Quant(a, _), V::Quant(b, _)) = (self.get(ops[0])?.clone(), self.get(ops[1])?.clone())
        {
            return Ok(V::Sum {
                a,
                b,
                act: inst.choice("act").unwrap_or("none"),
                ty: src.ty(id).shape.clone(),
            });
        }
        let (acc_slot, k_slot) = match (self.get(ops[0])?, ops.get(1).map(|&o| self.get(o))) {
            (V::Acc { .. }, _) => (0, 1),
            (_, Some(Ok(V::Acc { .. }))) if matches!(inst.op, Op::Add | Op::Mul) => (1, 0),
            _ => return Err(err(src, id, format!("{} of these values has no integer form", inst.op))),
        };
        let V::Acc { node, mut a, mut c, act } = self.get(ops[acc_slot])?.clone() else {
            unreachable!()
        };
        if act != "none" {
            return Err(err(src, id, "an affine op after a fused activation has no integer form"));
        }
        let ch = a.len();
        let k = |slot: usize| -> Result<Vec<f64>, PassError> {
            let ct = self
                .ct(ops[slot])
                .ok_or_else(|| err(src, id, "needs a constant per-channel operand"))?;
            per_channel(&ct, ch).ok_or_else(|| err(src, id, "the constant is not per channel"))
        };
        match inst.op {
            Op::Mul => {
                let k = k(k_slot)?;
                for i in 0..ch {
                    a[i] *= k[i];
                    c[i] *= k[i];
                }
            }
            Op::Div => {
                let k = k(1)?;
                for i in 0..ch {
                    a[i] /= k[i];
                    c[i] /= k[i];
                }
            }
            Op::Add => {
                let k = k(k_slot)?;
                for i in 0..ch {
                    c[i] += k[i];
                }
            }
            Op::Sub => {
                let k = k(1)?;
                for i in 0..ch {
                    c[i] -= k[i];
                }
            }
            Op::BatchNorm => {
                let (gamma, beta, mean, var) = (k(1)?, k(2)?, k(3)?, k(4)?);
                let eps = inst.float("eps").unwrap_or(1e-5);
                for i in 0..ch {
                    let f = gamma[i] / (var[i] + eps).sqrt();
                    a[i] *= f;
                    c[i] = (c[i] - mean[i]) * f + beta[i];
                }
            }
            _ => unreachable!(),
        }
        Ok(V::Acc { node, a, c, act })
    }
}

/// Lowers `g` to its integer-only form (see the module docs).
pub fn convert_integer(g: &Graph, rounding: Rounding) -> Result<Graph, PassError> {
    let order = g
        .topo_order()
        .map_err(|_| PassError::new("the graph has a cycle"))?;
    let mut lo = Lowering {
        src: g,
        out: Graph::new(g.name.clone()),
        vals: HashMap::new(),
        rounding,
        dequantized: HashMap::new(),
    };
    // only what the outputs need: the loss and the labels are dropped
    let live = live_set(g);
    for id in order {
        if !live.contains(&id) {
            continue;
        }
        lo.lower(id)?;
    }
    for o in g.outputs() {
        let v = lo.get(o.value)?.clone();
        let out_id = match v {
            V::Quant(q, _) => {
                let n = lo.name(&o.name);
                let ty = g.ty(o.value).clone();
                let ty = ty.with_elem(ElemType::F32);
                lo.out
                    .add_op_typed(Inst::new(Op::Dequantize), &[q], ty, Some(&n))
                    .map_err(|e| PassError::new(e.0))?
            }
            V::Float(f) => f,
            _ => {
                return Err(err(
                    g,
                    o.value,
                    format!("output '{}' is not quantized (no fake-quant before it)", o.name),
                ));
            }
        };
        lo.out.add_output(&o.name, out_id);
    }
    Ok(lo.out)
}

/// The nodes the outputs depend on.
fn live_set(g: &Graph) -> std::collections::HashSet<NodeId> {
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<NodeId> = g.outputs().iter().map(|o| o.value).collect();
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(g.operands(id));
        }
    }
    seen
}

impl Pass for ConvertInteger {
    fn name(&self) -> &'static str {
        "convert-integer"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("rounding", OptValue::Scalar(self.rounding.name().to_string()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        let out = convert_integer(g, self.rounding)?;
        *g = out;
        Ok(Changed::Yes)
    }
}

const ROUNDINGS: &[&str] = &["half_even", "half_away_from_zero"];

impl PassDef for ConvertInteger {
    const INFO: PassInfo = PassInfo {
        name: "convert-integer",
        summary: "lower a fake-quant model with bound state to integer ops (qlinear, qconv2d, requantize, ...)",
        options: &[OptionSpec {
            name: "rounding",
            kind: OptionKind::Choice(ROUNDINGS),
            default: "half_even",
            doc: "rounding of every rescaling op (half_even is fake_quant's)",
        }],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        let r = options.choice("rounding")?;
        Ok(ConvertInteger {
            rounding: Rounding::from_name(r).unwrap_or(Rounding::HalfEven),
        })
    }
}
