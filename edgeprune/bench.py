"""Latency harness: time a model artifact on this machine with one of several runtimes.

Consumes: an artifact (``model.onnx`` / ``model.int8.onnx`` for ONNX Runtime, ``*.tflite`` for
LiteRT, an ``nn.Module`` or an ``ep.save`` directory for torch) and the run settings (threads,
warmup, runs). Produces: a :class:`BenchResult` with init, first-run, mean, median, min, max,
std, p90, p99 (ms), the coefficient of variation, peak RSS and, for ONNX Runtime, a per-layer
profile. A result is a measurement on *this* host: ``"estimate": false``.

Pure Python over the runtimes' own Python APIs. The timing loop and the ONNX Runtime, LiteRT
and TensorRT (``trtexec``) measurements live in ``edgeprune/_bench_runner.py``, a file with no
edgeprune imports that ``edgeprune.remote`` copies to a device: local and remote numbers come
from the same code. This module adds the torch runtime, process isolation and ``BenchResult``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from . import _bench_runner as runner
from ._bench_runner import CV_WARNING, noise_warnings, parse_ort_profile  # noqa: F401  (public here)
from ._callable import make_module_callable
from .errors import UserError

RUNTIMES = ("onnxruntime", "torch", "litert", "tflite-runtime", "tensorrt", "edgeprune")


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
    # where it ran (runner.host_info(), plus "device" for a remote run); None: this process's host
    host: dict[str, Any] | None = None
    # trtexec's own summary (throughput, GPU compute time) for runtime "tensorrt"
    tensorrt: dict[str, Any] | None = None

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
        """Inverse of ``to_dict(samples=True)``: its fields; the statistics it adds are derived again."""
        if "samples_ms" not in d:
            raise ValueError("BenchResult.from_dict needs the samples (to_dict(samples=True))")
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        lists = {k: list(d.get(k, [])) for k in ("samples_ms", "layers", "warnings")}  # copies, not views
        return cls(**{**kw, **lists})

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        d = {
            "estimate": False,
            "artifact": self.artifact,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "host": self.host or runner.host_info(),
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
        if self.tensorrt is not None:
            d["tensorrt"] = self.tensorrt
        if samples:
            d["samples_ms"] = [round(s, 4) for s in self.samples_ms]
        return d


def default_runtime(artifact) -> str:
    """The runtime an artifact's kind implies: .onnx -> onnxruntime, .tflite -> litert, a model
    directory (ep.save) or an nn.Module -> torch."""
    if not isinstance(artifact, (str, os.PathLike)):
        return "torch"
    p = Path(artifact)
    from .export.formats import family_of  # the table only: no exporter is imported

    family = family_of(p)
    if family is not None:
        return family.runtime
    if p.is_dir() or not p.exists():
        return "torch"
    raise BenchError(f"cannot tell which runtime runs {p.name}; pass runtime= (--runtime) one of {', '.join(RUNTIMES)}")


# the same knobs as remote.bench_remote's signature on purpose: that one runs this function on
# the device, so the names and defaults match for the user; the lists differ (isolate, ssh ...)
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
    trust_code: bool = False,
) -> BenchResult:
    """Time ``path_or_model`` with ``runtime`` on this host.

    One session is created (``init_ms``, the runtime's import excluded), run once
    (``first_ms``), run ``warmup`` more times untimed, then ``runs`` timed runs give the
    statistics. Inputs are seeded random data of the model's input shape (dynamic dims become
    1, or come from ``input_shape`` = (C, H, W)). For ONNX Runtime a second, profiled session
    gives the per-layer breakdown (profiling slows a run, so it never touches the timed samples).

    ``isolate=True`` (artifact paths only) runs the measurement in a fresh Python process, so
    ``peak_rss_mb`` is what this runtime and model need, not the high-water mark of the
    calling process (which may hold torch and other models). ``trust_code`` as in ``ep.load``.
    """
    if runtime is None:
        runtime = default_runtime(path_or_model)
    if runtime not in RUNTIMES:
        raise BenchError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if threads < 1 or warmup < 0 or runs < 1:
        raise BenchError(f"need threads >= 1, warmup >= 0, runs >= 1 (got {threads}, {warmup}, {runs})")
    if isinstance(path_or_model, (str, os.PathLike)) and not Path(path_or_model).exists():
        raise BenchError(f"no artifact at {path_or_model}")
    if runtime in runner.INTERPRETERS and isinstance(path_or_model, (str, os.PathLike)):
        _check_tflite(path_or_model, runtime)
    if isolate and isinstance(path_or_model, (str, os.PathLike)):
        return _bench_in_subprocess(
            path_or_model, runtime, threads, warmup, runs, input_shape, layer_profile, seed, trust_code
        )
    artifact = str(path_or_model) if isinstance(path_or_model, (str, os.PathLike)) else type(path_or_model).__name__
    try:
        if runtime == "tensorrt":
            if not isinstance(path_or_model, (str, os.PathLike)):
                raise BenchError("runtime tensorrt needs an .onnx file")
            out = runner.measure_tensorrt(path_or_model, warmup, runs)
        else:
            local = {"torch": functools.partial(_torch, trust_code=trust_code), "edgeprune": _edgeprune}
            make = local.get(runtime) or runner.MAKERS[runtime]
            _preload(runtime)
            out = runner.measure(make, path_or_model, threads, warmup, runs, input_shape, layer_profile, seed)
    except runner.RunnerError as e:
        raise BenchError(str(e)) from None
    out.pop("host", None)
    return BenchResult.from_dict({**out, "artifact": artifact, "runtime": runtime})


def _check_tflite(path, runtime: str) -> None:
    """A truncated or foreign file gets one line from our reader before an interpreter sees it."""
    if Path(path).suffix.lower() != ".tflite":
        raise BenchError(
            f"{runtime} needs a .tflite file, got {path}; export one with `edgeprune export --format tflite`"
        )
    from .export.tflite_family import read_model

    read_model(Path(path).read_bytes(), str(path))  # raises UserError naming the file and what is wrong


def _preload(runtime: str) -> None:
    """Import the runtime's module before the init timer starts (an import is not model init)."""
    module = {"onnxruntime": "onnxruntime", "torch": "torch", **runner.INTERPRETERS}.get(runtime)
    if module:
        try:
            __import__(module)
        except ImportError:
            pass  # the runtime's own constructor raises the BenchError that says how to install it


