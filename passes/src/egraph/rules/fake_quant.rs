//! Fake-quant rules: idempotence, commuting a fake-quant through ops that commute with a
//! monotone elementwise map, and a `relu` absorbed by a fake-quant whose range starts at 0.
//!
//! Only plain `fake_quant` is rewritten: the LSQ variants train their scale, and changing
//! how often they are applied would change the scale's gradient. Every rule is exact (bit
//! for bit on non-NaN inputs) under the IR's invariants for quantization parameters: the
//! scale is positive, finite and normal (so `1/scale` is finite) and the zero point lies
//! in `[qmin, qmax]` (`qparams_zero_point` clamps it; known constant zero points are
//! checked). Facts used, with `fq(x) = (clamp(round(x * (1/s)) + z, qmin, qmax) - z) * s`:
//! - `fq` is monotone non-decreasing and `fq(0) = 0`, so it commutes with `max(., 0)` and
//!   with taking the maximum of a window (`max(fq(a), fq(b)) = fq(max(a, b))`);
//! - `fq` is elementwise with one parameter set when per-tensor, so it commutes with
//!   reshape, flatten, transpose and concat (per-channel parameters would have to follow
//!   the channel axis: not commuted);
//! - `fq(fq(x)) = fq(x)`: `fq(x) = k * s` for an integer `|k| <= qmax - qmin`, and
//!   `round((k * s) * (1/s)) = k` exactly in f32 when `|k| < 2^16` (the relative error of
//!   the two products is below 2^-22, far from a rounding tie), so the second application
//!   reproduces the same integer; ranges wider than 2^16 are not rewritten;
//! - with `z = qmin`, every `x <= 0` quantizes to `qmin`, i.e. to 0, so `fq(relu(x)) = fq(x)`.

use super::{Guard, Rewrite, both, const_of, inst_of, per_tensor, rule, var};

/// Guard: the fake-quant range bound to `a` is at most 2^16 wide.
pub(crate) fn narrow_range(a: &str) -> Guard {
    let a = var(a);
    Box::new(move |eg, _, s| {
        inst_of(eg, s, a).is_some_and(|i| match (i.int("qmin"), i.int("qmax")) {
            (Some(lo), Some(hi)) => hi.saturating_sub(lo) <= 1 << 16,
            _ => false,
        })
    })
}

/// Guard: the zero point bound to `z` lies in the range of `a` when it is a known
/// constant (unknown zero points satisfy it by the IR's invariant).
pub(crate) fn zero_point_in_range(a: &str, z: &str) -> Guard {
    let (a, z) = (var(a), var(z));
    Box::new(move |eg, _, s| {
        let Some(i) = inst_of(eg, s, a) else {
            return false;
        };
        match (const_of(eg, s, z), i.int("qmin"), i.int("qmax")) {
            (Some(v), Some(lo), Some(hi)) => (lo as f64) <= v && v <= hi as f64,
            (None, Some(_), Some(_)) => true,
            _ => false,
        }
    })
}

/// Guard: the zero point bound to `z` is a known constant equal to the `qmin` of `a`.
fn zero_point_is_qmin(a: &str, z: &str) -> Guard {
    let (a, z) = (var(a), var(z));
    Box::new(move |eg, _, s| {
        match (
            inst_of(eg, s, a).and_then(|i| i.int("qmin")),
            const_of(eg, s, z),
        ) {
            (Some(lo), Some(v)) => v == lo as f64,
            _ => false,
        }
    })
}

/// Guard: the fake-quant bound to `a` is per-tensor or per-channel along an axis that a
/// 2-D pooling window never crosses (batch 0 or channel 1 of NCHW).
fn pool_safe_axis(a: &str) -> Guard {
    let a = var(a);
    Box::new(move |eg, _, s| {
        inst_of(eg, s, a).is_some_and(|i| matches!(i.int("axis"), None | Some(0 | 1 | -4 | -3)))
    })
}

/// The fake-quant rule set (see the module doc for why each rule is exact).
pub fn rules() -> Vec<Rewrite> {
    let fq = |x: &str| format!("(fake_quant ?a {x} ?s ?z)");
    let mut v = vec![
        rule(
            "fake-quant-idempotent",
            &fq("(fake_quant ?a ?x ?s ?z)"),
            &fq("?x"),
            both(narrow_range("?a"), zero_point_in_range("?a", "?z")),
        ),
        rule(
            "fake-quant-absorbs-relu",
            &fq("(relu ?x)"),
            &fq("?x"),
            zero_point_is_qmin("?a", "?z"),
        ),
    ];
    // both directions of fq(op(x)) = op(fq(x)), each with its guard
    let mut commute = |name: &str, outside: String, inside: String, guard: fn() -> Guard| {
        v.push(rule(
            &format!("commute-fake-quant-{name}"),
            &outside,
            &inside,
            guard(),
        ));
        v.push(rule(
            &format!("commute-{name}-fake-quant"),
            &inside,
            &outside,
            guard(),
        ));
    };
    commute(
        "relu",
        fq("(relu ?x)"),
        format!("(relu {})", fq("?x")),
        || zero_point_in_range("?a", "?z"),
    );
    commute(
        "max-pool",
        fq("(max_pool2d ?p ?x)"),
        format!("(max_pool2d ?p {})", fq("?x")),
        || pool_safe_axis("?a"),
    );
    for op in ["reshape", "flatten", "transpose"] {
        commute(
            op,
            fq(&format!("({op} ?p ?x)")),
            format!("({op} ?p {})", fq("?x")),
            || per_tensor("?a"),
        );
    }
    let concat_outside = fq("(concat ?p ?x ?y)");
    let concat_inside = format!("(concat ?p {} {})", fq("?x"), fq("?y"));
    v.push(rule(
        "commute-fake-quant-concat",
        &concat_outside,
        &concat_inside,
        per_tensor("?a"),
    ));
    v.push(rule(
        "commute-concat-fake-quant",
        &concat_inside,
        &concat_outside,
        per_tensor("?a"),
    ));
    v
}
