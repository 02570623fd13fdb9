"""Tests of edgeprune.estimate: the calibration points, MAC counting, the ONNX path, labels, errors.

Consumes: the full-size MobileNets of zoo_full.py (shapes only, random weights), tiny CNNs,
and the built-in target profiles. Produces: pass/fail.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo_full  # noqa: E402
from onnx_files import ort_int8_qdq, torch_onnx  # noqa: E402

E = importlib.import_module("edgeprune.estimate")
targets = importlib.import_module("edgeprune.targets")

TOL = 0.35  # within +-35 % of the published points


@pytest.fixture(scope="module")
def mobilenets():
    return {"mobilenet_v2": zoo_full.mobilenet_v2(), "mobilenet_v1": zoo_full.mobilenet_v1()}


def _within(ms, lo, hi):
    return lo * (1 - TOL) <= ms <= hi * (1 + TOL)


@pytest.mark.parametrize("model_name,precision", sorted(E.CALIBRATION_POINTS))
def test_published_rpi4_points_within_35_percent(mobilenets, model_name, precision):
    lo, hi = E.CALIBRATION_POINTS[(model_name, precision)]
    est = E.estimate(mobilenets[model_name], "rpi4", precision=precision, threads=4)
    assert _within(est.total_ms, lo, hi), f"{model_name} {precision}: {est.total_ms:.1f} ms vs published {lo}-{hi}"
    assert est.to_dict()["estimate"] is True


def test_published_points_are_the_design_figures():
    # docs/targets.md: the numbers we calibrate against, not ones we picked to pass
    assert E.CALIBRATION_POINTS == {
        ("mobilenet_v2", "fp32"): (41.0, 41.0),
        ("mobilenet_v2", "int8"): (17.0, 20.0),
        ("mobilenet_v1", "fp32"): (72.0, 72.0),
        ("mobilenet_v1", "int8"): (24.0, 29.0),
    }


def test_calibration_report_rows(mobilenets):
    rows = E.calibration_report(mobilenets, "rpi4", threads=4)
    assert len(rows) == 4
    assert all(abs(r["rel_error"]) <= TOL and r["estimate"] is True for r in rows)


def test_mobilenet_macs_match_the_papers(mobilenets):
    # MobileNetV2 1.0: 300 M multiply-adds (Sandler et al. table 4); V1 1.0: 569 M (Howard et al. table 8)
    v2 = E.estimate(mobilenets["mobilenet_v2"], "rpi4").macs
    v1 = E.estimate(mobilenets["mobilenet_v1"], "rpi4").macs
    assert abs(v2 / 1e6 - 300) < 3 and abs(v1 / 1e6 - 569) < 3


class Tiny(nn.Module):
    """conv 3x3 (3->8, stride 2) + BN + ReLU, depthwise 3x3, pointwise 8->16, residual-free, fc 16->10."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)
        self.input_shape = (3, 16, 16)

    def forward(self, x):
        x = self.pw(self.dw(self.stem(x)))
        x = x + x  # a functional op: must show up as eltwise
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def test_ops_and_macs_of_a_tiny_net_match_hand_counts():
    ops = E.ops_from_module(Tiny())
    kinds = [o.kind for o in ops]
    assert kinds == ["conv", "depthwise", "pointwise", "eltwise", "pool", "fc"]  # BN, ReLU fused away
    by = {o.kind: o for o in ops}
    # output 8x8 after stride 2 on 16x16
    assert by["conv"].macs == 8 * 8 * 8 * (3 * 9)
    assert by["depthwise"].macs == 8 * 8 * 8 * 9
    assert by["pointwise"].macs == 16 * 8 * 8 * 8
    assert by["fc"].macs == 16 * 10
    assert by["conv"].weight_elems == 8 * 3 * 9 and by["fc"].weight_elems == 160
    assert by["eltwise"].in_elems == 2 * 16 * 64 and by["eltwise"].out_elems == 16 * 64
    assert ops[0].name == "stem.0" and ops[-1].name == "fc"


