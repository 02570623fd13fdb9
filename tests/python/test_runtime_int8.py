"""The runtime on int8 files (model.int8.tflite from edgeprune's quantizer and TFLite exporter)
against LiteRT's builtin reference kernels on identical bytes: bit for bit on every test-zoo CNN
the runtime runs, the torchvision-shaped classifiers, the runtime fixtures (dense and sparse 1x1
convolutions) and the demo CNN on digits, on every compiled path and thread count. Also: float
in and float out at the edges, files with inconsistent quantization parameters refused at load
with a message naming the tensor, and ``bench --runtime edgeprune`` on an int8 file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_zoo import bench_models  # noqa: E402
from conftest_quant import *  # noqa: E402,F403
from runtime_models import (  # noqa: E402
    BMM_IN_SCALES,
    bmm_out_scale,
    int8_attention_softmax,
    int8_batch_matmul,
    int8_cnn,
    int8_fc,
    int8_max_pool,
    int8_moves,
    int8_sparse_wide,
    int8_transpose_conv,
    litert_reference,
    litert_reference_run,
)
from zoo import build  # noqa: E402

import edgeprune as ep  # noqa: E402
from edgeprune import kernels  # noqa: E402
from edgeprune.cli.main import main  # noqa: E402
from edgeprune.errors import UserError  # noqa: E402
from edgeprune.export import export  # noqa: E402
from edgeprune.runtime import RuntimeModelError, UnsupportedModelError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ISAS = [i for i in ("reference", "avx2", "avx512", "neon", "neon-dotprod") if i in kernels.supported_isas()]
# every CNN of the test zoo: these int8 end to end
ZOO_CNNS = [
    "resnet_basic",
    "resnet_bottleneck",
    "mobilenet_v2",
    "mobilenet_v3",
    "efficientnet",
    "densenet",
    "shufflenet_v2",
]
# and these with float parts in their int8 files (our quantizer keeps ConvNeXt's layer norm,
# ResNeXt's group norm and UNet's transposed convolution float), which run in the float tier
ZOO_CNNS_MIXED = ["convnext", "resnext", "unet"]


TV = {
    "mobilenet_v2": bench_models.MobileNetV2,
    "mobilenet_v3_large": bench_models.MobileNetV3Large,
    "efficientnet_b0": bench_models.EfficientNetB0,
    "squeezenet1_1": bench_models.SqueezeNet11,
    "mnasnet1_0": bench_models.MNASNet10,
    "resnet18": bench_models.LOCAL["resnet18"],
}


def _int8_file(model, x, tmp_path) -> bytes:
    calib = torch.randn(16, *x.shape[1:], generator=torch.Generator().manual_seed(5))
    qm = ep.quantize(model, calib, method="percentile", progress=False)
    return Path(export(qm, tmp_path, formats=["tflite-int8"], example_inputs=(x[:1],))["tflite-int8"]).read_bytes()


def _assert_bit_parity(data: bytes, n_inputs: int = 2, threads=(1,)):
    m = ep.runtime.load(data)
    assert [i["dtype"] for i in m.inputs] == ["float32"]
    rng = np.random.default_rng(3)
    for _ in range(n_inputs):
        x = rng.standard_normal(m.inputs[0]["shape"]).astype(np.float32)
        want = litert_reference_run(data, [x])
        for isa in ISAS:
            for t in threads:
                got = ep.runtime.load(data, isa=isa, threads=t)(x)
                assert len(got) == len(want)
                for g, w in zip(got, want):
                    assert g.dtype == np.float32 and g.shape == w.shape
                    assert np.array_equal(g, w), (isa, t, float(np.abs(g - w).max()))


@pytest.mark.parametrize("name", ZOO_CNNS)
def test_zoo_cnn_int8_equals_litert_reference(name, tmp_path):
    model, x = build(name)
    data = _int8_file(model, x, tmp_path)
    labels = [lbl for _, lbl, _ in ep.runtime.load(data).profile(runs=1)]
    assert any(lbl.startswith("CONV_2D int8") for lbl in labels), labels  # the convolutions run int8
    if name == "shufflenet_v2":  # the channel split of an int8 tensor is an int8 slice
        assert any(lbl.startswith("STRIDED_SLICE int8") for lbl in labels), labels
    _assert_bit_parity(data)


@pytest.mark.parametrize("name", ZOO_CNNS_MIXED)
def test_zoo_cnn_with_float_parts_within_one_step_of_litert_reference(name, tmp_path):
    """A float op's rounding (a sum's order, RSQRT, erf) is not TFLite's bit for bit, so where a
    float result is quantized again a value may land one quantization step away; the logits stay
    within one step of the reference kernels'."""
    model, x = build(name)
    data = _int8_file(model, x, tmp_path)
    m = ep.runtime.load(data)
    kinds = {lbl.split(" ")[0] + (" int8" if " int8" in lbl else "") for _, lbl in m.operators}
    assert "CONV_2D int8" in kinds and "DEQUANTIZE" in kinds, kinds
    rng = np.random.default_rng(3)
    for _ in range(2):
        x = rng.standard_normal(m.inputs[0]["shape"]).astype(np.float32)
        want = litert_reference_run(data, [x])[0]
        levels = np.unique(want)
        step = float(np.diff(levels).min())  # the output's quantization step
        for isa in ISAS:
            got = ep.runtime.load(data, isa=isa)(x)[0]
            assert got.shape == want.shape
            assert float(np.abs(got - want).max()) <= step * 1.01, (name, isa)


