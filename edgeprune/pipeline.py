"""``build()``: the whole job in one call: prune, recover, quantize, export, measure, estimate, report.

Consumes: a model (spec string or ``nn.Module``), a target profile (name, path or
``TargetProfile``), optional weights, data and calibration specs, a pruning goal (``ratio``,
``budget_macs`` or ``budget_latency_ms``), an accuracy gate, export formats, a seed.
Produces: the output directory of docs/architecture.md (Outputs), written into a temporary directory next
to ``out_dir`` and renamed over it at the end (an interrupted build leaves nothing under the
final name)::

    model/             the pruned (and recovered) model, ep.save format (plan inside)
    model.onnx ...     one file per export format (model.int8.onnx, model.fp16.onnx, ...)
    report.json        per stage: params, MACs, size, accuracy, host latency, target estimate
    report.md          the same for humans, with the deploy / trtexec / bench commands
    plots/*.png        accuracy vs MACs, accuracy vs estimated latency, channels per layer
    manifest.json      sha256 of every file, versions, target, seed, command line

Everything except the host timings is a pure function of the inputs and the seed: the files
holding timings (``report.json``, ``report.md``) are flagged ``"timings": true`` in the
manifest; every other file hashes the same on a rerun.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import fsutil
from ._version import __version__
from .errors import UserError

# Files whose bytes depend on host timings; every other artifact must reproduce bit for bit.
TIMING_FILES = ("report.json", "report.md")
DATA_IMPORTANCES = ("taylor", "gradient", "activation")
# Bumped when a key of report.json / manifest.json changes meaning or goes away.
REPORT_VERSION = 1
STAGES = ("load", "baseline", "prune", "recover", "save", "quantize", "export", "bench", "estimate", "report")


class BuildError(UserError):
    """Bad input to ``build`` (one line: what, where, how to fix)."""


@dataclasses.dataclass
class BuildResult:
    out_dir: Path
    report: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def gate_passed(self) -> bool | None:
        gate = self.report.get("gate")
        return None if gate is None else bool(gate["passed"])

    @property
    def budget_met(self) -> bool | None:
        budget = self.report.get("budget")
        return None if budget is None else bool(budget["met"])


# ----------------------------------------------------------------------------- helpers
def _mod(name: str, *needs: str):
    """Import a stage's module, or None when this build does not have it (or lacks ``needs``)."""
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (e.name == name or name.startswith(e.name + ".")):
            return None
        raise
    return mod if all(hasattr(mod, n) for n in needs) else None


def _where(flag: str, value, err: Exception) -> str:
    """One line naming the bad input once (the lower layers' messages often name it already)."""
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    return msg if str(value) in msg else f"{flag} {value}: {msg}"


