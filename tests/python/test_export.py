"""ONNX export: fp32 matches torch, int8 QDQ carries exactly the QuantizedModel's scales and agrees
with the torch fake-quant module in ONNX Runtime, per-target Q/DQ, fp16, metadata, dynamic batch.

Consumes: the trained demo CNN and digits (tests/conftest.py), small models defined here and the
full-size MobileNets of tests/python/zoo_full.py (at a small input). Produces: pass/fail.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from conftest_quant import *  # noqa: F401,F403
from conftest_quant import ort_logits
from onnx import numpy_helper
from torch import nn

import edgeprune as ep
from edgeprune.export import export, inspect_onnx
from edgeprune.quant import METHODS, Int8UnsupportedError


def _max_rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(20, 32), nn.BatchNorm1d(32), nn.Linear(32, 5)
        self.input_shape = (20,)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class _Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv1d(3, 8, 5, padding=2), nn.BatchNorm1d(8)
        self.c2 = nn.Conv1d(8, 8, 3, groups=8)
        self.head = nn.Linear(8, 4)
        self.input_shape = (3, 40)

    def forward(self, x):
        x = nn.functional.relu6(self.bn(self.c1(x)))
        x = nn.functional.hardswish(self.c2(x))
        return self.head(x.mean(-1))


class _Branchy(nn.Module):
    """Concat, avg pool, sigmoid gate, strided/dilated convs: ops beyond the demo CNN."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.b = nn.Conv2d(3, 6, 3, stride=2, padding=2, dilation=2)
        self.gate = nn.Conv2d(12, 12, 1)
        self.head = nn.Linear(12, 7)
        self.input_shape = (3, 16, 16)

    def forward(self, x):
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
        y = y * torch.sigmoid(self.gate(nn.functional.avg_pool2d(y, 2).mean((2, 3), keepdim=True)))
        return self.head(y.mean((2, 3)))


def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _small_models():
    torch.manual_seed(0)
    return {"mlp": _randomize_bn(_MLP()), "conv1d": _randomize_bn(_Conv1dNet()), "branchy": _Branchy().eval()}


@pytest.mark.parametrize("name", ["mlp", "conv1d", "branchy"])
def test_fp32_onnx_matches_torch_small_models(name, tmp_path):
    model = _small_models()[name]
    x = torch.randn(8, *model.input_shape, generator=torch.Generator().manual_seed(2))
    paths = export(model, tmp_path, formats=["onnx"], dynamic_batch=True)
    proto = onnx.load(str(paths["onnx"]))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    with torch.no_grad():
        assert _max_rel_err(ort_logits(paths["onnx"], x), model(x)) <= 1e-4


def test_fp32_onnx_matches_torch_demo_cnn(demo_fp32, digits_xy, tmp_path):
    x = digits_xy[0][:64]
    paths = export(demo_fp32, tmp_path, formats=["onnx"], dynamic_batch=True)
    with torch.no_grad():
        assert _max_rel_err(ort_logits(paths["onnx"], x), demo_fp32(x)) <= 1e-4


@pytest.mark.parametrize("factory", ["mobilenet_v1", "mobilenet_v2"])
def test_fp32_and_int8_onnx_on_zoo_mobilenets(factory, tmp_path):
    import zoo_full

    torch.manual_seed(0)
    model = _randomize_bn(getattr(zoo_full, factory)())
    model.input_shape = (3, 64, 64)  # fully convolutional + global pool: a small input keeps it fast
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    qm = ep.quantize(model, torch.randn(8, 3, 64, 64), method="minmax", progress=False, calib_n=8)
    paths = export(qm, tmp_path, formats=["onnx", "onnx-int8"], example_inputs=x[:1], dynamic_batch=True)
    with torch.no_grad():
        assert _max_rel_err(ort_logits(paths["onnx"], x), model(x)) <= 1e-4
        # int8 in ORT vs our fake-quant: same scales, so only rounding-tie differences remain
        assert _max_rel_err(ort_logits(paths["onnx-int8"], x), qm(x)) <= 0.05
    info = inspect_onnx(paths["onnx-int8"])
    assert info["int8"]["weighted_ops"] == info["int8"]["weighted_int8_ops"] == len(qm.layers)