@pytest.mark.parametrize("name", sorted(TV))
def test_torchvision_shaped_int8_equals_litert_reference(name, tmp_path):
    torch.manual_seed(0)
    model = TV[name]().eval()
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    _assert_bit_parity(_int8_file(model, x, tmp_path), n_inputs=1)


# depthwise geometries: (channels, kernel, stride, dilation, padding, height, width). Partial
# channel blocks, 5x5 / 7x7 and a 17-row kernel, dilation, no padding, a single pixel, rows too
# narrow for an interior, and rows wide enough that one call runs several bands of rows.
DW_CASES = [
    (5, 3, 1, 1, 1, 9, 7),
    (16, 5, 2, 1, 2, 11, 6),
    (40, 3, 1, 2, 2, 10, 10),
    (24, 7, 1, 1, 3, 8, 8),
    (8, 17, 1, 1, 8, 20, 18),
    (33, 3, 2, 1, 0, 7, 9),
    (16, 3, 1, 1, 1, 1, 1),
    (48, 5, 1, 1, 2, 3, 2),
    (64, 3, 1, 1, 1, 20, 160),
    (96, 3, 2, 1, 1, 19, 130),
    # narrow stride-1 planes, which the AVX-512 path copies into a zero-point-padded tile first
    (20, 3, 1, 1, 1, 7, 7),
    (40, 5, 1, 1, 2, 14, 14),
    (24, 5, 1, 1, 2, 28, 28),
]


@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: "x".join(map(str, c)))
def test_int8_depthwise_geometries_equal_litert_reference(case, tmp_path):
    c, k, s, d, p, h, w = case
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(c, c, k, stride=s, padding=p, dilation=d, groups=c), torch.nn.ReLU6()
    ).eval()
    data = _int8_file(model, torch.randn(1, c, h, w), tmp_path)
    labels = [lbl for _, lbl in ep.runtime.load(data).operators]
    assert any(lbl.startswith("DEPTHWISE_CONV_2D int8") for lbl in labels), labels
    _assert_bit_parity(data, n_inputs=1, threads=(1, 2, 3))


# convolutions of few input channels: (in, out, kernel, stride, dilation, padding, height, width).
# Stems (the AVX-512 im2col moves whole kernel rows of at most 64 bytes for pixels inside the
# input), row dilation, no padding, and kernel rows past 64 bytes (the per-tap copy).
CONV8_CASES = [
    (3, 32, 3, 2, 1, 1, 33, 40),
    (1, 8, 3, 1, 1, 1, 9, 9),
    (4, 16, 5, 2, 1, 2, 17, 23),
    (3, 8, 3, 1, (2, 1), (2, 1), 12, 15),
    (7, 24, 3, 1, 1, 0, 10, 12),
    (8, 16, 7, 2, 1, 3, 30, 30),
    (10, 8, 7, 1, 1, 3, 9, 9),
]


@pytest.mark.parametrize("case", CONV8_CASES, ids=lambda c: "x".join(map(str, c)))
def test_int8_convolution_geometries_equal_litert_reference(case, tmp_path):
    cin, cout, k, s, d, p, h, w = case
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d), torch.nn.ReLU6()).eval()
    data = _int8_file(model, torch.randn(1, cin, h, w), tmp_path)
    labels = [lbl for _, lbl in ep.runtime.load(data).operators]
    assert any(lbl.startswith("CONV_2D int8") for lbl in labels), labels
    _assert_bit_parity(data, n_inputs=1, threads=(1, 2, 3))


class _FloatMiddle(torch.nn.Module):
    """Linear -> a float activation -> Linear: the int8 file keeps the activation in float between
    a DEQUANTIZE and a QUANTIZE."""

    def __init__(self, act):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.act, self.fc2 = torch.nn.Linear(24, 48), act, torch.nn.Linear(48, 16)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


