"""TFLite fp32 / fp16 export: every test-zoo model the writer can express matches torch in LiteRT.

Consumes: the test zoo (tests/python/zoo.py), LiteRT (``ai-edge-litert``) in its default
XNNPACK mode and with builtin kernels only. Produces: assertions on outputs (1e-4 relative to
torch), on the files (op codes and versions, metadata, NHWC input), on the CLI (export, inspect,
bench) and on the errors for what the writer cannot express and for corrupt files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo import ZOO, build  # noqa: E402

from edgeprune.export import export, inspect_file  # noqa: E402
from edgeprune.export.tflite_family import run  # noqa: E402
from edgeprune.export.tflite_lower import TFLiteLoweringError  # noqa: E402


class Upsampler(torch.nn.Module):
    """nn.Upsample(mode="bicubic") exports as ONNX Resize in cubic mode, which TFLite has no op for."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.up = torch.nn.Upsample(scale_factor=2, mode="bicubic")

    def forward(self, x):
        return self.up(self.conv(x))


def rel_err(y, ref) -> float:
    return float(np.abs(np.asarray(y) - ref).max() / (np.abs(ref).max() + 1e-12))


def torch_ref(model, x) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_fp32_matches_torch_xnnpack_and_builtin(name, tmp_path):
    model, x = build(name)
    x = x[:1]
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    ref = torch_ref(model, x)
    for builtin in (False, True):
        y = run(path, [x.numpy()], builtin=builtin)[0]
        assert y.shape == ref.shape
        assert rel_err(y, ref) < 1e-4, (name, builtin, rel_err(y, ref))


@pytest.mark.parametrize("fmt", ["tflite", "tflite-int8"])
def test_channel_shuffles_stay_channels_last(fmt, tmp_path):
    """ShuffleNetV2's channel shuffle (view, transpose(1, 2), view) lowers to one small TRANSPOSE of
    the channels, [N, H, W, g, C/g] -> [N, H, W, C/g, g], between two RESHAPEs, instead of moving
    the whole tensor to NCHW and back; the file gives torch's values (int8: the fake-quant twin's)."""
    import edgeprune as ep
    from edgeprune.export.inspect_tflite import inspect_tflite

    model, x = build("shufflenet_v2")
    n_shuffles = sum(1 for m in model.modules() if type(m).__name__ == "ShuffleUnit")
    src = ep.quantize(model, x, progress=False) if fmt == "tflite-int8" else model
    path = export(src, tmp_path, formats=[fmt], example_inputs=(x[:1],))[fmt]
    assert inspect_tflite(path)["ops"].get("TRANSPOSE") == n_shuffles
    m = ep.runtime.load(path)
    shuffles = [lbl for k, lbl in m.operators if k == "TRANSPOSE"]
    assert len(shuffles) == n_shuffles and all(lbl.count("x") == 4 for lbl in shuffles), shuffles
    ref = torch_ref(src, x[:1])
    y = run(path, [x[:1].numpy()], builtin=True)[0]
    assert rel_err(y, ref) < (1e-4 if fmt == "tflite" else 0.05), rel_err(y, ref)
    assert rel_err(m(x[:1].permute(0, 2, 3, 1).numpy())[0], ref) < (1e-4 if fmt == "tflite" else 0.05)


def test_fp16_weights_and_file_contents(tmp_path):
    model, x = build("mobilenet_v2")
    x = x[:1]
    paths = export(model, tmp_path, formats=["tflite", "tflite-fp16"], example_inputs=(x,))
    ref = torch_ref(model, x)
    y16 = run(paths["tflite-fp16"], [x.numpy()])[0]
    assert rel_err(y16, ref) < 5e-3
    info32, info16 = inspect_file(paths["tflite"]), inspect_file(paths["tflite-fp16"])
    assert info16["size_bytes"] < 0.65 * info32["size_bytes"]
    assert info16["ops"]["DEQUANTIZE"] > 0 and info16["op_versions"]["DEQUANTIZE"] == 3
    assert (
        info16["params"]
        == info32["params"]
        == sum(p.numel() for p in model.parameters() if p.dim() != 1)
        + sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        + sum(m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    )
    # NHWC input, float32; metadata names the format and the layout
    assert info32["inputs"][0]["shape"] == [1, 16, 16, 3]
    assert info32["metadata"]["edgeprune_format"] == "tflite"
    assert info32["metadata"]["edgeprune_layout"] == "nhwc"
    assert info32["xnnpack"]["builtin_only"] == {}


def test_file_layout_invariants(tmp_path):
    """TFL3 identifier, empty buffer 0, 16-byte aligned constant data, both builtin code fields."""
    import tflite

    model, x = build("resnet_basic")
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x[:1],))["tflite"]
    data = path.read_bytes()
    assert data[4:8] == b"TFL3"
    m = tflite.Model.GetRootAs(data, 0)
    assert m.Version() == 3 and m.Buffers(0).DataLength() == 0
    for i in range(1, m.BuffersLength()):
        b = m.Buffers(i)
        if b.DataLength():
            start = b._tab.Vector(b._tab.Offset(4))
            assert start % 16 == 0
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        assert oc.DeprecatedBuiltinCode() == min(oc.BuiltinCode(), 127)


