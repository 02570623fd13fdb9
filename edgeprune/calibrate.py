"""Fit a device profile's per-op-class efficiencies to measured per-op timings.

Consumes: a profile (``edgeprune.targets``) and ``edgeprune bench --json`` results of ONNX
artifacts, local or remote (``--device``), each with its ONNX Runtime per-node profile
(``layers``) and the artifact it measured (``artifact``: read from that path, or from the JSON
file's directory). Produces: the profile with an ``[efficiency]`` table per precision and thread
count (conv, pointwise, depthwise, fc, and act where the models have transcendental activations,
as fractions of the per-core peak; eltwise as the fraction of the DRAM figure), the fitted
per-operator overhead, ``calibrated = true`` and ``[residuals]`` (time-weighted relative RMS error
of the per-op fit per class, and of the model totals), plus a per-model table of measured vs
estimated totals.

The fit (docs/targets.md, "Calibrating from measurements"): every profile row is matched back to
the estimator's op by ONNX node or tensor name (ONNX Runtime renames fused nodes after their last
output, ``..._nchwc`` or ``..._token_N``); rows that match no op (layout reorders, input
quantization) are spread over the model by scaling its matched times so they sum to the measured
median. The reference time is :func:`reference_ms`, robust to a busy machine. Then, per (precision, threads):
the memory-bound ops alone fix the bandwidth efficiency and their own per-op overhead (the candidate with
the smallest time-weighted log error over them); then, for each candidate compute per-op overhead, each
compute class's efficiency is solved (bisection) so the class's estimated time equals its measured time
over all models, and the overhead with the smallest time-weighted log error over all ops wins.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import targets as targets_mod
from .errors import UserError

_estimate = importlib.import_module("edgeprune.estimate")  # the module (ep.estimate is its function)

OVERHEAD_GRID_US = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
# what ONNX Runtime appends to a node's name when it rewrites it: a layout variant, a token, a
# fused node named after the last node it replaced ("<Mul>/QuickGeluFusion/" for x * sigmoid(x))
_SUFFIX = re.compile(r"(_nchwc|_token_\d+|_kernel_time|/[A-Za-z]+Fusion/)$")


class CalibrationError(UserError):
    """A bench result that cannot be used for a fit (one line: which file, why, how to fix)."""


@dataclasses.dataclass
class Sample:
    """One measured model: its ops, each op's measured ms (scaled to the median), the settings."""

    label: str
    ops: list
    measured_ms: list[float]
    precision: str
    threads: int
    median_ms: float  # reference_ms of the bench result
    matched_share: float  # fraction of the profiled time matched to an op


def _artifact(d: dict[str, Any], json_path: Path) -> Path:
    art = Path(str(d.get("artifact", "")))
    for cand in (art, json_path.parent / art, json_path.parent / art.name):
        if cand.suffix.lower() == ".onnx" and cand.is_file():
            return cand
    raise CalibrationError(
        f"{json_path}: its artifact {art} is not an .onnx file here or next to the JSON; "
        "copy the model next to the bench JSON"
    )


def reference_ms(bench: dict[str, Any]) -> float:
    """The model's own time in a bench result: the smaller of the timed median and the sum of the
    per-node profile (each node's fastest profiled run where the profile has it, else its
    median). Both only ever err upward: other processes competing for the cores stretch whole
    timed runs, which the per-node figures avoid, and profiling adds a few microseconds per node,
    which the timed runs do not pay."""
    layers = bench.get("layers", [])
    total = sum(float(r.get("min_ms", r["mean_ms"])) for r in layers)
    median = float(bench["median_ms"])
    return min(median, total) if total > 0 else median


