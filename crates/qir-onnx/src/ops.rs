//! One converter per ONNX op: each checks the node's inputs and attributes (any attribute
//! it does not know is an error) and builds the exact qir equivalent, or says why it
//! cannot. Semantics follow the ONNX operator specification for the model's opset (every
//! op here was reviewed against each of its versions from opset 13 to 28; only
//! BatchNormalization 14, ReduceMean 18, AveragePool 19 and Reshape 14 changed more than
//! their type lists, and those changes are handled).

use qir::{Dim, Inst, NodeId, Op};

use crate::attrs::NodeAttrs;
use crate::import::{Importer, NResult, NodeCx, Origin, Out, Role, Val};

/// The ops the importer translates.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "Identity",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mul",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Sub",
    "Tanh",
    "Transpose",
];

fn with(inst: Inst, name: &str, v: impl Into<qir::Attr>) -> NResult<Inst> {
    inst.with(name, v)
}

/// A size that may involve symbolic dimensions: `fixed * prod(syms)`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Extent {
    fixed: u64,
    syms: Vec<String>,
}

impl Extent {
    fn fixed(n: u64) -> Extent {
        Extent {
            fixed: n,
            syms: Vec::new(),
        }
    }
    fn of(d: &Dim) -> Extent {
        match d {
            Dim::Fixed(n) => Extent::fixed(*n),
            Dim::Sym(s) => Extent {
                fixed: 1,
                syms: vec![s.clone()],
            },
        }
    }
    fn mul(&self, o: &Extent) -> Option<Extent> {
        let mut syms = self.syms.clone();
        syms.extend(o.syms.iter().cloned());
        syms.sort();
        Some(Extent {
            fixed: self.fixed.checked_mul(o.fixed)?,
            syms,
        })
    }
    fn product<'d>(ds: impl IntoIterator<Item = &'d Dim>) -> Option<Extent> {
        ds.into_iter()
            .try_fold(Extent::fixed(1), |acc, d| acc.mul(&Extent::of(d)))
    }
    /// `self / o` when it divides exactly.
    fn div(&self, o: &Extent) -> Option<Extent> {
        if o.fixed == 0 || !self.fixed.is_multiple_of(o.fixed) {
            return None;
        }
        let mut syms = self.syms.clone();
        for s in &o.syms {
            let i = syms.iter().position(|x| x == s)?;
            syms.remove(i);
        }
        Some(Extent {
            fixed: self.fixed / o.fixed,
            syms,
        })
    }
    fn show(&self) -> String {
        let mut parts: Vec<String> = self.syms.clone();
        if self.fixed != 1 || parts.is_empty() {
            parts.insert(0, self.fixed.to_string());
        }
        parts.join("*")
    }
}

fn ints2(a: &NodeAttrs<'_>, name: &str, default: u64) -> NResult<[u64; 2]> {
    match a.ints(name)? {
        None => Ok([default, default]),
        Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 1) => Ok([v[0] as u64, v[1] as u64]),
        Some(v) => Err(format!(
            "attribute '{name}' = {v:?} must hold 2 values >= 1 (only 2-D windows are supported)"
        )),
    }
}

fn fixed_hw(ty: &qir::Type) -> NResult<[u64; 2]> {
    match (ty.shape.0[2].fixed(), ty.shape.0[3].fixed()) {
        (Some(h), Some(w)) => Ok([h, w]),
        _ => Err(format!("the spatial dimensions of {ty} must be fixed")),
    }
}

