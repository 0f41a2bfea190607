//! Shape and type inference: the result type of every op from its operand types and
//! attributes, with symbolic dimensions (a symbolic dimension only equals itself; 1
//! broadcasts against anything).
//!
//! `infer` never panics: arity, attribute presence and ranges are all checked here, so the
//! verifier can call it on any graph the reader produced. Messages are lowercase, without a
//! final period, and name the operand or attribute at fault.

use crate::attr::Attr;
use crate::graph::Inst;
use crate::ops::Op;
use crate::types::{Dim, ElemType, QuantType, Shape, Type};

type R<T> = Result<T, String>;

/// Infers the result type of `inst` applied to operands of types `tys`. For ops whose
/// result carries quantization parameters ([`Op::result_type_is_written`]) the element type
/// comes from `written` and only its shape is inferred and checked.
pub fn infer(inst: &Inst, tys: &[&Type], written: Option<&Type>) -> R<Type> {
    let op = inst.op;
    let info = op.info();
    let (min, max) = info.arity();
    if tys.len() < min || max.is_some_and(|m| tys.len() > m) {
        let expected = match max {
            Some(m) if m == min => format!("{min}"),
            Some(m) => format!("{min} to {m}"),
            None => format!("at least {min}"),
        };
        return Err(format!(
            "expects {expected} operand{} ({}), found {}",
            if max == Some(1) { "" } else { "s" },
            info.operands,
            tys.len()
        ));
    }
    if let Some(missing) = inst.missing_required().first() {
        return Err(format!("missing required attribute '{missing}'"));
    }
    let a = Ctx { inst, tys };
    let ty = infer_op(&a, op)?;
    if op.result_type_is_written() {
        let Some(w) = written else {
            return Err(
                "the result type must be written (it carries the quantization parameters)".into(),
            );
        };
        if w.elem.quant().is_none() {
            return Err(format!("result type must be quantized, found {}", w.elem));
        }
        if w.shape != ty.shape {
            return Err(format!(
                "result shape {} does not match the inferred shape {}",
                w.shape, ty.shape
            ));
        }
        return Ok(w.clone());
    }
    Ok(ty)
}

struct Ctx<'a> {
    inst: &'a Inst,
    tys: &'a [&'a Type],
}

impl Ctx<'_> {
    fn ty(&self, i: usize) -> &Type {
        self.tys[i]
    }
    fn opt(&self, i: usize) -> Option<&Type> {
        self.tys.get(i).copied()
    }
    fn name(&self, i: usize) -> &'static str {
        self.inst
            .op
            .info()
            .operand_names()
            .nth(i)
            .or_else(|| self.inst.op.info().operand_names().last())
            .map(|n| n.trim_end_matches(['?', '.']))
            .unwrap_or("operand")
    }
    fn float(&self, i: usize) -> R<&Type> {
        let t = self.ty(i);
        if t.elem.is_float() {
            Ok(t)
        } else {
            Err(format!(
                "operand '{}' must be f32 or f64, found {t}",
                self.name(i)
            ))
        }
    }
    fn rank(&self, i: usize, r: usize) -> R<&Type> {
        let t = self.ty(i);
        if t.rank() == r {
            Ok(t)
        } else {
            Err(format!(
                "operand '{}' must have rank {r}, found {t}",
                self.name(i)
            ))
        }
    }
    fn same_elem(&self, i: usize, j: usize) -> R<()> {
        if self.ty(i).elem == self.ty(j).elem {
            Ok(())
        } else {
            Err(format!(
                "operands '{}' ({}) and '{}' ({}) have different element types",
                self.name(i),
                self.ty(i).elem,
                self.name(j),
                self.ty(j).elem
            ))
        }
    }
    fn same_type(&self, i: usize, j: usize) -> R<()> {
        if self.ty(i) == self.ty(j) {
            Ok(())
        } else {
            Err(format!(
                "operands '{}' ({}) and '{}' ({}) must have the same type",
                self.name(i),
                self.ty(i),
                self.name(j),
                self.ty(j)
            ))
        }
    }
    fn int(&self, name: &str) -> R<i64> {
        self.inst
            .int(name)
            .ok_or_else(|| format!("missing attribute '{name}'"))
    }
    fn ints(&self, name: &str, len: usize, min: i64) -> R<Vec<i64>> {
        let v = self
            .inst
            .ints(name)
            .ok_or_else(|| format!("missing attribute '{name}'"))?;
        if v.len() != len {
            return Err(format!(
                "attribute '{name}' must have {len} entries, found {}",
                v.len()
            ));
        }
        if let Some(bad) = v.iter().find(|&&x| x < min) {
            return Err(format!(
                "attribute '{name}' entries must be >= {min}, found {bad}"
            ));
        }
        Ok(v)
    }
    fn axes(&self, t: &Type) -> R<Vec<usize>> {
        let axes = self.inst.ints("axes").unwrap_or_default();
        let mut out = Vec::new();
        for a in axes {
            let ax = t
                .shape
                .axis(a)
                .ok_or_else(|| format!("axis {a} is out of range for {t}"))?;
            if out.contains(&ax) {
                return Err(format!("axis {a} is listed twice"));
            }
            out.push(ax);
        }
        if out.is_empty() {
            return Err("attribute 'axes' must name at least one axis".into());
        }
        Ok(out)
    }
    fn axis_attr(&self, t: &Type, name: &str) -> R<usize> {
        let a = self.int(name)?;
        t.shape
            .axis(a)
            .ok_or_else(|| format!("attribute '{name}' = {a} is out of range for {t}"))
    }
    fn qrange(&self) -> R<(i64, i64)> {
        let (lo, hi) = (self.int("qmin")?, self.int("qmax")?);
        if lo >= hi {
            return Err(format!("quantized range is empty: qmin {lo} >= qmax {hi}"));
        }
        if lo < i32::MIN as i64 || hi > i32::MAX as i64 {
            return Err(format!(
                "quantized range [{lo}, {hi}] does not fit in 32 bits"
            ));
        }
        Ok((lo, hi))
    }
    fn quant(&self, i: usize) -> R<&QuantType> {
        self.ty(i).elem.quant().ok_or_else(|| {
            format!(
                "operand '{}' must be quantized, found {}",
                self.name(i),
                self.ty(i)
            )
        })
    }
}

