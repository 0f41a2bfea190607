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
    /// Sums of `n` products each at most `max` in magnitude, in another order: each
    /// addition rounds by at most `eps / 2` of its operands (a term and a partial sum of
    /// about the result's size), and the errors of an order wander like a random walk of
    /// `sqrt(n)` steps: four times `sqrt(n) * eps * (max + |result|)` bounds the difference
    /// of two orders.
    Terms(usize, f64),
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
        if self.next().is_multiple_of(2) {
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

fn contraction(rng: &mut Rng, op: Op) -> Case {
    let (n, k, o) = (size(rng, 7), size(rng, 37), size(rng, 19));
    let mut b = B::new();
    b.rand(rng, "x", &[n, k], -2.0, 2.0);
    match op {
        Op::Linear => {
            b.rand(rng, "w", &[o, k], -1.0, 1.0);
            b.rand(rng, "bias", &[o], -1.0, 1.0);
            b.done(&format!(
                "  %y = linear(%x, %w, %bias) {{act = relu}} : f32[{n}, {o}]"
            ))
        }
        _ => {
            let tb = rng.int(0, 1) == 1;
            let wd = if tb { [o, k] } else { [k, o] };
            b.rand(rng, "w", &wd, -1.0, 1.0);
            b.done(&format!(
                "  %y = matmul(%x, %w) {{transpose_b = {tb}}} : f32[{n}, {o}]"
            ))
        }
    }
}

/// Convolution geometry: batch, channels in/out, input size, kernel, stride, padding.
struct Conv {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    groups: usize,
}
impl Conv {
    fn random(rng: &mut Rng, depthwise: bool) -> Conv {
        let k = rng.int(1, 3) as usize;
        let s = rng.int(1, 2) as usize;
        let p = rng.int(0, (k as i64 - 1).max(0)) as usize;
        let ci = size(rng, 5);
        let (co, groups) = if depthwise {
            (ci, ci)
        } else {
            (size(rng, 6), 1)
        };
        Conv {
            n: size(rng, 3),
            ci,
            co,
            h: k + rng.int(0, 7) as usize,
            w: k + rng.int(0, 8) as usize,
            k,
            s,
            p,
            groups,
        }
    }
    fn out(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.p - self.k) / self.s + 1,
            (self.w + 2 * self.p - self.k) / self.s + 1,
        )
    }
    fn attrs(&self) -> String {
        let (s, p) = (self.s, self.p);
        format!(
            "stride = [{s}, {s}], padding = [{p}, {p}, {p}, {p}], groups = {}",
            self.groups
        )
    }
    fn wdims(&self) -> [usize; 4] {
        [self.co, self.ci / self.groups, self.k, self.k]
    }
}

fn conv(rng: &mut Rng, op: Op) -> Case {
    let depthwise = rng.int(0, 3) == 0;
    let c = Conv::random(rng, depthwise);
    let (oh, ow) = c.out();
    let mut b = B::new();
    let xd = [c.n, c.ci, c.h, c.w];
    let yd = [c.n, c.co, oh, ow];
    let at = c.attrs();
    match op {
        Op::Conv2d => {
            b.rand(rng, "x", &xd, -2.0, 2.0);
            b.rand(rng, "w", &c.wdims(), -1.0, 1.0);
            b.rand(rng, "bias", &[c.co], -1.0, 1.0);
            b.done(&format!(
                "  %y = conv2d(%x, %w, %bias) {{{at}}} : f32{}",
                dims(&yd)
            ))
        }
        Op::Conv2dGradInput => {
            b.rand(rng, "dy", &yd, -1.0, 1.0);
            b.rand(rng, "w", &c.wdims(), -1.0, 1.0);
            b.done(&format!(
                "  %y = conv2d_grad_input(%dy, %w) {{{at}, input_size = [{}, {}]}} : f32{}",
                c.h,
                c.w,
                dims(&xd)
            ))
        }
        _ => {
            b.rand(rng, "dy", &yd, -1.0, 1.0);
            b.rand(rng, "x", &xd, -2.0, 2.0);
            b.done(&format!(
                "  %y = conv2d_grad_weight(%dy, %x) {{{at}, kernel = [{k}, {k}]}} : f32{}",
                dims(&c.wdims()),
                k = c.k
            ))
        }
    }
}