/// The [top, left, bottom, right] padding of a 2-D window from `pads` or `auto_pad`
/// (ONNX writes pads as [x1_begin, x2_begin, x1_end, x2_end], the same order).
fn window_pads(
    a: &NodeAttrs<'_>,
    input: [u64; 2],
    k: [u64; 2],
    stride: [u64; 2],
    dil: [u64; 2],
) -> NResult<[i64; 4]> {
    let auto = a.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
    if auto != "NOTSET" && a.has("pads") {
        return Err(format!(
            "attributes 'pads' and 'auto_pad' = {auto} cannot be used together"
        ));
    }
    match auto.as_str() {
        "NOTSET" => match a.ints("pads")? {
            None => Ok([0; 4]),
            Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => Ok([p[0], p[1], p[2], p[3]]),
            Some(p) => Err(format!(
                "attribute 'pads' = {p:?} must hold 4 values >= 0 (only 2-D windows are supported)"
            )),
        },
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut pads = [0i64; 4];
            for d in 0..2 {
                // out = ceil(in / stride); total = max(0, (out - 1) * stride + span - in)
                let out = input[d].div_ceil(stride[d]);
                let total = dil[d]
                    .checked_mul(k[d] - 1)
                    .and_then(|s| s.checked_add(1))
                    .and_then(|span| {
                        out.saturating_sub(1)
                            .checked_mul(stride[d])?
                            .checked_add(span)
                    })
                    .map(|t| t.saturating_sub(input[d]))
                    .and_then(|t| i64::try_from(t).ok())
                    .ok_or("the window is too large")?;
                let (small, big) = (total / 2, total - total / 2);
                let (begin, end) = if auto == "SAME_UPPER" {
                    (small, big)
                } else {
                    (big, small)
                };
                pads[d] = begin;
                pads[d + 2] = end;
            }
            Ok(pads)
        }
        other => Err(format!("auto_pad = '{other}' is not a valid value")),
    }
}

fn all_fixed_but_first(ty: &qir::Type) -> bool {
    ty.shape.dims().iter().skip(1).all(|d| d.fixed().is_some())
}