def test_metadata_props_and_input_spec(demo_fp32, tmp_path):
    demo_fp32.edgeprune_plan_hash = "0123456789abcdef"
    paths = export(demo_fp32, tmp_path, formats=["onnx"], target="rpi4")
    meta = {p.key: p.value for p in onnx.load(str(paths["onnx"])).metadata_props}
    assert meta["edgeprune_version"] == ep.__version__
    assert meta["edgeprune_plan_hash"] == "0123456789abcdef"
    assert meta["edgeprune_target"] == "rpi4"
    assert meta["edgeprune_format"] == "onnx" and meta["edgeprune_precision"] == "fp32"
    assert meta["edgeprune_spec"] == "edgeprune:demo-cnn"
    assert json.loads(meta["edgeprune_input"]) == [{"name": "input", "shape": [1, 1, 32, 32], "dtype": "float32"}]


def test_static_batch_by_default_dynamic_on_request(demo_fp32, digits_xy, tmp_path):
    static = export(demo_fp32, tmp_path / "s", formats=["onnx"])["onnx"]
    dynamic = export(demo_fp32, tmp_path / "d", formats=["onnx"], dynamic_batch=True)["onnx"]
    dim = lambda p: onnx.load(str(p)).graph.input[0].type.tensor_type.shape.dim[0]  # noqa: E731
    assert dim(static).dim_value == 1
    assert dim(dynamic).dim_param == "batch"
    x = digits_xy[0][:5]
    assert ort_logits(dynamic, x).shape == (5, 10)


@pytest.mark.parametrize("method", METHODS)
def test_int8_onnx_agrees_with_fake_quant_and_keeps_accuracy(method, quantized, demo_fp32, digits_xy, tmp_path):
    x, y = digits_xy
    qm = quantized(method)
    path = export(qm, tmp_path, formats=["onnx-int8"], dynamic_batch=True)["onnx-int8"]
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    ort_out = ort_logits(path, x)
    fq = qm(x).numpy()
    agreement = float((ort_out.argmax(1) == fq.argmax(1)).mean())
    assert agreement >= 0.99, agreement
    with torch.no_grad():
        fp32_acc = float((demo_fp32(x).argmax(1) == y).float().mean())
    int8_acc = float((torch.from_numpy(ort_out).argmax(1) == y).float().mean())
    assert int8_acc >= fp32_acc - 0.01, (method, fp32_acc, int8_acc)


def _inits(proto):
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def test_int8_file_scales_equal_quantized_model(quantized, tmp_path):
    qm = quantized("percentile")
    proto = onnx.load(str(export(qm, tmp_path, formats=["onnx-int8"])["onnx-int8"]))
    inits = _inits(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["edgeprune_quant"])["weight_dtype"] == "uint8"
    producer = {o: n for n in proto.graph.node for o in n.output}
    layer_nodes = {
        n.input[1].removesuffix("_dequantized").removesuffix(".weight"): n
        for n in proto.graph.node
        if n.op_type in ("Conv", "Gemm")
    }
    assert set(layer_nodes) == set(qm.layers)
    for target, info in qm.layers.items():
        node = layer_nodes[target]
        # activation input: DequantizeLinear with exactly the point's scale / zero point
        dq_in = producer[node.input[0]]
        assert dq_in.op_type == "DequantizeLinear"
        p = qm.points[info["input"]]
        assert inits[dq_in.input[1]].dtype == np.float32 and float(inits[dq_in.input[1]]) == p["scale"]
        # no target: int8 activations are written as uint8, zero point + 128 (what ONNX Runtime on x86 fuses)
        assert int(inits[dq_in.input[2]]) == p["zero_point"] + 128 and inits[dq_in.input[2]].dtype == np.uint8
        # weights: symmetric int8, per output channel, our scales; values round(w / s). Without a
        # target they are written as uint8 at zero point 128 (exact in ONNX Runtime on x86 without VNNI)
        dq_w = producer[node.input[1]]
        wq, ws, wz = (inits[t] for t in dq_w.input)
        assert wq.dtype == np.uint8 and wz.dtype == np.uint8 and np.all(wz == 128)
        wq = wq.astype(np.int16) - 128
        assert np.abs(wq).max() <= 127
        w = qm.folded.get_submodule(target).weight.detach().numpy()
        # the 1-channel input is padded to 4 zero-weight channels for ONNX Runtime's int8 kernels
        real = tuple(slice(0, d) for d in w.shape)
        zero_pad = wq.copy()
        zero_pad[real] = 0
        assert not zero_pad.any() and (wq.shape == w.shape or wq.shape[1:] == (4, *w.shape[2:]))
        wq, ws = wq[real], ws[: w.shape[0]]
        assert ws.tolist() == info["weight_scale"]
        expect = np.clip(np.round(w / ws.reshape([-1] + [1] * (w.ndim - 1))), -127, 127)
        assert np.array_equal(wq.astype(np.float32), expect)
        # bias: int32 at s_in * s_w
        if info["bias_scale"] is not None:
            dq_b = producer[node.input[2]]
            bq, bs, _ = (inits[t] for t in dq_b.input)
            assert bq.dtype == np.int32 and bs.tolist() == info["bias_scale"]
        # output point (after the fused ReLU when there is one)
        if info["output"]:
            out = node.output[0]
            if info["relu"]:
                out = next(n for n in proto.graph.node if out in n.input).output[0]
            q = next(
                n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in (out, f"{out}_prequant")
            )
            assert float(inits[q.input[1]]) == qm.points[info["output"]]["scale"]
    # and every activation scale in the file is one of ours
    file_scales = {
        (float(inits[n.input[1]]), int(inits[n.input[2]])) for n in proto.graph.node if n.op_type == "QuantizeLinear"
    }
    assert file_scales == {(p["scale"], p["zero_point"] + 128) for p in qm.points.values()}  # uint8 in the file
    from edgeprune.export.onnx import read_qdq_scales

    read = read_qdq_scales(proto)
    assert {(float(s), int(z)) for s, z in read.values()} == file_scales
    assert "input" in read and float(read["input"][0]) == qm.points["x"]["scale"]


