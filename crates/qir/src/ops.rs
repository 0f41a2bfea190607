//! The op table: every op of the IR declared once, with its mnemonic (which is also its
//! text form and its e-graph symbol), operands, attributes, class and documentation.
//!
//! Each op's doc has three parts the language reference is generated from: a summary line,
//! a `shape:` line (the shape rule) and an `example:` line (a line of `.qir` that parses).
//! Ops produce exactly one value. Match on [`Op`] exhaustively: adding an op must make the
//! compiler list every place that needs to learn about it.

use crate::attr::AttrSpec;
use crate::attr::spec::*;

/// Broad families of ops, used for listing, rendering and pass decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// Float forward computation.
    Forward,
    /// Fake quantization (quantize-dequantize in float, with an STE backward).
    FakeQuant,
    /// Range observers and the derivation of quantization parameters.
    Observer,
    /// Real quantization and the integer ops of a converted graph.
    Integer,
    /// Ops introduced by the grad pass for the backward graph.
    Backward,
    /// Optimizer state and parameter updates.
    Optimizer,
    /// Collective communication between the replicas of a data-parallel run.
    Collective,
}

impl OpClass {
    pub fn name(self) -> &'static str {
        match self {
            OpClass::Forward => "forward",
            OpClass::FakeQuant => "fake-quant",
            OpClass::Observer => "observer",
            OpClass::Integer => "integer",
            OpClass::Backward => "backward",
            OpClass::Optimizer => "optimizer",
            OpClass::Collective => "collective",
        }
    }
}

/// Static description of one op.
#[derive(Debug)]
pub struct OpInfo {
    pub mnemonic: &'static str,
    pub class: OpClass,
    /// Operand names, comma separated: `x, w, b?` (`?` marks a trailing optional operand,
    /// `...` a variadic operand taking one or more values).
    pub operands: &'static str,
    pub attrs: &'static [AttrSpec],
    pub doc: &'static str,
}

impl OpInfo {
    pub fn operand_names(&self) -> impl Iterator<Item = &'static str> {
        self.operands
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
    /// Minimum and maximum number of operands (`None` = unbounded).
    pub fn arity(&self) -> (usize, Option<usize>) {
        let mut min = 0;
        let mut max = Some(0usize);
        for name in self.operand_names() {
            if name.ends_with("...") {
                min += 1;
                max = None;
            } else if name.ends_with('?') {
                max = max.map(|m| m + 1);
            } else {
                min += 1;
                max = max.map(|m| m + 1);
            }
        }
        (min, max)
    }
    pub fn attr_index(&self, name: &str) -> Option<usize> {
        self.attrs.iter().position(|a| a.name == name)
    }
    /// The summary line of the doc.
    pub fn summary(&self) -> &'static str {
        self.doc.lines().map(str::trim).next().unwrap_or("")
    }
    fn doc_line(&self, key: &str) -> &'static str {
        self.doc
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or("")
    }
    /// The shape rule from the doc.
    pub fn shape_rule(&self) -> &'static str {
        self.doc_line("shape:")
    }
    /// The one-line example from the doc.
    pub fn example(&self) -> &'static str {
        self.doc_line("example:")
    }
}

const ACT: &[&str] = &["none", "relu", "relu6"];
const REDUCTION: &[&str] = &["mean", "sum"];
/// How `all_reduce` combines the replicas' tensors.
const COLLECTIVE: &[&str] = &["sum", "mean", "min", "max"];
const ROUNDING: &[&str] = &["half_even", "half_away_from_zero"];
/// How the LSQ backward rounds its float zero point: `nearest` as the forward does
/// (`clamp(nearbyint(zp))`), or `torch`, PyTorch's `trunc(clamp(zp + 0.5))`, which is one
/// step off for negative zero points (the forward and backward then disagree on which
/// values are clipped).
const ZP_ROUNDING: &[&str] = &["nearest", "torch"];
const CONV: [AttrSpec; 4] = [
    ints("stride", &[1, 1]),
    ints("padding", &[0, 0, 0, 0]),
    ints("dilation", &[1, 1]),
    int("groups", 1),
];

macro_rules! define_ops {
    ($( $(#[doc = $doc:literal])* $variant:ident = $mn:literal, $class:ident, $operands:literal, [$($attr:expr),* $(,)?]; )*) => {
        /// An operation of the IR.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Op {
            /// Every op, in table order.
            pub const ALL: &'static [Op] = &[$(Op::$variant),*];

            /// The table entry of this op.
            pub fn info(self) -> &'static OpInfo {
                match self {
                    $( Op::$variant => {
                        static INFO: OpInfo = OpInfo {
                            mnemonic: $mn,
                            class: OpClass::$class,
                            operands: $operands,
                            attrs: &[$($attr),*],
                            doc: concat!($($doc, "\n"),*),
                        };
                        &INFO
                    } )*
                }
            }
        }
    };
}