fn pool(rng: &mut Rng, op: Op) -> Case {
    let (n, c) = (size(rng, 3), size(rng, 5));
    let k = rng.int(1, 3) as usize;
    let s = rng.int(1, 3) as usize;
    let (h, w) = (k + rng.int(0, 7) as usize, k + rng.int(0, 8) as usize);
    let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
    let mut b = B::new();
    let xd = [n, c, h, w];
    let yd = [n, c, oh, ow];
    let at = format!("kernel = [{k}, {k}], stride = [{s}, {s}]");
    match op {
        Op::MaxPool2d | Op::AvgPool2d => {
            b.rand(rng, "x", &xd, -2.0, 2.0);
            b.done(&format!("  %y = {op}(%x) {{{at}}} : f32{}", dims(&yd)))
        }
        Op::MaxPool2dGrad => {
            b.rand(rng, "dy", &yd, -1.0, 1.0);
            // a coarse grid makes ties inside a window
            let v = (0..xd.iter().product())
                .map(|_| rng.int(-3, 3) as f32)
                .collect();
            b.f32("x", &xd, v);
            b.done(&format!(
                "  %y = max_pool2d_grad(%dy, %x) {{{at}}} : f32{}",
                dims(&xd)
            ))
        }
        Op::AvgPool2dGrad => {
            b.rand(rng, "dy", &yd, -1.0, 1.0);
            b.done(&format!(
                "  %y = avg_pool2d_grad(%dy) {{{at}, input_size = [{h}, {w}]}} : f32{}",
                dims(&xd)
            ))
        }
        Op::GlobalAvgPool => {
            b.rand(rng, "x", &xd, -2.0, 2.0);
            b.done(&format!("  %y = global_avg_pool(%x) : f32[{n}, {c}, 1, 1]"))
        }
        _ => {
            b.rand(rng, "dy", &[n, c, 1, 1], -1.0, 1.0);
            b.done(&format!(
                "  %y = global_avg_pool_grad(%dy) {{input_size = [{h}, {w}]}} : f32{}",
                dims(&xd)
            ))
        }
    }
}

fn softmaxes(rng: &mut Rng, op: Op) -> Case {
    let (n, c) = (size(rng, 9), size(rng, 23));
    let mut b = B::new();
    match op {
        Op::Softmax | Op::LogSoftmax | Op::Argmax => {
            // ties for argmax: a coarse grid
            let v = (0..n * c).map(|_| rng.int(-8, 8) as f32 / 2.0).collect();
            b.f32("x", &[n, c], v);
            let ty = if op == Op::Argmax {
                format!("i64[{n}]")
            } else {
                format!("f32[{n}, {c}]")
            };
            b.done(&format!("  %y = {op}(%x) : {ty}"))
        }
        Op::SoftmaxGrad | Op::LogSoftmaxGrad => {
            b.rand(rng, "dy", &[n, c], -1.0, 1.0);
            b.rand(rng, "out", &[n, c], 0.0, 1.0);
            b.done(&format!("  %y = {op}(%dy, %out) : f32[{n}, {c}]"))
        }
        Op::SoftmaxCrossEntropy => {
            b.rand(rng, "logits", &[n, c], -4.0, 4.0);
            let l = (0..n).map(|_| rng.int(0, c as i64 - 1) as i32).collect();
            b.i32("labels", &[n], l);
            b.done("  %y = softmax_cross_entropy(%logits, %labels) : f32[]")
        }
        _ => {
            b.rand(rng, "dloss", &[], 0.5, 2.0);
            b.rand(rng, "logits", &[n, c], -4.0, 4.0);
            let l = (0..n).map(|_| rng.int(0, c as i64 - 1) as i32).collect();
            b.i32("labels", &[n], l);
            b.done(&format!(
                "  %y = softmax_cross_entropy_grad(%dloss, %logits, %labels) : f32[{n}, {c}]"
            ))
        }
    }
}