def test_tensorrt_target_writes_symmetric_qdq_on_inputs_only(quantized, digits_xy, tmp_path):
    qm = quantized("entropy", target="jetson-orin-nano")
    path = export(qm, tmp_path, formats=["onnx-int8"], target="jetson-orin-nano", dynamic_batch=True)["onnx-int8"]
    proto = onnx.load(str(path))
    inits = _inits(proto)
    producer = {o: n for n in proto.graph.node for o in n.output}
    qs = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert qs and all(int(inits[q.input[2]]) == 0 and inits[q.input[2]].dtype == np.int8 for q in qs)
    for q in qs:  # no Q/DQ directly on a Conv/Gemm output: TensorRT picks output precision itself
        src = producer.get(q.input[0])
        assert src is None or src.op_type not in ("Conv", "Gemm")
    assert {p.key: p.value for p in proto.metadata_props}["edgeprune_target"] == "jetson-orin-nano"
    agreement = float((ort_logits(path, digits_xy[0]).argmax(1) == qm(digits_xy[0]).numpy().argmax(1)).mean())
    assert agreement >= 0.99


def test_x86_avx2_uint8_reduce_range_runs_in_ort(quantized, digits_xy, tmp_path):
    qm = quantized("percentile", target="x86-avx2")
    path = export(qm, tmp_path, formats=["onnx-int8"], dynamic_batch=True)["onnx-int8"]
    inits = _inits(onnx.load(str(path)))
    assert all(v.dtype == np.uint8 for k, v in inits.items() if k.endswith("_zero_point") and v.ndim == 0)
    weights = [v for k, v in inits.items() if k.endswith(".weight_quantized")]
    assert weights and all(v.dtype == np.int8 for v in weights)  # 7-bit weights cannot saturate: int8 stays
    assert max(int(np.abs(v).max()) for v in weights) <= 63
    x = digits_xy[0]
    assert float((ort_logits(path, x).argmax(1) == qm(x).numpy().argmax(1)).mean()) >= 0.99


def test_jetson_nano_refuses_int8_and_exports_fp16(demo_fp32, quantized, digits_xy, tmp_path):
    with pytest.raises(Int8UnsupportedError, match="fp16"):
        export(quantized("percentile"), tmp_path / "i8", formats=["onnx-int8"], target="jetson-nano")
    path = export(demo_fp32, tmp_path / "h", formats=["onnx-fp16"], target="jetson-nano", dynamic_batch=True)[
        "onnx-fp16"
    ]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert all(
        i.data_type == onnx.TensorProto.FLOAT16
        for i in proto.graph.initializer
        if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    )
    x = digits_xy[0]
    with torch.no_grad():
        ref = demo_fp32(x).numpy()
    out = ort_logits(path, x)
    assert out.dtype == np.float32
    assert _max_rel_err(out, ref) < 1e-2
    assert float((out.argmax(1) == ref.argmax(1)).mean()) >= 0.99


