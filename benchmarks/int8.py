"""fp32 vs int8 ONNX Runtime latency and file size per model, on this host, 1 thread.

Consumes: models built in code (the demo CNN, MobileNetV1/V2 of tests/python/zoo_full.py, and with
``--models`` the ImageNet architectures of benchmarks/models.py), calibration data (digits for the
demo CNN, seeded random images otherwise: latency does not depend on the scale values), and the
quantization configs to compare (``--targets``: ``none`` = no target, the default export, and
``x86-avx2``).
Produces: JSON rows, one per model and config:
  {"model", "shape", "threads", "runs", "target_config", "fp32_ms", "int8_ms", "speedup"
   (fp32_ms / int8_ms), "ort_int8_ms" + "ort_speedup" (ONNX Runtime's own quantize_static QDQ, the
   baseline int8, same run), "int8_kernels" ("8/9": convs/gemms/matmuls ONNX Runtime runs as int8
   kernels, from ``edgeprune.export.inspect.ort_kernels``), "fp32_bytes", "int8_bytes",
   "size_ratio", "int8_slower" (flag: int8 slower than fp32)}
Medians over rounds that alternate fp32 / ours / ORT's, so machine noise hits all alike.

    python benchmarks/int8.py --json build/bench-int8.json [--runs 30] [--models demo-cnn,mobilenet_v2]
                              [--targets none,x86-avx2]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "python"))

import edgeprune as ep  # noqa: E402
from edgeprune.export import export  # noqa: E402

MODELS = ("demo-cnn", "mobilenet_v1", "mobilenet_v2")
TARGETS = ("none", "x86-avx2")


def _arch_names() -> list[str]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import models as bench_models

    return sorted(bench_models.LOCAL)


def _model(name: str):
    torch.manual_seed(0)
    if name == "demo-cnn":
        data = ep.data.load("digits")
        model = ep.models.build("edgeprune:demo-cnn")
        calib = data
        return model.eval(), calib
    import zoo_full

    if hasattr(zoo_full, name):
        model = getattr(zoo_full, name)().eval()
    else:  # an ImageNet architecture of benchmarks/models.py
        import models as bench_models

        model = bench_models.LOCAL[name]().eval()
        model.input_shape = (3, 224, 224)
    calib = torch.rand(16, *model.input_shape, generator=torch.Generator().manual_seed(0))
    return model, calib


def _ort_quantize_static(fp32_path: Path, out: Path, calib: torch.Tensor, activation_uint8: bool) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ONNX Runtime's recommended pre-processing (graph optimisation + shape inference) first,
    # so the baseline is ORT at its best, not ORT on an unoptimised graph.
    pre = out.with_name("ort.pre.onnx")
    quant_pre_process(str(fp32_path), str(pre))
    fp32_path = pre

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i : i + 1].numpy()} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        str(fp32_path),
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


def int8_rows(models=MODELS, runs: int = 30, rounds: int = 3, threads: int = 1, targets=TARGETS) -> list[dict]:
    from edgeprune.export.inspect import ort_kernels

    rows = []
    for name in models:
        model, calib = _model(name)
        for target in targets:
            target = None if target in (None, "none") else target
            qm = ep.quantize(model, calib, method="percentile", target=target, calib_n=64, progress=False)
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                paths = export(qm, tmp, formats=["onnx", "onnx-int8"], target=target)
                ort_path = _ort_quantize_static(
                    paths["onnx"], tmp / "ort.int8.onnx", _calib_tensor(calib), qm.config.activation_dtype == "uint8"
                )
                kernels = ort_kernels(paths["onnx-int8"])
                med = _interleaved_medians(
                    {"fp32": paths["onnx"], "int8": paths["onnx-int8"], "ort": ort_path}, runs, rounds, threads
                )
                rows.append(_row(name, model, target, threads, med, paths, kernels))
    return rows


def _interleaved_medians(paths: dict, runs: int, rounds: int, threads: int) -> dict:
    samples = {k: [] for k in paths}
    for _ in range(rounds):
        for key, path in paths.items():
            res = ep.bench(str(path), runtime="onnxruntime", threads=threads, warmup=3, runs=max(1, runs // rounds))
            samples[key] += list(res.samples_ms)
    med = {k: statistics.median(v) for k, v in samples.items()}
    med["runs"] = len(samples["fp32"])
    return med


def _row(name, model, target, threads, med, paths, kernels) -> dict:
    fp32_bytes, int8_bytes = paths["onnx"].stat().st_size, paths["onnx-int8"].stat().st_size
    return {
        "model": name,
        "shape": [1, *model.input_shape],
        "threads": threads,
        "runs": med["runs"],
        "target_config": target or "none",
        "runtime": "onnxruntime " + __import__("onnxruntime").__version__,
        "fp32_ms": round(med["fp32"], 4),
        "int8_ms": round(med["int8"], 4),
        "speedup": round(med["fp32"] / med["int8"], 3),
        "ort_int8_ms": round(med["ort"], 4),
        "ort_speedup": round(med["fp32"] / med["ort"], 3),
        "int8_kernels": f"{kernels['int8_weighted_ops']}/{kernels['weighted_ops']}",
        "fp32_bytes": fp32_bytes,
        "int8_bytes": int8_bytes,
        "size_ratio": round(fp32_bytes / int8_bytes, 3),
        "int8_slower": bool(med["int8"] > med["fp32"]),
    }


def main(argv=None) -> int:
    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer logs advice on the root logger
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE", help="write the rows to FILE as JSON ('-' for stdout)")
    p.add_argument("--runs", type=int, default=30, help="timed runs per format (default 30)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"quantization configs, comma-separated: none (no target) or a target name (default {','.join(TARGETS)})",
    )
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated subset of {','.join(MODELS)} and the benchmarks/models.py architectures",
    )
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    known = set(MODELS) | set(_arch_names())
    bad = [m for m in models if m not in known]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {', '.join(sorted(known))}")
    targets = [t for t in args.targets.split(",") if t]
    rows = int8_rows(models, runs=args.runs, threads=args.threads, targets=targets)
    for r in rows:
        flag = "  <-- int8 SLOWER than fp32" if r["int8_slower"] else ""
        print(
            f"{r['model']:>14} [{r['target_config']}] fp32 {r['fp32_ms']:8.3f} ms  int8 {r['int8_ms']:8.3f} ms  "
            f"x{r['speedup']:.2f} int8 kernels {r['int8_kernels']}  "
            f"(ORT quantize_static x{r['ort_speedup']:.2f})  size x{r['size_ratio']:.2f}{flag}",
            file=sys.stderr,
        )
    if args.json:
        text = json.dumps(rows, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