@pytest.mark.parametrize(
    "act", [torch.nn.GELU(), torch.nn.GELU(approximate="tanh"), torch.nn.Tanh()], ids=["gelu", "gelu_tanh", "tanh"]
)
def test_float_activation_between_int8_layers_runs_as_one_table(act, tmp_path):
    # The planner fuses DEQUANTIZE -> F -> QUANTIZE into the QUANTIZE's table, made by the same
    # three loops, so on every path the result is the unfused chain's; against LiteRT's reference
    # kernels, whose float GELU / TANH round differently from ours, within one output step.
    data = _int8_file(_FloatMiddle(act).eval(), torch.randn(1, 24), tmp_path)
    labels = [lbl for _, lbl in ep.runtime.load(data).operators]
    assert len([lbl for lbl in labels if "(table)" in lbl]) == 1, labels
    assert not any(lbl.startswith(("GELU", "TANH")) for lbl in labels), labels
    from ai_edge_litert.interpreter import Interpreter

    # the output's step: the scale of the int8 tensor the last DEQUANTIZE reads
    (step,) = [
        t["quantization"][0]
        for t in Interpreter(model_content=data).get_tensor_details()
        if t["dtype"] == np.int8 and tuple(t["shape"]) == (1, 16)
    ]
    rng = np.random.default_rng(4)
    for _ in range(4):
        x = (rng.standard_normal((1, 24)) * 3).astype(np.float32)
        want = litert_reference_run(data, [x])[0]
        for isa in ISAS:
            got = ep.runtime.load(data, isa=isa)(x)[0]
            assert np.abs(got - want).max() <= step * 1.001, (isa, float(np.abs(got - want).max()), step)


def _avx2_gemm(isa: str) -> bool:
    """Whether ``isa`` runs int8 GEMMs on the AVX2 loops: the avx2 path, and avx512 on a CPU
    without VNNI. Calls of fewer than 8 rows run there on the dense tiles below 97 % zeros (the
    tiles beat the scalar nonzero walk 3.3x on MobileNetV2's 1x1 layers at 90 % zeros); longer
    calls on sparse weights take the 1x4-block kernel where its cost model says it wins."""
    return isa == "avx2" or (isa == "avx512" and "avx512vnni" not in kernels.cpu_features())


@pytest.mark.parametrize("sparse", [False, True])
def test_fixture_model_dense_and_sparse_every_thread_count(sparse):
    data = int8_cnn(sparse=sparse)
    labels = [lbl for _, lbl, _ in ep.runtime.load(data).profile(runs=1)]
    int8_ops = {lbl.split(" ")[0] for lbl in labels if " int8" in lbl}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "LOGISTIC", "MUL", "ADD", "MEAN"} <= int8_ops
    assert {"MAX_POOL_2D", "AVERAGE_POOL_2D", "PAD", "FULLY_CONNECTED"} <= int8_ops
    # With sparse weights (90 % unstructured: about a third of the 1x4 blocks nonzero), the 16- and
    # 24-channel 1x1 layers run sparse on the portable paths (at least half zeros) and on AVX2's
    # 1x4-block kernel (64 rows a call); AVX-512 VNNI's cost model keeps them dense (its sparse
    # kernel's per-output and per-input costs outweigh the multiply-adds it saves on layers this
    # narrow)
    vnni = "avx512vnni" in kernels.cpu_features()
    for isa in ISAS:
        isa_labels = [lbl for _, lbl, _ in ep.runtime.load(data, isa=isa).profile(runs=1)]
        want = 2 if sparse and not (isa == "avx512" and vnni) else 0
        assert sum("sparse" in lbl for lbl in isa_labels) == want, (isa, isa_labels)
    _assert_bit_parity(data, threads=(1, 2, 4))
    if sparse:  # the sparse path gives the same bits as the dense one
        x = np.random.default_rng(0).standard_normal((1, 16, 16, 3)).astype(np.float32)
        assert np.array_equal(ep.runtime.load(data, sparse=False)(x)[0], ep.runtime.load(data)(x)[0])


def test_wide_block_sparse_layers_run_sparse_on_every_path_with_the_same_bits():
    data = int8_sparse_wide()
    for isa in ISAS:
        labels = [lbl for _, lbl, _ in ep.runtime.load(data, isa=isa).profile(runs=1)]
        want = ["CONV_2D int8 1x1/1 128->128 sparse 8x8"] * 2
        assert [lbl for lbl in labels if "sparse" in lbl] == want, (isa, labels)
    _assert_bit_parity(data, threads=(1, 2, 4))
    x = np.random.default_rng(0).standard_normal((1, 16, 16, 3)).astype(np.float32)
    assert np.array_equal(ep.runtime.load(data, sparse=False)(x)[0], ep.runtime.load(data)(x)[0])


def test_hand_made_per_channel_fc_equals_litert_reference():
    data = int8_fc()
    x = (np.random.default_rng(1).standard_normal((2, 8)) * 3).astype(np.float32)
    got, want = ep.runtime.load(data)(x)[0], litert_reference_run(data, [x])[0]
    assert np.array_equal(got, want) and np.any(want > 0) and np.any(want == 0)  # fused ReLU clamps