fn dims_equal(a: &Dim, b: &Dim) -> bool {
    a == b
}

/// NumPy broadcasting of two shapes.
pub fn broadcast(a: &Shape, b: &Shape) -> R<Shape> {
    let r = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = (i + a.rank()).checked_sub(r).map(|k| &a.0[k]);
        let db = (i + b.rank()).checked_sub(r).map(|k| &b.0[k]);
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if dims_equal(x, y) => x.clone(),
            (Some(Dim::Fixed(1)), Some(y)) => y.clone(),
            (Some(x), Some(Dim::Fixed(1))) => x.clone(),
            (Some(x), Some(y)) => {
                return Err(format!("shapes {a} and {b} do not broadcast ({x} vs {y})"));
            }
            (None, None) => unreachable!("i < max rank"),
        };
        out.push(d);
    }
    Ok(Shape(out))
}

fn fixed(d: &Dim, what: &str) -> R<u64> {
    d.fixed()
        .ok_or_else(|| format!("{what} must be a fixed size, found symbolic '{d}'"))
}

/// Output size of one spatial dimension of a convolution or pooling window.
pub fn window_out(input: u64, k: u64, stride: u64, pad: u64, dil: u64) -> Option<u64> {
    let span = dil.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = input.checked_add(pad)?;
    if padded < span || stride == 0 {
        return None;
    }
    Some((padded - span) / stride + 1)
}

/// Conv/pool geometry read from attributes: (stride, padding [t, l, b, r], dilation).
struct Window {
    k: [u64; 2],
    stride: [u64; 2],
    pad: [u64; 4],
    dil: [u64; 2],
}

impl Window {
    fn out(&self, h: u64, w: u64) -> R<(u64, u64)> {
        let oh = window_out(
            h,
            self.k[0],
            self.stride[0],
            self.pad[0] + self.pad[2],
            self.dil[0],
        );
        let ow = window_out(
            w,
            self.k[1],
            self.stride[1],
            self.pad[1] + self.pad[3],
            self.dil[1],
        );
        match (oh, ow) {
            (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok((oh, ow)),
            _ => Err(format!(
                "window {}x{} does not fit the {h}x{w} input with this padding",
                self.k[0], self.k[1]
            )),
        }
    }
}

fn u2(v: &[i64]) -> [u64; 2] {
    [v[0] as u64, v[1] as u64]
}

fn conv_window(a: &Ctx, k: [u64; 2]) -> R<Window> {
    let stride = a.ints("stride", 2, 1)?;
    let pad = a.ints("padding", 4, 0)?;
    let dil = a.ints("dilation", 2, 1)?;
    Ok(Window {
        k,
        stride: u2(&stride),
        pad: [pad[0] as u64, pad[1] as u64, pad[2] as u64, pad[3] as u64],
        dil: u2(&dil),
    })
}

fn pool_window(a: &Ctx) -> R<Window> {
    let k = a.ints("kernel", 2, 1)?;
    let stride = match a.inst.get("stride") {
        Some(_) => a.ints("stride", 2, 1)?,
        None => k.clone(),
    };
    let pad = a.ints("padding", 4, 0)?;
    for (i, &p) in pad.iter().enumerate() {
        if p as u64 * 2 > k[i % 2] as u64 {
            return Err(format!(
                "padding {p} is more than half the kernel size {}",
                k[i % 2]
            ));
        }
    }
    Ok(Window {
        k: u2(&k),
        stride: u2(&stride),
        pad: [pad[0] as u64, pad[1] as u64, pad[2] as u64, pad[3] as u64],
        dil: [1, 1],
    })
}

/// Checks a conv's operands; returns (input type, groups, out channels, kernel).
fn conv_shapes(a: &Ctx, xi: usize, wi: usize) -> R<(u64, u64, [u64; 2])> {
    let x = a.rank(xi, 4)?;
    let w = a.rank(wi, 4)?;
    let groups = a.int("groups")?;
    if groups < 1 {
        return Err(format!("attribute 'groups' must be >= 1, found {groups}"));
    }
    let groups = groups as u64;
    let c = fixed(&x.shape.0[1], "the input channel dimension")?;
    let o = fixed(&w.shape.0[0], "the output channel dimension")?;
    let cg = fixed(&w.shape.0[1], "the weight's input channel dimension")?;
    if c % groups != 0 || o % groups != 0 {
        return Err(format!(
            "groups = {groups} must divide the input channels ({c}) and output channels ({o})"
        ));
    }
    if c / groups != cg {
        return Err(format!(
            "weight {w} expects {} input channels per group, the input has {c} channels in {groups} group(s)",
            cg
        ));
    }
    let kh = fixed(&w.shape.0[2], "the kernel height")?;
    let kw = fixed(&w.shape.0[3], "the kernel width")?;
    Ok((groups, o, [kh, kw]))
}

fn conv_out(a: &Ctx, xi: usize, wi: usize) -> R<Shape> {
    let (_, o, k) = conv_shapes(a, xi, wi)?;
    let x = a.ty(xi);
    let win = conv_window(a, k)?;
    let h = fixed(&x.shape.0[2], "the input height")?;
    let w = fixed(&x.shape.0[3], "the input width")?;
    let (oh, ow) = win.out(h, w)?;
    Ok(Shape(vec![
        x.shape.0[0].clone(),
        Dim::Fixed(o),
        Dim::Fixed(oh),
        Dim::Fixed(ow),
    ]))
}

fn check_bias(a: &Ctx, bi: usize, channels: &Dim, elem: &ElemType) -> R<()> {
    if let Some(b) = a.opt(bi)
        && (b.rank() != 1 || !dims_equal(&b.shape.0[0], channels) || &b.elem != elem)
    {
        return Err(format!("bias must be {elem}[{channels}], found {b}"));
    }
    Ok(())
}

fn reduce_shape(t: &Type, axes: &[usize], keepdims: bool) -> Shape {
    Shape(
        t.shape
            .0
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                if axes.contains(&i) {
                    keepdims.then_some(Dim::Fixed(1))
                } else {
                    Some(d.clone())
                }
            })
            .collect(),
    )
}

