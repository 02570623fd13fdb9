"""`inspect` tells what ONNX Runtime really runs: its kernel report agrees with ORT's own profile.

Consumes: the 12 zoo architectures (tests/python/zoo.py), quantized without a target and exported to
int8 ONNX, and the demo CNN quantized for an ARM target (int8 activations). Produces: pass/fail.
The reference is ONNX Runtime's profile of a real run (``ep.bench``): the Conv/Gemm/MatMul kernels
it executed must be exactly the ones ``inspect_onnx(path, runtime=True)`` names, int8 or float, and
the int8 coverage ``inspect_onnx(path)`` reads from the file alone (ops and MACs) must equal it.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from zoo import ZOO, build  # noqa: E402

import edgeprune as ep  # noqa: E402
from edgeprune.export import export, inspect_onnx  # noqa: E402
from edgeprune.export.inspect import FLOAT_KERNELS, INT8_KERNELS  # noqa: E402


def _calib(x, n=16):
    if torch.is_floating_point(x):
        return torch.randn(n, *x.shape[1:], generator=torch.Generator().manual_seed(5))
    return torch.randint(0, 50, (n, *x.shape[1:]), generator=torch.Generator().manual_seed(5))


def _profiled_kernels(path, x) -> collections.Counter:
    """The Conv/Gemm/MatMul kernels in ONNX Runtime's profile of one real run on ``x``."""
    import onnxruntime as ort

    from edgeprune.bench import parse_ort_profile

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(path).with_suffix(""))
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    rows = parse_ort_profile(sess.end_profiling(), runs=1)
    return collections.Counter(r["op_type"] for r in rows if r["op_type"] in INT8_KERNELS | FLOAT_KERNELS)


def _reported_kernels(rt: dict) -> collections.Counter:
    kernels = [r["kernel"] for r in rt["layers"] if r["kernel"]] + [r["kernel"] for r in rt["extra_kernels"]]
    return collections.Counter(k.rsplit(".", 1)[-1] for k in kernels)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_inspect_agrees_with_the_ort_profile(name, tmp_path):
    model, x = build(name)
    model.input_shape = tuple(x.shape[1:])
    qm = ep.quantize(model, _calib(x), method="minmax", progress=False)
    paths = export(qm, tmp_path, formats=["onnx", "onnx-int8"], example_inputs=x[:1])
    for fmt, path in paths.items():
        info = inspect_onnx(path, runtime=True)
        rt, profiled = info["runtime"], _profiled_kernels(path, x[:1])
        assert _reported_kernels(rt) == profiled, (name, fmt)
        assert all(r["kernel"] for r in rt["layers"]), rt["layers"]  # every conv/gemm/matmul found in ORT's graph
        # the file-level int8 coverage (no runtime) is what ONNX Runtime really runs as int8
        assert info["int8"]["weighted_int8_ops"] == sum(profiled[k] for k in INT8_KERNELS), (name, fmt)
        assert info["int8"]["coverage_macs"] == pytest.approx(rt["coverage_macs"]), (name, fmt)
    rt = inspect_onnx(paths["onnx-int8"], runtime=True)["runtime"]
    # every layer the file quantized runs an int8 kernel in ONNX Runtime on this host
    assert rt["float_fallbacks"] == [] and rt["int8_weighted_ops"] >= len(qm.layers), rt["float_fallbacks"]


def test_float_fallbacks_are_reported_with_their_reason(tmp_path):
    """An ARM-target file (int8 activations) on an x86 host: ORT rewrites some int8 pairs to uint8 and
    leaves convs with mixed types as float Conv; inspect names each one and why, as the profile shows."""
    data = ep.data.load("digits")
    model = ep.models.build("edgeprune:demo-cnn")
    qm = ep.quantize(model, data, calib_n=32, target="rpi4", progress=False)
    path = export(qm, tmp_path, formats=["onnx-int8"])["onnx-int8"]
    rt = inspect_onnx(path, runtime=True)["runtime"]
    x = torch.randn(1, 1, 32, 32)
    profiled = _profiled_kernels(path, x)
    assert _reported_kernels(rt) == profiled
    assert len(rt["float_fallbacks"]) == profiled["Conv"] + profiled["FusedConv"] > 0
    for f in rt["float_fallbacks"]:
        assert f["kernel"] in ("Conv", "FusedConv") and "uint8" in f["reason"], f
    assert rt["coverage_macs"] < 1.0
    # the same model exported without a target runs every conv and the gemm in int8
    qm = ep.quantize(model, data, calib_n=32, progress=False)
    path = export(qm, tmp_path / "none", formats=["onnx-int8"])["onnx-int8"]
    rt = inspect_onnx(path, runtime=True)["runtime"]
    assert rt["int8_weighted_ops"] == rt["weighted_ops"] == 9 and rt["coverage_macs"] == 1.0