def test_unsupported_op_names_op_node_and_alternative_and_leaves_no_file(tmp_path):
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(TFLiteLoweringError) as e:
        export(Upsampler().eval(), tmp_path / "out", formats=["tflite"], example_inputs=(x,))
    msg = str(e.value)
    assert msg.startswith("ONNX op Resize (mode cubic, coordinate_transformation_mode half_pixel, nearest_mode floor)")
    assert "at node '/up/Resize' has no TFLite lowering; use nn.Upsample / F.interpolate with mode nearest" in msg
    assert "\n" not in msg
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class Padded(torch.nn.Module):
    """A conv behind an F.pad of the given mode (reflect: MIRROR_PAD; others: refused)."""

    def __init__(self, mode: str, value: float = 0.0):
        super().__init__()
        self.mode, self.value = mode, value
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        kw = {"value": self.value} if self.mode == "constant" else {}
        return self.conv(torch.nn.functional.pad(x, (1, 2, 2, 1), mode=self.mode, **kw))


def test_reflect_padding_is_mirror_pad_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = Padded("reflect").eval()
    x = torch.randn(1, 3, 8, 8)
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    info = inspect_file(path)
    assert info["ops"]["MIRROR_PAD"] == 1 and "PAD" not in info["ops"]
    ref = torch_ref(model, x)
    assert rel_err(run(path, [x.numpy()])[0], ref) < 1e-5
    assert rel_err(run(path, [x.numpy()], builtin=True)[0], ref) < 1e-5


class _Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _Around(torch.nn.Module):
    """A 3x3 conv, the module under test, then a 1x1 conv (its channels from the body's output)."""

    def __init__(self, body, cout=8):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, cout, 3, padding=1)
        self.body = body
        with torch.no_grad():
            c = body(torch.zeros(1, cout, 12, 12)).shape[1]
        self.head = torch.nn.Conv2d(c, 4, 1)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


# module under test -> (its factory, the TFLite operators it must lower to)
MORE_OPS = {
    "leaky_relu": (lambda: torch.nn.LeakyReLU(0.2), {"LEAKY_RELU"}),
    "prelu": (lambda: torch.nn.PReLU(8, 0.3), {"PRELU"}),
    "elu": (torch.nn.ELU, {"ELU"}),
    "elu_alpha": (lambda: torch.nn.ELU(0.5), {"ELU", "MINIMUM", "MAXIMUM"}),
    "selu": (torch.nn.SELU, {"ELU", "MINIMUM", "MAXIMUM"}),
    "celu": (lambda: torch.nn.CELU(0.7), {"ELU", "DIV"}),
    "softplus": (lambda: _Fn(lambda x: torch.nn.functional.softplus(4 * x)), {"EXP", "LOG"}),
    "mish": (torch.nn.Mish, {"EXP", "LOG", "TANH"}),
    "exp_log": (lambda: _Fn(lambda x: torch.log(torch.exp(x.clamp(max=4)) + 0.5)), {"EXP", "LOG"}),
    "maximum": (lambda: _Fn(lambda x: torch.maximum(x, 0.3 * x.mean(1, keepdim=True))), {"MAXIMUM"}),
    "minimum": (lambda: _Fn(lambda x: torch.minimum(x, torch.tensor(0.25))), {"MINIMUM"}),
    "pixel_shuffle": (lambda: torch.nn.PixelShuffle(2), {"TRANSPOSE"}),
    "pixel_unshuffle": (lambda: torch.nn.PixelUnshuffle(2), {"TRANSPOSE"}),
    "global_max_pool": (lambda: torch.nn.AdaptiveMaxPool2d(1), {"MAX_POOL_2D"}),
    "amax_keepdim": (lambda: _Fn(lambda x: x * x.amax((2, 3), keepdim=True)), {"MAX_POOL_2D"}),
    "reflect_pad": (lambda: torch.nn.ReflectionPad2d((1, 2, 2, 0)), {"MIRROR_PAD"}),
    # CBAM's spatial attention: the maximum and the mean over the channels
    "channel_max_min": (
        lambda: _Fn(lambda x: x * torch.sigmoid(x.amax(1, keepdim=True) + x.amin(1, keepdim=True))),
        {"REDUCE_MAX", "REDUCE_MIN"},
    ),
    "floor_ceil_round_sign": (
        lambda: _Fn(lambda x: torch.floor(2 * x) + torch.ceil(x) * torch.round(3 * x) - torch.sign(x)),
        {"FLOOR", "CEIL", "ROUND", "SIGN"},
    ),
    "amin_hw_flat": (lambda: _Fn(lambda x: x + x.amin((2, 3))[:, :, None, None]), {"REDUCE_MIN"}),
    "tile": (lambda: _Fn(lambda x: x.repeat(1, 2, 1, 3)[:, :, :, :12] + 0.5), {"BROADCAST_TO"}),
    "log_softmax_channels": (lambda: torch.nn.LogSoftmax(1), {"LOG_SOFTMAX", "TRANSPOSE"}),
    # 12x12 -> 6x6 where floor mode gives 5x5: the added windows read lowest-value padding
    "max_pool_ceil_mode": (lambda: torch.nn.MaxPool2d(3, 2, ceil_mode=True), {"MAX_POOL_2D", "PADV2"}),
    # edge padding and flips: a GATHER of the border or reversed indices per axis
    "replicate_pad": (lambda: torch.nn.ReplicationPad2d((1, 2, 2, 0)), {"GATHER"}),
    "flip": (lambda: _Fn(lambda x: x.flip(2, 3) + x.flip(1)), {"GATHER"}),
    "constant_pad_value": (lambda: _Fn(lambda x: F.pad(x, (1, 1, 2, 0), value=0.5)), {"PADV2"}),
    # count_include_pad (PyTorch's default) where TF's SAME would place the same pads but leave
    # them out of the count (Inception's 3x3 stride-1 branch pools)
    "avg_pool_counting_pads": (lambda: torch.nn.AvgPool2d(3, 1, 1), {"AVERAGE_POOL_2D", "PAD"}),
    # 12x12 -> 7x7 (floor: 6x6): the added windows and the padding divide by their own counts
    "avg_pool_ceil_mode": (
        lambda: torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        {"AVERAGE_POOL_2D", "MUL"},
    ),
    # ResNet-D's shortcut pool on an odd size: 11x11 -> 6x6
    "avg_pool_2x2_ceil_odd": (
        lambda: _Fn(lambda x: F.avg_pool2d(x[:, :, 1:, 1:], 2, 2, ceil_mode=True, count_include_pad=False)),
        {"AVERAGE_POOL_2D", "MUL"},
    ),
    "sin_cos": (lambda: _Fn(lambda x: torch.sin(3 * x) + torch.cos(x)), {"SIN", "COS"}),
    "atan": (lambda: _Fn(lambda x: torch.atan(3 * x)), {"ATAN2", "BROADCAST_TO"}),
    # (x 40: exp(x) alone would overflow float32)
    "logsumexp": (
        lambda: _Fn(lambda x: torch.logsumexp(40 * x, 1, keepdim=True) + x),
        {"REDUCE_MAX", "SUM", "EXP", "LOG"},
    ),
    # a decoder's upsampling: 12x12 -> 24x24, the last row and column from output_padding
    "conv_transpose_output_padding": (
        lambda: torch.nn.ConvTranspose2d(8, 4, 3, 2, 1, output_padding=1),
        {"TRANSPOSE_CONV", "STRIDED_SLICE"},
    ),
    "conv_transpose_k3s2p1": (lambda: torch.nn.ConvTranspose2d(8, 4, 3, 2, 1), {"TRANSPOSE_CONV", "STRIDED_SLICE"}),
    "layer_norm_over_chw": (lambda: torch.nn.LayerNorm([8, 12, 12]), {"MEAN", "RSQRT"}),
    # TFLite's pools take no dilation: lowest-value padding, a slice per tap and their maximum
    "max_pool_dilated": (lambda: torch.nn.MaxPool2d(3, 1, 1, dilation=2), {"PADV2", "STRIDED_SLICE", "MAXIMUM"}),
    "max_pool_dilated_s2_ceil": (
        lambda: torch.nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
        {"PADV2", "STRIDED_SLICE", "MAXIMUM"},
    ),
}