/// Channel-parameter check for batch-norm style ops: operand `i` must be `[C]` of x's type.
fn per_channel(a: &Ctx, i: usize, x: &Type) -> R<()> {
    let t = a.ty(i);
    if x.rank() < 2 {
        return Err(format!("operand 'x' must have rank >= 2, found {x}"));
    }
    if t.rank() != 1 || !dims_equal(&t.shape.0[0], &x.shape.0[1]) || t.elem != x.elem {
        return Err(format!(
            "operand '{}' must be {}[{}], found {t}",
            a.name(i),
            x.elem,
            x.shape.0[1]
        ));
    }
    Ok(())
}

/// Checks the (scale, zero point) pair of a fake-quant op against x.
fn qparam_operands(a: &Ctx, x: &Type, si: usize, zi: usize, zp_float: bool) -> R<()> {
    a.qrange()?;
    let s = a.ty(si);
    if s.elem != x.elem {
        return Err(format!("scale must be {}, found {s}", x.elem));
    }
    let z = a.ty(zi);
    let zp_ok = if zp_float {
        z.elem == x.elem
    } else {
        z.elem == ElemType::I32
    };
    if !zp_ok || z.shape != s.shape {
        let want = if zp_float {
            x.elem.to_string()
        } else {
            "i32".into()
        };
        return Err(format!(
            "zero_point must be {want}{} like the scale, found {z}",
            s.shape
        ));
    }
    per_axis_param(a, x, s)
}

/// A scale-like operand is a scalar (no `axis`) or a vector of size x[axis].
fn per_axis_param(a: &Ctx, x: &Type, s: &Type) -> R<()> {
    match (s.rank(), a.inst.int("axis")) {
        (0, None) => Ok(()),
        (0, Some(_)) => Err("a per-tensor scale must not have an 'axis'".into()),
        (1, Some(_)) => {
            let ax = a.axis_attr(x, "axis")?;
            if dims_equal(&s.shape.0[0], &x.shape.0[ax]) {
                Ok(())
            } else {
                Err(format!(
                    "per-channel parameters {s} do not match dimension {ax} of {x}"
                ))
            }
        }
        (1, None) => Err("per-channel parameters need an 'axis'".into()),
        _ => Err(format!(
            "quantization parameters must be a scalar or a vector, found {s}"
        )),
    }
}

fn concat_shape(a: &Ctx) -> R<Shape> {
    let first = a.ty(0);
    let ax = a.axis_attr(first, "axis")?;
    let mut total: Option<u64> = Some(0);
    for (i, t) in a.tys.iter().enumerate() {
        if t.rank() != first.rank() {
            return Err(format!(
                "input {i} has rank {}, expected {}",
                t.rank(),
                first.rank()
            ));
        }
        for (d, (x, y)) in t.shape.0.iter().zip(&first.shape.0).enumerate() {
            if d != ax && !dims_equal(x, y) {
                return Err(format!(
                    "input {i} has shape {}, which differs from {} outside axis {ax}",
                    t.shape, first.shape
                ));
            }
        }
        total = match (total, t.shape.0[ax].fixed()) {
            (Some(acc), Some(n)) => Some(
                acc.checked_add(n)
                    .ok_or_else(|| format!("the concatenated dimension {ax} is too large"))?,
            ),
            _ => None,
        };
    }
    let mut dims = first.shape.0.clone();
    dims[ax] = match total {
        Some(n) => Dim::Fixed(n),
        None if a.tys.len() == 1 => first.shape.0[ax].clone(),
        None => return Err("cannot concatenate along a symbolic dimension".into()),
    };
    Ok(Shape(dims))
}

