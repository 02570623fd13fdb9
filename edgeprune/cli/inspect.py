"""`edgeprune inspect FILE.onnx`: ops, params, MACs, size and int8 coverage of an ONNX file.

Consumes: an ONNX file path and ``--json`` / ``--layers``. Produces: tables (summary, op counts,
ops that stayed fp32 with the reason) or the ``edgeprune.export.inspect_onnx`` dict as JSON.
"""

from __future__ import annotations

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
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.export import inspect_onnx

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; pass an .onnx file (e.g. one written by `edgeprune export`)")
    try:
        info = inspect_onnx(path)
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
        ("int8 MAC coverage", f"{100 * q['coverage_macs']:.1f} %"),
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
        console.print(f"every compute op ({q['int8_ops']}) runs int8")
    if q["fp32_ops"]:
        f = Table(title="ops that stayed fp32")
        for c in ("op", "name", "reason"):
            f.add_column(c)
        for o in q["fp32_ops"]:
            f.add_row(o["op"], o["name"], o["reason"])
        console.print(f)
    if args.layers:
        lt = Table(title="compute ops")
        for c in ("name", "op", "MACs", "precision"):
            lt.add_column(c, justify="right" if c == "MACs" else "left")
        for l in info["layers"]:
            lt.add_row(l["name"], l["op"], f"{l['macs']:,}", l["precision"])
        console.print(lt)
    return 0