# FULLY_CONNECTED at one or two rows with 1x4-block sparse weights, (rows, K, M, block sparsity,
# output scale): on AVX-512 VNNI the channel groups (16 channels a step, input in windows of 128
# channels): channel counts off 16, K off 4 and off the window, a classifier-sized layer, and an
# output scale small enough that the requantization shifts left (the integer steps, not the float
# form).
SPMV8_CASES = [
    (1, 1280, 1000, 0.9, 0.1),
    (1, 130, 37, 0.7, 0.1),
    (2, 300, 20, 0.9, 0.1),
    (1, 5, 17, 0.75, 0.1),
    (1, 64, 16, 0.95, 0.1),
    (1, 200, 24, 0.8, 0.0002),
]


@pytest.mark.parametrize("case", SPMV8_CASES, ids=lambda c: "x".join(map(str, c[:3])))
def test_int8_sparse_fc_at_batch_one_has_the_dense_bits_on_every_path(case):
    """Every path, sparse or not, gives the bits of the portable dense loop. Against LiteRT's
    reference kernels a per-channel FULLY_CONNECTED may differ by one step in rare outputs: that
    kernel requantizes round(acc * s_in * s_w / s_out) in double precision, where TFLite's
    optimized kernels and ours use the Q31 multiplier with its two roundings (1 in 6000 outputs
    of a 1280 -> 1000 layer differ)."""
    n, k, m, sparsity, out_scale = case
    data = int8_fc(shape=(n, k, m), block_sparsity=sparsity, out_scale=out_scale, seed=k)
    x = (np.random.default_rng(k).standard_normal((n, k)) * 3).astype(np.float32)
    want = ep.runtime.load(data, isa="reference", sparse=False)(x)[0]
    assert np.any(want > 0) and np.any(want == 0)
    vnni = "avx512vnni" in kernels.cpu_features()
    for isa in ISAS:
        model = ep.runtime.load(data, isa=isa)
        labels = [lbl for _, lbl, _ in model.profile(runs=1)]
        # on AVX-512 VNNI the channel groups (one row at a time), on x86 without VNNI the dense
        # AVX2 tiles (fewer than 8 rows), elsewhere the portable sparse loop
        tag = " sparse groups" if isa == "avx512" and vnni else "" if _avx2_gemm(isa) else " sparse"
        fc = [lbl for lbl in labels if lbl.startswith("FULLY_CONNECTED")]
        assert fc == [f"FULLY_CONNECTED int8 {k}->{m}{tag}"], (isa, labels)
        np.testing.assert_array_equal(model(x)[0], want, err_msg=isa)
        np.testing.assert_array_equal(ep.runtime.load(data, isa=isa, sparse=False)(x)[0], want, err_msg=isa)
    ref = litert_reference_run(data, [x])[0]
    step = np.float32(out_scale)
    assert np.abs(want - ref).max() <= step * 1.001 and np.mean(want != ref) <= 0.005


# int8 ADD and MUL (the AVX-512 loops: SiLU's MUL, residual ADDs, broadcast scales and biases):
# (kind, input scales and zero points, output scale and zero point, fused activation). A MUL
# multiplier above 1 (a left shift), saturation, ReLU / ReLU6, and sizes with a tail of a vector
# and several thread chunks.
ELTWISE8_CASES = [
    ("mul", (0.05, 3), (0.04, -7), (0.001, 2), None),
    ("mul", (0.1, 0), (0.02, 5), (0.05, -10), "relu"),
    ("add", (0.03, -2), (0.2, 9), (0.1, 4), "relu6"),
    ("add", (0.5, 0), (0.001, 1), (0.02, 0), None),
]


# (the first operand's shape, the second's): the second the output's trailing dimensions (a
# squeeze-excite scale, a bias, a scalar, a period that does not divide 256), or the first
BROADCASTS = [
    ([1, 37, 29, 23], [1, 37, 29, 23]),  # 24679 values: one full 16384-value chunk, then a partial one
    ([1, 13, 11, 96], [1, 1, 1, 96]),
    ([1, 13, 11, 300], [300]),
    ([2, 9, 7, 5], [1]),
    ([1, 1, 1, 24], [1, 17, 19, 24]),
    ([3, 7, 40], [7, 40]),
]


