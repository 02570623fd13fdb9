"""Quantization: observers, BN folding, int8 scales, per-target defaults, accuracy, QAT, save/load.

Consumes: the trained demo CNN and digits (tests/conftest.py), small models defined here.
Produces: pass/fail on the int8 scheme of docs/kernels.md and its acceptance bars.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest_quant import *  # noqa: F401,F403
from torch import nn

import edgeprune as ep
from edgeprune.quant import METHODS, CalibrationError, Int8UnsupportedError, QuantizedModel, fold_bn, make_config, qat
from edgeprune.quant.observers import Observer, activation_qparams, weight_scales


def _top1(logits, y):
    return float((torch.as_tensor(logits).argmax(1) == y).float().mean())


# ---- observers -----------------------------------------------------------------------------------
def test_minmax_sees_every_batch():
    obs = Observer()
    batches = [torch.full((4, 3), 0.5), torch.full((4, 3), -0.25), torch.tensor([[7.0, 0.0, 1.0]])]
    for b in batches:
        obs.observe_minmax(b)
    assert obs.range("minmax", False, 256) == (-0.25, 7.0)


def _outlier_observer():
    torch.manual_seed(0)
    data = [torch.randn(1000) for _ in range(5)]
    data[3][7] = 60.0  # one outlier in one batch
    obs = Observer()
    for d in data:
        obs.observe_minmax(d)
    obs.start_histogram()
    for d in data:
        obs.observe_histogram(d)
    return obs


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_methods_clip_a_single_outlier(method):
    obs = _outlier_observer()
    lo, hi = obs.range(method, False, 256, percentile=99.9)
    assert obs.max == 60.0
    assert lo < 0 < hi
    # the clipped range ignores the outlier but keeps the bulk of a unit Gaussian
    assert 2.0 < hi < 30.0, (method, lo, hi)


def test_mse_clips_heavy_tails_and_beats_minmax_error():
    torch.manual_seed(0)
    lap = torch.distributions.Laplace(0.0, 1.0)
    obs = Observer()
    data = [lap.sample((20000,)) for _ in range(5)]
    for d in data:
        obs.observe_minmax(d)
    obs.start_histogram()
    for d in data:
        obs.observe_histogram(d)
    lo, hi = obs.range("mse", False, 256)
    assert obs.min < lo < 0 < hi < obs.max
    x = torch.cat(data)

    def mse(lo, hi):
        s, zp, qmin, qmax = activation_qparams(lo, hi, "uint8", False)
        return float(((torch.fake_quantize_per_tensor_affine(x, s, zp, qmin, qmax) - x) ** 2).mean())

    assert mse(lo, hi) < mse(obs.min, obs.max)


def test_symmetric_range_is_symmetric():
    obs = _outlier_observer()
    lo, hi = obs.range("percentile", True, 128)
    assert lo == -hi


def test_activation_qparams_asymmetric_and_symmetric():
    scale, zp, qmin, qmax = activation_qparams(-1.0, 3.0, "int8", False)
    assert (qmin, qmax) == (-128, 127)
    assert scale == np.float32(4.0 / 255)
    assert zp == round(-128 + 1.0 / scale)
    assert qmin <= zp <= qmax  # 0.0 is exactly representable (as q == zp)
    scale, zp, qmin, qmax = activation_qparams(0.0, 2.0, "uint8", False)
    assert (zp, qmin, qmax) == (0, 0, 255)
    scale, zp, _, _ = activation_qparams(-0.5, 2.0, "int8", True)
    assert zp == 0 and scale == np.float32(2.0 / 127)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("hi", [2e-44, 1e-35])
def test_a_range_of_denormals_quantizes_as_zero(symmetric, hi):
    # MobileViT's calibration saw tensors of denormals: a float32 scale that underflows to 0 once
    # divided by zero, and a merely tiny one made the next layer's bias scale s_in * s_w 0; such a
    # tensor is zero to int8, and scale 1 holds that exactly
    scale, zp, qmin, qmax = activation_qparams(-hi / 2, hi, "int8", symmetric)
    assert scale == 1.0 and zp == 0 and (qmin, qmax) == (-128, 127)
    assert activation_qparams(-1e-6, 1e-6, "int8", symmetric)[0] < 1e-7  # a small range keeps its scale


def test_weight_scales_per_channel_symmetric_and_float32_exact():
    w = torch.tensor([[1.0, -3.0], [0.5, 0.25], [0.0, 0.0]])
    s = weight_scales(w, 127, per_channel=True)
    assert s[0] == float(np.float32(3.0 / 127)) and s[1] == float(np.float32(0.5 / 127))
    assert s[2] == s[0]  # an all-zero (pruned) channel borrows the largest scale
    assert all(float(np.float32(v)) == v for v in s)
    assert weight_scales(w, 127, per_channel=False) == [float(np.float32(3.0 / 127))]


# ---- folding and the quantized model -------------------------------------------------------------
def test_bn_folding_matches_and_removes_batchnorm(demo_fp32, digits_xy):
    x = digits_xy[0][:32]
    folded = fold_bn(demo_fp32)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), demo_fp32(x), rtol=1e-4, atol=1e-4)


def test_weights_int8_per_channel_in_range(quantized):
    qm = quantized("percentile")
    assert len(qm.layers) == 9  # 8 convs + classifier of the demo CNN
    for target, info in qm.layers.items():
        w = qm.folded.get_submodule(target).weight.detach()
        amax = w.abs().reshape(w.shape[0], -1).amax(1)
        expected = [float(np.float32(a / 127)) for a in amax.tolist()]
        assert info["weight_scale"] == expected
        ql = qm.module.get_submodule(target)
        wq, bq = ql.quantized_params()
        s = torch.tensor(info["weight_scale"]).reshape([-1] + [1] * (w.dim() - 1))
        q = torch.round(wq / s)
        assert q.abs().max() <= 127 and torch.equal(q, torch.round(q))
        if info["bias_scale"] is not None:
            s_in = qm.points[info["input"]]["scale"]
            assert info["bias_scale"] == [float(np.float32(s_in) * np.float32(v)) for v in info["weight_scale"]]


def test_residual_adds_and_pool_get_output_points(quantized):
    qm = quantized("percentile")
    kinds = sorted(op["kind"] for op in qm.ops.values())
    assert kinds == ["add", "add", "avgpool"]
    for op in qm.ops.values():
        assert all(i in qm.points for i in op["inputs"]) and op["output"] in qm.points
    adds = [op for op in qm.ops.values() if op["kind"] == "add"]
    assert all(op["relu"] for op in adds)  # relu(out + x): the point sits after the ReLU
    assert qm.points[adds[0]["output"]]["min"] >= 0


@pytest.mark.parametrize("method", METHODS)
def test_fake_quant_accuracy_within_one_point(method, quantized, demo_fp32, digits_xy):
    x, y = digits_xy
    with torch.no_grad():
        fp32 = _top1(demo_fp32(x), y)
    int8 = _top1(quantized(method)(x), y)
    assert fp32 > 0.9
    assert int8 >= fp32 - 0.01, (method, fp32, int8)


def test_calibration_uses_activation_ranges(quantized):
    qm = quantized("minmax")
    first = qm.points["x"]  # the graph input: digits are normalised images
    assert first["min"] < 0 < first["max"] or first["min"] >= 0
    for p in qm.points.values():
        lo, hi = min(p["min"], 0.0), max(p["max"], 0.0)
        # minmax: the quantized grid covers the observed range to within one step
        assert (p["qmin"] - p["zero_point"]) * p["scale"] <= lo + p["scale"]
        assert (p["qmax"] - p["zero_point"]) * p["scale"] >= hi - p["scale"]


# ---- targets -------------------------------------------------------------------------------------
def test_tensorrt_target_symmetric_inputs_only(quantized):
    qm = quantized("percentile", target="jetson-orin-nano")
    assert qm.config.symmetric_activations and qm.config.placement == "inputs"
    assert all(p["zero_point"] == 0 and p["dtype"] == "int8" for p in qm.points.values())
    assert all(info["output"] is None for info in qm.layers.values())


def test_x86_without_vnni_uses_reduce_range_and_uint8(quantized):
    qm = quantized("percentile", target="x86-avx2")
    assert qm.config.reduce_range and qm.config.activation_dtype == "uint8"
    assert all(p["qmin"] == 0 and p["qmax"] == 255 for p in qm.points.values())
    assert all(info["weight_qmax"] == 63 for info in qm.layers.values())
    vnni = make_config("percentile", target="x86-avx512-vnni")
    assert not vnni.reduce_range and vnni.activation_dtype == "uint8"
    arm = make_config("percentile", target="rpi4")
    assert arm.activation_dtype == "int8" and not arm.symmetric_activations and not arm.reduce_range


def test_jetson_nano_refuses_int8(demo_fp32, digits):
    with pytest.raises(Int8UnsupportedError, match="jetson-nano.*no int8.*fp16"):
        ep.quantize(demo_fp32, digits, target="jetson-nano", progress=False)


# ---- bad input -----------------------------------------------------------------------------------
def test_calibration_shape_mismatch_names_both_shapes(demo_fp32):
    with pytest.raises(CalibrationError, match=r"\(1, 8, 8\).*\(1, 32, 32\)"):
        ep.quantize(demo_fp32, torch.zeros(4, 1, 8, 8), progress=False)


def test_calibration_dtype_mismatch(demo_fp32):
    with pytest.raises(CalibrationError, match=r"int64.*\(1, 32, 32\).*float32"):
        ep.quantize(demo_fp32, torch.zeros(4, 1, 32, 32, dtype=torch.int64), progress=False)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown calibration method 'kl'"):
        make_config("kl")


# ---- QAT and persistence -------------------------------------------------------------------------
def test_qat_trains_through_fake_quant_and_refreshes_scales(quantized, digits, digits_xy):
    qm = quantized("minmax")
    # through edgeprune.recover.finetune (distillation from the fp32 model); keep the last epoch
    tuned = qat(qm, digits, epochs=1, lr=1e-4, max_batches=10, restore_best=False)
    assert tuned.metadata["qat"]["history"]["loop"] == "edgeprune.recover.finetune"
    assert tuned.metadata["qat"]["history"]["distill"] is True
    changed = [
        t for t in qm.layers if not torch.equal(qm.folded.get_submodule(t).weight, tuned.folded.get_submodule(t).weight)
    ]
    assert changed, "QAT did not update any weight"
    for t, info in tuned.layers.items():
        w = tuned.folded.get_submodule(t).weight.detach()
        assert info["weight_scale"] == weight_scales(w, 127, True)
    assert tuned.points == qm.points  # activation scales stay as calibrated
    x, y = digits_xy
    assert _top1(tuned(x), y) >= _top1(qm(x), y) - 0.01


def test_qat_minimal_loop_on_a_bare_dataset(quantized, digits):
    qm = quantized("minmax")
    tuned = qat(qm, digits.train, epochs=1, lr=1e-4, max_batches=5)
    hist = tuned.metadata["qat"]["history"]
    assert hist["loop"] == "minimal" and len(hist["train_loss"]) == 1 and hist["train_loss"][0] > 0
    assert any(
        not torch.equal(qm.folded.get_submodule(t).weight, tuned.folded.get_submodule(t).weight) for t in qm.layers
    )


def test_save_load_roundtrip(quantized, digits_xy, tmp_path):
    qm = quantized("entropy")
    qm.save(tmp_path / "q")
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["folded.pt", "model", "quant.json"]
    back = QuantizedModel.load(tmp_path / "q")
    assert back.points == qm.points and back.layers == qm.layers and back.config == qm.config
    x = digits_xy[0][:64]
    assert torch.equal(back(x), qm(x))


def test_unsupported_layer_is_listed_as_skipped():
    model = _ConvTransposeNet().eval()
    qm = ep.quantize(model, torch.randn(16, 1, 8, 8), method="minmax", progress=False)
    assert [s["op"] for s in qm.skipped] == ["ConvTranspose2d"]
    assert "kept fp32" in qm.skipped[0]["reason"]
    assert set(qm.layers) == {"conv", "head"}


class _ConvTransposeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.head = nn.Linear(4 * 16 * 16, 3)
        self.input_shape = (1, 8, 8)

    def forward(self, x):
        return self.head(self.up(torch.relu(self.conv(x))).flatten(1))


def test_pruned_model_quantize_save_load_export(demo_fp32, digits, digits_xy, tmp_path):
    import onnx
    from conftest_quant import ort_logits

    x1 = digits_xy[0][:1]
    plan = ep.plan(demo_fp32, (x1,), ratio=0.5, round_to=8)
    pruned = ep.apply(demo_fp32, plan)
    qm = ep.quantize(pruned, digits, method="percentile", progress=False)
    qm.save(tmp_path / "q", plan=plan)
    back = QuantizedModel.load(tmp_path / "q")
    x = digits_xy[0][:64]
    assert torch.equal(back(x), qm(x))
    paths = ep.export(tmp_path / "q", tmp_path / "onnx", formats=["onnx", "onnx-int8"], dynamic_batch=True)
    meta = {p.key: p.value for p in onnx.load(str(paths["onnx-int8"])).metadata_props}
    assert meta["edgeprune_plan_hash"] == plan.hash
    with torch.no_grad():
        ref = pruned(x).numpy()
    assert np.abs(ort_logits(paths["onnx"], x) - ref).max() <= 1e-4 * np.abs(ref).max()
    agree = (ort_logits(paths["onnx-int8"], x).argmax(1) == qm(x).numpy().argmax(1)).mean()
    assert agree >= 0.99


class _HandLinear(nn.Linear):
    """Falcon's FalconLinear: nn.Linear's function written out by hand."""

    def forward(self, x):
        return x @ self.weight.T + self.bias


class _StandardizedLinear(nn.Linear):
    """A subclass that computes something else (weight standardization): not a plain Linear."""

    def forward(self, x):
        w = (self.weight - self.weight.mean(1, keepdim=True)) / (self.weight.std(1, keepdim=True) + 1e-5)
        return nn.functional.linear(x, w, self.bias)


class _PlainSubclass(nn.Linear):
    """A subclass that keeps nn.Linear's forward (like torch's NonDynamicallyQuantizableLinear)."""


class _SubclassNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.hand, self.std, self.head = _HandLinear(8, 16), _StandardizedLinear(16, 16), nn.Linear(16, 4)
        self.plain = _PlainSubclass(16, 16)

    def forward(self, x):
        return self.head(self.plain(torch.relu(self.std(torch.relu(self.hand(x))))))


def test_a_layer_subclass_computing_the_plain_layer_is_quantized_and_others_stay_float(tmp_path):
    torch.manual_seed(0)
    model = _SubclassNet().eval()
    x = torch.randn(64, 8)
    qm = ep.quantize(model, x, method="minmax", progress=False)
    assert set(qm.layers) == {"hand", "plain", "head"}
    # the standardized layer is followed into its forward: a functional linear, kept in float
    assert [(s["op"], "kept fp32" in s["reason"]) for s in qm.skipped] == [("linear", True)]
    assert isinstance(model.hand, _HandLinear)  # the user's model is untouched
    assert torch.nn.functional.cosine_similarity(qm(x).flatten(), model(x).flatten(), 0) > 0.99
    path = ep.export(qm, tmp_path, formats=["tflite-int8"])["tflite-int8"]
    rt = ep.runtime.load(path)
    fcs = [label.split()[1] for kind, label in rt.operators if kind == "FULLY_CONNECTED"]
    assert fcs == ["int8", "16->16", "int8", "int8"]
    got = rt(x[:1].numpy())[0]
    assert np.allclose(got, qm(x[:1]).detach().numpy(), atol=0.05 * float(np.abs(got).max()))
