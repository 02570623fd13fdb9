"""`edgeprune targets list|show`: the built-in device profiles, their aliases, user profile files.

Consumes: a profile name, an alias (any case), ``host``/``auto`` or a path to a profile TOML.
Produces: a rich table or the profile as JSON (``--json``) on stdout, and on stderr one line
saying which profile an alias chose; a bad profile exits 2 with one line naming the file and
field, an unknown name with the closest names. ``announce()`` prints that alias line for the
other subcommands that take ``--target``.
"""

from __future__ import annotations

import sys

from .. import targets as targets_mod
from .common import UsageError, print_json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "targets",
        help="list or show device profiles",
        description="List the built-in device profiles or show one (by name or .toml path).",
    )
    sub = p.add_subparsers(dest="targets_command", metavar="ACTION", required=True)
    lp = sub.add_parser("list", help="list the built-in profiles")
    lp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sp = sub.add_parser("show", help="show one profile")
    sp.add_argument("target", metavar="NAME|PATH", help="built-in profile name or path to a profile .toml")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cp = sub.add_parser(
        "calibrate",
        help="fit a profile's per-op-class efficiencies to bench measurements",
        description="Fit conv / depthwise / 1x1 / fc / elementwise efficiencies (per precision and thread count) "
        "to the per-op timings of `edgeprune bench --json` runs of .onnx models, local or --device, and write a "
        "profile TOML with calibrated = true and the fit's residuals.",
    )
    cp.add_argument("target", metavar="PROFILE", help="the profile to start from (name, alias, host or .toml)")
    cp.add_argument("bench", nargs="+", metavar="BENCH.json", help="bench JSON files (their .onnx next to them)")
    cp.add_argument("--out", required=True, metavar="FILE.toml", help="the calibrated profile to write")
    cp.add_argument("--name", default=None, help="profile name (default: the --out file's stem)")
    cp.add_argument("--source", default=None, help="what the measurements are, recorded in the profile")
    cp.add_argument("--json", action="store_true", help="print the per-model fit as JSON")
    p.set_defaults(run=run)


def announce(name) -> None:
    """One stderr line when ``name`` is an alias or ``host`` (say which profile it chose)."""
    if name is None or str(name).endswith(".toml"):
        return
    try:
        note = targets_mod.resolve(str(name)).note
    except targets_mod.TargetError:
        return  # the command that loads it reports the error
    if note:
        print(note, file=sys.stderr)


def _load(name: str):
    announce(name)
    try:
        return targets_mod.load(name)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _cpu_text(t) -> str:
    return f"{t.cpu.cores}x {t.cpu.uarch} @ {t.cpu.freq_ghz:g} GHz"


def _gpu_text(t) -> str:
    if t.gpu is None:
        return "-"
    int8 = f", {t.gpu.int8_tops:g} TOPS int8" if t.gpu.int8_tops else ", no int8"
    return f"{t.gpu.fp16_tflops:g} TFLOPS fp16{int8}"


def _list(as_json: bool) -> int:
    profiles = [_load(n) for n in targets_mod.names()]
    if as_json:
        print_json([p.to_dict() for p in profiles])
        return 0
    from rich.table import Table

    table = Table(title="edgeprune device profiles (theoretical peaks)")
    for col in ("name", "cpu", "fp32 GFLOPS/core", "int8 GOPS/core", "DRAM GB/s", "gpu", "deploy"):
        table.add_column(col, justify="right" if "/" in col else "left")
    for p in profiles:
        table.add_row(
            p.name,
            _cpu_text(p),
            f"{p.peak.fp32_gflops_per_core:g}",
            f"{p.peak.int8_gops_per_core:g}",
            f"{p.memory.bandwidth_gbs:g}",
            _gpu_text(p),
            f"{p.deploy.precision}, x{p.deploy.channel_multiple}",
        )
    _console().print(table)
    names = Table(title="names you can type for --target (any case; '_' or spaces count as '-')")
    names.add_column("type")
    names.add_column("profile")
    for alias, canon in sorted(targets_mod.aliases().items(), key=lambda kv: (kv[1], kv[0])):
        names.add_row(alias, canon)
    names.add_row(" / ".join(targets_mod.HOST_NAMES), "this machine, detected from /proc (a Pi or Jetson: its profile)")
    _console().print(names)
    return 0


def _show(name: str, as_json: bool) -> int:
    p = _load(name)
    d = p.to_dict()
    if as_json:
        print_json(d)
        return 0
    from rich.table import Table

    table = Table(title=f"{p.name}", caption=p.description, show_header=False)
    table.add_column("field")
    table.add_column("value")
    for section in ("cpu", "memory", "peak", "gpu", "deploy", "cache"):
        values = d.get(section)
        if section == "cache" and values is None:
            continue
        if values is None:
            table.add_row(section, "none")
            continue
        for k, v in values.items():
            if v is None:
                v = "none"
            table.add_row(f"{section}.{k}", ", ".join(map(str, v)) if isinstance(v, list) else str(v))
    _console().print(table)
    return 0


def _calibrate(args) -> int:
    import importlib
    from pathlib import Path

    from .. import fsutil

    cal = importlib.import_module("edgeprune.calibrate")
    base = _load(args.target)
    out = Path(args.out)
    if out.suffix != ".toml":
        raise UsageError(f"--out {out}: a profile file must end in .toml")
    try:
        prof, rows = cal.fit(base, args.bench, source=args.source, name=args.name or out.stem)
    except cal.CalibrationError as e:
        raise UsageError(str(e)) from None
    fsutil.write_text(out, targets_mod.to_toml(prof))
    if args.json:
        print_json({"profile": str(out), "rows": rows, "residuals": prof.residuals})
        return 0
    from rich.table import Table

    table = Table(title=f"{prof.name}: calibrated from {len(rows)} measurement(s) -> {out}")
    for col in ("model", "precision", "threads", "measured ms", "estimate ms", "error", "profile matched"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(
            r["model"],
            r["precision"],
            str(r["threads"]),
            f"{r['measured_ms']:.3f}",
            f"{r['estimate_ms']:.3f}",
            f"{100 * r['rel_error']:+.1f}%",
            f"{100 * r['profile_matched']:.0f}%",
        )
    _console().print(table)
    return 0


def run(args) -> int:
    if args.targets_command == "list":
        return _list(args.json)
    if args.targets_command == "calibrate":
        return _calibrate(args)
    return _show(args.target, args.json)


def _console():
    from rich.console import Console

    # piped output: rich would assume 80 columns and wrap every cell; tables read better wider
    c = Console()
    return c if c.is_terminal else Console(width=160)