define_ops! {
    // ---- forward: contractions --------------------------------------------------------
    /// Fully connected layer `y = x · wᵀ + b`, with an optional fused activation.
    /// shape: x [N, K], w [M, K], b [M] -> [N, M]
    /// example: %h = linear(%x, %fc.w, %fc.b) : f32[B, 32]
    Linear = "linear", Forward, "x, w, b?", [choice("act", ACT, "none")];
    /// Matrix product of two 2-D tensors, either side optionally transposed.
    /// shape: a [M, K] (or [K, M] with transpose_a), b [K, N] (or [N, K]) -> [M, N]
    /// example: %g = matmul(%dy, %x) {transpose_a = true} : f32[10, 32]
    Matmul = "matmul", Forward, "a, b", [boolean("transpose_a", false), boolean("transpose_b", false)];
    /// 2-D convolution over NCHW input with OIHW weights; `padding` is [top, left, bottom, right];
    /// `groups` = C gives a depthwise convolution.
    /// shape: x [N, C, H, W], w [O, C/groups, KH, KW], b [O] -> [N, O, OH, OW]
    /// example: %c = conv2d(%x, %c1.w, %c1.b) {padding = [1, 1, 1, 1]} : f32[B, 8, 28, 28]
    Conv2d = "conv2d", Forward, "x, w, b?", [CONV[0], CONV[1], CONV[2], CONV[3], choice("act", ACT, "none")];

    // ---- forward: pooling and normalization -------------------------------------------
    /// 2-D max pooling; `stride` defaults to `kernel`; padding cells never win.
    /// shape: x [N, C, H, W] -> [N, C, OH, OW]
    /// example: %p = max_pool2d(%a) {kernel = [2, 2]} : f32[B, 8, 14, 14]
    MaxPool2d = "max_pool2d", Forward, "x", [ints_req("kernel"), ints_opt("stride"), ints("padding", &[0, 0, 0, 0])];
    /// 2-D average pooling; `stride` defaults to `kernel`; padding cells are not counted
    /// unless `count_include_pad`.
    /// shape: x [N, C, H, W] -> [N, C, OH, OW]
    /// example: %p = avg_pool2d(%a) {kernel = [2, 2]} : f32[B, 8, 14, 14]
    AvgPool2d = "avg_pool2d", Forward, "x", [ints_req("kernel"), ints_opt("stride"), ints("padding", &[0, 0, 0, 0]), boolean("count_include_pad", false)];
    /// Mean over the spatial dimensions.
    /// shape: x [N, C, H, W] -> [N, C, 1, 1]
    /// example: %g = global_avg_pool(%a) : f32[B, 64, 1, 1]
    GlobalAvgPool = "global_avg_pool", Forward, "x", [];
    /// Batch normalization with given statistics (inference form, channel axis 1):
    /// `y = gamma * (x - mean) / sqrt(var + eps) + beta`.
    /// shape: x [N, C, ...], gamma/beta/mean/var [C] -> [N, C, ...]
    /// example: %n = batch_norm(%c, %bn.gamma, %bn.beta, %bn.mean, %bn.var) : f32[B, 8, 28, 28]
    BatchNorm = "batch_norm", Forward, "x, gamma, beta, mean, var", [float("eps", 1e-5)];
    /// Batch normalization in training mode: normalizes with the batch's own mean and
    /// (biased) variance over every axis but 1.
    /// shape: x [N, C, ...], gamma/beta [C] -> [N, C, ...]
    /// example: %n = batch_norm_train(%c, %bn.gamma, %bn.beta) : f32[B, 8, 28, 28]
    BatchNormTrain = "batch_norm_train", Forward, "x, gamma, beta", [float("eps", 1e-5)];

    // ---- forward: elementwise ---------------------------------------------------------
    /// `max(x, 0)`.
    /// shape: x -> x
    /// example: %a = relu(%h) : f32[B, 32]
    Relu = "relu", Forward, "x", [];
    /// `min(max(x, 0), 6)`.
    /// shape: x -> x
    /// example: %a = relu6(%h) : f32[B, 32]
    Relu6 = "relu6", Forward, "x", [];
    /// Logistic sigmoid.
    /// shape: x -> x
    /// example: %a = sigmoid(%h) : f32[B, 32]
    Sigmoid = "sigmoid", Forward, "x", [];
    /// Hyperbolic tangent.
    /// shape: x -> x
    /// example: %a = tanh(%h) : f32[B, 32]
    Tanh = "tanh", Forward, "x", [];
    /// GELU with the exact erf form `x * (1 + erf(x / sqrt(2))) / 2`.
    /// shape: x -> x
    /// example: %a = gelu(%h) : f32[B, 32]
    Gelu = "gelu", Forward, "x", [];
    /// `-x`.
    /// shape: x -> x
    /// example: %n = neg(%h) : f32[B, 32]
    Neg = "neg", Forward, "x", [];
    /// `e^x`.
    /// shape: x -> x
    /// example: %e = exp(%h) : f32[B, 32]
    Exp = "exp", Forward, "x", [];
    /// Natural logarithm.
    /// shape: x -> x
    /// example: %l = log(%h) : f32[B, 32]
    Log = "log", Forward, "x", [];
    /// Square root.
    /// shape: x -> x
    /// example: %s = sqrt(%v) : f32[32]
    Sqrt = "sqrt", Forward, "x", [];
    /// Elementwise sum with NumPy broadcasting, optional fused activation.
    /// shape: a, b broadcast -> broadcast(a, b)
    /// example: %s = add(%a, %b) : f32[B, 8, 14, 14]
    Add = "add", Forward, "a, b", [choice("act", ACT, "none")];
    /// Elementwise difference with broadcasting.
    /// shape: a, b broadcast -> broadcast(a, b)
    /// example: %d = sub(%a, %b) : f32[B, 32]
    Sub = "sub", Forward, "a, b", [];
    /// Elementwise product with broadcasting.
    /// shape: a, b broadcast -> broadcast(a, b)
    /// example: %p = mul(%a, %b) : f32[B, 32]
    Mul = "mul", Forward, "a, b", [];
    /// Elementwise quotient with broadcasting.
    /// shape: a, b broadcast -> broadcast(a, b)
    /// example: %q = div(%a, %b) : f32[B, 32]
    Div = "div", Forward, "a, b", [];

    // ---- forward: shape -----------------------------------------------------------------
    /// Reshape to `shape`; one entry may be -1 (inferred, may be symbolic).
    /// Works on any element type, quantized included.
    /// shape: x -> shape
    /// example: %r = reshape(%s) {shape = [1, 8, 1, 1]} : f32[1, 8, 1, 1]
    Reshape = "reshape", Forward, "x", [ints_req("shape")];
    /// Collapse the dimensions from `axis` on into one. Works on any element type.
    /// shape: x [d0, .., dk, ..] -> [d0, .., d(k-1), dk*..]
    /// example: %f = flatten(%p) : f32[B, 392]
    Flatten = "flatten", Forward, "x", [int("axis", 1)];
    /// Permute dimensions.
    /// shape: x -> x permuted by perm
    /// example: %t = transpose(%w) {perm = [1, 0]} : f32[64, 32]
    Transpose = "transpose", Forward, "x", [ints_req("perm")];
    /// Join tensors along `axis`; all other dimensions must agree. Works on any element
    /// type when all inputs have the same type apart from `axis`.
    /// shape: xs [.., ai, ..] -> [.., sum(ai), ..]
    /// example: %c = concat(%a, %b) {axis = 1} : f32[B, 16, 14, 14]
    Concat = "concat", Forward, "inputs...", [int_req("axis")];
    /// The slice `start..end` of `axis`.
    /// shape: x [.., d, ..] -> [.., end-start, ..]
    /// example: %s = slice(%c) {axis = 1, start = 0, end = 8} : f32[B, 8, 14, 14]
    Slice = "slice", Forward, "x", [int_req("axis"), int_req("start"), int_req("end")];

    // ---- forward: reductions and losses ------------------------------------------------
    /// Sum over `axes`.
    /// shape: x -> x without axes (kept as 1 with keepdims)
    /// example: %s = reduce_sum(%dy) {axes = [0]} : f32[10]
    ReduceSum = "reduce_sum", Forward, "x", [ints_req("axes"), boolean("keepdims", false)];
    /// Mean over `axes`.
    /// shape: x -> x without axes (kept as 1 with keepdims)
    /// example: %m = reduce_mean(%x) {axes = [0, 2, 3]} : f32[8]
    ReduceMean = "reduce_mean", Forward, "x", [ints_req("axes"), boolean("keepdims", false)];
    /// Biased variance over `axes`.
    /// shape: x -> x without axes (kept as 1 with keepdims)
    /// example: %v = variance(%x) {axes = [0, 2, 3]} : f32[8]
    Variance = "variance", Forward, "x", [ints_req("axes"), boolean("keepdims", false)];
    /// Softmax along `axis`.
    /// shape: x -> x
    /// example: %p = softmax(%logits) : f32[B, 10]
    Softmax = "softmax", Forward, "x", [int("axis", -1)];
    /// Log-softmax along `axis`.
    /// shape: x -> x
    /// example: %p = log_softmax(%logits) : f32[B, 10]
    LogSoftmax = "log_softmax", Forward, "x", [int("axis", -1)];
    /// Softmax cross-entropy of logits against integer class labels, reduced over the batch.
    /// shape: logits [N, C], labels i32/i64 [N] -> []
    /// example: %loss = softmax_cross_entropy(%logits, %label) : f32[]
    SoftmaxCrossEntropy = "softmax_cross_entropy", Forward, "logits, labels", [choice("reduction", REDUCTION, "mean")];
    /// Index of the largest value along `axis` (first on ties), as i64.
    /// shape: x -> x without axis
    /// example: %pred = argmax(%logits) : i64[B]
    Argmax = "argmax", Forward, "x", [int("axis", -1)];
    /// Exponential moving average `(1 - momentum) * running + momentum * value`, as used for
    /// batch-norm running statistics.
    /// shape: running, value (same shape) -> running
    /// example: %m1 = ema(%bn.mean, %bm) {momentum = 0.1} : f32[8]
    Ema = "ema", Forward, "running, value", [float("momentum", 0.1)];
    /// Broadcast `x` to the shape of `like` (NumPy rules).
    /// shape: x, like -> like
    /// example: %b = broadcast_like(%s, %x) : f32[B, 32]
    BroadcastLike = "broadcast_like", Forward, "x, like", [];
    /// Sum `x` down to the shape of `like` (the adjoint of broadcasting).
    /// shape: x, like -> like
    /// example: %g = sum_to_like(%dy, %b) : f32[32]
    SumToLike = "sum_to_like", Forward, "x, like", [];

    // ---- fake quantization ---------------------------------------------------------------
    /// Quantize-dequantize in float: `q = clamp(round_half_even(x * (1/scale)) + zp, qmin, qmax)`,
    /// `y = (q - zp) * scale` (PyTorch multiplies by the f32 inverse scale). Per-tensor when
    /// scale is a scalar, per-channel along `axis` when it is a vector. Clipped STE backward.
    /// shape: x, scale [] or [C], zero_point i32 like scale -> x
    /// example: %q = fake_quant(%x, %x.scale, %x.zp) {qmin = -128, qmax = 127} : f32[B, 64]
    FakeQuant = "fake_quant", FakeQuant, "x, scale, zero_point", [int_req("qmin"), int_req("qmax"), int_opt("axis")];
    /// Fake quantization with learned step size (LSQ; LSQ+ with `learn_zero_point`): the
    /// scale (and zero point, f32) are trained. `grad_scale` defaults to 1/sqrt(numel * qmax),
    /// numel per channel.
    /// shape: x, scale [] or [C], zero_point f32 like scale -> x
    /// `zero_point_rounding` says how the backward rounds the float zero point: `nearest`
    /// (the forward's rounding) or `torch` (PyTorch's `trunc(zp + 0.5)`, kept for
    /// conformance; it disagrees with the forward for negative zero points).
    /// example: %q = fake_quant_lsq(%w, %w.scale, %w.zp) {qmin = -8, qmax = 7, axis = 0} : f32[32, 64]
    FakeQuantLsq = "fake_quant_lsq", FakeQuant, "x, scale, zero_point", [int_req("qmin"), int_req("qmax"), int_opt("axis"), float_opt("grad_scale"), boolean("learn_zero_point", false), choice("zero_point_rounding", ZP_ROUNDING, "nearest")];

    // ---- observers -------------------------------------------------------------------------
    /// Running minimum of `x` (per channel along `axis` if given): `min(running, min(x))`, or
    /// with `averaging` c the EMA `running + c * (min(x) - running)`. A running value of
    /// +inf means "nothing observed yet" and is replaced by the batch value.
    /// shape: x, running [] or [C] -> running
    /// example: %mn1 = observe_min(%x, %x.min) {averaging = 0.01} : f32[]
    ObserveMin = "observe_min", Observer, "x, running", [int_opt("axis"), float_opt("averaging")];
    /// Running maximum; the mirror of `observe_min` (-inf means nothing observed yet).
    /// shape: x, running [] or [C] -> running
    /// example: %mx1 = observe_max(%x, %x.max) {averaging = 0.01} : f32[]
    ObserveMax = "observe_max", Observer, "x, running", [int_opt("axis"), float_opt("averaging")];
    /// Scale from an observed range: the range is widened to include 0; affine:
    /// `(max - min) / (qmax - qmin)`, symmetric: `max(-min, max) / ((qmax - qmin) / 2)`;
    /// rounded up to a power of two with `power_of_two`; never below `eps`.
    /// shape: min, max [] or [C] -> min
    /// example: %s = qparams_scale(%mn1, %mx1) {qmin = -128, qmax = 127} : f32[]
    QparamsScale = "qparams_scale", Observer, "min, max", [int_req("qmin"), int_req("qmax"), boolean("symmetric", false), boolean("power_of_two", false), float("eps", 1.1920929e-7)];
    /// Zero point from an observed range (same rules as `qparams_scale`):
    /// affine `clamp(qmin - round(min / scale), qmin, qmax)`; symmetric 0 for signed ranges
    /// and the midpoint for unsigned ones.
    /// shape: min, max [] or [C] -> i32 like min
    /// example: %z = qparams_zero_point(%mn1, %mx1) {qmin = -128, qmax = 127} : i32[]
    QparamsZeroPoint = "qparams_zero_point", Observer, "min, max", [int_req("qmin"), int_req("qmax"), boolean("symmetric", false), boolean("power_of_two", false), float("eps", 1.1920929e-7)];

    // ---- integer ops of the converted graph ---------------------------------------------
    /// Quantize f32 to the quantized result type: `q = clamp(zp + round(x * (1 / scale)), qmin,
    /// qmax)`, the product taken with the f32 inverse scale as `fake_quant` does, so that
    /// `dequantize(quantize(x))` equals `fake_quant(x)` bit for bit with `rounding =
    /// half_even`. `rounding` (required: every file states it) says how ties round.
    /// shape: x -> result type (written)
    /// example: %xq = quantize(%x) {rounding = half_even} : !quant.uniform<i8:f32, 0.0627451:-128>[B, 64]
    Quantize = "quantize", Integer, "x", [choice_req("rounding", ROUNDING)];
    /// Dequantize to f32: `(q - zp) * scale`.
    /// shape: q -> f32 like q
    /// example: %x = dequantize(%yq) : f32[B, 10]
    Dequantize = "dequantize", Integer, "q", [];
    /// Rescale int32 accumulators (or a quantized tensor) to the quantized result type with
    /// the fixed-point multiplier `multiplier` (Q0.31) and right `shift`, one per channel
    /// along `axis` or one for all: `y = clamp(zp + round((x - zx) * multiplier / 2^(31 +
    /// shift)), lo, hi)`, one exact rounding as `rounding` says (required), the fused
    /// activation folded into the clamp bounds `[lo, hi]`.
    /// shape: x -> result type (written)
    /// example: %y = requantize(%acc) {multiplier = [1288490189], shift = [7], rounding = half_even} : !quant.uniform<i8:f32, 0.05:-128>[B, 32]
    Requantize = "requantize", Integer, "x", [ints_req("multiplier"), ints_req("shift"), int_opt("axis"), choice_req("rounding", ROUNDING), choice("act", ACT, "none")];
    /// Integer fully connected layer: int32 accumulation of `(x - zx) · (w - zw)ᵀ + b`.
    /// shape: x q[N, K], w q[M, K], b i32[M] -> i32[N, M]
    /// example: %acc = qlinear(%xq, %wq, %bq) : i32[B, 32]
    Qlinear = "qlinear", Integer, "x, w, b?", [];
    /// Integer convolution with int32 accumulation (attributes as `conv2d`).
    /// shape: x q[N, C, H, W], w q[O, C/groups, KH, KW], b i32[O] -> i32[N, O, OH, OW]
    /// example: %acc = qconv2d(%xq, %wq, %bq) {padding = [1, 1, 1, 1]} : i32[B, 8, 28, 28]
    Qconv2d = "qconv2d", Integer, "x, w, b?", [CONV[0], CONV[1], CONV[2], CONV[3]];
    /// Integer addition of two quantized tensors, rescaled to the result type:
    /// `zp + round((a - za) * sa / s + (b - zb) * sb / s)`, each ratio a Q0.31 multiplier,
    /// the terms summed exactly and rounded once as `rounding` says (required); optional
    /// fused activation folded into the clamp.
    /// shape: a, b broadcast -> result type (written)
    /// example: %s = qadd(%aq, %bq) {rounding = half_even} : !quant.uniform<i8:f32, 0.1:-5>[B, 8, 14, 14]
    Qadd = "qadd", Integer, "a, b", [choice_req("rounding", ROUNDING), choice("act", ACT, "none")];
    /// Integer concatenation: each input is rescaled to the result type (its scale ratio a
    /// Q0.31 multiplier, rounded as `rounding` says, required).
    /// shape: as concat -> result type (written)
    /// example: %c = qconcat(%aq, %bq) {axis = 1, rounding = half_even} : !quant.uniform<i8:f32, 0.1:-5>[B, 16, 14, 14]
    Qconcat = "qconcat", Integer, "inputs...", [int_req("axis"), choice_req("rounding", ROUNDING)];
    /// Integer global average pooling: the exact sum of each plane rescaled by `s_in / (s *
    /// H * W)` (a Q0.31 multiplier) to the result type, rounded once as `rounding` says
    /// (required).
    /// shape: x q[N, C, H, W] -> result type (written) [N, C, 1, 1]
    /// example: %g = qglobal_avg_pool(%aq) {rounding = half_even} : !quant.uniform<i8:f32, 0.02:-128>[B, 64, 1, 1]
    QglobalAvgPool = "qglobal_avg_pool", Integer, "x", [choice_req("rounding", ROUNDING)];

    // ---- backward ------------------------------------------------------------------------
    /// Gradient of relu: `dy * (x > 0)`; `x` may be relu's input or output.
    /// shape: dy, x -> x
    /// example: %dx = relu_grad(%dy, %h) : f32[B, 32]
    ReluGrad = "relu_grad", Backward, "dy, x", [];
    /// Gradient of relu6: `dy * (0 < x < 6)`; `x` may be relu6's input or output.
    /// shape: dy, x -> x
    /// example: %dx = relu6_grad(%dy, %h) : f32[B, 32]
    Relu6Grad = "relu6_grad", Backward, "dy, x", [];
    /// Gradient of sigmoid from its output: `dy * y * (1 - y)`.
    /// shape: dy, y -> y
    /// example: %dx = sigmoid_grad(%dy, %y) : f32[B, 32]
    SigmoidGrad = "sigmoid_grad", Backward, "dy, y", [];
    /// Gradient of tanh from its output: `dy * (1 - y^2)`.
    /// shape: dy, y -> y
    /// example: %dx = tanh_grad(%dy, %y) : f32[B, 32]
    TanhGrad = "tanh_grad", Backward, "dy, y", [];
    /// Gradient of the exact GELU from its input.
    /// shape: dy, x -> x
    /// example: %dx = gelu_grad(%dy, %x) : f32[B, 32]
    GeluGrad = "gelu_grad", Backward, "dy, x", [];
    /// Gradient of conv2d with respect to its input (a transposed convolution).
    /// shape: dy [N, O, OH, OW], w [O, C/groups, KH, KW] -> [N, C, input_size]
    /// example: %dx = conv2d_grad_input(%dy, %w) {input_size = [28, 28]} : f32[B, 1, 28, 28]
    Conv2dGradInput = "conv2d_grad_input", Backward, "dy, w", [CONV[0], CONV[1], CONV[2], CONV[3], ints_req("input_size")];
    /// Gradient of conv2d with respect to its weights.
    /// shape: dy [N, O, OH, OW], x [N, C, H, W] -> [O, C/groups, kernel]
    /// example: %dw = conv2d_grad_weight(%dy, %x) {kernel = [3, 3]} : f32[8, 1, 3, 3]
    Conv2dGradWeight = "conv2d_grad_weight", Backward, "dy, x", [CONV[0], CONV[1], CONV[2], CONV[3], ints_req("kernel")];
    /// Gradient of max_pool2d: `dy` routed to the first maximum of each window.
    /// shape: dy [N, C, OH, OW], x [N, C, H, W] -> x
    /// example: %dx = max_pool2d_grad(%dy, %a) {kernel = [2, 2]} : f32[B, 8, 28, 28]
    MaxPool2dGrad = "max_pool2d_grad", Backward, "dy, x", [ints_req("kernel"), ints_opt("stride"), ints("padding", &[0, 0, 0, 0])];
    /// Gradient of avg_pool2d: `dy` spread evenly over each window.
    /// shape: dy [N, C, OH, OW] -> [N, C, input_size]
    /// example: %dx = avg_pool2d_grad(%dy) {kernel = [2, 2], input_size = [28, 28]} : f32[B, 8, 28, 28]
    AvgPool2dGrad = "avg_pool2d_grad", Backward, "dy", [ints_req("kernel"), ints_opt("stride"), ints("padding", &[0, 0, 0, 0]), boolean("count_include_pad", false), ints_req("input_size")];
    /// Gradient of global_avg_pool: `dy / (H * W)` broadcast over the window.
    /// shape: dy [N, C, 1, 1] -> [N, C, input_size]
    /// example: %dx = global_avg_pool_grad(%dy) {input_size = [7, 7]} : f32[B, 64, 7, 7]
    GlobalAvgPoolGrad = "global_avg_pool_grad", Backward, "dy", [ints_req("input_size")];
    /// Gradient of batch_norm (given statistics) with respect to x: `dy * gamma / sqrt(var + eps)`.
    /// shape: dy [N, C, ...], gamma [C], var [C] -> dy
    /// example: %dx = batch_norm_grad_input(%dy, %bn.gamma, %bn.var) : f32[B, 8, 28, 28]
    BatchNormGradInput = "batch_norm_grad_input", Backward, "dy, gamma, var", [float("eps", 1e-5)];
    /// Gradient of batch_norm (given statistics) with respect to gamma: `sum(dy * x_hat)`.
    /// shape: dy [N, C, ...], x, mean [C], var [C] -> [C]
    /// example: %dg = batch_norm_grad_gamma(%dy, %c, %bn.mean, %bn.var) : f32[8]
    BatchNormGradGamma = "batch_norm_grad_gamma", Backward, "dy, x, mean, var", [float("eps", 1e-5)];
    /// Gradient of batch_norm_train with respect to x:
    /// `gamma / sigma_B * (dy - mean(dy) - x_hat * mean(dy * x_hat))` per channel.
    /// shape: dy [N, C, ...], x, gamma [C] -> x
    /// example: %dx = batch_norm_train_grad_input(%dy, %c, %bn.gamma) : f32[B, 8, 28, 28]
    BatchNormTrainGradInput = "batch_norm_train_grad_input", Backward, "dy, x, gamma", [float("eps", 1e-5)];
    /// Gradient of batch_norm_train with respect to gamma: `sum(dy * x_hat)` with batch statistics.
    /// shape: dy [N, C, ...], x -> [C]
    /// example: %dg = batch_norm_train_grad_gamma(%dy, %c) : f32[8]
    BatchNormTrainGradGamma = "batch_norm_train_grad_gamma", Backward, "dy, x", [float("eps", 1e-5)];
    /// Gradient of reduce_mean: `dy` broadcast back over `axes`, divided by their size.
    /// shape: dy, x -> x
    /// example: %dx = reduce_mean_grad(%dy, %x) {axes = [0]} : f32[B, 32]
    ReduceMeanGrad = "reduce_mean_grad", Backward, "dy, x", [ints_req("axes"), boolean("keepdims", false)];
    /// Gradient of variance: `dy * 2 * (x - mean) / n` over `axes`.
    /// shape: dy, x -> x
    /// example: %dx = variance_grad(%dy, %x) {axes = [0]} : f32[B, 32]
    VarianceGrad = "variance_grad", Backward, "dy, x", [ints_req("axes"), boolean("keepdims", false)];
    /// Gradient of softmax from its output: `y * (dy - sum(dy * y))`.
    /// shape: dy, y -> y
    /// example: %dx = softmax_grad(%dy, %p) : f32[B, 10]
    SoftmaxGrad = "softmax_grad", Backward, "dy, y", [int("axis", -1)];
    /// Gradient of log_softmax from its output: `dy - exp(y) * sum(dy)`.
    /// shape: dy, y -> y
    /// example: %dx = log_softmax_grad(%dy, %p) : f32[B, 10]
    LogSoftmaxGrad = "log_softmax_grad", Backward, "dy, y", [int("axis", -1)];
    /// Gradient of softmax_cross_entropy with respect to the logits:
    /// `dloss * (softmax(logits) - onehot(labels))`, divided by N for the mean reduction.
    /// shape: dloss [], logits [N, C], labels [N] -> logits
    /// example: %dl = softmax_cross_entropy_grad(%one, %logits, %label) : f32[B, 10]
    SoftmaxCrossEntropyGrad = "softmax_cross_entropy_grad", Backward, "dloss, logits, labels", [choice("reduction", REDUCTION, "mean")];
    /// Clipped straight-through estimator of fake_quant: `dy` where
    /// `qmin <= round(x * (1/scale)) + zp <= qmax`, else 0.
    /// shape: dy, x, scale, zero_point -> x
    /// example: %dx = fake_quant_grad(%dy, %x, %x.scale, %x.zp) {qmin = -128, qmax = 127} : f32[B, 64]
    FakeQuantGrad = "fake_quant_grad", Backward, "dy, x, scale, zero_point", [int_req("qmin"), int_req("qmax"), int_opt("axis")];
    /// LSQ gradient with respect to x (clipped STE, as PyTorch's learnable fake-quant, with
    /// the zero point rounded as `zero_point_rounding` says).
    /// shape: dy, x, scale, zero_point -> x
    /// example: %dx = fake_quant_lsq_grad_x(%dy, %w, %w.scale, %w.zp) {qmin = -8, qmax = 7, axis = 0} : f32[32, 64]
    FakeQuantLsqGradX = "fake_quant_lsq_grad_x", Backward, "dy, x, scale, zero_point", [int_req("qmin"), int_req("qmax"), int_opt("axis"), choice("zero_point_rounding", ZP_ROUNDING, "nearest")];
    /// LSQ gradient with respect to the scale, summed per tensor or per channel:
    /// `(q - zp) - x / scale` in range, `qmin - zp` / `qmax - zp` outside, times grad_scale.
    /// shape: dy, x, scale, zero_point -> scale
    /// example: %ds = fake_quant_lsq_grad_scale(%dy, %w, %w.scale, %w.zp) {qmin = -8, qmax = 7, axis = 0} : f32[32]
    FakeQuantLsqGradScale = "fake_quant_lsq_grad_scale", Backward, "dy, x, scale, zero_point", [int_req("qmin"), int_req("qmax"), int_opt("axis"), float_opt("grad_scale"), choice("zero_point_rounding", ZP_ROUNDING, "nearest")];
    /// LSQ+ gradient with respect to the zero point: `-dy * scale * grad_scale` outside the
    /// range, 0 inside, summed per tensor or per channel.
    /// shape: dy, x, scale, zero_point -> zero_point
    /// example: %dz = fake_quant_lsq_grad_zero_point(%dy, %x, %x.scale, %x.zp) {qmin = 0, qmax = 255} : f32[]
    FakeQuantLsqGradZeroPoint = "fake_quant_lsq_grad_zero_point", Backward, "dy, x, scale, zero_point", [int_req("qmin"), int_req("qmax"), int_opt("axis"), float_opt("grad_scale"), choice("zero_point_rounding", ZP_ROUNDING, "nearest")];

    // ---- optimizer -----------------------------------------------------------------------
    /// SGD step `p - lr * (g + weight_decay * p)`; `g` is the gradient or the momentum buffer.
    /// shape: p, g, lr [] -> p
    /// example: %w1 = sgd_update(%w, %gw, %lr) : f32[32, 64]
    SgdUpdate = "sgd_update", Optimizer, "param, grad, lr", [float("weight_decay", 0.0)];
    /// SGD momentum buffer `momentum * buf + (1 - dampening) * (g + weight_decay * p)`.
    /// shape: buf, g, p -> buf
    /// example: %b1 = sgd_momentum(%w.buf, %gw, %w) {momentum = 0.9} : f32[32, 64]
    SgdMomentum = "sgd_momentum", Optimizer, "buf, grad, param", [float_req("momentum"), float("dampening", 0.0), float("weight_decay", 0.0)];
    /// Adam moment update `beta * m + (1 - beta) * g'^order` with `g' = g + weight_decay * p`
    /// (L2 decay; AdamW decouples it in adam_update instead); order 1 or 2.
    /// shape: m, g, p -> m
    /// example: %m1 = adam_moment(%w.m, %gw, %w) {beta = 0.9} : f32[32, 64]
    AdamMoment = "adam_moment", Optimizer, "m, grad, param", [float_req("beta"), int("order", 1), float("weight_decay", 0.0)];
    /// Adam(W) parameter step with bias correction at step `step` (counting from 1):
    /// `p - s * m / (sqrt(v) * r + eps) - lr * weight_decay * p` with the step size
    /// `s = lr / (1 - beta1^t)` and `r = 1 / sqrt(1 - beta2^t)` (per-step scalars: one
    /// division per element; PyTorch's `addcdiv` form up to the rounding of `r`).
    /// shape: p, m, v, step [], lr [] -> p
    /// example: %w1 = adam_update(%w, %m1, %v1, %step1, %lr) : f32[32, 64]
    AdamUpdate = "adam_update", Optimizer, "param, m, v, step, lr", [float("beta1", 0.9), float("beta2", 0.999), float("eps", 1e-8), float("weight_decay", 0.0)];

    // ---- collectives ---------------------------------------------------------------------
    /// Elementwise reduction of `x` over every replica of a data-parallel run (`op` = sum,
    /// mean, min or max); every replica gets the same result. With one process it is the
    /// identity. The executor's communicator performs it (MPI in a distributed run).
    /// shape: x -> x
    /// example: %g = all_reduce(%gw) {op = mean} : f32[32, 64]
    AllReduce = "all_reduce", Collective, "x", [choice_req("op", COLLECTIVE)];
}

