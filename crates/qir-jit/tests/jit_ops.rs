//! Every op of `Op::ALL` on random shapes and values, JIT against the interpreter (the
//! oracle), with proptest. Each op has a generator writing a one-op graph (operands are
//! graph inputs, so the JIT cannot fold them) for random sizes — including sizes that are
//! not multiples of the 4-lane vector width and batch 1 — and random values; the test
//! `jit_every_op_has_a_generator` fails listing any op without one.
//!
//! Tolerances, per op class:
//! - [`Tol::Exact`] (bit for bit): fake-quant forward and gradients (STE masks), observers,
//!   qparams, quantize/dequantize, data movement (reshape, transpose, concat, slice, pools
//!   that pick), and IEEE-exact elementwise arithmetic (add, sub, mul, div, neg, relu,
//!   sqrt, masks of relu grads), argmax: both executors do the same f32 operations in the
//!   same order on each element, so any difference is a bug.
//! - [`Tol::Ulps`] (relative 1e-6): transcendental functions (exp, log, tanh, sigmoid,
//!   gelu and their gradients), whose f32 implementations may differ by an ulp or two.
//! - [`Tol::Sum`] (`|a - b| <= 1e-5 * (1 + |a|)`): reductions, GEMM, convolutions,
//!   softmax, batch norm, optimizer steps that read a reduction: the JIT sums in blocks and
//!   in another order; with at most a few hundred terms of magnitude ≤ 4 the f32 rounding
//!   error of either order stays below 1e-5 of `1 + |result|`.

use std::collections::HashMap;
use std::fmt::Write as _;

use proptest::prelude::*;
use qir::{Data, Op, Tensor};
use qir_exec::{Executor, init_store};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tol {
    Exact,
    Ulps,
    Sum,
}

/// A small deterministic generator seeded by proptest.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// An integer in `lo..=hi`.
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    /// A float in `[lo, hi)`, on a 1/4096 grid half the time (ties and exact zeros).
    fn f(&mut self, lo: f32, hi: f32) -> f32 {
        if self.next() % 2 == 0 {
            let k = self.int(0, ((hi - lo) * 4096.0) as i64 - 1);
            lo + k as f32 / 4096.0
        } else {
            lo + (hi - lo) * (self.next() % 1_000_000) as f32 / 1_000_000.0
        }
    }
    fn fs(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f(lo, hi)).collect()
    }
}

/// A one-op test case: the graph's text and its inputs.
struct Case {
    text: String,
    inputs: Vec<(String, Tensor)>,
}

/// Builds a case: `decl` declares inputs, `body` is the op's line(s) ending in `%y`.
struct B {
    decls: String,
    inputs: Vec<(String, Tensor)>,
}

