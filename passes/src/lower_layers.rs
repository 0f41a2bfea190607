//! `lower-layers`: a `linear` / `conv2d` of a quantized input and an integer weight, the
//! per-channel affine ops after it and its activation, up to the `quantize` that puts the
//! result on a grid, become an integer layer with an int32 accumulator and one
//! `requantize` (DESIGN §2, Jacob et al. 2018):
//!
//! ```text
//! %fc = linear(%x.fq.real, %fc.w.fq, %fc.b) : f32[B, 3]        %fc.acc = qlinear(%x.fq, %fc.w.q, %fc.bias.q) : i32[B, 3]
//! %act = relu(%fc) : f32[B, 3]                            =>   %act.fq = requantize(%fc.acc) {multiplier = [...], shift = [...],
//! %act.fq = quantize(%act) {rounding = half_even} : ...            axis = 1, rounding = half_even, act = relu} : ...
//! ```
//!
//! - the input must be `dequantize(x)` of a per-tensor grid `s_x`, the weight
//!   `dequantize(w)` of an integer constant with zero points 0 and scales `s_w` per output
//!   channel (`quantize-weights`), the bias a constant;
//! - the accumulator stands for the real value `a[c] * acc + c[c]` per channel (axis 1),
//!   `a = s_x * s_w`, `c` the bias; the ops after it with a per-channel constant fold into
//!   `a` and `c`: `mul`, `div`, `add`, `sub`, and `batch_norm` with constant statistics
//!   (the batch-norm `fold-batchnorm-qat` leaves: the folding factor divided out, the
//!   running statistics applied);
//! - `relu` / `relu6` become the requantize's `act` (its clamp);
//! - at the `quantize` onto grid `s_y`, the int32 bias `round(c / a)` joins the layer
//!   (operand 2) and `a / s_y` per channel becomes the Q0.31 multiplier and shift
//!   (`qir::quant::quantize_multiplier`; one pair when all channels agree);
//! - a layer result read by a `concat` that a `quantize` reads is requantized onto that
//!   quantize's grid (`<quantize>.in`), then dequantized for the concat
//!   (`lower-rescale-ops` makes it a `qconcat`).
//!
//! Layers whose input or weight is not quantized stay float (mixed precision). A layer
//! result read by anything else (an output, a float op, a second activation) has no integer
//! form: an error naming it, as are a non-positive factor, a bias outside i32, weights
//! with non-zero zero points or wider than i8.

use std::collections::HashMap;

use qir::quant::{Rounding, quantize_multiplier};
use qir::{ElemType, Graph, Inst, NodeId, NodeKind, Op, QuantParams, Shape, Storage, Type};

use crate::lowering::{Ct, Grid, ROUNDING_OPTION, Rebuild, const_values, dequantized, err, per_channel, rounding_option};
use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The `lower-layers` pass.
#[derive(Clone, Debug, PartialEq)]
pub struct LowerLayers {
    /// The rounding of the `requantize` ops.
    pub rounding: Rounding,
}

impl Default for LowerLayers {
    fn default() -> Self {
        LowerLayers {
            rounding: Rounding::HalfEven,
        }
    }
}

/// An int32 accumulator `node` of the new graph standing for `a[c] * acc + c[c]` per
/// channel, then `act`.
#[derive(Clone, Debug)]
struct Acc {
    node: NodeId,
    a: Vec<f64>,
    c: Vec<f64>,
    act: &'static str,
}

/// A part of a concatenation of layer results.
#[derive(Clone, Debug)]
enum Part {
    /// A value of the new graph.
    Value(NodeId),
    /// A layer result.
    Acc(Acc),
}

struct Lower<'a> {
    rb: Rebuild<'a>,
    rounding: Rounding,
    accs: HashMap<NodeId, Acc>,
    cats: HashMap<NodeId, Vec<Part>>,
    /// The int32 bias each accumulator was given.
    biases: HashMap<NodeId, Vec<f64>>,
}

