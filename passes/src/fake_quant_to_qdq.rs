//! `fake-quant-to-qdq`: every fake-quant of an activation with constant quantization
//! parameters becomes a `quantize` onto its grid followed by a `dequantize`:
//!
//! ```text
//! %x.fq = fake_quant(%x, %x.scale, %x.zp) {qmin = -128, qmax = 127} : f32[B, 4]
//!   =>
//! %x.fq = quantize(%x) {rounding = half_even} : !quant.uniform<i8:f32, 0.007843138:-1>[B, 4]
//! %x.fq.real = dequantize(%x.fq) : f32[B, 4]
//! ```
//!
//! Exact with `rounding = half_even` (the default): `quantize` multiplies by the f32 inverse
//! scale and rounds ties to even as `fake_quant` does, so `dequantize(quantize(x))` equals
//! `fake_quant(x)` bit for bit. The `dequantize` of an output takes the output's name. The
//! grid is 8-bit (`i8` for ranges within [-128, 127], else `u8`); a per-channel fake-quant
//! of an activation, parameters that are not constants (freeze the observers and bind the
//! state first) and wider ranges are errors naming the fake-quant.

use qir::quant::Rounding;
use qir::{Graph, Op};

use crate::lowering::{Grid, ROUNDING_OPTION, Rebuild, const_values, err, rounding_option, storage_8bit};
use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;
use crate::quantize_weights::fake_quant_params;

/// The `fake-quant-to-qdq` pass.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeQuantToQdq {
    /// The rounding of the `quantize` ops.
    pub rounding: Rounding,
}

impl Default for FakeQuantToQdq {
    fn default() -> Self {
        FakeQuantToQdq {
            rounding: Rounding::HalfEven,
        }
    }
}

/// Rewrites the activation fake-quants of `g` (see the module docs); `None` when there is
/// none.
pub fn fake_quant_to_qdq(g: &Graph, rounding: Rounding) -> Result<Option<Graph>, PassError> {
    let mut rb = Rebuild::new(g)?;
    let mut changed = false;
    for id in rb.ops()? {
        let node = g.node(id);
        let Some(inst) = node.inst().filter(|i| matches!(i.op, Op::FakeQuant | Op::FakeQuantLsq)) else {
            rb.copy(id)?;
            continue;
        };
        let ops = g.operands(id);
        let (Some(s), Some(z)) = (const_values(g, ops[1]), const_values(g, ops[2])) else {
            return Err(err(
                g,
                id,
                "quantization parameters are not constants (freeze the observers and bind the state first)",
            ));
        };
        let (qmin, qmax) = (inst.int("qmin").unwrap_or(-128), inst.int("qmax").unwrap_or(127));
        let (scales, zps) = fake_quant_params(g, id, &s, &z)?;
        if scales.len() != 1 {
            return Err(err(g, id, "per-channel quantization of activations is not supported"));
        }
        let storage = storage_8bit(qmin, qmax)
            .ok_or_else(|| err(g, id, format!("range [{qmin}, {qmax}] fits no 8-bit storage")))?;
        let grid = Grid {
            storage,
            qmin,
            qmax,
            scale: scales[0],
            zp: zps[0],
        };
        let x = rb.get(ops[0])?;
        let q_inst = rb.inst(id, Op::Quantize, &[("rounding", qir::Attr::Enum(rounding.name()))])?;
        let ty = node.ty.with_elem(grid.elem());
        let q = rb.add(id, q_inst, &[x], ty, &rb.src_name(id))?;
        let n = rb.out.node_mut(q);
        n.loc = node.loc;
        n.comments = node.comments.clone();
        let dq = rb.dequantize(id, q)?;
        rb.set(id, dq);
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    rb.finish().map(Some)
}

impl Pass for FakeQuantToQdq {
    fn name(&self) -> &'static str {
        "fake-quant-to-qdq"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("rounding", OptValue::Scalar(self.rounding.name().to_string()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        match fake_quant_to_qdq(g, self.rounding)? {
            Some(out) => {
                *g = out;
                Ok(Changed::Yes)
            }
            None => Ok(Changed::No),
        }
    }
}

impl PassDef for FakeQuantToQdq {
    const INFO: PassInfo = PassInfo {
        name: "fake-quant-to-qdq",
        summary: "activation fake-quants with constant parameters become quantize -> dequantize",
        options: &[ROUNDING_OPTION],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(FakeQuantToQdq {
            rounding: rounding_option(options)?,
        })
    }
}
