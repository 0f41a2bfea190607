#!/usr/bin/env python3
"""qatc's converted INT8 models against ONNX Runtime's static INT8 QDQ models, in one run.

Issue 8's anchor: the same networks (the MNIST MLP 784-256-128-10 and the small CNN
conv3x3(1->16)+relu, maxpool2, conv3x3(16->32)+relu, maxpool2, flatten, linear(800->10)),
quantized by onnxruntime.quantization.quantize_static (QDQ format, per-channel int8
weights, u8 activations, MinMax calibration on MNIST training images), run with 2 intra-op
threads; and qatc's path for the same ONNX file: import -> prepare (tflite-int8) ->
calibrate (minmax) -> convert -> bench on the JIT.

Both sides time the same batch sizes in the same process tree, taking turns round after
round (`--rounds`, each at least `--seconds` per runtime and batch), so the ratios hold on a
busy machine where absolute figures do not: the figures are medians over the rounds, the
ratios the median (and range) of each round's ratio. Latency is the per-run time at batch 1.

Run with the pinned environment:  .venv/bin/python scripts/ort_bench.py [--qatc PATH]
(scripts/python-env.sh creates .venv; build qatc with `cargo build --release` first).
"""

import argparse
import gzip
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(ROOT, "..", "shared", "data", "mnist")


def read_images(n):
    """The first n MNIST training images as f32 [n, 1, 28, 28] in [0, 1]."""
    with gzip.open(os.path.join(MNIST, "train-images-idx3-ubyte.gz"), "rb") as f:
        data = f.read()
    count = int.from_bytes(data[4:8], "big")
    n = min(n, count)
    pixels = np.frombuffer(data, dtype=np.uint8, count=n * 784, offset=16)
    return (pixels.astype(np.float32) / 255.0).reshape(n, 1, 28, 28)


def init(rng, shape, fan_in):
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def mlp_model(rng):
    inits = [
        numpy_helper.from_array(init(rng, (256, 784), 784), "fc1.w"),
        numpy_helper.from_array(init(rng, (256,), 784), "fc1.b"),
        numpy_helper.from_array(init(rng, (128, 256), 256), "fc2.w"),
        numpy_helper.from_array(init(rng, (128,), 256), "fc2.b"),
        numpy_helper.from_array(init(rng, (10, 128), 128), "fc3.w"),
        numpy_helper.from_array(init(rng, (10,), 128), "fc3.b"),
    ]
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc1.w", "fc1.b"], ["h1"], transB=1),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "fc2.w", "fc2.b"], ["h2"], transB=1),
        helper.make_node("Relu", ["h2"], ["a2"]),
        helper.make_node("Gemm", ["a2", "fc3.w", "fc3.b"], ["logits"], transB=1),
    ]
    return graph("mnist_mlp", nodes, inits)


def cnn_model(rng):
    inits = [
        numpy_helper.from_array(init(rng, (16, 1, 3, 3), 9), "c1.w"),
        numpy_helper.from_array(init(rng, (16,), 9), "c1.b"),
        numpy_helper.from_array(init(rng, (32, 16, 3, 3), 144), "c2.w"),
        numpy_helper.from_array(init(rng, (32,), 144), "c2.b"),
        numpy_helper.from_array(init(rng, (10, 800), 800), "fc.w"),
        numpy_helper.from_array(init(rng, (10,), 800), "fc.b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["a1"]),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2.w", "c2.b"], ["c2"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["a2"]),
        helper.make_node("MaxPool", ["a2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], transB=1),
    ]
    return graph("mnist_cnn", nodes, inits)


def graph(name, nodes, inits):
    g = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 10])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