def load_sample(json_path) -> Sample:
    """A bench JSON and its ONNX artifact -> the per-op measured times."""
    path = Path(json_path)
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CalibrationError(
            f"{path}: not a readable bench JSON ({e}); write one with `edgeprune bench --json`"
        ) from None
    if not isinstance(d, dict) or d.get("estimate") is not False or "median_ms" not in d:
        raise CalibrationError(f"{path}: not an `edgeprune bench --json` measurement")
    if not d.get("layers"):
        raise CalibrationError(f"{path}: no per-op profile ('layers' is empty); bench an .onnx without --no-layers")
    _check_fields(d, path)
    onnx_path = _artifact(d, path)
    ops, precision = _estimate.ops_from_onnx(onnx_path)
    index = {name: i for i, op in enumerate(ops) for name in op.names}
    measured = [0.0] * len(ops)
    matched = total = 0.0
    for row in d["layers"]:
        # each node's fastest profiled run where the profile has it: on a busy host the mean of a
        # node takes the preemptions that hit it, which would move time between op classes
        ms = float(row.get("min_ms", row["mean_ms"]))
        total += ms
        key = str(row["name"])
        while key not in index and _SUFFIX.search(key):
            key = _SUFFIX.sub("", key)
        if key in index:
            measured[index[key]] += ms
            matched += ms
    if matched <= 0:
        raise CalibrationError(f"{path}: no profiled node matches an operator of {onnx_path.name}")
    reference = reference_ms(d)
    scale = reference / matched
    return Sample(
        label=f"{onnx_path.name} ({path.name})",
        ops=ops,
        measured_ms=[m * scale for m in measured],
        precision=precision,
        threads=int(d["threads"]),
        median_ms=reference,
        matched_share=matched / total if total else 0.0,
    )


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_fields(d: dict, path: Path) -> None:
    """The fields calibration reads, with the types and ranges ``bench --json`` writes them."""

    def bad(what: str) -> CalibrationError:
        return CalibrationError(f"{path}: {what}; write it again with `edgeprune bench --json`")

    if not isinstance(d["layers"], list) or not all(isinstance(r, dict) for r in d["layers"]):
        raise bad("'layers' is not a list of per-op rows")
    for i, row in enumerate(d["layers"]):
        if "name" not in row or not any(k in row for k in ("min_ms", "mean_ms")):
            raise bad(f"layers[{i}] has no name or time")
        t = row.get("min_ms", row.get("mean_ms"))
        if not _number(t) or t < 0:
            raise bad(f"layers[{i}] time {t!r} is not a number >= 0")
    threads = d.get("threads")
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 1024:
        raise bad(f"'threads' {threads!r} is not a thread count")
    if not _number(d["median_ms"]) or d["median_ms"] <= 0:
        raise bad(f"'median_ms' {d['median_ms']!r} is not a positive time")


def _predict(op, eff: dict[str, float], peak_gops: float, bandwidth: float, speedup: float, bytes_per: int, ovh):
    """``ovh``: (compute op overhead, memory-bound op overhead) in ms, as ``estimate_ops`` applies them."""
    nbytes = (op.weight_elems + op.in_elems + op.out_elems) * bytes_per
    memory = nbytes / (bandwidth * 1e9 * eff["eltwise"]) * 1000.0
    compute = 0.0
    work = _estimate.compute_macs(op)
    if op.kind in eff and op.kind in _estimate.COMPUTE_KINDS and work:
        compute = 2.0 * work / (peak_gops * 1e9 * eff[op.kind] * speedup) * 1000.0
    return max(compute, memory) + (ovh[0] if op.kind in _estimate.WEIGHTED_KINDS else ovh[1])