def test_breakdown_sums_to_total_and_is_labelled():
    est = E.estimate(Tiny(), "rpi4", precision="fp32", threads=2)
    d = est.to_dict()
    assert d["estimate"] is True and d["target"] == "rpi4" and d["threads"] == 2
    assert est.total_ms == pytest.approx(sum(layer.ms for layer in est.layers))
    assert sum(d["by_kind_ms"].values()) == pytest.approx(est.total_ms, rel=1e-3)
    for layer in est.layers:
        assert layer.ms == pytest.approx(max(layer.compute_ms, layer.memory_ms) + layer.overhead_ms)
        assert layer.bound in ("compute", "memory")


def test_int8_faster_than_fp32_and_threads_help(mobilenets):
    m = mobilenets["mobilenet_v2"]
    fp32_1 = E.estimate(m, "rpi4", "fp32", threads=1).total_ms
    fp32_4 = E.estimate(m, "rpi4", "fp32", threads=4).total_ms
    int8_4 = E.estimate(m, "rpi4", "int8", threads=4).total_ms
    assert int8_4 < fp32_4 < fp32_1
    # a faster device: Pi 5 (A76, dotprod) beats Pi 4
    assert E.estimate(m, "rpi5", "int8", threads=4).total_ms < int8_4


def test_default_threads_is_all_cores():
    prof = targets.load("jetson-orin-nano")
    assert E.estimate(Tiny(), prof).threads == prof.cpu.cores


def test_onnx_path_matches_module_path(tmp_path):
    m = Tiny().eval()
    path = torch_onnx(m, torch.zeros(1, 3, 16, 16), tmp_path / "tiny.onnx", dynamic_batch=True)
    a = E.estimate(m, "rpi4", "fp32", threads=4)
    b = E.estimate(path, "rpi4", None, threads=4)
    assert b.precision == "fp32" and b.source == str(path)
    assert b.macs == a.macs
    assert sorted(layer.kind for layer in b.layers) == sorted(layer.kind for layer in a.layers)
    assert b.total_ms == pytest.approx(a.total_ms, rel=1e-6)


def test_quantized_onnx_is_estimated_as_int8(tmp_path):
    import numpy as np
    from onnxruntime.quantization import QuantType

    m = Tiny().eval()
    fp = torch_onnx(m, torch.zeros(1, 3, 16, 16), tmp_path / "tiny.onnx")
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in (1, 0)]
    q = ort_int8_qdq(fp, tmp_path / "tiny.int8.onnx", feeds, QuantType.QInt8)
    est = E.estimate(q, "rpi4", precision=None, threads=4)
    assert est.precision == "int8"
    assert est.macs == E.estimate(m, "rpi4").macs
    # every Q/DQ of this net folds into a QLinear kernel (the input's quantization is plumbing)
    assert est.total_ms == pytest.approx(E.estimate(m, "rpi4", "int8", threads=4).total_ms, rel=1e-6)


def test_qdq_around_unfoldable_ops_cost_a_memory_pass(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # x -> Conv -> Q -> DQ -> Sigmoid: the DQ feeding a Sigmoid cannot fold into a QLinear kernel
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], [0.1] * 12)
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.05])
    z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("QuantizeLinear", ["c", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq"),
        helper.make_node("Sigmoid", ["dq"], ["y"], name="sig"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w, s, z],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "qdq.onnx"))
    ops, precision = E.ops_from_onnx(tmp_path / "qdq.onnx")
    assert precision == "int8"
    assert [(o.name, o.kind) for o in ops] == [("conv", "pointwise"), ("dq", "eltwise"), ("sig", "act")]
    assert ops[1].in_elems == ops[1].out_elems == 4 * 8 * 8


