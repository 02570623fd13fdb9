"""`edgeprune inspect FILE`: ops, params, MACs, size and int8 coverage of an ONNX or TFLite file.

Consumes: an ``.onnx`` or ``.tflite`` path and ``--json`` / ``--layers`` / ``--no-runtime``. Produces:
tables (summary, op counts, ops that stayed fp32 with the reason; for ONNX what ONNX Runtime really runs: the
kernel of every Conv/Gemm/MatMul and why any quantized one fell back to float; for TFLite the sparse tensors and
the ops XNNPACK leaves to the builtin kernels) or the ``edgeprune.export.inspect_file`` dict as JSON.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .common import UsageError, print_json


# the add_parser shape of every command module on purpose: main.py registers each one, and each
# spells its own name, help, description and flags (a shared wrapper would only rename add_parser)
def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="ops, params, MACs, size and int8 coverage of an ONNX or TFLite file",
        description="Inspect an ONNX or TFLite file: ops, params, MACs, size, and which ops run "
        "int8 (and why the others stayed fp32).",
    )
    p.add_argument("file", metavar="FILE", help="the .onnx or .tflite file")
    p.add_argument("--layers", action="store_true", help="list every compute op with its precision")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument(
        "--no-runtime",
        action="store_true",
        help="skip asking ONNX Runtime which kernels it runs (report only what the file says)",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.export import inspect_file

    path = Path(args.file)
    if not path.is_file():
        what = "no such file" if not path.exists() else "a directory" if path.is_dir() else "not a regular file"
        raise UsageError(f"{path}: {what}; pass an .onnx or .tflite file (e.g. one written by `edgeprune export`)")
    runtime = not args.no_runtime and importlib.util.find_spec("onnxruntime") is not None
    try:
        info = inspect_file(path, runtime=runtime)
    except ValueError as e:
        raise UsageError(str(e).splitlines()[0]) from None
    if args.json:
        print_json(info)
        return 0
    from rich.console import Console
    from rich.table import Table

    from edgeprune.export.onnx_align import METADATA_KEY as PADDING_KEY

    console = Console()
    s = Table(title=str(path), show_header=False)
    s.add_column("k")
    s.add_column("v")
    q = info["int8"]
    for k, v in (
        ("size", f"{info['size_bytes'] / 1024:.1f} KiB"),
        *((("opset", str(info["opset"])),) if info.get("opset") is not None else ()),
        ("inputs", ", ".join(f"{i['name']} {i['shape']} {i['dtype']}" for i in info["inputs"])),
        ("outputs", ", ".join(f"{o['name']} {o['shape']} {o['dtype']}" for o in info["outputs"])),
        ("params", f"{info['params']:,}"),
        ("MACs", f"{info['macs']:,}"),
        (
            "int8 ops",
            f"{q['int8_ops']} of {q['compute_ops']} compute ops "
            f"({q['weighted_int8_ops']} of {q['weighted_ops']} conv/gemm/matmul)",
        ),
        ("int8 MAC coverage (file)", f"{100 * q['coverage_macs']:.1f} %"),
        *(_padding_rows(info["padding"]) if "padding" in info else ()),
        *(_runtime_rows(info["runtime"]) if "runtime" in info else ()),
        *((k.removeprefix("edgeprune_"), v) for k, v in info["metadata"].items() if k != PADDING_KEY),
    ):
        s.add_row(k, v)
    console.print(s)
    ops = Table(title="ops")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in info["ops"].items():
        ops.add_row(op, str(n))
    console.print(ops)
    if not q["fp32_ops"] and q["int8_ops"]:
        console.print(f"every compute op ({q['int8_ops']}) is int8 in the file")
    if q["fp32_ops"]:
        f = Table(title="ops that stayed fp32")
        for c in ("op", "name", "reason"):
            f.add_column(c)
        for o in q["fp32_ops"]:
            f.add_row(o["op"], o["name"], o["reason"])
        console.print(f)
    _tflite_tables(console, info)
    rt = info.get("runtime")
    if rt and rt["float_fallbacks"]:
        f = Table(title="quantized in the file, float in ONNX Runtime")
        for c in ("name", "op", "kernel", "why"):
            f.add_column(c)
        for o in rt["float_fallbacks"]:
            f.add_row(o["name"], o["op"], o["kernel"] or "-", o["reason"])
        console.print(f)
    if args.layers:
        lt = Table(title="compute ops")
        for c in ("name", "op", "MACs", "precision"):
            lt.add_column(c, justify="right" if c == "MACs" else "left")
        for l in info["layers"]:
            lt.add_row(l["name"], l["op"], f"{l['macs']:,}", l["precision"])
        console.print(lt)
    return 0


def _tflite_tables(console, info: dict) -> None:
    """Sparse weights and XNNPACK coverage (TFLite files only)."""
    from rich.table import Table

    if info.get("sparse_tensors"):
        t = Table(title="sparse weights (DENSIFY)")
        for c in ("tensor", "shape", "bytes", "blocks"):
            t.add_column(c)
        for s in info["sparse_tensors"]:
            t.add_row(s["name"], str(s["shape"]), f"{s['bytes']:,}", "x".join(map(str, s["block_map"])) or "1x1")
        console.print(t)
    xnn = info.get("xnnpack")
    if xnn is not None:
        left = ", ".join(f"{k} x{v}" for k, v in xnn["builtin_only"].items())
        console.print(
            f"XNNPACK takes {xnn['delegated_ops']} of {sum(info['ops'].values())} ops"
            + (f"; builtin kernels run: {left}" if left else "")
        )
    ours = info.get("edgeprune_runtime")
    if ours is not None and not ours["runs"]:
        console.print(f"edgeprune runtime: does not run this file: {ours['reason']}")
    elif ours is not None:
        t = Table(title=f"edgeprune runtime ({ours['isa']}, arena {ours['arena_bytes'] / 2**20:.1f} MiB)")
        for c in ("op", "count", "int8", "sparse"):
            t.add_column(c, justify="left" if c == "op" else "right")
        for kind, k in sorted(ours["operators"].items(), key=lambda kv: (-kv[1]["ops"], kv[0])):
            t.add_row(kind, str(k["ops"]), str(k["int8"]), str(k["sparse"]))
        console.print(t)


def _padding_rows(p: dict) -> tuple:
    widths = ", ".join(f"{c}->{padded}" for c, padded in sorted(p["groups"].values()))
    return (
        (
            "zero channels",
            f"{widths} for ONNX Runtime's int8 kernels: +{p['macs']:,} MACs, +{p['params']:,} params "
            "(not counted above)",
        ),
    )


def _runtime_rows(rt: dict) -> list[tuple[str, str]]:
    return [
        ("runtime", rt["engine"]),
        (
            "int8 kernels (runtime)",
            f"{rt['int8_weighted_ops']} of {rt['weighted_ops']} conv/gemm/matmul, "
            f"{100 * rt['coverage_macs']:.1f} % of MACs",
        ),
    ]