fn reshape_shape(x: &Type, target: &[i64]) -> R<Shape> {
    let (have_fixed, have_syms) = x
        .shape
        .split_numel()
        .ok_or_else(|| "the input has too many elements".to_string())?;
    let mut known: u64 = 1;
    let mut infer_at = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer_at.is_none() => infer_at = Some(i),
            -1 => return Err("attribute 'shape' may contain -1 only once".into()),
            d if d >= 1 => {
                known = known
                    .checked_mul(d as u64)
                    .ok_or_else(|| "attribute 'shape' is too large".to_string())?
            }
            d => {
                return Err(format!(
                    "attribute 'shape' entries must be >= 1 or -1, found {d}"
                ));
            }
        }
    }
    let mut dims: Vec<Dim> = target
        .iter()
        .map(|&d| Dim::Fixed(d.max(0) as u64))
        .collect();
    match infer_at {
        None => {
            if !have_syms.is_empty() || known != have_fixed {
                return Err(format!(
                    "cannot reshape {} to {:?}: element counts differ",
                    x.shape, target
                ));
            }
        }
        Some(i) => {
            if have_fixed % known != 0 {
                return Err(format!(
                    "cannot reshape {} to {:?}: element counts differ",
                    x.shape, target
                ));
            }
            let rest = have_fixed / known;
            dims[i] = match have_syms.len() {
                0 => Dim::Fixed(rest),
                1 if rest == 1 => Dim::Sym(have_syms[0].clone()),
                _ => {
                    return Err(format!(
                        "cannot infer the -1 of {target:?} from {}",
                        x.shape
                    ));
                }
            };
        }
    }
    Ok(Shape(dims))
}