class Reader(CalibrationDataReader):
    def __init__(self, images, batch):
        self.batches = [images[i : i + batch] for i in range(0, len(images), batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {"x": self.batches[self.i - 1]}


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def time_ort(sess, x, seconds):
    """Seconds per run of one round of at least `seconds` (after a warm-up run)."""
    sess.run(None, {"x": x})
    n, start = 0, time.perf_counter()
    while True:
        sess.run(None, {"x": x})
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n


def time_qatc(qatc, model, weights, batch, seconds):
    """Seconds per run of one `qatc bench` invocation of at least `seconds`."""
    out = subprocess.run(
        [qatc, "bench", model, "--weights", weights, "--batch", str(batch),
         "--min-seconds", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # runs/s, not the rounded "ms/run" (0.012 ms/run is only good to a microsecond)
    m = re.search(r"([0-9.]+) runs/s", out)
    if not m:
        sys.exit(f"error: cannot read the runs per second from qatc bench:\n{out}")
    return 1.0 / float(m.group(1))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{r.stderr}")


def qatc_int8(qatc, onnx_path, work, calib_batches):
    """ONNX float model -> qatc's converted INT8 model (import, prepare, calibrate, convert)."""
    base = os.path.join(work, os.path.splitext(os.path.basename(onnx_path))[0])
    run([qatc, "import", onnx_path, "-o", base + ".qir"])
    run([qatc, "prepare", base + ".qir", "--scheme", "tflite-int8", "-o", base + ".qat.qir"])
    run([
        qatc, "calibrate", base + ".qat.qir", "--data", MNIST, "--weights",
        base + ".safetensors", "--batches", str(calib_batches), "--batch-size", "32",
        "--pixel-scale", "255", "-o", base + ".calib.safetensors",
    ])
    run([
        qatc, "convert", base + ".qat.qir", "--weights", base + ".calib.safetensors",
        "-o", base + ".int8.qir",
    ])
    return (
        (base + ".qir", base + ".safetensors"),
        (base + ".int8.qir", base + ".int8.safetensors"),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qatc", default=os.path.join(ROOT, "target", "release", "qatc"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="mlp,cnn")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    calib = read_images(512)
    print(f"onnxruntime {ort.__version__}, {args.threads} intra-op threads; qatc {args.qatc}")
    header = f"{'model':<5} {'runtime':<14} {'b256 img/s':>12} {'b1 latency':>11}"
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            model = {"mlp": mlp_model, "cnn": cnn_model}[name](rng)
            fp32 = os.path.join(work, f"{name}.onnx")
            int8 = os.path.join(work, f"{name}.int8.onnx")
            onnx.save(model, fp32)
            quantize_static(
                fp32, int8, Reader(calib, 32),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
            x256 = read_images(256)
            x1 = x256[:1]
            sessions = {
                "ort fp32": session(fp32, args.threads),
                "ort int8 qdq": session(int8, args.threads),
            }
            qf, qi = qatc_int8(args.qatc, fp32, work, 16)
            qatc_models = {"qatc fp32": qf, "qatc int8": qi}
            # the four runtimes take turns, round after round, so that a change in the
            # machine's load falls on all of them; each round's ratios compare runs a few
            # seconds apart
            rounds = {label: [] for label in list(sessions) + list(qatc_models)}
            for _ in range(args.rounds):
                for label, sess in sessions.items():
                    rounds[label].append(
                        (256 / time_ort(sess, x256, args.seconds), time_ort(sess, x1, args.seconds))
                    )
                for label, (path, weights) in qatc_models.items():
                    rounds[label].append((
                        256 / time_qatc(args.qatc, path, weights, 256, args.seconds),
                        time_qatc(args.qatc, path, weights, 1, args.seconds),
                    ))
            for label, rs in rounds.items():
                tput = statistics.median(t for t, _ in rs)
                lat = statistics.median(l for _, l in rs)
                rows.append(f"{name:<5} {label:<14} {tput:>12,.0f} {lat * 1e6:>9.1f} µs")

            def ratios(f):
                v = sorted(f(i) for i in range(args.rounds))
                return f"{statistics.median(v):.2f}x ({v[0]:.2f}-{v[-1]:.2f})"

            q, o8, o32 = rounds["qatc int8"], rounds["ort int8 qdq"], rounds["ort fp32"]
            rows.append(
                f"{name:<5} ratios, median of rounds (range): qatc int8 / ort int8 throughput "
                f"{ratios(lambda i: q[i][0] / o8[i][0])}, / best ort "
                f"{ratios(lambda i: q[i][0] / max(o8[i][0], o32[i][0]))}; latency / ort int8 "
                f"{ratios(lambda i: q[i][1] / o8[i][1])}, / best ort "
                f"{ratios(lambda i: q[i][1] / min(o8[i][1], o32[i][1]))}"
            )
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
