"""Whole-model benchmark over the torchvision-shaped classifiers: edgeprune's runtime against LiteRT
(XNNPACK) on the same ``model.tflite`` and ``model.int8.tflite``, and ONNX Runtime on the
``model.onnx`` / ``model.int8.onnx`` that ``edgeprune export`` writes next to them.

Consumes: nothing (the classifiers of benchmarks/models.py ``LOCAL`` and ``EXTRA``, seeded random
weights, 224x224; the int8 files from ``ep.quantize`` on 8 seeded random images). Produces: JSON
rows, one per (model, precision, runtime): the median of interleaved rounds on 1 thread, the ratio
of each runtime's median to ours measured in the same rounds ("ratio_vs_ours" above 1: slower than
ours), and the load time. Before timing, every runtime's output is checked against LiteRT's on the
same input (fp32: 1e-3 relative; int8: the outputs' argmax).

Where the operator-level changes behind these numbers are described: docs/runtime.md, "Elementwise
operators, pools and stems".

Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/runtime_zoo.py [--json out.json]
           [--rounds 7] [--runs 5] [--models efficientnet_b0 mobilenet_v3_large ...]
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
# benchmarks/ off the path (python puts the script's folder first): its tflite.py would shadow the
# schema package the exporter imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    spec.loader.exec_module(mod)
    sys.path[:] = saved
    return mod


models = _load("models")  # the classifiers
fp32_bench = _load("runtime")  # benchmarks/runtime.py: its interleaved timing
DEFAULT = [
    "efficientnet_b0",
    "mobilenet_v3_large",
    "mobilenet_v2",
    "resnet18",
    "shufflenet_v2_x1_0",
    "squeezenet1_1",
    "mnasnet1_0",
]


def export_files(name: str, tmp: Path) -> dict[str, Path]:
    """{precision: {format: path}} of one classifier: fp32 and int8 TFLite and ONNX."""
    import torch

    import edgeprune as ep
    from edgeprune.export import export

    torch.manual_seed(0)
    table = {**models.LOCAL, **models.EXTRA}
    model = table[name]().eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    fp32 = export(model, tmp / name / "fp32", formats=["tflite", "onnx"], example_inputs=(x,))
    calib = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    qm = ep.quantize(model, calib, progress=False)
    int8 = export(qm, tmp / name / "int8", formats=["tflite-int8", "onnx-int8"], example_inputs=(x,))
    return {
        "fp32": {"tflite": fp32["tflite"], "onnx": fp32["onnx"]},
        "int8": {"tflite": int8["tflite-int8"], "onnx": int8["onnx-int8"]},
    }


def runners(files: dict[str, Path]) -> tuple[dict, dict]:
    """({runtime: run(x_nhwc) -> output}, {runtime: load seconds}) on one thread."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    import edgeprune as ep

    out, load = {}, {}
    t0 = time.perf_counter()
    m = ep.runtime.load(files["tflite"], threads=1)
    load["edgeprune"] = time.perf_counter() - t0
    out["edgeprune"] = lambda x: m(x)[0]
    t0 = time.perf_counter()
    it = Interpreter(model_path=str(files["tflite"]), num_threads=1)
    it.allocate_tensors()
    load["litert"] = time.perf_counter() - t0
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def litert(x):
        it.set_tensor(i, x)
        it.invoke()
        return it.get_tensor(o)

    out["litert"] = litert
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(files["onnx"]), so, providers=["CPUExecutionProvider"])
    load["onnxruntime"] = time.perf_counter() - t0
    name = sess.get_inputs()[0].name
    out["onnxruntime"] = lambda x: sess.run(None, {name: x.transpose(0, 3, 1, 2).copy()})[0]
    return out, load


def measure(name: str, rounds: int, runs: int, tmp: Path) -> list[dict]:
    rows = []
    x = np.random.default_rng(3).standard_normal((1, 224, 224, 3)).astype(np.float32)
    for precision, files in export_files(name, tmp).items():
        run, load = runners(files)
        ref = run["litert"](x)
        for rt, fn in run.items():  # the same function everywhere, or the timing means nothing
            got = fn(x)
            if precision == "fp32":
                err = float(np.abs(got - ref).max() / np.abs(ref).max())
                assert err < 1e-3, f"{name} {precision}: {rt} differs from LiteRT by {err:.2e}"
            else:
                assert int(got.argmax()) == int(ref.argmax()), f"{name} int8: {rt}'s top-1 differs from LiteRT's"
        times = fp32_bench.interleaved_ms(run, x, rounds, runs)
        med = {rt: statistics.median(v) for rt, v in times.items()}
        for rt in run:
            rows.append(
                {
                    "model": name,
                    "precision": precision,
                    "runtime": rt,
                    "file": files["onnx" if rt == "onnxruntime" else "tflite"].name,
                    "threads": 1,
                    "median_ms": round(med[rt], 3),
                    "rounds_ms": [round(v, 3) for v in times[rt]],
                    "ratio_vs_ours": round(med[rt] / med["edgeprune"], 3),
                    "load_ms": round(load[rt] * 1e3, 1),
                }
            )
    return rows


def main(argv=None) -> int:
    table = sorted({**models.LOCAL, **models.EXTRA})
    return fp32_bench.run_cli(argv, __doc__, measure, DEFAULT, "ep-rt-zoo-", option="--models", choices=table)


if __name__ == "__main__":
    raise SystemExit(main())
