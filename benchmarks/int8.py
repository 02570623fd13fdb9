"""fp32 vs int8 ONNX Runtime latency and file size per model, on this host, 1 thread.

Consumes: models built in code: the demo CNN, MobileNetV1 of tests/python/zoo_full.py, the
torchvision-shaped ImageNet architectures of benchmarks/models.py (ResNet-18/50, ResNeXt-50,
MobileNetV2, MobileNetV3-Large, EfficientNet-B0, ShuffleNetV2, DenseNet-121, SqueezeNet 1.1,
MNASNet 1.0, RegNetY-400MF; ConvNeXt-T and ViT-B/16 with ``--models``) and MobileNetV3-Small
written out below from the same blocks; calibration data (digits for the demo CNN, seeded random
images otherwise, with BatchNorm statistics measured on them, see ``_normalized``); the quantization configs to
compare (``--targets``: ``none`` = no target, the default export, and e.g. ``x86-avx2``).
Produces: JSON rows, one per model and config:
  {"model", "macs", "shape", "threads", "runs", "target_config", "runtime",
   "fp32_ms", "int8_ms" (medians), "ratio" (fp32_ms / int8_ms: above 1 = int8 faster),
   "fp32_min_ms", "int8_min_ms", "min_ratio" (the same from the fastest round of each),
   "int8_slower" (flag: ratio < 1), "int8_kernels" ("8/9": convs/gemms/matmuls ONNX Runtime runs as
   int8 kernels, from ``edgeprune.export.inspect.ort_kernels``), "float_glue" ({op: count} of the
   float ops ONNX Runtime runs between int8 kernels, Transpose/Flatten/Q/DQ at the graph's ends
   included), "fp32_bytes", "int8_bytes", "size_ratio"}
  and with ``--ort``: "ort_int8_ms" + "ort_ratio" (ONNX Runtime's own quantize_static QDQ, same run).
Timing: one session per file, created once; every round runs each file once in turn (fp32, ours,
ORT's), so load from other jobs on a shared host hits all alike; medians over the rounds.

    python benchmarks/int8.py --json build/bench-int8.json [--runs 40] [--models demo-cnn,resnet18]
                              [--targets none,x86-avx2] [--ort]
"""

from __future__ import annotations

import argparse
import collections
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "python"))

import models as bench_models  # noqa: E402
from rows_json import write_rows  # noqa: E402

import edgeprune as ep  # noqa: E402
from edgeprune.export import export  # noqa: E402

# every model of benchmarks/ with >= 1 M MACs that is a convolutional network (the default run)
MODELS = (
    "demo-cnn",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "efficientnet_b0",
    "shufflenet_v2_x1_0",
    "squeezenet1_1",
    "mnasnet1_0",
    "regnet_y_400mf",
    "densenet121",
)
TARGETS = ("none",)


class MobileNetV3Small(bench_models.MobileNetV3Large):
    """torchvision mobilenet_v3_small: the blocks and forward of benchmarks/models.py's
    MobileNetV3Large with the small config and head."""

    # a table like MobileNetV3Large's on purpose: torchvision's small config, other rows and widths
    CFG = [
        (16, 3, 16, 16, 1, "RE", 2),
        (16, 3, 72, 24, 0, "RE", 2),
        (24, 3, 88, 24, 0, "RE", 1),
        (24, 5, 96, 40, 1, "HS", 2),
        (40, 5, 240, 40, 1, "HS", 1),
        (40, 5, 240, 40, 1, "HS", 1),
        (40, 5, 120, 48, 1, "HS", 1),
        (48, 5, 144, 48, 1, "HS", 1),
        (48, 5, 288, 96, 1, "HS", 2),
        (96, 5, 576, 96, 1, "HS", 1),
        (96, 5, 576, 96, 1, "HS", 1),
    ]
    HEAD = (576, 1024)


def _factories() -> dict:
    import zoo_full

    return {
        **bench_models.LOCAL,
        **bench_models.EXTRA,
        "mobilenet_v3_small": MobileNetV3Small,
        "mobilenet_v1": zoo_full.mobilenet_v1,
    }


def _model(name: str):
    torch.manual_seed(0)
    if name == "demo-cnn":
        return ep.models.build("edgeprune:demo-cnn").eval(), ep.data.load("digits")
    model = _factories()[name]()
    model.input_shape = (3, 224, 224)
    calib = torch.rand(16, *model.input_shape, generator=torch.Generator().manual_seed(0))
    return _normalized(model, calib[:8]), calib


def _normalized(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``model`` in eval mode with every BatchNorm's statistics measured on ``x``.

    Freshly initialised weights shrink activations layer after layer (MobileNetV3-Small reaches
    1e-11 at its last blocks), and float kernels slow down by up to 10x on such tiny and subnormal
    values, so fp32 timings flip from run to run. With statistics from data every BN outputs unit
    variance, as in a trained network, and both formats are timed on realistic values.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches seen
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


# The benchmark's own ONNX Runtime baseline on purpose (tests/python/onnx_files.py has a test copy):
# benchmarks and tests do not import each other.
def _ort_quantize_static(fp32_path: Path, out: Path, calib: torch.Tensor, activation_uint8: bool) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ONNX Runtime's recommended pre-processing (graph optimisation + shape inference) first,
    # so the baseline is ORT at its best, not ORT on an unoptimised graph.
    pre = out.with_name("ort.pre.onnx")
    quant_pre_process(str(fp32_path), str(pre))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i : i + 1].numpy()} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8 if activation_uint8 else QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def _calib_tensor(calib, n=16) -> torch.Tensor:
    if isinstance(calib, torch.Tensor):
        return calib[:n]
    return torch.stack([torch.as_tensor(calib.train[i][0]) for i in range(n)])