def test_int8_needs_a_quantized_model(demo_fp32, tmp_path):
    with pytest.raises(ValueError, match="onnx-int8 needs a QuantizedModel"):
        export(demo_fp32, tmp_path, formats=["onnx-int8"])
    with pytest.raises(ValueError, match="unknown export format 'tflite-x'"):
        export(demo_fp32, tmp_path, formats=["tflite-x"])


def test_unsupported_op_stays_fp32_and_inspect_says_so(tmp_path):
    from test_quant import _ConvTransposeNet

    torch.manual_seed(0)
    model = _ConvTransposeNet().eval()
    qm = ep.quantize(model, torch.randn(32, 1, 8, 8), method="minmax", progress=False)
    path = export(qm, tmp_path, formats=["onnx-int8"], dynamic_batch=True)["onnx-int8"]
    x = torch.randn(4, 1, 8, 8)
    np.testing.assert_allclose(ort_logits(path, x), qm(x).numpy(), rtol=1e-3, atol=1e-3)
    info = inspect_onnx(path)
    by_op = {l["op"]: l for l in info["layers"] if l["op"] in ("Conv", "ConvTranspose", "Gemm")}
    assert by_op["Conv"]["precision"] == by_op["Gemm"]["precision"] == "int8"
    assert by_op["ConvTranspose"]["precision"] == "fp32"
    assert "ConvTranspose has no int8 path" in by_op["ConvTranspose"]["reason"]
    assert any(f["op"] == "ConvTranspose" for f in info["int8"]["fp32_ops"])