def _solve(cls: str, pairs, eff, args) -> float:
    """Efficiency of class ``cls`` making its estimated total equal its measured total."""
    want = sum(m for _, m in pairs)
    lo, hi = math.log(1e-4), math.log(50.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        trial = {**eff, cls: math.exp(mid)}
        got = sum(_predict(op, trial, *args) for op, _ in pairs)
        lo, hi = (lo, mid) if got < want else (mid, hi)  # more efficiency -> less time
    return round(math.exp((lo + hi) / 2), 4)


def _fit_group(samples: list[Sample], profile) -> tuple[dict[str, float], tuple[float, float], dict[str, float]]:
    precision, threads = samples[0].precision, samples[0].threads
    peak = _estimate._peak_per_core(profile, precision)
    speedup = threads / (1.0 + (1.0 - _estimate.PARALLEL_FRACTION) * (threads - 1))
    bytes_per = _estimate._BYTES[precision]
    pairs = [(op, m) for s in samples for op, m in zip(s.ops, s.measured_ms)]
    by_class = {c: [(op, m) for op, m in pairs if _op_class(op) == c] for c in targets_mod.OP_CLASSES}
    per_thread = _estimate.LAYER_OVERHEAD_PER_THREAD_US * (threads - 1)
    eff = dict(_estimate.efficiency_for(profile, precision, threads)["efficiency"])
    # The memory-bound ops' predictions depend only on their own overhead and the bandwidth
    # efficiency, so those two are fitted first on them alone; then the compute classes and the
    # compute ops' overhead (the criterion is a sum over ops, so the two fits separate).
    best = None
    for elt_us in OVERHEAD_GRID_US:
        args = (peak, profile.memory.bandwidth_gbs, speedup, bytes_per, (0.0, (elt_us + per_thread) / 1000.0))
        trial = {**eff, "eltwise": _estimate.BW_EFFICIENCY}
        if by_class["eltwise"]:
            trial["eltwise"] = _solve("eltwise", by_class["eltwise"], trial, args)
        # each op counts once here: an overhead is what every small op pays, and the bandwidth
        # efficiency solved above already makes the class's total match
        err = sum(math.log(_predict(op, trial, *args) / m) ** 2 for op, m in by_class["eltwise"] if m > 0)
        if best is None or err < best[0]:
            best = (err, elt_us, trial["eltwise"])
    _, elt_us, eff["eltwise"] = best
    best = None
    for ovh_us in OVERHEAD_GRID_US:
        ovh = ((ovh_us + per_thread) / 1000.0, (elt_us + per_thread) / 1000.0)
        args = (peak, profile.memory.bandwidth_gbs, speedup, bytes_per, ovh)
        trial = dict(eff)
        for cls in _estimate.COMPUTE_KINDS:
            if by_class[cls]:
                trial[cls] = _solve(cls, by_class[cls], trial, args)
        err = _criterion(samples, pairs, trial, args)
        if best is None or err < best[0]:
            best = (err, ovh_us, trial, args)
    _, ovh_us, eff, args = best
    residuals = {}
    for cls, rows in by_class.items():
        rows = [(op, m) for op, m in rows if m > 0]
        if rows:
            w = sum(m for _, m in rows)
            residuals[cls] = round(
                math.sqrt(sum(m * ((_predict(op, eff, *args) - m) / m) ** 2 for op, m in rows) / w), 4
            )
    return eff, (ovh_us, elt_us), residuals


def _criterion(samples, pairs, eff, args) -> float:
    # time-weighted log error per op: the ops that take the time decide. (Counting each model's
    # total once instead fits 30 us test nets better and held-out ImageNet models worse: their
    # unmodelled per-op costs, ONNX Runtime's layout transposes around int8 kernels, grow with
    # the tensors; docs/targets.md has the numbers.)
    return sum(m * math.log(_predict(op, eff, *args) / m) ** 2 for op, m in pairs if m > 0)


def _op_class(op) -> str:
    return op.kind if op.kind in _estimate.COMPUTE_KINDS else "eltwise"


def fit(profile, bench_files, source: str | None = None, name: str | None = None):
    """Calibrate ``profile`` (a TargetProfile or name) on ``bench_files``.

    Returns (calibrated TargetProfile, rows): one row per model with measured and estimated
    median (ms) and the relative error.
    """
    profile = targets_mod.load(profile)
    samples = [load_sample(p) for p in bench_files]
    if not samples:
        raise CalibrationError("no bench JSON files given; pass bench-*.json written by `edgeprune bench --json`")
    groups: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        if s.threads > profile.cpu.cores:
            raise CalibrationError(f"{s.label}: {s.threads} threads but {profile.name} has {profile.cpu.cores} cores")
        groups.setdefault((s.precision, s.threads), []).append(s)
    efficiency: dict[str, Any] = {"source": source or f"measured: {len(samples)} bench runs"}
    residuals: dict[str, Any] = {}
    overheads = []
    for (precision, threads), group in sorted(groups.items()):
        eff, ovh_us, res = _fit_group(group, profile)
        efficiency.setdefault(precision, {})[f"t{threads}"] = eff
        residuals.setdefault(precision, {})[f"t{threads}"] = res
        overheads.append(ovh_us)
    # one pair of per-operator overheads per profile: the medians of the groups' fits
    efficiency["layer_overhead_us"] = sorted(o for o, _ in overheads)[len(overheads) // 2]
    efficiency["eltwise_overhead_us"] = sorted(e for _, e in overheads)[len(overheads) // 2]
    out = replace(
        profile,
        name=name or profile.name,
        efficiency=efficiency,
        residuals=residuals,
        calibrated=True,
        source="calibrated",
    )
    rows = []
    for s in samples:
        est = _estimate.estimate_ops(s.ops, out, s.precision, s.threads).total_ms
        rows.append(
            {
                "model": s.label,
                "precision": s.precision,
                "threads": s.threads,
                "measured_ms": round(s.median_ms, 4),
                "estimate_ms": round(est, 4),
                "rel_error": round((est - s.median_ms) / s.median_ms, 4),
                "profile_matched": round(s.matched_share, 4),
            }
        )
    for (precision, threads), _ in sorted(groups.items()):
        errs = [r["rel_error"] for r in rows if (r["precision"], r["threads"]) == (precision, threads)]
        residuals[precision][f"t{threads}"]["total"] = round(math.sqrt(sum(e * e for e in errs) / len(errs)), 4)
    return out, rows
