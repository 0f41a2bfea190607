"""Runs an ONNX model in onnxruntime: run_ort.py MODEL.onnx IN.npz OUT.npz."""
import sys

import numpy as np
import onnxruntime as ort

model, inp, out = sys.argv[1:4]
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
feeds = dict(np.load(inp))
names = [o.name for o in sess.get_outputs()]
np.savez(out, **dict(zip(names, sess.run(names, feeds))))