class _Swish(nn.Module):
    """A conv with SiLU, a squeeze-excite style gate (conv -> sigmoid), and a tanh on its own."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.act = nn.SiLU()
        self.gate = nn.Conv2d(8, 8, 1)
        self.input_shape = (3, 8, 8)

    def forward(self, x):
        y = self.act(self.conv(x))
        return torch.tanh(y * torch.sigmoid(self.gate(y)))


def test_transcendental_activations_are_act_ops_priced_per_element(tmp_path):
    # module path: SiLU and tanh are act ops; the gate's sigmoid on a conv output stays fused
    ops = E.ops_from_module(_Swish())
    assert [o.kind for o in ops] == ["pointwise", "act", "pointwise", "eltwise", "act"]
    assert ops[1].name == "act.act1" and ops[1].in_elems == ops[1].out_elems == 8 * 64
    assert ops[1].macs == 0 and E.compute_macs(ops[1]) == 8 * 64 * E.ACT_MACS_PER_ELEM
    # ONNX path: x * sigmoid(x) is one act op (ONNX Runtime fuses it into QuickGelu) that owns
    # the Sigmoid and the Mul, so a profile row of either matches it; the gate stays fused
    path = tmp_path / "swish.onnx"
    torch.onnx.export(_Swish(), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17)
    onnx_ops, _ = E.ops_from_onnx(path)
    assert [o.kind for o in onnx_ops] == ["pointwise", "act", "pointwise", "eltwise", "act"]
    silu = onnx_ops[1]
    assert any(n.endswith("Sigmoid") for n in silu.names) and any(n.endswith("Mul") for n in silu.names)
    assert silu.out_elems == 8 * 64 and onnx_ops[4].names[0].endswith("Tanh")
    # priced: ACT_MACS_PER_ELEM multiply-adds an element at the act efficiency, plus the
    # memory-bound ops' overhead (an act op packs no weights)
    prof = targets.load("rpi4")
    est = E.estimate_ops(onnx_ops, prof, "fp32", 1)
    peak = E._peak_per_core(prof, "fp32") * 1e9
    want_ms = 2.0 * 8 * 64 * E.ACT_MACS_PER_ELEM / (peak * E.EFFICIENCY["fp32"]["act"]) * 1000.0
    layer = est.layers[1]
    assert layer.kind == "act" and layer.compute_ms == pytest.approx(want_ms)
    assert layer.overhead_ms == pytest.approx(E.LAYER_OVERHEAD_US / 1000.0)
    assert est.macs == sum(o.macs for o in onnx_ops) == 8 * 64 * 3 + 8 * 64 * 8  # the two convs only
    # a calibrated table fitted before the act class (x86-avx512-vnni) put the activations' time
    # into its other classes: its act ops stay memory-priced; x86-avx2's table fits them
    assert "act" not in targets.load("x86-avx512-vnni").efficiency["fp32"]["t1"]
    assert E.estimate_ops(onnx_ops, targets.load("x86-avx512-vnni"), "fp32", 1).layers[1].compute_ms == 0.0
    fitted = targets.load("x86-avx2").efficiency["fp32"]["t1"]["act"]
    avx2 = E.estimate_ops(onnx_ops, targets.load("x86-avx2"), "fp32", 1).layers[1]
    assert avx2.compute_ms == pytest.approx(
        2.0 * 8 * 64 * E.ACT_MACS_PER_ELEM / (E._peak_per_core(targets.load("x86-avx2"), "fp32") * 1e9 * fitted) * 1e3
    )


def test_public_name_is_callable_even_after_the_module_import():
    import edgeprune as ep

    assert callable(ep.estimate)
    assert ep.estimate(Tiny(), "rpi4").to_dict()["estimate"] is True


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"precision": "int4"}, "precision"),
        ({"threads": 5}, "has 4 cores"),
        ({"threads": 0}, "threads=0"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.estimate(Tiny(), "rpi4", **kwargs)


def test_module_without_input_shape_needs_one():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match="input_shape"):
        E.estimate(m, "rpi4")
    assert E.estimate(m, "rpi4", input_shape=(3, 8, 8)).macs == 4 * 6 * 6 * 27


def test_missing_onnx_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        E.estimate(tmp_path / "nope.onnx", "rpi4")


def test_gpu_estimate_is_labelled_uncalibrated(mobilenets):
    m = mobilenets["mobilenet_v2"]
    orin = E.estimate(m, "jetson-orin-nano", precision="int8", device="gpu")
    d = orin.to_dict()
    assert d["estimate"] is True and d["calibrated"] is False and d["device"] == "gpu"
    assert E.estimate(m, "rpi4", "fp32").to_dict()["calibrated"] is True
    # int8 tensor cores beat fp16 on Orin; the fp16-only Nano refuses int8
    assert orin.total_ms < E.estimate(m, "jetson-orin-nano", precision="fp16", device="gpu").total_ms
    with pytest.raises(ValueError, match="no int8 path"):
        E.estimate(m, "jetson-nano", precision="int8", device="gpu")
    with pytest.raises(ValueError, match="has no GPU"):
        E.estimate(m, "rpi4", device="gpu")
    with pytest.raises(ValueError, match="device"):
        E.estimate(m, "rpi4", device="npu")


class TinyAttention(nn.Module):
    """Linear projections + scaled dot-product attention + LayerNorm over 8 tokens of width 16."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.norm = nn.LayerNorm(16)
        self.input_shape = (8, 16)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.norm(y + x)


