"""Builds the ONNX test models of qir-onnx and runs them with onnxruntime.

    python make_models.py OUTDIR

For every model NAME it writes OUTDIR/NAME.onnx (some models keep their weights in an
external data file beside it) and OUTDIR/NAME.npz with the random inputs (`in.<input>`)
and onnxruntime's outputs for them (`out.<output>`). OUTDIR/manifest.json lists the
models. The models are built with onnx.helper and checked with onnx.checker; the weights
and inputs come from a seeded generator, so the files are the same on every run.

The interpreter of the environment must have the pinned packages of
scripts/python-requirements.txt (scripts/python-env.sh makes one).
"""

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

BATCH = 3  # the size the symbolic batch dimension takes in the test inputs
DEFAULT_OPSET = 17


class Model:
    """A graph under construction: inputs, initializers, nodes, outputs."""

    def __init__(self, name, seed):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.inputs = []
        self.inits = []
        self.nodes = []
        self.outputs = []
        self.feeds = {}
        self.count = 0

    def input(self, name, dims, batch=True):
        """A float input; with `batch`, dimension 0 is the symbolic 'N'."""
        shape = (["N"] if batch else []) + list(dims)
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        concrete = ([BATCH] if batch else []) + list(dims)
        self.feeds[name] = self.rng.standard_normal(concrete).astype(np.float32)
        return name

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name, dims, scale=None):
        fan_in = int(np.prod(dims[1:])) if len(dims) > 1 else max(1, int(np.prod(dims)))
        bound = scale if scale is not None else 1.0 / np.sqrt(fan_in)
        return self.init(name, self.rng.uniform(-bound, bound, dims).astype(np.float32))

    def node(self, op, inputs, outputs=None, name=None, **attrs):
        self.count += 1
        if outputs is None:
            outputs = [f"/{op.lower()}_{self.count}/output_0"]
        if name is None:
            name = f"/{op}_{self.count}"
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def bn(self, prefix, x, channels, eps=1e-5):
        """An inference BatchNormalization with random statistics."""
        c = channels
        g = self.init(f"{prefix}.weight", self.rng.uniform(0.5, 1.5, c).astype(np.float32))
        b = self.init(f"{prefix}.bias", self.rng.uniform(-0.5, 0.5, c).astype(np.float32))
        m = self.init(f"{prefix}.running_mean", self.rng.uniform(-0.5, 0.5, c).astype(np.float32))
        v = self.init(f"{prefix}.running_var", self.rng.uniform(0.5, 2.0, c).astype(np.float32))
        return self.node("BatchNormalization", [x, g, b, m, v], epsilon=eps, momentum=0.9)

    def output(self, name):
        self.outputs.append(onnx.ValueInfoProto(name=name))

    def build(self, opset=DEFAULT_OPSET):
        graph = helper.make_graph(
            self.nodes, "main_graph", self.inputs, self.outputs, initializer=self.inits
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", opset)],
            producer_name="qir-onnx-tests",
        )
        # strict shape inference fills in the outputs' types (which the importer checks)
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
        return model


def mlp(seed=1):
    m = Model("mlp", seed)
    x = m.input("input", [64])
    w1 = m.weight("fc1.weight", [32, 64])
    b1 = m.weight("fc1.bias", [32], scale=0.1)
    w2 = m.weight("fc2.weight", [10, 32])
    b2 = m.weight("fc2.bias", [10], scale=0.1)
    h = m.node("Gemm", [x, w1, b1], transB=1)
    h = m.node("Relu", [h])
    m.node("Gemm", [h, w2, b2], ["logits"], transB=1)
    m.output("logits")
    return m


