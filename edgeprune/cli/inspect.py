"""`edgeprune inspect FILE.onnx`: ops, params, MACs, size and int8 coverage of an ONNX file.

Consumes: an ONNX file path and ``--json`` / ``--layers`` / ``--no-runtime``. Produces: tables
(summary, op counts, ops that stayed fp32 with the reason, and what ONNX Runtime really runs:
the kernel of every Conv/Gemm/MatMul and why any quantized one fell back to float) or the
``edgeprune.export.inspect_onnx(path, runtime=True)`` dict as JSON.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .common import UsageError, print_json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="ops, params, MACs, size and int8 coverage of an ONNX file",
        description="Inspect an ONNX file: ops, params, MACs, size, and which ops run "
        "int8 (and why the others stayed fp32).",
    )
    p.add_argument("file", metavar="FILE.onnx", help="the ONNX file")
    p.add_argument("--layers", action="store_true", help="list every compute op with its precision")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument(
        "--no-runtime",
        action="store_true",
        help="skip asking ONNX Runtime which kernels it runs (report only what the file says)",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.export import inspect_onnx

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; pass an .onnx file (e.g. one written by `edgeprune export`)")
    runtime = not args.no_runtime and importlib.util.find_spec("onnxruntime") is not None
    try:
        info = inspect_onnx(path, runtime=runtime)
    except ValueError as e:
        raise UsageError(str(e).splitlines()[0]) from None
    if args.json:
        print_json(info)
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = Table(title=str(path), show_header=False)
    s.add_column("k")
    s.add_column("v")
    q = info["int8"]
    for k, v in (
        ("size", f"{info['size_bytes'] / 1024:.1f} KiB"),
        ("opset", str(info["opset"])),
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
        *(_runtime_rows(info["runtime"]) if "runtime" in info else ()),
        *((k.removeprefix("edgeprune_"), v) for k, v in info["metadata"].items()),
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


def _runtime_rows(rt: dict) -> list[tuple[str, str]]:
    return [
        ("runtime", rt["engine"]),
        (
            "int8 kernels (runtime)",
            f"{rt['int8_weighted_ops']} of {rt['weighted_ops']} conv/gemm/matmul, "
            f"{100 * rt['coverage_macs']:.1f} % of MACs",
        ),
    ]