def _publishable(root: Path) -> None:
    """Give the build directory the permissions plain mkdir/open would (umask applied).

    fsutil writes through mkstemp/mkdtemp (mode 0600/0700, right for temporaries); the build
    output is meant to be copied to a device or shared, so it gets the ordinary modes.
    """
    umask = os.umask(0)
    os.umask(umask)
    for p in [root, *root.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _torch_threads(n: int | None):
    # Float sums inside conv kernels depend on the thread count; fixing it makes recovery and
    # calibration give the same bits on every run (and these small models gain nothing from more).
    import torch

    if n is None:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _channels(model) -> dict[str, int]:
    from torch import nn

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            out[name] = int(m.out_channels)
        elif isinstance(m, nn.Linear):
            out[name] = int(m.out_features)
    return out


def _versions() -> dict[str, str]:
    v = {"edgeprune": __version__, "python": platform.python_version()}
    for name in ("torch", "numpy", "onnx", "onnxruntime", "matplotlib"):
        mod = sys.modules.get(name) or _mod(name)
        if mod is not None:
            v[name] = getattr(mod, "__version__", "?")
    return v


def _accuracy(models_mod, model, dataset) -> float | None:
    if dataset is None:
        return None
    return float(models_mod.evaluate(model, dataset, metric="top1")["top1"])


def _onnx_accuracy(path: Path, dataset, limit: int = 2000) -> float | None:
    """Top-1 of an exported ONNX file under ONNX Runtime (the deployed artifact, not the torch twin)."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 64
    n = min(len(dataset), limit)
    correct = 0
    for start in range(0, n, batch):
        items = [dataset[i] for i in range(start, min(start + batch, n))]
        x = np.stack([np.asarray(it[0], dtype=np.float32) for it in items])
        y = np.array([int(it[1]) for it in items])
        if len(items) < batch and isinstance(inp.shape[0], int) and inp.shape[0] > 0:
            pad = np.zeros((batch - len(items), *x.shape[1:]), dtype=np.float32)
            logits = sess.run(None, {inp.name: np.concatenate([x, pad])})[0][: len(items)]
        else:
            logits = sess.run(None, {inp.name: x})[0]
        correct += int((logits.argmax(1) == y).sum())
    return correct / max(n, 1)


def default_formats(profile, available: Iterable[str]) -> tuple[list[str], list[str]]:
    """(formats to write, formats the profile wants that this build cannot write).

    Always the fp32 ONNX; then the profile's deploy formats; Jetson Nano (fp16 GPU, no int8)
    gets the fp16 ONNX TensorRT builds from.
    """
    available = list(available)
    want = ["onnx"]
    precision = profile.deploy.precision
    for f in profile.deploy.formats:
        if f not in want:
            want.append(f)
    if precision == "fp16" and "onnx-fp16" not in want:
        want.append("onnx-fp16")
    if precision == "int8" and "onnx-int8" not in want:
        want.append("onnx-int8")
    return [f for f in want if f in available], [f for f in want if f not in available]


def trtexec_command(profile, artifact: str, input_name: str, input_shape, dynamic_batch: bool = False) -> str | None:
    """The trtexec line that builds and times the TensorRT engine on a Jetson, or None.

    ``--shapes`` only for a dynamic batch dimension (a static model fixes its own shapes).
    """
    gpu = getattr(profile, "gpu", None)
    if gpu is None or not getattr(gpu, "tensorrt", None):
        return None
    stem = Path(artifact).name.removesuffix(".onnx")
    precision = "--int8 --fp16" if ".int8." in artifact else "--fp16"
    # explicit Q/DQ networks need --int8 to enable int8 tactics; --fp16 lets TensorRT run the
    # layers left unquantized in fp16 instead of fp32.
    shapes = ""
    if dynamic_batch:
        shapes = f" --shapes={input_name}:" + "x".join(str(int(s)) for s in (1, *input_shape))
    return (
        f"trtexec --onnx={Path(artifact).name} {precision}{shapes} "
        f"--saveEngine={stem}.engine --useSpinWait --warmUp=500 --iterations=200 --avgRuns=100"
    )


def _onnx_input(path: Path) -> tuple[str, bool]:
    """(name of the first graph input, whether any of its dims is symbolic)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    inp = next(i for i in m.graph.input if i.name not in inits)
    return inp.name, any(d.dim_param or not d.dim_value for d in inp.type.tensor_type.shape.dim)


# ----------------------------------------------------------------------------- progress
class _Stages:
    """Progress per stage on stderr: a rich bar on a terminal, one plain line per stage
    otherwise (CI logs), nothing when disabled."""

    def __init__(self, mode: str | None, names: list[str]):
        self.mode = mode  # "rich" | "plain" | None
        self.names = names
        self._progress = None
        self._i = 0

    def __enter__(self):
        if self.mode == "rich":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]build[/bold] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=len(self.names))
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start(self, name: str, detail: str = "") -> None:
        self._i += 1
        if self._progress is not None:
            self._progress.update(self._task, description=f"{name} {detail}".strip())
        elif self.mode == "plain":
            print(f"build [{self._i}/{len(self.names)}] {name} {detail}".rstrip(), file=sys.stderr, flush=True)

    def done(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def log(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        elif self.mode == "plain":
            from rich.text import Text  # plain stderr (not a terminal): the text without its markup

            print(Text.from_markup(text).plain, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- build
def build(
    model,
    target,
    out_dir,
    *,
    weights=None,
    trust_pickle: bool = False,
    data=None,
    calib=None,
    ratio: float | None = None,
    budget_macs: float | None = None,
    budget_latency_ms: float | None = None,
    max_acc_drop: float | None = None,
    formats: list[str] | None = None,
    importance: str = "l2",
    recover_epochs: int = 3,
    search: str = "auto",
    search_steps: int = 3,
    scratch_epochs: int = 0,
    seed: int = 0,
    bench_runs: int = 20,
    bench_warmup: int = 3,
    bench_threads: int = 1,
    train_threads: int | None = 1,
    force: bool = False,
    command_line: list[str] | None = None,
    progress: bool | str | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> BuildResult:
    """Run the whole pipeline and write ``out_dir`` (see the module docstring).

    Pruning goal: ``ratio`` (fraction of channels removed, default 0.5 when no goal is given),
    ``budget_macs`` (keep at most this many MACs if > 1, this fraction of them if <= 1) or
    ``budget_latency_ms`` (the target's estimated latency at its deploy precision). Channel
    counts are rounded to the profile's ``channel_multiple``. With a budget and data, ``search``
    "auto"/"adaptive" runs ``edgeprune.prune.search`` (sensitivity scan, allocation,
    ``search_steps`` prune+recover steps with back-off under ``max_acc_drop``, default 1 point);
    without data (or ``search="bisect"``) the global ratio is bisected on the estimator.
    ``result.budget_met`` is False when the budget could not be reached (the CLI exits 3).
    ``scratch_epochs`` > 0 also trains the pruned shape from random weights for comparison.
    ``max_acc_drop`` (percentage points, deployed model vs the unpruned one) makes
    ``result.gate_passed`` False when exceeded (the CLI exits 3); the artifacts are still
    written, so the report shows what happened. ``progress``: None = a bar on a terminal,
    else silent; "auto" = a bar on a terminal, else one line per stage on stderr.
    """
    import torch

    if sum(x is not None for x in (ratio, budget_macs, budget_latency_ms)) > 1:
        raise BuildError("give only one of ratio, budget_macs, budget_latency_ms")
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise BuildError(f"ratio {ratio} is outside [0, 1); e.g. 0.5 removes half the channels")
    if budget_macs is not None and budget_macs <= 0:
        raise BuildError(f"budget_macs {budget_macs} must be > 0 (a MAC count such as 2e6, or a fraction such as 0.5)")
    if budget_latency_ms is not None and budget_latency_ms <= 0:
        raise BuildError(f"budget_latency_ms {budget_latency_ms} must be > 0")
    if search not in ("auto", "adaptive", "bisect"):
        raise BuildError(f"search {search!r} is not one of auto, adaptive, bisect")
    if search_steps < 1:
        raise BuildError(f"search_steps {search_steps} must be >= 1")
    if scratch_epochs < 0:
        raise BuildError(f"scratch_epochs {scratch_epochs} must be >= 0")
    if max_acc_drop is not None and max_acc_drop < 0:
        raise BuildError(f"max_acc_drop {max_acc_drop} must be >= 0 (percentage points)")
    if max_acc_drop is not None and data is None:
        raise BuildError("max_acc_drop needs data to measure accuracy on; pass data (--data)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BuildError(f"out {out} exists and is not a directory; choose another path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise BuildError(f"out {out} is not empty; pass force (--force) to replace it or choose another directory")
    if ratio is None and budget_macs is None and budget_latency_ms is None:
        ratio = 0.5
    if progress is None or progress == "auto":
        stage_mode = "rich" if sys.stderr.isatty() else ("plain" if progress == "auto" else None)
    else:
        stage_mode = "rich" if progress and sys.stderr.isatty() else ("plain" if progress else None)
    progress = stage_mode == "rich"  # the inner bars (recovery, calibration) only on a terminal

    targets_mod = importlib.import_module("edgeprune.targets")
    models_mod = importlib.import_module("edgeprune.models")
    data_mod = importlib.import_module("edgeprune.data")
    io_mod = importlib.import_module("edgeprune.io")
    est_mod = importlib.import_module("edgeprune.estimate")
    bench_mod = importlib.import_module("edgeprune.bench")
    report_mod = importlib.import_module("edgeprune.report")
    prune_mod = _mod("edgeprune.prune", "plan", "apply")
    recover_mod = _mod("edgeprune.recover", "finetune")
    quant_mod = _mod("edgeprune.quant", "quantize")
    export_mod = _mod("edgeprune.export", "export")

    imp_mod = _mod("edgeprune.prune.importance", "IMPORTANCES")
    if imp_mod is not None and importance not in imp_mod.IMPORTANCES:
        raise BuildError(f"importance {importance!r} is unknown; choose one of {', '.join(imp_mod.IMPORTANCES)}")
    if importance in DATA_IMPORTANCES and data is None and calib is None:
        raise BuildError(f"importance {importance} scores channels on data; pass data (--data) or calib (--calib)")
    try:
        profile = target if hasattr(target, "deploy") else targets_mod.load(target)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise BuildError(_where("target", target, e)) from None

    fmt_table = importlib.import_module("edgeprune.export.formats") if export_mod else None
    available_formats = fmt_table.names() if fmt_table else []
    if formats is None:
        formats, missing_formats = default_formats(profile, available_formats)
    else:
        unknown = [f for f in formats if f not in available_formats]
        if unknown:
            raise BuildError(
                f"formats {', '.join(unknown)} are not available; choose from "
                f"{', '.join(available_formats) or '(no exporter in this build)'}"
            )
        missing_formats = []
        int8_asked = [f for f in formats if fmt_table.get(f).needs_quantized]
        if int8_asked and data is None and calib is None:
            raise BuildError(
                f"formats {', '.join(int8_asked)} need calibration data; pass calib (--calib) or "
                "data (--data), e.g. --calib digits"
            )
    if profile.deploy.precision == "fp16" and "onnx-int8" in formats:
        raise BuildError(f"target {profile.name} has no int8 path (fp16 only); drop onnx-int8 from the formats")

    skipped: dict[str, str] = {}
    ran: list[str] = []
    for f in missing_formats:
        skipped[f"export {f}"] = "this build has no writer for it yet"

    def stage(name):
        ran.append(name)
        if on_stage:
            on_stage(name)

    report: dict[str, Any] = {
        "format": "edgeprune-report",
        "report_version": REPORT_VERSION,
        "edgeprune_version": __version__,
        "model": model if isinstance(model, str) else getattr(model, "edgeprune_spec", type(model).__name__),
        "target": profile.to_dict(),
        "seed": seed,
        "settings": {
            "ratio": ratio,
            "budget_macs": budget_macs,
            "budget_latency_ms": budget_latency_ms,
            "max_acc_drop": max_acc_drop,
            "formats": list(formats),
            "importance": importance,
            "round_to": int(profile.deploy.channel_multiple),
            "recover_epochs": recover_epochs,
            "search_steps": search_steps,
            "scratch_epochs": scratch_epochs,
            "data": data if isinstance(data, str) or data is None else "object",
            "calib": calib if isinstance(calib, str) or calib is None else "object",
            "bench": {"runs": bench_runs, "warmup": bench_warmup, "threads": bench_threads},
        },
        "stages_ran": ran,
        "stages_skipped": skipped,
    }
    deploy_precision = profile.deploy.precision
    cores = int(profile.cpu.cores)

    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        _Stages(stage_mode, list(STAGES)) as bar,
        fsutil.atomic_dir(out) as tmp,
        _torch_threads(train_threads),
        tempfile.TemporaryDirectory(prefix="edgeprune-scratch-") as scratch,
    ):
        tmp = Path(tmp)
        scratch = Path(scratch)

        # ---- load
        bar.start("load", "model and data")
        stage("load")
        torch.manual_seed(seed)
        splits = None
        if data is not None:
            try:
                splits = data if hasattr(data, "train") else data_mod.load(data, seed=seed)
            except (FileNotFoundError, ValueError, ImportError) as e:
                raise BuildError(_where("data", data, e)) from None
        calib_splits = splits
        if calib is not None:
            try:
                calib_splits = calib if hasattr(calib, "train") else data_mod.load(calib, seed=seed)
            except (FileNotFoundError, ValueError, ImportError) as e:
                raise BuildError(_where("calib", calib, e)) from None
        if isinstance(model, str):
            try:
                kwargs = {}
                if splits is not None and model.startswith("edgeprune:"):
                    # built-ins are sized to the data (classes, input channels) when they accept it
                    kwargs = {"num_classes": splits.num_classes, "in_channels": splits.input_shape[0]}
                try:
                    base = models_mod.build(model, **kwargs)
                except TypeError:
                    base = models_mod.build(model)
            except (ValueError, FileNotFoundError, ImportError) as e:
                raise BuildError(_where("model", model, e)) from None
        else:
            base = model
        if weights is not None:
            try:
                models_mod.load_weights(base, weights, trust_pickle=trust_pickle)
            except ValueError as e:
                raise BuildError(_where("weights", weights, e)) from None
        base.eval()
        input_shape = getattr(base, "input_shape", None) or (splits.input_shape if splits is not None else None)
        if input_shape is None:
            raise BuildError("the model has no input_shape and no data was given to take it from; pass data (--data)")
        input_shape = tuple(int(s) for s in input_shape)
        base.input_shape = input_shape
        if splits is not None and tuple(splits.input_shape) != input_shape:
            raise BuildError(
                f"data {data} has samples of shape {tuple(splits.input_shape)} but the model takes "
                f"{input_shape}; resize the data or pick a matching model"
            )
        example = torch.zeros(1, *input_shape)
        try:
            with torch.no_grad():
                base(example)
        except Exception as e:  # a model that cannot run its own input shape is bad input, not our bug
            raise BuildError(
                f"model {report['model']} fails on an input of shape {tuple(example.shape)}: {str(e).splitlines()[0]}"
            ) from None
        if bench_runs > 0 and export_mod is not None:
            # import the runtime now: a Ctrl-C that lands inside a C extension's import surfaces as
            # an ImportError instead of KeyboardInterrupt, and the user would see a bogus bug report
            importlib.import_module("onnxruntime")
        if splits is None:
            skipped["recover"] = "no data given (--data): the pruned model is not fine-tuned"
            skipped["accuracy"] = "no data given (--data): accuracy is not measured"
        bar.done()

        # ---- baseline
        bar.start("baseline", "MACs, params, accuracy, estimate")
        stage("baseline")
        base_est = est_mod.estimate(base, profile, precision="fp32", threads=cores)
        base_acc = _accuracy(models_mod, base, splits.test if splits is not None else None)
        stages: list[dict[str, Any]] = []

        def stage_row(name, m, acc, precision, size_bytes, est=None):
            est = est or est_mod.estimate(m, profile, precision=precision, threads=cores)
            row = {
                "name": name,
                "precision": precision,
                "params": _params(m),
                "macs": est.macs,
                "size_bytes": int(size_bytes),
                "accuracy": None
                if acc is None
                else {
                    "metric": "top1",
                    "value": acc,
                    "delta_pts": None if base_acc is None else round(100.0 * (acc - base_acc), 4),
                },
                "estimate": {k: v for k, v in est.to_dict().items() if k != "layers"},
                "host_latency": None,
            }
            stages.append(row)
            return row

        stage_row("baseline", base, base_acc, "fp32", _params(base) * 4, base_est)
        bar.done()

        # ---- prune
        bar.start("prune", f"round_to={profile.deploy.channel_multiple}")
        pruned = base
        plan = None
        adaptive_log = None
        search_points: list[dict[str, Any]] = []
        if prune_mod is None:
            skipped["prune"] = "edgeprune.prune is not available in this build"
        else:
            stage("prune")
            round_to = int(profile.deploy.channel_multiple)

            # data-driven importances (taylor, gradient, activation) score on the calibration split
            imp_calib = calib_splits.train if importance in DATA_IMPORTANCES and calib_splits is not None else None

            def make(r):
                p = prune_mod.plan(
                    base, (example,), ratio=r, importance=importance, round_to=round_to, seed=seed, calib=imp_calib
                )
                return p, prune_mod.apply(base, p)

            search_mod = _mod("edgeprune.prune.search", "search", "Budget")
            budgeted = ratio is None
            use_adaptive = (
                budgeted and splits is not None and search_mod is not None and recover_epochs > 0 and search != "bisect"
            )
            if budgeted and search == "adaptive" and not use_adaptive:
                raise BuildError(
                    "search 'adaptive' needs data (--data), recovery epochs > 0 and "
                    "edgeprune.prune.search; use --search bisect"
                )
            if ratio is not None:
                plan, pruned = make(ratio)
                report["settings"]["chosen_ratio"] = ratio
            elif use_adaptive:
                # sensitivity scan -> allocation -> prune/recover steps with back-off (H5's search);
                # it recovers after every step, so the recover stage below has nothing left to do.
                kind = "macs" if budget_macs is not None else "latency"
                b = search_mod.Budget(
                    kind=kind,
                    value=float(budget_macs if kind == "macs" else budget_latency_ms),
                    target=target if isinstance(target, str) else profile.name,
                    precision=deploy_precision if deploy_precision in est_mod.PRECISIONS else "fp32",
                    threads=cores,
                )
                res = search_mod.search(
                    base,
                    splits,
                    example,
                    b,
                    max_acc_drop=1.0 if max_acc_drop is None else max_acc_drop,
                    steps=search_steps,
                    importance=importance,
                    round_to=round_to,
                    finetune_epochs=recover_epochs,
                    seed=seed,
                    progress=progress,
                )
                pruned, plan, adaptive_log = res.model, list(res.plans), res.log
                limit = adaptive_log["budget"]["limit"]
                report["settings"]["search"] = "adaptive"
                report["budget"] = {
                    "kind": "macs" if kind == "macs" else "latency_ms",
                    "value": limit,
                    "achieved": res.best["cost"],
                    "met": bool(res.met and res.best["cost"] <= limit),
                    "reason": res.reason,
                }
                report["search"] = _jsonable(adaptive_log)
                for row in adaptive_log["steps"]:
                    if row.get("accepted"):
                        search_points.append(
                            {
                                "label": f"step {row['step']} (val)",
                                "metric": row["val_recovered"],
                                "macs": row["cost"] if kind == "macs" else None,
                                "estimate_ms": row["cost"] if kind == "latency" else None,
                            }
                        )
                if not plan:
                    plan = None
            else:
                if budget_macs is not None:

                    def cost(m):
                        return float(est_mod.estimate(m, profile, precision="fp32", threads=cores).macs)

                    # <= 1 is a fraction of the unpruned model's MACs, > 1 an absolute count
                    budget = float(budget_macs) * base_est.macs if budget_macs <= 1 else float(budget_macs)
                else:

                    def cost(m):
                        return est_mod.estimate(m, profile, precision=deploy_precision, threads=cores).total_ms

                    budget = float(budget_latency_ms)
                r, plan, pruned, met, probes = _search_ratio(make, cost, budget, base, splits, models_mod)
                report["settings"]["chosen_ratio"] = r
                report["settings"]["search"] = "bisect"
                report["budget"] = {
                    "kind": "macs" if budget_macs is not None else "latency_ms",
                    "value": budget,
                    "achieved": cost(pruned),
                    "met": met,
                    "reason": "" if met else f"not reachable even at the maximum ratio {r:.2f}",
                    "search": probes,
                }
            if report.get("budget") and not report["budget"]["met"]:
                bar.log(
                    f"[yellow]warning:[/yellow] budget {report['budget']['value']:g} not met: "
                    f"{report['budget']['reason']}"
                )
            pruned.eval()
            if _channels(pruned) == _channels(base):
                # nothing removed (ratio 0, or the unpruned model already meets the budget): no
                # pruned stage to report, nothing to recover, the baseline is what ships
                report["nothing_pruned"] = (
                    "the unpruned model already meets the budget"
                    if report.get("budget")
                    else "the ratio removes no channel"
                )
                pruned, plan, adaptive_log = base, None, None
            elif adaptive_log is None:
                stage_row(
                    "pruned",
                    pruned,
                    _accuracy(models_mod, pruned, splits.test if splits is not None else None),
                    "fp32",
                    _params(pruned) * 4,
                )
            else:
                stage_row("recovered", pruned, _accuracy(models_mod, pruned, splits.test), "fp32", _params(pruned) * 4)
        bar.done()

        # ---- recover
        if adaptive_log is not None:
            recover_note = "(done inside the adaptive search)"
        else:
            recover_note = f"{recover_epochs} epochs" if splits is not None else "(no data)"
        bar.start("recover", recover_note)
        history = None
        if adaptive_log is not None:
            skipped["recover"] = "done after every step of the adaptive search"
            history = {"adaptive": True}
        elif splits is not None and plan is not None and recover_epochs > 0:
            if recover_mod is None:
                skipped["recover"] = "edgeprune.recover is not available in this build"
            else:
                stage("recover")
                pruned, history = recover_mod.finetune(
                    pruned, splits, epochs=recover_epochs, teacher=base, seed=seed, progress=progress
                )
                pruned.eval()
                stage_row("recovered", pruned, _accuracy(models_mod, pruned, splits.test), "fp32", _params(pruned) * 4)
        elif splits is not None and plan is not None:
            skipped["recover"] = "recover_epochs is 0"
        elif splits is not None and report.get("nothing_pruned"):
            skipped["recover"] = f"nothing was pruned: {report['nothing_pruned']}"
        bar.done()

        # ---- optional: the pruned shape trained from scratch (Liu et al., "Rethinking the Value
        # of Network Pruning"): if it matches prune + recover, the pruning found an architecture,
        # not useful weights. Not a deployed artifact; its numbers go to the report only.
        if scratch_epochs and splits is not None and plan is not None:
            import copy

            fresh = copy.deepcopy(pruned)
            torch.manual_seed(seed)
            for m in fresh.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
            bar.log(f"training the pruned shape from scratch for {scratch_epochs} epochs (comparison only)")
            fresh, scratch_metrics = models_mod.train(
                fresh, splits, epochs=scratch_epochs, seed=seed, progress=progress
            )
            scratch_acc = _accuracy(models_mod, fresh.eval(), splits.test)
            recovered_acc = _accuracy(models_mod, pruned, splits.test)
            report["scratch"] = {
                "epochs": scratch_epochs,
                "top1": scratch_acc,
                "prune_recover_top1": recovered_acc,
                "delta_pts": round(100.0 * (scratch_acc - recovered_acc), 4),
                "reference": "Liu et al. 2019, Rethinking the Value of Network Pruning",
            }
            stage("scratch")

        # ---- save
        bar.start("save", "model/")
        stage("save")
        meta = {
            "stage": "recovered" if history else ("pruned" if plan is not None else "baseline"),
            "target": profile.name,
            "seed": seed,
        }
        io_mod.save(pruned, tmp / "model", plan=plan, metadata=meta)
        bar.done()

        # ---- quantize
        bar.start("quantize", deploy_precision)
        qmodel = None
        wants_int8 = any(fmt_table.get(f).needs_quantized for f in formats) if fmt_table else False
        if wants_int8:
            if quant_mod is None:
                skipped["quantize"] = "edgeprune.quant is not available in this build"
            elif calib_splits is None:
                skipped["quantize"] = "no calibration data (--calib or --data): int8 formats are not written"
                formats = [f for f in formats if not fmt_table.get(f).needs_quantized]
            else:
                stage("quantize")
                quant_errors = tuple(
                    getattr(quant_mod, n)
                    for n in ("CalibrationError", "QuantizeError", "Int8UnsupportedError")
                    if hasattr(quant_mod, n)
                )
                try:
                    qmodel = quant_mod.quantize(
                        pruned,
                        calib_splits.train,
                        method="percentile",
                        per_channel=True,
                        target=profile,
                        progress=progress,
                    )
                except quant_errors as e:  # the model or the calibration data cannot give an int8 model
                    raise BuildError(
                        f"int8 quantization: {str(e).splitlines()[0]}; drop the int8 formats "
                        "(--formats onnx) or fix the calibration data"
                    ) from None
                q_acc = _accuracy(models_mod, qmodel.module, splits.test if splits is not None else None)
                stage_row("int8", pruned, q_acc, "int8", _params(pruned))
        bar.done()

        # ---- export
        bar.start("export", ", ".join(formats))
        artifacts: dict[str, Path] = {}
        if export_mod is None:
            skipped["export"] = "edgeprune.export is not available in this build"
        elif formats:
            stage("export")
            fp_formats = [f for f in formats if not fmt_table.get(f).needs_quantized]
            q_formats = [f for f in formats if f not in fp_formats]
            if fp_formats:
                artifacts.update(
                    export_mod.export(pruned, tmp, formats=fp_formats, example_inputs=(example,), target=profile)
                )
            if q_formats and qmodel is not None:
                artifacts.update(
                    export_mod.export(qmodel, tmp, formats=q_formats, example_inputs=(example,), target=profile)
                )
        bar.done()

        # deployed artifact: what the target runs (int8 / fp16 file if written, else fp32 ONNX)
        deployed_fmt = next((f for f in ("onnx-int8", "onnx-fp16", "onnx") if f in artifacts), None)
        if deployed_fmt == "onnx-fp16":
            fp16_path = artifacts["onnx-fp16"]
            stage_row("fp16", pruned, None, "fp16", fp16_path.stat().st_size)
        by_name = {s["name"]: s for s in stages}
        for fmt, stage_name in (
            ("onnx", "recovered" if "recovered" in by_name else "pruned"),
            ("onnx-int8", "int8"),
            ("onnx-fp16", "fp16"),
        ):
            if fmt in artifacts and stage_name in by_name:
                by_name[stage_name]["artifact"] = artifacts[fmt].name
                by_name[stage_name]["size_bytes"] = artifacts[fmt].stat().st_size
                if splits is not None:
                    by_name[stage_name]["onnx_accuracy"] = _onnx_accuracy(artifacts[fmt], splits.test)
                    if stage_name == "fp16":
                        by_name[stage_name]["accuracy"] = {
                            "metric": "top1",
                            "value": by_name[stage_name]["onnx_accuracy"],
                            "delta_pts": None
                            if base_acc is None
                            else round(100.0 * (by_name[stage_name]["onnx_accuracy"] - base_acc), 4),
                        }

        # ---- bench (host)
        bar.start("bench", f"host, {bench_runs} runs")
        if export_mod is not None and bench_runs > 0:
            stage("bench")
            base_onnx = export_mod.export(base, scratch, formats=["onnx"], example_inputs=(example,))["onnx"]
            to_time = [("baseline", base_onnx)]
            for fmt, stage_name in (
                ("onnx", "recovered" if "recovered" in by_name else "pruned"),
                ("onnx-int8", "int8"),
                ("onnx-fp16", "fp16"),
            ):
                if fmt in artifacts and stage_name in by_name:
                    to_time.append((stage_name, artifacts[fmt]))
            for stage_name, path in to_time:
                # isolated: each artifact's peak RSS is its own, not this torch-laden process's
                res = bench_mod.bench(
                    path,
                    runtime="onnxruntime",
                    threads=bench_threads,
                    warmup=bench_warmup,
                    runs=bench_runs,
                    layer_profile=False,
                    isolate=True,
                )
                d = res.to_dict()
                d["artifact"] = Path(path).name if stage_name != "baseline" else "unpruned model.onnx (not kept)"
                by_name[stage_name]["host_latency"] = d
                by_name[stage_name]["peak_rss_mb"] = d["peak_rss_mb"]
        else:
            skipped["bench"] = "no ONNX artifact to time" if export_mod is None else "bench_runs is 0"
        bar.done()

        # ---- estimate (already per stage); the deployed artifact's per-layer breakdown
        bar.start("estimate", profile.name)
        stage("estimate")
        # at the precision of what ships (the last stage), which is the profile's only when that
        # stage could be produced (no calibration data means no int8 file)
        shipped_precision = stages[-1]["precision"]
        dep_est = est_mod.estimate(pruned, profile, precision=shipped_precision, threads=cores)
        report["target_estimate"] = dep_est.to_dict()
        if getattr(profile, "gpu", None) is not None:
            gpu_prec = "int8" if shipped_precision == "int8" and profile.gpu.int8_tops else "fp16"
            gpu_est = est_mod.estimate(pruned, profile, precision=gpu_prec, device="gpu").to_dict()
            gpu_est.pop("layers")
            report["target_estimate_gpu"] = gpu_est
        bar.done()

        # ---- report
        bar.start("report", "report.json, report.md, plots")
        stage("report")
        before, after = _channels(base), _channels(pruned)
        report["layers"] = [{"name": n, "before": before[n], "after": after.get(n, before[n])} for n in before]
        plans = plan if isinstance(plan, list) else ([plan] if plan is not None else [])
        report["plan"] = (
            [p.to_dict() for p in plans] if isinstance(plan, list) else (plan.to_dict() if plan is not None else None)
        )
        report["recover_history"] = None if adaptive_log is not None else _jsonable(history)
        if search_points:
            # plots across steps: the unpruned model, each accepted search step (validation
            # metric), then the deployed stage (test metric)
            first, last = stages[0], stages[-1]
            report["steps"] = (
                [
                    {
                        "label": "baseline",
                        "macs": first["macs"],
                        "metric": (first["accuracy"] or {}).get("value"),
                        "estimate_ms": first["estimate"]["total_ms"],
                    }
                ]
                + search_points
                + [
                    {
                        "label": last["name"],
                        "macs": last["macs"],
                        "metric": (last["accuracy"] or {}).get("value"),
                        "estimate_ms": last["estimate"]["total_ms"],
                    }
                ]
            )
        report["stages"] = stages
        final = stages[-1]
        report["deployed"] = {
            "stage": final["name"],
            "artifact": artifacts[deployed_fmt].name if deployed_fmt else None,
            "precision": final["precision"],
        }
        if max_acc_drop is not None:
            final_acc = (final.get("accuracy") or {}).get("value")
            drop = 100.0 * (base_acc - final_acc) if final_acc is not None and base_acc is not None else None
            report["gate"] = {
                "max_acc_drop": max_acc_drop,
                "drop_pts": None if drop is None else round(drop, 4),
                "stage": final["name"],
                "passed": drop is not None and drop <= max_acc_drop + 1e-9,
            }
        deploy: dict[str, Any] = {"notes": [], "bench": []}
        if deployed_fmt:
            art = artifacts[deployed_fmt].name
            deploy["notes"].append(
                f"copy `{art}` to the {profile.name} and run it with one of: {', '.join(profile.deploy.runtimes)}"
            )
            flags = f"--runtime onnxruntime --threads {cores} --target {profile.name} --json bench-{profile.name}.json"
            deploy["bench"].append(f"edgeprune bench {art} {flags}")
            deploy["bench"].append(
                f"# without torch on the device (numpy + onnxruntime + edgeprune only):\n"
                f"python -m edgeprune.cli.bench {art} {flags}"
            )
            trt_art = artifacts.get("onnx-int8") or artifacts.get("onnx-fp16") or artifacts.get("onnx")
            trt = None
            if trt_art is not None:
                input_name, dynamic = _onnx_input(trt_art)
                trt = trtexec_command(profile, trt_art.name, input_name, input_shape, dynamic_batch=dynamic)
            if trt:
                deploy["trtexec"] = trt
                deploy["notes"].append(
                    f"TensorRT {profile.gpu.tensorrt} builds engines on the device only: `{trt_art.name}` is "
                    + (
                        "int8 with symmetric Q/DQ (explicit quantization, no calibration cache needed)"
                        if trt_art.name.endswith(".int8.onnx")
                        else "the fp16 network (this GPU has no int8 path)"
                    )
                    + "; the target estimates above are for the CPU, trtexec gives the GPU number"
                )
        report["deploy"] = deploy
        report["artifacts"] = {}  # filled below, once every file exists
        plots = report_mod.write_plots(report, tmp / "plots")
        report["plots"] = [f"plots/{k}" for k in sorted(plots)]
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        report["artifacts"] = {str(p.relative_to(tmp)): {"size_bytes": p.stat().st_size} for p in files}
        fsutil.write_json(tmp / "report.json", report)
        fsutil.write_text(tmp / "report.md", report_mod.render_markdown(report))
        manifest = {
            "format": "edgeprune-build",
            "manifest_version": REPORT_VERSION,
            "edgeprune_version": __version__,
            "versions": _versions(),
            "target": profile.name,
            "target_profile": profile.to_dict(),
            "model": report["model"],
            "seed": seed,
            "command_line": " ".join(shlex.quote(a) for a in command_line) if command_line else None,
            "stages_ran": ran,
            "files": {},
        }
        for p in sorted(q for q in tmp.rglob("*") if q.is_file()):
            rel = str(p.relative_to(tmp))
            manifest["files"][rel] = {
                "sha256": _sha256(p),
                "size_bytes": p.stat().st_size,
                "timings": rel in TIMING_FILES,
            }
        fsutil.write_json(tmp / "manifest.json", manifest)
        _publishable(tmp)
        bar.done()
    return BuildResult(out_dir=out, report=report, manifest=manifest)


def _search_ratio(make, cost, budget, base, splits, models_mod, lo=0.0, hi=0.9, iters=7):
    """Smallest ratio (within 1/2^iters of [lo, hi]) whose pruned model costs <= budget.

    Returns (ratio, plan, model, met, steps); steps record each probe (ratio, cost, val accuracy).
    """
    steps = []

    def probe(r):
        plan, model = make(r)
        c = cost(model)
        acc = _accuracy(models_mod, model.eval(), splits.val) if splits is not None else None
        steps.append({"ratio": round(r, 6), "cost": c, "val_top1": acc})
        return plan, model, c

    if cost(base) <= budget:
        plan, model, _ = probe(lo)
        return lo, plan, model, True, steps
    best = None
    plan, model, c = probe(hi)
    if c > budget:
        return hi, plan, model, False, steps
    best = (hi, plan, model)
    for _ in range(iters):
        mid = (lo + hi) / 2
        plan, model, c = probe(mid)
        if c <= budget:
            hi, best = mid, (mid, plan, model)
        else:
            lo = mid
    return best[0], best[1], best[2], True, steps


def _jsonable(obj):
    if obj is None:
        return None
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def summary(result: BuildResult) -> list[list[str]]:
    """The summary rows the CLI prints (same as report.md's table)."""
    return importlib.import_module("edgeprune.report").summary_rows(result.report)