@pytest.mark.parametrize("shapes", BROADCASTS, ids=lambda s: "x".join(map(str, s[0])) + "_" + "x".join(map(str, s[1])))
@pytest.mark.parametrize("case", ELTWISE8_CASES)
def test_int8_add_and_mul_equal_litert_reference(case, shapes):
    from tflite_builder import Builder

    kind, qa, qb, qy, act = case
    b = Builder()
    xs = []
    for (s, z), shape in zip((qa, qb), shapes):
        q = b.op(114, [b.input(shape)], shape, out_dtype=np.int8)  # QUANTIZE
        b.tensors[q]["quant"] = ([s], [z], 0)
        xs.append(q)
    shape = list(np.broadcast_shapes(*map(tuple, shapes)))
    y = b.binary(kind, xs[0], xs[1], act=act, dtype=np.int8)
    b.tensors[y]["quant"] = ([qy[0]], [qy[1]], 0)
    data = b.finish([b.op(6, [y], shape)])  # DEQUANTIZE
    labels = [lbl for _, lbl in ep.runtime.load(data).operators]
    assert any(lbl.startswith(kind.upper() + " int8") for lbl in labels), labels
    rng = np.random.default_rng(7)
    inputs = [(rng.standard_normal(s) * 4).astype(np.float32) for s in shapes]
    want = litert_reference_run(data, inputs)[0]
    assert len(np.unique(want)) > 3  # not all one saturated value
    for isa in ISAS:
        for threads in (1, 2, 3):
            got = ep.runtime.load(data, isa=isa, threads=threads)(*inputs)[0]
            assert np.array_equal(got, want), (isa, threads, float(np.abs(got - want).max()))


# int8 pools: (kind, size, stride, padding, fused activation, input shape). Edge windows (SAME),
# the mean's rounding of negative and positive sums, ReLU / ReLU6 clamps, channel counts off a
# vector, and a window of more than 65536 taps (the mean's integer fallback).
POOL8_CASES = [
    ("avg", 3, 1, "same", None, (1, 13, 11, 37)),
    ("avg", 3, 2, "valid", "relu6", (2, 9, 10, 16)),
    ("avg", 7, 7, "valid", None, (1, 7, 7, 200)),
    ("max", 3, 2, "same", None, (1, 15, 12, 24)),
    ("max", 2, 2, "valid", "relu", (1, 8, 9, 70)),
    ("avg", 257, 1, "valid", None, (1, 257, 257, 2)),
]


@pytest.mark.parametrize("case", POOL8_CASES, ids=lambda c: "-".join(map(str, c[:5])))
def test_int8_pools_equal_litert_reference(case):
    from tflite_builder import Builder, _out_dim

    kind, k, stride, padding, act, shape = case
    b = Builder()
    q = b.op(114, [b.input(list(shape))], list(shape), out_dtype=np.int8)  # QUANTIZE
    b.tensors[q]["quant"] = ([0.037], [-4], 0)
    n, h, w, c = shape
    out = [n, _out_dim(h, k, stride, 1, padding), _out_dim(w, k, stride, 1, padding), c]
    opts = ("pool", dict(padding=padding, stride=stride, size=k, act=act))
    y = b.op(1 if kind == "avg" else 17, [q], out, opts, out_dtype=np.int8)
    b.tensors[y]["quant"] = ([0.037], [-4], 0)
    data = b.finish([b.op(6, [y], out)])  # DEQUANTIZE
    labels = [lbl for _, lbl in ep.runtime.load(data).operators]
    assert any("POOL_2D int8" in lbl for lbl in labels), labels
    x = (np.random.default_rng(k).standard_normal(shape) * 3).astype(np.float32)
    want = litert_reference_run(data, [x])[0]
    for isa in ISAS:
        for threads in (1, 3):
            got = ep.runtime.load(data, isa=isa, threads=threads)(x)[0]
            assert np.array_equal(got, want), (isa, threads, float(np.abs(got - want).max()))


@pytest.mark.parametrize("gate_read_twice", [False, True])
def test_int8_silu_pairs_run_as_one_table_with_the_reference_bits(gate_read_twice):
    """MUL(x, LOGISTIC(x)) in int8 becomes one 256-entry table made from TFLite's LOGISTIC and
    MUL arithmetic (a gate read elsewhere keeps the pair): LiteRT's reference bits either way."""
    from tflite_builder import Builder

    shape = [1, 9, 11, 40]
    b = Builder()
    x = b.op(114, [b.input(shape)], shape, out_dtype=np.int8)  # QUANTIZE
    b.tensors[x]["quant"] = ([0.06], [-9], 0)
    g = b.op(14, [x], shape, out_dtype=np.int8)  # LOGISTIC
    b.tensors[g]["quant"] = ([1.0 / 256], [-128], 0)
    y = b.binary("mul", x, g, dtype=np.int8)
    b.tensors[y]["quant"] = ([0.035], [-60], 0)
    outs = [b.op(6, [y], shape)] + ([b.op(6, [g], shape)] if gate_read_twice else [])  # DEQUANTIZE
    data = b.finish(outs)
    labels = [lbl for _, lbl in ep.runtime.load(data).operators]
    assert any("(SiLU) int8" in lbl for lbl in labels) != gate_read_twice, labels
    xv = (np.random.default_rng(2).standard_normal(shape) * 4).astype(np.float32)
    want = litert_reference_run(data, [xv])
    for isa in ISAS:
        got = ep.runtime.load(data, isa=isa)(xv)
        assert all(np.array_equal(a, w) for a, w in zip(got, want)), isa


