"""Sigmoid, SiLU, hard-swish and squeeze-excite gates run int8 end to end.

Consumes: a small CNN with SiLU, a squeeze-excite block (sigmoid gate times features) and
hard-swish, defined here; ONNX Runtime and LiteRT. Produces: assertions that the quantizer gives
these ops int8 points (a sigmoid's output at TFLite's fixed 1/256, zero point -128), that the QDQ
ONNX file puts QuantizeLinear/DequantizeLinear around Sigmoid, Mul and HardSwish and equals the
fake-quant twin in ONNX Runtime, and that ``model.int8.tflite`` runs LOGISTIC, HARD_SWISH and MUL
on int8 tensors in LiteRT within two output steps of the twin, with the same top-1; and that
calibration batches of named inputs (dicts) are refused with a one-line CalibrationError.
ReLU6 and ReLU written as clamps (torch.clamp, Tensor.clamp, F.hardtanh, nn.Hardtanh) fuse into
the conv before them as the modules do: the same int8 file ops and the same LiteRT outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import edgeprune as ep
from edgeprune.export import export
from edgeprune.export.tflite_family import interpreter, invoke


class _SECNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.act = nn.SiLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.f1 = nn.Conv2d(16, 4, 1)
        self.f2 = nn.Conv2d(4, 16, 1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.hs = nn.Hardswish()
        self.fc = nn.Linear(16, 10)
        self.input_shape = (3, 16, 16)

    def forward(self, x):
        x = self.act(self.c1(x))
        x = x * torch.sigmoid(self.f2(torch.relu(self.f1(self.pool(x)))))
        x = self.hs(self.c2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _model_and_data():
    torch.manual_seed(0)
    return _SECNN().eval(), torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_quantizer_gives_sigmoid_silu_hardswish_mul_int8_points():
    model, x = _model_and_data()
    qm = ep.quantize(model, x, progress=False)
    kinds = sorted(op["kind"] for op in qm.ops.values())
    # SiLU splits into sigmoid * x; the SE gate adds one more sigmoid and mul
    assert kinds == ["avgpool", "avgpool", "hardswish", "mul", "mul", "sigmoid", "sigmoid"]
    for op in qm.ops.values():
        p = qm.points[op["output"]]
        if op["kind"] == "sigmoid":
            assert (p["scale"], p["zero_point"]) == (1.0 / 256.0, -128)
        assert all(i in qm.points for i in op["inputs"])
    with torch.no_grad():
        ref, twin = model(x[:16]), qm(x[:16])
    assert torch.allclose(ref, twin, atol=0.05 * float(ref.abs().max()))


def test_int8_onnx_has_qdq_around_activations_and_equals_twin(tmp_path):
    model, x = _model_and_data()
    qm = ep.quantize(model, x, progress=False)
    path = export(qm, tmp_path, formats=["onnx-int8"])["onnx-int8"]
    g = onnx.load(str(path)).graph
    producer = {o: n for n in g.node for o in n.output}
    users = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    checked = 0
    for n in g.node:
        if n.op_type in ("Sigmoid", "HardSwish", "Mul"):
            assert all(producer[i].op_type == "DequantizeLinear" for i in n.input), n.name
            assert [u.op_type for u in users[n.output[0]]] == ["QuantizeLinear"], n.name
            checked += 1
    assert checked == 5
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xs = x[:8]
    out = np.concatenate([s.run(None, {s.get_inputs()[0].name: xs[i : i + 1].numpy()})[0] for i in range(8)])
    with torch.no_grad():
        np.testing.assert_allclose(out, qm(xs).numpy(), rtol=0, atol=1e-6)


def test_int8_tflite_runs_logistic_hard_swish_mul_in_int8(tmp_path):
    model, x = _model_and_data()
    qm = ep.quantize(model, x, progress=False)
    path = export(qm, tmp_path, formats=["tflite-int8"])["tflite-int8"]
    it = interpreter(path)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    seen = {}
    for op in it._get_ops_details():
        if op["op_name"] in ("LOGISTIC", "HARD_SWISH", "MUL"):
            dts = {tensors[i]["dtype"] for i in [*op["inputs"], *op["outputs"]] if i >= 0}
            assert dts == {np.int8}, op["op_name"]
            seen[op["op_name"]] = seen.get(op["op_name"], 0) + 1
            if op["op_name"] == "LOGISTIC":
                scale, zp = tensors[op["outputs"][0]]["quantization"]
                assert (np.float32(scale), zp) == (np.float32(1 / 256), -128)
    assert seen == {"LOGISTIC": 2, "MUL": 2, "HARD_SWISH": 1}
    names = [op["op_name"] for op in it._get_ops_details() if op["op_name"] != "DELEGATE"]
    assert names.count("DEQUANTIZE") == 1 and names[-1] == "DEQUANTIZE"  # only the float output
    xs = x[:16]
    out = np.concatenate([invoke(it, [xs[i : i + 1].numpy()])[0] for i in range(len(xs))])
    with torch.no_grad():
        fq = qm(xs).numpy()
    last = next(n for n in qm.folded.graph.nodes if n.op == "output").args[0]
    step = qm.points[last.name]["scale"]
    assert np.abs(out - fq).max() <= 2 * step
    assert (out.argmax(1) == fq.argmax(1)).all()


def test_dict_calibration_batches_name_the_forward_parameters():
    from edgeprune.quant import CalibrationError

    model, x = _model_and_data()
    with pytest.raises(CalibrationError, match=r"input 'input' is not a parameter of _SECNN.forward \(it takes x\)"):
        ep.quantize(model, [{"input": x[:4]}], progress=False)
    named = ep.quantize(model, [{"x": x[:32]}, {"x": x[32:]}], progress=False)
    plain = ep.quantize(model, x, progress=False)
    assert named.points == plain.points and named.layers == plain.layers and named.ops == plain.ops
    assert named.input_names == ["x"] and torch.equal(named(x=x[:3]), plain(x[:3]))


class _HardSECNN(nn.Module):
    """MobileNetV3's squeeze-excite: a hard-sigmoid gate (nn.Hardsigmoid and F.hardsigmoid) times features."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.hs = nn.Hardswish()
        self.f1, self.f2 = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1)
        self.gate = nn.Hardsigmoid()
        self.g1, self.g2 = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)
        self.input_shape = (3, 16, 16)

    def forward(self, x):
        x = self.hs(self.c1(x))
        x = x * self.gate(self.f2(torch.relu(self.f1(x.mean((2, 3), keepdim=True)))))
        s = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        x = torch.nn.functional.hardsigmoid(self.g2(torch.relu(self.g1(s)))) * x
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_hard_sigmoid_gates_are_int8_and_their_mul_runs_qlinear_in_ort(tmp_path):
    """A hard sigmoid gets an int8 point at 1/255 over [0, 1], so the gate's Mul is an int8 op:
    ONNX Runtime runs it as QLinearMul (not float Mul between DequantizeLinear and QuantizeLinear);
    HardSwish runs as QLinearAdd + QLinearMul; ORT and LiteRT agree with the fake-quant twin."""
    torch.manual_seed(0)
    model, x = _HardSECNN().eval(), torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    qm = ep.quantize(model, x, progress=False)
    gates = [op for op in qm.ops.values() if op["kind"] == "hardsigmoid"]
    assert len(gates) == 2 and sum(op["kind"] == "mul" for op in qm.ops.values()) == 2
    for op in gates:
        p = qm.points[op["output"]]
        assert (p["scale"], p["zero_point"], p["qmin"], p["qmax"]) == (np.float32(1 / 255), -128, -128, 127)
    paths = export(qm, tmp_path, formats=["onnx-int8", "tflite-int8"])
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    s = ort.InferenceSession(str(paths["onnx-int8"]), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    # the gates' hard sigmoids become QLinearAdd(x, 3) at 6/255, their Muls QLinearMul, and each
    # HardSwish QLinearAdd (its gate) + QLinearMul: no float HardSwish, HardSigmoid or Mul is left
    assert ops.count("QLinearMul") == 2 + 1 and ops.count("QLinearAdd") == 2 + 1  # two gates, one HardSwish
    assert not {"Mul", "HardSigmoid", "HardSwish"} & set(ops)
    xs = x[:8]
    out = np.concatenate([s.run(None, {s.get_inputs()[0].name: xs[i : i + 1].numpy()})[0] for i in range(8)])
    with torch.no_grad():
        fq = qm(xs).numpy()
    np.testing.assert_allclose(out, fq, rtol=0, atol=1e-6)
    it = interpreter(paths["tflite-int8"])
    lite = np.concatenate([invoke(it, [xs[i : i + 1].numpy()])[0] for i in range(len(xs))])
    last = next(n for n in qm.folded.graph.nodes if n.op == "output").args[0]
    assert np.abs(lite - fq).max() <= 2 * qm.points[last.name]["scale"]


class _ClampCNN(nn.Module):
    def __init__(self, act):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)
        self.act = act

    def forward(self, x):
        x = self.act(self.c2(self.act(self.c1(x))))
        return self.fc(x.mean((2, 3)))