def test_attention_ops_are_counted():
    ops = E.ops_from_module(TinyAttention())
    fcs = [o for o in ops if o.kind == "fc"]
    assert [o.macs for o in fcs] == [8 * 48 * 16, 8 * 8 * (16 + 16)]
    assert fcs[0].weight_elems == 48 * 16 and fcs[1].weight_elems == 0 and fcs[1].in_elems == 3 * 8 * 16
    assert sum(o.kind == "eltwise" for o in ops) == 2  # the residual add and the LayerNorm


def test_attention_onnx_matches_module(tmp_path):
    m = TinyAttention().eval()
    path = tmp_path / "attn.onnx"
    torch.onnx.export(m, (torch.zeros(1, 8, 16),), str(path), dynamo=False, opset_version=17, input_names=["x"])
    a = E.estimate(m, "rpi4", "fp32")
    b = E.estimate(path, "rpi4", None)
    # the exporter splits attention into Q @ K^T and softmax @ V; shapes there are data-dependent
    # (Shape -> Slice), so they come from one ONNX Runtime run
    assert sorted(la.macs for la in b.layers if la.kind == "fc") == [8 * 8 * 16, 8 * 8 * 16, 8 * 48 * 16]
    assert b.macs == a.macs


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_recurrent_layers_count_every_steps_products_in_all_three_counters(kind, tmp_path):
    """nn.LSTM runs as one oneDNN kernel on CPU, which torch's flop counter cannot see into (the
    KWS model below counted 0 of its 2.8 M MACs); GRU and RNN as addmm. Module estimate, ONNX
    estimate and count_macs_params all give T * D * G * H * (I + H) per layer."""
    from edgeprune.prune.macs import count_macs_params

    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]

    class Net(nn.Module):
        input_shape = (7, 12)  # 12 steps of 7 features

        def __init__(self):
            super().__init__()
            self.rnn = cls(7, 16, num_layers=2, bidirectional=True, batch_first=True)

        def forward(self, x):
            return self.rnn(x.transpose(1, 2))[0]

    model = Net().eval()
    want = 12 * 2 * gates * 16 * (7 + 16) + 12 * 2 * gates * 16 * (32 + 16)
    assert count_macs_params(model, (torch.zeros(1, 7, 12),))[0] == want
    ops = E.ops_from_module(model)
    assert [o.kind for o in ops] == ["fc"] and ops[0].macs == want
    path = torch_onnx(model, torch.zeros(1, 7, 12), tmp_path / "m.onnx")
    onnx_ops, _ = E.ops_from_onnx(path)
    assert sorted(o.macs for o in onnx_ops if o.kind == "fc") == sorted(
        [12 * 2 * gates * 16 * (7 + 16), 12 * 2 * gates * 16 * (32 + 16)]
    )