impl Op {
    /// Looks an op up by its mnemonic.
    pub fn from_mnemonic(s: &str) -> Option<Op> {
        Op::ALL.iter().copied().find(|op| op.info().mnemonic == s)
    }
    pub fn mnemonic(self) -> &'static str {
        self.info().mnemonic
    }
    pub fn class(self) -> OpClass {
        self.info().class
    }
    /// True for the fake-quant family (rendered specially, targeted by QAT passes).
    pub fn is_fake_quant(self) -> bool {
        self.class() == OpClass::FakeQuant
    }
    /// Ops whose result type cannot be inferred from operands and must be written in text
    /// (quantization parameters of the result live in the result type).
    pub fn result_type_is_written(self) -> bool {
        matches!(
            self,
            Op::Quantize | Op::Requantize | Op::Qadd | Op::Qconcat | Op::QglobalAvgPool
        )
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.mnemonic())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for &op in Op::ALL {
            let info = op.info();
            assert!(
                seen.insert(info.mnemonic),
                "duplicate mnemonic {}",
                info.mnemonic
            );
            assert_eq!(Op::from_mnemonic(info.mnemonic), Some(op));
            assert!(!info.summary().is_empty(), "{op}: no summary");
            assert!(!info.shape_rule().is_empty(), "{op}: no shape rule");
            assert!(
                info.example().contains(&format!("= {}(", info.mnemonic)),
                "{op}: example does not use the op"
            );
            let mut names = std::collections::HashSet::new();
            for a in info.attrs {
                assert!(names.insert(a.name), "{op}: duplicate attribute {}", a.name);
            }
            let (min, max) = info.arity();
            assert!(max.is_none_or(|m| m >= min));
        }
    }

    #[test]
    fn rounding_policies_are_always_written() {
        // STYLE #13: a policy that decides numbers is visible in every file, so no
        // `rounding` attribute has a default.
        let mut seen = 0;
        for &op in Op::ALL {
            for a in op.info().attrs.iter().filter(|a| a.name == "rounding") {
                seen += 1;
                assert!(
                    matches!(a.default, crate::attr::AttrDefault::Required),
                    "{op}: 'rounding' has a default"
                );
            }
        }
        assert_eq!(
            seen, 5,
            "quantize, requantize, qadd, qconcat, qglobal_avg_pool"
        );
    }

    #[test]
    fn arity() {
        assert_eq!(Op::Linear.info().arity(), (2, Some(3)));
        assert_eq!(Op::Concat.info().arity(), (1, None));
        assert_eq!(Op::BatchNorm.info().arity(), (5, Some(5)));
    }
}
