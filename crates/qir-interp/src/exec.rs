//! Evaluation of one op node: reads the operands and attributes, picks the kernel, and
//! returns the result tensor. The match on [`Op`] is exhaustive: a new op does not compile
//! until it has semantics here.
//!
//! Invariants: float operands arrive in the run's precision (the session converts inputs
//! and stored values on load), so a float kernel sees `&[T]` for the run's `T`; integer
//! and quantized operands arrive in their storage type. Every failure is a one-line
//! message; the session prefixes the node's name.

use qir::{Data, Inst, Op, QuantParams, Tensor, Type};

use crate::Precision;
use crate::kernels::contract::{self, ConvGeom};
use crate::kernels::elementwise::{self as ew, Act};
use crate::kernels::integer::{self, Multipliers, QOperand, QParams};
use crate::kernels::pool::{self, PoolGeom};
use crate::kernels::quant::{self, LsqGrad, Range};
use crate::kernels::{
    KResult, ftensor, int_values, norm, norm_axes, norm_axis, optim, reduce, reduced_shape,
    shape_ops, to_usize,
};
use crate::num::Float;
use qir::quant::{QparamRule, Rounding};
use qir_exec::Store;
use qir_exec::collective::{Buffer, ReduceOp, all_reduce};

/// Everything an op's evaluation can see.
pub(crate) struct Ctx<'a> {
    pub inst: &'a Inst,
    pub args: Vec<&'a Tensor>,
    pub arg_tys: Vec<&'a Type>,
    pub out_ty: &'a Type,
    pub store: &'a Store,
}

