"""Run one artifact on one input and save its outputs: the same script on the host and on the emulated device.

Consumes: an input ``.npy`` (float32, NCHW), an output prefix, and ``ARTIFACT:RUNTIME`` pairs (``.onnx`` for ONNX
Runtime, ``.tflite`` for LiteRT or the edgeprune runtime). Produces: ``PREFIX<file>-<runtime>.npy`` per pair, the
first output as float32. Needs only numpy and the runtimes, so it runs on a torch-free device install; one process
runs every pair, because starting Python under emulation costs seconds.
"""

from __future__ import annotations

import sys

import numpy as np


def run(path: str, runtime: str, x: np.ndarray) -> np.ndarray:
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return np.asarray(sess.run(None, {name: x})[0], dtype=np.float32)
    if runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=path, num_threads=1)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        if x.ndim == 4 and tuple(inp["shape"]) != x.shape and tuple(inp["shape"]) == x.transpose(0, 2, 3, 1).shape:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # the host's NCHW input for an NHWC file
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        return np.asarray(it.get_tensor(it.get_output_details()[0]["index"]), dtype=np.float32)
    if runtime == "edgeprune":
        from edgeprune import runtime as ep_runtime

        model = ep_runtime.load(path, threads=1)
        out = model(x)
        return np.asarray(out[0] if isinstance(out, (list, tuple)) else out, dtype=np.float32)
    raise SystemExit(f"unknown runtime {runtime!r}")


if __name__ == "__main__":
    x = np.load(sys.argv[1])
    prefix = sys.argv[2]
    for pair in sys.argv[3:]:
        artifact, runtime = pair.rsplit(":", 1)
        np.save(f"{prefix}{artifact.rsplit('/', 1)[-1]}-{runtime}.npy", run(artifact, runtime, x))
