//! Export of the integer ops of a converted model (`qatc convert`) as an ONNX QDQ model:
//! integer tensors stay integer tensors (int8/uint8 activations flow between ops under their
//! own names; max pooling, reshape and flatten run on them directly), and every op that
//! rescales becomes DequantizeLinear → float op → QuantizeLinear, the form onnxruntime,
//! TensorRT and OpenVINO fuse back into integer kernels.
//!
//! | qir | ONNX |
//! |---|---|
//! | `quantize` | QuantizeLinear (a Clip first when `[qmin, qmax]` is narrower than the storage type) |
//! | `dequantize` | DequantizeLinear (per axis for per-axis types) |
//! | `qlinear` / `qconv2d` + their `requantize` | DQ(x), DQ(w) per output channel, DQ(int32 bias) → Gemm / Conv → Relu or Clip for `act` → QuantizeLinear |
//! | `requantize` of a quantized value | DequantizeLinear (at the rescaled scale) → Relu/Clip → QuantizeLinear |
//! | `qadd`, `qconcat`, `qglobal_avg_pool` | DQ of each input → Add / Concat / GlobalAveragePool → Relu/Clip → QuantizeLinear |
//!
//! The real numbers are the integer model's. A layer's int32 accumulator `acc` becomes
//! `zp_out + round(acc * M_c)` through its requantize, `M_c = multiplier_c * 2^-31 *
//! 2^-shift_c` (a batch-norm folded at convert is inside `M_c`, so `M_c` need not be
//! `s_in * s_w / s_out`). The export gives each output channel the weight scale `w_c =
//! M_c * s_out / s_in`: the float layer then computes `s_in * w_c * acc = M_c * s_out * acc`
//! from the same int8 weights and int32 bias (the bias at scale `s_in * w_c`, zero point 0,
//! as ONNX's QDQ convention has it), and QuantizeLinear gives `zp_out + round(acc * M_c)`.
//! What can differ is rounding: QuantizeLinear rounds half to even after f32 products,
//! `requantize` rounds the exact product as its `rounding` says, so an output can move by
//! one step where `acc * M_c` lies within f32 precision of a half-integer (or on one, with
//! `rounding = half_away_from_zero`).
//!
//! An int32 accumulator must be read by exactly one `requantize` (what convert produces);
//! anything else is an error naming the node.

use qir::{Data, NodeId, Op, QuantParams, QuantType, Storage, Tensor};

use crate::export::{ExportError, Exporter};

type XResult<T> = std::result::Result<T, ExportError>;

/// Scales and zero points of a quantized type, per channel (`axis` for per-axis types).
pub(crate) struct Params {
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
    pub axis: Option<usize>,
    pub storage: Storage,
    pub qmin: i64,
    pub qmax: i64,
}

impl Params {
    /// The clamp bounds in real numbers, when `[qmin, qmax]` is narrower than the storage.
    fn narrow(&self) -> Option<(f32, f32)> {
        let (lo, hi) = self.storage.range();
        match (self.qmin != lo || self.qmax != hi, self.scales.as_slice()) {
            (true, [s]) => {
                let z = self.zero_points[0];
                Some(((self.qmin - z) as f32 * s, (self.qmax - z) as f32 * s))
            }
            _ => None,
        }
    }
}

/// The ONNX zero-point tensor of `storage` holding `zps`, shaped like `shape`.
fn zero_point_tensor(storage: Storage, zps: &[i64], shape: Vec<usize>) -> Result<Tensor, String> {
    let data = match storage {
        Storage::I4 | Storage::I8 => Data::I8(zps.iter().map(|&z| z as i8).collect()),
        Storage::U8 => Data::U8(zps.iter().map(|&z| z as u8).collect()),
        Storage::I32 => Data::I32(zps.iter().map(|&z| z as i32).collect()),
        Storage::I16 => return Err("16-bit quantized values are not exported".into()),
    };
    Tensor::new(shape, data).ok_or_else(|| "bad zero-point shape".into())
}