fn movement(rng: &mut Rng, op: Op) -> Case {
    let (n, c, h) = (size(rng, 5), size(rng, 7), size(rng, 9));
    let mut b = B::new();
    b.rand(rng, "x", &[n, c, h], -2.0, 2.0);
    match op {
        Op::Reshape => b.done(&format!(
            "  %y = reshape(%x) {{shape = [{n}, {}]}} : f32[{n}, {}]",
            c * h,
            c * h
        )),
        Op::Flatten => b.done(&format!("  %y = flatten(%x) : f32[{n}, {}]", c * h)),
        Op::Transpose => b.done(&format!(
            "  %y = transpose(%x) {{perm = [2, 0, 1]}} : f32[{h}, {n}, {c}]"
        )),
        Op::Concat => {
            let c2 = size(rng, 7);
            b.rand(rng, "x2", &[n, c2, h], -2.0, 2.0);
            b.done(&format!(
                "  %y = concat(%x, %x2) {{axis = 1}} : f32[{n}, {}, {h}]",
                c + c2
            ))
        }
        Op::Slice => {
            let start = rng.int(0, h as i64 - 1);
            let end = rng.int(start + 1, h as i64);
            b.done(&format!(
                "  %y = slice(%x) {{axis = 2, start = {start}, end = {end}}} : f32[{n}, {c}, {}]",
                end - start
            ))
        }
        Op::BroadcastLike => {
            let mut b = B::new();
            b.rand(rng, "x", &[c, 1], -2.0, 2.0);
            b.rand(rng, "like", &[n, c, h], -2.0, 2.0);
            b.done(&format!(
                "  %y = broadcast_like(%x, %like) : f32[{n}, {c}, {h}]"
            ))
        }
        _ => {
            b.rand(rng, "like", &[c, 1], -2.0, 2.0);
            b.done(&format!("  %y = sum_to_like(%x, %like) : f32[{c}, 1]"))
        }
    }
}

fn observer(rng: &mut Rng, op: Op) -> Case {
    let (n, c) = (size(rng, 9), size(rng, 23));
    let mut b = B::new();
    match op {
        Op::ObserveMin | Op::ObserveMax => {
            b.rand(rng, "x", &[n, c], -4.0, 4.0);
            let per_channel = rng.int(0, 1) == 1;
            let rd: Vec<usize> = if per_channel { vec![c] } else { vec![] };
            b.rand(rng, "running", &rd, -3.0, 3.0);
            let mut at = Vec::new();
            if per_channel {
                at.push("axis = 1".to_string());
            }
            if rng.int(0, 1) == 1 {
                at.push("averaging = 0.01".to_string());
            }
            let at = if at.is_empty() {
                String::new()
            } else {
                format!(" {{{}}}", at.join(", "))
            };
            b.done(&format!("  %y = {op}(%x, %running){at} : f32{}", dims(&rd)))
        }
        Op::Ema => {
            b.rand(rng, "running", &[c], -3.0, 3.0);
            b.rand(rng, "value", &[c], -3.0, 3.0);
            b.done(&format!(
                "  %y = ema(%running, %value) {{momentum = 0.1}} : f32[{c}]"
            ))
        }
        _ => {
            b.rand(rng, "min", &[c], -4.0, 0.0);
            b.rand(rng, "max", &[c], 0.0, 4.0);
            let sym = rng.int(0, 1) == 1;
            let ty = if op == Op::QparamsScale { "f32" } else { "i32" };
            b.done(&format!(
                "  %y = {op}(%min, %max) {{qmin = -128, qmax = 127, symmetric = {sym}}} : {ty}[{c}]"
            ))
        }
    }
}

fn optimizer(rng: &mut Rng, op: Op) -> Case {
    let (n, c) = (size(rng, 9), size(rng, 23));
    let mut b = B::new();
    let d = [n, c];
    match op {
        Op::SgdUpdate => {
            b.rand(rng, "param", &d, -1.0, 1.0);
            b.rand(rng, "grad", &d, -1.0, 1.0);
            b.rand(rng, "lr", &[], 0.01, 0.1);
            b.done(&format!(
                "  %y = sgd_update(%param, %grad, %lr) {{weight_decay = 0.01}} : f32[{n}, {c}]"
            ))
        }
        Op::SgdMomentum => {
            b.rand(rng, "buf", &d, -1.0, 1.0);
            b.rand(rng, "grad", &d, -1.0, 1.0);
            b.rand(rng, "param", &d, -1.0, 1.0);
            b.done(&format!(
                "  %y = sgd_momentum(%buf, %grad, %param) {{momentum = 0.9, weight_decay = 0.01}} : f32[{n}, {c}]"
            ))
        }
        Op::AdamUpdate => {
            b.rand(rng, "param", &d, -1.0, 1.0);
            b.rand(rng, "m", &d, -1.0, 1.0);
            b.rand(rng, "v", &d, 0.0, 1.0);
            let step = rng.int(1, 20) as f32;
            b.f32("step", &[], vec![step]);
            b.rand(rng, "lr", &[], 0.001, 0.1);
            b.done(&format!(
                "  %y = adam_update(%param, %m, %v, %step, %lr) {{weight_decay = 0.01}} : f32[{n}, {c}]"
            ))
        }
        _ => {
            b.rand(rng, "m", &d, -1.0, 1.0);
            b.rand(rng, "grad", &d, -1.0, 1.0);
            b.rand(rng, "param", &d, -1.0, 1.0);
            let order = rng.int(1, 2);
            b.done(&format!(
                "  %y = adam_moment(%m, %grad, %param) {{beta = 0.9, order = {order}}} : f32[{n}, {c}]"
            ))
        }
    }
}

