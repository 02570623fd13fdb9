"""``build()``: the whole job in one call: prune, recover, quantize, export, measure, estimate, report.

Consumes: a ``BuildSpec`` (or ``build``'s keyword arguments, which make one): a model (spec
string or ``nn.Module``), a target profile (name, path or ``TargetProfile``), optional weights,
data and calibration specs, a pruning goal (``ratio``, ``budget_macs`` or ``budget_latency_ms``),
an accuracy gate, export formats, a seed; optionally a ``BuildEvents`` listener for progress.
Produces: the output directory of docs/architecture.md (Outputs), written into a temporary
directory next to ``out_dir`` and renamed over it at the end (an interrupted build leaves
nothing under the final name)::

    model/             the pruned (and recovered) model, ep.save format (plan inside)
    model.onnx ...     one file per export format (model.int8.onnx, model.fp16.onnx, ...)
    report.json        per stage: params, MACs, size, accuracy, host latency, target estimate
    report.md          the same for humans, with the deploy / trtexec / bench commands
    plots/*.png        accuracy vs MACs, accuracy vs estimated latency, channels per layer
    manifest.json      sha256 of every file, versions, target, seed, command line

The build is a list of stages (``STAGES``), each a small function over one ``BuildState``; the
``stage`` context around each reports progress, times it and names the stage an interrupt hit.
Everything except the host timings is a pure function of the inputs and the seed: the files
holding timings (``report.json``, ``report.md``) are flagged ``"timings": true`` in the
manifest; every other file hashes the same on a rerun.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from . import fsutil
from ._version import __version__
from .errors import UserError
from .progress import Progress

# Files whose bytes depend on host timings; every other artifact must reproduce bit for bit.
TIMING_FILES = ("report.json", "report.md")
# Bumped when a key of report.json / manifest.json changes meaning or goes away.
REPORT_VERSION = 1
STAGES = ("load", "baseline", "prune", "recover", "save", "quantize", "export", "bench", "estimate", "report")
# The deployed file is the most compressed precision written; within one precision the profile's order wins.
_PRECISION_RANK = {"int8": 0, "fp16": 1, "fp32": 2}
_PRECISION_STAGE = {"int8": "int8", "fp16": "fp16"}  # fp32 files belong to the pruned/recovered stage

# Kept for API compatibility: every bad input is a UserError (edgeprune.errors), the CLI exits 2.
BuildError = UserError


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


# ----------------------------------------------------------------------------- progress
class BuildEvents:
    """What a build reports while it runs; the default ignores everything.

    The CLI renders these (a bar on a terminal, one line per stage in logs); library code never
    prints. ``index`` counts from 1 to ``total`` over ``STAGES``.
    """

    def stage_started(self, name: str, detail: str, index: int, total: int) -> None:
        pass

    def stage_finished(self, name: str, seconds: float) -> None:
        pass

    def stage_interrupted(self, name: str) -> None:
        pass

    def note(self, text: str) -> None:
        """A line for the user (a warning or what a long step is doing)."""


# ----------------------------------------------------------------------------- spec
def _where(flag: str, value, err: Exception) -> str:
    """One line naming the bad input once (the lower layers' messages often name it already)."""
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    return msg if str(value) in msg else f"{flag} {value}: {msg}"


@dataclasses.dataclass
class BuildSpec:
    """Every input of one build; ``validate()`` checks them all before anything is loaded or written.

    The fields are ``build``'s keyword arguments (see its docstring). ``validate(names)`` names each
    bad input by ``names.get(field, field)``, so the CLI's messages say ``--epochs`` where the
    API's say ``recover_epochs``.
    """

    model: Any
    target: Any
    out_dir: Any
    weights: Any = None
    trust_pickle: bool = False
    data: Any = None
    calib: Any = None
    ratio: float | None = None
    budget_macs: float | None = None
    budget_latency_ms: float | None = None
    max_acc_drop: float | None = None
    formats: list[str] | None = None
    importance: str = "l2"
    recover_epochs: int = 3
    search: str = "auto"
    search_steps: int = 3
    scratch_epochs: int = 0
    seed: int = 0
    bench_runs: int = 20
    bench_warmup: int = 3
    bench_threads: int = 1
    train_threads: int | None = 1
    force: bool = False
    command_line: list[str] | None = None
    # measure every artifact on this device over SSH too (edgeprune.remote): [user@]host[:port]
    device: str | None = None
    identity: Any = None
    ssh_options: list[str] | None = None
    remote_python: str = "python3"

    @property
    def goal_ratio(self) -> float | None:
        """The channel ratio to prune at: ``ratio``, or 0.5 when no goal at all is given."""
        if self.ratio is None and self.budget_macs is None and self.budget_latency_ms is None:
            return 0.5
        return self.ratio

    def validate(self, names: Mapping[str, str] | None = None) -> None:
        """Raise ``UserError`` (one line) on the first bad input; return None when all are good."""

        def n(field: str) -> str:
            return (names or {}).get(field, field)

        self._check_numbers(n)
        self._check_out(n)
        self._check_importance(n)
        if self.device is not None:
            from .remote import parse_device

            parse_device(self.device)  # a malformed --device fails before the build starts
        self.resolve_formats(self.load_target(n), n)

    def _check_numbers(self, n) -> None:
        goals = [g for g in ("ratio", "budget_macs", "budget_latency_ms") if getattr(self, g) is not None]
        if len(goals) > 1:
            raise UserError(f"give only one of {', '.join(n(g) for g in goals)}")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise UserError(
                f"{n('ratio')} {self.ratio} is outside [0, 1); e.g. {n('ratio')} 0.5 removes half the channels"
            )
        if self.budget_macs is not None and self.budget_macs <= 0:
            raise UserError(
                f"{n('budget_macs')} {self.budget_macs} must be > 0 (a MAC count such as 2e6, or a fraction such as 0.5)"
            )
        if self.budget_latency_ms is not None and self.budget_latency_ms <= 0:
            raise UserError(f"{n('budget_latency_ms')} {self.budget_latency_ms} must be > 0")
        if self.search not in ("auto", "adaptive", "bisect"):
            raise UserError(f"{n('search')} {self.search!r} is not one of auto, adaptive, bisect")
        for field, low in (
            ("recover_epochs", 0),
            ("bench_runs", 0),
            ("scratch_epochs", 0),
            ("bench_threads", 1),
            ("search_steps", 1),
        ):
            if getattr(self, field) < low:
                raise UserError(f"{n(field)} {getattr(self, field)} must be >= {low}")
        if self.search == "adaptive" and self.goal_ratio is None and (self.data is None or self.recover_epochs == 0):
            raise UserError("search 'adaptive' needs data (--data) and recovery epochs > 0; use --search bisect")
        if self.max_acc_drop is not None and self.max_acc_drop < 0:
            raise UserError(f"{n('max_acc_drop')} {self.max_acc_drop} must be >= 0 (percentage points)")
        if self.max_acc_drop is not None and self.data is None:
            raise UserError(f"{n('max_acc_drop')} needs {n('data')} to measure accuracy on; e.g. {n('data')} digits")

    def _check_out(self, n) -> None:
        out = Path(self.out_dir)
        if out.exists() and not out.is_dir():
            raise UserError(f"{n('out_dir')} {out} exists and is not a directory; choose another path")
        if out.is_dir() and any(out.iterdir()) and not self.force:
            raise UserError(
                f"{n('out_dir')} {out} is not empty; pass {n('force')} to replace it or choose another directory"
            )
        # replacing --out must not delete what the build reads
        given = (self.model, self.weights, self.data, self.calib, self.target, self.identity)
        inputs = [str(v) for v in given if isinstance(v, (str, os.PathLike)) and str(v) and os.path.exists(v)]
        try:
            fsutil.check_out_dir(out, True, inputs)
        except fsutil.OutputError as e:
            raise UserError(f"{n('out_dir')} {e}") from None

    def _check_importance(self, n) -> None:
        from .prune.importance import names as importance_names
        from .prune.importance import needs_data

        if self.importance not in importance_names():
            raise UserError(
                f"{n('importance')} {self.importance!r} is unknown; choose one of {', '.join(importance_names())}"
            )
        if needs_data(self.importance) and self.data is None and self.calib is None:
            raise UserError(
                f"{n('importance')} {self.importance} scores channels on data; pass {n('data')} or {n('calib')}"
            )

    def load_target(self, n: Callable[[str], str] = str):
        """The target's ``TargetProfile`` (loaded from its name or path)."""
        from . import targets

        if hasattr(self.target, "deploy"):
            return self.target
        try:
            return targets.load(self.target)
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise UserError(_where(n("target"), self.target, e)) from None

    def resolve_formats(self, profile, n: Callable[[str], str] = str) -> tuple[list[str], list[str]]:
        """(formats to write, formats the profile wants that this build has no writer for)."""
        from .export import formats as table

        available = table.names()
        if self.formats is None:
            want, missing = default_formats(profile, available)
        else:
            want, missing = list(self.formats), []
            unknown = [f for f in want if f not in available]
            if unknown:
                raise UserError(
                    f"{n('formats')} {', '.join(unknown)} are not available; choose from {', '.join(available)}"
                )
            int8_asked = [f for f in want if table.get(f).needs_quantized]
            if int8_asked and self.data is None and self.calib is None:
                raise UserError(
                    f"{n('formats')} {', '.join(int8_asked)} need calibration data; pass {n('calib')} or "
                    f"{n('data')}, e.g. {n('calib')} digits"
                )
        int8 = [f for f in want if table.get(f).precision == "int8"]
        if profile.deploy.precision == "fp16" and int8:
            raise UserError(
                f"target {profile.name} has no int8 path (fp16 only); drop {', '.join(int8)} from the formats"
            )
        return want, missing


def _onnx_format(precision: str) -> str | None:
    """The name of the first ONNX format of ``precision`` in the format table (None if there is none)."""
    from .export import formats as table

    return next((f for f in table.of_family("onnx") if table.get(f).precision == precision), None)


def default_formats(profile, available: Iterable[str]) -> tuple[list[str], list[str]]:
    """(formats to write, formats the profile wants that this build cannot write).

    Always the fp32 ONNX; then the profile's deploy formats; then the ONNX file of the profile's
    deploy precision if not there yet (Jetson Nano, fp16 GPU and no int8, gets the fp16 ONNX
    TensorRT builds from).
    """
    available = list(available)
    want = [_onnx_format("fp32")]
    for f in profile.deploy.formats:
        if f not in want:
            want.append(f)
    extra = _onnx_format(profile.deploy.precision)
    if extra is not None and extra not in want:
        want.append(extra)
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


# ----------------------------------------------------------------------------- helpers
def _publishable(root: Path) -> None:
    """Give the build directory the permissions plain mkdir/open would (umask applied).

    fsutil writes through mkstemp/mkdtemp (mode 0600/0700, right for temporaries); the build
    output is meant to be copied to a device or shared, so it gets the ordinary modes.
    """
    umask = os.umask(0)
    os.umask(umask)
    for p in [root, *root.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


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
        try:
            mod = sys.modules.get(name) or importlib.import_module(name)
        except ImportError:  # an optional dependency this install lacks: nothing to record
            continue
        v[name] = getattr(mod, "__version__", "?")
    return v


def _accuracy(model, dataset) -> float | None:
    from . import models

    if dataset is None:
        return None
    return float(models.evaluate(model, dataset, metric="top1")["top1"])


def _onnx_input(path: Path) -> tuple[str, bool]:
    """(name of the first graph input, whether any of its dims is symbolic)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    inp = next(i for i in m.graph.input if i.name not in inits)
    return inp.name, any(d.dim_param or not d.dim_value for d in inp.type.tensor_type.shape.dim)


def _jsonable(obj):
    if obj is None:
        return None
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# ----------------------------------------------------------------------------- state
@dataclasses.dataclass
class BuildState:
    """What the stages hand each other. Each stage reads the fields earlier stages set."""

    spec: BuildSpec
    profile: Any
    formats: list[str]
    events: BuildEvents
    on_stage: Callable[[str], None] | None = None
    bars: Progress | bool = False  # told of the lower layers' loops (training, recovery, calibration)
    tmp: Path | None = None  # the output directory being written
    scratch: Path | None = None  # files that are not artifacts
    report: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    ran: list[str] = dataclasses.field(default_factory=list)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    index: int = 0
    splits: Any = None
    calib_splits: Any = None
    calib_inputs: Any = None  # batches of named inputs (token models), when --calib is such an .npz
    base: Any = None
    example: Any = None
    input_shape: tuple[int, ...] | None = None
    base_est: Any = None
    base_acc: float | None = None
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    pruned: Any = None
    plan: Any = None  # None, one PrunePlan, or the list of the adaptive search's steps
    adaptive_log: dict | None = None
    search_points: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    history: Any = None
    qmodel: Any = None
    artifacts: dict[str, Path] = dataclasses.field(default_factory=dict)
    lowering_error: Exception | None = None  # why the TFLite files were skipped, if they were
    manifest: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def cores(self) -> int:
        return int(self.profile.cpu.cores)

    @property
    def test_split(self):
        return self.splits.test if self.splits is not None else None

    def ran_stage(self, name: str) -> None:
        """Record that ``name`` did its work (``report["stages_ran"]``, ``on_stage``)."""
        self.ran.append(name)
        if self.on_stage:
            self.on_stage(name)

    @property
    def tokens(self) -> dict | None:
        """The keyword example inputs of a token model, None for a model of one image input."""
        return self.example if isinstance(self.example, dict) else None

    def estimate(self, model, precision: str):
        from .estimate import estimate

        return estimate(model, self.profile, precision=precision, threads=self.cores, example_inputs=self.tokens)

    def add_row(self, name, model, acc, precision, size_bytes, est=None) -> dict[str, Any]:
        """Append one row of ``report["stages"]``: params, MACs, size, accuracy, target estimate."""
        est = est or self.estimate(model, precision)
        row = {
            "name": name,
            "precision": precision,
            "params": _params(model),
            "macs": est.macs,
            "size_bytes": int(size_bytes),
            "accuracy": None if acc is None else {"metric": "top1", "value": acc, "delta_pts": self.delta(acc)},
            "estimate": {k: v for k, v in est.to_dict().items() if k != "layers"},
            "host_latency": None,
        }
        self.rows.append(row)
        return row

    def delta(self, acc: float) -> float | None:
        return None if self.base_acc is None else round(100.0 * (acc - self.base_acc), 4)

    def row(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["name"] == name), None)


@contextlib.contextmanager
def stage(state: BuildState, name: str, detail: str = ""):
    """One step of the build: announce it to the listener, time it, and name it if an interrupt lands in it."""
    state.index += 1
    state.events.stage_started(name, detail, state.index, len(STAGES))
    t0 = time.perf_counter()
    try:
        yield
    except KeyboardInterrupt:
        state.events.stage_interrupted(name)
        raise
    state.seconds[name] = round(time.perf_counter() - t0, 3)
    state.events.stage_finished(name, state.seconds[name])


# ----------------------------------------------------------------------------- stages
def _load_data(state: BuildState) -> None:
    from . import data as data_mod

    spec = state.spec
    for field in ("data", "calib"):
        value = getattr(spec, field)
        if value is None:
            continue
        try:
            if field == "calib" and isinstance(value, str) and data_mod.is_named_inputs(value):
                # an .npz of named model inputs (input_ids, attention_mask): calibration only
                from .quant import inputs as model_inputs

                state.calib_inputs = model_inputs.split(data_mod.load_inputs(value), 32)
                continue
            splits = value if hasattr(value, "train") else data_mod.load(value, seed=spec.seed)
        except (FileNotFoundError, ValueError, ImportError) as e:
            raise UserError(_where(field, value, e)) from None
        setattr(state, "splits" if field == "data" else "calib_splits", splits)
    if spec.calib is None:
        state.calib_splits = state.splits
    if state.calib_inputs is not None and state.splits is not None:
        raise UserError(
            f"calib {spec.calib}: holds named model inputs, for token models built without --data; "
            "calibrate an image model on its dataset"
        )


def _build_model(state: BuildState):
    from . import models

    spec, splits = state.spec, state.splits
    if not isinstance(spec.model, str):
        return spec.model
    try:
        kwargs = {}
        if splits is not None and spec.model.startswith("edgeprune:"):
            # built-ins are sized to the data (classes, input channels) when they accept it
            kwargs = {"num_classes": splits.num_classes, "in_channels": splits.input_shape[0]}
        try:
            return models.build(spec.model, **kwargs)
        except TypeError:
            return models.build(spec.model)
    except (ValueError, FileNotFoundError, ImportError) as e:
        raise UserError(_where("model", spec.model, e)) from None


def example_args(example):
    """The example input as ``export``/``plan`` take it: a 1-tuple for a tensor, a dict of keyword
    inputs (token models) as it is."""
    return example if isinstance(example, dict) else (example,)


def load_stage(state: BuildState) -> None:
    """Data splits, the model (with its weights) and one example input it runs on."""
    import torch

    from . import models
    from .models.hf_dir import token_inputs

    spec = state.spec
    state.ran_stage("load")
    torch.manual_seed(spec.seed)
    _load_data(state)
    base = _build_model(state)
    if spec.weights is not None:
        try:
            models.load_weights(base, spec.weights, trust_pickle=spec.trust_pickle)
        except ValueError as e:
            raise UserError(_where("weights", spec.weights, e)) from None
    base.eval()
    splits = state.splits
    shape = getattr(base, "input_shape", None) or (splits.input_shape if splits is not None else None)
    tokens = token_inputs(base) if shape is None else None  # a transformers token model
    if tokens is not None and state.calib_inputs is not None:
        # the first calibration sample: the names and sequence length the files are written for
        tokens = {k: v[:1] for k, v in state.calib_inputs[0].items()}
    if tokens is not None:  # a transformers token model: it prunes, exports and is timed on token ids
        if state.calib_splits is not None:
            raise UserError(
                f"calib {spec.calib}: a token model calibrates on an .npz of its named inputs (input_ids, "
                "attention_mask, ...), not on a labelled dataset"
            )
        try:
            with torch.no_grad():
                base(**tokens)
        except Exception as e:  # a model that cannot run its own config's inputs is bad input
            shapes = {k: tuple(v.shape) for k, v in tokens.items()}
            raise UserError(
                f"model {state.report['model']} fails on the inputs {shapes}: {str(e).splitlines()[0]}; "
                "give --calib an .npz of inputs it takes"
            ) from None
        if spec.bench_runs > 0:
            importlib.import_module("onnxruntime")
        state.skipped["recover"] = "a token model: recovery needs a labelled image dataset"
        state.skipped["accuracy"] = "a token model: accuracy is not measured"
        state.base, state.example, state.input_shape = base, tokens, None
        return
    if shape is None:
        raise UserError("the model has no input_shape and no data was given to take it from; pass data (--data)")
    shape = tuple(int(s) for s in shape)
    base.input_shape = shape
    if splits is not None and tuple(splits.input_shape) != shape:
        raise UserError(
            f"data {spec.data} has samples of shape {tuple(splits.input_shape)} but the model takes "
            f"{shape}; resize the data or pick a matching model"
        )
    example = torch.zeros(1, *shape)
    try:
        with torch.no_grad():
            base(example)
    except Exception as e:  # a model that cannot run its own input shape is bad input, not our bug
        raise UserError(
            f"model {state.report['model']} fails on an input of shape {tuple(example.shape)}: {str(e).splitlines()[0]}"
        ) from None
    if spec.bench_runs > 0:
        # import the runtime of the baseline timing now: a Ctrl-C that lands inside a C extension's
        # import surfaces as an ImportError instead of KeyboardInterrupt, and the user would see a
        # bogus bug report
        importlib.import_module("onnxruntime")
    if splits is None:
        state.skipped["recover"] = "no data given (--data): the pruned model is not fine-tuned"
        state.skipped["accuracy"] = "no data given (--data): accuracy is not measured"
    state.base, state.example, state.input_shape = base, example, shape


def baseline_stage(state: BuildState) -> None:
    """MACs, params, accuracy and target estimate of the unpruned model."""
    state.ran_stage("baseline")
    state.base_est = state.estimate(state.base, "fp32")
    state.base_acc = _accuracy(state.base, state.test_split)
    state.add_row("baseline", state.base, state.base_acc, "fp32", _params(state.base) * 4, state.base_est)


def _make_pruner(state: BuildState):
    """``make(ratio) -> (plan, pruned model)`` for the bisecting search and a fixed ratio."""
    from . import prune

    spec = state.spec
    round_to = int(state.profile.deploy.channel_multiple)
    # data-driven importances (taylor, gradient, activation) score on the calibration split
    from .prune.importance import needs_data

    use_calib = needs_data(spec.importance) and state.calib_splits is not None
    imp_calib = state.calib_splits.train if use_calib else None

    def make(r):
        p = prune.plan(
            state.base,
            example_args(state.example),
            ratio=r,
            importance=spec.importance,
            round_to=round_to,
            seed=spec.seed,
            calib=imp_calib,
        )
        return p, prune.apply(state.base, p)

    return make


def _adaptive_search(state: BuildState) -> None:
    """Sensitivity scan -> allocation -> prune/recover steps with back-off (``edgeprune.prune.search``);
    it recovers after every step, so the recover stage has nothing left to do."""
    from .estimate import PRECISIONS
    from .prune import search

    spec, precision = state.spec, state.profile.deploy.precision
    kind = "macs" if spec.budget_macs is not None else "latency"
    budget = search.Budget(
        kind=kind,
        value=float(spec.budget_macs if kind == "macs" else spec.budget_latency_ms),
        target=spec.target if isinstance(spec.target, str) else state.profile.name,
        precision=precision if precision in PRECISIONS else "fp32",
        threads=state.cores,
    )
    res = search.search(
        state.base,
        state.splits,
        state.example,
        budget,
        max_acc_drop=1.0 if spec.max_acc_drop is None else spec.max_acc_drop,
        steps=spec.search_steps,
        importance=spec.importance,
        round_to=int(state.profile.deploy.channel_multiple),
        finetune_epochs=spec.recover_epochs,
        seed=spec.seed,
        progress=state.bars,
    )
    state.pruned, state.plan, state.adaptive_log = res.model, list(res.plans) or None, res.log
    limit = res.log["budget"]["limit"]
    state.report["settings"]["search"] = "adaptive"
    state.report["budget"] = {
        "kind": "macs" if kind == "macs" else "latency_ms",
        "value": limit,
        "achieved": res.best["cost"],
        "met": bool(res.met and res.best["cost"] <= limit),
        "reason": res.reason,
    }
    state.report["search"] = _jsonable(res.log)
    for row in res.log["steps"]:
        if row.get("accepted"):
            state.search_points.append(
                {
                    "label": f"step {row['step']} (val)",
                    "metric": row["val_recovered"],
                    "macs": row["cost"] if kind == "macs" else None,
                    "estimate_ms": row["cost"] if kind == "latency" else None,
                }
            )


def macs_cost(model, example_inputs) -> float:
    """The MACs a budget search counts: ``edgeprune.prune.count_macs_params``, the one counter
    the adaptive search (``prune.search.Budget``) uses too."""
    from .prune import count_macs_params

    return float(count_macs_params(model, example_inputs)[0])


def _bisect_search(state: BuildState, make) -> None:
    """One global ratio bisected until the estimator says the budget is met."""
    spec = state.spec
    if spec.budget_macs is not None:

        def cost(m):
            return macs_cost(m, state.example)

        # <= 1 is a fraction of the unpruned model's MACs, > 1 an absolute count
        base_macs = macs_cost(state.base, state.example)
        budget = float(spec.budget_macs) * base_macs if spec.budget_macs <= 1 else float(spec.budget_macs)
    else:

        def cost(m):
            return state.estimate(m, state.profile.deploy.precision).total_ms

        budget = float(spec.budget_latency_ms)
    r, state.plan, state.pruned, met, probes = _search_ratio(make, cost, budget, state.base, state.splits)
    state.report["settings"]["chosen_ratio"] = r
    state.report["settings"]["search"] = "bisect"
    state.report["budget"] = {
        "kind": "macs" if spec.budget_macs is not None else "latency_ms",
        "value": budget,
        "achieved": cost(state.pruned),
        "met": met,
        "reason": "" if met else f"not reachable even at the maximum ratio {r:.2f}",
        "search": probes,
    }


def prune_stage(state: BuildState) -> None:
    """A fixed ratio, the adaptive search or the bisecting one, per the spec's goal."""
    spec = state.spec
    state.ran_stage("prune")
    make = _make_pruner(state)
    ratio = spec.goal_ratio
    use_adaptive = ratio is None and state.splits is not None and spec.recover_epochs > 0 and spec.search != "bisect"
    if ratio is not None:
        state.plan, state.pruned = make(ratio)
        state.report["settings"]["chosen_ratio"] = ratio
    elif use_adaptive:
        _adaptive_search(state)
    else:
        _bisect_search(state, make)
    budget = state.report.get("budget")
    if budget and not budget["met"]:
        state.events.note(f"warning: budget {budget['value']:g} not met: {budget['reason']}")
    state.pruned.eval()
    if _channels(state.pruned) == _channels(state.base):
        # nothing removed (ratio 0, or the unpruned model already meets the budget): no
        # pruned stage to report, nothing to recover, the baseline is what ships
        state.report["nothing_pruned"] = (
            "the unpruned model already meets the budget" if budget else "the ratio removes no channel"
        )
        state.pruned, state.plan, state.adaptive_log = state.base, None, None
        return
    name = "pruned" if state.adaptive_log is None else "recovered"
    acc = _accuracy(state.pruned, state.test_split)
    state.add_row(name, state.pruned, acc, "fp32", _params(state.pruned) * 4)


def recover_stage(state: BuildState) -> None:
    """Fine-tune the pruned model with the unpruned one as teacher (when there is data and a plan)."""
    from . import recover

    spec, splits = state.spec, state.splits
    if state.adaptive_log is not None:
        state.skipped["recover"] = "done after every step of the adaptive search"
        state.history = {"adaptive": True}
    elif splits is not None and state.plan is not None and spec.recover_epochs > 0:
        state.ran_stage("recover")
        state.pruned, state.history = recover.finetune(
            state.pruned, splits, epochs=spec.recover_epochs, teacher=state.base, seed=spec.seed, progress=state.bars
        )
        state.pruned.eval()
        acc = _accuracy(state.pruned, splits.test)
        state.add_row("recovered", state.pruned, acc, "fp32", _params(state.pruned) * 4)
    elif splits is not None and state.plan is not None:
        state.skipped["recover"] = "recover_epochs is 0"
    elif splits is not None and state.report.get("nothing_pruned"):
        state.skipped["recover"] = f"nothing was pruned: {state.report['nothing_pruned']}"


def scratch_stage(state: BuildState) -> None:
    """The pruned shape trained from random weights (Liu et al., "Rethinking the Value of Network
    Pruning"): if it matches prune + recover, the pruning found an architecture, not useful
    weights. Not a deployed artifact; its numbers go to the report only."""
    import torch

    from . import models

    spec = state.spec
    fresh = copy.deepcopy(state.pruned)
    torch.manual_seed(spec.seed)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    state.events.note(f"training the pruned shape from scratch for {spec.scratch_epochs} epochs (comparison only)")
    fresh, _ = models.train(fresh, state.splits, epochs=spec.scratch_epochs, seed=spec.seed, progress=state.bars)
    scratch_acc = _accuracy(fresh.eval(), state.splits.test)
    recovered_acc = _accuracy(state.pruned, state.splits.test)
    state.report["scratch"] = {
        "epochs": spec.scratch_epochs,
        "top1": scratch_acc,
        "prune_recover_top1": recovered_acc,
        "delta_pts": round(100.0 * (scratch_acc - recovered_acc), 4),
        "reference": "Liu et al. 2019, Rethinking the Value of Network Pruning",
    }
    state.ran_stage("scratch")


def save_stage(state: BuildState) -> None:
    """``model/``: the pruned (and recovered) model with its plan, in ep.save format."""
    from . import io

    state.ran_stage("save")
    meta = {
        "stage": "recovered" if state.history else ("pruned" if state.plan is not None else "baseline"),
        "target": state.profile.name,
        "seed": state.spec.seed,
    }
    io.save(state.pruned, state.tmp / "model", plan=state.plan, metadata=meta)


def _formats(state: BuildState) -> list:
    from .export import formats as table

    return [table.get(f) for f in state.formats]


def quantize_stage(state: BuildState) -> None:
    """The int8 model the int8 formats are written from (calibrated on the calibration split)."""
    from . import quant

    if not any(f.needs_quantized for f in _formats(state)):
        return
    if state.calib_splits is None and state.calib_inputs is None:
        state.skipped["quantize"] = "no calibration data (--calib or --data): int8 formats are not written"
        state.formats = [f.name for f in _formats(state) if not f.needs_quantized]
        return
    state.ran_stage("quantize")
    try:
        state.qmodel = quant.quantize(
            state.pruned,
            state.calib_inputs if state.calib_inputs is not None else state.calib_splits.train,
            method="percentile",
            per_channel=True,
            target=state.profile,
            progress=state.bars,
        )
    except UserError as e:  # the model or the calibration data cannot give an int8 model
        raise UserError(
            f"int8 quantization: {str(e).splitlines()[0]}; drop the int8 formats "
            "(--formats onnx) or fix the calibration data"
        ) from None
    q_acc = _accuracy(state.qmodel.module, state.test_split)
    state.add_row("int8", state.pruned, q_acc, "int8", _params(state.pruned))


def _ordered(state: BuildState, names: Iterable[str]) -> list[str]:
    """``names`` with the most compressed precision first, then in the profile's preference order."""
    from .export import formats as table

    prefer = list(state.profile.deploy.formats)
    names = list(names)

    def key(name):
        rank = _PRECISION_RANK.get(table.get(name).precision, len(_PRECISION_RANK))
        return rank, prefer.index(name) if name in prefer else len(prefer), names.index(name)

    return sorted(names, key=key)


def _row_of(state: BuildState, fmt) -> dict[str, Any] | None:
    """The report row a written file belongs to (fp32 files: the pruned or recovered model)."""
    name = _PRECISION_STAGE.get(fmt.precision) or ("recovered" if state.row("recovered") else "pruned")
    return state.row(name)


def _file_accuracy(state: BuildState, fmt, path: Path) -> float | None:
    """Top-1 of the written file itself, or None (with the reason in ``stages_skipped``)."""
    from .export import evaluate_file
    from .export.formats import FAMILIES

    if fmt.family not in FAMILIES:
        state.skipped[f"accuracy {fmt.name}"] = f"no accuracy check for {fmt.family} files yet"
        return None
    acc = evaluate_file(path, state.splits.test)
    if acc is None:
        state.skipped[f"accuracy {fmt.name}"] = f"the {fmt.runtime} runtime is not installed here"
    return acc


def _export_or_skip_tflite(state: BuildState, source, names: list[str]) -> dict:
    """``ep.export`` of ``names``; when the TFLite writer cannot express an op of the model, the
    other formats are still written and each TFLite one is a skipped stage naming the op, so a build
    that pruned and recovered for minutes still ships its ONNX files."""
    from .export import export
    from .export import formats as table
    from .export.tflite_lower import TFLiteLoweringError

    def write(fmts):
        return export(source, state.tmp, formats=fmts, example_inputs=example_args(state.example), target=state.profile)

    try:
        return write(names)
    except TFLiteLoweringError as e:
        tflite = [n for n in names if table.get(n).family == "tflite"]
        if not tflite:
            raise
        state.lowering_error = e
        for n in tflite:
            state.skipped[f"export {n}"] = str(e).splitlines()[0]
        rest = [n for n in names if n not in tflite]
        return write(rest) if rest else {}


def export_stage(state: BuildState) -> None:
    """One file per format (``ep.export``), then each file's own size and accuracy on its report row."""
    from .export import formats as table

    if state.formats:
        state.ran_stage("export")
        fmts = _formats(state)
        for source, names in (
            (state.pruned, [f.name for f in fmts if not f.needs_quantized]),
            (state.qmodel, [f.name for f in fmts if f.needs_quantized]),
        ):
            if names and source is not None:
                state.artifacts.update(_export_or_skip_tflite(state, source, names))
        if not state.artifacts and state.lowering_error is not None:
            raise state.lowering_error  # nothing at all to deploy: the reason is the error
    deployed = next(iter(_ordered(state, state.artifacts)), None)
    if deployed is not None and table.get(deployed).precision == "fp16":
        state.add_row("fp16", state.pruned, None, "fp16", state.artifacts[deployed].stat().st_size)
    for name in _ordered(state, state.artifacts):
        fmt, path = table.get(name), state.artifacts[name]
        row = _row_of(state, fmt)
        if row is None:
            continue
        # the row's own file is the one that ships at its precision; any other goes to other_artifacts
        entry = row if "artifact" not in row else {"format": name}
        entry.update({"artifact": path.name, "size_bytes": path.stat().st_size})
        if state.splits is not None:
            acc = _file_accuracy(state, fmt, path)
            entry["onnx_accuracy" if fmt.family == "onnx" else "file_accuracy"] = acc
            if row["name"] == "fp16" and entry is row and acc is not None:
                row["accuracy"] = {"metric": "top1", "value": acc, "delta_pts": state.delta(acc)}
        if entry is not row:
            row.setdefault("other_artifacts", []).append(entry)


def bench_stage(state: BuildState) -> None:
    """Host latency and peak RSS of every written file and of the unpruned model (fp32 ONNX)."""
    from .export import export
    from .export import formats as table

    spec = state.spec
    if spec.bench_runs <= 0:
        state.skipped["bench"] = "bench_runs is 0"
        return
    state.ran_stage("bench")
    fp32 = _onnx_format("fp32")
    base_file = export(state.base, state.scratch, formats=[fp32], example_inputs=example_args(state.example))[fp32]
    base_row = state.row("baseline")
    to_time, timed_onnx = [(base_row, table.get(fp32), base_file)], None
    for name in state.artifacts:
        row = _row_of(state, table.get(name))
        if row is not None:
            entry = row if row.get("artifact") == state.artifacts[name].name else _other(row, name)
            to_time.append((entry, table.get(name), state.artifacts[name]))
    for entry, fmt, path in to_time:
        d = _host_bench(spec, path, fmt.runtime)
        d["artifact"] = Path(path).name if entry is not base_row else "unpruned model.onnx (not kept)"
        entry["host_latency"] = d
        entry["peak_rss_mb"] = d["peak_rss_mb"]
        if spec.device is not None:
            entry["device_latency"] = _device_latency(spec, fmt, path, d["artifact"])
        if fmt.name == fp32 and entry is not base_row:
            timed_onnx = d
    if getattr(state.profile, "gpu", None) is None:  # a CPU target: which runtime runs it fastest
        state.report["host_runtimes"] = _host_runtimes(state, timed_onnx)


def _host_bench(spec: BuildSpec, path: Path, runtime: str) -> dict[str, Any]:
    """One host measurement, isolated: each artifact's peak RSS is its own, not this torch-laden
    process's."""
    from .bench import bench

    res = bench(
        path,
        runtime=runtime,
        threads=spec.bench_threads,
        warmup=spec.bench_warmup,
        runs=spec.bench_runs,
        layer_profile=False,
        isolate=True,
    )
    return res.to_dict()


def _host_runtimes(state: BuildState, timed_onnx: dict[str, Any] | None) -> dict[str, Any]:
    """The shipped fp32 model on every CPU runtime of this host: its fp32 ONNX file in ONNX Runtime
    (``timed_onnx``, measured by the bench stage), and one fp32 .tflite file (the build's, else one
    written to scratch) in LiteRT and in the edgeprune runtime; ``fastest`` names the runtime with
    the lowest median."""
    from .export import export

    tfl = state.artifacts.get("tflite")
    if tfl is None:
        tfl = export(state.pruned, state.scratch, formats=["tflite"], example_inputs=example_args(state.example))[
            "tflite"
        ]
    measured, notes = [("onnxruntime", timed_onnx)] if timed_onnx else [], {}
    for runtime in ("litert", "edgeprune"):
        try:
            measured.append((runtime, _host_bench(state.spec, tfl, runtime)))
        except UserError as e:  # e.g. an operator the runtime does not run, or LiteRT not installed
            notes[runtime] = str(e)
    rows = []
    for runtime, d in measured:
        rows.append(
            {
                "runtime": runtime,
                "artifact": Path(str(d["artifact"])).name,
                "median_ms": d["median_ms"],
                "peak_rss_mb": d["peak_rss_mb"],
                "init_ms": d["init_ms"],
            }
        )
    fastest = min(rows, key=lambda r: r["median_ms"])["runtime"] if rows else None
    return {"rows": rows, "fastest": fastest, "not_run": notes, "threads": state.spec.bench_threads}


def _device_latency(spec: BuildSpec, fmt, path: Path, name: str) -> dict[str, Any]:
    """The same measurement as the host's, on ``spec.device`` (RemoteError, a UserError, if it fails)."""
    from .remote import bench_remote

    # every argument by keyword, like the CLI's long calls (cli/bench.py's bench_remote, cli/prune.py's
    # ep.plan) on purpose: the values come from the BuildSpec here, from flags there
    res = bench_remote(
        path,
        spec.device,
        identity=spec.identity,
        runtime=fmt.runtime,
        threads=spec.bench_threads,
        runs=spec.bench_runs,
        warmup=spec.bench_warmup,
        layer_profile=False,
        remote_python=spec.remote_python,
        ssh_options=tuple(spec.ssh_options or ()),
    )
    d = res.to_dict()
    d["artifact"] = name
    return d


def _other(row: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in row["other_artifacts"] if e["format"] == name)


def estimate_stage(state: BuildState) -> None:
    """The shipped model's per-layer estimate on the target (CPU, and GPU when it has one)."""
    from .estimate import estimate

    state.ran_stage("estimate")
    # at the precision of what ships (the last stage), which is the profile's only when that
    # stage could be produced (no calibration data means no int8 file)
    shipped_precision = state.rows[-1]["precision"]
    state.report["target_estimate"] = state.estimate(state.pruned, shipped_precision).to_dict()
    gpu = getattr(state.profile, "gpu", None)
    if gpu is not None:
        gpu_prec = "int8" if shipped_precision == "int8" and gpu.int8_tops else "fp16"
        gpu_est = estimate(
            state.pruned, state.profile, precision=gpu_prec, device="gpu", example_inputs=state.tokens
        ).to_dict()
        gpu_est.pop("layers")
        state.report["target_estimate_gpu"] = gpu_est


def _steps(state: BuildState) -> list[dict[str, Any]]:
    """Plot points across the search: the unpruned model, each accepted step (validation metric),
    then the deployed stage (test metric)."""

    def point(row):
        return {
            "label": row["name"],
            "macs": row["macs"],
            "metric": (row["accuracy"] or {}).get("value"),
            "estimate_ms": row["estimate"]["total_ms"],
        }

    return [point(state.rows[0])] + state.search_points + [point(state.rows[-1])]


def _gate(state: BuildState) -> dict[str, Any]:
    final, base_acc = state.rows[-1], state.base_acc
    final_acc = (final.get("accuracy") or {}).get("value")
    drop = 100.0 * (base_acc - final_acc) if final_acc is not None and base_acc is not None else None
    return {
        "max_acc_drop": state.spec.max_acc_drop,
        "drop_pts": None if drop is None else round(drop, 4),
        "stage": final["name"],
        "passed": drop is not None and drop <= state.spec.max_acc_drop + 1e-9,
    }


def _deploy(state: BuildState, deployed: str | None) -> dict[str, Any]:
    """How to run the shipped file on the device: notes, the bench command, trtexec for a Jetson."""
    from .export import formats as table

    deploy: dict[str, Any] = {"notes": [], "bench": []}
    if deployed is None:
        return deploy
    profile, art = state.profile, state.artifacts[deployed].name
    deploy["notes"].append(
        f"copy `{art}` to the {profile.name} and run it with one of: {', '.join(profile.deploy.runtimes)}"
    )
    runtime = table.get(deployed).runtime
    flags = f"--runtime {runtime} --threads {state.cores} --target {profile.name} --json bench-{profile.name}.json"
    deploy["bench"].append(f"edgeprune bench {art} {flags}")
    deploy["bench"].append(
        f"# without torch on the device (numpy + {runtime} + edgeprune only):\npython -m edgeprune.cli.bench {art} {flags}"
    )
    onnx_files = [f for f in _ordered(state, state.artifacts) if table.get(f).family == "onnx"]
    if not onnx_files:
        return deploy
    trt_fmt, trt_art = table.get(onnx_files[0]), state.artifacts[onnx_files[0]]
    input_name, dynamic = _onnx_input(trt_art)
    trt = trtexec_command(profile, trt_art.name, input_name, state.input_shape, dynamic_batch=dynamic)
    if trt:
        deploy["trtexec"] = trt
        deploy["notes"].append(
            f"TensorRT {profile.gpu.tensorrt} builds engines on the device only: `{trt_art.name}` is "
            + (
                "int8 with symmetric Q/DQ (explicit quantization, no calibration cache needed)"
                if trt_fmt.precision == "int8"
                else "the fp16 network (this GPU has no int8 path)"
            )
            + "; the target estimates above are for the CPU, trtexec gives the GPU number"
        )
    return deploy


def _manifest(state: BuildState) -> dict[str, Any]:
    from .checkpoint import sha256_file  # local: checkpoint imports torch, this module does not

    spec, tmp = state.spec, state.tmp
    manifest = {
        "format": "edgeprune-build",
        "manifest_version": REPORT_VERSION,
        "edgeprune_version": __version__,
        "versions": _versions(),
        "target": state.profile.name,
        "target_profile": state.profile.to_dict(),
        "model": state.report["model"],
        "seed": spec.seed,
        "command_line": " ".join(shlex.quote(a) for a in spec.command_line) if spec.command_line else None,
        "stages_ran": state.ran,
        "files": {},
    }
    for p in sorted(q for q in tmp.rglob("*") if q.is_file()):
        rel = str(p.relative_to(tmp))
        manifest["files"][rel] = {
            "sha256": sha256_file(p),
            "size_bytes": p.stat().st_size,
            "timings": rel in TIMING_FILES,
        }
    return manifest


def report_stage(state: BuildState) -> None:
    """report.json, report.md, plots/ and manifest.json (hashes of every file)."""
    from . import report as report_mod

    state.ran_stage("report")
    report, tmp = state.report, state.tmp
    before, after = _channels(state.base), _channels(state.pruned)
    report["layers"] = [{"name": n, "before": before[n], "after": after.get(n, before[n])} for n in before]
    plan = state.plan
    report["plan"] = (
        [p.to_dict() for p in plan] if isinstance(plan, list) else (plan.to_dict() if plan is not None else None)
    )
    report["recover_history"] = None if state.adaptive_log is not None else _jsonable(state.history)
    if state.search_points:
        report["steps"] = _steps(state)
    report["stages"] = state.rows
    deployed = next(iter(_ordered(state, state.artifacts)), None)
    report["deployed"] = {
        "stage": state.rows[-1]["name"],
        "artifact": state.artifacts[deployed].name if deployed else None,
        "precision": state.rows[-1]["precision"],
    }
    if state.spec.max_acc_drop is not None:
        report["gate"] = _gate(state)
    report["deploy"] = _deploy(state, deployed)
    report["artifacts"] = {}  # filled below, once every file exists
    plots = report_mod.write_plots(report, tmp / "plots")
    report["plots"] = [f"plots/{k}" for k in sorted(plots)]
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    report["artifacts"] = {str(p.relative_to(tmp)): {"size_bytes": p.stat().st_size} for p in files}
    report["stage_seconds"] = dict(state.seconds)  # every stage before this one (it is still running)
    fsutil.write_json(tmp / "report.json", report)
    fsutil.write_text(tmp / "report.md", report_mod.render_markdown(report))
    state.manifest = _manifest(state)
    fsutil.write_json(tmp / "manifest.json", state.manifest)
    _publishable(tmp)


# ----------------------------------------------------------------------------- build
def _initial_report(spec: BuildSpec, profile, formats: list[str], state: BuildState) -> dict[str, Any]:
    model = spec.model
    return {
        "format": "edgeprune-report",
        "report_version": REPORT_VERSION,
        "edgeprune_version": __version__,
        "model": model if isinstance(model, str) else getattr(model, "edgeprune_spec", type(model).__name__),
        "target": profile.to_dict(),
        "seed": spec.seed,
        "settings": {
            "ratio": spec.goal_ratio,
            "budget_macs": spec.budget_macs,
            "budget_latency_ms": spec.budget_latency_ms,
            "max_acc_drop": spec.max_acc_drop,
            "formats": list(formats),
            "importance": spec.importance,
            "round_to": int(profile.deploy.channel_multiple),
            "recover_epochs": spec.recover_epochs,
            "search_steps": spec.search_steps,
            "scratch_epochs": spec.scratch_epochs,
            "data": spec.data if isinstance(spec.data, str) or spec.data is None else "object",
            "calib": spec.calib if isinstance(spec.calib, str) or spec.calib is None else "object",
            "bench": {"runs": spec.bench_runs, "warmup": spec.bench_warmup, "threads": spec.bench_threads},
        },
        "stages_ran": state.ran,
        "stages_skipped": state.skipped,
    }


def _run_stages(state: BuildState) -> None:
    spec = state.spec
    with stage(state, "load", "model and data"):
        load_stage(state)
    with stage(state, "baseline", "MACs, params, accuracy, estimate"):
        baseline_stage(state)
    with stage(state, "prune", f"round_to={state.profile.deploy.channel_multiple}"):
        prune_stage(state)
    splits = state.splits
    if state.adaptive_log is not None:
        note = "(done inside the adaptive search)"
    else:
        note = f"{spec.recover_epochs} epochs" if splits is not None else "(no data)"
    with stage(state, "recover", note):
        recover_stage(state)
    if spec.scratch_epochs and splits is not None and state.plan is not None:
        scratch_stage(state)
    with stage(state, "save", "model/"):
        save_stage(state)
    with stage(state, "quantize", state.profile.deploy.precision):
        quantize_stage(state)
    with stage(state, "export", ", ".join(state.formats)):
        export_stage(state)
    where = f"host and {spec.device}" if spec.device else "host"
    with stage(state, "bench", f"{where}, {spec.bench_runs} runs"):
        bench_stage(state)
    with stage(state, "estimate", state.profile.name):
        estimate_stage(state)
    with stage(state, "report", "report.json, report.md, plots"):
        report_stage(state)


def run(
    spec: BuildSpec,
    events: BuildEvents | None = None,
    *,
    bars: Progress | bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> BuildResult:
    """Validate ``spec``, run every stage and publish ``spec.out_dir``; see ``build`` for the meaning."""
    from .models.training import torch_threads

    spec.validate()
    profile = spec.load_target()
    formats, missing = spec.resolve_formats(profile)
    state = BuildState(spec=spec, profile=profile, formats=formats, events=events or BuildEvents())
    state.on_stage, state.bars = on_stage, bars
    for f in missing:
        state.skipped[f"export {f}"] = "this build has no writer for it yet"
    state.report = _initial_report(spec, profile, formats, state)
    out = Path(spec.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        fsutil.atomic_dir(out) as tmp,
        torch_threads(spec.train_threads),  # recovery and calibration give the same bits on every run
        tempfile.TemporaryDirectory(prefix="edgeprune-scratch-") as scratch,
    ):
        state.tmp, state.scratch = Path(tmp), Path(scratch)
        _run_stages(state)
    return BuildResult(out_dir=out, report=state.report, manifest=state.manifest)


def build(
    model,
    target,
    out_dir,
    *,
    progress: BuildEvents | None = None,
    bars: Progress | bool = False,
    on_stage: Callable[[str], None] | None = None,
    **settings,
) -> BuildResult:
    """Run the whole pipeline and write ``out_dir`` (see the module docstring).

    ``settings`` are ``BuildSpec``'s fields. Pruning goal: ``ratio`` (fraction of channels
    removed, default 0.5 when no goal is given), ``budget_macs`` (keep at most this many MACs if
    > 1, this fraction of them if <= 1) or ``budget_latency_ms`` (the target's estimated latency
    at its deploy precision). Channel counts are rounded to the profile's ``channel_multiple``.
    With a budget and data, ``search`` "auto"/"adaptive" runs ``edgeprune.prune.search``
    (sensitivity scan, allocation, ``search_steps`` prune+recover steps with back-off under
    ``max_acc_drop``, default 1 point); without data (or ``search="bisect"``) the global ratio
    is bisected on the estimator. ``result.budget_met`` is False when the budget could not be
    reached (the CLI exits 3). ``scratch_epochs`` > 0 also trains the pruned shape from random
    weights for comparison. ``max_acc_drop`` (percentage points, deployed model vs the unpruned
    one) makes ``result.gate_passed`` False when exceeded (the CLI exits 3); the artifacts are
    still written, so the report shows what happened. ``progress``: a ``BuildEvents`` that
    hears each stage start and finish; ``bars``: an ``edgeprune.progress.Progress`` told of the
    training, recovery and calibration loops (a bool: no events); ``on_stage(name)``: called as
    each stage that does work starts it.
    """
    return run(BuildSpec(model, target, out_dir, **settings), progress, bars=bars, on_stage=on_stage)


def _search_ratio(make, cost, budget, base, splits, models_mod=None, lo=0.0, hi=0.9, iters=7):
    """Smallest ratio (within 1/2^iters of [lo, hi]) whose pruned model costs <= budget.

    Returns (ratio, plan, model, met, steps); steps record each probe (ratio, cost, val accuracy).
    ``models_mod`` is unused (kept for callers that pass it).
    """
    steps = []

    def probe(r):
        plan, model = make(r)
        c = cost(model)
        acc = _accuracy(model.eval(), splits.val) if splits is not None else None
        steps.append({"ratio": round(r, 6), "cost": c, "val_top1": acc})
        return plan, model, c

    if cost(base) <= budget:
        plan, model, _ = probe(lo)
        return lo, plan, model, True, steps
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


def summary(result: BuildResult) -> list[list[str]]:
    """The summary rows the CLI prints (same as report.md's table)."""
    from . import report

    return report.summary_rows(result.report)
