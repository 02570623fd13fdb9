"""TFLite full-integer export: our scales bit for bit, agreement with the fake-quant twin, accuracy.

Consumes: the trained demo CNN and digits (tests/conftest.py, conftest_quant.py), the test zoo,
LiteRT. Produces: assertions that ``model.int8.tflite`` carries exactly the scales of
``quant.json`` (activations per tensor, weights per output channel on the right dimension,
int32 biases at s_in * s_w), runs int8 end to end with float or int8 I/O, agrees with the
QuantizedModel's torch twin (>= 99 % top-1) and stays within 0.5 pt of fp32 for every
calibration method.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest_quant import *  # noqa: E402,F403
from zoo import ZOO, build  # noqa: E402

import edgeprune as ep  # noqa: E402
from edgeprune.export import evaluate_file, export, inspect_file  # noqa: E402
from edgeprune.export.tflite_family import interpreter, invoke  # noqa: E402
from edgeprune.quant import METHODS  # noqa: E402


def _calib(x, n=32):
    g = torch.Generator().manual_seed(5)
    if torch.is_floating_point(x):
        return torch.randn(n, *x.shape[1:], generator=g)
    return torch.randint(0, 50, (n, *x.shape[1:]), generator=g)


def _tflite_tensors(path):
    """[(name, dtype, scale float32 array, zero points, quantized_dimension)] and ops' (name, inputs)."""
    import tflite

    m = tflite.Model.GetRootAs(Path(path).read_bytes(), 0)
    g = m.Subgraphs(0)
    tensors = []
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        q = t.Quantization()
        has = q is not None and q.ScaleLength() > 0
        tensors.append(
            (
                t.Name().decode(),
                t.Type(),
                q.ScaleAsNumpy().astype(np.float32) if has else None,
                q.ZeroPointAsNumpy() if has else None,
                q.QuantizedDimension() if has else None,
            )
        )
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if isinstance(v, int)}
    ops = []
    for j in range(g.OperatorsLength()):
        op = g.Operators(j)
        code = m.OperatorCodes(op.OpcodeIndex()).BuiltinCode()
        ops.append((names[code], [int(i) for i in op.InputsAsNumpy()], [int(i) for i in op.OutputsAsNumpy()]))
    return tensors, ops


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_int8_agrees_with_fake_quant_twin(name, tmp_path):
    model, x = build(name)
    qm = ep.quantize(model, _calib(x), method="percentile", progress=False)
    path = export(qm, tmp_path, formats=["tflite-int8"], example_inputs=(x[:1],))["tflite-int8"]
    it = interpreter(path)
    xs = _calib(x, 16)
    out = np.concatenate([invoke(it, [xs[i : i + 1].numpy()])[0] for i in range(len(xs))])
    with torch.no_grad():
        fq = qm(xs).numpy()
    last = next(n for n in qm.folded.graph.nodes if n.op == "output").args[0]
    step = qm.points.get(getattr(last, "name", ""), {}).get("scale", 0.0)
    assert np.abs(out - fq).max() <= max(1e-2 * np.abs(fq).max(), 3 * step), name
    assert float((out.reshape(len(xs), -1).argmax(1) == fq.reshape(len(xs), -1).argmax(1)).mean()) >= 0.99
    info = inspect_file(path)
    assert info["int8"]["coverage_macs"] > 0.4  # attention matmuls stay float; every conv/linear runs int8
    assert info["inputs"][0]["dtype"] == ("float32" if torch.is_floating_point(x) else "int64")