fn batch_norm(rng: &mut Rng, op: Op) -> Case {
    let (n, c, h, w) = (size(rng, 3), size(rng, 5), size(rng, 5), size(rng, 6));
    let xd = [n, c, h, w];
    let mut b = B::new();
    let ty = format!("f32{}", dims(&xd));
    match op {
        Op::BatchNorm => {
            b.rand(rng, "x", &xd, -2.0, 2.0);
            b.rand(rng, "gamma", &[c], 0.5, 1.5);
            b.rand(rng, "beta", &[c], -0.5, 0.5);
            b.rand(rng, "mean", &[c], -0.5, 0.5);
            b.rand(rng, "var", &[c], 0.5, 2.0);
            b.done(&format!(
                "  %y = batch_norm(%x, %gamma, %beta, %mean, %var) : {ty}"
            ))
        }
        Op::BatchNormTrain => {
            b.rand(rng, "x", &xd, -2.0, 2.0);
            b.rand(rng, "gamma", &[c], 0.5, 1.5);
            b.rand(rng, "beta", &[c], -0.5, 0.5);
            b.done(&format!(
                "  %y = batch_norm_train(%x, %gamma, %beta) : {ty}"
            ))
        }
        Op::BatchNormGradInput => {
            b.rand(rng, "dy", &xd, -1.0, 1.0);
            b.rand(rng, "gamma", &[c], 0.5, 1.5);
            b.rand(rng, "var", &[c], 0.5, 2.0);
            b.done(&format!(
                "  %y = batch_norm_grad_input(%dy, %gamma, %var) : {ty}"
            ))
        }
        Op::BatchNormGradGamma => {
            b.rand(rng, "dy", &xd, -1.0, 1.0);
            b.rand(rng, "x", &xd, -2.0, 2.0);
            b.rand(rng, "mean", &[c], -0.5, 0.5);
            b.rand(rng, "var", &[c], 0.5, 2.0);
            b.done(&format!(
                "  %y = batch_norm_grad_gamma(%dy, %x, %mean, %var) : f32[{c}]"
            ))
        }
        Op::BatchNormTrainGradInput => {
            b.rand(rng, "dy", &xd, -1.0, 1.0);
            b.rand(rng, "x", &xd, -2.0, 2.0);
            b.rand(rng, "gamma", &[c], 0.5, 1.5);
            b.done(&format!(
                "  %y = batch_norm_train_grad_input(%dy, %x, %gamma) : {ty}"
            ))
        }
        _ => {
            b.rand(rng, "dy", &xd, -1.0, 1.0);
            b.rand(rng, "x", &xd, -2.0, 2.0);
            b.done(&format!(
                "  %y = batch_norm_train_grad_gamma(%dy, %x) : f32[{c}]"
            ))
        }
    }
}

/// `quantize` to int8 or uint8 (per tensor, random scale and zero point, both rounding
/// policies) followed by `dequantize`: the case of both ops.
fn quantize(rng: &mut Rng) -> Case {
    let (n, c) = (size(rng, 9), size(rng, 23));
    let mut b = B::new();
    b.rand(rng, "x", &[n, c], -4.0, 4.0);
    let scale = [0.0078125, 0.02, 0.05, 0.1][rng.int(0, 3) as usize];
    let (st, zp) = if rng.int(0, 1) == 0 {
        ("i8", rng.int(-20, 20))
    } else {
        ("u8", rng.int(100, 150))
    };
    let rounding = ["half_even", "half_away_from_zero"][rng.int(0, 1) as usize];
    b.done(&format!(
        "  %q = quantize(%x) {{rounding = {rounding}}} : !quant.uniform<{st}:f32, {scale}:{zp}>[{n}, {c}]\n  %y = dequantize(%q) : f32[{n}, {c}]"
    ))
}

