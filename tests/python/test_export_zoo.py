"""Export acceptance on the test zoo (tests/python/zoo.py): fp32 ONNX and pruned fp32 ONNX match
torch (max relative error <= 1e-4) and int8 ONNX matches our fake-quant twin in ONNX Runtime.

Consumes: the 12 zoo architectures (residual, depthwise, SE, shuffle, concat, LayerNorm, attention,
tokens, GroupNorm, ConvTranspose) and the pruning engine (ep.plan / ep.apply, ratio 0.5).
Produces: pass/fail per architecture.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest_quant import one_torch_thread, ort_logits  # noqa: E402,F401
from zoo import ZOO, build  # noqa: E402

import edgeprune as ep  # noqa: E402
from edgeprune.export import export, inspect_onnx  # noqa: E402


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _calib(x, n=32):
    if torch.is_floating_point(x):
        return torch.randn(n, *x.shape[1:], generator=torch.Generator().manual_seed(5))
    return torch.randint(0, 50, (n, *x.shape[1:]), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_fp32_pruned_and_int8(name, tmp_path):
    model, x = build(name)
    model.input_shape = tuple(x.shape[1:])
    with torch.no_grad():
        ref = model(x).numpy()
    path = export(model, tmp_path / "fp32", formats=["onnx"], example_inputs=x[:1], dynamic_batch=True)["onnx"]
    assert _rel(ort_logits(path, x), ref) <= 1e-4

    plan = ep.plan(model, (x[:1],), ratio=0.5, round_to=4)
    pruned = ep.apply(model, plan)
    pruned.input_shape = model.input_shape
    with torch.no_grad():
        ref_p = pruned(x).numpy()
    path = export(pruned, tmp_path / "pruned", formats=["onnx"], example_inputs=x[:1], dynamic_batch=True)["onnx"]
    assert _rel(ort_logits(path, x), ref_p) <= 1e-4
    assert inspect_onnx(path)["params"] < inspect_onnx(tmp_path / "fp32" / "model.onnx")["params"]

    qm = ep.quantize(pruned, _calib(x), method="percentile", progress=False)
    path = export(qm, tmp_path / "int8", formats=["onnx-int8"], example_inputs=x[:1], dynamic_batch=True)["onnx-int8"]
    xs = _calib(x, 16)
    out, fq = ort_logits(path, xs), qm(xs).numpy()
    # Same scales, so only rounding decisions differ: float ops (LayerNorm, GELU, softmax) differ
    # in the last bits between ORT and torch, which can move a value across a rounding boundary
    # and shift a later output by a step or two. Allow 1 % or three steps of the output quantizer.
    last = next(n for n in qm.folded.graph.nodes if n.op == "output").args[0]
    step = qm.points.get(getattr(last, "name", ""), {}).get("scale", 0.0)
    assert np.abs(out - fq).max() <= max(1e-2 * np.abs(fq).max(), 3 * step), name
    assert float((out.reshape(len(xs), -1).argmax(1) == fq.reshape(len(xs), -1).argmax(1)).mean()) >= 0.99
    info = inspect_onnx(path)
    # every quantized layer runs int8; MatMuls of two activations (attention) are counted int8 too, apart
    graph = onnx.load(str(path)).graph
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for n in graph.node:  # a dequantized (or transposed) weight is still a weight
        if n.op_type in ("DequantizeLinear", "Transpose", "Reshape", "Identity") and n.input[0] in consts:
            consts.update(n.output)
    act_mm = {n.name or n.output[0] for n in graph.node if n.op_type == "MatMul" and n.input[1] not in consts}
    int8_layers = [l for l in info["layers"] if l["precision"] == "int8" and l["name"] not in act_mm]
    assert len([l for l in int8_layers if l["op"] in ("Conv", "Gemm", "MatMul")]) == len(qm.layers)
    for s in qm.skipped:  # e.g. ConvTranspose2d, MultiheadAttention: kept fp32, and said so
        assert "kept fp32" in s["reason"]