def test_scales_bit_identical_to_quant_json(quantized, tmp_path):
    qm = quantized("percentile")
    qm.save(tmp_path / "q")
    qjson = json.loads((tmp_path / "q" / "quant.json").read_text())
    path = export(tmp_path / "q", tmp_path / "e", formats=["tflite-int8"])["tflite-int8"]
    tensors, ops = _tflite_tensors(path)
    act = {(s[0].tobytes(), int(z[0])) for _, dt, s, z, _ in tensors if s is not None and dt == 9 and s.size == 1}
    want = {
        (np.float32(p["scale"]).tobytes(), int(p["zero_point"]) - (128 if p["dtype"] == "uint8" else 0))
        for p in qjson["points"].values()
    }
    assert want <= act  # every point of quant.json is a tensor's (scale, zero point), bit for bit
    weighted = [op for op in ops if op[0] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert len(weighted) == len(qjson["layers"])
    file_w = [tensors[op[1][1]] for op in weighted]
    for layer in qjson["layers"].values():
        ws = np.asarray(layer["weight_scale"], dtype=np.float32)
        match = [t for t in file_w if t[2] is not None and t[2].tobytes() == ws.tobytes()]
        assert match, "a layer's per-channel weight scales are not in the file"
    for op, ins, _ in weighted:
        x, w, b = (tensors[i] for i in ins[:3])
        assert w[1] == 9 and b[1] == 2 and x[1] == 9  # int8 input and weights, int32 bias
        assert w[4] == (3 if op == "DEPTHWISE_CONV_2D" else 0) or w[2].size == 1
        assert np.array_equal(b[2], (np.float32(x[2][0]) * w[2]).astype(np.float32))  # s_in * s_w
        assert not np.any(w[3]) and not np.any(b[3])
    info = inspect_file(path)
    assert info["op_versions"]["CONV_2D"] == 3 and info["op_versions"]["FULLY_CONNECTED"] == 4
    assert info["int8"]["coverage_macs"] == 1.0
    assert json.loads(info["metadata"]["edgeprune_quant"])["scales_hash"] == qm.scales_hash()


@pytest.mark.parametrize("method", METHODS)
def test_demo_cnn_int8_tflite_accuracy_per_method(method, quantized, digits, digits_xy, tmp_path):
    qm = quantized(method)
    paths = export(qm, tmp_path, formats=["tflite", "tflite-int8"])
    acc32 = evaluate_file(paths["tflite"], digits.test)
    acc8 = evaluate_file(paths["tflite-int8"], digits.test)
    assert acc8 >= acc32 - 0.005, (method, acc8, acc32)
    it = interpreter(paths["tflite-int8"])
    x = digits_xy[0]
    logits = np.concatenate([invoke(it, [x[i : i + 1].numpy()])[0] for i in range(len(x))])
    with torch.no_grad():
        twin = qm(x).numpy()
    assert float((logits.argmax(1) == twin.argmax(1)).mean()) >= 0.99


def test_int8_io_takes_and_returns_int8(quantized, digits_xy, tmp_path):
    qm = quantized("percentile")
    f = export(qm, tmp_path / "f", formats=["tflite-int8"])["tflite-int8"]
    i8 = export(qm, tmp_path / "i", formats=["tflite-int8"], io="int8")["tflite-int8"]
    info = inspect_file(i8)
    (inp,), (out,) = info["inputs"], info["outputs"]
    assert inp["dtype"] == "int8" and out["dtype"] == "int8"
    first = next(n.name for n in qm.folded.graph.nodes if n.op == "placeholder")
    assert np.float32(inp["scale"][0]) == np.float32(qm.points[first]["scale"])
    assert "QUANTIZE" not in info["ops"] and "DEQUANTIZE" not in info["ops"]
    x = digits_xy[0][:64].numpy()
    a, b = interpreter(f), interpreter(i8)
    ya = np.concatenate([invoke(a, [x[i : i + 1]])[0] for i in range(len(x))])
    yb = np.concatenate([invoke(b, [x[i : i + 1]])[0] for i in range(len(x))])
    assert np.array_equal(ya.argmax(1), yb.argmax(1))
    assert np.abs(ya - yb).max() <= 2 * out["scale"][0]


def test_zero_biases_shared_by_the_exporter_still_go_int32(tmp_path):
    """Fresh BN folds to all-zero biases, which the ONNX exporter shares through Identity nodes:
    every conv must still get its own int32 bias and run int8 (a float bias would break the int8 chain)."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU6(),
        torch.nn.Conv2d(8, 8, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU6(),
    ).eval()
    calib = [torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    qm = ep.quantize(model, calib, method="minmax", calib_n=8, progress=False)
    paths = export(qm, tmp_path, formats=["tflite-int8", "onnx-int8"], example_inputs=(calib[0],))
    info = inspect_file(paths["tflite-int8"])
    assert info["int8"]["coverage_macs"] == 1.0 and "QUANTIZE" in info["ops"] and info["ops"]["QUANTIZE"] == 1
    import onnx

    proto = onnx.load(str(paths["onnx-int8"]))
    int32 = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT32}
    assert sum(n.op_type == "DequantizeLinear" and n.input[0] in int32 for n in proto.graph.node) == 2


def test_evaluate_file_dispatches_by_family(quantized, digits, digits_xy, tmp_path):
    qm = quantized("percentile")
    paths = export(qm, tmp_path, formats=["onnx-int8", "tflite-int8"])
    x, y = digits_xy
    onnx_top1 = float((ort_logits(paths["onnx-int8"], x).argmax(1) == y.numpy()).mean())  # noqa: F405
    assert evaluate_file(paths["onnx-int8"], digits.test) == pytest.approx(onnx_top1)
    it = interpreter(paths["tflite-int8"])
    tfl = np.concatenate([invoke(it, [x[i : i + 1].numpy()])[0] for i in range(len(x))])
    assert evaluate_file(paths["tflite-int8"], digits.test) == pytest.approx(float((tfl.argmax(1) == y.numpy()).mean()))
    assert evaluate_file(paths["tflite-int8"], None) is None
    with pytest.raises(ValueError, match="unknown file kind"):
        evaluate_file(tmp_path / "model.bin", digits.test)


def test_padded_max_pool_runs_in_the_reference_kernels(tmp_path):
    """A max pool with padding lowers to PADV2 whose int8 pad value carries the input's quantization: LiteRT's
    reference kernels refuse a pad value whose zero point differs from the output's, and XNNPACK agrees with them."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1), torch.nn.Conv2d(8, 4, 1)
    ).eval()
    x = torch.randn(16, 3, 16, 16)
    path = export(ep.quantize(model, x, progress=False), tmp_path, formats=["tflite-int8"], example_inputs=(x[:1],))
    outs = []
    for resolver in (OpResolverType.BUILTIN_REF, OpResolverType.AUTO):
        it = Interpreter(model_path=str(path["tflite-int8"]), experimental_op_resolver_type=resolver)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x[:1].permute(0, 2, 3, 1).numpy())
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
    assert outs[0].shape == (1, 4, 4, 4)
    step = float(np.max(np.abs(outs[0]))) / 127
    assert np.max(np.abs(outs[0] - outs[1])) <= step + 1e-6


def test_scales_that_cannot_be_requantized_are_refused_before_litert_sees_them(tmp_path):
    # activations that vanish (as in an untrained MobileViT): one branch exactly 0 (scale 1), the
    # other ~1e-25, so the int8 ADD would need a multiplier of 2^80, which makes LiteRT's Prepare
    # abort the process; our reader sees it first and the export says what to do instead
    import torch.nn as nn

    from edgeprune.errors import UserError

    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
            with torch.no_grad():
                self.a.weight.zero_()
                self.a.bias.zero_()
                self.b.weight.mul_(1e-25)
                self.b.bias.mul_(1e-25)

        def forward(self, x):
            return self.a(x) + self.b(x)

    torch.manual_seed(0)
    calib = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    q = ep.quantize(TwoBranches().eval(), calib, progress=False)
    with pytest.raises(UserError, match=r"would be invalid \(operator \d+ \(ADD\): .*requantization multiplier"):
        export(q, tmp_path, formats=["tflite-int8"], example_inputs=(calib[:1],))
    assert not list(tmp_path.glob("*.tflite"))