impl<'a> Ctx<'a> {
    fn op(&self) -> Op {
        self.inst.op
    }
    /// The name of operand `i` from the op table, for messages.
    fn name(&self, i: usize) -> &'static str {
        let info = self.op().info();
        info.operand_names()
            .nth(i)
            .or_else(|| info.operand_names().last())
            .map(|n| n.trim_end_matches(['?', '.']))
            .unwrap_or("operand")
    }
    fn arg(&self, i: usize) -> KResult<&'a Tensor> {
        self.args
            .get(i)
            .copied()
            .ok_or_else(|| format!("missing operand '{}'", self.name(i)))
    }
    fn shape(&self, i: usize) -> KResult<&'a [usize]> {
        Ok(&self.arg(i)?.shape)
    }
    fn f<T: Float>(&self, i: usize) -> KResult<&'a [T]> {
        let t = self.arg(i)?;
        T::slice(&t.data).ok_or_else(|| {
            format!(
                "operand '{}' holds {} data, expected {}",
                self.name(i),
                t.data.dtype(),
                T::NAME
            )
        })
    }
    fn opt_f<T: Float>(&self, i: usize) -> KResult<Option<&'a [T]>> {
        if i < self.args.len() {
            self.f(i).map(Some)
        } else {
            Ok(None)
        }
    }
    fn scalar<T: Float>(&self, i: usize) -> KResult<T> {
        match self.f::<T>(i)? {
            [v] => Ok(*v),
            v => Err(format!(
                "operand '{}' must be a scalar, found {} elements",
                self.name(i),
                v.len()
            )),
        }
    }
    fn ints_of(&self, i: usize) -> KResult<Vec<i64>> {
        let t = self.arg(i)?;
        int_values(&t.data).ok_or_else(|| {
            format!(
                "operand '{}' holds {} data, expected integers",
                self.name(i),
                t.data.dtype()
            )
        })
    }
    fn attr_missing(&self, name: &str) -> String {
        format!("missing attribute '{name}'")
    }
    fn int(&self, name: &str) -> KResult<i64> {
        self.inst.int(name).ok_or_else(|| self.attr_missing(name))
    }
    fn float(&self, name: &str) -> KResult<f64> {
        self.inst.float(name).ok_or_else(|| self.attr_missing(name))
    }
    fn boolean(&self, name: &str) -> bool {
        self.inst.boolean(name).unwrap_or(false)
    }
    fn usizes<const N: usize>(&self, name: &str, min: usize) -> KResult<[usize; N]> {
        let v = self
            .inst
            .ints(name)
            .ok_or_else(|| self.attr_missing(name))?;
        let mut out = [0usize; N];
        if v.len() != N {
            return Err(format!(
                "attribute '{name}' must have {N} entries, found {}",
                v.len()
            ));
        }
        for (o, &x) in out.iter_mut().zip(&v) {
            *o = to_usize(x, name)?;
            if *o < min {
                return Err(format!("attribute '{name}' entries must be >= {min}"));
            }
        }
        Ok(out)
    }
    fn act(&self) -> KResult<Act> {
        let s = self.inst.choice("act").unwrap_or("none");
        Act::from_name(s).ok_or_else(|| format!("unknown activation '{s}'"))
    }
    fn rounding(&self) -> KResult<Rounding> {
        let s = self
            .inst
            .choice("rounding")
            .ok_or_else(|| self.attr_missing("rounding"))?;
        Rounding::from_name(s).ok_or_else(|| format!("unknown rounding '{s}'"))
    }
    /// The optional `axis` attribute normalized against `rank`.
    fn opt_axis(&self, rank: usize) -> KResult<Option<usize>> {
        self.inst
            .int("axis")
            .map(|a| norm_axis(a, rank))
            .transpose()
    }
    fn axis(&self, rank: usize) -> KResult<usize> {
        norm_axis(self.int("axis")?, rank)
    }
    fn axes(&self, rank: usize) -> KResult<Vec<usize>> {
        let a = self
            .inst
            .ints("axes")
            .ok_or_else(|| self.attr_missing("axes"))?;
        norm_axes(&a, rank)
    }
    fn quant_range(&self, axis_rank: usize) -> KResult<Range> {
        Ok(Range {
            qmin: self.int("qmin")?,
            qmax: self.int("qmax")?,
            axis: self.opt_axis(axis_rank)?,
        })
    }
    /// Resolved parameters of a quantized type (per-axis references read the store).
    fn qparams(&self, ty: &Type) -> KResult<QParams> {
        let q = ty
            .elem
            .quant()
            .ok_or_else(|| format!("expected a quantized type, found {ty}"))?;
        let (axis, scales, zero_points) = match &q.params {
            QuantParams::PerTensor { scale, zero_point } => (None, vec![*scale], vec![*zero_point]),
            QuantParams::PerAxis {
                axis,
                scales,
                zero_points,
            } => (Some(*axis), scales.clone(), zero_points.clone()),
            QuantParams::PerAxisRef {
                axis,
                scales,
                zero_points,
            } => {
                let st = self
                    .store
                    .get(scales)
                    .ok_or_else(|| format!("quantization scales %{scales} are not in the store"))?;
                let sv: Vec<f32> = match &st.data {
                    Data::F32(v) => v.clone(),
                    Data::F64(v) => v.iter().map(|&x| x as f32).collect(),
                    d => return Err(format!("scales %{scales} hold {} data", d.dtype())),
                };
                let zv = match zero_points {
                    None => vec![0; sv.len()],
                    Some(z) => {
                        let zt = self
                            .store
                            .get(z)
                            .ok_or_else(|| format!("zero points %{z} are not in the store"))?;
                        int_values(&zt.data)
                            .ok_or_else(|| format!("zero points %{z} are not integers"))?
                    }
                };
                (Some(*axis), sv, zv)
            }
        };
        if scales.len() != zero_points.len() {
            return Err(format!(
                "{} scales but {} zero points in {ty}",
                scales.len(),
                zero_points.len()
            ));
        }
        if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("scale {bad} in {ty} is not positive"));
        }
        Ok(QParams {
            storage: q.storage,
            qmin: q.qmin,
            qmax: q.qmax,
            axis,
            scales,
            zero_points,
        })
    }
    fn arg_qparams(&self, i: usize) -> KResult<QParams> {
        let ty = self
            .arg_tys
            .get(i)
            .ok_or_else(|| format!("missing operand '{}'", self.name(i)))?;
        self.qparams(ty)
    }
    /// Operand `i` as centered integers with its parameters.
    fn centered(&self, i: usize) -> KResult<(Vec<i64>, QParams)> {
        let qp = self.arg_qparams(i)?;
        let v = integer::centered(&self.ints_of(i)?, self.shape(i)?, &qp)?;
        Ok((v, qp))
    }
    fn conv_geom(&self, x: [usize; 4], o: usize, k: [usize; 2]) -> KResult<ConvGeom> {
        let stride = self.usizes::<2>("stride", 1)?;
        let pad = self.usizes::<4>("padding", 0)?;
        let dil = self.usizes::<2>("dilation", 1)?;
        let groups = to_usize(self.int("groups")?, "groups")?;
        ConvGeom::new(x[0], x[1], [x[2], x[3]], o, k, stride, pad, dil, groups)
    }
    fn pool_geom(&self, x: [usize; 4]) -> KResult<PoolGeom> {
        let k = self.usizes::<2>("kernel", 1)?;
        let stride = match self.inst.ints("stride") {
            Some(_) => self.usizes::<2>("stride", 1)?,
            None => k,
        };
        let pad = self.usizes::<4>("padding", 0)?;
        PoolGeom::new(x, k, stride, pad)
    }
}