def test_export_writes_exactly_the_requested_files(quantized, tmp_path):
    paths = export(quantized("minmax"), tmp_path, formats=["onnx", "onnx-int8"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx", "model.onnx"]
    assert {k: p.name for k, p in paths.items()} == {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}


class _TinyInputBigBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([1000.0, 0.0, -2.0]))
        self.input_shape = (4,)

    def forward(self, x):
        return self.fc(x)


def test_bias_that_would_overflow_int32_widens_the_weight_scale(tmp_path):
    model = _TinyInputBigBias().eval()
    x = torch.rand(16, 4) * 1e-9  # input scale ~4e-12: 1000 / (s_in * s_w) would not fit int32
    qm = ep.quantize(model, x, method="minmax", progress=False)
    info = qm.layers["fc"]
    w = model.fc.weight.detach().abs().amax(1)
    assert info["weight_scale"][0] > float(w[0]) / 127  # widened
    assert info["weight_scale"][1] == float(np.float32(float(w[1]) / 127))  # untouched
    path = export(qm, tmp_path, formats=["onnx-int8"], dynamic_batch=True)["onnx-int8"]
    proto = onnx.load(str(path))
    bq = next(v for k, v in _inits(proto).items() if k.endswith(".bias_quantized"))
    assert bq.dtype == np.int32 and np.abs(bq.astype(np.int64)).max() < 2**31 - 1
    np.testing.assert_allclose(ort_logits(path, x), qm(x).numpy(), rtol=1e-4)
    # the bias survives: the output is 1000 to within the output quantizer's step
    np.testing.assert_allclose(qm(x).numpy()[:, 0], 1000.0, atol=qm.points["fc"]["scale"])


@pytest.mark.parametrize("name", ["mlp", "conv1d", "branchy"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_small_models_match_fake_quant(name, per_channel, tmp_path):
    model = _small_models()[name]
    g = torch.Generator().manual_seed(4)
    qm = ep.quantize(
        model, torch.randn(64, *model.input_shape, generator=g), method="mse", per_channel=per_channel, progress=False
    )
    path = export(qm, tmp_path, formats=["onnx-int8"], dynamic_batch=True)["onnx-int8"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    w_scales = [v for k, v in _inits(proto).items() if k.endswith(".weight_scale")]
    assert len(w_scales) == len(qm.layers)
    assert all((v.ndim == 1) == per_channel for v in w_scales)
    x = torch.randn(32, *model.input_shape, generator=g)
    np.testing.assert_allclose(ort_logits(path, x), qm(x).numpy(), rtol=1e-3, atol=1e-3)


class _AddsInput(nn.Module):
    """relu(conv(x) + x), then dropout (removed by the exporter) before the classifier."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 8 * 8, 4)
        self.d = nn.Dropout(0.5)
        self.input_shape = (3, 8, 8)

    def forward(self, x):
        return self.fc(self.d(torch.relu(self.c(x) + x).flatten(1)))


def test_add_of_the_graph_input_and_a_removed_dropout(tmp_path):
    torch.manual_seed(0)
    model = _AddsInput().eval()
    qm = ep.quantize(model, torch.randn(32, 3, 8, 8), method="minmax", progress=False)
    assert qm.ops["add"]["inputs"] == ["c", "x"]
    assert qm.points["d"]["shared_with"] == "relu"
    path = export(qm, tmp_path, formats=["onnx-int8"], dynamic_batch=True)["onnx-int8"]
    x = torch.randn(8, 3, 8, 8)
    np.testing.assert_allclose(ort_logits(path, x), qm(x).numpy(), rtol=1e-4, atol=1e-5)
    add = next(l for l in inspect_onnx(path)["layers"] if l["op"] == "Add")
    assert add["precision"] == "int8"


def test_x86_int8_file_fuses_into_onnx_runtime_int8_kernels(quantized, tmp_path):
    """Our Q/DQ placement is what ONNX Runtime needs: every Conv, Add, pool and the Gemm become
    QLinear*/QGemm kernels on x86 (uint8 activations), no float Conv or Add is left."""
    import onnxruntime as ort

    qm = quantized("percentile", target="x86-avx2")
    path = export(qm, tmp_path, formats=["onnx-int8"])["onnx-int8"]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("QLinearConv") == 8 and ops.count("QLinearAdd") == 2 and "QGemm" in ops
    assert "QLinearGlobalAveragePool" in ops
    assert not {"Conv", "Add", "Gemm", "Relu"} & set(ops)


def test_export_refuses_a_target_other_than_the_calibrated_one(quantized, tmp_path):
    qm = quantized("percentile", target="x86-avx2")
    with pytest.raises(ValueError, match="calibrated for target x86-avx2, not rpi4"):
        export(qm, tmp_path, formats=["onnx-int8"], target="rpi4")
    with pytest.raises(ValueError, match="opset 13: edgeprune writes opsets 17 to 23"):
        export(qm, tmp_path, formats=["onnx-int8"], opset=13)
    with pytest.raises(ValueError, match="opset 999: edgeprune writes opsets 17 to 23"):
        export(qm, tmp_path, formats=["onnx-int8"], opset=999)


def test_channel_alignment_against_the_target(demo_fp32, tmp_path):
    paths = export(demo_fp32, tmp_path / "a", formats=["onnx"], target="jetson-orin-nano")
    meta = {p.key: p.value for p in onnx.load(str(paths["onnx"])).metadata_props}
    assert json.loads(meta["edgeprune_channel_alignment"]) == {"multiple": 16, "misaligned": []}
    branchy = _small_models()["branchy"]
    paths = export(branchy, tmp_path / "b", formats=["onnx"], target="x86-avx2")
    meta = {p.key: p.value for p in onnx.load(str(paths["onnx"])).metadata_props}
    assert json.loads(meta["edgeprune_channel_alignment"]) == {
        "multiple": 8,
        "misaligned": [{"layer": "a", "channels": 6}, {"layer": "b", "channels": 6}, {"layer": "gate", "channels": 12}],
    }


def test_concat_of_quantized_branches_runs_int8(tmp_path):
    model = _small_models()["branchy"]
    qm = ep.quantize(
        model, torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(6)), method="minmax", progress=False
    )
    cat = [op for op in qm.ops.values() if op["kind"] == "concat"]
    assert len(cat) == 1 and cat[0]["inputs"] == ["relu", "relu_1"]
    path = export(qm, tmp_path, formats=["onnx-int8"], dynamic_batch=True)["onnx-int8"]
    layer = next(l for l in inspect_onnx(path)["layers"] if l["op"] == "Concat")
    assert layer["precision"] == "int8"
    x = torch.randn(8, 3, 16, 16)
    np.testing.assert_allclose(ort_logits(path, x), qm(x).numpy(), rtol=1e-3, atol=1e-4)