_RELU6 = {
    "nn.ReLU6": nn.ReLU6(),
    "F.relu6": F.relu6,
    "torch.clamp": lambda x: torch.clamp(x, 0, 6),
    "Tensor.clamp": lambda x: x.clamp(min=0.0, max=6.0),
    "F.hardtanh": lambda x: F.hardtanh(x, 0.0, 6.0),
    "nn.Hardtanh": nn.Hardtanh(0.0, 6.0),
}
_RELU = {
    "nn.ReLU": nn.ReLU(),
    "torch.clamp(min=0)": lambda x: torch.clamp(x, min=0),
    "Tensor.clamp_min": lambda x: x.clamp_min(0),
}


def _int8_ops_and_outputs(act, tmp_path, name):
    x = torch.randn(32, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    qm = ep.quantize(_ClampCNN(act).eval(), x, progress=False)
    path = export(qm, tmp_path / name, formats=["tflite-int8"], example_inputs=(x[:1],))["tflite-int8"]
    it = interpreter(path, builtin=True)  # no delegate: the file's own ops, the reference kernels
    ops = sorted(d["op_name"] for d in it._get_ops_details())
    return ops, invoke(it, [x[:4].numpy()])[0]


@pytest.mark.parametrize("table,reference", [(_RELU6, "nn.ReLU6"), (_RELU, "nn.ReLU")])
def test_clamp_spellings_of_relu_fuse_into_the_conv_like_the_modules(table, reference, tmp_path):
    want_ops, want = _int8_ops_and_outputs(table[reference], tmp_path, "ref")
    assert want_ops == ["CONV_2D", "CONV_2D", "DEQUANTIZE", "FULLY_CONNECTED", "MEAN", "QUANTIZE"]
    for name, act in table.items():
        ops, got = _int8_ops_and_outputs(act, tmp_path, name.replace("(", "_").replace(")", ""))
        assert ops == want_ops, name  # no standalone RELU / RELU6 and no requantizing QUANTIZE
        np.testing.assert_array_equal(got, want, err_msg=name)
