"""Latency harness: time a model artifact on this machine with one of several runtimes.

Consumes: an artifact (``model.onnx`` / ``model.int8.onnx`` for ONNX Runtime, ``*.tflite`` for
LiteRT, an ``nn.Module`` or an ``ep.save`` directory for torch) and the run settings (threads,
warmup, runs). Produces: a :class:`BenchResult` with init, first-run, mean, median, min, max,
std, p90, p99 (ms), the coefficient of variation, peak RSS and, for ONNX Runtime, a per-layer
profile. A result is a measurement on *this* host: ``"estimate": false``.

Pure Python over the runtimes' own Python APIs, so the same ``edgeprune bench`` runs on a
Raspberry Pi or a Jetson.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._callable import make_module_callable
from .errors import UserError

RUNTIMES = ("onnxruntime", "torch", "litert", "edgeprune")
# Above this coefficient of variation (std / mean) the numbers are too noisy to compare:
# another process is competing for the cores, or the CPU is throttling.
CV_WARNING = 0.10


class BenchError(UserError):
    """The artifact cannot be benchmarked with the requested runtime (message says how to fix)."""


@dataclasses.dataclass
class BenchResult:
    artifact: str
    runtime: str
    runtime_version: str
    threads: int
    warmup: int
    runs: int
    init_ms: float
    first_ms: float
    samples_ms: list[float]
    peak_rss_mb: float | None
    inputs: dict[str, list[int]]
    layers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    # statistics over the timed runs (warmup and the first run excluded)
    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)

    @property
    def std_ms(self) -> float:
        return statistics.pstdev(self.samples_ms) if len(self.samples_ms) > 1 else 0.0

    @property
    def cv(self) -> float:
        return self.std_ms / self.mean_ms if self.mean_ms > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
        xs = sorted(self.samples_ms)
        if len(xs) == 1:
            return xs[0]
        pos = (len(xs) - 1) * q / 100.0
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    @property
    def p90_ms(self) -> float:
        return self.percentile(90)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        """Inverse of ``to_dict(samples=True)``."""
        if "samples_ms" not in d:
            raise ValueError("BenchResult.from_dict needs the samples (to_dict(samples=True))")
        return cls(
            artifact=d["artifact"],
            runtime=d["runtime"],
            runtime_version=d["runtime_version"],
            threads=d["threads"],
            warmup=d["warmup"],
            runs=d["runs"],
            init_ms=d["init_ms"],
            first_ms=d["first_ms"],
            samples_ms=list(d["samples_ms"]),
            peak_rss_mb=d["peak_rss_mb"],
            inputs=d["inputs"],
            layers=list(d.get("layers", [])),
            warnings=list(d.get("warnings", [])),
        )

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        d = {
            "estimate": False,
            "artifact": self.artifact,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "host": {
                "machine": platform.machine(),
                "system": platform.system(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
            },
            "threads": self.threads,
            "warmup": self.warmup,
            "runs": self.runs,
            "init_ms": round(self.init_ms, 4),
            "first_ms": round(self.first_ms, 4),
            "mean_ms": round(self.mean_ms, 4),
            "median_ms": round(self.median_ms, 4),
            "min_ms": round(self.min_ms, 4),
            "max_ms": round(self.max_ms, 4),
            "std_ms": round(self.std_ms, 4),
            "p90_ms": round(self.p90_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "cv": round(self.cv, 4),
            "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 2),
            "inputs": self.inputs,
            "layers": self.layers,
            "warnings": self.warnings,
        }
        if samples:
            d["samples_ms"] = [round(s, 4) for s in self.samples_ms]
        return d


def default_runtime(artifact) -> str:
    """The runtime an artifact's kind implies: .onnx -> onnxruntime, .tflite -> litert, a model
    directory (ep.save) or an nn.Module -> torch."""
    if not isinstance(artifact, (str, os.PathLike)):
        return "torch"
    p = Path(artifact)
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix == ".tflite":
        return "litert"
    if p.is_dir() or not p.exists():
        return "torch"
    raise BenchError(f"cannot tell which runtime runs {p.name}; pass runtime= (--runtime) one of {', '.join(RUNTIMES)}")


def bench(
    path_or_model,
    runtime: str | None = "onnxruntime",
    threads: int = 1,
    warmup: int = 5,
    runs: int = 50,
    input_shape=None,
    layer_profile: bool = True,
    seed: int = 0,
    isolate: bool = False,
) -> BenchResult:
    """Time ``path_or_model`` with ``runtime`` on this host.

    One session is created (``init_ms``, the runtime's import excluded), run once
    (``first_ms``), run ``warmup`` more times untimed, then ``runs`` timed runs give the
    statistics. Inputs are seeded random data of the model's input shape (dynamic dims become
    1, or come from ``input_shape`` = (C, H, W)). For ONNX Runtime a second, profiled session
    gives the per-layer breakdown (profiling slows a run, so it never touches the timed samples).

    ``isolate=True`` (artifact paths only) runs the measurement in a fresh Python process, so
    ``peak_rss_mb`` is what this runtime and model need, not the high-water mark of the
    calling process (which may hold torch and other models).
    """
    if runtime is None:
        runtime = default_runtime(path_or_model)
    if runtime not in RUNTIMES:
        raise BenchError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if threads < 1 or warmup < 0 or runs < 1:
        raise BenchError(f"need threads >= 1, warmup >= 0, runs >= 1 (got {threads}, {warmup}, {runs})")
    if isinstance(path_or_model, (str, os.PathLike)) and not Path(path_or_model).exists():
        raise BenchError(f"no artifact at {path_or_model}")
    if isolate and isinstance(path_or_model, (str, os.PathLike)):
        return _bench_in_subprocess(path_or_model, runtime, threads, warmup, runs, input_shape, layer_profile, seed)
    make = {"onnxruntime": _onnxruntime, "torch": _torch, "litert": _litert, "edgeprune": _edgeprune}[runtime]
    _preload(runtime)
    t0 = time.perf_counter()
    run_once, inputs, version, profiler = make(path_or_model, threads, input_shape, seed)
    init_ms = (time.perf_counter() - t0) * 1000.0
    t0 = time.perf_counter()
    run_once()
    first_ms = (time.perf_counter() - t0) * 1000.0
    for _ in range(warmup):
        run_once()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_once()
        samples.append((time.perf_counter() - t0) * 1000.0)
    result = BenchResult(
        artifact=str(path_or_model) if isinstance(path_or_model, (str, os.PathLike)) else type(path_or_model).__name__,
        runtime=runtime,
        runtime_version=version,
        threads=threads,
        warmup=warmup,
        runs=runs,
        init_ms=init_ms,
        first_ms=first_ms,
        samples_ms=samples,
        peak_rss_mb=_peak_rss_mb(),
        inputs=inputs,
    )
    if layer_profile and profiler is not None:
        result.layers = profiler(max(3, min(runs, 10)))
    result.warnings.extend(noise_warnings(samples))
    return result


def _preload(runtime: str) -> None:
    """Import the runtime's module before the init timer starts (an import is not model init)."""
    module = {"onnxruntime": "onnxruntime", "torch": "torch", "litert": "ai_edge_litert.interpreter"}.get(runtime)
    if module:
        try:
            __import__(module)
        except ImportError:
            pass  # the runtime's own constructor raises the BenchError that says how to install it