/// The integer weight constant (of the new graph) a layer's weight operand dequantizes,
/// with its per-output-channel scales.
fn int_weight(out: &Graph, w: NodeId) -> Option<(NodeId, Vec<f32>)> {
    let wq = dequantized(out, w)?;
    if !matches!(out.node(wq).kind, NodeKind::Const(_)) {
        return None;
    }
    let q = out.ty(wq).elem.quant()?;
    let scales = match &q.params {
        QuantParams::PerTensor { scale, .. } => vec![*scale],
        QuantParams::PerAxis { axis: 0, scales, .. } => scales.clone(),
        QuantParams::PerAxisRef { axis: 0, scales, .. } => const_values(out, out.find(scales)?)?.v,
        _ => return None,
    };
    Some((wq, scales))
}

impl Lower<'_> {
    fn src(&self) -> &Graph {
        self.rb.src
    }

    /// `linear` / `conv2d`: an accumulator when its input and weight are quantized.
    fn layer(&mut self, id: NodeId, inst: &Inst, ops: &[NodeId]) -> Result<bool, PassError> {
        let g = self.rb.src;
        let (x, w) = (self.rb.get(ops[0])?, self.rb.get(ops[1])?);
        let Some(xg) = dequantized(&self.rb.out, x).and_then(|xq| Grid::of(self.rb.out.ty(xq)).map(|gr| (xq, gr))) else {
            return Ok(false);
        };
        let Some((wq, scales)) = int_weight(&self.rb.out, w) else {
            return Ok(false);
        };
        let (xq, xg) = xg;
        let Some(q) = self.rb.out.ty(wq).elem.quant().cloned() else {
            return Ok(false);
        };
        let zero = match &q.params {
            QuantParams::PerTensor { zero_point, .. } => *zero_point == 0,
            QuantParams::PerAxis { zero_points, .. } => zero_points.iter().all(|&z| z == 0),
            QuantParams::PerAxisRef { zero_points, .. } => zero_points.is_none(),
        };
        if !zero {
            return Err(err(g, id, "weights with non-zero zero points are not supported"));
        }
        if !matches!(q.storage, Storage::I4 | Storage::I8) {
            return Err(err(g, id, format!("weight range [{}, {}] does not fit i8", q.qmin, q.qmax)));
        }
        let out_ch = self.rb.out.ty(wq).shape.as_fixed().and_then(|d| d.first().copied()).unwrap_or(0) as usize;
        let bias = match ops.get(2) {
            Some(&b) => {
                let c = const_values(g, b).ok_or_else(|| err(g, id, "the bias is not a constant"))?;
                per_channel(&c, out_ch).ok_or_else(|| err(g, id, "bias size differs from the output channels"))?
            }
            None => vec![0.0; out_ch],
        };
        if scales.len() != 1 && scales.len() != out_ch {
            return Err(err(g, id, "the weight scales are not per output channel"));
        }
        let a: Vec<f64> = (0..out_ch)
            .map(|c| xg.scale as f64 * scales[if scales.len() == 1 { 0 } else { c }] as f64)
            .collect();
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
        let i = self.rb.inst(id, op, &std::mem::take(&mut attrs))?;
        let ty = g.ty(id).with_elem(ElemType::I32);
        let name = format!("{}.acc", self.rb.src_name(id));
        let node = self.rb.add(id, i, &[xq, wq], ty, &name)?;
        let act = inst.choice("act").unwrap_or("none");
        self.accs.insert(id, Acc { node, a, c: bias, act });
        Ok(true)
    }

    /// A per-channel affine op on an accumulator.
    fn affine(&self, id: NodeId, inst: &Inst, ops: &[NodeId]) -> Result<Acc, PassError> {
        let g = self.src();
        let (acc_slot, k_slot) = match (self.accs.get(&ops[0]), ops.get(1).map(|o| self.accs.get(o))) {
            (Some(_), _) => (0, 1),
            (_, Some(Some(_))) if matches!(inst.op, Op::Add | Op::Mul) => (1, 0),
            _ => return Err(err(g, id, format!("{} of these values has no integer form", inst.op))),
        };
        let Acc { node, mut a, mut c, act } = self.accs[&ops[acc_slot]].clone();
        if act != "none" {
            return Err(err(g, id, "an affine op after a fused activation has no integer form"));
        }
        let ch = a.len();
        let k = |slot: usize| -> Result<Vec<f64>, PassError> {
            let ct: Ct = ops
                .get(slot)
                .and_then(|&o| const_values(g, o))
                .ok_or_else(|| err(g, id, "needs a constant per-channel operand"))?;
            per_channel(&ct, ch).ok_or_else(|| err(g, id, "the constant is not per channel"))
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
            _ => {
                let (gamma, beta, mean, var) = (k(1)?, k(2)?, k(3)?, k(4)?);
                let eps = inst.float("eps").unwrap_or(1e-5);
                for i in 0..ch {
                    let f = gamma[i] / (var[i] + eps).sqrt();
                    a[i] *= f;
                    c[i] = (c[i] - mean[i]) * f + beta[i];
                }
            }
        }
        Ok(Acc { node, a, c, act })
    }

    /// The int32 bias and the requantization of `acc` onto `grid`, standing for source
    /// value `id`.
    fn requantize(&mut self, id: NodeId, acc: &Acc, grid: Grid, ty: Type, name: &str) -> Result<NodeId, PassError> {
        let g = self.rb.src;
        let mut mults = Vec::with_capacity(acc.a.len());
        let mut shifts = Vec::with_capacity(acc.a.len());
        let mut bias = Vec::with_capacity(acc.a.len());
        for (ch, (&ac, &cc)) in acc.a.iter().zip(&acc.c).enumerate() {
            if !(ac.is_finite() && ac > 0.0) {
                return Err(err(g, id, format!("channel {ch} has the non-positive scale {ac}")));
            }
            let b = (cc / ac).round_ties_even();
            if !(b.is_finite() && b.abs() <= i32::MAX as f64) {
                return Err(err(g, id, format!("the bias of channel {ch} does not fit i32")));
            }
            bias.push(b);
            let real = ac / grid.scale as f64;
            let (m, s) = quantize_multiplier(real)
                .ok_or_else(|| err(g, id, format!("rescale factor {real} is not representable")))?;
            mults.push(m);
            shifts.push(s);
        }
        // the bias joins the accumulator: operand 2 of qlinear / qconv2d
        match self.biases.get(&acc.node) {
            Some(b) if *b != bias => {
                return Err(err(g, id, "a layer result is requantized twice with different biases"));
            }
            Some(_) => {}
            None => {
                if bias.iter().any(|&b| b != 0.0) {
                    let base = self.rb.out.node(acc.node).name.clone().unwrap_or_default();
                    let base = base.strip_suffix(".acc").unwrap_or(&base);
                    let bq = self.rb.constant(
                        &format!("{base}.bias.q"),
                        Type::new(ElemType::I32, Shape::fixed(&[bias.len() as u64])),
                        bias.clone(),
                    )?;
                    let mut operands = self.rb.out.operands(acc.node);
                    operands.truncate(2);
                    operands.push(bq);
                    self.rb.out.set_operands(acc.node, &operands);
                }
                self.biases.insert(acc.node, bias);
            }
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
        attrs.push(("rounding", qir::Attr::Enum(self.rounding.name())));
        attrs.push(("act", qir::Attr::Enum(acc.act)));
        let i = self.rb.inst(id, Op::Requantize, &attrs)?;
        self.rb.add(id, i, &[acc.node], ty, name)
    }

    /// A `quantize` of a concatenation with layer results: each part on the quantize's grid,
    /// dequantized, concatenated, quantized.
    fn quantize_concat(&mut self, id: NodeId, cat: NodeId, parts: Vec<Part>) -> Result<NodeId, PassError> {
        let g = self.rb.src;
        let grid = Grid::of(g.ty(id)).ok_or_else(|| err(g, id, "quantizes onto no per-tensor grid"))?;
        let qname = self.rb.src_name(id);
        let mut xs = Vec::new();
        for (part, &o) in parts.iter().zip(&g.operands(cat)) {
            xs.push(match part {
                Part::Value(v) => *v,
                Part::Acc(acc) => {
                    let ty = g.ty(o).with_elem(grid.elem());
                    let q = self.requantize(id, acc, grid, ty, &format!("{qname}.in"))?;
                    let ty = g.ty(o).with_elem(ElemType::F32);
                    self.rb
                        .out
                        .add_op_typed(Inst::new(Op::Dequantize), &[q], ty, None)
                        .map_err(|e| err(g, id, e.0))?
                }
            });
        }
        let node = g.node(cat);
        let inst = node.inst().cloned().ok_or_else(|| err(g, cat, "is not an op"))?;
        let c = self.rb.add(cat, inst, &xs, node.ty.clone(), &self.rb.src_name(cat))?;
        self.rb.set(cat, c);
        self.rb.copy(id)
    }

    fn lower(&mut self, id: NodeId) -> Result<bool, PassError> {
        let g = self.rb.src;
        let Some(inst) = g.node(id).inst() else { return Ok(false) };
        let ops = g.operands(id);
        let reads_acc = ops.iter().any(|o| self.accs.contains_key(o));
        if matches!(inst.op, Op::Linear | Op::Conv2d) && !reads_acc && self.layer(id, inst, &ops)? {
            return Ok(true);
        }
        match inst.op {
            Op::Relu | Op::Relu6 if reads_acc => {
                let act = if inst.op == Op::Relu { "relu" } else { "relu6" };
                let mut acc = self.accs[&ops[0]].clone();
                if acc.act != "none" {
                    return Err(err(g, id, "an activation must follow a layer or an addition"));
                }
                acc.act = act;
                self.accs.insert(id, acc);
                return Ok(true);
            }
            Op::Div | Op::Mul | Op::Add | Op::Sub | Op::BatchNorm if reads_acc => {
                let acc = self.affine(id, inst, &ops)?;
                self.accs.insert(id, acc);
                return Ok(true);
            }
            Op::Quantize if reads_acc => {
                let acc = self.accs[&ops[0]].clone();
                let grid = Grid::of(g.ty(id)).ok_or_else(|| err(g, id, "quantizes onto no per-tensor grid"))?;
                let name = self.rb.src_name(id);
                let q = self.requantize(id, &acc, grid, g.ty(id).clone(), &name)?;
                let n = self.rb.out.node_mut(q);
                n.loc = g.node(id).loc;
                n.comments = g.node(id).comments.clone();
                self.rb.set(id, q);
                return Ok(true);
            }
            Op::Concat if reads_acc => {
                let parts = ops
                    .iter()
                    .map(|o| match self.accs.get(o) {
                        Some(acc) => Ok(Part::Acc(acc.clone())),
                        None => self.rb.get(*o).map(Part::Value),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.cats.insert(id, parts);
                return Ok(true);
            }
            Op::Quantize if self.cats.contains_key(&ops[0]) => {
                let parts = self.cats[&ops[0]].clone();
                self.quantize_concat(id, ops[0], parts)?;
                return Ok(true);
            }
            _ => {}
        }
        if let Some(&o) = ops.iter().find(|o| self.accs.contains_key(o) || self.cats.contains_key(o)) {
            return Err(err(
                g,
                id,
                format!(
                    "{} has no integer form and reads {}, a layer result without a fake-quant",
                    inst.op,
                    g.describe(o)
                ),
            ));
        }
        self.rb.copy(id)?;
        Ok(false)
    }
}

/// Lowers the layers of `g` (see the module docs); `None` when there is none.
pub fn lower_layers(g: &Graph, rounding: Rounding) -> Result<Option<Graph>, PassError> {
    let mut lo = Lower {
        rb: Rebuild::new(g)?,
        rounding,
        accs: HashMap::new(),
        cats: HashMap::new(),
        biases: HashMap::new(),
    };
    let mut changed = false;
    for id in lo.rb.ops()? {
        changed |= lo.lower(id)?;
    }
    for o in g.outputs() {
        if lo.accs.contains_key(&o.value) || lo.cats.contains_key(&o.value) {
            return Err(err(
                g,
                o.value,
                format!("output '{}' is not quantized (no fake-quant before it)", o.name),
            ));
        }
    }
    if !changed {
        return Ok(None);
    }
    lo.rb.finish().map(Some)
}

impl Pass for LowerLayers {
    fn name(&self) -> &'static str {
        "lower-layers"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("rounding", OptValue::Scalar(self.rounding.name().to_string()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        match lower_layers(g, self.rounding)? {
            Some(out) => {
                *g = out;
                Ok(Changed::Yes)
            }
            None => Ok(Changed::No),
        }
    }
}

impl PassDef for LowerLayers {
    const INFO: PassInfo = PassInfo {
        name: "lower-layers",
        summary: "quantized linear/conv2d with affine ops and activation up to a quantize become qlinear/qconv2d + requantize",
        options: &[ROUNDING_OPTION],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(LowerLayers {
            rounding: rounding_option(options)?,
        })
    }
}