fn infer_op(a: &Ctx, op: Op) -> R<Type> {
    match op {
        Op::Linear => {
            let x = a.float(0)?;
            a.rank(0, 2)?;
            let w = a.rank(1, 2)?;
            a.same_elem(0, 1)?;
            if !dims_equal(&x.shape.0[1], &w.shape.0[1]) {
                return Err(format!(
                    "input features {} do not match the weight {w} (expected [M, {}])",
                    x.shape.0[1], x.shape.0[1]
                ));
            }
            check_bias(a, 2, &w.shape.0[0], &x.elem)?;
            Ok(x.with_shape(Shape(vec![x.shape.0[0].clone(), w.shape.0[0].clone()])))
        }
        Op::Matmul => {
            let x = a.float(0)?;
            a.rank(0, 2)?;
            let y = a.rank(1, 2)?;
            a.same_elem(0, 1)?;
            let (ta, tb) = (
                a.inst.boolean("transpose_a").unwrap_or(false),
                a.inst.boolean("transpose_b").unwrap_or(false),
            );
            let (m, k1) = if ta { (1, 0) } else { (0, 1) };
            let (k2, n) = if tb { (1, 0) } else { (0, 1) };
            if !dims_equal(&x.shape.0[k1], &y.shape.0[k2]) {
                return Err(format!(
                    "contraction dimensions differ: {} vs {}",
                    x.shape.0[k1], y.shape.0[k2]
                ));
            }
            Ok(x.with_shape(Shape(vec![x.shape.0[m].clone(), y.shape.0[n].clone()])))
        }
        Op::Conv2d => {
            let x = a.float(0)?;
            a.same_elem(0, 1)?;
            let s = conv_out(a, 0, 1)?;
            check_bias(a, 2, &a.ty(1).shape.0[0], &x.elem)?;
            Ok(x.with_shape(s))
        }
        Op::MaxPool2d | Op::AvgPool2d => {
            let x = a.rank(0, 4)?;
            if op == Op::AvgPool2d {
                a.float(0)?;
            }
            let win = pool_window(a)?;
            let h = fixed(&x.shape.0[2], "the input height")?;
            let w = fixed(&x.shape.0[3], "the input width")?;
            let (oh, ow) = win.out(h, w)?;
            let mut d = x.shape.0.clone();
            d[2] = Dim::Fixed(oh);
            d[3] = Dim::Fixed(ow);
            Ok(x.with_shape(Shape(d)))
        }
        Op::GlobalAvgPool => {
            let x = a.float(0)?;
            a.rank(0, 4)?;
            let mut d = x.shape.0.clone();
            d[2] = Dim::Fixed(1);
            d[3] = Dim::Fixed(1);
            Ok(x.with_shape(Shape(d)))
        }
        Op::BatchNorm => {
            let x = a.float(0)?;
            for i in 1..5 {
                per_channel(a, i, x)?;
            }
            Ok(x.clone())
        }
        Op::BatchNormTrain => {
            let x = a.float(0)?;
            for i in 1..3 {
                per_channel(a, i, x)?;
            }
            Ok(x.clone())
        }
        Op::Relu
        | Op::Relu6
        | Op::Sigmoid
        | Op::Tanh
        | Op::Gelu
        | Op::Neg
        | Op::Exp
        | Op::Log
        | Op::Sqrt => Ok(a.float(0)?.clone()),
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let x = a.float(0)?;
            a.same_elem(0, 1)?;
            Ok(x.with_shape(broadcast(&x.shape, &a.ty(1).shape)?))
        }
        Op::Reshape => {
            let x = a.ty(0);
            let target = a
                .inst
                .ints("shape")
                .ok_or_else(|| "missing attribute 'shape'".to_string())?;
            Ok(x.with_shape(reshape_shape(x, &target)?))
        }
        Op::Flatten => {
            let x = a.ty(0);
            let axis = a.int("axis")?;
            if axis < 0 || axis as usize > x.rank() {
                return Err(format!("attribute 'axis' = {axis} is out of range for {x}"));
            }
            let axis = axis as usize;
            let mut dims: Vec<Dim> = x.shape.0[..axis].to_vec();
            let mut n = 1u64;
            for d in &x.shape.0[axis..] {
                n = n
                    .checked_mul(fixed(d, "a flattened dimension")?)
                    .ok_or_else(|| "too many elements".to_string())?;
            }
            dims.push(Dim::Fixed(n));
            Ok(x.with_shape(Shape(dims)))
        }
        Op::Transpose => {
            let x = a.ty(0);
            let perm = a
                .inst
                .ints("perm")
                .ok_or_else(|| "missing attribute 'perm'".to_string())?;
            let mut seen = vec![false; x.rank()];
            if perm.len() != x.rank() {
                return Err(format!("attribute 'perm' must have {} entries", x.rank()));
            }
            let mut dims = Vec::new();
            for &p in &perm {
                if p < 0 || p as usize >= x.rank() || seen[p as usize] {
                    return Err(format!("attribute 'perm' = {perm:?} is not a permutation"));
                }
                seen[p as usize] = true;
                dims.push(x.shape.0[p as usize].clone());
            }
            Ok(x.with_shape(Shape(dims)))
        }
        Op::Concat => {
            let first = a.ty(0);
            for i in 1..a.tys.len() {
                if a.ty(i).elem != first.elem {
                    return Err(format!(
                        "input {i} has element type {}, expected {} (quantized inputs must share parameters; use qconcat to rescale)",
                        a.ty(i).elem,
                        first.elem
                    ));
                }
            }
            Ok(first.with_shape(concat_shape(a)?))
        }
        Op::Slice => {
            let x = a.ty(0);
            let ax = a.axis_attr(x, "axis")?;
            let (s, e) = (a.int("start")?, a.int("end")?);
            let d = fixed(&x.shape.0[ax], "the sliced dimension")?;
            if s < 0 || e <= s || e as u64 > d {
                return Err(format!("slice {s}..{e} is not inside 0..{d}"));
            }
            let mut dims = x.shape.0.clone();
            dims[ax] = Dim::Fixed((e - s) as u64);
            Ok(x.with_shape(Shape(dims)))
        }
        Op::ReduceSum | Op::ReduceMean | Op::Variance => {
            let x = a.float(0)?;
            let axes = a.axes(x)?;
            let keep = a.inst.boolean("keepdims").unwrap_or(false);
            Ok(x.with_shape(reduce_shape(x, &axes, keep)))
        }
        Op::Softmax | Op::LogSoftmax => {
            let x = a.float(0)?;
            a.axis_attr(x, "axis")?;
            Ok(x.clone())
        }
        Op::SoftmaxCrossEntropy => {
            let x = a.float(0)?;
            a.rank(0, 2)?;
            let l = a.rank(1, 1)?;
            if !matches!(l.elem, ElemType::I32 | ElemType::I64) {
                return Err(format!("labels must be i32 or i64, found {l}"));
            }
            if !dims_equal(&l.shape.0[0], &x.shape.0[0]) {
                return Err(format!("labels {l} do not match the batch of logits {x}"));
            }
            Ok(Type::scalar(x.elem.clone()))
        }
        Op::Argmax => {
            let x = a.ty(0);
            let ax = a.axis_attr(x, "axis")?;
            Ok(Type::new(ElemType::I64, reduce_shape(x, &[ax], false)))
        }
        Op::Ema => {
            let r = a.float(0)?;
            a.same_type(0, 1)?;
            let m = a.inst.float("momentum").unwrap_or(0.1);
            if !(0.0..=1.0).contains(&m) {
                return Err(format!("attribute 'momentum' must be in [0, 1], found {m}"));
            }
            Ok(r.clone())
        }
        Op::BroadcastLike => {
            let x = a.ty(0);
            let like = a.ty(1);
            let b = broadcast(&x.shape, &like.shape)?;
            if b != like.shape {
                return Err(format!("{} does not broadcast to {}", x.shape, like.shape));
            }
            Ok(x.with_shape(like.shape.clone()))
        }
        Op::SumToLike => {
            let x = a.float(0)?;
            let like = a.ty(1);
            let b = broadcast(&like.shape, &x.shape)?;
            if b != x.shape {
                return Err(format!("{} cannot be summed to {}", x.shape, like.shape));
            }
            Ok(x.with_shape(like.shape.clone()))
        }
        Op::FakeQuant | Op::FakeQuantLsq => {
            let x = a.float(0)?;
            qparam_operands(a, x, 1, 2, op == Op::FakeQuantLsq)?;
            if let Some(gs) = a.inst.float("grad_scale")
                && !(gs.is_finite() && gs > 0.0)
            {
                return Err(format!(
                    "attribute 'grad_scale' must be positive, found {gs}"
                ));
            }
            Ok(x.clone())
        }
        Op::ObserveMin | Op::ObserveMax => {
            let x = a.float(0)?;
            let r = a.ty(1);
            if r.elem != x.elem {
                return Err(format!("running range must be {}, found {r}", x.elem));
            }
            per_axis_param(a, x, r)?;
            if let Some(c) = a.inst.float("averaging")
                && !(c > 0.0 && c <= 1.0)
            {
                return Err(format!(
                    "attribute 'averaging' must be in (0, 1], found {c}"
                ));
            }
            Ok(r.clone())
        }
        Op::QparamsScale | Op::QparamsZeroPoint => {
            a.qrange()?;
            let mn = a.float(0)?;
            a.same_type(0, 1)?;
            if mn.rank() > 1 {
                return Err(format!(
                    "the range must be a scalar or a vector, found {mn}"
                ));
            }
            Ok(if op == Op::QparamsScale {
                mn.clone()
            } else {
                mn.with_elem(ElemType::I32)
            })
        }
        Op::Quantize => Ok(a.float(0)?.clone()),
        Op::Dequantize => {
            a.quant(0)?;
            Ok(a.ty(0).with_elem(ElemType::F32))
        }
        Op::Requantize => {
            let x = a.ty(0);
            if x.elem != ElemType::I32 && x.elem.quant().is_none() {
                return Err(format!(
                    "operand 'x' must be i32 accumulators or quantized, found {x}"
                ));
            }
            let m = a.inst.ints("multiplier").unwrap_or_default();
            let s = a.inst.ints("shift").unwrap_or_default();
            if m.is_empty() || m.len() != s.len() {
                return Err(format!(
                    "'multiplier' and 'shift' must have the same non-zero length, found {} and {}",
                    m.len(),
                    s.len()
                ));
            }
            if let Some(bad) = m.iter().find(|&&v| !(0..=i32::MAX as i64).contains(&v)) {
                return Err(format!(
                    "multiplier {bad} is not a Q0.31 value in [0, 2^31)"
                ));
            }
            if let Some(bad) = s.iter().find(|&&v| !(-31..=62).contains(&v)) {
                return Err(format!("shift {bad} is outside [-31, 62]"));
            }
            match a.inst.int("axis") {
                Some(_) => {
                    let ax = a.axis_attr(x, "axis")?;
                    let c = fixed(&x.shape.0[ax], "the channel dimension")?;
                    if m.len() as u64 != c {
                        return Err(format!("{} multipliers for {c} channels", m.len()));
                    }
                }
                None if m.len() != 1 => {
                    return Err("several multipliers need an 'axis'".into());
                }
                None => {}
            }
            Ok(x.clone())
        }
        Op::Qlinear => {
            let x = a.rank(0, 2)?;
            let w = a.rank(1, 2)?;
            a.quant(0)?;
            a.quant(1)?;
            if !dims_equal(&x.shape.0[1], &w.shape.0[1]) {
                return Err(format!(
                    "input features {} do not match the weight {w}",
                    x.shape.0[1]
                ));
            }
            check_bias(a, 2, &w.shape.0[0], &ElemType::I32)?;
            Ok(Type::new(
                ElemType::I32,
                Shape(vec![x.shape.0[0].clone(), w.shape.0[0].clone()]),
            ))
        }
        Op::Qconv2d => {
            a.quant(0)?;
            a.quant(1)?;
            let s = conv_out(a, 0, 1)?;
            check_bias(a, 2, &a.ty(1).shape.0[0], &ElemType::I32)?;
            Ok(Type::new(ElemType::I32, s))
        }
        Op::Qadd => {
            a.quant(0)?;
            a.quant(1)?;
            Ok(a.ty(0)
                .with_shape(broadcast(&a.ty(0).shape, &a.ty(1).shape)?))
        }
        Op::Qconcat => {
            for i in 0..a.tys.len() {
                a.quant(i)?;
            }
            Ok(a.ty(0).with_shape(concat_shape(a)?))
        }
        Op::QglobalAvgPool => {
            a.quant(0)?;
            let x = a.rank(0, 4)?;
            let mut d = x.shape.0.clone();
            d[2] = Dim::Fixed(1);
            d[3] = Dim::Fixed(1);
            Ok(x.with_shape(Shape(d)))
        }
        Op::ReluGrad
        | Op::Relu6Grad
        | Op::SigmoidGrad
        | Op::TanhGrad
        | Op::GeluGrad
        | Op::SoftmaxGrad
        | Op::LogSoftmaxGrad => {
            a.float(0)?;
            a.same_type(0, 1)?;
            if matches!(op, Op::SoftmaxGrad | Op::LogSoftmaxGrad) {
                a.axis_attr(a.ty(1), "axis")?;
            }
            Ok(a.ty(1).clone())
        }
        Op::Conv2dGradInput => {
            let dy = a.float(0)?;
            a.rank(0, 4)?;
            a.same_elem(0, 1)?;
            let w = a.rank(1, 4)?;
            let size = a.ints("input_size", 2, 1)?;
            let groups = a.int("groups")?;
            if groups < 1 {
                return Err(format!("attribute 'groups' must be >= 1, found {groups}"));
            }
            let cg = fixed(&w.shape.0[1], "the weight's input channel dimension")?;
            let k = [
                fixed(&w.shape.0[2], "the kernel height")?,
                fixed(&w.shape.0[3], "the kernel width")?,
            ];
            let win = conv_window(a, k)?;
            let (oh, ow) = win.out(size[0] as u64, size[1] as u64)?;
            let expect = [Dim::Fixed(oh), Dim::Fixed(ow)];
            if dy.shape.0[2..] != expect || !dims_equal(&dy.shape.0[1], &w.shape.0[0]) {
                return Err(format!(
                    "dy {dy} does not match a convolution of weight {w} over a {}x{} input",
                    size[0], size[1]
                ));
            }
            Ok(dy.with_shape(Shape(vec![
                dy.shape.0[0].clone(),
                Dim::Fixed(cg * groups as u64),
                Dim::Fixed(size[0] as u64),
                Dim::Fixed(size[1] as u64),
            ])))
        }
        Op::Conv2dGradWeight => {
            let dy = a.float(0)?;
            a.rank(0, 4)?;
            a.same_elem(0, 1)?;
            let x = a.rank(1, 4)?;
            let k = a.ints("kernel", 2, 1)?;
            let groups = a.int("groups")?;
            if groups < 1 {
                return Err(format!("attribute 'groups' must be >= 1, found {groups}"));
            }
            let c = fixed(&x.shape.0[1], "the input channel dimension")?;
            let o = fixed(&dy.shape.0[1], "the output channel dimension")?;
            let g = groups as u64;
            if c % g != 0 || o % g != 0 {
                return Err(format!("groups = {g} must divide {c} and {o}"));
            }
            let win = conv_window(a, u2(&k))?;
            let (oh, ow) = win.out(
                fixed(&x.shape.0[2], "the input height")?,
                fixed(&x.shape.0[3], "the input width")?,
            )?;
            if dy.shape.0[2..] != [Dim::Fixed(oh), Dim::Fixed(ow)]
                || !dims_equal(&dy.shape.0[0], &x.shape.0[0])
            {
                return Err(format!("dy {dy} does not match a convolution over x {x}"));
            }
            Ok(dy.with_shape(Shape::fixed(&[o, c / g, k[0] as u64, k[1] as u64])))
        }
        Op::MaxPool2dGrad => {
            let dy = a.float(0)?;
            a.same_elem(0, 1)?;
            let x = a.rank(1, 4)?;
            let win = pool_window(a)?;
            let (oh, ow) = win.out(
                fixed(&x.shape.0[2], "the input height")?,
                fixed(&x.shape.0[3], "the input width")?,
            )?;
            let mut expect = x.shape.0.clone();
            expect[2] = Dim::Fixed(oh);
            expect[3] = Dim::Fixed(ow);
            if dy.shape.0 != expect {
                return Err(format!("dy {dy} does not match pooling of x {x}"));
            }
            Ok(x.clone())
        }
        Op::AvgPool2dGrad | Op::GlobalAvgPoolGrad => {
            let dy = a.float(0)?;
            a.rank(0, 4)?;
            let size = a.ints("input_size", 2, 1)?;
            let (oh, ow) = if op == Op::AvgPool2dGrad {
                pool_window(a)?.out(size[0] as u64, size[1] as u64)?
            } else {
                (1, 1)
            };
            if dy.shape.0[2..] != [Dim::Fixed(oh), Dim::Fixed(ow)] {
                return Err(format!(
                    "dy {dy} does not match pooling of a {}x{} input",
                    size[0], size[1]
                ));
            }
            let mut d = dy.shape.0.clone();
            d[2] = Dim::Fixed(size[0] as u64);
            d[3] = Dim::Fixed(size[1] as u64);
            Ok(dy.with_shape(Shape(d)))
        }
        Op::BatchNormGradInput => {
            let dy = a.float(0)?;
            per_channel(a, 1, dy)?;
            per_channel(a, 2, dy)?;
            Ok(dy.clone())
        }
        Op::BatchNormGradGamma => {
            let dy = a.float(0)?;
            a.same_type(0, 1)?;
            per_channel(a, 2, dy)?;
            per_channel(a, 3, dy)?;
            Ok(dy.with_shape(Shape(vec![dy.shape.0[1].clone()])))
        }
        Op::BatchNormTrainGradInput => {
            let dy = a.float(0)?;
            a.same_type(0, 1)?;
            per_channel(a, 2, dy)?;
            Ok(dy.clone())
        }
        Op::BatchNormTrainGradGamma => {
            let dy = a.float(0)?;
            a.same_type(0, 1)?;
            if dy.rank() < 2 {
                return Err(format!("operand 'dy' must have rank >= 2, found {dy}"));
            }
            Ok(dy.with_shape(Shape(vec![dy.shape.0[1].clone()])))
        }
        Op::ReduceMeanGrad | Op::VarianceGrad => {
            let dy = a.float(0)?;
            let x = a.ty(1);
            a.same_elem(0, 1)?;
            let axes = a.axes(x)?;
            let keep = a.inst.boolean("keepdims").unwrap_or(false);
            if dy.shape != reduce_shape(x, &axes, keep) {
                return Err(format!("dy {dy} does not match the reduction of x {x}"));
            }
            Ok(x.clone())
        }
        Op::SoftmaxCrossEntropyGrad => {
            let d = a.float(0)?;
            if d.rank() != 0 {
                return Err(format!("operand 'dloss' must be a scalar, found {d}"));
            }
            a.same_elem(0, 1)?;
            let x = a.rank(1, 2)?;
            let l = a.rank(2, 1)?;
            if !matches!(l.elem, ElemType::I32 | ElemType::I64)
                || !dims_equal(&l.shape.0[0], &x.shape.0[0])
            {
                return Err(format!("labels {l} do not match logits {x}"));
            }
            Ok(x.clone())
        }
        Op::FakeQuantGrad
        | Op::FakeQuantLsqGradX
        | Op::FakeQuantLsqGradScale
        | Op::FakeQuantLsqGradZeroPoint => {
            a.float(0)?;
            a.same_type(0, 1)?;
            let x = a.ty(1);
            qparam_operands(a, x, 2, 3, op != Op::FakeQuantGrad)?;
            Ok(match op {
                Op::FakeQuantLsqGradScale => a.ty(2).clone(),
                Op::FakeQuantLsqGradZeroPoint => a.ty(3).clone(),
                _ => x.clone(),
            })
        }
        Op::AllReduce => {
            // Float only: the mean divides, and the executors' communicators reduce f32/f64.
            Ok(a.float(0)?.clone())
        }
        Op::SgdUpdate => {
            let p = a.float(0)?;
            a.same_type(0, 1)?;
            scalar_like(a, 2, p)?;
            Ok(p.clone())
        }
        Op::SgdMomentum => {
            let b = a.float(0)?;
            a.same_type(0, 1)?;
            a.same_type(0, 2)?;
            Ok(b.clone())
        }
        Op::AdamMoment => {
            let m = a.float(0)?;
            a.same_type(0, 1)?;
            a.same_type(0, 2)?;
            let order = a.int("order")?;
            if order != 1 && order != 2 {
                return Err(format!("attribute 'order' must be 1 or 2, found {order}"));
            }
            Ok(m.clone())
        }
        Op::AdamUpdate => {
            let p = a.float(0)?;
            a.same_type(0, 1)?;
            a.same_type(0, 2)?;
            scalar_like(a, 3, p)?;
            scalar_like(a, 4, p)?;
            Ok(p.clone())
        }
    }
}