def _bench_in_subprocess(path, runtime, threads, warmup, runs, input_shape, layer_profile, seed) -> BenchResult:
    import subprocess

    request = {
        "path": str(Path(path).resolve()),
        "runtime": runtime,
        "threads": threads,
        "warmup": warmup,
        "runs": runs,
        "input_shape": list(input_shape) if input_shape is not None else None,
        "layer_profile": layer_profile,
        "seed": seed,
    }
    env = dict(os.environ)
    # the worker must import this same edgeprune, installed or not
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-m", "edgeprune.bench", json.dumps(request)], env=env, capture_output=True, text=True
    )
    if proc.returncode == 2:
        raise BenchError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "bench worker failed")
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return BenchResult.from_dict(json.loads(proc.stdout))


def _worker(argv: list[str]) -> int:
    """``python -m edgeprune.bench REQUEST_JSON``: one isolated measurement, JSON on stdout."""
    req = json.loads(argv[0])
    try:
        res = bench(
            req["path"],
            runtime=req["runtime"],
            threads=req["threads"],
            warmup=req["warmup"],
            runs=req["runs"],
            input_shape=req["input_shape"],
            layer_profile=req["layer_profile"],
            seed=req["seed"],
        )
    except BenchError as e:
        print(str(e), file=sys.stderr)
        return 2
    json.dump(res.to_dict(samples=True), sys.stdout)
    return 0


