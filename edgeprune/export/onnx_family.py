"""The ONNX file family: stamp, check, save, inspect and run ``.onnx`` files.

Consumes: an ``onnx.ModelProto`` from an ONNX writer, or a path to an ``.onnx`` file.
Produces: the checked proto with ``metadata_props`` (``finish``), the file (``save``), the
``inspect_onnx`` dict (``inspect``) and ONNX Runtime outputs for numpy inputs (``run``).
Imports no torch: ``inspect`` and ``run`` serve torch-free devices.
"""

from __future__ import annotations

import os

import numpy as np
import onnx

from .._version import __version__
from .inspect import inspect_onnx
from .onnx_meta import set_metadata


def finish(proto: onnx.ModelProto, props: dict) -> onnx.ModelProto:
    set_metadata(proto, props)
    proto.producer_name = "edgeprune"
    proto.producer_version = __version__
    onnx.checker.check_model(proto, full_check=True)
    return proto


def save(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    onnx.save(proto, str(path))


def inspect(path: str | os.PathLike, runtime: bool = False) -> dict:
    """The file's contents; with ``runtime=True`` also the kernels ONNX Runtime really runs."""
    return inspect_onnx(path, runtime=runtime)


def run(path: str | os.PathLike, inputs, threads: int = 1) -> list[np.ndarray]:
    """Outputs of the file in ONNX Runtime for ``inputs`` (one array per graph input, in order)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.asarray(x) for i, x in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feeds)


class _Runner:
    """Batches of first-input arrays -> first output, padded to a static batch size."""

    def __init__(self, path):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.inp = self.sess.get_inputs()[0]
        dim = self.inp.shape[0]
        self.static = isinstance(dim, int) and dim > 0
        self.batch = dim if self.static else 64

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if self.static and n < self.batch:
            x = np.concatenate([x, np.zeros((self.batch - n, *x.shape[1:]), dtype=x.dtype)])
        return self.sess.run(None, {self.inp.name: x})[0][:n]


def runner(path: str | os.PathLike) -> _Runner:
    """A callable mapping a batch of inputs (PyTorch layout) to the first output (``.batch`` rows a call)."""
    return _Runner(path)
