"""fp32 vs int8 ONNX Runtime latency and file size per model, on this host, 1 thread.

Consumes: models built in code (the demo CNN, MobileNetV1/V2 of tests/python/zoo_full.py),
calibration data (digits for the demo CNN, seeded random images for the MobileNets: latency
does not depend on the scale values).
Produces: JSON rows, one per model:
  {"model", "shape", "threads", "runs", "fp32_ms", "int8_ms", "speedup" (fp32_ms / int8_ms),
   "ort_int8_ms" + "ort_speedup" (ONNX Runtime's own quantize_static QDQ, the baseline int8, same
   run), "fp32_bytes", "int8_bytes", "size_ratio", "int8_slower" (flag: int8 slower than fp32)}
Medians over rounds that alternate fp32 / ours / ORT's, so machine noise hits all alike.

    python benchmarks/int8.py --json build/bench-int8.json [--runs 30] [--models demo-cnn,mobilenet_v2]
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


def _model(name: str):
    torch.manual_seed(0)
    if name == "demo-cnn":
        data = ep.data.load("digits")
        model = ep.models.build("edgeprune:demo-cnn")
        calib = data
        return model.eval(), calib
    import zoo_full

    model = getattr(zoo_full, name)().eval()
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


def int8_rows(models=MODELS, runs: int = 30, rounds: int = 3, threads: int = 1, target: str = "x86-avx2") -> list[dict]:
    rows = []
    for name in models:
        model, calib = _model(name)
        qm = ep.quantize(model, calib, method="percentile", target=target, calib_n=64, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            paths = export(qm, tmp, formats=["onnx", "onnx-int8"], target=target)
            ort_path = _ort_quantize_static(
                paths["onnx"], tmp / "ort.int8.onnx", _calib_tensor(calib), qm.config.activation_dtype == "uint8"
            )
            samples = {"fp32": [], "int8": [], "ort": []}
            for _ in range(rounds):
                for key, path in (("fp32", paths["onnx"]), ("int8", paths["onnx-int8"]), ("ort", ort_path)):
                    res = ep.bench(
                        str(path), runtime="onnxruntime", threads=threads, warmup=3, runs=max(1, runs // rounds)
                    )
                    samples[key] += list(res.samples_ms)
            med = {k: statistics.median(v) for k, v in samples.items()}
            shape = [1, *model.input_shape]
            rows.append(
                {
                    "model": name,
                    "shape": shape,
                    "threads": threads,
                    "runs": len(samples["fp32"]),
                    "target_config": target,
                    "runtime": "onnxruntime " + __import__("onnxruntime").__version__,
                    "fp32_ms": round(med["fp32"], 4),
                    "int8_ms": round(med["int8"], 4),
                    "speedup": round(med["fp32"] / med["int8"], 3),
                    "ort_int8_ms": round(med["ort"], 4),
                    "ort_speedup": round(med["fp32"] / med["ort"], 3),
                    "fp32_bytes": paths["onnx"].stat().st_size,
                    "int8_bytes": paths["onnx-int8"].stat().st_size,
                    "size_ratio": round(paths["onnx"].stat().st_size / paths["onnx-int8"].stat().st_size, 3),
                    "int8_slower": bool(med["int8"] > med["fp32"]),
                }
            )
    return rows


def main(argv=None) -> int:
    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer logs advice on the root logger
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE", help="write the rows to FILE as JSON ('-' for stdout)")
    p.add_argument("--runs", type=int, default=30, help="timed runs per format (default 30)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target", default="x86-avx2", help="quantization defaults to use (default x86-avx2)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {', '.join(MODELS)}")
    rows = int8_rows(models, runs=args.runs, threads=args.threads, target=args.target)
    for r in rows:
        flag = "  <-- int8 SLOWER than fp32" if r["int8_slower"] else ""
        print(
            f"{r['model']:>14} fp32 {r['fp32_ms']:8.3f} ms  int8 {r['int8_ms']:8.3f} ms  x{r['speedup']:.2f}  "
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
