"""Fixtures and helpers shared by the quantization / export / inspect tests.

Consumes: the suite's ``digits`` and ``trained_demo_cnn_dir`` fixtures (tests/conftest.py).
Produces: ``digits_xy`` (test split stacked as tensors), ``demo_fp32`` (the trained demo CNN),
``one_torch_thread`` (autouse: torch pinned to one thread in the importing module),
``quantized`` (a factory of QuantizedModels of that CNN, cached per method/target), and
``ort_logits(path, x)`` running an ONNX file in ONNX Runtime (1 thread).
Import explicitly: ``from conftest_quant import *``.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

__all__ = ["digits_xy", "demo_fp32", "quantized", "ort_logits", "stack", "one_torch_thread"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Torch on one thread in these modules: on the shared 2-core CI machine, two OpenMP threads
    competing with other processes make small convs ~50x slower; restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def stack(dataset, n: int | None = None):
    n = len(dataset) if n is None else min(n, len(dataset))
    xs, ys = zip(*(dataset[i] for i in range(n)))
    return torch.stack([torch.as_tensor(x) for x in xs]).float(), torch.as_tensor([int(y) for y in ys])


def ort_logits(path, x) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = x.numpy() if isinstance(x, torch.Tensor) else x
    fixed = sess.get_inputs()[0].shape[0]
    if isinstance(fixed, int):  # static batch: run in chunks of that size
        return np.concatenate([sess.run(None, {name: x[i : i + fixed]})[0] for i in range(0, len(x), fixed)])
    return sess.run(None, {name: x})[0]


@pytest.fixture(scope="session")
def digits_xy(digits):
    return stack(digits.test)


@pytest.fixture(scope="session")
def demo_fp32(trained_demo_cnn_dir):
    import edgeprune as ep

    return ep.load(trained_demo_cnn_dir)


@pytest.fixture(scope="session")
def quantized(demo_fp32, digits):
    import edgeprune as ep

    cache = {}

    def get(method="percentile", target=None, **kw):
        key = (method, target, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = ep.quantize(demo_fp32, digits, method=method, target=target, calib_n=512, progress=False, **kw)
        return cache[key]

    return get
