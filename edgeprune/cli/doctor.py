"""`edgeprune doctor`: what this machine offers edgeprune.

Consumes: nothing. Produces: versions (python, edgeprune, torch, numpy, onnx, onnxruntime,
onnxscript, ai_edge_litert if installed), the compiled core's CPU features, compiled and
selected ISA (or a clear "not built" line), and whether the aarch64 cross compiler and
qemu-aarch64 are on PATH; a table on stdout or JSON with ``--json``. Always exits 0: it
reports, it does not judge.
"""

from __future__ import annotations

import os
import platform
import shutil
from importlib import metadata

from .. import __version__
from .common import print_json

PACKAGES = ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "ai-edge-litert", "rich", "matplotlib")
TOOLS = ("aarch64-linux-gnu-g++", "qemu-aarch64", "cmake")


# the add_parser shape of every command module on purpose: main.py registers each one, and each
# spells its own name, help, description and flags (a shared wrapper would only rename add_parser)
def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="show versions, CPU features, ISA and toolchains",
        description="Report versions, CPU features, compiled/selected ISA and cross tools.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _core() -> dict:
    try:
        from .. import _core  # the compiled pybind11 module (csrc/)
    except ImportError as e:
        return {"built": False, "error": f"not built ({e}); build it with `pip install -e .` or `make install`"}
    info: dict = {"built": True}
    for name in ("cpu_features", "l1d_bytes", "compiled_isas", "selected_isa"):
        fn = getattr(_core, name, None)
        if fn is None:
            info[name] = None
            continue
        try:
            value = fn()
        except Exception as e:  # e.g. EDGEPRUNE_ISA asks for a path this CPU lacks
            value = f"error: {e}"
        info[name] = sorted(value) if isinstance(value, (set, frozenset)) else value
    return info


def collect() -> dict:
    return {
        "edgeprune": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "packages": {p: _version(p) for p in PACKAGES},
        "core": _core(),
        "env": {"EDGEPRUNE_ISA": os.environ.get("EDGEPRUNE_ISA")},
        "tools": {t: shutil.which(t) for t in TOOLS},
    }


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) or "none"
    return str(v)


def run(args) -> int:
    info = collect()
    if args.json:
        print_json(info)
        return 0
    from rich.table import Table

    table = Table(title="edgeprune doctor", show_header=False)
    table.add_column("item")
    table.add_column("value")
    table.add_row("edgeprune", info["edgeprune"])
    table.add_row("python", f"{info['python']} ({info['platform']})")
    for name, ver in info["packages"].items():
        table.add_row(name, ver or "not installed")
    core = info["core"]
    if not core["built"]:
        table.add_row("edgeprune._core", core["error"])
    else:
        for k in ("cpu_features", "l1d_bytes", "compiled_isas", "selected_isa"):
            table.add_row(k, _fmt(core.get(k)))
    table.add_row("EDGEPRUNE_ISA", info["env"]["EDGEPRUNE_ISA"] or "unset (automatic choice)")
    for tool, path in info["tools"].items():
        table.add_row(tool, path or "not found on PATH")
    _console().print(table)
    return 0


def _console():
    from rich.console import Console

    # piped output: rich would assume 80 columns and wrap every cell; tables read better wider
    c = Console()
    return c if c.is_terminal else Console(width=160)