fn scalar_like(a: &Ctx, i: usize, p: &Type) -> R<()> {
    let t = a.ty(i);
    if t.rank() != 0 || t.elem != p.elem {
        return Err(format!(
            "operand '{}' must be {}[], found {t}",
            a.name(i),
            p.elem
        ));
    }
    Ok(())
}

/// Convenience for callers holding an [`Attr`] list (used by tests and builders).
pub fn inst_with(op: Op, attrs: &[(&str, Attr)]) -> Result<Inst, String> {
    let mut i = Inst::new(op);
    for (k, v) in attrs {
        i.set(k, v.clone())?;
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(dims: &[Dim]) -> Type {
        Type::f32(dims)
    }
    fn d(n: u64) -> Dim {
        Dim::Fixed(n)
    }
    fn b() -> Dim {
        Dim::Sym("B".into())
    }

    #[test]
    fn broadcasting() {
        let s = broadcast(&Shape(vec![b(), d(1), d(4)]), &Shape(vec![d(3), d(1)])).unwrap();
        assert_eq!(s.to_string(), "[B, 3, 4]");
        assert!(broadcast(&Shape(vec![b()]), &Shape(vec![d(3)])).is_err());
    }

    #[test]
    fn conv_and_pool() {
        let x = f(&[b(), d(1), d(28), d(28)]);
        let w = f(&[d(8), d(1), d(3), d(3)]);
        let i = inst_with(Op::Conv2d, &[("padding", Attr::Ints(vec![1, 1, 1, 1]))]).unwrap();
        assert_eq!(
            infer(&i, &[&x, &w], None).unwrap().to_string(),
            "f32[B, 8, 28, 28]"
        );
        let i = inst_with(Op::Conv2d, &[("stride", Attr::Ints(vec![2, 2]))]).unwrap();
        assert_eq!(
            infer(&i, &[&x, &w], None).unwrap().to_string(),
            "f32[B, 8, 13, 13]"
        );
        let p = inst_with(Op::MaxPool2d, &[("kernel", Attr::Ints(vec![2, 2]))]).unwrap();
        let y = f(&[b(), d(8), d(28), d(28)]);
        assert_eq!(
            infer(&p, &[&y], None).unwrap().to_string(),
            "f32[B, 8, 14, 14]"
        );
        // depthwise
        let dw = f(&[d(8), d(1), d(3), d(3)]);
        let i = inst_with(Op::Conv2d, &[("groups", Attr::Int(8))]).unwrap();
        assert_eq!(
            infer(&i, &[&y, &dw], None).unwrap().to_string(),
            "f32[B, 8, 26, 26]"
        );
        let i = Inst::new(Op::Conv2d);
        assert!(
            infer(&i, &[&y, &dw], None)
                .unwrap_err()
                .contains("input channels")
        );
    }

    #[test]
    fn reshape_with_symbolic_batch() {
        let x = f(&[b(), d(16), d(7), d(7)]);
        let i = inst_with(Op::Reshape, &[("shape", Attr::Ints(vec![-1, 784]))]).unwrap();
        assert_eq!(infer(&i, &[&x], None).unwrap().to_string(), "f32[B, 784]");
        let i = inst_with(Op::Reshape, &[("shape", Attr::Ints(vec![-1, 700]))]).unwrap();
        assert!(infer(&i, &[&x], None).is_err());
        let i = Inst::new(Op::Flatten);
        assert_eq!(infer(&i, &[&x], None).unwrap().to_string(), "f32[B, 784]");
    }

    #[test]
    fn arity_and_required_attrs() {
        let x = f(&[d(2)]);
        assert!(
            infer(&Inst::new(Op::Relu), &[], None)
                .unwrap_err()
                .contains("expects 1 operand")
        );
        assert!(
            infer(&Inst::new(Op::Reshape), &[&x], None)
                .unwrap_err()
                .contains("'shape'")
        );
    }

    #[test]
    fn fake_quant_params() {
        let x = f(&[b(), d(4)]);
        let s = f(&[]);
        let z = Type::scalar(ElemType::I32);
        let i = inst_with(
            Op::FakeQuant,
            &[("qmin", Attr::Int(-128)), ("qmax", Attr::Int(127))],
        )
        .unwrap();
        assert_eq!(infer(&i, &[&x, &s, &z], None).unwrap(), x);
        let sc = f(&[d(4)]);
        let zc = Type::new(ElemType::I32, Shape::fixed(&[4]));
        assert!(
            infer(&i, &[&x, &sc, &zc], None)
                .unwrap_err()
                .contains("axis")
        );
        let i = i.with("axis", 1i64).unwrap();
        assert!(infer(&i, &[&x, &sc, &zc], None).is_ok());
    }
}
