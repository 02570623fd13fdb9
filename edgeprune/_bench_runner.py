"""The measurement itself, in one file that runs anywhere with Python, numpy and a runtime.

Consumes: an artifact path (``.onnx`` for ONNX Runtime or TensorRT, ``.tflite`` for LiteRT) and
the run settings, as keyword arguments (``measure``) or as one JSON request on the command line
(``python _bench_runner.py '{"path": ..., "runtime": ..., ...}'``). Produces: a dict with the
runtime and its version, init / first-run times, every timed sample (ms), peak RSS, the input
shapes, the per-layer profile (ONNX Runtime) and noise warnings; on the command line that dict
is printed as JSON, and a problem the user can fix prints one line on stderr and exits 2.

This file imports nothing of edgeprune, on purpose: ``edgeprune bench --device`` copies it to a
Raspberry Pi or Jetson that has no edgeprune installed and runs it there, and ``edgeprune.bench``
imports the same functions for a local run, so the local and the remote numbers come from the
same code. Keep it stdlib + numpy + the runtime's own module.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Above this coefficient of variation (std / mean) the numbers are too noisy to compare:
# another process is competing for the cores, or the CPU is throttling.
CV_WARNING = 0.10
RUNNER_RUNTIMES = ("onnxruntime", "litert", "tflite-runtime", "tensorrt")
# what to pip install on the device for each runtime's module
PIP_NAMES = {
    "onnxruntime": "onnxruntime",
    "litert": "ai-edge-litert",
    "tflite-runtime": "tflite-runtime",
    "numpy": "numpy",
}
# the module each interpreter runtime imports
INTERPRETERS = {"litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter"}


class RunnerError(Exception):
    """The artifact cannot be measured as asked; the message is one line saying how to fix it."""


def host_info() -> dict[str, Any]:
    """The machine a measurement ran on."""
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def measure(make, path, threads: int, warmup: int, runs: int, input_shape=None, layer_profile=True, seed=0):
    """Time ``make``'s model: session init, one first run, ``warmup`` untimed runs, ``runs`` timed.

    ``make(path, threads, input_shape, seed)`` returns ``(run_once, inputs, version, profiler)``;
    ``profiler(n)`` (or None) gives per-layer rows from a separate profiled session, so profiling
    never touches the timed samples.
    """
    t0 = time.perf_counter()
    try:
        run_once, inputs, version, profiler = make(path, threads, input_shape, seed)
    except (MemoryError, OverflowError) as e:  # inputs of the size the file declares
        raise _failed(path, "its inputs cannot be made", e) from None
    init_ms = (time.perf_counter() - t0) * 1000.0
    t0 = time.perf_counter()
    try:
        run_once()
    except Exception as e:  # the runtime refuses the file's graph or shapes: the file, not us
        if isinstance(e, RunnerError) or getattr(e, "is_user_error", False):
            raise
        raise _failed(path, "the runtime failed on its first run", e) from None
    first_ms = (time.perf_counter() - t0) * 1000.0
    for _ in range(warmup):
        run_once()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_once()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return {
        "runtime_version": version,
        "threads": threads,
        "warmup": warmup,
        "runs": runs,
        "init_ms": init_ms,
        "first_ms": first_ms,
        "samples_ms": samples,
        "peak_rss_mb": peak_rss_mb(),
        "inputs": inputs,
        "layers": profiler(max(3, min(runs, 10))) if layer_profile and profiler is not None else [],
        "warnings": noise_warnings(samples),
    }


# the largest random input the runner makes (a model may declare any input size)
MAX_INPUT_BYTES = 4 << 30


def _failed(path, what: str, e: BaseException) -> RunnerError:
    """One line for a runtime's own exception (ONNX Runtime's are multi-line, with log prefixes)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = lines[0][:300] if lines else "no message"
    return RunnerError(
        f"{path}: {what} ({type(e).__name__}: {detail}); check its input shapes (--input-shape) or re-export it"
    )


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