BMM_CASES = [
    dict(sa=(2, 1, 5, 8), sb=(1, 3, 8, 6)),  # broadcast batch dimensions
    dict(sa=(2, 1, 8, 5), sb=(1, 3, 8, 6), adj_x=True),
    dict(sa=(2, 1, 5, 8), sb=(1, 3, 6, 8), adj_y=True),
    dict(sa=(3, 8, 5), sb=(6, 8), adj_x=True, adj_y=True),  # rank 3 against rank 2
    dict(sa=(4, 16, 40), sb=(4, 40, 33), zps=(-128, 127, 0)),
    dict(sa=(12, 128, 32), sb=(12, 32, 128), out_scale=0.2),  # attention scores; saturates
    dict(sa=(4, 128, 128), sb=(4, 128, 32), zps=(-128, 3, -9)),  # probabilities @ values
    dict(sa=(2, 70, 7), sb=(1, 7, 19), zps=(120, -120, 5)),  # K not a multiple of 4, rows past 64
    dict(sa=(12, 128, 32), sb=(12, 32, 128), zps=(5, 0, -3)),  # B symmetric (our quantizer's keys)
    dict(sa=(2, 9, 70), sb=(1, 9, 19), adj_x=True, zps=(-7, 0, 2)),  # B symmetric, A copied
    # B symmetric (x86 without VNNI runs these on its GEMM tiles): B read transposed, both, and
    # the attention scores as our exporter writes them (q @ k^T, adj_y)
    dict(sa=(2, 1, 5, 8), sb=(1, 3, 6, 8), adj_y=True, zps=(4, 0, -2)),
    dict(sa=(3, 8, 5), sb=(6, 8), adj_x=True, adj_y=True, zps=(-3, 0, 1)),
    dict(sa=(12, 128, 32), sb=(12, 128, 32), adj_y=True, zps=(6, 0, -1), out_scale=0.2),
]


@pytest.mark.parametrize("case", BMM_CASES)
def test_int8_batch_matmul_equals_litert_reference(case):
    data = int8_batch_matmul(**case)
    labels = [lbl for _, lbl in ep.runtime.load(data).operators]
    assert any(lbl.startswith("BATCH_MATMUL int8") for lbl in labels), labels
    rng = np.random.default_rng(len(case["sa"]) + case["sb"][-1])
    xs = [(rng.standard_normal(case[k]) * 2).astype(np.float32) for k in ("sa", "sb")]
    want = litert_reference_run(data, xs)[0]
    assert np.any(want > want.min()) and np.any(want < want.max())  # not all saturated
    for isa in ISAS:
        for threads in (1, 2, 4):
            got = ep.runtime.load(data, threads=threads, isa=isa)(*xs)[0]
            assert np.array_equal(got, want), (isa, threads, float(np.abs(got - want).max()))
    # against the float product of the quantized inputs: within half an output step wherever the
    # output is not saturated
    zps = case.get("zps", (3, -5, 7))

    def fake_quant(v, scale, z):
        return (np.clip(np.round(v / scale) + z, -128, 127) - z) * scale

    qa, qb = (fake_quant(v, s, z) for v, s, z in zip(xs, BMM_IN_SCALES, zps))
    exact = np.matmul(
        qa.swapaxes(-1, -2) if case.get("adj_x") else qa, qb.swapaxes(-1, -2) if case.get("adj_y") else qb
    )
    k = case["sa"][-2] if case.get("adj_x") else case["sa"][-1]
    sy = case.get("out_scale") or bmm_out_scale(k)
    inside = (want > (-128 - zps[2]) * sy * 0.999) & (want < (127 - zps[2]) * sy * 0.999)
    assert inside.mean() > 0.5
    assert np.abs(want - exact)[inside].max() <= sy * 0.51  # float32 scales: a hair over half


SOFTMAX8_CASES = [
    dict(),  # scale, a [1, 1, L, L] mask bias over four heads
    dict(bias_shape=(1, 1, 1, 24), beta=0.5),  # a key-padding bias, one row for all
    dict(bias_shape=(24,)),  # rank 1
    dict(bias_shape=None, out_scale=1 / 256),  # TFLite's fixed softmax scale
    dict(scale=None, shape=(2, 3, 130), bias_shape=(3, 1)),  # no MUL; a per-row bias; long rows
]