@pytest.mark.parametrize("name", sorted(MORE_OPS))
def test_more_activations_and_movements_match_torch_litert_and_our_runtime(name, tmp_path):
    import edgeprune as ep

    factory, ops = MORE_OPS[name]
    torch.manual_seed(0)
    model = _Around(factory()).eval()
    x = torch.randn(1, 3, 12, 12) * 2
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    info = inspect_file(path)
    assert ops <= set(info["ops"]), info["ops"]
    # the op versions TFLite's own converter gives these (tools/versioning/op_version.cc)
    want = {"TRANSPOSE": 6 if name.startswith("pixel") else 1, "BROADCAST_TO": 2, "LEAKY_RELU": 1, "LOG_SOFTMAX": 1}
    assert all(info["op_versions"][k] == v for k, v in want.items() if k in info["ops"]), info["op_versions"]
    ref = torch_ref(model, x)
    lite = run(path, [x.numpy()])[0]
    assert rel_err(lite, ref) < 1e-5
    assert rel_err(run(path, [x.numpy()], builtin=True)[0], ref) < 1e-5
    ours = ep.runtime.load(path)(np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)))[0]
    assert rel_err(ours.transpose(0, 3, 1, 2), lite) < 1e-5


def test_a_classifier_ending_in_log_softmax_matches_torch_far_into_the_tail(tmp_path):
    import edgeprune as ep

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10), torch.nn.LogSoftmax(dim=1)).eval()
    with torch.no_grad():
        model[1].weight.mul_(400)  # log-probabilities below -103, where exp underflows: log(softmax) gives -inf
    x = torch.randn(1, 3, 2, 2)
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    assert inspect_file(path)["ops"]["LOG_SOFTMAX"] == 1
    ref = torch_ref(model, x)
    assert ref.min() < -150
    assert rel_err(run(path, [x.numpy()])[0], ref) < 1e-5
    ours = ep.runtime.load(path)(np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)))[0]
    assert rel_err(ours, ref) < 1e-5


