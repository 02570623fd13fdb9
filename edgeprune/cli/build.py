"""`edgeprune build`: prune, recover, quantize, export, measure and report for one target device.

Consumes: a model spec, a target name, optional weights/data/calibration specs, a pruning goal,
an accuracy gate, formats, an output directory. Produces: the output directory of
docs/architecture.md, Outputs (via ``edgeprune.pipeline.build``), a summary table (or ``--json``), and the exit
code: 0 ok, 2 bad input, 3 when ``--max-acc-drop`` is exceeded or a budget is not met.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from ..pipeline import STAGES
from ._progress import renderer
from ._tables import summary_table
from .common import EXIT_GATE, EXIT_OK, UsageError, add_device_flags, add_trust_flags, load_model, print_json
from .targets import announce as announce_target

_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9}


def _number(flag: str):
    def parse(text: str) -> float:
        m = re.fullmatch(r"\s*(-?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgG]?)\s*", text)
        if not m:
            raise argparse.ArgumentTypeError(f"{flag} {text!r} is not a number (e.g. 0.5, 2e6, 2M)")
        value = float(m.group(1)) * _SUFFIX.get(m.group(2).lower(), 1.0)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{flag} {text}: must be > 0 (e.g. 0.5, 2e6, 2M)")
        return value

    return parse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "build",
        help="prune + recover + int8 + export + report for a target device (the main command)",
        description="Build a deployable model for a device: structured pruning (channels rounded to the target's "
        "SIMD width), recovery by distillation when --data is given, int8 per the target, ONNX exports, "
        "host benchmark, target latency estimate, report.json/report.md/plots and manifest.json.",
    )
    _add_input_flags(p)
    _add_goal_flags(p)
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of every random choice (default 0)")
    p.add_argument(
        "--bench-runs",
        type=int,
        default=20,
        metavar="N",
        help="host benchmark runs per artifact (default 20; 0 = skip)",
    )
    p.add_argument("--threads", type=int, default=1, metavar="N", help="host benchmark threads (default 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must be empty or new unless --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out (only once the build succeeds)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    _add_device_flags(p)
    p.set_defaults(run=run)


def _add_input_flags(p) -> None:
    """The model, the target and the data."""
    p.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="edgeprune:demo-cnn, file.py:factory, package.module:factory, torchvision:NAME, "
        "or a directory written by ep.save",
    )
    p.add_argument(
        "--target",
        required=True,
        metavar="NAME",
        help="device profile: rpi4, rpi5, jetson-nano, jetson-orin-nano, x86-avx2, x86-avx512-vnni, an alias "
        "(jetson, rpi, pi4, orin: `edgeprune targets list`), host, or a .toml path",
    )
    p.add_argument("--weights", metavar="F", help="state_dict file (loaded with weights_only=True)")
    add_trust_flags(p)
    p.add_argument(
        "--data", metavar="DATA", help="data spec for accuracy and recovery: digits, file.npz, image folder, module:fn"
    )
    p.add_argument("--calib", metavar="DATA", help="calibration data spec for int8 (default: --data)")


def _add_goal_flags(p) -> None:
    """What the build aims at (a ratio or a budget, the accuracy gate) and how it gets there."""
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--ratio", type=float, metavar="R", help="fraction of channels to remove (default 0.5)")
    goal.add_argument(
        "--budget-macs",
        type=_number("--budget-macs"),
        metavar="F",
        help="keep at most F MACs (e.g. 2M, 1.5e6), or this fraction of them if F <= 1",
    )
    goal.add_argument(
        "--budget-latency",
        type=_number("--budget-latency"),
        metavar="MS",
        help="estimated latency on the target at its deploy precision must be <= MS",
    )
    p.add_argument(
        "--max-acc-drop",
        type=float,
        metavar="PTS",
        help="fail (exit 3) if top-1 drops by more than PTS percentage points (needs --data); "
        "with --budget-* and --data the adaptive search keeps the drop under 1.0 point unless this is given",
    )
    p.add_argument(
        "--formats", metavar="LIST", help="comma-separated export formats (default: the target's, plus onnx)"
    )
    p.add_argument("--importance", default="l2", metavar="NAME", help="channel importance (default l2)")
    p.add_argument(
        "--epochs",
        type=int,
        default=3,
        metavar="N",
        help="recovery epochs when --data is given (default 3); with the adaptive search, per step",
    )
    p.add_argument(
        "--search",
        choices=["auto", "adaptive", "bisect"],
        default="auto",
        help="how a budget is met: adaptive (sensitivity scan + stepwise prune/recover, needs --data; "
        "the default with --data) or bisect (one global ratio on the estimator)",
    )
    p.add_argument(
        "--search-steps",
        type=int,
        default=3,
        metavar="N",
        help="prune/recover steps of the adaptive search (default 3)",
    )
    p.add_argument(
        "--scratch-epochs",
        type=int,
        default=0,
        metavar="N",
        help="also train the pruned shape from scratch for N epochs and report it next to prune+recover",
    )


def _add_device_flags(p) -> None:
    """``--device`` and its companions, as ``edgeprune bench --device`` spells them."""
    add_device_flags(
        p,
        device_help="also measure every artifact on this device over SSH (system ssh/scp, ~/.ssh/config honoured); "
        "needs python3, numpy and the runtime there, not edgeprune",
        remote_python_default=None,
        remote_python_help="with --device: the device's Python",
        remote_tmp=False,
    )


def _device_settings(args) -> dict:
    """The BuildSpec fields of the --device flags (none of them without --device)."""
    if args.device is None:
        return {}
    return {
        "device": args.device,
        "identity": args.identity,
        "ssh_options": list(args.ssh_option),
        "remote_python": args.remote_python or "python3",
    }


def _device_argv(args) -> list[str]:
    if args.device is None:
        return []
    out = ["--device", args.device] + (["--identity", args.identity] if args.identity else [])
    out += ["--remote-python", args.remote_python] if args.remote_python else []
    return out + [a for opt in args.ssh_option for a in ("--ssh-option", opt)]


# BuildSpec field -> the argparse dest that sets it (its flag is --dest with dashes), in the
# order the command line is rebuilt in.
_SPEC_ARGS = {
    "model": "model",
    "target": "target",
    "weights": "weights",
    "data": "data",
    "calib": "calib",
    "ratio": "ratio",
    "budget_macs": "budget_macs",
    "budget_latency_ms": "budget_latency",
    "max_acc_drop": "max_acc_drop",
    "formats": "formats",
    "importance": "importance",
    "recover_epochs": "epochs",
    "search": "search",
    "search_steps": "search_steps",
    "scratch_epochs": "scratch_epochs",
    "seed": "seed",
    "bench_runs": "bench_runs",
    "bench_threads": "threads",
    "out_dir": "out",
    "trust_pickle": "trust_pickle",
    "force": "force",
}
# Validation errors name the flag the user typed; budget_latency_ms keeps its field name, which
# its messages have always said.
_FLAGS = {f: "--" + d.replace("_", "-") for f, d in _SPEC_ARGS.items() if f != "budget_latency_ms"}


class _Progress:
    """Renders ``pipeline.BuildEvents`` on stderr: a rich bar on a terminal, one plain line per
    stage otherwise (CI logs)."""

    def __init__(self, rich: bool):
        self._bar = None
        self._task = None
        if rich:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]build[/bold] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )

    def __enter__(self):
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=len(STAGES))
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def stage_started(self, name: str, detail: str, index: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=f"{name} {detail}".strip())
        else:
            print(f"build [{index}/{total}] {name} {detail}".rstrip(), file=sys.stderr, flush=True)

    def stage_finished(self, name: str, seconds: float) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def stage_interrupted(self, name: str) -> None:
        self.note(f"interrupted during {name}")

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text.replace("warning:", "[yellow]warning:[/yellow]", 1), highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)


def _formats(text: str | None) -> list[str] | None:
    if text is None:
        return None
    formats = [f.strip() for f in text.split(",") if f.strip()]
    if not formats:
        raise UsageError("--formats is empty; e.g. --formats onnx,onnx-int8")
    return formats


def run(args: argparse.Namespace) -> int:
    from edgeprune import pipeline

    settings = {field: getattr(args, dest) for field, dest in _SPEC_ARGS.items()}
    settings["formats"] = _formats(args.formats)
    settings.update(_device_settings(args))
    if args.trust_code and os.path.isdir(args.model):
        # a directory whose factory is outside the registry loads only with --trust-code, which the spec does not carry
        settings["model"] = load_model(args.model, trust_code=True)
    in_process = not (sys.argv and sys.argv[0].endswith("edgeprune"))
    settings["command_line"] = ["edgeprune", "build", *_argv_of(args)] if in_process else ["edgeprune", *sys.argv[1:]]
    spec = pipeline.BuildSpec(**settings)
    spec.validate(_FLAGS)
    announce_target(args.target)  # which profile an alias (`--target jetson`) chose, on stderr
    tty = sys.stderr.isatty()
    with _Progress(rich=tty) as progress:
        result = pipeline.run(spec, progress, bars=renderer(tty))
    rep = result.report
    if args.json:
        print_json(_summary_json(result))
    else:
        _print_human(result)
    code = EXIT_OK
    gate = rep.get("gate")
    if gate and not gate["passed"]:
        drop = gate["drop_pts"]
        print(
            f"error: accuracy gate failed: top-1 dropped {drop:.2f} pts (> --max-acc-drop {gate['max_acc_drop']}) "
            f"at stage {gate['stage']}; lower --ratio, raise --epochs, or relax the gate. "
            f"Artifacts are in {result.out_dir}",
            file=sys.stderr,
        )
        code = EXIT_GATE
    budget = rep.get("budget")
    if budget and not budget["met"]:
        print(
            f"error: budget not met: {budget['kind']} {budget['value']:.6g} ({budget['reason']}); "
            f"best reached {budget['achieved']:.6g}. Relax the budget or --max-acc-drop. "
            f"Artifacts are in {result.out_dir}",
            file=sys.stderr,
        )
        code = EXIT_GATE
    return code


def _argv_of(args) -> list[str]:
    """Rebuild the command line from parsed args (when called in-process, sys.argv is not ours)."""
    out = []
    for dest in _SPEC_ARGS.values():
        v = getattr(args, dest)
        if isinstance(v, bool):
            out += [f"--{dest.replace('_', '-')}"] if v else []
        elif v is not None:
            out += [f"--{dest.replace('_', '-')}", str(v)]
    out += _device_argv(args)
    return out + (["--trust-code"] if args.trust_code else []) + (["--json"] if args.json else [])


def _summary_json(result) -> dict:
    rep = result.report
    return {
        "out": str(result.out_dir),
        "model": rep["model"],
        "target": rep["target"]["name"],
        "seed": rep["seed"],
        "stages_ran": rep["stages_ran"],
        "stages_skipped": rep["stages_skipped"],
        "stages": rep["stages"],
        "gate": rep.get("gate"),
        "budget": {k: v for k, v in rep["budget"].items() if k != "search"} if rep.get("budget") else None,
        "deployed": rep["deployed"],
        "scratch": rep.get("scratch"),
        "target_estimate_ms": rep["target_estimate"]["total_ms"],
        "deploy": rep["deploy"],
        "files": sorted(result.manifest["files"]),
    }


def _print_human(result) -> None:
    from rich.console import Console

    report = importlib.import_module("edgeprune.report")
    rep = result.report
    console = Console(highlight=False)
    console.print(summary_table(rep))
    headline = report.headline_text(rep)
    if headline:
        console.print("  " + headline.replace("**", ""))
    for stage, why in rep["stages_skipped"].items():
        console.print(f"  skipped {stage}: {why}")
    if rep.get("budget"):
        b = rep["budget"]
        how = (
            f"ratio {rep['settings']['chosen_ratio']:.3f}"
            if "chosen_ratio" in rep["settings"]
            else f"{len(rep['plan'] or [])} adaptive step(s)"
        )
        console.print(
            f"  budget {b['kind']} {b['value']:g}: achieved {b['achieved']:.4g} "
            f"({'met' if b['met'] else 'NOT met'}) with {how}"
        )
    if rep.get("scratch"):
        sc = rep["scratch"]
        console.print(
            f"  pruned shape from scratch ({sc['epochs']} epochs): {100 * sc['top1']:.2f}% vs prune+recover "
            f"{100 * sc['prune_recover_top1']:.2f}% ({sc['delta_pts']:+.2f} pts)"
        )
    gate = rep.get("gate")
    if gate:
        console.print(
            f"  accuracy gate: drop {gate['drop_pts']:.2f} pts, allowed {gate['max_acc_drop']} pts: "
            + ("[green]passed[/green]" if gate["passed"] else "[red]FAILED[/red]")
        )
    console.print(
        f"  target latencies are estimates for {rep['target']['name']} (roofline, calibrated); "
        f"host latencies are measured here"
    )
    if rep["deploy"].get("trtexec"):
        console.print(f"  on the device: {rep['deploy']['trtexec']}")
    for line in rep["deploy"].get("bench", [])[:1]:
        console.print(f"  on the device: {line}")
    console.print(f"  wrote {result.out_dir}/ (report.md, manifest.json, {len(result.manifest['files'])} files)")