@pytest.mark.parametrize("case", SOFTMAX8_CASES)
def test_int8_attention_softmax_runs_fused_with_the_unfused_bits(case):
    # The planner runs DEQUANTIZE -> MUL -> ADD -> SOFTMAX -> QUANTIZE a row at a time with each
    # operator's own loop: its bits are the unfused chain's (the same file with the SOFTMAX's
    # output exposed, which stops the fusion). Against LiteRT's reference kernels, whose float
    # exp differs from ours, within one output step.
    data, plain = int8_attention_softmax(**case), int8_attention_softmax(**case, expose=True)
    fused = [lbl for _, lbl in ep.runtime.load(data).operators]
    assert len(fused) == 3 and fused[1].startswith("SOFTMAX int8->int8"), fused
    assert any(
        lbl.startswith("SOFTMAX 1") or lbl.startswith("SOFTMAX 2") for _, lbl in ep.runtime.load(plain).operators
    )
    shape = case.get("shape", (1, 4, 9, 24))
    rng = np.random.default_rng(9)
    for _ in range(3):
        x = (rng.standard_normal(shape) * 4).astype(np.float32)
        want = litert_reference_run(data, [x])[0]
        for isa in ISAS:
            for threads in (1, 3):
                got = ep.runtime.load(data, isa=isa, threads=threads)(x)[0]
                ref = ep.runtime.load(plain, isa=isa, threads=threads)(x)[0]
                assert np.array_equal(got, ref), (isa, threads)
                step = case.get("out_scale", 0.0029)
                assert np.abs(got - want).max() <= step * 1.001, (isa, float(np.abs(got - want).max()))


MAXPOOL8_CASES = [
    dict(),  # 3x3/2 SAME, 70 channels (a 64-lane block and a tail)
    dict(shape=(2, 8, 7, 3), size=2, stride=2, padding="valid"),  # batch 2, RGB-narrow
    dict(shape=(1, 13, 13, 130), size=3, stride=1, padding="same", act="relu6"),  # clamped
    dict(shape=(1, 55, 55, 64), size=3, stride=2, padding="valid"),  # SqueezeNet's first pool
]


@pytest.mark.parametrize("case", MAXPOOL8_CASES)
def test_int8_max_pool_equals_litert_reference(case):
    data = int8_max_pool(**case)
    assert any(lbl.startswith("MAX_POOL_2D int8") for _, lbl in ep.runtime.load(data).operators)
    _assert_bit_parity(data, n_inputs=2, threads=(1, 3))


def test_int8_split_and_broadcast_move_bytes_as_litert():
    data = int8_moves()
    labels = [lbl for _, lbl in ep.runtime.load(data).operators]
    assert any(lbl.startswith("SPLIT_V") for lbl in labels) and any(lbl.startswith("BROADCAST_TO") for lbl in labels)
    _assert_bit_parity(data, n_inputs=1, threads=(1, 2))
    with pytest.raises(UnsupportedModelError, match=r"int8 tensor '.*' needs one scale and zero point, and the output"):
        ep.runtime.load(int8_moves(out_quant=([0.1], [3], 0)))


TCONV8_CASES = [
    dict(),  # 3x3/2 SAME with bias
    dict(k=2, padding="valid"),
    dict(act="relu6", bias=False),
    dict(k=4, stride=3, padding="valid", shape=(2, 3, 5, 7)),
    dict(out_hw=(9, 7)),
]


@pytest.mark.parametrize("case", TCONV8_CASES)
def test_int8_transpose_conv_equals_litert_reference(case):
    data = int8_transpose_conv(**case)
    labels = [lbl for _, lbl in ep.runtime.load(data).operators]
    assert any(lbl.startswith("TRANSPOSE_CONV int8") for lbl in labels), labels
    _assert_bit_parity(data)


def test_int8_batch_matmul_with_a_float_operand_is_refused():
    b_data = int8_batch_matmul((2, 5, 8), (2, 8, 6))
    from tflite_builder import Builder

    b = Builder()
    x, w = b.input([2, 5, 8]), b.input([2, 8, 6])
    q = b.op(114, [x], [2, 5, 8], out_dtype=np.int8)
    b.tensors[q]["quant"] = ([0.05], [0], 0)
    y = b.op(126, [q, w], [2, 5, 6], ("bmm", dict(adj_x=False, adj_y=False)), out_dtype=np.int8)
    b.tensors[y]["quant"] = ([0.1], [0], 0)
    mixed = b.finish([b.op(6, [y], [2, 5, 6])])
    assert ep.runtime.load(b_data).operators  # the all-int8 form loads
    with pytest.raises(UnsupportedModelError, match=r"BATCH_MATMUL.*'t1' is float32, this int8 op needs int8"):
        ep.runtime.load(mixed)


