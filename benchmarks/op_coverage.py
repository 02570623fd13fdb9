"""Operator coverage: small modules nobody wrote for edgeprune, through the TFLite writer, LiteRT and
our runtime on the same file.

Consumes: about 180 small PyTorch modules defined below (activations, pools with every padding and
rounding mode, paddings, reductions, shuffles, normalizations, elementwise math, transposed and 1-D
convolutions, resizes, recurrent layers, attention), each behind a 3x3 conv stem on a 1x3x16x16
image (``image``) or a 1-D conv on 1x8x32 (``sequence``), random weights, seed 0. Produces: JSON
rows, one per module:
  {"module", "input": "image" | "sequence", "status": "ok" | "export" | "runtime" | "mismatch",
   "ours_vs_litert" and "torch_vs_litert" (max abs difference / max abs LiteRT output), "error"
   (the one-line message when the writer or our runtime refuses the module)}
and a last row {"summary": {status: count}}. "ok" means ours vs LiteRT < 1e-4 and torch vs LiteRT
< 1e-3; "export" is a refusal by the TFLite writer, which names the ONNX op and node.

    python benchmarks/op_coverage.py --json build/op-coverage.json [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/tflite.py is named like the `tflite` schema package the writer imports: this directory
# goes last on the path (for rows_json), not first as a script's own directory does
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))

from rows_json import status_counts, write_rows  # noqa: E402


class Fn(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


class Stem(nn.Module):
    """A conv in front of the module under test, so every input is a computed activation."""

    def __init__(self, body, one_d: bool):
        super().__init__()
        self.stem = nn.Conv1d(8, 8, 3, padding=1) if one_d else nn.Conv2d(3, 8, 3, padding=1)
        self.body = body

    def forward(self, x):
        return self.body(self.stem(x))


class TCN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(8, 16, 3, dilation=2), nn.Conv1d(16, 16, 3, dilation=4)
        self.skip = nn.Conv1d(8, 16, 1)

    def forward(self, x):  # causal: left padding only
        y = F.relu(self.c1(F.pad(x, (4, 0))))
        return F.relu(self.c2(F.pad(y, (8, 0)))) + self.skip(x)


def _rnn(cls, **kw):
    layer = cls(8, 12, batch_first=True, **kw)
    return Fn(lambda x: layer(x.transpose(1, 2))[0][:, -1])


def image_modules() -> dict:
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    return {
        # activations
        **{
            n: m
            for n, m in [
                ("relu6", nn.ReLU6()),
                ("leaky_relu", nn.LeakyReLU(0.1)),
                ("prelu", nn.PReLU(8)),
                ("elu", nn.ELU()),
                ("elu_alpha", nn.ELU(0.5)),
                ("selu", nn.SELU()),
                ("celu", nn.CELU()),
                ("gelu", nn.GELU()),
                ("gelu_tanh", nn.GELU("tanh")),
                ("silu", nn.SiLU()),
                ("mish", nn.Mish()),
                ("hardswish", nn.Hardswish()),
                ("hardsigmoid", nn.Hardsigmoid()),
                ("tanh", nn.Tanh()),
                ("softplus", nn.Softplus()),
                ("softsign", nn.Softsign()),
                ("hardtanh", nn.Hardtanh(-0.5, 0.5)),
                ("hardshrink", nn.Hardshrink(0.3)),
                ("softshrink", nn.Softshrink(0.3)),
                ("tanhshrink", nn.Tanhshrink()),
                ("logsigmoid", nn.LogSigmoid()),
                ("threshold", nn.Threshold(0.1, 20.0)),
                ("rrelu_eval", nn.RReLU()),
                ("glu", nn.GLU(1)),
            ]
        },  # fmt: skip
        # elementwise math
        "floor_ceil_round_sign": Fn(lambda x: torch.floor(x) + torch.ceil(x) * torch.round(x) - torch.sign(x)),
        "exp_log": Fn(lambda x: torch.log(torch.exp(x.clamp(max=3)) + 0.1)),
        "sqrt_rsqrt": Fn(lambda x: torch.sqrt(x.abs() + 1) + torch.rsqrt(x.abs() + 1)),
        "sin_cos": Fn(lambda x: torch.sin(3 * x) + torch.cos(x)),
        "pow": Fn(lambda x: x.pow(3) + (x.abs() + 1).pow(0.5)),
        "reciprocal": Fn(lambda x: torch.reciprocal(x.abs() + 1)),
        "where": Fn(lambda x: torch.where(x > 0, x, 0.1 * x)),
        "clamp": Fn(lambda x: x.clamp(-0.5, 0.7) + x.clamp(min=0.2)),
        "maximum_minimum": Fn(lambda x: torch.maximum(x, x * 0.3) + torch.minimum(x, torch.tensor(0.3))),
        "erf": Fn(torch.erf),
        "atan": Fn(torch.atan),
        # reductions
        "mean_hw": Fn(lambda x: x.mean((2, 3), keepdim=True) * x),
        "mean_c": Fn(lambda x: x.mean(1)),
        "sum_c": Fn(lambda x: x.sum(1, keepdim=True) * x),
        "amax_amin": Fn(lambda x: x.amax((2, 3), keepdim=True) + x.amin(1, keepdim=True)),
        "max_dim": Fn(lambda x: torch.max(x, dim=1, keepdim=True)[0]),
        "argmax": Fn(lambda x: x.argmax(1).float()),
        "var_std": Fn(lambda x: x.var(1, keepdim=True) + x / (x.std((2, 3), keepdim=True) + 1)),
        "norm": Fn(lambda x: F.normalize(x, dim=1)),
        "logsumexp": Fn(lambda x: torch.logsumexp(x, 1)),
        "softmax_c": nn.Softmax(1),
        "log_softmax_c": nn.LogSoftmax(1),
        "softmin": nn.Softmin(1),
        "softmax_spatial": Fn(lambda x: x.flatten(2).softmax(-1)),
        "cumsum": Fn(lambda x: x.cumsum(3)),
        # pools
        "max_pool": nn.MaxPool2d(3, 2, 1),
        "max_pool_ceil": nn.MaxPool2d(3, 2, ceil_mode=True),
        "max_pool_dilated": nn.MaxPool2d(3, 1, 1, dilation=2),
        "avg_pool": nn.AvgPool2d(2),
        "avg_pool_pad": nn.AvgPool2d(3, 1, 1),
        "avg_pool_pad_excluded": nn.AvgPool2d(3, 1, 1, count_include_pad=False),
        "avg_pool_ceil": nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        "avg_pool_ceil_odd": Fn(lambda x: F.avg_pool2d(x[:, :, 1:, 1:], 2, 2, ceil_mode=True, count_include_pad=False)),
        "adaptive_avg_3": nn.AdaptiveAvgPool2d(3),
        "adaptive_avg_1x4": nn.AdaptiveAvgPool2d((1, 4)),
        "adaptive_max_2": nn.AdaptiveMaxPool2d(2),
        "global_max": nn.AdaptiveMaxPool2d(1),
        "lrn": nn.LocalResponseNorm(3),
        # padding, slicing, movement
        "pad_zero": nn.ZeroPad2d((1, 2, 0, 1)),
        "pad_value": Fn(lambda x: F.pad(x, (1, 1, 2, 0), value=0.5)),
        "pad_reflect": nn.ReflectionPad2d(1),
        "pad_replicate": nn.ReplicationPad2d((1, 2, 0, 3)),
        "conv_pad_circular": nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular"),
        "flip": Fn(lambda x: x.flip(2, 3) + x.flip(1)),
        "slice_step": Fn(lambda x: x[:, :, 1:-1, ::2]),
        "split_cat": Fn(lambda x: torch.cat(x.split([3, 5], 1)[::-1], 1)),
        "chunk_mul": Fn(lambda x: x.chunk(2, 1)[0] * x.chunk(2, 1)[1]),
        "stack": Fn(lambda x: torch.stack([x, x * 2], 1)),
        "repeat": Fn(lambda x: x.repeat(1, 2, 1, 1)),
        "expand": Fn(lambda x: x.mean(1, keepdim=True).expand(-1, 8, -1, -1) + x),
        "transpose_hw": Fn(lambda x: x.transpose(2, 3).contiguous()),
        "pixel_shuffle": nn.Sequential(nn.Conv2d(8, 16, 1), nn.PixelShuffle(2)),
        "pixel_unshuffle": nn.PixelUnshuffle(2),
        "channel_shuffle": nn.ChannelShuffle(2),
        "flatten_tokens": Fn(lambda x: x.permute(0, 2, 3, 1).reshape(1, -1, 4)),
        # resizes
        "upsample_nearest": nn.Upsample(scale_factor=2),
        "upsample_nearest3": nn.Upsample(scale_factor=3),
        "upsample_bilinear": nn.Upsample(scale_factor=2, mode="bilinear"),
        "upsample_bilinear_ac": nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        "interpolate_size": Fn(lambda x: F.interpolate(x, size=(10, 20), mode="bilinear")),
        "interpolate_down": Fn(lambda x: F.interpolate(x, scale_factor=0.5, mode="nearest")),
        # convolutions
        "conv_dilated": nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        "conv_grouped": nn.Conv2d(8, 8, 3, padding=1, groups=2),
        "conv_5x5_s2": nn.Conv2d(8, 16, 5, 2, 2),
        "conv_1x5": nn.Conv2d(8, 8, (1, 5), padding=(0, 2)),
        "depthwise_5x5": nn.Conv2d(8, 8, 5, padding=2, groups=8),
        "conv_transpose_2x2": nn.ConvTranspose2d(8, 4, 2, 2),
        "conv_transpose_4x4_p1": nn.ConvTranspose2d(8, 4, 4, 2, 1),
        "conv_transpose_3x3_p1": nn.ConvTranspose2d(8, 4, 3, 2, 1),
        "conv_transpose_output_padding": nn.ConvTranspose2d(8, 4, 3, 2, 1, output_padding=1),
        # normalizations
        "batch_norm": nn.BatchNorm2d(8),
        "instance_norm": nn.InstanceNorm2d(8, affine=True),
        "group_norm": nn.GroupNorm(2, 8),
        "layer_norm_c": Fn(lambda x: F.layer_norm(x.permute(0, 2, 3, 1), (8,)).permute(0, 3, 1, 2)),
        "layer_norm_chw": nn.LayerNorm([8, 16, 16]),
        # heads and attention
        "classifier": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)),
        "squeeze_excite": Fn(lambda x: x * F.hardsigmoid(x.mean((2, 3), keepdim=True))),
        "tokens_mlp": nn.Sequential(nn.Flatten(2), Fn(lambda t: t.transpose(1, 2)), nn.Linear(8, 16), nn.GELU()),
        "attention": Fn(lambda x: mha(*(x.flatten(2).transpose(1, 2),) * 3, need_weights=False)[0]),
        "matmul": Fn(lambda x: x @ x.transpose(2, 3)),
        "einsum": Fn(lambda x: torch.einsum("bchw,bcHw->bhH", x, x).unsqueeze(1)),
    }


def sequence_modules() -> dict:
    return {
        "tcn_causal": TCN(),
        "depthwise_1d": nn.Conv1d(8, 8, 5, padding=2, groups=8),
        "conv_1d_s2": nn.Conv1d(8, 8, 4, 2, 1),
        "max_pool_1d": nn.MaxPool1d(3, 2, 1),
        "avg_pool_1d_ceil": nn.AvgPool1d(3, 2, ceil_mode=True),
        "conv_transpose_1d": nn.ConvTranspose1d(8, 4, 4, 2, 1),
        "upsample_1d": nn.Upsample(scale_factor=2),
        "upsample_1d_linear": nn.Upsample(size=50, mode="linear"),
        "instance_norm_1d": nn.InstanceNorm1d(8, affine=True),
        "pad_reflect_1d": nn.ReflectionPad1d(2),
        "pad_replicate_1d": nn.ReplicationPad1d((1, 3)),
        "lstm": _rnn(nn.LSTM),
        "lstm_2_bidirectional": _rnn(nn.LSTM, num_layers=2, bidirectional=True),
        "gru": _rnn(nn.GRU),
        "gru_bidirectional": _rnn(nn.GRU, bidirectional=True),
        "rnn_relu": _rnn(nn.RNN, nonlinearity="relu"),
    }


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def check(name: str, body: nn.Module, one_d: bool) -> dict:
    """One module through the writer, LiteRT and our runtime."""
    from ai_edge_litert.interpreter import Interpreter

    import edgeprune as ep

    torch.manual_seed(0)
    model = Stem(body, one_d).eval()
    x = torch.randn(1, 8, 32) if one_d else torch.randn(1, 3, 16, 16)
    row = {"module": name, "input": "sequence" if one_d else "image"}
    with torch.no_grad():
        want = model(x).numpy()
    with tempfile.TemporaryDirectory() as d:
        try:
            path = str(ep.export(model, d, formats=["tflite"], example_inputs=(x,))["tflite"])
        except Exception as e:  # the writer's refusal names the op; anything else is reported too
            return {**row, "status": "export", "error": f"{type(e).__name__}: {_first_line(e)}"}
        it = Interpreter(model_path=path)
        it.allocate_tensors()
        din = it.get_input_details()[0]
        xi = x.numpy()
        if tuple(din["shape"]) != xi.shape:  # images are NHWC in the file
            xi = xi.transpose(0, 2, 3, 1)
        xi = np.ascontiguousarray(xi)
        it.set_tensor(din["index"], xi)
        it.invoke()
        lite = it.get_tensor(it.get_output_details()[0]["index"])
        try:
            ours = np.asarray(ep.runtime.load(path)(xi)[0], np.float32)
        except Exception as e:
            return {**row, "status": "runtime", "error": f"{type(e).__name__}: {_first_line(e)}"}
    scale = max(1e-6, float(np.abs(lite).max()))
    if not one_d and want.ndim == 4 and lite.ndim == 4:  # rank-4 outputs are NHWC in the file
        want = want.transpose(0, 2, 3, 1)
    ok_shapes = ours.size == lite.size and want.size == lite.size
    e_ours = float(np.abs(ours.reshape(lite.shape) - lite).max()) / scale if ok_shapes else float("inf")
    e_torch = float(np.abs(want.reshape(lite.shape) - lite).max()) / scale if ok_shapes else float("inf")
    status = "ok" if e_ours < 1e-4 and e_torch < 1e-3 else "mismatch"
    return {**row, "status": status, "ours_vs_litert": e_ours, "torch_vs_litert": e_torch}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default="-", help="output file, or - for stdout")
    ap.add_argument("--only", nargs="*", default=[], help="module names to run")
    args = ap.parse_args(argv)
    rows = []
    cases = [(n, m, False) for n, m in image_modules().items()] + [(n, m, True) for n, m in sequence_modules().items()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, body, one_d in cases:
            if args.only and name not in args.only:
                continue
            row = check(name, body, one_d)
            print(f"{name:32s} {row['status']:8s} {row.get('error', '')}", file=sys.stderr)
            rows.append(row)
    summary = status_counts(rows)
    rows.append({"summary": summary})
    write_rows(rows, args.json, indent=1)
    return 0 if summary.get("mismatch", 0) == 0 and summary.get("runtime", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