def noise_warnings(samples_ms: list[float]) -> list[str]:
    """A warning when the timed runs vary too much to be compared (CV above ``CV_WARNING``)."""
    if len(samples_ms) < 5:
        return []  # too few runs for a meaningful spread
    mean = statistics.fmean(samples_ms)
    cv = statistics.pstdev(samples_ms) / mean if mean > 0 else 0.0
    if cv <= CV_WARNING:
        return []
    return [
        f"coefficient of variation {cv:.0%} > {CV_WARNING:.0%}: timings are noisy (other load on the "
        "machine or thermal throttling); close other programs, use more --runs, or pin with taskset"
    ]


# ----------------------------------------------------------------------------- runtimes
def _onnxruntime(path, threads, input_shape, seed):
    import numpy as np
    import onnxruntime as ort

    if not isinstance(path, (str, os.PathLike)) or Path(path).suffix.lower() != ".onnx":
        raise BenchError(f"onnxruntime needs an .onnx file, got {path}; export one with `edgeprune export`")

    def options(profile_prefix=None):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return so

    try:
        sess = ort.InferenceSession(str(path), options(), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for unreadable models
        raise BenchError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        if input_shape is not None and len(shape) == len(input_shape) + 1:
            shape = [shape[0], *input_shape]
        feeds[inp.name] = _random(rng, inp.type, shape)
    out_names = [o.name for o in sess.get_outputs()]

    def run_once():
        sess.run(out_names, feeds)

    def profiler(n):
        with tempfile.TemporaryDirectory(prefix="edgeprune-prof-") as tmp:
            psess = ort.InferenceSession(
                str(path), options(os.path.join(tmp, "ort")), providers=["CPUExecutionProvider"]
            )
            for _ in range(n):
                psess.run(out_names, feeds)
            prof_file = psess.end_profiling()
            return parse_ort_profile(prof_file, n)

    return run_once, {k: list(v.shape) for k, v in feeds.items()}, f"onnxruntime {ort.__version__}", profiler


def parse_ort_profile(path, runs: int) -> list[dict[str, Any]]:
    """Per-node mean time from an ONNX Runtime profile (Chrome trace JSON), slowest first."""
    events = json.loads(Path(path).read_text())
    totals: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = ev["name"][: -len("_kernel_time")]
        args = ev.get("args", {})
        row = totals.setdefault(name, {"name": name, "op_type": args.get("op_name", ""), "us": 0.0})
        row["us"] += float(ev.get("dur", 0))
    grand = sum(r["us"] for r in totals.values()) or 1.0
    rows = [
        {
            "name": r["name"],
            "op_type": r["op_type"],
            "mean_ms": round(r["us"] / runs / 1000.0, 5),
            "share": round(r["us"] / grand, 4),
        }
        for r in totals.values()
    ]
    rows.sort(key=lambda r: (-r["mean_ms"], r["name"]))
    return rows


def _random(rng, type_str: str, shape):
    import numpy as np

    kinds = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(double)": np.float64,
        "tensor(int8)": np.int8,
        "tensor(uint8)": np.uint8,
        "tensor(int32)": np.int32,
        "tensor(int64)": np.int64,
        "tensor(bool)": np.bool_,
    }
    dtype = kinds.get(type_str, np.float32)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)