impl Exporter<'_> {
    /// The parameters of a quantized value's type.
    pub(crate) fn params_of(&mut self, id: NodeId, q: &QuantType) -> XResult<Params> {
        let (scales, zero_points, axis) = match &q.params {
            QuantParams::PerTensor { scale, zero_point } => (vec![*scale], vec![*zero_point], None),
            QuantParams::PerAxis {
                axis,
                scales,
                zero_points,
            } => (scales.clone(), zero_points.clone(), Some(*axis)),
            QuantParams::PerAxisRef {
                axis,
                scales,
                zero_points,
            } => {
                let named = |ex: &mut Self, name: &str| -> XResult<Tensor> {
                    let nid = ex.g.find(name).ok_or_else(|| {
                        ex.op_err(
                            id,
                            format!("the quantization parameters %{name} do not exist"),
                        )
                    })?;
                    ex.constant(nid)
                };
                let s = named(self, scales)?;
                let s: Vec<f32> = s.data.to_f64().iter().map(|&v| v as f32).collect();
                let z = match zero_points {
                    Some(n) => named(self, n)?
                        .data
                        .to_f64()
                        .iter()
                        .map(|&v| v as i64)
                        .collect(),
                    None => vec![0; s.len()],
                };
                (s, z, Some(*axis))
            }
        };
        Ok(Params {
            scales,
            zero_points,
            axis,
            storage: q.storage,
            qmin: q.qmin,
            qmax: q.qmax,
        })
    }

    fn quant_of(&mut self, id: NodeId) -> XResult<Params> {
        let ty = self.g.ty(id).clone();
        match ty.elem.quant() {
            Some(q) => self.params_of(id, q),
            None => Err(self.op_err(id, format!("expected a quantized value, found {ty}"))),
        }
    }

    /// Scale and zero-point initializers of `p` (scales replaced by `scales` if given).
    fn scale_zp(
        &mut self,
        base: &str,
        p: &Params,
        scales: Option<&[f32]>,
    ) -> XResult<(String, String)> {
        let s = scales.unwrap_or(&p.scales);
        let shape = if p.axis.is_some() {
            vec![s.len()]
        } else {
            vec![]
        };
        let st = Tensor::new(shape.clone(), Data::F32(s.to_vec())).expect("scale shape");
        let zt = zero_point_tensor(p.storage, &p.zero_points, shape).map_err(|m| {
            ExportError::Value {
                node: base.to_string(),
                message: m,
            }
        })?;
        let sn = self.initializer(&format!("{base}.scale"), &st);
        let zn = self.initializer(&format!("{base}.zero_point"), &zt);
        Ok((sn, zn))
    }

    fn axis_attr(axis: Option<usize>) -> Vec<crate::proto::AttributeProto> {
        axis.map(|a| crate::export::attr_int("axis", a as i64))
            .into_iter()
            .collect()
    }

    /// DequantizeLinear of quantized value `id` (its own parameters, or `scales`).
    fn dq(&mut self, id: NodeId, scales: Option<&[f32]>) -> XResult<String> {
        let p = self.quant_of(id)?;
        let x = self.name(id).to_string();
        let (s, z) = self.scale_zp(&x, &p, scales)?;
        let out = self.fresh(&format!("{x}.dq"));
        self.node(
            "DequantizeLinear",
            &[&x, &s, &z],
            &out,
            Self::axis_attr(p.axis),
        );
        Ok(out)
    }

    /// Relu / Clip for a fused `act`, then QuantizeLinear to `id`'s type under its name.
    fn act_then_q(&mut self, id: NodeId, mut real: String, act: &str) -> XResult<()> {
        let out = self.name(id).to_string();
        let p = self.quant_of(id)?;
        match act {
            "none" => {}
            "relu" => {
                let r = self.fresh(&format!("{out}.relu"));
                self.node("Relu", &[&real], &r, vec![]);
                real = r;
            }
            "relu6" => {
                let lo = self.initializer(&format!("{out}.min"), &Tensor::scalar_f32(0.0));
                let hi = self.initializer(&format!("{out}.max"), &Tensor::scalar_f32(6.0));
                let r = self.fresh(&format!("{out}.relu6"));
                self.node("Clip", &[&real, &lo, &hi], &r, vec![]);
                real = r;
            }
            other => return Err(self.op_err(id, format!("act = {other} is not exported"))),
        }
        self.quantize_to(id, &out, real, &p)
    }

    /// QuantizeLinear of the f32 value `real` to `p` as `out` (a Clip first for a range
    /// narrower than the storage type: QuantizeLinear is monotonic, so clamping the real
    /// value at the range's own dequantized ends is exact).
    fn quantize_to(&mut self, id: NodeId, out: &str, mut real: String, p: &Params) -> XResult<()> {
        if p.axis.is_some() {
            return Err(self.op_err(id, "per-axis quantized activations are not exported"));
        }
        if let Some((lo, hi)) = p.narrow() {
            let lo = self.initializer(&format!("{out}.lo"), &Tensor::scalar_f32(lo));
            let hi = self.initializer(&format!("{out}.hi"), &Tensor::scalar_f32(hi));
            let c = self.fresh(&format!("{out}.clip"));
            self.node("Clip", &[&real, &lo, &hi], &c, vec![]);
            real = c;
        }
        let (s, z) = self.scale_zp(out, p, None)?;
        self.node("QuantizeLinear", &[&real, &s, &z], out, vec![]);
        Ok(())
    }

    /// `multiplier * 2^-31 * 2^-shift` per channel of a requantize.
    fn factors(&self, id: NodeId, inst: &qir::Inst) -> XResult<(Vec<f64>, Option<usize>)> {
        let (Some(m), Some(s)) = (inst.ints("multiplier"), inst.ints("shift")) else {
            return Err(self.op_err(id, "multiplier and shift are required"));
        };
        if m.len() != s.len() || m.is_empty() {
            return Err(self.op_err(id, "multiplier and shift differ in length"));
        }
        let f = m
            .iter()
            .zip(&s)
            .map(|(&m, &s)| m as f64 * 2f64.powi(-31) * 2f64.powi(-(s as i32)))
            .collect();
        let rank = self.g.ty(id).rank();
        let axis = inst.int("axis").map(|a| {
            if a < 0 {
                (a + rank as i64) as usize
            } else {
                a as usize
            }
        });
        Ok((f, axis))
    }

    /// The one requantize that reads the accumulator `acc`.
    fn requantize_of(&self, acc: NodeId) -> XResult<NodeId> {
        let users = self.g.users(acc);
        match users.as_slice() {
            [(u, _)] if self.g.node(*u).op() == Some(Op::Requantize) => Ok(*u),
            _ => Err(self.op_err(
                acc,
                "an int32 accumulator is exported with the one requantize that reads it (as convert produces); this one has other readers",
            )),
        }
    }

    /// The integer ops (see the module docs); `Ok(false)` for any other op.
    pub(crate) fn integer_op(&mut self, id: NodeId, inst: &qir::Inst) -> XResult<bool> {
        let operands = self.g.operands(id);
        let out = self.name(id).to_string();
        match inst.op {
            Op::Quantize => {
                let p = self.quant_of(id)?;
                let x = self.name(operands[0]).to_string();
                self.quantize_to(id, &out, x, &p)?;
            }
            Op::Dequantize => {
                let p = self.quant_of(operands[0])?;
                let x = self.name(operands[0]).to_string();
                let (s, z) = self.scale_zp(&x, &p, None)?;
                self.node(
                    "DequantizeLinear",
                    &[&x, &s, &z],
                    &out,
                    Self::axis_attr(p.axis),
                );
            }
            Op::Qlinear | Op::Qconv2d => self.layer(id, inst, &operands)?,
            Op::Requantize => {
                let x = operands[0];
                let from_layer = matches!(self.g.node(x).op(), Some(Op::Qlinear | Op::Qconv2d));
                let act = inst.choice("act").unwrap_or("none").to_string();
                if from_layer {
                    // the layer wrote its real-valued result under its accumulator's name
                    let real = self.name(x).to_string();
                    self.act_then_q(id, real, &act)?;
                } else {
                    if self.g.ty(x).elem.quant().is_none() {
                        return Err(self.op_err(
                            id,
                            "a requantize of an int32 value that no qlinear or qconv2d produced is not exported",
                        ));
                    }
                    // dequantized at M * s_out, so that quantizing at s_out rescales by M
                    let (f, axis) = self.factors(id, inst)?;
                    let po = self.quant_of(id)?;
                    let pi = self.quant_of(x)?;
                    if f.len() > 1 && axis != Some(1) && axis != pi.axis {
                        return Err(self.op_err(
                            id,
                            "per-channel factors along an axis other than the input's",
                        ));
                    }
                    let so = po.scales[0] as f64;
                    let scales: Vec<f32> = f.iter().map(|m| (m * so) as f32).collect();
                    let real = if f.len() > 1 {
                        let mut p = pi;
                        p.axis = axis;
                        p.zero_points = vec![p.zero_points[0]; f.len()];
                        let xn = self.name(x).to_string();
                        let (s, z) = self.scale_zp(&xn, &p, Some(&scales))?;
                        let r = self.fresh(&format!("{xn}.dq"));
                        self.node(
                            "DequantizeLinear",
                            &[&xn, &s, &z],
                            &r,
                            Self::axis_attr(axis),
                        );
                        r
                    } else {
                        self.dq(x, Some(&scales))?
                    };
                    self.act_then_q(id, real, &act)?;
                }
            }
            Op::Qadd => {
                let a = self.dq(operands[0], None)?;
                let b = self.dq(operands[1], None)?;
                let s = self.fresh(&format!("{out}.sum"));
                self.node("Add", &[&a, &b], &s, vec![]);
                let act = inst.choice("act").unwrap_or("none").to_string();
                self.act_then_q(id, s, &act)?;
            }
            Op::Qconcat => {
                let parts = operands
                    .iter()
                    .map(|&o| self.dq(o, None))
                    .collect::<XResult<Vec<_>>>()?;
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                let c = self.fresh(&format!("{out}.cat"));
                let axis = inst.int("axis").unwrap_or(0);
                self.node(
                    "Concat",
                    &parts,
                    &c,
                    vec![crate::export::attr_int("axis", axis)],
                );
                self.act_then_q(id, c, "none")?;
            }
            Op::QglobalAvgPool => {
                let x = self.dq(operands[0], None)?;
                let p = self.fresh(&format!("{out}.mean"));
                self.node("GlobalAveragePool", &[&x], &p, vec![]);
                self.act_then_q(id, p, "none")?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `qlinear` / `qconv2d`: the float layer on dequantized operands, written under the
    /// accumulator's name (its requantize quantizes it).
    fn layer(&mut self, id: NodeId, inst: &qir::Inst, operands: &[NodeId]) -> XResult<()> {
        let rq = self.requantize_of(id)?;
        let rinst = self.g.node(rq).inst().cloned().expect("an op");
        let (f, _) = self.factors(rq, &rinst)?;
        let px = self.quant_of(operands[0])?;
        let pw = self.quant_of(operands[1])?;
        let po = self.quant_of(rq)?;
        if px.scales.len() != 1 {
            return Err(self.op_err(id, "the input must be quantized per tensor"));
        }
        let channels = self.g.ty(operands[1]).shape.dims()[0].fixed().unwrap_or(0) as usize;
        let per = |v: &[f64], c: usize| if v.len() == 1 { v[0] } else { v[c] };
        let (si, so) = (px.scales[0] as f64, po.scales[0] as f64);
        // the weight scale per output channel that makes s_in * w_c = M_c * s_out
        let ws: Vec<f32> = (0..channels)
            .map(|c| (per(&f, c) * so / si) as f32)
            .collect();
        if pw.axis.is_some_and(|a| a != 0) {
            return Err(self.op_err(
                id,
                "weights must be quantized per output channel (axis 0) or per tensor",
            ));
        }
        let mut pw = pw;
        pw.axis = Some(0);
        pw.zero_points = if pw.zero_points.len() == 1 {
            vec![pw.zero_points[0]; channels]
        } else {
            pw.zero_points
        };
        let x = self.dq(operands[0], None)?;
        let wn = self.name(operands[1]).to_string();
        let (s, z) = self.scale_zp(&wn, &pw, Some(&ws))?;
        let w = self.fresh(&format!("{wn}.dq"));
        self.node(
            "DequantizeLinear",
            &[&wn, &s, &z],
            &w,
            Self::axis_attr(Some(0)),
        );
        let mut ins = vec![x, w];
        if let Some(&b) = operands.get(2) {
            let bn = self.name(b).to_string();
            let bs: Vec<f32> = ws.iter().map(|&w| (w as f64 * si) as f32).collect();
            let st = Tensor::new(vec![channels], Data::F32(bs)).expect("bias scale");
            let zt = Tensor::new(vec![channels], Data::I32(vec![0; channels])).expect("bias zp");
            let s = self.initializer(&format!("{bn}.scale"), &st);
            let z = self.initializer(&format!("{bn}.zero_point"), &zt);
            let r = self.fresh(&format!("{bn}.dq"));
            self.node(
                "DequantizeLinear",
                &[&bn, &s, &z],
                &r,
                Self::axis_attr(Some(0)),
            );
            ins.push(r);
        }
        let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
        let out = self.name(id).to_string();
        if inst.op == Op::Qlinear {
            self.node(
                "Gemm",
                &ins,
                &out,
                vec![crate::export::attr_int("transB", 1)],
            );
        } else {
            let attrs = self.conv_attrs(inst, operands[1]);
            self.node("Conv", &ins, &out, attrs);
        }
        Ok(())
    }
}
