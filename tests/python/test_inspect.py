"""inspect_onnx: op counts, params, MACs against hand counts, size, metadata, int8 coverage and reasons.

Consumes: small models defined here, exported with edgeprune.export. Produces: pass/fail.
"""

from __future__ import annotations

import pytest
import torch
from conftest_quant import one_torch_thread  # noqa: F401  (autouse: torch on one thread)
from onnx_files import ort_int8_qdq
from torch import nn

import edgeprune as ep
from edgeprune.export import export, inspect_onnx


class _Tiny(nn.Module):
    """Conv 1->4 3x3 on 8x8 (out 4x6x6) then Linear 144->10."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(144, 10)
        self.input_shape = (1, 8, 8)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class _Seq(nn.Module):
    """Linear on a 3-D input (exported as MatMul + Add) and a ConvTranspose1d."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(20, 8)
        self.up = nn.ConvTranspose1d(5, 2, 4, stride=2)
        self.input_shape = (5, 20)

    def forward(self, x):
        return self.up(self.proj(x))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return _Tiny().eval()


def test_counts_macs_params_of_fp32_file(tiny, tmp_path):
    path = export(tiny, tmp_path, formats=["onnx"], target="x86-avx2")["onnx"]
    info = inspect_onnx(path)
    assert info["ops"] == {"Conv": 1, "Flatten": 1, "Gemm": 1, "Relu": 1}
    assert info["macs"] == 4 * 6 * 6 * 9 + 144 * 10
    assert info["params"] == (4 * 9 + 4) + (144 * 10 + 10)
    assert info["size_bytes"] == path.stat().st_size
    assert info["opset"] == 17
    assert info["inputs"] == [{"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    assert info["outputs"] == [{"name": "output", "shape": [1, 10], "dtype": "float32"}]
    assert info["metadata"]["edgeprune_target"] == "x86-avx2"
    assert info["int8"]["int8_ops"] == 0 and info["int8"]["coverage_macs"] == 0.0


def test_int8_file_same_params_full_coverage(tiny, tmp_path):
    qm = ep.quantize(tiny, torch.rand(32, 1, 8, 8), method="minmax", progress=False)
    paths = export(qm, tmp_path, formats=["onnx", "onnx-int8"])
    fp32, int8 = inspect_onnx(paths["onnx"]), inspect_onnx(paths["onnx-int8"])
    assert int8["params"] == fp32["params"]  # scales and zero points are not parameters
    assert int8["macs"] == fp32["macs"]
    assert int8["int8"]["coverage_macs"] == 1.0
    assert int8["int8"]["weighted_int8_ops"] == int8["int8"]["weighted_ops"] == 2
    relu = next(l for l in int8["layers"] if l["op"] == "Relu")
    assert relu["precision"] == "int8"  # fused: Conv -> Relu -> QuantizeLinear
    # input, relu output, flatten output (fc input, sharing the relu's scale), fc output
    assert int8["ops"]["QuantizeLinear"] == 4
    assert qm.points["flatten"]["scale"] == qm.points["relu"]["scale"]
    assert qm.points["flatten"]["shared_with"] == "relu"


def test_matmul_and_conv_transpose_macs_and_reasons(tmp_path):
    torch.manual_seed(0)
    model = _Seq().eval()
    fp32 = inspect_onnx(export(model, tmp_path / "f", formats=["onnx"])["onnx"])
    assert fp32["ops"]["MatMul"] == 1 and fp32["ops"]["ConvTranspose"] == 1
    # MatMul [1,5,20]x[20,8]: 5*8*20; ConvTranspose1d: every input element x (out/groups * k)
    assert fp32["macs"] == 5 * 8 * 20 + (5 * 8) * (2 * 4)
    qm = ep.quantize(model, torch.randn(16, 5, 20), method="minmax", progress=False)
    int8 = inspect_onnx(export(qm, tmp_path / "q", formats=["onnx-int8"])["onnx-int8"])
    by_op = {l["op"]: l for l in int8["layers"]}
    assert by_op["MatMul"]["precision"] == "int8"
    assert by_op["ConvTranspose"]["precision"] == "fp32"
    assert "ConvTranspose has no int8 path" in by_op["ConvTranspose"]["reason"]
    assert int8["int8"]["coverage_macs"] == pytest.approx(800 / (800 + 320))


def test_unreadable_file(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        inspect_onnx(bad)


def test_inspects_a_third_party_qdq_file(tiny, tmp_path):
    """A file quantized by ONNX Runtime's own quantize_static: same counts, int8 coverage seen."""
    from onnxruntime.quantization import QuantType

    fp32 = export(tiny, tmp_path, formats=["onnx"])["onnx"]
    data = [{"input": torch.rand(1, 1, 8, 8).numpy()} for _ in range(8)]
    out = ort_int8_qdq(fp32, tmp_path / "ort.int8.onnx", data, QuantType.QUInt8)
    info = inspect_onnx(out)
    ref = inspect_onnx(fp32)
    assert info["macs"] == ref["macs"] and info["params"] == ref["params"]
    assert info["int8"]["weighted_int8_ops"] == 2 and info["int8"]["coverage_macs"] == 1.0


def test_fp16_file_reports_fp16_ops(tiny, tmp_path):
    path = export(tiny, tmp_path, formats=["onnx-fp16"])["onnx-fp16"]
    info = inspect_onnx(path)
    weighted = [l for l in info["layers"] if l["op"] in ("Conv", "Gemm")]
    assert [l["precision"] for l in weighted] == ["fp16", "fp16"]
    assert info["inputs"][0]["dtype"] == "float32" and info["outputs"][0]["dtype"] == "float32"
    assert info["ops"]["Cast"] == 2 and info["macs"] == 4 * 6 * 6 * 9 + 144 * 10


def test_a_matmul_after_a_reshape_to_a_computed_shape_counts_its_weights_k(tmp_path):
    # attention's context is reshaped to a shape computed from x.shape: shape inference leaves its
    # last dim symbolic, and K came out as 1 (a 32-wide projection counted 32x too few MACs)
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "two", "zero"], ["bt"]),
        helper.make_node("Concat", ["bt", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    inits = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("two", TensorProto.INT64, [1], [2]),
        helper.make_tensor("minus1", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("w", TensorProto.FLOAT, [32, 16], [0.0] * 512),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10, 16])],
        inits,
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert inspect_onnx(path)["macs"] == 10 * 16 * 32
