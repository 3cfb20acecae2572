#!/usr/bin/env python3
"""Runs an ONNX model exported by `nnc export` with onnxruntime on the samples of a .npy
file and compares its outputs with the ones `nnc predict` wrote for the same samples (a
CSV file: index,source[,prediction],values...). Prints the largest absolute difference;
exits 1 when it exceeds the tolerance, 2 when onnxruntime is not installed.

Usage: scripts/onnx-check.py MODEL.onnx SAMPLES.npy PREDICTIONS.csv [TOLERANCE]
"""

import csv
import sys


def main():
    model, samples, predictions = sys.argv[1:4]
    tolerance = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-4
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        print(f"skipped: {e}")
        return 2
    try:
        import onnx

        onnx.checker.check_model(onnx.load(model), full_check=True)
    except ImportError:
        pass
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.load(samples).astype(np.float32)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        print(f"expected one input, the model has {len(inputs)}")
        return 1
    want_rank = len(inputs[0].shape)
    while x.ndim < want_rank:
        x = x[..., None]
    y = session.run(None, {inputs[0].name: x})[0].reshape(len(x), -1)
    with open(predictions, newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    first = 3 if len(header) > 2 and header[2] == "prediction" else 2
    p = np.array([[float(v) for v in r[first:]] for r in rows], dtype=np.float64)
    if p.shape != y.shape:
        print(f"shapes differ: onnxruntime {y.shape}, nnc predict {p.shape}")
        return 1
    diff = float(np.abs(p - y).max())
    print(f"max abs difference {diff:.3g} over {y.size} outputs")
    return 0 if diff <= tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