def _session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def interleaved_medians(paths: dict, x: np.ndarray, runs: int, threads: int, warmup: int = 3) -> dict:
    """{key: median ms}: one session per file; each round runs every file once, in turn."""
    sessions = {k: _session(p, threads) for k, p in paths.items()}
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for _ in range(warmup):
        for k, s in sessions.items():
            s.run(None, feeds[k])
    samples = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[k])
            samples[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()} | {f"{k}_min": min(v) for k, v in samples.items()}


def float_glue(path: Path) -> dict:
    """{op type: count} of the float (non-int8) ops in the graph ONNX Runtime runs for ``path``."""
    from edgeprune.export.inspect import INT8_KERNELS, _optimized_graph

    opt, _ = _optimized_graph(path, 1)
    int8 = INT8_KERNELS | {"QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool"}
    int8 |= {"QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "NhwcMaxPool"}
    return dict(collections.Counter(n.op_type for n in opt.graph.node if n.op_type not in int8).most_common())


def int8_rows(models=MODELS, runs: int = 40, threads: int = 1, targets=TARGETS, ort_baseline: bool = False) -> list:
    from edgeprune.export.inspect import ort_kernels
    from edgeprune.prune import count_macs_params

    rows = []
    for name in models:
        model, calib = _model(name)
        example = _calib_tensor(calib, 1)
        macs = int(count_macs_params(model, example)[0])
        for target in targets:
            target = None if target in (None, "none") else target
            qm = ep.quantize(model, calib, method="percentile", target=target, calib_n=64, progress=False)
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                paths = export(qm, tmp, formats=["onnx", "onnx-int8"], target=target)
                timed = {"fp32": paths["onnx"], "int8": paths["onnx-int8"]}
                if ort_baseline:
                    uint8 = qm.config.activation_dtype == "uint8" or target is None
                    timed["ort"] = _ort_quantize_static(
                        paths["onnx"], tmp / "ort.int8.onnx", _calib_tensor(calib), uint8
                    )
                med = interleaved_medians(timed, example.numpy(), runs, threads)
                row = _row(name, model, macs, target, threads, runs, med, paths)
                row["int8_kernels"] = "{int8_weighted_ops}/{weighted_ops}".format(**ort_kernels(paths["onnx-int8"]))
                row["float_glue"] = float_glue(paths["onnx-int8"])
                rows.append(row)
    return rows


def _row(name, model, macs, target, threads, runs, med, paths) -> dict:
    fp32_bytes, int8_bytes = paths["onnx"].stat().st_size, paths["onnx-int8"].stat().st_size
    row = {
        "model": name,
        "macs": macs,
        "shape": [1, *model.input_shape],
        "threads": threads,
        "runs": runs,
        "target_config": target or "none",
        "runtime": "onnxruntime " + __import__("onnxruntime").__version__,
        "fp32_ms": round(med["fp32"], 4),
        "int8_ms": round(med["int8"], 4),
        "ratio": round(med["fp32"] / med["int8"], 3),
        # on a shared host the medians carry other jobs' time slices; the minima show each format alone
        "fp32_min_ms": round(med["fp32_min"], 4),
        "int8_min_ms": round(med["int8_min"], 4),
        "min_ratio": round(med["fp32_min"] / med["int8_min"], 3),
        "int8_slower": bool(med["int8"] > med["fp32"]),
        "fp32_bytes": fp32_bytes,
        "int8_bytes": int8_bytes,
        "size_ratio": round(fp32_bytes / int8_bytes, 3),
    }
    if "ort" in med:
        row["ort_int8_ms"] = round(med["ort"], 4)
        row["ort_ratio"] = round(med["fp32"] / med["ort"], 3)
    return row


def main(argv=None) -> int:
    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer logs advice on the root logger
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE", help="write the rows to FILE as JSON ('-' for stdout)")
    p.add_argument("--runs", type=int, default=40, help="timed rounds (each file once per round; default 40)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ort", action="store_true", help="also time ONNX Runtime's own quantize_static file")
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"quantization configs, comma-separated: none (no target) or a target name (default {','.join(TARGETS)})",
    )
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated subset of the known models (default: every CNN of benchmarks/ with >= 1 M MACs)",
    )
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    known = {"demo-cnn"} | set(_factories())
    bad = [m for m in models if m not in known]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {', '.join(sorted(known))}")
    targets = [t for t in args.targets.split(",") if t]
    rows = []
    for m in models:  # one model at a time, so a long run shows (and keeps) its rows as it goes
        for r in int8_rows([m], runs=args.runs, threads=args.threads, targets=targets, ort_baseline=args.ort):
            rows.append(r)
            flag = "  <-- int8 SLOWER than fp32" if r["int8_slower"] else ""
            ort_part = f"  (ORT quantize_static x{r['ort_ratio']:.2f})" if "ort_ratio" in r else ""
            print(
                f"{r['model']:>18} [{r['target_config']}] fp32 {r['fp32_ms']:8.3f} ms  int8 {r['int8_ms']:8.3f} ms  "
                f"x{r['ratio']:.2f}  int8 kernels {r['int8_kernels']}{ort_part}  size x{r['size_ratio']:.2f}{flag}",
                file=sys.stderr,
                flush=True,
            )
    if args.json:
        write_rows(rows, args.json, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
