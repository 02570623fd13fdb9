"""TFLite speed: our int8 and fp32 MobileNetV2 files in LiteRT against the int8 ONNX file in ONNX Runtime.

Consumes: the torchvision-shaped MobileNetV2 of benchmarks/models.py (random weights, 224x224,
seeded random calibration images: latency does not depend on the scale values), LiteRT
(``ai-edge-litert``) and ONNX Runtime, 1 thread each. Produces: JSON rows:
  {"section": "latency", "model", "shape", "threads", "runs", "litert_int8_ms", "ort_int8_ms" (the
   same QuantizedModel's model.int8.onnx), "ort_int8_x86_ms" (the x86-avx512-vnni profile's uint8
   file, ORT's fastest int8 on this host), "litert_fp32_ms", "ort_fp32_ms",
   "int8_vs_ort" / "int8_vs_ort_x86" (ORT int8 / LiteRT int8, >= 1 is the target),
   "int8_vs_fp32" (litert_fp32 / litert_int8, >= 2 is the target), sizes}
  {"section": "writer", "model", "format", "runs", "write_s" (median ``ep.export`` call from the
   model or QuantizedModel to the file on disk, the ONNX capture included), "baseline_s" (the
   same source's ONNX format written by ``ep.export``, interleaved with ours), "ratio"
   (baseline_s / write_s), "write_cpu_s" / "baseline_cpu_s" (process CPU seconds, the same medians: on a
   shared host the wall time is these times the oversubscription), "load_avg_1min", "target_s": 1.0}
Latencies are medians over interleaved rounds (each round runs every file ``runs`` times), so
machine noise hits all four alike.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/tflite.py --json build/bench-tflite.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# this file is named like the `tflite` schema package our writer imports: keep its directory off the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

import edgeprune as ep  # noqa: E402
from edgeprune.export import export  # noqa: E402


def _mobilenet_v2():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_models", ROOT / "benchmarks" / "models.py")
    mod = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    spec.loader.exec_module(mod)
    sys.path[:] = saved
    torch.manual_seed(0)
    model = mod.MobileNetV2()
    # torchvision's initialisation: with PyTorch's default one, activations shrink layer by layer
    # into float denormals, which slow every fp32 kernel (not what a trained model does)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0, 0.01)
            torch.nn.init.zeros_(m.bias)
    return model.eval()


def _litert(path, threads):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.random.default_rng(0).standard_normal(d["shape"]).astype(np.float32))
    return it.invoke


def _ort(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape])
    feeds = {inp.name: x.astype(np.float32)}
    return lambda: sess.run(None, feeds)


def _interleaved(runners: dict, runs: int, rounds: int) -> dict:
    samples = {k: [] for k in runners}
    for fn in runners.values():
        for _ in range(3):
            fn()  # warm-up: XNNPACK packs weights, ORT allocates
    for _ in range(rounds):
        for k, fn in runners.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                samples[k].append((time.perf_counter() - t0) * 1000.0)
    return {k: statistics.median(v) for k, v in samples.items()}


def _write_rows(qm, model, x, tmp: Path, rounds: int) -> list[dict]:
    """Each TFLite format's ``ep.export`` time against the same source's ONNX format, interleaved."""
    pairs = (("tflite-int8", "onnx-int8", qm), ("tflite", "onnx", model))
    times = {f: [] for pair in pairs for f in pair[:2]}
    cpu = {f: [] for f in times}
    for i in range(max(rounds, 3)):
        for fmt, base, src in pairs:
            for f in (fmt, base):
                t0, c0 = time.perf_counter(), time.process_time()
                export(src, tmp / f"w{i}", formats=[f], example_inputs=x)
                times[f].append(time.perf_counter() - t0)
                cpu[f].append(time.process_time() - c0)
    out = []
    for fmt, base, _ in pairs:
        ours, theirs = statistics.median(times[fmt]), statistics.median(times[base])
        out.append(
            {
                "section": "writer",
                "model": "mobilenet_v2",
                "format": fmt,
                "runs": len(times[fmt]),
                "write_s": round(ours, 3),
                "baseline": f"{base} export of the same source",
                "baseline_s": round(theirs, 3),
                "ratio": round(theirs / ours, 3),
                # CPU seconds of this process: what the write costs whatever else shares the machine
                "write_cpu_s": round(statistics.median(cpu[fmt]), 3),
                "baseline_cpu_s": round(statistics.median(cpu[base]), 3),
                "load_avg_1min": round(os.getloadavg()[0], 1),
                "target_s": 1.0,
            }
        )
    return out


def rows(runs: int = 20, rounds: int = 5, threads: int = 1) -> list[dict]:
    torch.set_num_threads(1)
    model = _mobilenet_v2()
    g = torch.Generator().manual_seed(1)
    calib = [torch.randn(1, 3, 224, 224, generator=g) for _ in range(16)]
    qm = ep.quantize(model, calib, method="percentile", calib_n=16, progress=False)
    # ONNX Runtime's fast x86 int8 path is uint8 activations: the x86 profile's quantization
    qm_x86 = ep.quantize(model, calib, method="percentile", calib_n=16, target="x86-avx512-vnni", progress=False)
    x = (calib[0],)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = export(qm, tmp, formats=["onnx-int8", "tflite-int8"], example_inputs=x)
        paths.update(export(model, tmp, formats=["onnx", "tflite"], example_inputs=x))
        x86 = export(qm_x86, tmp / "x86", formats=["onnx-int8"], example_inputs=x)["onnx-int8"]
        runners = {
            "litert_int8": _litert(paths["tflite-int8"], threads),
            "ort_int8": _ort(paths["onnx-int8"], threads),
            "ort_int8_x86": _ort(x86, threads),
            "litert_fp32": _litert(paths["tflite"], threads),
            "ort_fp32": _ort(paths["onnx"], threads),
        }
        med = _interleaved(runners, runs, rounds)
        out.append(
            {
                "section": "latency",
                "model": "mobilenet_v2",
                "shape": [1, 3, 224, 224],
                "threads": threads,
                "runs": runs * rounds,
                **{f"{k}_ms": round(v, 4) for k, v in med.items()},
                "int8_vs_ort": round(med["ort_int8"] / med["litert_int8"], 3),
                "int8_vs_ort_x86": round(med["ort_int8_x86"] / med["litert_int8"], 3),
                "int8_vs_fp32": round(med["litert_fp32"] / med["litert_int8"], 3),
                "tflite_int8_bytes": paths["tflite-int8"].stat().st_size,
                "onnx_int8_bytes": paths["onnx-int8"].stat().st_size,
                "tflite_fp32_bytes": paths["tflite"].stat().st_size,
            }
        )
        out += _write_rows(qm, model, x, tmp, rounds)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE", help="write the rows to FILE as JSON ('-' for stdout)")
    p.add_argument("--runs", type=int, default=20, help="runs per file per round (default 20)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    args = p.parse_args(argv)
    result = rows(args.runs, args.rounds)
    text = json.dumps(result, indent=2)
    if args.json and args.json != "-":
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