fn rank4(shape: &[usize], what: &str) -> KResult<[usize; 4]> {
    match shape {
        &[a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(format!("{what} must have rank 4, found shape {shape:?}")),
    }
}

fn rank2(shape: &[usize], what: &str) -> KResult<[usize; 2]> {
    match shape {
        &[a, b] => Ok([a, b]),
        _ => Err(format!("{what} must have rank 2, found shape {shape:?}")),
    }
}

/// Adds a per-channel bias over `[n, channels, inner]`.
fn add_bias<T: Float>(y: &mut [T], b: &[T], channels: usize, inner: usize) -> KResult<()> {
    if b.len() != channels {
        return Err(format!(
            "bias has {} values for {channels} channels",
            b.len()
        ));
    }
    if inner == 0 {
        return Ok(());
    }
    for (i, v) in y.iter_mut().enumerate() {
        *v += b[(i / inner) % channels];
    }
    Ok(())
}

macro_rules! ordered_data {
    ($data:expr, $v:ident => $body:expr, $err:expr) => {
        match $data {
            Data::F32($v) => Data::F32($body),
            Data::F64($v) => Data::F64($body),
            Data::I8($v) => Data::I8($body),
            Data::U8($v) => Data::U8($body),
            Data::I16($v) => Data::I16($body),
            Data::I32($v) => Data::I32($body),
            Data::I64($v) => Data::I64($body),
            Data::Bool(_) => return Err($err),
        }
    };
}

/// Evaluates one op in the run's precision.
pub(crate) fn eval(c: &Ctx, p: Precision) -> KResult<Tensor> {
    match p {
        Precision::F32 => eval_t::<f32>(c),
        Precision::F64 => eval_t::<f64>(c),
    }
}

fn unary<T: Float>(c: &Ctx, f: impl Fn(T) -> T) -> KResult<Tensor> {
    Ok(ftensor(c.shape(0)?.to_vec(), ew::map(c.f::<T>(0)?, f)))
}

fn grad_unary<T: Float>(c: &Ctx, f: impl Fn(T, T) -> T) -> KResult<Tensor> {
    let v = ew::zip(c.f::<T>(0)?, c.f::<T>(1)?, f)?;
    Ok(ftensor(c.shape(1)?.to_vec(), v))
}

fn binary<T: Float>(c: &Ctx, f: impl Fn(T, T) -> T) -> KResult<Tensor> {
    let (shape, mut v) = ew::binary(c.f::<T>(0)?, c.shape(0)?, c.f::<T>(1)?, c.shape(1)?, f)?;
    if c.op() == Op::Add {
        c.act()?.apply(&mut v);
    }
    Ok(ftensor(shape, v))
}

/// The LSQ gradients: dx elementwise, dscale and dzero_point summed per channel.
fn lsq_grad<T: Float>(c: &Ctx, which: LsqGrad) -> KResult<Tensor> {
    let shape = c.shape(1)?;
    let r = c.quant_range(shape.len())?;
    let (v, l) = quant::lsq_elements(
        which,
        c.f::<T>(0)?,
        c.f::<T>(1)?,
        shape,
        r,
        c.f::<T>(2)?,
        c.f::<T>(3)?,
        c.inst.float("grad_scale"),
        match c.inst.choice("zero_point_rounding") {
            Some("torch") => quant::ZpRounding::Torch,
            _ => quant::ZpRounding::Nearest,
        },
    )?;
    Ok(match which {
        LsqGrad::X => ftensor(shape.to_vec(), v),
        LsqGrad::Scale => ftensor(c.shape(2)?.to_vec(), quant::sum_channels(&v, l)),
        LsqGrad::ZeroPoint => ftensor(c.shape(3)?.to_vec(), quant::sum_channels(&v, l)),
    })
}

fn eval_t<T: Float>(c: &Ctx) -> KResult<Tensor> {
    let op = c.op();
    match op {
        // ---- contractions -----------------------------------------------------------
        Op::Linear => {
            let [n, k] = rank2(c.shape(0)?, "x")?;
            let [m, k2] = rank2(c.shape(1)?, "w")?;
            if k != k2 {
                return Err(format!("x has {k} features but w expects {k2}"));
            }
            let mut y = contract::gemm(c.f::<T>(0)?, c.f::<T>(1)?, n, k, m, false, true)?;
            if let Some(b) = c.opt_f::<T>(2)? {
                add_bias(&mut y, b, m, 1)?;
            }
            c.act()?.apply(&mut y);
            Ok(ftensor(vec![n, m], y))
        }
        Op::Matmul => {
            let (ta, tb) = (c.boolean("transpose_a"), c.boolean("transpose_b"));
            let [a0, a1] = rank2(c.shape(0)?, "a")?;
            let [b0, b1] = rank2(c.shape(1)?, "b")?;
            let (m, k) = if ta { (a1, a0) } else { (a0, a1) };
            let (k2, n) = if tb { (b1, b0) } else { (b0, b1) };
            if k != k2 {
                return Err(format!("contraction dimensions differ: {k} vs {k2}"));
            }
            let y = contract::gemm(c.f::<T>(0)?, c.f::<T>(1)?, m, k, n, ta, tb)?;
            Ok(ftensor(vec![m, n], y))
        }
        Op::Conv2d => {
            let x = rank4(c.shape(0)?, "x")?;
            let w = rank4(c.shape(1)?, "w")?;
            let g = c.conv_geom(x, w[0], [w[2], w[3]])?;
            if w[1] != g.cg() {
                return Err(format!(
                    "weight expects {} input channels per group, the input has {}",
                    w[1],
                    g.cg()
                ));
            }
            let mut y = contract::conv2d(c.f::<T>(0)?, c.f::<T>(1)?, &g)?;
            if let Some(b) = c.opt_f::<T>(2)? {
                add_bias(&mut y, b, g.o, g.oh * g.ow)?;
            }
            c.act()?.apply(&mut y);
            Ok(ftensor(vec![g.n, g.o, g.oh, g.ow], y))
        }

        // ---- pooling and normalization ----------------------------------------------
        Op::MaxPool2d => {
            let g = c.pool_geom(rank4(c.shape(0)?, "x")?)?;
            let data = ordered_data!(&c.arg(0)?.data, v => pool::max_pool2d(v, &g)?,
                "max_pool2d does not apply to bool data".to_string());
            Ok(Tensor {
                shape: vec![g.n, g.c, g.oh, g.ow],
                data,
            })
        }
        Op::AvgPool2d => {
            let g = c.pool_geom(rank4(c.shape(0)?, "x")?)?;
            let y = pool::avg_pool2d(c.f::<T>(0)?, &g, c.boolean("count_include_pad"))?;
            Ok(ftensor(vec![g.n, g.c, g.oh, g.ow], y))
        }
        Op::GlobalAvgPool => {
            let [n, ch, h, w] = rank4(c.shape(0)?, "x")?;
            let x = c.f::<T>(0)?;
            if x.len() != n * ch * h * w {
                return Err("data does not match its shape".into());
            }
            Ok(ftensor(
                vec![n, ch, 1, 1],
                pool::global_avg_pool(x, n * ch, h * w),
            ))
        }
        Op::BatchNorm => {
            let eps = T::from_f64(c.float("eps")?);
            let y = norm::batch_norm(
                c.f::<T>(0)?,
                c.shape(0)?,
                c.f::<T>(1)?,
                c.f::<T>(2)?,
                c.f::<T>(3)?,
                c.f::<T>(4)?,
                eps,
            )?;
            Ok(ftensor(c.shape(0)?.to_vec(), y))
        }
        Op::BatchNormTrain => {
            let eps = T::from_f64(c.float("eps")?);
            let y =
                norm::batch_norm_train(c.f::<T>(0)?, c.shape(0)?, c.f::<T>(1)?, c.f::<T>(2)?, eps)?;
            Ok(ftensor(c.shape(0)?.to_vec(), y))
        }

        // ---- elementwise ------------------------------------------------------------
        Op::Relu => unary::<T>(c, ew::relu),
        Op::Relu6 => unary::<T>(c, ew::relu6),
        Op::Sigmoid => unary::<T>(c, ew::sigmoid),
        Op::Tanh => unary::<T>(c, |x| x.tanh()),
        Op::Gelu => unary::<T>(c, ew::gelu),
        Op::Neg => unary::<T>(c, |x| -x),
        Op::Exp => unary::<T>(c, |x| x.exp()),
        Op::Log => unary::<T>(c, |x| x.ln()),
        Op::Sqrt => unary::<T>(c, |x| x.sqrt()),
        Op::Add => binary::<T>(c, |a, b| a + b),
        Op::Sub => binary::<T>(c, |a, b| a - b),
        Op::Mul => binary::<T>(c, |a, b| a * b),
        Op::Div => binary::<T>(c, |a, b| a / b),

        // ---- shape --------------------------------------------------------------------
        Op::Reshape => {
            let target = c
                .inst
                .ints("shape")
                .ok_or_else(|| c.attr_missing("shape"))?;
            shape_ops::reshape(c.arg(0)?, &target)
        }
        Op::Flatten => shape_ops::flatten(c.arg(0)?, to_usize(c.int("axis")?, "axis")?),
        Op::Transpose => {
            let perm = c.inst.ints("perm").ok_or_else(|| c.attr_missing("perm"))?;
            let perm = perm
                .iter()
                .map(|&p| to_usize(p, "perm"))
                .collect::<KResult<Vec<_>>>()?;
            shape_ops::transpose(c.arg(0)?, &perm)
        }
        Op::Concat => {
            let axis = c.axis(c.shape(0)?.len())?;
            shape_ops::concat(&c.args, axis)
        }
        Op::Slice => {
            let axis = c.axis(c.shape(0)?.len())?;
            let start = to_usize(c.int("start")?, "start")?;
            let end = to_usize(c.int("end")?, "end")?;
            shape_ops::slice(c.arg(0)?, axis, start, end)
        }

        // ---- reductions and losses ------------------------------------------------------
        Op::ReduceSum | Op::ReduceMean => {
            let shape = c.shape(0)?;
            let axes = c.axes(shape.len())?;
            let (_, sums, count) = reduce::sums(c.f::<T>(0)?, shape, &axes)?;
            let div = if op == Op::ReduceMean {
                count.max(1) as f64
            } else {
                1.0
            };
            let v = sums.into_iter().map(|s| T::from_f64(s / div)).collect();
            Ok(ftensor(
                reduced_shape(shape, &axes, c.boolean("keepdims")),
                v,
            ))
        }
        Op::Variance => {
            let shape = c.shape(0)?;
            let axes = c.axes(shape.len())?;
            let v = reduce::variance(c.f::<T>(0)?, shape, &axes)?;
            Ok(ftensor(
                reduced_shape(shape, &axes, c.boolean("keepdims")),
                v,
            ))
        }
        Op::Softmax | Op::LogSoftmax => {
            let shape = c.shape(0)?;
            let axis = c.axis(shape.len())?;
            let y = reduce::softmax(c.f::<T>(0)?, shape, axis, op == Op::LogSoftmax)?;
            Ok(ftensor(shape.to_vec(), y))
        }
        Op::SoftmaxCrossEntropy => {
            let [n, k] = rank2(c.shape(0)?, "logits")?;
            let mean = c.inst.choice("reduction") != Some("sum");
            let l = reduce::softmax_ce(c.f::<T>(0)?, n, k, &c.ints_of(1)?, mean)?;
            Ok(ftensor(Vec::new(), vec![l]))
        }
        Op::Argmax => {
            let shape = c.shape(0)?;
            let axis = c.axis(shape.len())?;
            let idx = match &c.arg(0)?.data {
                Data::F32(v) => reduce::argmax(v, shape, axis)?,
                Data::F64(v) => reduce::argmax(v, shape, axis)?,
                Data::I8(v) => reduce::argmax(v, shape, axis)?,
                Data::U8(v) => reduce::argmax(v, shape, axis)?,
                Data::I16(v) => reduce::argmax(v, shape, axis)?,
                Data::I32(v) => reduce::argmax(v, shape, axis)?,
                Data::I64(v) => reduce::argmax(v, shape, axis)?,
                Data::Bool(_) => return Err("argmax does not apply to bool data".into()),
            };
            Ok(Tensor {
                shape: reduced_shape(shape, &[axis], false),
                data: Data::I64(idx),
            })
        }
        Op::Ema => {
            let m = T::from_f64(c.float("momentum")?);
            let v = ew::zip(c.f::<T>(0)?, c.f::<T>(1)?, |r, v| (T::ONE - m) * r + m * v)?;
            Ok(ftensor(c.shape(0)?.to_vec(), v))
        }
        Op::BroadcastLike => shape_ops::broadcast_to(c.arg(0)?, c.shape(1)?),
        Op::SumToLike => {
            let like = c.shape(1)?;
            let v = shape_ops::sum_to(c.f::<T>(0)?, c.shape(0)?, like)?;
            Ok(ftensor(like.to_vec(), v))
        }

        // ---- fake quantization ------------------------------------------------------------
        Op::FakeQuant => {
            let shape = c.shape(0)?;
            let r = c.quant_range(shape.len())?;
            let y = quant::fake_quant(c.f::<T>(0)?, shape, r, c.f::<T>(1)?, &c.ints_of(2)?)?;
            Ok(ftensor(shape.to_vec(), y))
        }
        Op::FakeQuantLsq => {
            let shape = c.shape(0)?;
            let r = c.quant_range(shape.len())?;
            let y = quant::fake_quant_lsq(c.f::<T>(0)?, shape, r, c.f::<T>(1)?, c.f::<T>(2)?)?;
            Ok(ftensor(shape.to_vec(), y))
        }

        // ---- observers ----------------------------------------------------------------------
        Op::ObserveMin | Op::ObserveMax => {
            let shape = c.shape(0)?;
            let axis = c.opt_axis(shape.len())?;
            let v = quant::observe(
                c.f::<T>(0)?,
                shape,
                axis,
                c.f::<T>(1)?,
                op == Op::ObserveMin,
                c.inst.float("averaging"),
            )?;
            Ok(ftensor(c.shape(1)?.to_vec(), v))
        }
        Op::QparamsScale | Op::QparamsZeroPoint => {
            let rule = QparamRule {
                qmin: c.int("qmin")?,
                qmax: c.int("qmax")?,
                symmetric: c.boolean("symmetric"),
                power_of_two: c.boolean("power_of_two"),
                eps: c.float("eps")?,
            };
            if rule.qmin >= rule.qmax {
                return Err(format!("empty range [{}, {}]", rule.qmin, rule.qmax));
            }
            let (mn, mx) = (c.f::<T>(0)?, c.f::<T>(1)?);
            if mn.len() != mx.len() {
                return Err("min and max have different sizes".into());
            }
            let pairs: Vec<(T, i64)> = mn
                .iter()
                .zip(mx)
                .map(|(&a, &b)| T::qparams(a, b, rule))
                .collect();
            let shape = c.shape(0)?.to_vec();
            if op == Op::QparamsScale {
                Ok(ftensor(shape, pairs.into_iter().map(|p| p.0).collect()))
            } else {
                Ok(Tensor {
                    shape,
                    data: Data::I32(pairs.into_iter().map(|p| p.1 as i32).collect()),
                })
            }
        }

        // ---- integer ops --------------------------------------------------------------------
        Op::Quantize => {
            let qp = c.qparams(c.out_ty)?;
            let data = integer::quantize(c.f::<T>(0)?, c.shape(0)?, &qp, c.rounding()?)?;
            Ok(Tensor {
                shape: c.shape(0)?.to_vec(),
                data,
            })
        }
        Op::Dequantize => {
            let qp = c.arg_qparams(0)?;
            let v = integer::dequantize::<T>(&c.ints_of(0)?, c.shape(0)?, &qp)?;
            Ok(ftensor(c.shape(0)?.to_vec(), v))
        }
        Op::Requantize => {
            let shape = c.shape(0)?;
            let x = match c.arg_tys.first().and_then(|t| t.elem.quant()) {
                Some(_) => c.centered(0)?.0,
                None => c.ints_of(0)?,
            };
            let m = Multipliers {
                multiplier: c
                    .inst
                    .ints("multiplier")
                    .ok_or_else(|| c.attr_missing("multiplier"))?,
                shift: c
                    .inst
                    .ints("shift")
                    .ok_or_else(|| c.attr_missing("shift"))?,
                axis: c.opt_axis(shape.len())?,
            };
            let out = c.qparams(c.out_ty)?;
            let data = integer::requantize(&x, shape, &m, &out, c.rounding()?, c.act()?)?;
            Ok(Tensor {
                shape: shape.to_vec(),
                data,
            })
        }
        Op::Qlinear => {
            let [n, k] = rank2(c.shape(0)?, "x")?;
            let [m, k2] = rank2(c.shape(1)?, "w")?;
            if k != k2 {
                return Err(format!("x has {k} features but w expects {k2}"));
            }
            let (x, _) = c.centered(0)?;
            let (w, _) = c.centered(1)?;
            let b = if c.args.len() > 2 {
                Some(c.ints_of(2)?)
            } else {
                None
            };
            let acc = integer::qlinear(&x, &w, n, k, m, b.as_deref())?;
            Ok(Tensor {
                shape: vec![n, m],
                data: Data::I32(acc),
            })
        }
        Op::Qconv2d => {
            let xs = rank4(c.shape(0)?, "x")?;
            let ws = rank4(c.shape(1)?, "w")?;
            let g = c.conv_geom(xs, ws[0], [ws[2], ws[3]])?;
            if ws[1] != g.cg() {
                return Err(format!(
                    "weight expects {} input channels per group, the input has {}",
                    ws[1],
                    g.cg()
                ));
            }
            let (x, _) = c.centered(0)?;
            let (w, _) = c.centered(1)?;
            let b = if c.args.len() > 2 {
                Some(c.ints_of(2)?)
            } else {
                None
            };
            let acc = integer::qconv2d(&x, &w, &g, b.as_deref())?;
            Ok(Tensor {
                shape: vec![g.n, g.o, g.oh, g.ow],
                data: Data::I32(acc),
            })
        }
        Op::Qadd => {
            let (a, ap) = c.centered(0)?;
            let (b, bp) = c.centered(1)?;
            let out_shape = crate::kernels::broadcast_shapes(c.shape(0)?, c.shape(1)?)?;
            let out = c.qparams(c.out_ty)?;
            let data = integer::qadd(
                &QOperand {
                    values: &a,
                    shape: c.shape(0)?,
                    params: &ap,
                },
                &QOperand {
                    values: &b,
                    shape: c.shape(1)?,
                    params: &bp,
                },
                &out_shape,
                &out,
                c.act()?,
                c.rounding()?,
            )?;
            Ok(Tensor {
                shape: out_shape,
                data,
            })
        }
        Op::Qconcat => {
            let rank = c.shape(0)?.len();
            let axis = c.axis(rank)?;
            let mut parts = Vec::with_capacity(c.args.len());
            for i in 0..c.args.len() {
                parts.push(c.centered(i)?);
            }
            let mut shape = c.shape(0)?.to_vec();
            let mut total = 0usize;
            for (i, t) in c.args.iter().enumerate() {
                let same = t.shape.len() == rank
                    && t.shape
                        .iter()
                        .zip(&shape)
                        .enumerate()
                        .all(|(d, (a, b))| d == axis || a == b);
                if !same {
                    return Err(format!(
                        "input {i} has shape {:?}, which does not concatenate with {shape:?}",
                        t.shape
                    ));
                }
                total += t.shape[axis];
            }
            shape[axis] = total;
            let ops: Vec<QOperand> = parts
                .iter()
                .zip(&c.args)
                .map(|((v, p), t)| QOperand {
                    values: v,
                    shape: &t.shape,
                    params: p,
                })
                .collect();
            let out = c.qparams(c.out_ty)?;
            let data = integer::qconcat(&ops, axis, &shape, &out, c.rounding()?)?;
            Ok(Tensor { shape, data })
        }
        Op::QglobalAvgPool => {
            let [n, ch, _, _] = rank4(c.shape(0)?, "x")?;
            let (x, xp) = c.centered(0)?;
            let out = c.qparams(c.out_ty)?;
            let data = integer::qglobal_avg_pool(
                &QOperand {
                    values: &x,
                    shape: c.shape(0)?,
                    params: &xp,
                },
                &out,
                c.rounding()?,
            )?;
            Ok(Tensor {
                shape: vec![n, ch, 1, 1],
                data,
            })
        }

        // ---- backward -----------------------------------------------------------------------
        Op::ReluGrad => grad_unary::<T>(c, |d, x| if x > T::ZERO { d } else { T::ZERO }),
        Op::Relu6Grad => grad_unary::<T>(c, |d, x| {
            if x > T::ZERO && x < T::from_f64(6.0) {
                d
            } else {
                T::ZERO
            }
        }),
        Op::SigmoidGrad => grad_unary::<T>(c, |d, y| d * y * (T::ONE - y)),
        Op::TanhGrad => grad_unary::<T>(c, |d, y| d * (T::ONE - y * y)),
        Op::GeluGrad => grad_unary::<T>(c, |d, x| d * ew::gelu_grad(x)),
        Op::Conv2dGradInput => {
            let [n, o, oh, ow] = rank4(c.shape(0)?, "dy")?;
            let w = rank4(c.shape(1)?, "w")?;
            let [h, wd] = c.usizes::<2>("input_size", 1)?;
            let groups = to_usize(c.int("groups")?, "groups")?;
            let ch = w[1].checked_mul(groups).ok_or("too many input channels")?;
            let g = c.conv_geom([n, ch, h, wd], o, [w[2], w[3]])?;
            if (g.oh, g.ow) != (oh, ow) || w[0] != o {
                return Err(format!(
                    "dy {:?} does not match a convolution of weight {w:?} over a {h}x{wd} input",
                    c.shape(0)?
                ));
            }
            let dx = contract::conv2d_grad_input(c.f::<T>(0)?, c.f::<T>(1)?, &g)?;
            Ok(ftensor(vec![n, ch, h, wd], dx))
        }
        Op::Conv2dGradWeight => {
            let [n, o, oh, ow] = rank4(c.shape(0)?, "dy")?;
            let x = rank4(c.shape(1)?, "x")?;
            let k = c.usizes::<2>("kernel", 1)?;
            let g = c.conv_geom(x, o, k)?;
            if (g.oh, g.ow) != (oh, ow) || x[0] != n {
                return Err(format!(
                    "dy {:?} does not match a convolution over x {x:?}",
                    c.shape(0)?
                ));
            }
            let dw = contract::conv2d_grad_weight(c.f::<T>(0)?, c.f::<T>(1)?, &g)?;
            Ok(ftensor(vec![o, g.cg(), k[0], k[1]], dw))
        }
        Op::MaxPool2dGrad => {
            let x = rank4(c.shape(1)?, "x")?;
            let g = c.pool_geom(x)?;
            if c.shape(0)? != [g.n, g.c, g.oh, g.ow] {
                return Err("dy does not match the pooling of x".into());
            }
            let dx = match (&c.arg(0)?.data, &c.arg(1)?.data) {
                (Data::F32(dy), Data::F32(x)) => Data::F32(pool::max_pool2d_grad(dy, x, &g)?),
                (Data::F64(dy), Data::F64(x)) => Data::F64(pool::max_pool2d_grad(dy, x, &g)?),
                (a, b) => {
                    return Err(format!(
                        "operands hold {} and {} data, expected {}",
                        a.dtype(),
                        b.dtype(),
                        T::NAME
                    ));
                }
            };
            Ok(Tensor {
                shape: x.to_vec(),
                data: dx,
            })
        }
        Op::AvgPool2dGrad => {
            let [n, ch, _, _] = rank4(c.shape(0)?, "dy")?;
            let [h, w] = c.usizes::<2>("input_size", 1)?;
            let g = c.pool_geom([n, ch, h, w])?;
            if c.shape(0)? != [g.n, g.c, g.oh, g.ow] {
                return Err(format!("dy does not match pooling of a {h}x{w} input"));
            }
            let dx = pool::avg_pool2d_grad(c.f::<T>(0)?, &g, c.boolean("count_include_pad"))?;
            Ok(ftensor(vec![n, ch, h, w], dx))
        }
        Op::GlobalAvgPoolGrad => {
            let [n, ch, one_h, one_w] = rank4(c.shape(0)?, "dy")?;
            if (one_h, one_w) != (1, 1) {
                return Err("dy must be [N, C, 1, 1]".into());
            }
            let [h, w] = c.usizes::<2>("input_size", 1)?;
            let dy = c.f::<T>(0)?;
            if dy.len() != n * ch {
                return Err("data does not match its shape".into());
            }
            Ok(ftensor(
                vec![n, ch, h, w],
                pool::global_avg_pool_grad(dy, h * w),
            ))
        }
        Op::BatchNormGradInput => {
            let eps = T::from_f64(c.float("eps")?);
            let dx = norm::grad_input(c.f::<T>(0)?, c.shape(0)?, c.f::<T>(1)?, c.f::<T>(2)?, eps)?;
            Ok(ftensor(c.shape(0)?.to_vec(), dx))
        }
        Op::BatchNormGradGamma => {
            let eps = T::from_f64(c.float("eps")?);
            let shape = c.shape(0)?;
            if c.shape(1)? != shape {
                return Err("dy and x have different shapes".into());
            }
            let g = norm::grad_gamma(
                c.f::<T>(0)?,
                c.f::<T>(1)?,
                shape,
                c.f::<T>(2)?,
                c.f::<T>(3)?,
                eps,
            )?;
            Ok(ftensor(vec![g.len()], g))
        }
        Op::BatchNormTrainGradInput => {
            let eps = T::from_f64(c.float("eps")?);
            let shape = c.shape(0)?;
            if c.shape(1)? != shape {
                return Err("dy and x have different shapes".into());
            }
            let dx = norm::train_grad_input(c.f::<T>(0)?, c.f::<T>(1)?, shape, c.f::<T>(2)?, eps)?;
            Ok(ftensor(shape.to_vec(), dx))
        }
        Op::BatchNormTrainGradGamma => {
            let eps = T::from_f64(c.float("eps")?);
            let shape = c.shape(0)?;
            if c.shape(1)? != shape {
                return Err("dy and x have different shapes".into());
            }
            let g = norm::train_grad_gamma(c.f::<T>(0)?, c.f::<T>(1)?, shape, eps)?;
            Ok(ftensor(vec![g.len()], g))
        }
        Op::ReduceMeanGrad | Op::VarianceGrad => {
            let xs = c.shape(1)?;
            let axes = c.axes(xs.len())?;
            let dx = if op == Op::ReduceMeanGrad {
                reduce::reduce_mean_grad(c.f::<T>(0)?, xs, &axes)?
            } else {
                reduce::variance_grad(c.f::<T>(0)?, c.f::<T>(1)?, xs, &axes)?
            };
            Ok(ftensor(xs.to_vec(), dx))
        }
        Op::SoftmaxGrad | Op::LogSoftmaxGrad => {
            let ys = c.shape(1)?;
            let axis = c.axis(ys.len())?;
            let dx = reduce::softmax_grad(
                c.f::<T>(0)?,
                c.f::<T>(1)?,
                ys,
                axis,
                op == Op::LogSoftmaxGrad,
            )?;
            Ok(ftensor(ys.to_vec(), dx))
        }
        Op::SoftmaxCrossEntropyGrad => {
            let [n, k] = rank2(c.shape(1)?, "logits")?;
            let mean = c.inst.choice("reduction") != Some("sum");
            let g = reduce::softmax_ce_grad(
                c.scalar::<T>(0)?,
                c.f::<T>(1)?,
                n,
                k,
                &c.ints_of(2)?,
                mean,
            )?;
            Ok(ftensor(vec![n, k], g))
        }
        Op::FakeQuantGrad => {
            let shape = c.shape(1)?;
            let r = c.quant_range(shape.len())?;
            let dx = quant::fake_quant_grad(
                c.f::<T>(0)?,
                c.f::<T>(1)?,
                shape,
                r,
                c.f::<T>(2)?,
                &c.ints_of(3)?,
            )?;
            Ok(ftensor(shape.to_vec(), dx))
        }
        Op::FakeQuantLsqGradX => lsq_grad::<T>(c, LsqGrad::X),
        Op::FakeQuantLsqGradScale => lsq_grad::<T>(c, LsqGrad::Scale),
        Op::FakeQuantLsqGradZeroPoint => lsq_grad::<T>(c, LsqGrad::ZeroPoint),

        // ---- optimizer ----------------------------------------------------------------------
        Op::AllReduce => {
            let op = c
                .inst
                .choice("op")
                .and_then(ReduceOp::from_name)
                .ok_or("attribute 'op' must be sum, mean, min or max")?;
            let mut t = c.arg(0)?.clone();
            match &mut t.data {
                Data::F32(v) => all_reduce(Buffer::F32(v), op)?,
                Data::F64(v) => all_reduce(Buffer::F64(v), op)?,
                _ => return Err("all_reduce needs a float operand".into()),
            }
            Ok(t)
        }
        Op::SgdUpdate => {
            let lr = c.scalar::<T>(2)?;
            let wd = T::from_f64(c.float("weight_decay")?);
            let p = optim::sgd_update(c.f::<T>(0)?, c.f::<T>(1)?, lr, wd)?;
            Ok(ftensor(c.shape(0)?.to_vec(), p))
        }
        Op::SgdMomentum => {
            let b = optim::sgd_momentum(
                c.f::<T>(0)?,
                c.f::<T>(1)?,
                c.f::<T>(2)?,
                T::from_f64(c.float("momentum")?),
                T::from_f64(c.float("dampening")?),
                T::from_f64(c.float("weight_decay")?),
            )?;
            Ok(ftensor(c.shape(0)?.to_vec(), b))
        }
        Op::AdamMoment => {
            let m = optim::adam_moment(
                c.f::<T>(0)?,
                c.f::<T>(1)?,
                c.f::<T>(2)?,
                T::from_f64(c.float("beta")?),
                c.int("order")?,
                T::from_f64(c.float("weight_decay")?),
            )?;
            Ok(ftensor(c.shape(0)?.to_vec(), m))
        }
        Op::AdamUpdate => {
            let a = optim::Adam {
                beta1: c.float("beta1")?,
                beta2: c.float("beta2")?,
                eps: c.float("eps")?,
                weight_decay: c.float("weight_decay")?,
            };
            let p = optim::adam_update(
                c.f::<T>(0)?,
                c.f::<T>(1)?,
                c.f::<T>(2)?,
                c.scalar::<T>(3)?,
                c.scalar::<T>(4)?,
                a,
            )?;
            Ok(ftensor(c.shape(0)?.to_vec(), p))
        }
    }
}