/// The integer ops: operands quantized from f32 inputs inside the graph (so they are
/// run-time values), the op, then `dequantize` (or the raw i32 accumulator).
fn integer(rng: &mut Rng, op: Op) -> Case {
    let (n, c) = (size(rng, 5), size(rng, 21));
    let mut b = B::new();
    let rounding = ["half_even", "half_away_from_zero"][rng.int(0, 1) as usize];
    let q = |scale: f32, zp: i64| format!("!quant.uniform<i8:f32, {scale}:{zp}>");
    let (sa, za) = (rng.f(0.01, 0.05), rng.int(-10, 10));
    let (sb, zb) = (rng.f(0.01, 0.05), rng.int(-10, 10));
    let (so, zo) = (rng.f(0.02, 0.08), rng.int(-10, 10));
    let quant = |name: &str, d: &str, scale: f32, zp: i64| {
        format!(
            "  %{name}q = quantize(%{name}) {{rounding = half_even}} : {}{d}\n",
            q(scale, zp)
        )
    };
    match op {
        Op::Requantize => {
            let acc = (0..n * c).map(|_| rng.int(-40000, 40000) as i32).collect();
            b.i32("acc", &[n, c], acc);
            let mult: Vec<String> = (0..c)
                .map(|_| rng.int(1 << 30, (1 << 31) - 1).to_string())
                .collect();
            let shift: Vec<String> = (0..c).map(|_| rng.int(6, 12).to_string()).collect();
            b.done(&format!(
                "  %r = requantize(%acc) {{multiplier = [{}], shift = [{}], axis = 1, rounding = {rounding}, act = relu}} : {}[{n}, {c}]\n  %y = dequantize(%r) : f32[{n}, {c}]",
                mult.join(", "),
                shift.join(", "),
                q(0.05, -9)
            ))
        }
        Op::Qlinear => {
            let o = size(rng, 13);
            b.rand(rng, "x", &[n, c], -1.0, 1.0);
            b.rand(rng, "w", &[o, c], -1.0, 1.0);
            let bias = (0..o).map(|_| rng.int(-300, 300) as i32).collect();
            b.i32("bias", &[o], bias);
            let wq = "!quant.uniform<i8<-127:127>:f32, 0.0078125:0>";
            b.done(&format!(
                "{}  %wq = quantize(%w) {{rounding = half_even}} : {wq}[{o}, {c}]\n  %y = qlinear(%xq, %wq, %bias) : i32[{n}, {o}]",
                quant("x", &format!("[{n}, {c}]"), sa, za)
            ))
        }
        Op::Qconv2d => {
            let cv = Conv::random(rng, false);
            let (oh, ow) = cv.out();
            let xd = [cv.n, cv.ci, cv.h, cv.w];
            b.rand(rng, "x", &xd, -1.0, 1.0);
            b.rand(rng, "w", &cv.wdims(), -1.0, 1.0);
            let wq = "!quant.uniform<i8<-127:127>:f32, 0.0078125:0>";
            let at = cv.attrs();
            b.done(&format!(
                "{}  %wq = quantize(%w) {{rounding = half_even}} : {wq}{}\n  %y = qconv2d(%xq, %wq) {{{at}}} : i32[{}, {}, {oh}, {ow}]",
                quant("x", &dims(&xd), sa, za),
                dims(&cv.wdims()),
                cv.n,
                cv.co
            ))
        }
        Op::Qadd => {
            b.rand(rng, "a", &[n, c], -1.0, 1.0);
            b.rand(rng, "b", &[n, c], -1.0, 1.0);
            let d = format!("[{n}, {c}]");
            b.done(&format!(
                "{}{}  %r = qadd(%aq, %bq) {{rounding = {rounding}}} : {}{d}\n  %y = dequantize(%r) : f32{d}",
                quant("a", &d, sa, za),
                quant("b", &d, sb, zb),
                q(so, zo)
            ))
        }
        Op::Qconcat => {
            let c2 = size(rng, 9);
            b.rand(rng, "a", &[n, c], -1.0, 1.0);
            b.rand(rng, "b", &[n, c2], -1.0, 1.0);
            b.done(&format!(
                "{}{}  %r = qconcat(%aq, %bq) {{axis = 1, rounding = {rounding}}} : {}[{n}, {}]\n  %y = dequantize(%r) : f32[{n}, {}]",
                quant("a", &format!("[{n}, {c}]"), sa, za),
                quant("b", &format!("[{n}, {c2}]"), sb, zb),
                q(so, zo),
                c + c2,
                c + c2
            ))
        }
        _ => {
            let (h, w) = (size(rng, 6), size(rng, 7));
            let xd = [n, c, h, w];
            b.rand(rng, "x", &xd, -1.0, 1.0);
            b.done(&format!(
                "{}  %r = qglobal_avg_pool(%xq) {{rounding = {rounding}}} : {}[{n}, {c}, 1, 1]\n  %y = dequantize(%r) : f32[{n}, {c}, 1, 1]",
                quant("x", &dims(&xd), sa, za),
                q(so, zo)
            ))
        }
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
        Op::Linear | Op::Matmul => (contraction(rng, op), Sum),
        Op::Conv2d | Op::Conv2dGradInput | Op::Conv2dGradWeight => (conv(rng, op), Sum),
        Op::MaxPool2d | Op::MaxPool2dGrad => (pool(rng, op), Exact),
        Op::AvgPool2d | Op::AvgPool2dGrad | Op::GlobalAvgPool | Op::GlobalAvgPoolGrad => {
            (pool(rng, op), Sum)
        }
        Op::Softmax
        | Op::LogSoftmax
        | Op::SoftmaxGrad
        | Op::LogSoftmaxGrad
        | Op::SoftmaxCrossEntropy
        | Op::SoftmaxCrossEntropyGrad => (softmaxes(rng, op), Sum),
        Op::Argmax => (softmaxes(rng, op), Exact),
        Op::Reshape | Op::Flatten | Op::Transpose | Op::Concat | Op::Slice | Op::BroadcastLike => {
            (movement(rng, op), Exact)
        }
        Op::SumToLike => (movement(rng, op), Sum),
        Op::ObserveMin | Op::ObserveMax | Op::QparamsScale | Op::QparamsZeroPoint => {
            (observer(rng, op), Exact)
        }
        Op::Ema => (observer(rng, op), Exact),
        // one process: every collective is the identity on both executors
        Op::AllReduce => {
            let which = ["sum", "mean", "min", "max"][rng.int(0, 3) as usize];
            let (n, c) = (size(rng, 9), size(rng, 23));
            let mut b = B::new();
            b.rand(rng, "x", &[n, c], -4.0, 4.0);
            let case = b.done(&format!(
                "  %y = all_reduce(%x) {{op = {which}}} : f32[{n}, {c}]"
            ));
            (case, Exact)
        }
        Op::SgdUpdate | Op::SgdMomentum | Op::AdamMoment => (optimizer(rng, op), Exact),
        Op::AdamUpdate => (optimizer(rng, op), Ulps),
        Op::Quantize | Op::Dequantize => (quantize(rng), Exact),
        Op::Requantize
        | Op::Qlinear
        | Op::Qconv2d
        | Op::Qadd
        | Op::Qconcat
        | Op::QglobalAvgPool => (integer(rng, op), Exact),
        Op::BatchNorm
        | Op::BatchNormTrain
        | Op::BatchNormGradInput
        | Op::BatchNormGradGamma
        | Op::BatchNormTrainGradInput
        | Op::BatchNormTrainGradGamma => (batch_norm(rng, op), Sum),
        // a new op compiles without a generator; `jit_every_op_has_a_generator` names it
        #[allow(unreachable_patterns)]
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
            Tol::Terms(n, max) => {
                (p - q).abs() <= 4.0 * (n as f64).sqrt() * f32::EPSILON as f64 * (max + p.abs())
            }
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

/// The per-tensor input `quantize` of converted models (a kernel, 16 values per AVX-512
/// step, the rest one by one) equals the interpreter on ties of both parities, values past
/// both ends of the range, infinities and NaN, in every lane and in the tail, to i8 and u8.
#[test]
fn jit_input_quantize_matches_the_interpreter_on_special_values() {
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1e30,
        -1e30,
    ];
    let x: Vec<f32> = (0..3 * 37)
        .map(|i| match i % 11 {
            0 => specials[(i / 11) % specials.len()],
            // exact ties k + 0.5 of the scale 0.25, both parities of k
            1..=4 => ((i as f32) - 50.0 + 0.5) * 0.25,
            k => (k as f32 - 7.0) * 17.3 + i as f32 * 0.011,
        })
        .collect();
    for (st, zp) in [("i8", -3), ("u8", 130)] {
        let case = Case {
            text: format!(
                "graph @q {{\n  input %x: f32[3, 37]\n  %q = quantize(%x) {{rounding = half_even}} : !quant.uniform<{st}:f32, 0.25:{zp}>[3, 37]\n  %y = dequantize(%q) : f32[3, 37]\n  output y = %y\n}}\n"
            ),
            inputs: vec![("x".into(), Tensor::f32(vec![3, 37], x.clone()).unwrap())],
        };
        compare(Op::Quantize, &case, Tol::Exact).unwrap();
    }
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

/// Convolutions large enough to run blocked over images (`conv_blocked`: the forward pass
/// without a weight gradient, and the input gradient) in several blocks, the last one
/// short — plain, grouped with stride, dilation and uneven padding — against the
/// interpreter, with the weight gradient of the same shapes (through the column matrix).
#[test]
fn jit_blocked_convolutions_match_the_interpreter() {
    use qir_jit::kernels::conv::Conv as Geom;
    let mut rng = Rng(5);
    // n, c, o, [h, w], k, stride, padding, dilation, groups
    let shapes = [
        (9, 8, 16, [20, 20], 3, 1, [1, 1, 1, 1], 1, 1),
        (5, 16, 12, [41, 37], 3, 2, [1, 0, 2, 1], 2, 2),
        (20, 1, 16, [28, 28], 3, 1, [0, 0, 0, 0], 1, 1),
    ];
    for (n, c, o, [h, w], k, s, pad, d, groups) in shapes {
        let span = d * (k - 1) + 1;
        let (oh, ow) = (
            (h + pad[0] + pad[2] - span) / s + 1,
            (w + pad[1] + pad[3] - span) / s + 1,
        );
        let geom = Geom {
            n,
            c,
            h,
            w,
            o,
            kh: k,
            kw: k,
            oh,
            ow,
            stride: [s, s],
            pad,
            dil: [d, d],
            groups,
        };
        assert!(
            n.div_ceil(geom.block_images()) >= 2,
            "{n} images in one block: the case does not test the blocking"
        );
        let at = format!(
            "stride = [{s}, {s}], padding = {}, dilation = [{d}, {d}], groups = {groups}",
            dims(&pad)
        );
        let (xd, yd, wd) = ([n, c, h, w], [n, o, oh, ow], [o, c / groups, k, k]);
        for op in [Op::Conv2d, Op::Conv2dGradInput, Op::Conv2dGradWeight] {
            let mut b = B::new();
            let case = match op {
                Op::Conv2d => {
                    b.rand(&mut rng, "x", &xd, -2.0, 2.0);
                    b.rand(&mut rng, "w", &wd, -1.0, 1.0);
                    b.done(&format!(
                        "  %y = conv2d(%x, %w) {{{at}}} : f32{}",
                        dims(&yd)
                    ))
                }
                Op::Conv2dGradInput => {
                    b.rand(&mut rng, "dy", &yd, -1.0, 1.0);
                    b.rand(&mut rng, "w", &wd, -1.0, 1.0);
                    b.done(&format!(
                        "  %y = conv2d_grad_input(%dy, %w) {{{at}, input_size = [{h}, {w}]}} : f32{}",
                        dims(&xd)
                    ))
                }
                _ => {
                    b.rand(&mut rng, "dy", &yd, -1.0, 1.0);
                    b.rand(&mut rng, "x", &xd, -2.0, 2.0);
                    b.done(&format!(
                        "  %y = conv2d_grad_weight(%dy, %x) {{{at}, kernel = [{k}, {k}]}} : f32{}",
                        dims(&wd)
                    ))
                }
            };
            let (kg, og) = (c / groups * k * k, o / groups);
            let tol = match op {
                Op::Conv2d => Tol::Terms(kg, 2.0),
                Op::Conv2dGradInput => Tol::Terms(og * k * k, 1.0),
                _ => Tol::Terms(n * oh * ow, 2.0),
            };
            if let Err(e) = compare(op, &case, tol) {
                panic!("{e}");
            }
        }
    }
}
