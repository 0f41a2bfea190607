#!/usr/bin/env python3
"""Writes the run filetests of testdata/run/ from independent NumPy references.

Every expected value here is computed by NumPy (float32 arithmetic where the op is
elementwise IEEE arithmetic, exact Python integers for the integer ops), never by qatc.
Inputs are mostly small dyadic rationals (multiples of 1/8), so sums and products are exact
whatever the summation order and those files can demand bit-exact results; files with
transcendental functions or divisions by non-powers of two state a tolerance and why.

Run from the repository root:  .venv/bin/python testdata/run/gen.py
"""

import math
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20261203)
F = np.float32

TRANSCENDENTAL = "abs=1e-6 rel=4e-6 libm and NumPy may differ in the last bit of exp/log/tanh/erf"
REDUCTION = "abs=1e-6 rel=1e-6 sums accumulate in another order and precision than NumPy's float64"


def dy(*shape, lo=-16, hi=16):
    """Dyadic values k/8."""
    return (rng.integers(lo, hi, size=shape) / 8.0).astype(F)


def fmt(a):
    a = np.asarray(a)
    out = []
    for v in a.reshape(-1):
        if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
            out.append(str(int(v)))
        elif np.isnan(v):
            out.append("nan")
        elif np.isinf(v):
            out.append("inf" if v > 0 else "-inf")
        else:
            out.append(repr(float(v)))
    return "[" + ", ".join(out) + "]"


def ty(a, elem="f32"):
    return f"{elem}[{', '.join(str(d) for d in np.asarray(a).shape)}]"