impl Importer<'_> {
    /// Translates one node (see the module docs).
    pub(crate) fn convert(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        match cx.op {
            "Add" => self.binary(cx, Op::Add),
            "Sub" => self.binary(cx, Op::Sub),
            "Mul" => self.binary(cx, Op::Mul),
            "Div" => self.binary(cx, Op::Div),
            "Relu" => self.unary(cx, Op::Relu),
            "Sigmoid" => self.unary(cx, Op::Sigmoid),
            "Tanh" => self.unary(cx, Op::Tanh),
            "Gemm" => self.gemm(cx),
            "MatMul" => self.matmul(cx),
            "Conv" => self.conv(cx),
            "BatchNormalization" => self.batch_norm(cx),
            "Clip" => self.clip(cx),
            "MaxPool" => self.pool(cx, true),
            "AveragePool" => self.pool(cx, false),
            "GlobalAveragePool" => self.global_avg_pool(cx),
            "ReduceMean" => self.reduce_mean(cx),
            "Flatten" => self.flatten(cx),
            "Reshape" => self.reshape(cx),
            "Transpose" => self.transpose(cx),
            "Concat" => self.concat(cx),
            "Softmax" => self.softmax(cx, Op::Softmax),
            "LogSoftmax" => self.softmax(cx, Op::LogSoftmax),
            "Identity" => {
                cx.inputs(1, 1)?;
                cx.attrs(&[])?;
                Ok(Out::Alias(self.val(cx.req(0, "input")?)?))
            }
            "Constant" => self.constant(cx),
            "Dropout" => self.dropout(cx),
            other => Err(format!(
                "op '{other}' is not supported (the importer covers {})",
                SUPPORTED_OPS.join(", ")
            )),
        }
    }

    fn unary(&mut self, cx: &NodeCx<'_>, op: Op) -> NResult<Out> {
        cx.inputs(1, 1)?;
        cx.attrs(&[])?;
        let x = self.operand(cx.req(0, "X")?, Role::Data)?;
        Ok(Out::New(self.emit_op(op, &[x])?))
    }

    fn binary(&mut self, cx: &NodeCx<'_>, op: Op) -> NResult<Out> {
        cx.inputs(2, 2)?;
        cx.attrs(&[])?;
        let a = self.operand(cx.req(0, "A")?, Role::Data)?;
        let b = self.operand(cx.req(1, "B")?, Role::Data)?;
        Ok(Out::New(self.emit_op(op, &[a, b])?))
    }

    /// `Y = alpha * A' B' + beta * C`: `linear` for the `transB = 1` form PyTorch emits for
    /// its Linear layers (C as the bias when it is a vector and alpha is 1), `matmul` with
    /// transpose flags otherwise; alpha and beta (when not 1) are `mul`s by constants.
    fn gemm(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(2, 3)?;
        let at = cx.attrs(&["alpha", "beta", "transA", "transB"])?;
        let alpha = at.float_or("alpha", 1.0)?;
        let beta = at.float_or("beta", 1.0)?;
        let ta = at.flag("transA", false)?;
        let tb = at.flag("transB", false)?;
        let (an, bn) = (cx.req(0, "A")?, cx.req(1, "B")?);
        let (aty, bty) = (self.ty(an)?, self.ty(bn)?);
        if aty.rank() != 2 || bty.rank() != 2 {
            return Err(format!("A and B must be matrices, found {aty} and {bty}"));
        }
        let elem = aty.elem.clone();
        let n = bty.shape.0[if tb { 0 } else { 1 }].clone();
        let a = self.operand(an, Role::Data)?;
        let b = self.operand(bn, Role::Data)?;
        let c = match cx.input(2) {
            Some(c) if beta != 0.0 => Some(c),
            _ => None,
        };
        let mut c_node = match c {
            Some(c) => {
                let mut id = self.operand(c, Role::Data)?;
                if beta != 1.0 {
                    let base = format!("{}.beta", self.qname(cx.out())?);
                    let k = self.scalar_const(&base, &elem, beta as f64)?;
                    id = self.emit_op(Op::Mul, &[id, k])?;
                }
                Some(id)
            }
            None => None,
        };
        let linear = !ta && tb;
        let bias = match c_node {
            Some(id) if linear && alpha == 1.0 && self.g.ty(id).shape.dims() == [n.clone()] => {
                c_node = None;
                Some(id)
            }
            _ => None,
        };
        let mut y = if linear {
            let mut ops = vec![a, b];
            ops.extend(bias);
            self.emit_op(Op::Linear, &ops)?
        } else {
            let mut inst = Inst::new(Op::Matmul);
            inst = with(inst, "transpose_a", ta)?;
            inst = with(inst, "transpose_b", tb)?;
            self.emit(inst, &[a, b])?
        };
        if alpha != 1.0 {
            let base = format!("{}.alpha", self.qname(cx.out())?);
            let k = self.scalar_const(&base, &elem, alpha as f64)?;
            y = self.emit_op(Op::Mul, &[y, k])?;
        }
        if let Some(c) = c_node {
            let before = self.g.ty(y).clone();
            y = self.emit_op(Op::Add, &[y, c])?;
            if self.g.ty(y) != &before {
                return Err(format!(
                    "C ({}) does not broadcast to the product {before}",
                    self.g.ty(c)
                ));
            }
        }
        Ok(Out::New(y))
    }

    fn matmul(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(2, 2)?;
        cx.attrs(&[])?;
        let (an, bn) = (cx.req(0, "A")?, cx.req(1, "B")?);
        let (aty, bty) = (self.ty(an)?, self.ty(bn)?);
        if aty.rank() != 2 || bty.rank() != 2 {
            return Err(format!(
                "MatMul of {aty} and {bty} is not supported (only the product of two matrices is)"
            ));
        }
        let a = self.operand(an, Role::Data)?;
        let b = self.operand(bn, Role::Data)?;
        Ok(Out::New(self.emit_op(Op::Matmul, &[a, b])?))
    }

    fn conv(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(2, 3)?;
        let at = cx.attrs(&[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ])?;
        let (xn, wn) = (cx.req(0, "X")?, cx.req(1, "W")?);
        let (xty, wty) = (self.ty(xn)?, self.ty(wn)?);
        if xty.rank() != 4 || wty.rank() != 4 {
            return Err(format!(
                "only 2-D convolutions are supported (input and weight of rank 4), found {xty} and {wty}"
            ));
        }
        let k = fixed_hw(&wty)?;
        if let Some(ks) = at.ints("kernel_shape")?
            && ks != [k[0] as i64, k[1] as i64]
        {
            return Err(format!(
                "attribute 'kernel_shape' = {ks:?} does not match the weight {wty}"
            ));
        }
        let stride = ints2(&at, "strides", 1)?;
        let dil = ints2(&at, "dilations", 1)?;
        let pads = window_pads(&at, fixed_hw(&xty)?, k, stride, dil)?;
        let group = at.int_or("group", 1)?;
        let mut inst = Inst::new(Op::Conv2d);
        inst = with(inst, "stride", vec![stride[0] as i64, stride[1] as i64])?;
        inst = with(inst, "padding", pads.to_vec())?;
        inst = with(inst, "dilation", vec![dil[0] as i64, dil[1] as i64])?;
        inst = with(inst, "groups", group)?;
        let mut ops = vec![self.operand(xn, Role::Data)?, self.operand(wn, Role::Data)?];
        if let Some(b) = cx.input(2) {
            ops.push(self.operand(b, Role::Data)?);
        }
        Ok(Out::New(self.emit(inst, &ops)?))
    }

    fn batch_norm(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(5, 5)?;
        let accepted: &[&str] = if cx.opset >= 14 {
            &["epsilon", "momentum", "training_mode"]
        } else {
            &["epsilon", "momentum"]
        };
        let at = cx.attrs(accepted)?;
        if at.flag("training_mode", false)? {
            return Err(
                "training_mode = 1 is not supported (the importer translates inference graphs; training uses batch statistics by itself)"
                    .into(),
            );
        }
        // The f32 attribute as the shortest decimal that reads back to it, so that 1e-5
        // prints (and is omitted, being the default) as 1e-5.
        let eps_f32 = at.float_or("epsilon", 1e-5)?;
        let eps: f64 = eps_f32
            .to_string()
            .parse()
            .map_err(|_| format!("epsilon {eps_f32} is not a number"))?;
        let x = self.operand(cx.req(0, "X")?, Role::Data)?;
        let gamma = self.operand(cx.req(1, "scale")?, Role::Data)?;
        let beta = self.operand(cx.req(2, "B")?, Role::Data)?;
        let mean = self.operand(cx.req(3, "input_mean")?, Role::RunningStat)?;
        let var = self.operand(cx.req(4, "input_var")?, Role::RunningStat)?;
        let inst = with(Inst::new(Op::BatchNorm), "eps", eps)?;
        Ok(Out::New(self.emit(inst, &[x, gamma, beta, mean, var])?))
    }

    /// A constant scalar input (a Clip bound): its value, `None` when the input is absent.
    fn const_scalar(&self, cx: &NodeCx<'_>, i: usize, what: &str) -> NResult<Option<f64>> {
        let Some(name) = cx.input(i) else {
            return Ok(None);
        };
        match self.const_of(name)? {
            Some(t) if t.numel() == 1 => Ok(Some(t.data.get_f64(0))),
            Some(t) => Err(format!(
                "input '{what}' must be a scalar, found shape {:?}",
                t.shape
            )),
            None => Err(format!(
                "input '{what}' ('{name}') must be a constant (an initializer or a Constant)"
            )),
        }
    }

    /// Clip: `relu` for [0, inf), `relu6` for [0, 6], otherwise an exact composition
    /// `min(max(x, lo), hi)` with `min(y, c) = -max(-y, -c)`, where `max` with a constant
    /// is a 2x1 max-pool over `x` stacked with the broadcast constant (no arithmetic touches
    /// the values, so the result is exact).
    fn clip(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(1, 3)?;
        cx.attrs(&[])?;
        let xn = cx.req(0, "input")?;
        let lo = self.const_scalar(cx, 1, "min")?;
        let hi = self.const_scalar(cx, 2, "max")?;
        if lo.is_some_and(f64::is_nan) || hi.is_some_and(f64::is_nan) {
            return Err("a NaN bound is not supported".into());
        }
        let lo = lo.filter(|&v| v != f64::NEG_INFINITY);
        let hi = hi.filter(|&v| v != f64::INFINITY);
        let xv = self.val(xn)?;
        if lo.is_none() && hi.is_none() {
            return Ok(Out::Alias(xv));
        }
        let x = self.operand(xn, Role::Data)?;
        if !self.g.ty(x).elem.is_float() {
            return Err(format!(
                "only float inputs are supported, found {}",
                self.g.ty(x)
            ));
        }
        match (lo, hi) {
            (Some(0.0), None) => return Ok(Out::New(self.emit_op(Op::Relu, &[x])?)),
            (Some(0.0), Some(6.0)) => return Ok(Out::New(self.emit_op(Op::Relu6, &[x])?)),
            _ => {}
        }
        let base = self.qname(cx.out())?;
        let mut y = x;
        if let Some(lo) = lo {
            y = self.max_with(y, lo, &format!("{base}.min"))?;
        }
        if let Some(hi) = hi {
            let n = self.emit_op(Op::Neg, &[y])?;
            let m = self.max_with(n, -hi, &format!("{base}.neg_max"))?;
            y = self.emit_op(Op::Neg, &[m])?;
        }
        Ok(Out::New(y))
    }

    /// `max(y, c)` elementwise, exactly (see [`Importer::clip`]).
    fn max_with(&mut self, y: NodeId, c: f64, base: &str) -> NResult<NodeId> {
        if c == 0.0 {
            return self.emit_op(Op::Relu, &[y]);
        }
        let ty = self.g.ty(y).clone();
        let dims = ty.shape.dims().to_vec();
        let back: Vec<i64> = dims
            .iter()
            .map(|d| d.fixed().map_or(-1, |n| n as i64))
            .collect();
        let (lead, p) = match dims.split_first() {
            None => (1i64, 1u64),
            Some((first, rest)) if all_fixed_but_first(&ty) => {
                let p = rest
                    .iter()
                    .try_fold(1u64, |acc, d| acc.checked_mul(d.fixed()?))
                    .ok_or("too many elements")?;
                match first {
                    Dim::Sym(_) => (-1, p),
                    Dim::Fixed(n) => (1, p.checked_mul(*n).ok_or("too many elements")?),
                }
            }
            Some(_) => {
                return Err(format!(
                    "a general Clip needs every dimension but the first fixed, found {ty}"
                ));
            }
        };
        let p = i64::try_from(p).map_err(|_| "too many elements".to_string())?;
        let y4 = self.emit(
            with(Inst::new(Op::Reshape), "shape", vec![lead, 1, 1, p])?,
            &[y],
        )?;
        let k = self.scalar_const(base, &ty.elem, c)?;
        let kb = self.emit_op(Op::BroadcastLike, &[k, y4])?;
        let both = self.emit(with(Inst::new(Op::Concat), "axis", 2i64)?, &[y4, kb])?;
        let m = self.emit(
            with(Inst::new(Op::MaxPool2d), "kernel", vec![2i64, 1])?,
            &[both],
        )?;
        self.emit(with(Inst::new(Op::Reshape), "shape", back)?, &[m])
    }

    fn pool(&mut self, cx: &NodeCx<'_>, max: bool) -> NResult<Out> {
        cx.inputs(1, 1)?;
        let accepted: &[&str] = match (max, cx.opset >= 19) {
            (true, _) => &[
                "auto_pad",
                "ceil_mode",
                "dilations",
                "kernel_shape",
                "pads",
                "storage_order",
                "strides",
            ],
            (false, true) => &[
                "auto_pad",
                "ceil_mode",
                "count_include_pad",
                "dilations",
                "kernel_shape",
                "pads",
                "strides",
            ],
            (false, false) => &[
                "auto_pad",
                "ceil_mode",
                "count_include_pad",
                "kernel_shape",
                "pads",
                "strides",
            ],
        };
        let at = cx.attrs(accepted)?;
        let xn = cx.req(0, "X")?;
        let xty = self.ty(xn)?;
        if xty.rank() != 4 {
            return Err(format!(
                "only 2-D pooling is supported (input of rank 4), found {xty}"
            ));
        }
        let k = match at.ints("kernel_shape")? {
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 1) => [v[0] as u64, v[1] as u64],
            Some(v) => {
                return Err(format!(
                    "attribute 'kernel_shape' = {v:?} must hold 2 values >= 1"
                ));
            }
            None => return Err("the required attribute 'kernel_shape' is missing".into()),
        };
        let stride = ints2(&at, "strides", 1)?;
        let dil = ints2(&at, "dilations", 1)?;
        if dil != [1, 1] {
            return Err(format!(
                "dilations {dil:?} are not supported (qir pools are not dilated)"
            ));
        }
        let hw = fixed_hw(&xty)?;
        let pads = window_pads(&at, hw, k, stride, dil)?;
        if at.flag("ceil_mode", false)? {
            // Rounding up only matters when it adds a window; then the sizes differ.
            for d in 0..2 {
                let too_large = || "the window is too large".to_string();
                let begin = hw[d].checked_add(pads[d] as u64).ok_or_else(too_large)?;
                let padded = begin
                    .checked_add(pads[d + 2] as u64)
                    .ok_or_else(too_large)?;
                let Some(span) = padded.checked_sub(k[d]) else {
                    break;
                };
                let floor = span / stride[d] + 1;
                let mut ceil = span.div_ceil(stride[d]) + 1;
                // the last window must start inside the input or its leading padding
                if (ceil - 1).checked_mul(stride[d]).is_none_or(|s| s >= begin) {
                    ceil -= 1;
                }
                if ceil != floor {
                    return Err(format!(
                        "ceil_mode = 1 gives {ceil} windows along axis {} where qir's pools (which round down) give {floor}",
                        d + 2
                    ));
                }
            }
        }
        let mut inst = Inst::new(if max { Op::MaxPool2d } else { Op::AvgPool2d });
        inst = with(inst, "kernel", vec![k[0] as i64, k[1] as i64])?;
        if stride != k {
            inst = with(inst, "stride", vec![stride[0] as i64, stride[1] as i64])?;
        }
        inst = with(inst, "padding", pads.to_vec())?;
        if !max {
            inst = with(
                inst,
                "count_include_pad",
                at.flag("count_include_pad", false)?,
            )?;
        } else {
            // storage_order only changes the (unused) indices output.
            at.flag("storage_order", false)?;
        }
        let x = self.operand(xn, Role::Data)?;
        Ok(Out::New(self.emit(inst, &[x])?))
    }

    fn global_avg_pool(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(1, 1)?;
        cx.attrs(&[])?;
        let x = self.operand(cx.req(0, "X")?, Role::Data)?;
        let r = self.g.ty(x).rank();
        let id = match r {
            4 => self.emit_op(Op::GlobalAvgPool, &[x])?,
            r if r >= 3 => {
                let mut inst = with(
                    Inst::new(Op::ReduceMean),
                    "axes",
                    (2..r as i64).collect::<Vec<_>>(),
                )?;
                inst = with(inst, "keepdims", true)?;
                self.emit(inst, &[x])?
            }
            _ => {
                return Err(format!(
                    "the input must have rank 3 or more, found {}",
                    self.g.ty(x)
                ));
            }
        };
        Ok(Out::New(id))
    }

    /// A constant list of integers (a shape, axes).
    fn const_ints(&self, name: &str, what: &str) -> NResult<Vec<i64>> {
        match self.const_of(name)? {
            Some(t) if t.shape.len() == 1 => match &t.data {
                qir::Data::I64(v) => Ok(v.clone()),
                qir::Data::I32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
                _ => Err(format!("input '{what}' must hold integers")),
            },
            Some(t) => Err(format!(
                "input '{what}' must be a vector, found shape {:?}",
                t.shape
            )),
            None => Err(format!(
                "input '{what}' ('{name}') must be a constant (an initializer or a Constant)"
            )),
        }
    }

    fn normalize_axes(axes: &[i64], rank: usize) -> NResult<Vec<i64>> {
        let r = rank as i64;
        let mut out = Vec::new();
        for &a in axes {
            let n = if a < 0 { a + r } else { a };
            if !(0..r).contains(&n) {
                return Err(format!("axis {a} is out of range for rank {rank}"));
            }
            if out.contains(&n) {
                return Err(format!("axis {a} is listed twice"));
            }
            out.push(n);
        }
        Ok(out)
    }

    fn reduce_mean(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        let axes_input = cx.opset >= 18;
        let (at, axes) = if axes_input {
            cx.inputs(1, 2)?;
            let at = cx.attrs(&["keepdims", "noop_with_empty_axes"])?;
            let axes = match cx.input(1) {
                Some(a) => self.const_ints(a, "axes")?,
                None => Vec::new(),
            };
            (at, axes)
        } else {
            cx.inputs(1, 1)?;
            let at = cx.attrs(&["axes", "keepdims"])?;
            let axes = at.ints("axes")?.unwrap_or_default();
            (at, axes)
        };
        let keepdims = at.flag("keepdims", true)?;
        let noop = axes_input && at.flag("noop_with_empty_axes", false)?;
        let xn = cx.req(0, "data")?;
        let xty = self.ty(xn)?;
        let rank = xty.rank();
        let mut axes = if axes.is_empty() {
            if noop {
                return Ok(Out::Alias(self.val(xn)?));
            }
            (0..rank as i64).collect()
        } else {
            Self::normalize_axes(&axes, rank)?
        };
        axes.sort_unstable();
        let x = self.operand(xn, Role::Data)?;
        if rank == 0 {
            return Ok(Out::Alias(Val::Node(x)));
        }
        let id = if rank == 4 && keepdims && axes == [2, 3] {
            self.emit_op(Op::GlobalAvgPool, &[x])?
        } else {
            let mut inst = with(Inst::new(Op::ReduceMean), "axes", axes)?;
            inst = with(inst, "keepdims", keepdims)?;
            self.emit(inst, &[x])?
        };
        Ok(Out::New(id))
    }

    /// `x` reshaped to `target`, expressed with qir's reshape (a symbolic dimension may
    /// only stay a dimension of its own, written -1).
    fn reshape_to(&mut self, x: NodeId, target: &[Extent]) -> NResult<Out> {
        let ty = self.g.ty(x).clone();
        let current: Vec<Extent> = ty.shape.dims().iter().map(Extent::of).collect();
        if current == target {
            return Ok(Out::Alias(Val::Node(x)));
        }
        let show = || {
            format!(
                "[{}]",
                target
                    .iter()
                    .map(Extent::show)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let total = Extent::product(ty.shape.dims()).ok_or("too many elements")?;
        let want = target
            .iter()
            .try_fold(Extent::fixed(1), |acc, e| acc.mul(e))
            .ok_or("too many elements")?;
        if total != want {
            return Err(format!(
                "cannot reshape {ty} to {}: element counts differ",
                show()
            ));
        }
        let symbolic: Vec<&Extent> = target.iter().filter(|e| !e.syms.is_empty()).collect();
        if symbolic.len() > 1 || symbolic.iter().any(|e| e.fixed != 1 || e.syms.len() != 1) {
            return Err(format!(
                "reshaping {ty} to {} merges the symbolic batch dimension with others, which qir's reshape cannot express",
                show()
            ));
        }
        let shape: Vec<i64> = target
            .iter()
            .map(|e| {
                if e.syms.is_empty() {
                    i64::try_from(e.fixed).map_err(|_| "too many elements".to_string())
                } else {
                    Ok(-1)
                }
            })
            .collect::<NResult<_>>()?;
        let inst = with(Inst::new(Op::Reshape), "shape", shape)?;
        Ok(Out::New(self.emit(inst, &[x])?))
    }

    fn flatten(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(1, 1)?;
        let at = cx.attrs(&["axis"])?;
        let x = self.operand(cx.req(0, "input")?, Role::Data)?;
        let ty = self.g.ty(x).clone();
        let r = ty.rank() as i64;
        let axis = at.int_or("axis", 1)?;
        let axis = if axis < 0 { axis + r } else { axis };
        if !(0..=r).contains(&axis) {
            return Err(format!("axis {axis} is out of range for {ty}"));
        }
        if axis == 1 && r != 2 && ty.shape.dims()[1..].iter().all(|d| d.fixed().is_some()) {
            return Ok(Out::New(self.emit_op(Op::Flatten, &[x])?));
        }
        let (head, tail) = ty.shape.dims().split_at(axis as usize);
        let target = [
            Extent::product(head).ok_or("too many elements")?,
            Extent::product(tail).ok_or("too many elements")?,
        ];
        self.reshape_to(x, &target)
    }

    fn reshape(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(2, 2)?;
        let at = cx.attrs(if cx.opset >= 14 { &["allowzero"] } else { &[] })?;
        let allowzero = at.flag("allowzero", false)?;
        let shape = self.const_ints(cx.req(1, "shape")?, "shape")?;
        let x = self.operand(cx.req(0, "data")?, Role::Data)?;
        let ty = self.g.ty(x).clone();
        let dims = ty.shape.dims();
        let mut target: Vec<Option<Extent>> = Vec::with_capacity(shape.len());
        let mut infer = None;
        for (i, &s) in shape.iter().enumerate() {
            target.push(match s {
                0 if allowzero => {
                    return Err("a zero-size dimension (allowzero = 1) is not supported".into());
                }
                0 => Some(Extent::of(dims.get(i).ok_or_else(|| {
                    format!("shape entry {i} is 0 (copy) but the input {ty} has no dimension {i}")
                })?)),
                -1 if infer.is_none() => {
                    infer = Some(i);
                    None
                }
                -1 => return Err("the shape holds -1 more than once".into()),
                s if s > 0 => Some(Extent::fixed(s as u64)),
                s => return Err(format!("shape entry {s} is invalid")),
            });
        }
        let total = Extent::product(dims).ok_or("too many elements")?;
        if let Some(i) = infer {
            let known = target
                .iter()
                .flatten()
                .try_fold(Extent::fixed(1), |acc, e| acc.mul(e))
                .ok_or("too many elements")?;
            target[i] = Some(total.div(&known).ok_or_else(|| {
                format!("cannot reshape {ty} to {shape:?}: element counts differ")
            })?);
        }
        let target: Vec<Extent> = target.into_iter().flatten().collect();
        self.reshape_to(x, &target)
    }

    fn transpose(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(1, 1)?;
        let at = cx.attrs(&["perm"])?;
        let x = self.operand(cx.req(0, "data")?, Role::Data)?;
        let r = self.g.ty(x).rank() as i64;
        let perm = at.ints("perm")?.unwrap_or_else(|| (0..r).rev().collect());
        if perm.iter().copied().eq(0..r) {
            return Ok(Out::Alias(Val::Node(x)));
        }
        let inst = with(Inst::new(Op::Transpose), "perm", perm)?;
        Ok(Out::New(self.emit(inst, &[x])?))
    }

    fn concat(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(1, usize::MAX)?;
        let at = cx.attrs(&["axis"])?;
        let axis = at
            .int("axis")?
            .ok_or("the required attribute 'axis' is missing")?;
        let mut ops = Vec::new();
        for (i, name) in cx.node.input.iter().enumerate() {
            if name.is_empty() {
                return Err(format!("input {i} is empty"));
            }
            ops.push(self.operand(name, Role::Data)?);
        }
        let r = self.g.ty(ops[0]).rank();
        let axis = Self::normalize_axes(&[axis], r)?[0];
        let inst = with(Inst::new(Op::Concat), "axis", axis)?;
        Ok(Out::New(self.emit(inst, &ops)?))
    }

    fn softmax(&mut self, cx: &NodeCx<'_>, op: Op) -> NResult<Out> {
        cx.inputs(1, 1)?;
        let at = cx.attrs(&["axis"])?;
        let x = self.operand(cx.req(0, "input")?, Role::Data)?;
        let axis = at.int_or("axis", -1)?;
        let inst = with(Inst::new(op), "axis", axis)?;
        Ok(Out::New(self.emit(inst, &[x])?))
    }

    fn constant(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(0, 0)?;
        let at = cx.attrs(&[
            "value",
            "value_float",
            "value_floats",
            "value_int",
            "value_ints",
            "sparse_value",
            "value_string",
            "value_strings",
        ])?;
        let given: Vec<&str> = cx
            .node
            .attribute
            .iter()
            .map(|a| a.name.as_deref().unwrap_or(""))
            .collect();
        if given.len() != 1 {
            return Err(format!(
                "exactly one value attribute is needed, found {}",
                if given.is_empty() {
                    "none".to_string()
                } else {
                    given.join(", ")
                }
            ));
        }
        let scalar = |v: qir::Data| qir::Tensor::new(Vec::new(), v);
        let vector = |n: usize, v: qir::Data| qir::Tensor::new(vec![n], v);
        let t = match given[0] {
            "value" => {
                let t = at
                    .tensor("value")?
                    .ok_or("attribute 'value' has no tensor")?;
                crate::tensor::decode(t, crate::tensor::DataDir(self.dir))?
            }
            "value_float" => scalar(qir::Data::F32(vec![at.float_or("value_float", 0.0)?]))
                .ok_or("bad scalar")?,
            "value_floats" => {
                let v = at.floats("value_floats")?.unwrap_or_default();
                vector(v.len(), qir::Data::F32(v)).ok_or("bad vector")?
            }
            "value_int" => {
                scalar(qir::Data::I64(vec![at.int_or("value_int", 0)?])).ok_or("bad scalar")?
            }
            "value_ints" => {
                let v = at.ints("value_ints")?.unwrap_or_default();
                vector(v.len(), qir::Data::I64(v)).ok_or("bad vector")?
            }
            other => return Err(format!("attribute '{other}' is not supported")),
        };
        Ok(Out::Alias(self.push_const(
            cx.out(),
            t,
            Origin::ConstantNode,
        )))
    }

    fn dropout(&mut self, cx: &NodeCx<'_>) -> NResult<Out> {
        cx.inputs(1, 3)?;
        cx.attrs(&["seed"])?;
        if let Some(name) = cx.input(2) {
            match self.const_of(name)? {
                Some(t) if t.numel() == 1 && t.data.get_f64(0) == 0.0 => {}
                Some(t) if t.numel() == 1 => {
                    return Err(
                        "training_mode is true; the importer translates inference graphs, where dropout is the identity"
                            .into(),
                    );
                }
                _ => return Err("input 'training_mode' must be a constant scalar".into()),
            }
        }
        let x = self.val(cx.req(0, "data")?)?;
        Ok(Out::Alias(x))
    }
}