def _torch(model, threads, input_shape, seed):
    import torch

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_dir():
            raise BenchError(f"the torch runtime needs a model directory written by ep.save, got {path}")
        from edgeprune.io import load  # io sits below bench; imported here to keep bench light

        model = load(path)
    if not isinstance(model, torch.nn.Module):
        raise BenchError(f"the torch runtime needs an nn.Module or an ep.save directory, got {type(model).__name__}")
    shape = tuple(input_shape) if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise BenchError("the model has no input_shape attribute; pass input_shape=(C, H, W)")
    prev_threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *shape), generator=gen)
    model = model.eval()

    def run_once():
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                model(x)
        finally:
            torch.set_num_threads(prev_threads)

    return run_once, {"input": [1, *shape]}, f"torch {torch.__version__}", None


def _litert(path, threads, input_shape, seed):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise BenchError("runtime litert needs the ai-edge-litert package: pip install ai-edge-litert") from None
    import numpy as np

    if not isinstance(path, (str, os.PathLike)) or Path(path).suffix.lower() != ".tflite":
        raise BenchError(f"litert needs a .tflite file, got {path}")
    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    rng = np.random.default_rng(seed)
    inputs = {}
    for d in interp.get_input_details():
        dtype = np.dtype(d["dtype"])
        shape = [int(s) if s > 0 else 1 for s in d["shape"]]
        type_str = {
            np.dtype(np.float32): "tensor(float)",
            np.dtype(np.int8): "tensor(int8)",
            np.dtype(np.uint8): "tensor(uint8)",
        }.get(dtype, "tensor(float)")
        value = _random(rng, type_str, shape)
        interp.set_tensor(d["index"], value)
        inputs[d["name"]] = shape
    try:
        import ai_edge_litert

        version = f"litert {getattr(ai_edge_litert, '__version__', 'unknown')}"
    except Exception:
        version = "litert"
    return interp.invoke, inputs, version, None


def _peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB.

    Linux: VmHWM from /proc/self/status, the high-water mark of the current address space. Not
    getrusage's ru_maxrss: that one survives fork+exec, so a worker started from a big process
    would report its parent's size.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


make_module_callable(__name__, bench)  # ep.bench is this module and its function: see edgeprune/_callable.py


def _edgeprune(path, threads, input_shape, seed):
    """edgeprune's own runtime on a .tflite file; its profiler times every operator."""
    import numpy as np

    from edgeprune import runtime as ep_runtime

    if not isinstance(path, (str, os.PathLike)) or Path(path).suffix.lower() != ".tflite":
        raise BenchError(f"the edgeprune runtime needs a .tflite file, got {path}; export one with `edgeprune export`")
    model = ep_runtime.load(path, threads=threads)
    rng = np.random.default_rng(seed)
    feeds = [rng.standard_normal(i["shape"]).astype(np.float32) for i in model.inputs]

    def run_once():
        model(*feeds)

    def profiler(n):
        rows = model.profile(runs=n, inputs=feeds)
        grand = sum(ms for _, _, ms in rows) or 1.0
        out = [
            {"name": f"{i}: {label}", "op_type": kind, "mean_ms": round(ms, 5), "share": round(ms / grand, 4)}
            for i, (kind, label, ms) in enumerate(rows)
        ]
        out.sort(key=lambda r: (-r["mean_ms"], r["name"]))
        return out

    from edgeprune import __version__

    inputs = {i["name"]: list(i["shape"]) for i in model.inputs}
    return run_once, inputs, f"edgeprune {__version__} ({model.isa})", profiler


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