def write(name, desc, tol, inputs, expects, body, overrides=()):
    lines = [f"// run: {desc}", f"// tolerance: {tol}"]
    for n, t in overrides:
        lines.append(f"// tolerance {n}: {t}")
    for n, v in inputs:
        lines.append(f"// input {n}: {fmt(v)}")
    for n, v in expects:
        lines.append(f"// expect {n}: {fmt(v)}")
    lines.append(f"graph @{name.replace('-', '_')} {{")
    # the canonical layout (`qatc fmt`): declarations, a blank line, ops, a blank line, outputs
    body = [l for l in body.strip("\n").split("\n") if l.strip()]
    decls = [l for l in body if l.split()[0] in ("input", "const", "param", "state")]
    outs = [l for l in body if l.split()[0] == "output"]
    ops = [l for l in body if l not in decls and l not in outs]
    for i, block in enumerate(b for b in (decls, ops, outs) if b):
        if i:
            lines.append("")
        lines += ["  " + l for l in block]
    lines.append("}")
    with open(os.path.join(HERE, name + ".qir"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ---- elementwise ----------------------------------------------------------------------

x = np.array([-7.5, -1.0, -0.25, 0.0, 0.5, 3.0, 6.0, 6.5], dtype=F)
write(
    "unary-exact", "relu, relu6, neg and sqrt (correctly rounded) on both sides of their kinks",
    "exact", [("x", x)],
    [("relu", np.maximum(x, 0)), ("relu6", np.minimum(np.maximum(x, 0), 6)), ("neg", -x),
     ("sqrt", np.sqrt(np.abs(x)))],
    f"""
input %x: {ty(x)}
%r = relu(%x) : {ty(x)}
%r6 = relu6(%x) : {ty(x)}
%n = neg(%x) : {ty(x)}
%a = relu(%n) : {ty(x)}
%b = add(%r, %a) : {ty(x)}
%s = sqrt(%b) : {ty(x)}
output relu = %r
output relu6 = %r6
output neg = %n
output sqrt = %s
""")

x = np.array([-3.0, -1.25, -0.5, 0.0, 0.25, 1.0, 2.5, 4.0], dtype=F)
xd = x.astype(np.float64)
erf = np.vectorize(math.erf)
write(
    "unary-transcendental", "sigmoid, tanh, exact-erf gelu, exp, and log of exp",
    TRANSCENDENTAL, [("x", x)],
    [("sigmoid", (1 / (1 + np.exp(-xd))).astype(F)), ("tanh", np.tanh(xd).astype(F)),
     ("gelu", (xd * (1 + erf(xd / math.sqrt(2))) / 2).astype(F)), ("exp", np.exp(xd).astype(F)),
     ("log", np.log(np.exp(x.astype(F)).astype(np.float64)).astype(F))],
    f"""
input %x: {ty(x)}
%s = sigmoid(%x) : {ty(x)}
%t = tanh(%x) : {ty(x)}
%g = gelu(%x) : {ty(x)}
%e = exp(%x) : {ty(x)}
%l = log(%e) : {ty(x)}
output sigmoid = %s
output tanh = %t
output gelu = %g
output exp = %e
output log = %l
""")

a, b = dy(2, 3), dy(3)
b[b == 0] = 0.5
write(
    "binary", "add (with fused relu), sub, mul, div with broadcasting of a row vector",
    "exact", [("a", a), ("b", b)],
    [("add", np.maximum(a + b, 0)), ("sub", b - a), ("mul", a * b), ("div", a / b)],
    f"""
input %a: {ty(a)}
input %b: {ty(b)}
%s = add(%a, %b) {{act = relu}} : {ty(a)}
%d = sub(%b, %a) : {ty(a)}
%m = mul(%a, %b) : {ty(a)}
%q = div(%a, %b) : {ty(a)}
output add = %s
output sub = %d
output mul = %m
output div = %q
""")

# ---- contractions ---------------------------------------------------------------------

x, w, bias = dy(3, 5), dy(4, 5), dy(4)
m1, m2 = dy(5, 3), dy(4, 5)
write(
    "linear-matmul", "linear with bias and fused relu6, linear without bias, matmul with each transpose",
    "exact", [("x", x), ("w", w), ("b", bias), ("m1", m1), ("m2", m2)],
    [("lin", np.clip(x @ w.T + bias, 0, 6)), ("lin_nb", x @ w.T), ("mm", x @ m1),
     ("mm_ta", m1.T @ m2.T), ("mm_tb", x @ m2.T)],
    f"""
input %x: {ty(x)}
input %w: {ty(w)}
input %b: {ty(bias)}
input %m1: {ty(m1)}
input %m2: {ty(m2)}
%l = linear(%x, %w, %b) {{act = relu6}} : f32[3, 4]
%l2 = linear(%x, %w) : f32[3, 4]
%p = matmul(%x, %m1) : f32[3, 3]
%pa = matmul(%m1, %m2) {{transpose_a = true, transpose_b = true}} : f32[3, 4]
%pb = matmul(%x, %m2) {{transpose_b = true}} : f32[3, 4]
output lin = %l
output lin_nb = %l2
output mm = %p
output mm_ta = %pa
output mm_tb = %pb
""")


def conv_ref(x, w, b, stride, pad, dil, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = (h + pad[0] + pad[2] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + pad[1] + pad[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    xp = np.zeros((n, c, h + pad[0] + pad[2], wd + pad[1] + pad[3]), dtype=np.float64)
    xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    y = np.zeros((n, o, oh, ow))
    og = o // groups
    for ni in range(n):
        for oi in range(o):
            g = oi // og
            for oy in range(oh):
                for ox in range(ow):
                    s = 0.0
                    for ci in range(cg):
                        for ky in range(kh):
                            for kx in range(kw):
                                s += xp[ni, g * cg + ci, oy * stride[0] + ky * dil[0], ox * stride[1] + kx * dil[1]] * w[oi, ci, ky, kx]
                    y[ni, oi, oy, ox] = s + (b[oi] if b is not None else 0)
    return y


def conv_grads(x, w, dyv, stride, pad, dil, groups):
    """The adjoints of the (linear) convolution, by its explicit matrix."""
    n = x.size
    cols = []
    for i in range(n):
        e = np.zeros(x.size)
        e[i] = 1
        cols.append(conv_ref(e.reshape(x.shape), w, None, stride, pad, dil, groups).reshape(-1))
    a = np.stack(cols, axis=1)  # y = a @ x
    dx = (a.T @ dyv.reshape(-1)).reshape(x.shape)
    wc = []
    for i in range(w.size):
        e = np.zeros(w.size)
        e[i] = 1
        wc.append(conv_ref(x, e.reshape(w.shape), None, stride, pad, dil, groups).reshape(-1))
    bm = np.stack(wc, axis=1)
    dw = (bm.T @ dyv.reshape(-1)).reshape(w.shape)
    return dx, dw


for name, (c, o, groups, stride, pad, dil, hw) in {
    "conv2d": (2, 3, 1, [2, 1], [1, 1, 0, 2], [1, 1], (5, 6)),
    "conv2d-dilated-grouped": (4, 4, 2, [1, 2], [2, 0, 1, 1], [2, 1], (6, 5)),
    "conv2d-depthwise": (3, 3, 3, [1, 1], [1, 1, 1, 1], [1, 1], (4, 4)),
}.items():
    x, w, bias = dy(2, c, *hw), dy(o, c // groups, 3, 3), dy(o)
    y = conv_ref(x, w, bias, stride, pad, dil, groups)
    dyv = dy(*y.shape)
    dx, dw = conv_grads(x, w, dyv, stride, pad, dil, groups)
    # attributes at their defaults are left out, as the canonical printer does
    attrs = ", ".join(
        f"{k} = {v}" for k, v, default in [
            ("stride", stride, [1, 1]), ("padding", pad, [0, 0, 0, 0]),
            ("dilation", dil, [1, 1]), ("groups", groups, 1)] if v != default)
    write(
        name, f"conv2d forward (with fused relu) and both gradients: {attrs}", "exact",
        [("x", x), ("w", w), ("b", bias), ("dy", dyv)],
        [("y", np.maximum(y, 0)), ("dx", dx), ("dw", dw)],
        f"""
input %x: {ty(x)}
input %w: {ty(w)}
input %b: {ty(bias)}
input %dy: {ty(dyv)}
%y = conv2d(%x, %w, %b) {{{attrs}, act = relu}} : {ty(y)}
%dx = conv2d_grad_input(%dy, %w) {{{attrs}, input_size = [{hw[0]}, {hw[1]}]}} : {ty(x)}
%dw = conv2d_grad_weight(%dy, %x) {{{attrs}, kernel = [3, 3]}} : {ty(w)}
output y = %y
output dx = %dx
output dw = %dw
""")

# ---- pooling and normalization --------------------------------------------------------


def pool_windows(h, w, k, s, p):
    oh = (h + p[0] + p[2] - k[0]) // s[0] + 1
    ow = (w + p[1] + p[3] - k[1]) // s[1] + 1
    for oy in range(oh):
        for ox in range(ow):
            cells = [(oy * s[0] + ky - p[0], ox * s[1] + kx - p[1]) for ky in range(k[0]) for kx in range(k[1])]
            yield oy, ox, [(iy, ix) for iy, ix in cells if 0 <= iy < h and 0 <= ix < w], len(cells)


x = dy(2, 2, 5, 5)
x[0, 0, 0, 0] = x[0, 0, 0, 1] = 2.5  # a tie: the first maximum wins
k, s, p = [2, 3], [2, 2], [1, 0, 0, 1]
oh, ow = (5 + 1 - 2) // 2 + 1, (5 + 1 - 3) // 2 + 1
mp = np.zeros((2, 2, oh, ow), F)
ap = np.zeros((2, 2, oh, ow))
api = np.zeros((2, 2, oh, ow))
dyp = dy(2, 2, oh, ow)
dmp = np.zeros_like(x)
dap = np.zeros(x.shape)
for n in range(2):
    for c in range(2):
        for oy, ox, cells, full in pool_windows(5, 5, k, s, p):
            vals = [x[n, c, iy, ix] for iy, ix in cells]
            j = int(np.argmax(vals))
            mp[n, c, oy, ox] = vals[j]
            dmp[n, c, cells[j][0], cells[j][1]] += dyp[n, c, oy, ox]
            ap[n, c, oy, ox] = sum(float(v) for v in vals) / len(cells)
            api[n, c, oy, ox] = sum(float(v) for v in vals) / full
            for iy, ix in cells:
                dap[n, c, iy, ix] += dyp[n, c, oy, ox] / len(cells)
attrs = f"kernel = {k}, stride = {s}, padding = {p}"
gap = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
dg = dy(2, 2, 1, 1)
write(
    "pool", f"max, average (padding excluded and included) and global pooling with gradients: {attrs}",
    "abs=1e-6 rel=1e-6 averages divide by 3 or 6 cells, rounded once in NumPy and maybe twice in the op",
    [("x", x), ("dy", dyp), ("dg", dg)],
    [("max", mp), ("avg", ap), ("avg_incl", api), ("gap", gap), ("dmax", dmp), ("davg", dap),
     ("dgap", np.broadcast_to(dg / 25.0, x.shape))],
    f"""
input %x: {ty(x)}
input %dy: {ty(dyp)}
input %dg: {ty(dg)}
%m = max_pool2d(%x) {{{attrs}}} : {ty(mp)}
%a = avg_pool2d(%x) {{{attrs}}} : {ty(mp)}
%ai = avg_pool2d(%x) {{{attrs}, count_include_pad = true}} : {ty(mp)}
%g = global_avg_pool(%x) : {ty(dg)}
%dm = max_pool2d_grad(%dy, %x) {{{attrs}}} : {ty(x)}
%da = avg_pool2d_grad(%dy) {{{attrs}, input_size = [5, 5]}} : {ty(x)}
%dga = global_avg_pool_grad(%dg) {{input_size = [5, 5]}} : {ty(x)}
output max = %m
output avg = %a
output avg_incl = %ai
output gap = %g
output dmax = %dm
output davg = %da
output dgap = %dga
""", overrides=[("max", "exact"), ("dmax", "exact")])

x = dy(3, 2, 2, 2)
gamma, beta, mean, var = dy(2), dy(2), dy(2), np.array([0.5, 2.0], F)
eps = 1e-5
xd = x.astype(np.float64)
bshape = (1, 2, 1, 1)
bn = gamma.reshape(bshape) * (xd - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + eps) + beta.reshape(bshape)
mu = xd.mean(axis=(0, 2, 3), keepdims=True)
sig2 = xd.var(axis=(0, 2, 3), keepdims=True)
xhat = (xd - mu) / np.sqrt(sig2 + eps)
bnt = gamma.reshape(bshape) * xhat + beta.reshape(bshape)
dyv = dy(3, 2, 2, 2).astype(np.float64)
dxg = dyv * gamma.reshape(bshape) / np.sqrt(var.reshape(bshape) + eps)
dgg = (dyv * (xd - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + eps)).sum(axis=(0, 2, 3))
dxt = gamma.reshape(bshape) / np.sqrt(sig2 + eps) * (dyv - dyv.mean(axis=(0, 2, 3), keepdims=True) - xhat * (dyv * xhat).mean(axis=(0, 2, 3), keepdims=True))
dgt = (dyv * xhat).sum(axis=(0, 2, 3))
write(
    "batch-norm", "batch_norm with given statistics and in training mode, and their gradients",
    "abs=2e-6 rel=2e-5 square roots, divisions and per-channel sums in another order than NumPy's float64",
    [("x", x), ("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var), ("dy", dyv.astype(F))],
    [("bn", bn), ("bnt", bnt), ("dx", dxg), ("dgamma", dgg), ("dxt", dxt), ("dgammat", dgt)],
    f"""
input %x: {ty(x)}
input %gamma: f32[2]
input %beta: f32[2]
input %mean: f32[2]
input %var: f32[2]
input %dy: {ty(x)}
%bn = batch_norm(%x, %gamma, %beta, %mean, %var) : {ty(x)}
%bnt = batch_norm_train(%x, %gamma, %beta) : {ty(x)}
%dx = batch_norm_grad_input(%dy, %gamma, %var) : {ty(x)}
%dg = batch_norm_grad_gamma(%dy, %x, %mean, %var) : f32[2]
%dxt = batch_norm_train_grad_input(%dy, %x, %gamma) : {ty(x)}
%dgt = batch_norm_train_grad_gamma(%dy, %x) : f32[2]
output bn = %bn
output bnt = %bnt
output dx = %dx
output dgamma = %dg
output dxt = %dxt
output dgammat = %dgt
""")

# ---- shape ops ------------------------------------------------------------------------

x, y = dy(2, 3, 4), dy(2, 2, 4)
write(
    "shape", "reshape with -1, flatten, transpose, concat on axis 1, slice",
    "exact", [("x", x), ("y", y)],
    [("reshape", x.reshape(4, 6)), ("flatten", x.reshape(2, 12)), ("transpose", x.transpose(2, 0, 1)),
     ("concat", np.concatenate([x, y], axis=1)), ("slice", x[:, 1:3, :])],
    f"""
input %x: {ty(x)}
input %y: {ty(y)}
%r = reshape(%x) {{shape = [4, -1]}} : f32[4, 6]
%f = flatten(%x) : f32[2, 12]
%t = transpose(%x) {{perm = [2, 0, 1]}} : f32[4, 2, 3]
%c = concat(%x, %y) {{axis = 1}} : f32[2, 5, 4]
%s = slice(%x) {{axis = 1, start = 1, end = 3}} : f32[2, 2, 4]
output reshape = %r
output flatten = %f
output transpose = %t
output concat = %c
output slice = %s
""")

# ---- reductions, softmax, losses ------------------------------------------------------

x = dy(4, 2, 4)
xd = x.astype(np.float64)
dyr = dy(2)
write(
    "reduce", "reduce_sum, reduce_mean (keepdims), variance, their gradients, broadcast_like, sum_to_like",
    "exact", [("x", x), ("d", dyr)],
    [("sum", xd.sum(axis=(0, 2))), ("mean", xd.mean(axis=(0, 2), keepdims=True)),
     ("var", xd.var(axis=(0, 2))), ("dmean", np.broadcast_to(dyr.reshape(1, 2, 1) / 16.0, x.shape)),
     ("dvar", dyr.reshape(1, 2, 1) * 2 * (xd - xd.mean(axis=(0, 2), keepdims=True)) / 16.0),
     ("bcast", np.broadcast_to(dyr.reshape(2, 1), (2, 4))), ("sumto", xd.sum(axis=(0, 2)).reshape(2, 1))],
    f"""
input %x: {ty(x)}
input %d: f32[2]
%s = reduce_sum(%x) {{axes = [0, 2]}} : f32[2]
%m = reduce_mean(%x) {{axes = [0, 2], keepdims = true}} : f32[1, 2, 1]
%v = variance(%x) {{axes = [0, 2]}} : f32[2]
%dm = reduce_mean_grad(%d, %x) {{axes = [0, 2]}} : {ty(x)}
%dv = variance_grad(%d, %x) {{axes = [0, 2]}} : {ty(x)}
%col = reshape(%d) {{shape = [2, 1]}} : f32[2, 1]
%like = slice(%x) {{axis = 0, start = 0, end = 1}} : f32[1, 2, 4]
%like2 = reshape(%like) {{shape = [2, 4]}} : f32[2, 4]
%b = broadcast_like(%col, %like2) : f32[2, 4]
%t = transpose(%x) {{perm = [1, 0, 2]}} : f32[2, 4, 4]
%t2 = reshape(%t) {{shape = [2, 16]}} : f32[2, 16]
%st = sum_to_like(%t2, %col) : f32[2, 1]
output sum = %s
output mean = %m
output var = %v
output dmean = %dm
output dvar = %dv
output bcast = %b
output sumto = %st
""", overrides=[("var", "abs=1e-6 rel=1e-6 the mean and squares are exact, the division by 16 too, but the op may subtract in f32"), ("dvar", "abs=1e-6 rel=1e-6 as var")])

z = dy(3, 5)
z[1, 2] = z[1, 4] = 3.0  # argmax: the first maximum
labels = np.array([4, 0, 2], np.int32)
zd = z.astype(np.float64)
sm = np.exp(zd - zd.max(axis=1, keepdims=True))
sm /= sm.sum(axis=1, keepdims=True)
lsm = np.log(sm)
ce = -lsm[np.arange(3), labels].mean()
ces = -lsm[np.arange(3), labels].sum()
dys = dy(3, 5).astype(np.float64)
onehot = np.eye(5)[labels]
dl = np.array(0.5, F)
write(
    "softmax", "softmax, log_softmax, their gradients, cross-entropy (mean and sum) and its gradient, argmax",
    TRANSCENDENTAL, [("z", z), ("labels", labels), ("dy", dys.astype(F)), ("dl", dl)],
    [("softmax", sm), ("log_softmax", lsm), ("ce", ce), ("ce_sum", ces), ("argmax", np.argmax(z, axis=1)),
     ("dsoftmax", sm * (dys - (dys * sm).sum(axis=1, keepdims=True))),
     ("dlog_softmax", dys - np.exp(lsm) * dys.sum(axis=1, keepdims=True)),
     ("dce", 0.5 * (sm - onehot) / 3)],
    f"""
input %z: {ty(z)}
input %labels: i32[3]
input %dy: {ty(z)}
input %dl: f32[]
%p = softmax(%z) : {ty(z)}
%lp = log_softmax(%z) {{axis = 1}} : {ty(z)}
%ce = softmax_cross_entropy(%z, %labels) : f32[]
%ces = softmax_cross_entropy(%z, %labels) {{reduction = sum}} : f32[]
%am = argmax(%z) : i64[3]
%dp = softmax_grad(%dy, %p) : {ty(z)}
%dlp = log_softmax_grad(%dy, %lp) : {ty(z)}
%dce = softmax_cross_entropy_grad(%dl, %z, %labels) : {ty(z)}
output softmax = %p
output log_softmax = %lp
output ce = %ce
output ce_sum = %ces
output argmax = %am
output dsoftmax = %dp
output dlog_softmax = %dlp
output dce = %dce
""", overrides=[("argmax", "exact")])

run_, val = dy(4), dy(4)
write(
    "ema", "ema of running statistics with momentum 0.25 (exact in binary)", "exact",
    [("r", run_), ("v", val)], [("ema", 0.75 * run_ + 0.25 * val)],
    """
input %r: f32[4]
input %v: f32[4]
%e = ema(%r, %v) {momentum = 0.25} : f32[4]
output ema = %e
""")

# ---- activation gradients -------------------------------------------------------------

x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0, 6.0, 7.0, 1.5], F)
d = dy(8)
xd = x.astype(np.float64)
sig = (1 / (1 + np.exp(-xd))).astype(F).astype(np.float64)
th = np.tanh(xd).astype(F).astype(np.float64)
cdf = 0.5 * (1 + erf(xd / math.sqrt(2)))
pdf = np.exp(-xd * xd / 2) / math.sqrt(2 * math.pi)
write(
    "activation-grads", "relu/relu6 masks (at 0 and 6 the gradient is 0), sigmoid, tanh and gelu gradients",
    TRANSCENDENTAL, [("x", x), ("d", d), ("sig", sig.astype(F)), ("th", th.astype(F))],
    [("drelu", d * (x > 0)), ("drelu6", d * ((x > 0) & (x < 6))), ("dsig", d * sig * (1 - sig)),
     ("dtanh", d * (1 - th * th)), ("dgelu", d * (cdf + xd * pdf))],
    """
input %x: f32[8]
input %d: f32[8]
input %sig: f32[8]
input %th: f32[8]
%a = relu_grad(%d, %x) : f32[8]
%b = relu6_grad(%d, %x) : f32[8]
%c = sigmoid_grad(%d, %sig) : f32[8]
%e = tanh_grad(%d, %th) : f32[8]
%g = gelu_grad(%d, %x) : f32[8]
output drelu = %a
output drelu6 = %b
output dsig = %c
output dtanh = %e
output dgelu = %g
""", overrides=[("drelu", "exact"), ("drelu6", "exact")])


# ---- fake quantization ----------------------------------------------------------------


def fq_codes(x, scale, zp, qmin, qmax, axis=None):
    """PyTorch's rule: q = clamp(round_half_even(x * f32(1 / scale)) + zp, qmin, qmax)."""
    x = x.astype(F)
    if axis is None:
        inv = F(1) / F(scale)
        return np.clip(np.rint(x * inv) + zp, qmin, qmax), scale, zp
    shape = [1] * x.ndim
    shape[axis] = -1
    inv = (F(1) / scale.astype(F)).reshape(shape)
    z = zp.reshape(shape)
    return np.clip(np.rint(x * inv) + z, qmin, qmax), scale.astype(F).reshape(shape), z


def fq(x, scale, zp, qmin, qmax, axis=None):
    q, s, z = fq_codes(x, scale, zp, qmin, qmax, axis)
    return ((q - z).astype(F) * s).astype(F)


def in_range(x, scale, zp, qmin, qmax, axis=None):
    x = x.astype(F)
    if axis is None:
        r = np.rint(x * (F(1) / F(scale))) + zp
    else:
        shape = [1] * x.ndim
        shape[axis] = -1
        r = np.rint(x * (F(1) / scale.astype(F)).reshape(shape)) + zp.reshape(shape)
    return (r >= qmin) & (r <= qmax)


# ties: x * (1/0.25) = k + 0.5 exactly; both ends of the range clip
x = np.array([-40.0, -32.125, -0.375, -0.125, 0.125, 0.375, 0.625, 31.875, 40.0, 1.1], F)
scale, zp = F(0.25), 3
d = dy(10)
xc = dy(3, 4, lo=-64, hi=64)
sc = np.array([0.25, 0.5, 0.1], F)
zc = np.array([0, -2, 5], np.int32)
write(
    "fake-quant", "fake_quant per tensor (ties to even, clipping at both ends) and per channel (axis 0), and the clipped STE",
    "exact",
    [("x", x), ("s", np.array(scale)), ("z", np.array(zp, np.int32)), ("d", d), ("xc", xc), ("sc", sc), ("zc", zc)],
    [("fq", fq(x, scale, zp, -128, 127)), ("fq_c", fq(xc, sc, zc, -8, 7, axis=0)),
     ("dfq", d * in_range(x, scale, zp, -128, 127)),
     ("dfq_c", dy_c := (xc * 0 + 1) * in_range(xc, sc, zc, -8, 7, axis=0))],
    f"""
input %x: f32[10]
input %s: f32[]
input %z: i32[]
input %d: f32[10]
input %xc: f32[3, 4]
input %sc: f32[3]
input %zc: i32[3]
%y = fake_quant(%x, %s, %z) {{qmin = -128, qmax = 127}} : f32[10]
%yc = fake_quant(%xc, %sc, %zc) {{qmin = -8, qmax = 7, axis = 0}} : f32[3, 4]
%dy = fake_quant_grad(%d, %x, %s, %z) {{qmin = -128, qmax = 127}} : f32[10]
%one = div(%xc, %xc) : f32[3, 4]
%dyc = fake_quant_grad(%one, %xc, %sc, %zc) {{qmin = -8, qmax = 7, axis = 0}} : f32[3, 4]
output fq = %y
output fq_c = %yc
output dfq = %dy
output dfq_c = %dyc
""")

# LSQ: forward as fake_quant with the float zero point rounded and clamped; gradients per
# LSQ/LSQ+ (Esser et al.; Bhalgat et al.), summed per tensor
# no ties in x / scale: PyTorch's learnable fake-quant rounds x / scale before adding the
# zero point in the forward but after it in the backward, which the op follows; with an odd
# zero point the two disagree on ties
x = np.array([-3.0, -1.32, -0.4, 0.0, 0.35, 0.93, 1.6, 2.74], F)
scale = F(0.2)
zpf = F(-1.4)
qmin, qmax = -8, 7
zr = float(np.clip(np.rint(zpf), qmin, qmax))
d = dy(8)
q, _, _ = fq_codes(x, scale, zr, qmin, qmax)
inr = in_range(x, scale, zr, qmin, qmax)
raw = np.rint(x * (F(1) / scale)) + zr
gs = 1 / math.sqrt(8 * qmax)
xd = x.astype(np.float64)
term = np.where(inr, (q - zr) - xd / float(scale), np.where(raw < qmin, qmin - zr, qmax - zr))
dscale = (d * term).sum() * gs
dzp = (np.where(inr, 0.0, -d.astype(np.float64) * float(scale))).sum() * gs
write(
    "fake-quant-lsq", "fake_quant_lsq forward (float zero point rounded) and its gradients for x, scale and zero point",
    "abs=1e-6 rel=1e-5 the scale and zero-point gradients are sums of products with 1/sqrt(numel*qmax)",
    [("x", x), ("s", np.array(scale)), ("z", np.array(zpf)), ("d", d)],
    [("y", fq(x, scale, zr, qmin, qmax)), ("dx", d * inr), ("ds", dscale), ("dz", dzp)],
    f"""
input %x: f32[8]
input %s: f32[]
input %z: f32[]
input %d: f32[8]
%y = fake_quant_lsq(%x, %s, %z) {{qmin = {qmin}, qmax = {qmax}, learn_zero_point = true}} : f32[8]
%dx = fake_quant_lsq_grad_x(%d, %x, %s, %z) {{qmin = {qmin}, qmax = {qmax}}} : f32[8]
%ds = fake_quant_lsq_grad_scale(%d, %x, %s, %z) {{qmin = {qmin}, qmax = {qmax}}} : f32[]
%dz = fake_quant_lsq_grad_zero_point(%d, %x, %s, %z) {{qmin = {qmin}, qmax = {qmax}}} : f32[]
output y = %y
output dx = %dx
output ds = %ds
output dz = %dz
""", overrides=[("y", "exact"), ("dx", "exact")])

# ---- observers and quantization parameters --------------------------------------------

x = dy(3, 4, lo=-32, hi=32)
inf = np.float32(np.inf)
fresh_min, fresh_max = np.array(inf, F), np.array(-inf, F)
run_min, run_max = np.array(-1.0, F), np.array(0.5, F)
rc_min = np.array([inf, -0.5, 0.25], F)
mn, mx = x.min(), x.max()
cmin = x.min(axis=1)
write(
    "observers", "observe_min/max: first batch (running = +/-inf), running extreme, EMA with averaging 0.25, per channel (axis 0)",
    "exact",
    [("x", x), ("fmin", fresh_min), ("fmax", fresh_max), ("rmin", run_min), ("rmax", run_max), ("cmin", rc_min)],
    [("first_min", mn), ("first_max", mx), ("run_min", min(F(-1.0), mn)), ("run_max", max(F(0.5), mx)),
     ("ema_min", F(-1.0) + F(0.25) * (mn - F(-1.0))), ("ema_max", F(0.5) + F(0.25) * (mx - F(0.5))),
     ("chan_min", np.where(np.isinf(rc_min), cmin, np.minimum(rc_min, cmin)))],
    """
input %x: f32[3, 4]
input %fmin: f32[]
input %fmax: f32[]
input %rmin: f32[]
input %rmax: f32[]
input %cmin: f32[3]
%a = observe_min(%x, %fmin) : f32[]
%b = observe_max(%x, %fmax) : f32[]
%c = observe_min(%x, %rmin) : f32[]
%d = observe_max(%x, %rmax) : f32[]
%e = observe_min(%x, %rmin) {averaging = 0.25} : f32[]
%f = observe_max(%x, %rmax) {averaging = 0.25} : f32[]
%g = observe_min(%x, %cmin) {axis = 0} : f32[3]
output first_min = %a
output first_max = %b
output run_min = %c
output run_max = %d
output ema_min = %e
output ema_max = %f
output chan_min = %g
""")

lo = np.array([-1.0, 0.5, -3.0, -0.75], F)
hi = np.array([2.0, 4.0, 1.0, -0.25], F)
lo0, hi0 = np.minimum(lo, 0), np.maximum(hi, 0)
aff = ((hi0 - lo0) / F(255)).astype(F)
zpa = np.clip(-128 - np.rint(lo0.astype(np.float64) / aff.astype(np.float64)), -128, 127)
sym = (np.maximum(-lo0, hi0) / F(127.5)).astype(F)
p2 = np.array([2.0 ** math.ceil(math.log2(float(v))) for v in aff], F)
write(
    "qparams", "qparams_scale/zero_point: affine (range widened to include 0), symmetric, power of two",
    "exact", [("lo", lo), ("hi", hi)],
    [("scale", aff), ("zp", zpa.astype(np.int32)), ("sym", sym), ("sym_zp", np.zeros(4, np.int32)), ("pot", p2)],
    """
input %lo: f32[4]
input %hi: f32[4]
%s = qparams_scale(%lo, %hi) {qmin = -128, qmax = 127} : f32[4]
%z = qparams_zero_point(%lo, %hi) {qmin = -128, qmax = 127} : i32[4]
%ss = qparams_scale(%lo, %hi) {qmin = -128, qmax = 127, symmetric = true} : f32[4]
%sz = qparams_zero_point(%lo, %hi) {qmin = -128, qmax = 127, symmetric = true} : i32[4]
%p = qparams_scale(%lo, %hi) {qmin = -128, qmax = 127, power_of_two = true} : f32[4]
output scale = %s
output zp = %z
output sym = %ss
output sym_zp = %sz
output pot = %p
""", overrides=[("scale", "abs=0 rel=1.2e-7 one f32 rounding of the quotient, in f32 or f64 then narrowed"), ("sym", "abs=0 rel=1.2e-7 as scale")])

# ---- integer ops ----------------------------------------------------------------------


def shift_round(v, s, half_even):
    if s == 0:
        return v
    q = v >> s
    rem = v - (q << s)
    half = 1 << (s - 1)
    if rem > half:
        return q + 1
    if rem < half:
        return q
    if half_even:
        return q + (q & 1)
    return q + 1 if v >= 0 else q


def qmult(real):
    m, e = math.frexp(real)
    q = math.floor(m * 2.0 ** 31 + 0.5)
    if q == 1 << 31:
        q, e = 1 << 30, e + 1
    return q, -e


def rescale_sum(terms, half_even):
    parts = []
    for v, real in terms:
        m, s = qmult(real)
        parts.append((v * m, 31 + s))
    e = max(t for _, t in parts)
    return shift_round(sum(p << (e - t) for p, t in parts), e, half_even)


def quantize(x, scale, zp, qmin, qmax, half_even):
    p = x.astype(F) * (F(1) / F(scale))
    if half_even:
        r = np.rint(p)
    else:
        r = np.sign(p) * np.floor(np.abs(p) + 0.5)
    return np.clip(r + zp, qmin, qmax).astype(np.int64)


x = np.array([-1.0, -0.25, -0.125, 0.0, 0.125, 0.375, 0.5, 2.0], F)  # x / 0.25 has ties
acc = np.array([-70000, -1234, -3, 0, 5, 4097, 65535, 300000], np.int64)
mults, shifts = [1288490189, 1717986918], [7, 12]
rq = []
for i, a in enumerate(acc):
    c = i % 2
    rq.append(max(-128, min(127, -5 + shift_round(int(a) * mults[c], 31 + shifts[c], True))))
rq_relu = [max(v, -5) for v in rq]
write(
    "quantize", "quantize with both rounding policies on ties, dequantize, requantize per channel with and without relu",
    "exact", [("x", x), ("acc", acc.reshape(4, 2).astype(np.int32))],
    [("q_even", quantize(x, 0.25, -3, -128, 127, True)), ("q_away", quantize(x, 0.25, -3, -128, 127, False)),
     ("deq", (quantize(x, 0.25, -3, -128, 127, True) + 3).astype(F) * F(0.25)),
     ("rq", np.array(rq)), ("rq_relu", np.array(rq_relu))],
    """
input %x: f32[8]
input %acc: i32[4, 2]
%qe = quantize(%x) {rounding = half_even} : !quant.uniform<i8:f32, 0.25:-3>[8]
%qa = quantize(%x) {rounding = half_away_from_zero} : !quant.uniform<i8:f32, 0.25:-3>[8]
%dq = dequantize(%qe) : f32[8]
%r = requantize(%acc) {multiplier = [1288490189, 1717986918], shift = [7, 12], axis = 1, rounding = half_even} : !quant.uniform<i8:f32, 0.05:-5>[4, 2]
%rr = requantize(%acc) {multiplier = [1288490189, 1717986918], shift = [7, 12], axis = 1, rounding = half_even, act = relu} : !quant.uniform<i8:f32, 0.05:-5>[4, 2]
output q_even = %qe
output q_away = %qa
output deq = %dq
output rq = %r
output rq_relu = %rr
""")

xq = rng.integers(-128, 128, size=(3, 5))
wq = rng.integers(-127, 128, size=(4, 5))
bq = rng.integers(-500, 500, size=4)
zx, zw = -7, 2
accl = (xq - zx) @ (wq - zw).T + bq
xc = rng.integers(0, 256, size=(1, 2, 4, 4))
wc = rng.integers(-127, 128, size=(3, 2, 3, 3))
bc = rng.integers(-500, 500, size=3)
zxc = 128
accc = conv_ref((xc - zxc).astype(np.float64), wc.astype(np.float64), bc, [1, 1], [1, 0, 0, 1], [1, 1], 1).astype(np.int64)
write(
    "qlinear-qconv", "qlinear and qconv2d accumulate (x - zx)(w - zw) + b exactly in int32 (u8 input with zero point 128, padding reads the zero point)",
    "exact", [("x", xq), ("xc", xc)],
    [("acc", accl), ("accc", accc)],
    f"""
input %x: !quant.uniform<i8:f32, 0.1:{zx}>[3, 5]
input %xc: !quant.uniform<u8:f32, 0.02:{zxc}>[1, 2, 4, 4]
const %w: !quant.uniform<i8:f32, 0.05:{zw}>[4, 5] = {fmt(wq)}
const %b: i32[4] = {fmt(bq)}
const %wc: !quant.uniform<i8<-127:127>:f32, 0.03>[3, 2, 3, 3] = {fmt(wc)}
const %bc: i32[3] = {fmt(bc)}
%a = qlinear(%x, %w, %b) : i32[3, 4]
%c = qconv2d(%xc, %wc, %bc) {{padding = [1, 0, 0, 1]}} : {ty(accc, "i32")}
output acc = %a
output accc = %c
""")

aq = rng.integers(-128, 128, size=(2, 3))
bq2 = rng.integers(-128, 128, size=(3,))
sa, za, sb, zb, so, zo = F(0.1), 4, F(0.07), -9, F(0.15), -2


def r32(v):
    return float(F(v))


qadd = [[max(-128, min(127, zo + rescale_sum([(int(aq[i, j]) - za, r32(sa) / r32(so)), (int(bq2[j]) - zb, r32(sb) / r32(so))], True)))
         for j in range(3)] for i in range(2)]
qcat = [[max(-128, min(127, zo + rescale_sum([(int(v) - z, r32(s) / r32(so))], True))) for v in row]
        for row, z, s in [(aq[0], za, sa), (aq[1], za, sa)]]
cat = np.concatenate([np.array([[max(-128, min(127, zo + rescale_sum([(int(v) - za, r32(sa) / r32(so))], True))) for v in aq[i]] for i in range(2)]),
                      np.array([[max(-128, min(127, zo + rescale_sum([(int(v) - zb, r32(sb) / r32(so))], True))) for v in bq2]] * 2)], axis=1)
pq = rng.integers(-128, 128, size=(1, 2, 3, 3))
gap = [max(-128, min(127, zo + rescale_sum([(int((pq[0, c] - za).sum()), r32(sa) / (r32(so) * 9))], True))) for c in range(2)]
write(
    "qadd-qconcat-qgap", "qadd with broadcasting, qconcat of two scales, qglobal_avg_pool: Q0.31 ratios, one rounding",
    "exact", [("a", aq), ("b", bq2), ("p", pq)],
    [("add", np.array(qadd)), ("cat", cat), ("gap", np.array(gap))],
    f"""
input %a: !quant.uniform<i8:f32, 0.1:{za}>[2, 3]
input %b: !quant.uniform<i8:f32, 0.07:{zb}>[3]
input %p: !quant.uniform<i8:f32, 0.1:{za}>[1, 2, 3, 3]
%s = qadd(%a, %b) {{rounding = half_even}} : !quant.uniform<i8:f32, 0.15:{zo}>[2, 3]
%bb = reshape(%b) {{shape = [1, 3]}} : !quant.uniform<i8:f32, 0.07:{zb}>[1, 3]
%b2 = qconcat(%bb, %bb) {{axis = 0, rounding = half_even}} : !quant.uniform<i8:f32, 0.07:{zb}>[2, 3]
%c = qconcat(%a, %b2) {{axis = 1, rounding = half_even}} : !quant.uniform<i8:f32, 0.15:{zo}>[2, 6]
%g = qglobal_avg_pool(%p) {{rounding = half_even}} : !quant.uniform<i8:f32, 0.15:{zo}>[1, 2, 1, 1]
output add = %s
output cat = %c
output gap = %g
""")

# ---- optimizer updates ----------------------------------------------------------------

p_, g_, buf, m_, v_ = dy(6), dy(6), dy(6), dy(6), np.abs(dy(6)) + F(0.125)
lr = F(0.125)
sgd = p_ - lr * (g_ + F(0.5) * p_)
mom = F(0.5) * buf + F(0.75) * (g_ + F(0.125) * p_)
m1 = F(0.75) * m_ + F(0.25) * g_
v1 = F(0.75) * v_ + F(0.25) * (g_ * g_)
t = 3
bc1, bc2 = F(1 - 0.9 ** t), F(1 - 0.999 ** t)
# the step size and the inverse root of the second correction are per-step scalars
step_size, inv_root = lr / bc1, F(1) / np.sqrt(bc2)
adam = p_ - step_size * m_ / (np.sqrt(v_) * inv_root + F(1e-8)) - lr * F(0.01) * p_
write(
    "optimizers", "sgd_update with weight decay, sgd_momentum with dampening, adam_moment (orders 1 and 2), adam_update (AdamW decay) at step 3",
    "exact", [("p", p_), ("g", g_), ("buf", buf), ("m", m_), ("v", v_), ("lr", np.array(lr)), ("t", np.array(F(t)))],
    [("sgd", sgd), ("mom", mom), ("m1", m1), ("v1", v1), ("adam", adam.astype(F))],
    """
input %p: f32[6]
input %g: f32[6]
input %buf: f32[6]
input %m: f32[6]
input %v: f32[6]
input %lr: f32[]
input %t: f32[]
%s = sgd_update(%p, %g, %lr) {weight_decay = 0.5} : f32[6]
%b = sgd_momentum(%buf, %g, %p) {momentum = 0.5, dampening = 0.25, weight_decay = 0.125} : f32[6]
%m1 = adam_moment(%m, %g, %p) {beta = 0.75} : f32[6]
%v1 = adam_moment(%v, %g, %p) {beta = 0.75, order = 2} : f32[6]
%a = adam_update(%p, %m, %v, %t, %lr) {weight_decay = 0.01} : f32[6]
output sgd = %s
output mom = %b
output m1 = %m1
output v1 = %v1
output adam = %a
""")

# ---- collectives ----------------------------------------------------------------------

x = dy(2, 3)
write(
    "all-reduce", "all_reduce in a single process is the identity for every reduction",
    "exact", [("x", x)],
    [("sum", x), ("mean", x), ("min", x), ("max", x)],
    """
input %x: f32[2, 3]
%s = all_reduce(%x) {op = sum} : f32[2, 3]
%m = all_reduce(%x) {op = mean} : f32[2, 3]
%lo = all_reduce(%x) {op = min} : f32[2, 3]
%hi = all_reduce(%x) {op = max} : f32[2, 3]
output sum = %s
output mean = %m
output min = %lo
output max = %hi
""")

print("wrote", len([f for f in os.listdir(HERE) if f.endswith(".qir")]), "files")