def _litert_reference(path, xs):
    """LiteRT's reference kernels (BUILTIN_REF, the oracle our int8 arithmetic follows) on each input
    of ``xs`` in turn: the first output of each."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    outs = []
    for x in xs:
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    return outs


@pytest.mark.parametrize(
    "name",
    [
        "leaky_relu",
        "prelu",
        "pixel_shuffle",
        "global_max_pool",
        "reflect_pad",
        "replicate_pad",
        "flip",
        "constant_pad_value",
        "avg_pool_counting_pads",
        "avg_pool_ceil_mode",
        "avg_pool_2x2_ceil_odd",
        "max_pool_dilated",
        "max_pool_dilated_s2_ceil",
    ],
)
def test_more_ops_in_int8_files_give_litert_reference_bits_on_our_runtime(name, tmp_path):
    import edgeprune as ep

    factory, _ = MORE_OPS[name]
    torch.manual_seed(0)
    model = _Around(factory()).eval()
    calib = torch.randn(32, 3, 12, 12)
    qm = ep.quantize(model, calib, method="minmax", progress=False)
    path = export(qm, tmp_path, formats=["tflite-int8"], example_inputs=(calib[:1],))["tflite-int8"]
    x = calib[:2].numpy()
    rt = ep.runtime.load(path)
    xs = [np.ascontiguousarray(x[i : i + 1].transpose(0, 2, 3, 1)) for i in range(len(x))]
    for i, (xi, want) in enumerate(zip(xs, _litert_reference(path, xs))):
        assert np.array_equal(rt(xi)[0], want), name
        assert rel_err(want.transpose(0, 3, 1, 2), torch_ref(model, calib[i : i + 1])) < 0.05
    if name == "leaky_relu":  # int8 in and out in the file, one table lookup in our runtime
        assert any(label.startswith("LEAKY_RELU int8") for _, label, _ in rt.profile(runs=1))
        assert inspect_file(path)["ops"].get("DEQUANTIZE", 0) == 1  # the output's only
        assert inspect_file(path)["op_versions"]["LEAKY_RELU"] == 1  # (TFLite's version 2 is int16)


NETS = """
import torch
import torch.nn.functional as F


class Elementwise(torch.nn.Module):
    input_shape = (3, 8, 8)

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.fn(self.conv(x))


class Sampler(torch.nn.Module):
    input_shape = (3, 8, 8)

    def forward(self, x):
        theta = torch.tensor([[[1.0, 0.1, 0.0], [0.0, 1.0, 0.0]]])
        return F.grid_sample(x, F.affine_grid(theta, [1, 3, 8, 8], align_corners=False), align_corners=False)


def erf():
    return Elementwise(torch.erf)


def lrn():
    return Elementwise(lambda y: F.local_response_norm(y, 2))


def grid_sample():
    return Sampler()
"""


@pytest.mark.parametrize(
    "factory, start",
    [
        ("erf", "ONNX op Erf at node '/Erf' has no TFLite lowering; use F.gelu (exact or tanh) instead"),
        ("lrn", "ONNX op AveragePool (only 2-D pools, not 3-D ones (torch's LocalResponseNorm exports as a 3-D"),
        ("grid_sample", "ONNX op GridSample at node '/GridSample' has no TFLite lowering; use a fixed resampling"),
    ],
)
def test_cli_refuses_what_tflite_cannot_express(factory, start, run_cli, tmp_path):
    """A user's model (file factory, saved with ep.save) whose op has no TFLite form: one line, exit 2, no file."""
    import edgeprune as ep

    (tmp_path / "nets.py").write_text(NETS)
    model = ep.models.build(f"{tmp_path / 'nets.py'}:{factory}", trust_code=True)
    ep.save(model, tmp_path / "m")
    r = run_cli("export", tmp_path / "m", "--trust-code", "--format", "tflite", "--out", tmp_path / "e")
    assert r.code == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {start}"), lines
    assert lines[0].endswith("or export --format onnx")
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())