def test_demo_cnn_on_digits_same_top1_as_litert(quantized, digits_xy, tmp_path):
    path = export(quantized("percentile"), tmp_path, formats=["tflite-int8"])["tflite-int8"]
    data = Path(path).read_bytes()
    m = ep.runtime.load(data)
    x = digits_xy[0].numpy().transpose(0, 2, 3, 1)
    n = 200
    ours = np.concatenate([m(x[i : i + 1])[0] for i in range(n)])
    oracle = litert_reference(data)
    ref = np.concatenate([oracle([x[i : i + 1]])[0] for i in range(n)])
    # the classifier is the one FULLY_CONNECTED, whose rounding TFLite leaves open (docs/runtime.md):
    # its reference kernel rounds acc * scale once in double, we round its Q31 multiplier twice as
    # its convolutions do, so about one output in a thousand sits one step (of the output scale) away
    step = float(np.diff(np.unique(ref)).min())
    assert float(np.abs(ours - ref).max()) <= step * 1.001
    assert float((ours != ref).mean()) < 0.01
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > step * 1.001  # rows whose top two are not within that one step
    assert clear.mean() > 0.9 and np.array_equal(ours.argmax(1)[clear], ref.argmax(1)[clear])
    assert float((ours.argmax(1) == digits_xy[1][:n].numpy()).mean()) > 0.9


def test_int8_io_file_runs_bit_for_bit_with_litert(quantized, digits_xy, tmp_path):
    """`export --io int8`: the file takes and gives int8 (no QUANTIZE / DEQUANTIZE at its ends);
    the inputs and outputs report their quantization, and the integer outputs equal LiteRT's."""
    path = export(quantized("percentile"), tmp_path, formats=["tflite-int8"], io="int8")["tflite-int8"]
    data = Path(path).read_bytes()
    m = ep.runtime.load(data)
    (inp,), (out,) = m.inputs, m.outputs
    assert inp["dtype"] == "int8" and out["dtype"] == "int8"
    assert len(inp["scale"]) == 1 and inp["scale"][0] > 0 and len(out["scale"]) == 1
    assert "QUANTIZE" not in [k for k, _ in m.operators] and "DEQUANTIZE" not in [k for k, _ in m.operators]
    x = digits_xy[0].numpy().transpose(0, 2, 3, 1)[:64]
    xq = np.clip(np.round(x / inp["scale"][0]) + inp["zero_point"][0], -128, 127).astype(np.int8)
    oracle = litert_reference(data)
    ours = np.concatenate([m(xq[i : i + 1])[0] for i in range(len(xq))])
    ref = np.concatenate([oracle([xq[i : i + 1]])[0] for i in range(len(xq))])
    assert ours.dtype == np.int8 and np.array_equal(ours, ref)
    assert float((ours.argmax(1) == digits_xy[1][:64].numpy()).mean()) > 0.85
    with pytest.raises(UserError, match=r"input 0 \('.*'\) is int8 at scale .*; quantize the data first"):
        m(x[:1])  # float data for an int8 input


BAD_QUANT = [
    (dict(w_quant=([0.01] * 3, [0] * 3, 0)), r"'fc_weight': 3 per-channel scales for a quantized dimension of size 4"),
    (
        dict(w_quant=([0.01, 0.0, 0.01, 0.01], [0] * 4, 0)),
        r"'fc_weight': quantization scale 0 is not a positive finite",
    ),
    (dict(w_quant=([0.01, np.nan, 0.01, 0.01], [0] * 4, 0)), r"'fc_weight': quantization scale nan is not a positive"),
    (dict(x_quant=([-0.05], [0], 0)), r"tensor 1 't1': quantization scale -0.05 is not a positive finite"),
    (dict(x_quant=([np.inf], [0], 0)), r"tensor 1 't1': quantization scale inf is not a positive finite"),
    (dict(x_quant=([0.05], [200], 0)), r"'t1': quantization zero point 200 is outside the int8 range \[-128, 127\]"),
    (dict(w_quant=([0.01] * 4, [0] * 4, 2)), r"'fc_weight': quantized_dimension 2 is outside the tensor's rank 2"),
    (dict(w_quant=([0.01] * 4, [0] * 3, 0)), r"'fc_weight': quantization has 4 scales but 3 zero points"),
]


@pytest.mark.parametrize("kw,msg", BAD_QUANT)
def test_inconsistent_quantization_is_refused_at_load(kw, msg, tmp_path):
    with pytest.raises(RuntimeModelError, match=msg) as e:
        ep.runtime.load(int8_fc(**kw))
    assert "\n" not in str(e.value)
    p = tmp_path / "bad.tflite"
    p.write_bytes(int8_fc(**kw))
    assert main(["bench", str(p), "--runtime", "edgeprune", "--runs", "1"]) == 2


def test_bench_runs_an_int8_file_on_the_runtime(tmp_path, capsys):
    path = ROOT / "tests" / "data" / "runtime" / "int8.tflite"
    assert main(["bench", str(path), "--runtime", "edgeprune", "--runs", "3", "--warmup", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runtime"] == "edgeprune" and out["median_ms"] > 0