def cnn():
    m = Model("cnn", 2)
    x = m.input("x", [1, 8, 8])
    w = m.weight("conv1.weight", [8, 1, 3, 3])
    b = m.weight("conv1.bias", [8], scale=0.1)
    h = m.node("Conv", [x, w, b], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    h = m.bn("bn1", h, 8)
    h = m.node("Relu", [h])
    h = m.node("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = m.node("Flatten", [h], axis=1)
    w2 = m.weight("fc.weight", [10, 128])
    b2 = m.weight("fc.bias", [10], scale=0.1)
    m.node("Gemm", [h, w2, b2], ["logits"], transB=1)
    m.output("logits")
    return m


def residual():
    m = Model("residual", 3)
    x = m.input("x", [4, 8, 8])
    h = m.node("Conv", [x, m.weight("c1.weight", [8, 4, 3, 3])], pads=[1, 1, 1, 1])
    h = m.node("Relu", [m.bn("bn1", h, 8)])
    h = m.node("Conv", [h, m.weight("c2.weight", [8, 8, 3, 3])], pads=[1, 1, 1, 1])
    h = m.bn("bn2", h, 8)
    s = m.node("Conv", [x, m.weight("short.weight", [8, 4, 1, 1]), m.weight("short.bias", [8], 0.1)])
    h = m.node("Add", [h, s])
    h = m.node("Relu", [h])
    h = m.node("GlobalAveragePool", [h])
    h = m.node("Flatten", [h])
    m.node("Gemm", [h, m.weight("fc.weight", [10, 8]), m.weight("fc.bias", [10], 0.1)], ["logits"], transB=1)
    m.output("logits")
    return m


def depthwise():
    m = Model("depthwise", 4)
    x = m.input("x", [4, 8, 8])
    zero = m.init("clip.min", np.array(0.0, np.float32))
    six = m.init("clip.max", np.array(6.0, np.float32))
    dw = m.node("Conv", [x, m.weight("dw.weight", [4, 1, 3, 3])], pads=[1, 1, 1, 1], group=4)
    dw = m.node("Clip", [m.bn("dw_bn", dw, 4), zero, six])
    pw = m.node("Conv", [dw, m.weight("pw.weight", [8, 4, 1, 1])])
    pw = m.node("Clip", [m.bn("pw_bn", pw, 8), zero, six])
    h = m.node("Concat", [pw, x], axis=1)
    h = m.node("GlobalAveragePool", [h])
    h = m.node("Flatten", [h])
    m.node("Gemm", [h, m.weight("fc.weight", [10, 12]), m.weight("fc.bias", [10], 0.1)], ["logits"], transB=1)
    m.output("logits")
    return m


def single(name, seed, build, opset=DEFAULT_OPSET):
    """A model around one op: `build(m)` adds the nodes and returns the output value."""
    m = Model(name, seed)
    y = build(m)
    m.nodes[-1].output[0] = "y"
    m.output("y")
    return m, opset


def binary(op, a_dims, b_dims, b_const=False, a_const=False):
    def build(m):
        a = m.init("a", m.rng.standard_normal(a_dims[1:]).astype(np.float32)) if a_const else m.input("a", a_dims[1:])
        if b_const:
            b = m.init("b", (m.rng.uniform(0.5, 2.0, b_dims)).astype(np.float32))
        else:
            b = m.input("b", b_dims, batch=False)
            if op == "Div":
                m.feeds["b"] = np.abs(m.feeds["b"]) + 0.5
        return m.node(op, [a, b])

    return build


def gemm(a_dims, b_dims, c_dims, batch=True, **attrs):
    def build(m):
        a = m.input("a", a_dims, batch=batch)
        b = m.weight("w", b_dims)
        ins = [a, b]
        if c_dims is not None:
            ins.append(m.weight("c", c_dims, scale=1.0))
        return m.node("Gemm", ins, **attrs)

    return build


def conv(cin, cout, k, hw=9, bias=True, **attrs):
    def build(m):
        x = m.input("x", [cin, hw, hw])
        group = attrs.get("group", 1)
        ins = [x, m.weight("w", [cout, cin // group, k, k])]
        if bias:
            ins.append(m.weight("b", [cout], scale=0.5))
        return m.node("Conv", ins, **attrs)

    return build


def pool(op, **attrs):
    return lambda m: m.node(op, [m.input("x", [3, 9, 9])], **attrs)


def clip(lo, hi, dims=(5, 4)):
    def build(m):
        x = m.input("x", list(dims))
        m.feeds["x"] *= 3
        ins = [x, m.init("lo", np.array(lo, np.float32)) if lo is not None else ""]
        if hi is not None:
            ins.append(m.init("hi", np.array(hi, np.float32)))
        return m.node("Clip", ins)

    return build


def reduce_mean_attr(m):
    return m.node("ReduceMean", [m.input("x", [3, 5, 4])], axes=[2, 3], keepdims=1)


def reduce_mean_input(m):
    axes = m.init("axes", np.array([-1], np.int64))
    return m.node("ReduceMean", [m.input("x", [3, 5, 4]), axes], keepdims=0)


def reshape(shape):
    def build(m):
        s = m.init("shape", np.array(shape, np.int64))
        return m.node("Reshape", [m.input("x", [4, 3, 2]), s])

    return build


def constant(m):
    c = m.node(
        "Constant", [], value=numpy_helper.from_array(m.rng.standard_normal([4]).astype(np.float32), "c")
    )
    k = m.node("Constant", [], value_float=2.5)
    h = m.node("Add", [m.input("x", [4]), c])
    return m.node("Mul", [h, k])


def dropout(m):
    ratio = m.init("ratio", np.array(0.5, np.float32))
    training = m.init("training_mode", np.array(False))
    d = m.node("Dropout", [m.input("x", [6]), ratio, training])
    return m.node("Identity", [d])


def bn_alone(m):
    return m.bn("bn", m.input("x", [3, 4, 4]), 3, eps=1e-3)


def concat(m):
    return m.node("Concat", [m.input("a", [2, 3]), m.input("b", [4, 3])], axis=-2)


def concat_const(m):
    c = m.init("c", m.rng.standard_normal([2, 3]).astype(np.float32))
    return m.node("Concat", [m.input("x", [4, 3], batch=False), c], axis=0)


def models():
    """Every test model: (Model, opset)."""
    out = [(mlp(), DEFAULT_OPSET), (cnn(), DEFAULT_OPSET), (residual(), DEFAULT_OPSET), (depthwise(), DEFAULT_OPSET)]
    return out + [
        single("add_bcast", 10, binary("Add", [0, 3, 4], [4], b_const=True)),
        single("add_const_left", 11, binary("Add", [0, 3, 4], [1, 4], a_const=True)),
        single("sub_bcast", 12, binary("Sub", [0, 3, 4], [3, 1])),
        single("mul_bcast", 13, binary("Mul", [0, 3, 4], [3, 1], b_const=True)),
        single("div_bcast", 14, binary("Div", [0, 3, 4], [1, 4])),
        single("gemm_transb", 20, gemm([6], [4, 6], [4], transB=1)),
        single("gemm_alpha_beta", 21, gemm([6], [4, 6], [4], transB=1, alpha=0.5, beta=2.0)),
        single("gemm_no_trans", 22, gemm([6], [6, 4], [1, 4])),
        single("gemm_trans_a", 23, gemm([6, 5], [6, 4], [5, 4], batch=False, transA=1, alpha=-1.5, beta=0.25)),
        single("gemm_trans_ab", 24, gemm([6, 5], [4, 6], None, batch=False, transA=1, transB=1)),
        single("gemm_scalar_c", 25, gemm([6], [4, 6], [], transB=1, beta=0.0)),
        single("matmul", 26, lambda m: m.node("MatMul", [m.input("x", [6]), m.weight("w", [6, 4])])),
        single("conv_strided", 30, conv(2, 4, 3, strides=[2, 2], pads=[1, 1, 1, 1])),
        single("conv_dilated", 31, conv(2, 4, 3, dilations=[2, 2], pads=[2, 2, 2, 2])),
        single("conv_asym_pads", 32, conv(2, 3, 3, pads=[1, 0, 2, 1], bias=False)),
        single("conv_same_upper", 33, conv(2, 3, 4, strides=[2, 2], auto_pad="SAME_UPPER")),
        single("conv_same_lower", 34, conv(2, 3, 4, auto_pad="SAME_LOWER")),
        single("conv_valid", 35, conv(2, 3, 3, auto_pad="VALID")),
        single("conv_groups", 36, conv(4, 6, 3, group=2, pads=[1, 1, 1, 1])),
        single("conv_depthwise", 37, conv(4, 8, 3, group=4, strides=[2, 1], pads=[1, 1, 1, 1])),
        single("batchnorm", 38, bn_alone),
        single("relu", 40, lambda m: m.node("Relu", [m.input("x", [5])])),
        single("sigmoid", 41, lambda m: m.node("Sigmoid", [m.input("x", [5])])),
        single("tanh", 42, lambda m: m.node("Tanh", [m.input("x", [5])])),
        single("clip_relu6", 43, clip(0.0, 6.0)),
        single("clip_relu", 44, clip(0.0, None)),
        single("clip_hardtanh", 45, clip(-1.0, 1.0, dims=(2, 3, 3))),
        single("clip_min_only", 46, clip(-0.5, None)),
        single("clip_max_only", 47, clip(None, 0.25)),
        single("maxpool", 50, pool("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
        single("maxpool_ceil", 51, pool("MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
        single("avgpool", 52, pool("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
        single("avgpool_include_pad", 53, pool("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)),
        single("avgpool_opset19", 54, pool("AveragePool", kernel_shape=[2, 2], dilations=[1, 1]), opset=19),
        single("global_avgpool", 55, lambda m: m.node("GlobalAveragePool", [m.input("x", [3, 5, 4])])),
        single("reducemean_axes_attr", 56, reduce_mean_attr),
        single("reducemean_axes_input", 57, reduce_mean_input, opset=18),
        single("flatten", 60, lambda m: m.node("Flatten", [m.input("x", [4, 3, 2])])),
        single("flatten_axis0", 61, lambda m: m.node("Flatten", [m.input("x", [2, 3, 4], batch=False)], axis=0)),
        single("flatten_axis2", 62, lambda m: m.node("Flatten", [m.input("x", [2, 3, 4], batch=False)], axis=2)),
        single("reshape_copy", 63, reshape([0, -1])),
        single("reshape_infer_batch", 64, reshape([-1, 2, 12])),
        single("transpose", 65, lambda m: m.node("Transpose", [m.input("x", [4, 3, 2])], perm=[0, 2, 3, 1])),
        single("transpose_default", 66, lambda m: m.node("Transpose", [m.input("x", [4, 3, 2], batch=False)])),
        single("concat", 67, concat),
        single("concat_const", 68, concat_const),
        single("softmax", 70, lambda m: m.node("Softmax", [m.input("x", [10])])),
        single("softmax_axis1", 71, lambda m: m.node("Softmax", [m.input("x", [3, 4])], axis=1)),
        single("logsoftmax", 72, lambda m: m.node("LogSoftmax", [m.input("x", [10])])),
        single("identity", 73, lambda m: m.node("Identity", [m.input("x", [5])])),
        single("constant", 74, constant),
        single("dropout", 75, dropout),
        single("opset13", 76, lambda m: m.node("Relu", [m.input("x", [5])]), opset=13),
        single("opset21", 77, lambda m: m.node("Softmax", [m.input("x", [5])]), opset=21),
    ]


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    manifest = []
    all_models = models()
    ext = mlp(seed=1)
    ext.name = "mlp_external"
    all_models.append((ext, DEFAULT_OPSET))
    for m, opset in all_models:
        model = m.build(opset)
        path = os.path.join(outdir, m.name + ".onnx")
        if m.name == "mlp_external":
            onnx.save_model(
                model,
                path,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location="mlp_external.weights",
                size_threshold=0,
            )
        else:
            onnx.save_model(model, path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        results = sess.run(names, m.feeds)
        arrays = {f"in.{k}": v for k, v in m.feeds.items()}
        arrays.update({f"out.{k}": v for k, v in zip(names, results)})
        np.savez(os.path.join(outdir, m.name + ".npz"), **arrays)
        manifest.append({"name": m.name, "opset": opset})
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_models.py OUTDIR")
    main(sys.argv[1])