def _bench_in_subprocess(
    path, runtime, threads, warmup, runs, input_shape, layer_profile, seed, trust_code=False
) -> BenchResult:
    import subprocess

    request = runner.make_request(
        Path(path).resolve(), runtime, threads, warmup, runs, input_shape, layer_profile, seed
    )
    request["trust_code"] = trust_code
    env = dict(os.environ)
    # the worker must import this same edgeprune, installed or not
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-m", "edgeprune.bench", json.dumps(request)], env=env, capture_output=True, text=True
    )
    if proc.returncode == 2:
        raise BenchError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "bench worker failed")
    if proc.returncode != 0:  # a bug in the worker: the exception's line (`--in-process -v` traces it)
        lines = proc.stderr.strip().splitlines()
        raise RuntimeError(f"bench worker failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
    return BenchResult.from_dict(json.loads(proc.stdout))


def _worker(argv: list[str]) -> int:
    """``python -m edgeprune.bench REQUEST_JSON``: one isolated measurement, JSON on stdout."""
    req = json.loads(argv[0])
    try:
        settings = runner.request_settings(req)
        res = bench(req["path"], runtime=req["runtime"], trust_code=req.get("trust_code", False), **settings)
    except UserError as e:
        print(str(e), file=sys.stderr)
        return 2
    json.dump(res.to_dict(samples=True), sys.stdout)
    return 0


# ----------------------------------------------------------------------------- runtimes
def _torch(model, threads, input_shape, seed, trust_code=False):
    import torch

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_dir():
            raise BenchError(
                f"the torch runtime needs a model directory written by ep.save or save_pretrained, got {path}"
            )
        from edgeprune.models import build  # models sit below bench; imported here to keep bench light

        try:
            model = build(str(path), trust_code=trust_code)
        except UserError as e:
            raise BenchError(str(e)) from None
    if not isinstance(model, torch.nn.Module):
        raise BenchError(f"the torch runtime needs an nn.Module or an ep.save directory, got {type(model).__name__}")
    shape = tuple(input_shape) if input_shape is not None else getattr(model, "input_shape", None)
    kwargs = {}
    if shape is None:
        from edgeprune.models.hf_dir import example_inputs

        kwargs = example_inputs(model) or {}  # a transformers token model: ids and a mask
        if not kwargs:
            raise BenchError("the model has no input_shape attribute; pass input_shape=(C, H, W)")
    prev_threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(seed)
    args = () if kwargs else (torch.randn((1, *shape), generator=gen),)
    model = model.eval()

    def run_once():
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                model(*args, **kwargs)
        finally:
            torch.set_num_threads(prev_threads)

    shapes = {k: list(v.shape) for k, v in kwargs.items()} or {"input": [1, *shape]}
    return run_once, shapes, f"torch {torch.__version__}", None


def _edgeprune(path, threads, input_shape, seed):
    """edgeprune's own runtime on a .tflite file; its profiler times every operator."""
    import numpy as np

    from edgeprune import runtime as ep_runtime

    if not isinstance(path, (str, os.PathLike)) or Path(path).suffix.lower() != ".tflite":
        raise BenchError(f"the edgeprune runtime needs a .tflite file, got {path}; export one with `edgeprune export`")
    model = ep_runtime.load(path, threads=threads)
    rng = np.random.default_rng(seed)
    feeds = [ep_runtime.example_input(rng, i) for i in model.inputs]
    # with several threads the first calls tune the split per operator (RuntimeModel.op_threads):
    # part of getting ready, like the load, not of the timed runs
    for _ in range(16):
        if not model.tuning:
            break
        model(*feeds)

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
    split = ""
    if threads > 1:  # what the tuning chose: splitting does not pay for every operator
        split = f", {sum(t > 1 for t in model.op_threads)} of {len(model.op_threads)} operators split"
    return run_once, inputs, f"edgeprune {__version__} ({model.isa}{split})", profiler


make_module_callable(__name__, bench)  # ep.bench is this module and its function: see edgeprune/_callable.py


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
