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

from .common import EXIT_GATE, EXIT_OK, UsageError, add_trust_flags, load_model, print_json

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
        help="device profile: rpi4, rpi5, jetson-nano, jetson-orin-nano, x86-avx2, x86-avx512-vnni, or a .toml path",
    )
    p.add_argument("--weights", metavar="F", help="state_dict file (loaded with weights_only=True)")
    add_trust_flags(p)
    p.add_argument(
        "--data", metavar="DATA", help="data spec for accuracy and recovery: digits, file.npz, image folder, module:fn"
    )
    p.add_argument("--calib", metavar="DATA", help="calibration data spec for int8 (default: --data)")
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    pipeline = importlib.import_module("edgeprune.pipeline")
    if args.ratio is not None and not 0.0 <= args.ratio < 1.0:
        raise UsageError(f"--ratio {args.ratio} is outside [0, 1); e.g. --ratio 0.5 removes half the channels")
    if args.epochs < 0 or args.bench_runs < 0 or args.scratch_epochs < 0 or args.threads < 1 or args.search_steps < 1:
        raise UsageError("--epochs, --bench-runs and --scratch-epochs must be >= 0, --threads and --search-steps >= 1")
    formats = None
    if args.formats is not None:
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        if not formats:
            raise UsageError("--formats is empty; e.g. --formats onnx,onnx-int8")
    if args.max_acc_drop is not None and args.data is None:
        raise UsageError("--max-acc-drop needs --data to measure accuracy on; e.g. --data digits")
    model = args.model
    if args.trust_code and os.path.isdir(args.model):
        model = load_model(args.model, trust_code=True)  # the pipeline loads directories without --trust-code
    try:
        result = pipeline.build(
            model,
            args.target,
            args.out,
            weights=args.weights,
            trust_pickle=args.trust_pickle,
            data=args.data,
            calib=args.calib,
            ratio=args.ratio,
            budget_macs=args.budget_macs,
            budget_latency_ms=args.budget_latency,
            max_acc_drop=args.max_acc_drop,
            formats=formats,
            importance=args.importance,
            recover_epochs=args.epochs,
            search=args.search,
            search_steps=args.search_steps,
            scratch_epochs=args.scratch_epochs,
            seed=args.seed,
            bench_runs=args.bench_runs,
            bench_threads=args.threads,
            force=args.force,
            command_line=["edgeprune", *sys.argv[1:]]
            if sys.argv and sys.argv[0].endswith("edgeprune")
            else ["edgeprune", "build", *_argv_of(args)],
            progress="auto",
        )
    except pipeline.BuildError as e:
        raise UsageError(str(e)) from None
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
    for flag in (
        "model",
        "target",
        "weights",
        "data",
        "calib",
        "ratio",
        "budget_macs",
        "budget_latency",
        "max_acc_drop",
        "formats",
        "importance",
        "epochs",
        "search",
        "search_steps",
        "scratch_epochs",
        "seed",
        "bench_runs",
        "threads",
        "out",
    ):
        v = getattr(args, flag)
        if v is not None:
            out += [f"--{flag.replace('_', '-')}", str(v)]
    for flag in ("trust_pickle", "trust_code", "force", "json"):
        if getattr(args, flag):
            out.append(f"--{flag.replace('_', '-')}")
    return out


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
    console.print(report.summary_table(rep))
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
