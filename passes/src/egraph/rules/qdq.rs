//! Quantize/dequantize rules: `quantize(dequantize(q)) = q` when the quantize produces
//! q's own type.
//!
//! Exact: `dequantize` gives `(q - z) * s` in f32 with `k = q - z` an integer of at most
//! `qmax - qmin` in magnitude, and `quantize` computes `round(((k * s) / s)) + z`; with
//! `|k| <= 2^16` and a normal scale, `(k * s) / s` is within 2^-22 relative of `k`, so it
//! rounds (in either rounding mode: no tie is near) back to `k`, and the clamp keeps `q`.
//! Types with wider ranges or with per-axis scales held by a named constant (whose values
//! the rule cannot check) are not rewritten. `dequantize(quantize(x))` is a fake-quant,
//! not an identity, and has no rule.

use qir::{QuantParams, QuantType, Type};

use super::{Guard, Rewrite, rule, ty_of, var};
use crate::egraph::analysis::EGraph;

/// The result type written on the op whose attributes are bound to `a`.
pub fn written_type<'e>(egraph: &'e EGraph, subst: &egg::Subst, a: egg::Var) -> Option<&'e Type> {
    let leaf = egraph[*subst.get(a)?].data.attrs.as_ref()?;
    egraph.analysis.types.get(leaf.ty?)
}

/// True if dequantizing then quantizing values of `q` reproduces them exactly.
fn round_trips(q: &QuantType) -> bool {
    let normal = |s: f32| s.is_normal() && s > 0.0;
    q.qmax.saturating_sub(q.qmin) <= 1 << 16
        && match &q.params {
            QuantParams::PerTensor { scale, .. } => normal(*scale),
            QuantParams::PerAxis { scales, .. } => scales.iter().all(|&s| normal(s)),
            QuantParams::PerAxisRef { .. } => false,
        }
}

/// Guard: the quantize bound to `a` produces exactly the type of `q`, and that type round
/// trips.
fn requantizes_to_same_type(a: &str, q: &str) -> Guard {
    let (a, q) = (var(a), var(q));
    Box::new(
        move |eg, _, s| match (written_type(eg, s, a), ty_of(eg, s, q)) {
            (Some(w), Some(t)) => w == t && t.elem.quant().is_some_and(round_trips),
            _ => false,
        },
    )
}

/// The Q/DQ rule set.
pub fn rules() -> Vec<Rewrite> {
    vec![rule(
        "quantize-dequantize",
        "(quantize ?a (dequantize ?q))",
        "?q",
        requantizes_to_same_type("?a", "?q"),
    )]
}