fn dims(d: &[usize]) -> String {
    format!(
        "[{}]",
        d.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

impl B {
    fn new() -> B {
        B {
            decls: String::new(),
            inputs: Vec::new(),
        }
    }
    fn f32(&mut self, name: &str, d: &[usize], v: Vec<f32>) {
        let _ = writeln!(self.decls, "  input %{name}: f32{}", dims(d));
        self.inputs
            .push((name.into(), Tensor::f32(d.to_vec(), v).unwrap()));
    }
    fn rand(&mut self, rng: &mut Rng, name: &str, d: &[usize], lo: f32, hi: f32) {
        let n = d.iter().product();
        let v = rng.fs(n, lo, hi);
        self.f32(name, d, v);
    }
    fn i32(&mut self, name: &str, d: &[usize], v: Vec<i32>) {
        let _ = writeln!(self.decls, "  input %{name}: i32{}", dims(d));
        self.inputs
            .push((name.into(), Tensor::new(d.to_vec(), Data::I32(v)).unwrap()));
    }
    fn done(self, body: &str) -> Case {
        Case {
            text: format!("graph @t {{\n{}\n{body}\n  output y = %y\n}}\n", self.decls),
            inputs: self.inputs,
        }
    }
}

/// Random sizes: mostly small, often not a multiple of 4, sometimes 1.
fn size(rng: &mut Rng, max: i64) -> usize {
    match rng.int(0, 5) {
        0 => 1,
        1 => 4 * rng.int(1, (max / 4).max(1)) as usize,
        _ => rng.int(1, max) as usize,
    }
}

fn elementwise(rng: &mut Rng, op: &str, lo: f32, hi: f32) -> Case {
    let (n, c) = (size(rng, 9), size(rng, 23));
    let mut b = B::new();
    b.rand(rng, "x", &[n, c], lo, hi);
    b.done(&format!("  %y = {op}(%x) : f32[{n}, {c}]"))
}

fn binary(rng: &mut Rng, op: &str, attrs: &str) -> Case {
    let (n, c) = (size(rng, 9), size(rng, 23));
    let mut b = B::new();
    b.rand(rng, "a", &[n, c], -2.0, 2.0);
    // the second operand broadcasts over rows half the time
    let bd = if rng.int(0, 1) == 0 {
        vec![c]
    } else {
        vec![n, c]
    };
    let lo = if op == "div" { 0.25 } else { -2.0 };
    b.rand(rng, "b", &bd, lo, 2.0);
    b.done(&format!("  %y = {op}(%a, %b){attrs} : f32[{n}, {c}]"))
}

fn grad_of(rng: &mut Rng, op: &str, lo: f32, hi: f32) -> Case {
    let (n, c) = (size(rng, 9), size(rng, 23));
    let mut b = B::new();
    b.rand(rng, "dy", &[n, c], -1.0, 1.0);
    b.rand(rng, "x", &[n, c], lo, hi);
    b.done(&format!("  %y = {op}(%dy, %x) : f32[{n}, {c}]"))
}

/// Per-tensor or per-channel (axis 1) quantization parameters for a [n, c] tensor.
fn qparams(rng: &mut Rng, b: &mut B, c: usize, learnable: bool) -> (String, u64) {
    let per_channel = rng.int(0, 1) == 1;
    let pd: Vec<usize> = if per_channel { vec![c] } else { vec![] };
    let k = pd.iter().product::<usize>().max(1);
    let (qmin, qmax) = if rng.int(0, 1) == 0 {
        (-128, 127)
    } else {
        (0, 255)
    };
    let scales = (0..k).map(|_| rng.f(0.01, 0.1)).collect();
    b.f32("scale", &pd, scales);
    let zps: Vec<i64> = (0..k)
        .map(|_| rng.int(qmin, qmax) / if qmin < 0 { 4 } else { 1 })
        .collect();
    if learnable {
        b.f32("zp", &pd, zps.iter().map(|&z| z as f32).collect());
    } else {
        b.i32("zp", &pd, zps.iter().map(|&z| z as i32).collect());
    }
    let axis = if per_channel { ", axis = 1" } else { "" };
    (format!("qmin = {qmin}, qmax = {qmax}{axis}"), 0)
}

fn fake_quant(rng: &mut Rng, op: &str, backward: bool, learnable: bool, extra: &str) -> Case {
    let (n, c) = (size(rng, 9), size(rng, 23));
    let mut b = B::new();
    if backward {
        b.rand(rng, "dy", &[n, c], -1.0, 1.0);
    }
    b.rand(rng, "x", &[n, c], -8.0, 8.0);
    let (attrs, _) = qparams(rng, &mut b, c, learnable);
    let args = if backward {
        "%dy, %x, %scale, %zp"
    } else {
        "%x, %scale, %zp"
    };
    let ty = if op.ends_with("grad_scale") || op.ends_with("grad_zero_point") {
        // the gradient of a parameter has the parameter's shape
        if attrs.contains("axis") {
            format!("f32[{c}]")
        } else {
            "f32[]".into()
        }
    } else {
        format!("f32[{n}, {c}]")
    };
    b.done(&format!("  %y = {op}({args}) {{{attrs}{extra}}} : {ty}"))
}

fn reduction(rng: &mut Rng, op: &str, grad: bool) -> Case {
    let (n, c, h) = (size(rng, 6), size(rng, 9), size(rng, 11));
    let mut b = B::new();
    let axes: Vec<usize> = match rng.int(0, 3) {
        0 => vec![0],
        1 => vec![1],
        2 => vec![2],
        _ => vec![0, 2],
    };
    let keep = rng.int(0, 1) == 1;
    let full = [n, c, h];
    let out: Vec<usize> = (0..3)
        .filter_map(|i| {
            if axes.contains(&i) {
                keep.then_some(1)
            } else {
                Some(full[i])
            }
        })
        .collect();
    let attrs = format!(
        "{{axes = [{}], keepdims = {keep}}}",
        axes.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if grad {
        b.rand(rng, "dy", &out, -1.0, 1.0);
        b.rand(rng, "x", &full, -2.0, 2.0);
        b.done(&format!(
            "  %y = {op}(%dy, %x) {attrs} : f32{}",
            dims(&full)
        ))
    } else {
        b.rand(rng, "x", &full, -2.0, 2.0);
        b.done(&format!("  %y = {op}(%x) {attrs} : f32{}", dims(&out)))
    }
}

/// The case of `op` with its tolerance, or `None` if it has no generator.
fn case(op: Op, rng: &mut Rng) -> Option<(Case, Tol)> {
    use Tol::*;
    let c = match op {
        Op::Relu => (elementwise(rng, "relu", -2.0, 2.0), Exact),
        Op::Relu6 => (elementwise(rng, "relu6", -3.0, 9.0), Exact),
        Op::Neg => (elementwise(rng, "neg", -2.0, 2.0), Exact),
        Op::Sqrt => (elementwise(rng, "sqrt", 0.0, 4.0), Exact),
        Op::Sigmoid => (elementwise(rng, "sigmoid", -6.0, 6.0), Ulps),
        Op::Tanh => (elementwise(rng, "tanh", -4.0, 4.0), Ulps),
        Op::Gelu => (elementwise(rng, "gelu", -4.0, 4.0), Ulps),
        Op::Exp => (elementwise(rng, "exp", -4.0, 4.0), Ulps),
        Op::Log => (elementwise(rng, "log", 0.01, 4.0), Ulps),
        Op::Add => (binary(rng, "add", " {act = relu}"), Exact),
        Op::Sub => (binary(rng, "sub", ""), Exact),
        Op::Mul => (binary(rng, "mul", ""), Exact),
        Op::Div => (binary(rng, "div", ""), Exact),
        Op::ReluGrad => (grad_of(rng, "relu_grad", -2.0, 2.0), Exact),
        Op::Relu6Grad => (grad_of(rng, "relu6_grad", -3.0, 9.0), Exact),
        Op::SigmoidGrad => (grad_of(rng, "sigmoid_grad", 0.0, 1.0), Exact),
        Op::TanhGrad => (grad_of(rng, "tanh_grad", -1.0, 1.0), Exact),
        Op::GeluGrad => (grad_of(rng, "gelu_grad", -4.0, 4.0), Ulps),
        Op::FakeQuant => (fake_quant(rng, "fake_quant", false, false, ""), Exact),
        Op::FakeQuantGrad => (fake_quant(rng, "fake_quant_grad", true, false, ""), Exact),
        Op::FakeQuantLsq => (fake_quant(rng, "fake_quant_lsq", false, true, ""), Exact),
        Op::FakeQuantLsqGradX => (
            fake_quant(rng, "fake_quant_lsq_grad_x", true, true, ""),
            Exact,
        ),
        Op::FakeQuantLsqGradScale => (
            fake_quant(
                rng,
                "fake_quant_lsq_grad_scale",
                true,
                true,
                ", grad_scale = 0.5",
            ),
            Sum,
        ),
        Op::FakeQuantLsqGradZeroPoint => (
            fake_quant(
                rng,
                "fake_quant_lsq_grad_zero_point",
                true,
                true,
                ", grad_scale = 0.5",
            ),
            Sum,
        ),
        Op::ReduceSum => (reduction(rng, "reduce_sum", false), Sum),
        Op::ReduceMean => (reduction(rng, "reduce_mean", false), Sum),
        Op::Variance => (reduction(rng, "variance", false), Sum),
        Op::ReduceMeanGrad => (reduction(rng, "reduce_mean_grad", true), Sum),
        Op::VarianceGrad => (reduction(rng, "variance_grad", true), Sum),
        _ => return None,
    };
    Some(c)
}

/// Runs `case` on both executors; `Err` describes the first disagreement.
fn compare(op: Op, case: &Case, tol: Tol) -> Result<(), String> {
    let g = qir_reader::parse_and_verify(&case.text).map_err(|d| {
        format!(
            "{op}: generated graph does not verify:\n{}\n{}",
            qir_reader::render(&d, "t", &case.text),
            case.text
        )
    })?;
    let inputs: HashMap<String, Tensor> = case.inputs.iter().cloned().collect();
    let store = init_store(&g, 1).unwrap();
    let a = qir_interp::Interpreter::default()
        .prepare(&g, &[])
        .unwrap()
        .run(&mut store.clone(), &inputs)
        .map_err(|e| format!("{op}: interpreter: {e}\n{}", case.text))?;
    let b = qir_jit::Jit::default()
        .prepare(&g, &[])
        .map_err(|e| format!("{op}: the JIT cannot prepare it: {e}\n{}", case.text))?
        .run(&mut store.clone(), &inputs)
        .map_err(|e| format!("{op}: JIT: {e}\n{}", case.text))?;
    let (x, y) = (&a.outputs["y"], &b.outputs["y"]);
    if x.shape != y.shape {
        return Err(format!("{op}: shape {:?} vs {:?}", x.shape, y.shape));
    }
    for (i, (p, q)) in x.data.to_f64().iter().zip(y.data.to_f64()).enumerate() {
        let ok = match tol {
            Tol::Exact => p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
            Tol::Ulps => (p - q).abs() <= 1e-6 * p.abs().max(1e-30) || p == &q,
            Tol::Sum => (p - q).abs() <= 1e-5 * (1.0 + p.abs()),
        };
        if !ok {
            return Err(format!(
                "{op} ({tol:?}): element {i}: interpreter {p}, JIT {q}\n{}",
                case.text
            ));
        }
    }
    Ok(())
}

#[test]
fn jit_every_op_has_a_generator() {
    let missing: Vec<String> = Op::ALL
        .iter()
        .filter(|&&op| case(op, &mut Rng(1)).is_none())
        .map(|op| op.to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} ops have no generator: {}",
        missing.len(),
        Op::ALL.len(),
        missing.join(", ")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn jit_matches_the_interpreter_on_every_op(seed in any::<u64>()) {
        let mut fails = Vec::new();
        for &op in Op::ALL {
            let mut rng = Rng(seed ^ (op as u64).wrapping_mul(0x9e3779b97f4a7c15));
            if let Some((c, tol)) = case(op, &mut rng)
                && let Err(e) = compare(op, &c, tol)
            {
                fails.push(e);
            }
        }
        prop_assert!(fails.is_empty(), "{}", fails.join("\n\n"));
    }
}
