"""int8 attention: the quantizer rewrites ``scaled_dot_product_attention`` into its two matmuls
and softmax, and gives both matmuls (and any matmul of two activations written out by hand,
``q @ k.transpose(-2, -1)``) int8 points on their operands and results. The int8 ONNX file
carries them as QDQ MatMuls, the int8 TFLite file as int8 BATCH_MATMULs (``inspect``: int8 on our
runtime, LiteRT's builtin kernel rather than XNNPACK), and ONNX Runtime, LiteRT's reference
kernels and our runtime agree with the fake-quant twin. Causal and
grouped-query attention stay float, and a matmul of two activations is not reported as a
skipped weighted layer.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from runtime_models import litert_reference

import edgeprune as ep
from edgeprune.export import export
from edgeprune.export.inspect_tflite import inspect_tflite

D, HEADS, SEQ = 32, 4, 12


class Attention(nn.Module):
    """One self-attention block over [1, SEQ, D]: projections, heads, attention, output projection.
    ``style``: "sdpa" (a boolean key-padding mask), "sdpa_float_mask", "sdpa_nomask", "causal",
    "eager" (the matmuls written out, scaled by a division, no mask) or "single" (one head, no
    reshapes: the second matmul's output is the output projection's input)."""

    def __init__(self, style: str):
        super().__init__()
        self.style = style
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        keep = torch.ones(1, 1, SEQ, SEQ, dtype=torch.bool)
        keep[..., SEQ - 3 :] = False  # the last three tokens are padding
        self.register_buffer("keep", keep)
        self.register_buffer("bias", torch.where(keep, 0.0, -1e4))

    def heads(self, t):
        return t.view(1, SEQ, HEADS, D // HEADS).transpose(1, 2)

    def forward(self, x):
        q, k, v = self.heads(self.q(x)), self.heads(self.k(x)), self.heads(self.v(x))
        if self.style == "single":  # one head, the matmul's output read by the projection as it is
            qs, ks, vs = self.q(x), self.k(x), self.v(x)
            return self.o(torch.softmax(qs @ ks.transpose(-2, -1) / math.sqrt(D), dim=-1) @ vs)
        if self.style == "eager":
            p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // HEADS), dim=-1)
            a = p @ v
        elif self.style == "causal":
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = {"sdpa": self.keep, "sdpa_float_mask": self.bias, "sdpa_nomask": None}[self.style]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(a.transpose(1, 2).reshape(1, SEQ, D))


def _quantized(style: str):
    torch.manual_seed(0)
    model = Attention(style).eval()
    calib = torch.randn(16, SEQ, D)
    return model, ep.quantize(model, [(x[None],) for x in calib], progress=False)


def _int8_kinds(data: bytes) -> list[str]:
    return [k for k, label in ep.runtime.load(data).operators if "int8" in label]


@pytest.mark.parametrize("style", ["sdpa", "sdpa_float_mask", "sdpa_nomask", "eager", "single"])
def test_attention_matmuls_run_int8_in_every_file(style, tmp_path):
    import onnxruntime as ort

    model, q = _quantized(style)
    matmuls = [op for op in q.ops.values() if op["kind"] == "matmul"]
    assert len(matmuls) == 2
    # q @ k^T reads the two projections' own points (a view changes no value); probabilities @ v
    # reads a point on the probabilities and the value projection's point
    layer_out = {info["output"] for info in q.layers.values()}
    assert set(matmuls[0]["inputs"]) <= layer_out
    assert matmuls[1]["inputs"][1] in layer_out and matmuls[1]["inputs"][0] not in layer_out
    assert not any(s["op"] in ("matmul", "bmm") for s in q.skipped)
    # the right operands (keys, values) are symmetric int8, the left ones (queries, probabilities)
    # keep the config's asymmetric ranges
    assert all(q.points[op["inputs"][1]]["zero_point"] == 0 for op in matmuls)
    assert q.points[matmuls[1]["inputs"][0]]["zero_point"] == -128  # probabilities: [0, 1]

    x = torch.randn(1, SEQ, D, generator=torch.Generator().manual_seed(5))
    twin = q(x).numpy()
    with torch.no_grad():
        fp32 = model(x).numpy()
    cos = float((twin * fp32).sum() / np.linalg.norm(twin) / np.linalg.norm(fp32))
    assert cos > 0.999

    paths = export(q, tmp_path, formats=["onnx-int8", "tflite-int8"], example_inputs=(x,))
    proto = onnx.load(str(paths["onnx-int8"]))
    producers = {o: n for n in proto.graph.node for o in n.output}

    def dequantized(t: str) -> bool:  # a DequantizeLinear output, or a reshape / transpose of one
        while t in producers and producers[t].op_type in ("Reshape", "Transpose"):
            t = producers[t].input[0]
        return t in producers and producers[t].op_type == "DequantizeLinear"

    matmuls = [n for n in proto.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == 6 and all(dequantized(t) for n in matmuls for t in n.input)
    sess = ort.InferenceSession(str(paths["onnx-int8"]), providers=["CPUExecutionProvider"])
    o = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    step = max(p["scale"] for p in q.points.values())
    assert float(np.abs(o - twin).max()) < step

    data = paths["tflite-int8"].read_bytes()
    assert _int8_kinds(data).count("BATCH_MATMUL") == 2
    # inspect: our runtime and LiteRT's XNNPACK both run them in int8 (XNNPACK only takes an int8
    # BATCH_MATMUL whose right operand has zero point 0, which the quantizer gives keys and values)
    info = inspect_tflite(paths["tflite-int8"])
    assert info["edgeprune_runtime"]["operators"]["BATCH_MATMUL"] == {"ops": 2, "int8": 2, "sparse": 0}
    assert info["xnnpack"]["builtin_only"] == {}
    lite = litert_reference(data)([x.numpy()])[0]
    # TFLite rounds each requantization twice (a doubling high multiply, then a shift): a product
    # within a hair of a half step can land one step away from the twin's single rounding
    assert float(np.abs(lite - twin).max()) < step
    for isa in [i for i in ("reference", "avx2", "avx512", "neon", "neon-dotprod") if i in ep.kernels.supported_isas()]:
        ours = ep.runtime.load(data, isa=isa)(x.numpy())[0]
        assert float(np.abs(ours - lite).max()) < step, isa


def test_causal_attention_stays_float(tmp_path):
    model, q = _quantized("causal")
    assert not any(op["kind"] == "matmul" for op in q.ops.values())
    x = torch.randn(1, SEQ, D, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        fp32 = model(x).numpy()
    paths = export(q, tmp_path, formats=["tflite-int8"], example_inputs=(x,))
    data = paths["tflite-int8"].read_bytes()
    kinds = _int8_kinds(data)
    assert "BATCH_MATMUL" not in kinds and kinds.count("FULLY_CONNECTED") == 4
    ours = ep.runtime.load(data)(x.numpy())[0]
    cos = float((ours * fp32).sum() / np.linalg.norm(ours) / np.linalg.norm(fp32))
    assert cos > 0.999


def test_a_boolean_mask_becomes_a_finite_bias():
    """The rewritten attention equals ``scaled_dot_product_attention`` wherever a row keeps a
    token; the twin's fp32 graph (the folded model) gives the module's outputs."""
    model, q = _quantized("sdpa")
    x = torch.randn(1, SEQ, D, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = model(x)
        got = q.folded(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not any(n.target is F.scaled_dot_product_attention for n in q.folded.graph.nodes)


@pytest.mark.parametrize("zps, builtin_only", [((3, -5, 7), {"BATCH_MATMUL": 1}), ((3, 0, 7), {})])
def test_inspect_says_when_xnnpack_leaves_an_int8_batch_matmul(zps, builtin_only, tmp_path):
    from runtime_models import int8_batch_matmul

    path = tmp_path / "bmm.tflite"
    path.write_bytes(int8_batch_matmul((2, 8, 16), (2, 16, 8), zps=zps))
    assert inspect_tflite(path)["xnnpack"]["builtin_only"] == builtin_only
