//! Quantization parameters for QDQ export: frozen `qparams_scale`/`qparams_zero_point`
//! (evaluated with [`qir::quant`] as the interpreter does, in f32) and the ONNX form of a
//! fake quantization's scale, zero point and clamp bounds.

use qir::quant::{QparamRule, qparams_f32};
use qir::{Data, Inst, Op, Tensor, Type};

/// `qparams_scale` or `qparams_zero_point` of the frozen range `mn`, `mx`.
pub(crate) fn qparams(inst: &Inst, mn: &Tensor, mx: &Tensor, ty: &Type) -> Result<Tensor, String> {
    let rule = QparamRule {
        qmin: inst.int("qmin").ok_or("qmin is missing")?,
        qmax: inst.int("qmax").ok_or("qmax is missing")?,
        symmetric: inst.boolean("symmetric").unwrap_or(false),
        power_of_two: inst.boolean("power_of_two").unwrap_or(false),
        eps: inst.float("eps").unwrap_or(f32::EPSILON as f64),
    };
    if rule.qmin >= rule.qmax {
        return Err(format!("empty range [{}, {}]", rule.qmin, rule.qmax));
    }
    let (Some(a), Some(b)) = (mn.as_f32(), mx.as_f32()) else {
        return Err("the observed range must be f32".into());
    };
    if a.len() != b.len() {
        return Err("min and max differ in size".into());
    }
    if ty.elem != qir::ElemType::F32 && inst.op == Op::QparamsScale {
        return Err(format!("only f32 scales are exported, found {ty}"));
    }
    let pairs: Vec<(f32, i64)> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| qparams_f32(x, y, rule))
        .collect();
    let data = if inst.op == Op::QparamsScale {
        Data::F32(pairs.iter().map(|p| p.0).collect())
    } else {
        Data::I32(pairs.iter().map(|p| p.1 as i32).collect())
    };
    Tensor::new(mn.shape.clone(), data).ok_or_else(|| "bad shape".into())
}

/// The ONNX tensors of one fake quantization.
pub(crate) struct QdqParams {
    /// f32 scale, a scalar or a vector.
    pub scale: Tensor,
    /// int8 or uint8 zero point of the scale's shape.
    pub zero_point: Tensor,
    /// `[qmin, qmax]` is the whole storage type: no clamp is needed.
    pub full_range: bool,
    /// `(qmin - zp) * scale` and `(qmax - zp) * scale` in f32, per channel.
    pub lo: Vec<f32>,
    pub hi: Vec<f32>,
}

impl QdqParams {
    pub fn new(scale: &Tensor, zp: &Tensor, qmin: i64, qmax: i64) -> Result<QdqParams, String> {
        let s = scale
            .as_f32()
            .ok_or_else(|| format!("the scale must be f32, found {}", scale.data.dtype()))?;
        if scale.shape.len() > 1 {
            return Err(format!(
                "the scale must be a scalar or a vector, found {:?}",
                scale.shape
            ));
        }
        if s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(
                "a scale is not a positive finite number (was the observer ever run?)".into(),
            );
        }
        let z: Vec<i64> = (0..zp.numel()).map(|i| zp.data.get_f64(i) as i64).collect();
        if z.len() != s.len() || zp.shape != scale.shape {
            return Err("the zero point does not have the scale's shape".into());
        }
        let (signed, full) = if qmin >= -128 && qmax <= 127 {
            (true, qmin == -128 && qmax == 127)
        } else if qmin >= 0 && qmax <= 255 {
            (false, qmin == 0 && qmax == 255)
        } else {
            return Err(format!(
                "the range [{qmin}, {qmax}] fits neither int8 nor uint8"
            ));
        };
        if z.iter().any(|&v| v < qmin || v > qmax) {
            return Err(format!("a zero point lies outside [{qmin}, {qmax}]"));
        }
        let zero_point = if signed {
            Data::I8(z.iter().map(|&v| v as i8).collect())
        } else {
            Data::U8(z.iter().map(|&v| v as u8).collect())
        };
        let bound = |q: i64| -> Vec<f32> {
            s.iter()
                .zip(&z)
                .map(|(&s, &z)| (q - z) as f32 * s)
                .collect()
        };
        Ok(QdqParams {
            scale: scale.clone(),
            zero_point: Tensor::new(scale.shape.clone(), zero_point).ok_or("bad shape")?,
            full_range: full,
            lo: bound(qmin),
            hi: bound(qmax),
        })
    }
}