def _import(module: str, runtime: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        name = PIP_NAMES.get(module.split(".")[0], PIP_NAMES.get(runtime, module))
        if module == "numpy":
            name = f"numpy {PIP_NAMES.get(runtime, runtime)}"
        raise RunnerError(
            f"runtime {runtime} needs {name} for {sys.executable} (not importable there): pip install {name}"
        ) from None


# ----------------------------------------------------------------------------- ONNX Runtime
def make_onnxruntime(path, threads, input_shape, seed):
    np = _import("numpy", "onnxruntime")
    ort = _import("onnxruntime", "onnxruntime")
    if Path(path).suffix.lower() != ".onnx":
        raise RunnerError(f"onnxruntime needs an .onnx file, got {path}; export one with `edgeprune export`")

    def options(profile_prefix=None):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 4  # (a failed run is reported once, as our one line)
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return so

    try:
        sess = ort.InferenceSession(str(path), options(), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for unreadable models
        raise RunnerError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        if input_shape is not None and len(shape) == len(input_shape) + 1:
            shape = [shape[0], *input_shape]
        feeds[inp.name] = random_input(rng, inp.type, shape)
    out_names = [o.name for o in sess.get_outputs()]

    def run_once():
        sess.run(out_names, feeds)

    def profiler(n):
        with tempfile.TemporaryDirectory(prefix="edgeprune-prof-") as tmp:
            psess = ort.InferenceSession(
                str(path), options(os.path.join(tmp, "ort")), providers=["CPUExecutionProvider"]
            )
            for _ in range(n + 1):  # the first profiled run allocates and is dropped (skip_first)
                psess.run(out_names, feeds)
            return parse_ort_profile(psess.end_profiling(), n, skip_first=True)

    return run_once, {k: list(v.shape) for k, v in feeds.items()}, f"onnxruntime {ort.__version__}", profiler


def parse_ort_profile(path, runs: int, skip_first: bool = False) -> list[dict[str, Any]]:
    """Per-node time per run from an ONNX Runtime profile (Chrome trace JSON), slowest first.

    ``skip_first``: ignore the node events of the first ``model_run`` (a cold run: allocations,
    first-touch page faults), which can be longer than all the others together.
    """
    events = json.loads(Path(path).read_text())
    cutoff = None
    if skip_first:
        starts = sorted(
            (float(e.get("ts", 0)), float(e.get("dur", 0)))
            for e in events
            if e.get("cat") == "Session" and e.get("name") == "model_run"
        )
        if len(starts) > 1:
            cutoff = starts[0][0] + starts[0][1]
    totals: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        if cutoff is not None and float(ev.get("ts", 0)) < cutoff:
            continue
        name = ev["name"][: -len("_kernel_time")]
        args = ev.get("args", {})
        row = totals.setdefault(name, {"name": name, "op_type": args.get("op_name", ""), "durs": []})
        row["durs"].append(float(ev.get("dur", 0)))
    # per node: the median event (a run preempted by another process cannot skew it) times the
    # events per run
    us = {name: statistics.median(r["durs"]) * len(r["durs"]) / runs for name, r in totals.items()}
    grand = sum(us.values()) or 1.0
    rows = [
        {
            "name": r["name"],
            "op_type": r["op_type"],
            "mean_ms": round(us[r["name"]] / 1000.0, 5),
            "share": round(us[r["name"]] / grand, 4),
            # the fastest event times the events per run: the node's time with nothing competing
            "min_ms": round(min(r["durs"]) * len(r["durs"]) / runs / 1000.0, 5),
        }
        for r in totals.values()
    ]
    rows.sort(key=lambda r: (-r["mean_ms"], r["name"]))
    return rows


def random_input(rng, type_str: str, shape):
    """Seeded random data of an ONNX type string ("tensor(float)", "tensor(int8)", ...)."""
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
    elems = 1
    for d in shape:
        elems *= int(d)
    if elems * 8 > MAX_INPUT_BYTES:  # (made in float64 first)
        raise RunnerError(
            f"an input of shape {list(shape)} needs {elems * np.dtype(dtype).itemsize / 2**30:.3g} GiB; "
            "give a smaller --input-shape or fix the model's declared input"
        )
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if dtype in (np.int32, np.int64):
        # integer model inputs are token ids, attention masks, token types or positions: 0 and 1
        # are valid for every one of them (a random id past the vocabulary fails the lookup)
        return rng.integers(0, 2, shape).astype(dtype)
    info = np.iinfo(dtype)  # int8/uint8: quantized activations, any value is valid
    return rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)


# ----------------------------------------------------------------------------- LiteRT
def make_litert(path, threads, input_shape, seed):
    return _make_interpreter("litert", path, threads, seed)


def make_tflite_runtime(path, threads, input_shape, seed):
    return _make_interpreter("tflite-runtime", path, threads, seed)


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null for the block: the TFLite C++ library logs there ("INFO: Created
    TensorFlow Lite XNNPACK delegate for CPU.", and its own line before a refusal that the exception
    repeats), which no Python setting silences; a bad file must give the user one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _make_interpreter(runtime, path, threads, seed):
    """A TFLite interpreter (LiteRT or tflite-runtime, same API) fed seeded random inputs of its own types."""
    np = _import("numpy", runtime)
    interpreter = _import(INTERPRETERS[runtime], runtime)
    if Path(path).suffix.lower() != ".tflite":
        raise RunnerError(f"{runtime} needs a .tflite file, got {path}")
    try:
        with _quiet_stderr():
            interp = interpreter.Interpreter(model_path=str(path), num_threads=threads)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise RunnerError(f"{runtime} cannot load {path}: {str(e).splitlines()[0] if str(e) else e}") from None
    rng = np.random.default_rng(seed)
    types = {
        np.dtype(np.float32): "tensor(float)",
        np.dtype(np.int8): "tensor(int8)",
        np.dtype(np.uint8): "tensor(uint8)",
        np.dtype(np.int32): "tensor(int32)",
        np.dtype(np.int64): "tensor(int64)",
    }
    inputs = {}
    for d in interp.get_input_details():
        dtype = np.dtype(d["dtype"])
        shape = [int(s) if s > 0 else 1 for s in d["shape"]]
        value = random_input(rng, types.get(dtype, "tensor(float)"), shape)
        if dtype.kind == "i" and dtype.itemsize > 1:
            value = np.abs(value) % 2  # token ids: in range for any embedding table
        interp.set_tensor(d["index"], value.astype(dtype))
        inputs[d["name"]] = shape
    top = INTERPRETERS[runtime].split(".")[0]
    try:
        version = f"{runtime} {getattr(__import__(top), '__version__', 'unknown')}"
    except ImportError:
        version = runtime
    return interp.invoke, inputs, version, None


# ----------------------------------------------------------------------------- TensorRT
_TRT_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([\d.eE+-]+)\s*ms")
_TRT_VERSION = re.compile(r"TensorRT version:?\s*([\d.]+)|\[TensorRT v(\d+)\]")


def parse_trtexec(text: str) -> dict[str, Any]:
    """The performance summary of ``trtexec`` output: throughput (qps), and min / max / mean /
    median / percentile statistics (ms) of "Latency" and "GPU Compute Time".

    Raises RunnerError when the text has no performance summary (the engine build failed).
    """
    out: dict[str, Any] = {}
    for line in text.splitlines():
        body = re.sub(r"^.*?\[[IWEV]\]\s*", "", line.strip())
        if body.startswith("Throughput:"):
            m = re.search(r"([\d.eE+-]+)\s*qps", body)
            if m:
                out["throughput_qps"] = float(m.group(1))
        for key, label in (("latency", "Latency:"), ("gpu_compute", "GPU Compute Time:")):
            if body.startswith(label):
                stats = {}
                for name, pct, value in _TRT_STAT.findall(body):
                    stats[f"p{pct.rstrip('0').rstrip('.') if '.' in pct else pct}" if pct else name] = float(value)
                out[key] = stats
        m = _TRT_VERSION.search(body)
        if m and "version" not in out:
            v = m.group(1) or m.group(2)
            out["version"] = v if "." in v else _trt_version(int(v))
    if "latency" not in out or "median" not in out["latency"]:
        raise RunnerError(
            'trtexec printed no performance summary ("Latency: ... median = ..."): the engine build failed'
        )
    return out


def _trt_version(v: int) -> str:
    """trtexec's banner number: v8601 is 8.6.1 (M m pp), v100300 is 10.3.0 (MM mm pp)."""
    if v >= 10000:
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return f"{v // 1000}.{v // 100 % 10}.{v % 100}"


def trtexec_command(path, warmup_ms: int, runs: int, precision: str, times_json: str) -> list[str]:
    flags = {"int8": ["--int8", "--fp16"], "fp16": ["--fp16"], "fp32": []}[precision]
    exe = shutil.which("trtexec") or "/usr/src/tensorrt/bin/trtexec"
    return [
        exe,
        f"--onnx={path}",
        *flags,
        f"--warmUp={warmup_ms}",
        f"--iterations={runs}",
        "--duration=0",
        "--avgRuns=1",
        f"--exportTimes={times_json}",
    ]


def trt_precision(path) -> str:
    """What to build an engine in: int8 for edgeprune's ``*.int8.onnx`` (Q/DQ), else fp16."""
    return "int8" if ".int8." in Path(path).name else "fp16"


def measure_tensorrt(path, warmup: int, runs: int, precision: str | None = None, timeout: float = 1800.0):
    """Build an engine with the board's ``trtexec`` and time it; the same dict as ``measure``.

    Samples are the per-iteration host latencies trtexec exports (``--exportTimes``); its GPU
    compute statistics and throughput go under ``"tensorrt"``.
    """
    if not (shutil.which("trtexec") or Path("/usr/src/tensorrt/bin/trtexec").exists()):
        raise RunnerError(
            "runtime tensorrt needs trtexec (JetPack's /usr/src/tensorrt/bin/trtexec or on PATH); "
            "install TensorRT on the Jetson (sudo apt install tensorrt) or use --runtime onnxruntime"
        )
    precision = precision or trt_precision(path)
    with tempfile.TemporaryDirectory(prefix="edgeprune-trt-") as tmp:
        times = os.path.join(tmp, "times.json")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                trtexec_command(path, max(warmup, 1) * 20, runs, precision, times),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise RunnerError(f"trtexec did not finish within {timeout:g} s on {path}") from None
        init_ms = (time.perf_counter() - t0) * 1000.0
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
            raise RunnerError(f"trtexec failed on {path} (exit {proc.returncode}): {tail[0]}")
        summary = parse_trtexec(proc.stdout)
        samples = samples_from_export_times(Path(times).read_text()) if Path(times).exists() else []
    lat = summary["latency"]
    return {
        "runtime_version": f"tensorrt {summary.get('version', 'unknown')}",
        "threads": 1,
        "warmup": warmup,
        "runs": runs,
        "init_ms": init_ms,
        "first_ms": lat.get("max", lat["median"]),
        "samples_ms": samples or [lat["median"]],
        "peak_rss_mb": None,
        "inputs": {},
        "layers": [],
        "warnings": noise_warnings(samples),
        "tensorrt": summary,
    }


def samples_from_export_times(text: str) -> list[float]:
    """Per-iteration latencies (ms) from trtexec's ``--exportTimes`` JSON."""
    rows = json.loads(text)
    return [float(r["latencyMs"]) for r in rows if isinstance(r, dict) and "latencyMs" in r]


# ----------------------------------------------------------------------------- shared
MAKERS = {"onnxruntime": make_onnxruntime, "litert": make_litert, "tflite-runtime": make_tflite_runtime}


def peak_rss_mb() -> float | None:
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


def make_request(path, runtime, threads, warmup, runs, input_shape=None, layer_profile=True, seed=0) -> dict:
    """The JSON request ``run_request`` (and the command line) takes."""
    return {
        "path": str(path),
        "runtime": runtime,
        "threads": threads,
        "warmup": warmup,
        "runs": runs,
        "input_shape": list(input_shape) if input_shape is not None else None,
        "layer_profile": layer_profile,
        "seed": seed,
    }


def request_settings(req: dict[str, Any]) -> dict[str, Any]:
    """``measure``'s run settings from a ``make_request`` dict, with ``measure``'s defaults. The one
    reader of a request: this file's command line and ``python -m edgeprune.bench`` (the isolated
    local worker, which adds ``trust_code``) both take their settings from here."""
    return {
        "threads": req["threads"],
        "warmup": req["warmup"],
        "runs": req["runs"],
        "input_shape": req.get("input_shape"),
        "layer_profile": req.get("layer_profile", True),
        "seed": req.get("seed", 0),
    }


def run_request(req: dict[str, Any]) -> dict[str, Any]:
    """One measurement from a request dict (path, runtime, threads, warmup, runs, ...)."""
    runtime = req["runtime"]
    if runtime not in RUNNER_RUNTIMES:
        raise RunnerError(f"runtime {runtime!r} is not one of {', '.join(RUNNER_RUNTIMES)}")
    if not Path(req["path"]).is_file():
        raise RunnerError(f"no artifact at {req['path']}")
    if runtime == "tensorrt":
        out = measure_tensorrt(req["path"], req["warmup"], req["runs"], req.get("precision"))
    else:
        # imported before the init timer (an import is not model init); numpy first, the runtime needs it
        _import("numpy", runtime)
        _import(INTERPRETERS.get(runtime, "onnxruntime"), runtime)
        out = measure(MAKERS[runtime], req["path"], **request_settings(req))
    out["runtime"] = runtime
    out["host"] = host_info()
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python _bench_runner.py REQUEST_JSON", file=sys.stderr)
        return 2
    try:
        out = run_request(json.loads(argv[0]))
    except RunnerError as e:
        print(str(e), file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