def test_cli_export_inspect_bench(run_cli, tmp_path):
    import edgeprune as ep

    model = ep.models.build("edgeprune:demo-cnn", width=8)
    ep.save(model, tmp_path / "m")
    r = run_cli("export", tmp_path / "m", "--format", "tflite", "--out", tmp_path / "e", "--json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)["files"]
    assert rows[0]["format"] == "tflite" and rows[0]["path"].endswith("model.tflite") and rows[0]["macs"] > 0
    path = tmp_path / "e" / "model.tflite"
    x = torch.randn(1, *model.input_shape, generator=torch.Generator().manual_seed(3))
    assert rel_err(run(path, [x.numpy()])[0], torch_ref(model.eval(), x)) < 1e-4
    r = run_cli("inspect", path, "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert info["ops"]["CONV_2D"] + info["ops"].get("DEPTHWISE_CONV_2D", 0) == n_conv
    assert info["ops"]["FULLY_CONNECTED"] == 1
    assert info["inputs"][0]["shape"] == [1, *model.input_shape[1:], model.input_shape[0]]
    r = run_cli("inspect", path)
    assert r.code == 0 and "XNNPACK takes" in r.out
    r = run_cli("bench", path, "--runs", "3", "--warmup", "1", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["runtime"] == "litert" and res["inputs"] == {"input": info["inputs"][0]["shape"]}
    assert res["median_ms"] > 0


@pytest.mark.parametrize("kind", ["truncated", "not_tflite", "flipped"])
def test_corrupt_file_one_line_exit_2(kind, run_cli, tmp_path):
    model, x = build("resnet_basic")
    good = export(model, tmp_path, formats=["tflite"], example_inputs=(x[:1],))["tflite"].read_bytes()
    bad = tmp_path / "bad.tflite"
    if kind == "truncated":
        bad.write_bytes(good[: len(good) // 3])
    elif kind == "not_tflite":
        bad.write_bytes(b"\x00" * 64)
    else:
        data = bytearray(good)
        data[0:4] = b"\xff\xff\xff\x7f"  # root table offset far past the end
        bad.write_bytes(bytes(data))
    for cmd in (("inspect", bad), ("bench", bad, "--runs", "2")):
        r = run_cli(*cmd)
        assert r.code == 2, (cmd, r.code, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.tflite" in lines[0]


def _prune_1x1_and_fc(model, keep: float, block: int = 1, seed: int = 0):
    """Zero all but ``keep`` of the 1x1-conv and linear weights (unstructured, or 1 x ``block`` along the input)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) or (isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)):
                w = m.weight.view(m.weight.shape[0], -1)
                if w.shape[1] % block:
                    continue
                mask = (torch.rand(w.shape[0], w.shape[1] // block, generator=g) < keep).float()
                w.mul_(mask.repeat_interleave(block, dim=1))
    return model


@pytest.mark.parametrize("block", [1, 4])
def test_sparse_weights_smaller_and_same_outputs(block, tmp_path):
    model, x = build("mobilenet_v2")
    model = _prune_1x1_and_fc(model, keep=0.25, block=block)
    x = x[:1]
    dense = export(model, tmp_path / "d", formats=["tflite"], example_inputs=(x,), sparse=False)["tflite"]
    sparse = export(model, tmp_path / "s", formats=["tflite"], example_inputs=(x,))["tflite"]  # default: >= 70 %
    assert sparse.stat().st_size < 0.7 * dense.stat().st_size
    info = inspect_file(sparse)
    n_1x1 = sum(
        isinstance(m, torch.nn.Linear) or (isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1))
        for m in model.modules()
    )
    assert info["ops"]["DENSIFY"] == len(info["sparse_tensors"]) == n_1x1
    assert all(t["block_map"] == ([] if block == 1 else [len(t["shape"]) - 1]) for t in info["sparse_tensors"])
    assert info["params"] == inspect_file(dense)["params"]
    ref = torch_ref(model, x)
    y_builtin = run(sparse, [x.numpy()], builtin=True)[0]
    assert np.array_equal(y_builtin, run(dense, [x.numpy()], builtin=True)[0])  # same values, same kernels
    assert rel_err(run(sparse, [x.numpy()])[0], ref) < 1e-4 and rel_err(y_builtin, ref) < 1e-4


def test_int8_sparse_weights_smaller_and_the_same_bits_in_every_runtime(tmp_path):
    # int8 weights at 90 % zeros in 1x4 blocks: stored sparse with their per-channel scales, and
    # LiteRT (XNNPACK and builtin), tflite's reference kernels and our runtime give the dense
    # file's bits
    from runtime_models import litert_reference_run

    import edgeprune as ep
    from edgeprune.export.tflite_family import interpreter

    model, x = build("mobilenet_v2")
    model = _prune_1x1_and_fc(model, keep=0.1, block=4)
    calib = torch.randn(16, *x.shape[1:], generator=torch.Generator().manual_seed(4))
    qm = ep.quantize(model, calib, progress=False)
    x = x[:1]
    dense = export(qm, tmp_path / "d", formats=["tflite-int8"], example_inputs=(x,), sparse=False)["tflite-int8"]
    sparse = export(qm, tmp_path / "s", formats=["tflite-int8"], example_inputs=(x,))["tflite-int8"]
    info = inspect_file(sparse)
    # every 1x1 conv; the classifier's int8 FULLY_CONNECTED stays dense (XNNPACK cannot take it)
    n_1x1 = sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())
    assert info["ops"]["DENSIFY"] == len(info["sparse_tensors"]) == n_1x1
    assert not any(t["name"].startswith("classifier") for t in info["sparse_tensors"])
    assert "DENSIFY" not in inspect_file(dense)["ops"]
    stored = sum(t["bytes"] for t in info["sparse_tensors"])
    assert stored < 0.5 * sum(int(np.prod(t["shape"])) for t in info["sparse_tensors"])  # int8: 1 byte each
    assert sparse.stat().st_size < dense.stat().st_size
    details = {n: {t["name"]: t for t in interpreter(p, builtin=True).get_tensor_details()} for n, p in
               (("d", dense), ("s", sparse))}  # fmt: skip
    for t in info["sparse_tensors"]:  # the same int8 scales on the sparse weight as on the dense one
        got, want = details["s"][t["name"]], details["d"][t["name"]]
        assert got["dtype"] == want["dtype"] == np.int8
        np.testing.assert_array_equal(
            got["quantization_parameters"]["scales"], want["quantization_parameters"]["scales"]
        )
    xs = [x.numpy()]
    for builtin in (False, True):
        np.testing.assert_array_equal(run(sparse, xs, builtin=builtin)[0], run(dense, xs, builtin=builtin)[0])
    nhwc = [x.numpy().transpose(0, 2, 3, 1).copy()]
    ref = litert_reference_run(sparse.read_bytes(), nhwc)[0]
    np.testing.assert_array_equal(ref, litert_reference_run(dense.read_bytes(), nhwc)[0])
    np.testing.assert_array_equal(ep.runtime.load(sparse)(nhwc[0])[0], ref)


def test_all_zero_weights_stay_dense_and_load(tmp_path):
    # an empty sparse buffer is no constant to TFLite (DENSIFY fails to prepare): such weights stay dense
    from runtime_models import litert_reference_run

    import edgeprune as ep

    model, x = build("mobilenet_v2")
    model = _prune_1x1_and_fc(model, keep=0.0)
    x = x[:1]
    qm = ep.quantize(model, torch.randn(8, *x.shape[1:], generator=torch.Generator().manual_seed(5)), progress=False)
    for fmt, src in (("tflite", model), ("tflite-int8", qm)):
        path = export(src, tmp_path / fmt, formats=[fmt], example_inputs=(x,), sparse=True)[fmt]
        assert "DENSIFY" not in inspect_file(path)["ops"], fmt
        nhwc = [x.numpy().transpose(0, 2, 3, 1).copy()]
        ref, got = litert_reference_run(path.read_bytes(), nhwc)[0], run(path, [x.numpy()], builtin=True)[0]
        assert np.abs(ref - got).max() <= 0.02 * np.abs(ref).max(), fmt  # both kernel sets load and agree


def test_sparse_policy(tmp_path):
    model, x = build("resnet_basic")  # dense weights: nothing at >= 70 % zeros
    x = x[:1]
    auto = export(model, tmp_path / "a", formats=["tflite"], example_inputs=(x,))["tflite"]
    assert "DENSIFY" not in inspect_file(auto)["ops"]
    forced = export(model, tmp_path / "f", formats=["tflite"], example_inputs=(x,), sparse=True)["tflite"]
    info = inspect_file(forced)
    assert info["ops"]["DENSIFY"] == len(info["sparse_tensors"]) > 0
    assert rel_err(run(forced, [x.numpy()])[0], torch_ref(model, x)) < 1e-4


def test_bench_tflite_on_a_device_without_torch_or_onnx(tmp_path):
    """`edgeprune bench model.tflite` needs LiteRT and numpy only (a Pi image without torch and onnx)."""
    import os
    import subprocess

    model, x = build("mobilenet_v2")
    path = export(model, tmp_path / "e", formats=["tflite"], example_inputs=(x[:1],))["tflite"]
    for blocked in ("torch", "onnx"):
        (tmp_path / "site" / blocked).mkdir(parents=True)
        (tmp_path / "site" / blocked / "__init__.py").write_text(f"raise ImportError('no {blocked} on this device')\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{root}"}
    cmd = [sys.executable, "-m", "edgeprune.cli.bench", str(path), "--runs", "3", "--warmup", "0", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["runtime"] == "litert" and out["runs"] == 3 and out["inputs"] == {"input": [1, 16, 16, 3]}


def test_inspect_of_mutated_files_is_a_result_or_one_line_error(tmp_path):
    """Bytes flipped in the tables (the first and last KiB of a small file) or splices: inspect returns its dict
    or raises TFLiteFileError with one line, never another exception (the reader walks offsets from the file)."""
    hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the test extra (make venv installs it)")
    from hypothesis import strategies as st

    from edgeprune.export.tflite_family import TFLiteFileError

    model, x = build("resnet_basic")
    base = export(model, tmp_path, formats=["tflite"], example_inputs=(x[:1],))["tflite"].read_bytes()
    n = len(base)
    where = st.integers(0, 1023) | st.integers(n - 1024, n - 1)

    def flipped(fl):
        data = bytearray(base)
        for i, v in fl:
            data[i] ^= v
        return bytes(data)

    flips = st.lists(st.tuples(where, st.integers(1, 255)), min_size=1, max_size=8).map(flipped)
    splice = st.tuples(st.integers(0, n), st.binary(max_size=64)).map(lambda t: base[: t[0]] + t[1] + base[t[0] :])
    path = tmp_path / "fuzzed.tflite"
    outcomes = []

    @hypothesis.settings(derandomize=True, max_examples=50, deadline=None, database=None)
    @hypothesis.given(data=flips | splice)
    def check(data):
        path.write_bytes(data)
        try:
            info = inspect_file(path)
        except TFLiteFileError as e:
            assert "\n" not in str(e) and str(e).startswith(f"{path}: ")
            outcomes.append("error")
        else:
            assert info["size_bytes"] == len(data)
            outcomes.append("ok")

    check()
    assert "error" in outcomes  # the mutations do reach the checks


class _Recurrent(torch.nn.Module):
    """A keyword-spotting shape: a 1-D conv front end, a recurrent layer, a classifier on its last
    step (``last="y"``: Y[:, -1]; ``"h"``: the final hidden state h_n of the last layer)."""

    def __init__(self, kind, layers=1, bidirectional=False, batch_first=True, last="y", **kw):
        super().__init__()
        self.conv = torch.nn.Conv1d(10, 16, 3, padding=1)
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
        self.rnn = cls(16, 24, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, **kw)
        self.fc = torch.nn.Linear(24 * (2 if bidirectional and last == "y" else 1), 5)
        self.batch_first, self.last, self.kind = batch_first, last, kind

    def forward(self, x):
        y = torch.relu(self.conv(x)).transpose(1, 2)
        if not self.batch_first:
            y = y.transpose(0, 1)
        out, state = self.rnn(y)
        if self.last == "h":
            h = state[0] if self.kind == "lstm" else state
            return self.fc(h[-1])
        return self.fc(out[:, -1] if self.batch_first else out[-1])


RECURRENT = {
    "lstm": dict(kind="lstm"),
    "lstm_2_layers_bidirectional": dict(kind="lstm", layers=2, bidirectional=True),
    "lstm_final_state": dict(kind="lstm", last="h"),
    "gru_bidirectional_time_major": dict(kind="gru", bidirectional=True, batch_first=False),
    "gru_2_layers_final_state": dict(kind="gru", layers=2, last="h"),
    "rnn_tanh": dict(kind="rnn"),
    "rnn_relu_bidirectional": dict(kind="rnn", bidirectional=True, nonlinearity="relu"),
}


@pytest.mark.parametrize("name", sorted(RECURRENT))
def test_recurrent_layers_unroll_into_ops_litert_and_our_runtime_run(name, tmp_path):
    """nn.LSTM / nn.GRU / nn.RNN (the ONNX LSTM, GRU and RNN ops) unrolled over the 20 steps:
    torch = LiteRT (delegated and builtin) = our runtime on the same file."""
    import edgeprune as ep

    torch.manual_seed(0)
    model = _Recurrent(**RECURRENT[name]).eval()
    x = torch.randn(1, 10, 20)
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    info = inspect_file(path)
    assert {"FULLY_CONNECTED", "SPLIT_V", "RELU" if "relu" in name else "TANH"} <= set(info["ops"]), info["ops"]
    assert not {"UNIDIRECTIONAL_SEQUENCE_LSTM", "WHILE"} & set(info["ops"])
    ref = torch_ref(model, x)
    assert rel_err(run(path, [x.numpy()])[0], ref) < 1e-5
    assert rel_err(run(path, [x.numpy()], builtin=True)[0], ref) < 1e-5
    assert rel_err(ep.runtime.load(path)(x.numpy())[0], ref) < 1e-5


def test_a_pruned_lstm_exports_and_runs_on_our_runtime(tmp_path):
    """Hidden units pruned with their gates (the graph's recurrent rule), then the TFLite writer:
    the smaller recurrent matrices run, and match the pruned torch model."""
    import edgeprune as ep

    torch.manual_seed(0)
    model = _Recurrent("lstm", layers=2).eval()
    x = torch.randn(1, 10, 20)
    small = ep.apply(model, ep.plan(model, x, ratio=0.5))
    assert small.rnn.hidden_size < 24
    path = export(small, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    ref = torch_ref(small, x)
    assert rel_err(run(path, [x.numpy()])[0], ref) < 1e-5
    assert rel_err(ep.runtime.load(path)(x.numpy())[0], ref) < 1e-5


def test_a_projected_lstm_is_refused_before_any_file_is_written(tmp_path):
    class Projected(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(8, 16, proj_size=4, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0]

    from edgeprune.errors import UserError

    # (torch's dynamo exporter writes it as an LSTM of hidden size 4 without the projection)
    for fmt in ("onnx", "tflite"):
        with pytest.raises(UserError, match=r"^nn.LSTM 'rnn' has proj_size=4, which ONNX's LSTM cannot express"):
            export(Projected().eval(), tmp_path / fmt, formats=[fmt], example_inputs=(torch.randn(1, 5, 8),))
        assert not (tmp_path / fmt).exists() or not any((tmp_path / fmt).iterdir())


def test_a_negative_constant_gather_index_counts_from_the_end(tmp_path):
    """x[:, -1] (the last step or token): TFLite's GATHER refuses negative indices, so the writer
    stores the index counted from the start."""
    model = _Fn(lambda x: x[:, -1] * 2 + x[:, -2]).eval()
    x = torch.randn(1, 6, 5)
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    assert rel_err(run(path, [x.numpy()])[0], torch_ref(model, x)) < 1e-6


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_quantized_recurrent_model_gives_litert_reference_bits_on_our_runtime(kind, tmp_path):
    """ep.quantize keeps the recurrent arithmetic in float (DEQUANTIZE before it, QUANTIZE after):
    the int8 file runs on both runtimes with the same bits and keeps torch's top-1."""
    import edgeprune as ep

    torch.manual_seed(0)
    model = _Recurrent(kind, layers=2, bidirectional=True).eval()
    calib = torch.randn(32, 10, 20)
    qm = ep.quantize(model, calib, method="minmax", progress=False)
    path = export(qm, tmp_path, formats=["tflite-int8"], example_inputs=(calib[:1],))["tflite-int8"]
    rt = ep.runtime.load(path)
    ref = torch_ref(model, calib[:4])
    xs = [calib[i : i + 1].numpy() for i in range(4)]
    for i, (xi, want) in enumerate(zip(xs, _litert_reference(path, xs))):
        assert np.array_equal(rt(xi)[0], want)
        assert want.argmax() == ref[i].argmax() and rel_err(want, ref[i : i + 1]) < 0.02


def test_an_unrolled_recurrent_layer_stores_its_weights_once(tmp_path):
    """Every step's FULLY_CONNECTED reads the same recurrent weight tensor: the file holds W and R
    once per direction, not once per step."""
    torch.manual_seed(0)
    model = _Recurrent("lstm").eval()
    x = torch.randn(1, 10, 20)
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    weights = sum(p.numel() for p in model.parameters()) * 4
    assert path.stat().st_size < 2 * weights + 64 * 1024, (path.stat().st_size, weights)
    assert inspect_file(path)["ops"]["FULLY_CONNECTED"] == 20 + 1 + 1  # the steps, the inputs, the classifier


ONE_D = {
    "max_pool": (lambda: torch.nn.MaxPool1d(3, 2, 1), {"MAX_POOL_2D"}),
    "avg_pool_ceil_mode": (lambda: torch.nn.AvgPool1d(3, 2, ceil_mode=True), {"AVERAGE_POOL_2D", "MUL"}),
    "conv_transpose": (lambda: torch.nn.ConvTranspose1d(8, 4, 4, 2, 1), {"TRANSPOSE_CONV"}),
    "conv_transpose_output_padding": (
        lambda: torch.nn.ConvTranspose1d(8, 4, 3, 2, 1, output_padding=1),
        {"TRANSPOSE_CONV", "STRIDED_SLICE"},
    ),
    "upsample_nearest": (lambda: torch.nn.Upsample(scale_factor=2), {"RESIZE_NEAREST_NEIGHBOR"}),
    "upsample_linear": (lambda: torch.nn.Upsample(size=50, mode="linear"), {"RESIZE_BILINEAR"}),
    "replicate_pad": (lambda: torch.nn.ReplicationPad1d((1, 3)), {"GATHER"}),
}


@pytest.mark.parametrize("name", sorted(ONE_D))
def test_one_d_pools_transposed_convs_and_resizes_run_over_a_height_of_1(name, tmp_path):
    """Audio, keyword-spotting and sensor models on [N, C, L]: the 1-D ops as the 2-D ones over a
    height of 1, between 1-D convs; torch = LiteRT = our runtime."""
    import edgeprune as ep

    factory, ops = ONE_D[name]
    torch.manual_seed(0)
    body = factory()
    model = torch.nn.Sequential(
        torch.nn.Conv1d(6, 8, 3, padding=1), body, torch.nn.Conv1d(4 if "transpose" in name else 8, 5, 1)
    )
    model = model.eval()
    x = torch.randn(1, 6, 32)
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    assert ops <= set(inspect_file(path)["ops"]), inspect_file(path)["ops"]
    ref = torch_ref(model, x)
    assert rel_err(run(path, [x.numpy()])[0], ref) < 1e-5
    assert rel_err(ep.runtime.load(path)(x.numpy())[0], ref) < 1e-5


def test_an_int8_one_d_model_with_pools_keeps_litert_reference_bits(tmp_path):
    import edgeprune as ep

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(6, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool1d(2),
        torch.nn.Conv1d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AvgPool1d(2),
        torch.nn.Conv1d(8, 5, 1),  # (not a Linear: int8 FULLY_CONNECTED is within 1 LSB, docs/runtime.md)
    ).eval()
    calib = torch.randn(32, 6, 32)
    qm = ep.quantize(model, calib, method="minmax", progress=False)
    path = export(qm, tmp_path, formats=["tflite-int8"], example_inputs=(calib[:1],))["tflite-int8"]
    assert {"MAX_POOL_2D", "AVERAGE_POOL_2D"} <= set(inspect_file(path)["ops"])
    rt = ep.runtime.load(path)
    ref = torch_ref(model, calib[:4])
    xs = [calib[i : i + 1].numpy() for i in range(4)]
    for i, (xi, want) in enumerate(zip(xs, _litert_reference(path, xs))):
        assert np.array_equal(rt(xi)[0], want)
        assert rel_err(want, ref[i : i + 1]) < 0.05


class _SharedBlocks(torch.nn.Module):
    """ALBERT's pattern: one block (and one weight) applied several times."""

    def __init__(self, uses=4):
        super().__init__()
        self.uses = uses
        self.inp = torch.nn.Linear(8, 64)
        self.block = torch.nn.Linear(64, 64)
        with torch.no_grad():  # 90 % zeros, so the sparse encoding applies to the shared weight
            self.block.weight.mul_((torch.rand(64, 64, generator=torch.Generator().manual_seed(3)) < 0.1).float())

    def forward(self, x):
        x = self.inp(x)
        for _ in range(self.uses):
            x = x + torch.relu(self.block(x))
        return x


@pytest.mark.parametrize("fmt,sparse", [("tflite", False), ("tflite", True), ("tflite-fp16", False)])
def test_a_weight_used_by_several_operators_is_stored_once(tmp_path, fmt, sparse):
    import edgeprune as ep

    torch.manual_seed(0)
    model = _SharedBlocks().eval()
    x = torch.randn(1, 8)
    path = export(model, tmp_path, formats=[fmt], example_inputs=(x,), sparse=sparse)[fmt]
    once = export(_SharedBlocks(uses=1).eval(), tmp_path / "1", formats=[fmt], example_inputs=(x,), sparse=sparse)[fmt]
    # three more uses of the weight add their operators and activations (about 1 KB each), not three
    # more copies of it (16 KB each in float32, 8 in fp16, 3 sparse)
    assert path.stat().st_size - once.stat().st_size < 3 * 1500, (path.stat().st_size, once.stat().st_size)
    ref = torch_ref(model, x)
    assert rel_err(run(path, [x.numpy()])[0], ref) < 1e-3
    assert rel_err(run(path, [x.numpy()], builtin=True)[0], ref) < 1e-3
    assert rel_err(ep.runtime.load(path)(x.numpy())[0], ref) < 1e-3
