"""`edgeprune export`: write ONNX and TFLite files (fp32, fp16, int8) from a saved model or quantized dir.

Consumes: ``DIR`` (written by ``edgeprune quantize`` / ``QuantizedModel.save``, or by ``ep.save``),
``--format`` (repeatable), ``--out DIR``, ``--target``, ``--dynamic-batch``, ``--opset``, ``--io``,
``--sparse``/``--dense``. Produces: the files of ``edgeprune.export.formats`` in ``--out`` (each
checked by its family: the full ONNX checker, or a LiteRT load), and a table (or JSON) of format,
path, size and int8 coverage.
"""

from __future__ import annotations

from pathlib import Path

from .common import UsageError, add_trust_flags, check_out, input_paths, path_error, print_json, staged_out


# the add_parser shape of every command module on purpose: main.py registers each one, and each
# spells its own name, help, description and flags (a shared wrapper would only rename add_parser)
def add_parser(subparsers) -> None:
    from edgeprune.export.formats import FORMATS

    p = subparsers.add_parser(
        "export",
        help="export ONNX / TFLite (fp32 / fp16 / int8) from a saved model",
        description="Export a model dir (ep.save) or a quantized dir (edgeprune quantize) to the given formats.",
    )
    p.add_argument("dir", metavar="DIR", help="a quantized dir (with quant.json) or a model dir (ep.save)")
    p.add_argument(
        "--format",
        action="append",
        choices=list(FORMATS),
        dest="formats",
        metavar="FORMAT",
        help=f"one of {', '.join(FORMATS)}; repeat for several (default: onnx, plus onnx-int8 for a quantized dir)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--target", metavar="T", help="device profile recorded in the files (and checked for int8)")
    p.add_argument("--dynamic-batch", action="store_true", help="make the batch dimension symbolic")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (17 to 23, default 17)")
    p.add_argument(
        "--io",
        choices=["float", "int8"],
        default="float",
        help="tflite-int8 input/output type (default float: QUANTIZE/DEQUANTIZE inside the file)",
    )
    sp = p.add_mutually_exclusive_group()
    sp.add_argument(
        "--sparse",
        action="store_true",
        default=None,
        help="TFLite: store every 1x1-conv/FC fp32 and 1x1-conv int8 weight sparse (default: those with >= 70%% zeros)",
    )
    sp.add_argument("--dense", dest="sparse", action="store_false", help="TFLite: never store weights sparse")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_trust_flags(p, pickle=False)
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.export import channel_alignment, export, inspect_file
    from edgeprune.quant import Int8UnsupportedError

    src = Path(args.dir)
    source, formats, quantized = _source_and_formats(args, src)
    out = Path(args.out)
    try:
        with staged_out(out, args.force, inputs=input_paths(args)) as tmp:
            staged = export(
                source,
                tmp,
                formats=formats,
                target=args.target,
                dynamic_batch=args.dynamic_batch,
                opset=args.opset,
                io=args.io,
                sparse=args.sparse,
            )
    except Int8UnsupportedError as e:
        raise UsageError(f"--target {args.target}: {str(e).splitlines()[0]}") from None
    except UsageError:
        raise
    except ValueError as e:
        raise path_error(src, e) from None
    paths = {fmt: out / p.name for fmt, p in staged.items()}
    model = source.original if quantized else source
    align = channel_alignment(model, args.target) if args.target else None
    rows = [_row(fmt, path, inspect_file(path)) for fmt, path in paths.items()]
    if args.json:
        print_json({"source": str(src), "out": str(out), "files": rows, "channel_alignment": align})
    else:
        _print_table(src, out, rows, align, args.target)
    return 0


def _source_and_formats(args, src: Path):
    """``(source, formats, quantized)`` after checking the flags, the source directory and the target."""
    from edgeprune.export import load_source
    from edgeprune.export.formats import get as get_format
    from edgeprune.quant import QuantizedModel

    if not src.is_dir():
        raise UsageError(f"{src}: no such directory; pass a dir written by `edgeprune quantize` or ep.save")
    from ..export import MAX_OPSET, MIN_OPSET

    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise UsageError(f"--opset {args.opset}: edgeprune writes opsets {MIN_OPSET} to {MAX_OPSET}")
    check_out(args.out, args.force, inputs=input_paths(args))
    try:
        source = load_source(src, trust_code=args.trust_code)
    except (ValueError, FileNotFoundError) as e:
        raise path_error(src, e) from None
    quantized = isinstance(source, QuantizedModel)
    formats = args.formats or (["onnx", "onnx-int8"] if quantized else ["onnx"])
    needs_scales = [f for f in formats if get_format(f).needs_quantized]
    if needs_scales and not quantized:
        raise UsageError(
            f"{src}: {', '.join(needs_scales)} needs int8 scales; run `edgeprune quantize --model {src} "
            "--calib DATA --out QDIR` and export QDIR"
        )
    if args.target:
        import edgeprune as ep

        try:
            ep.targets.load(args.target)
        except (ValueError, FileNotFoundError) as e:
            raise UsageError(f"--target {args.target}: {str(e).splitlines()[0]}") from None
    return source, formats, quantized


def _row(fmt: str, path: Path, info: dict) -> dict:
    return {
        "format": fmt,
        "path": str(path),
        "size_bytes": info["size_bytes"],
        "params": info["params"],
        "macs": info["macs"],
        "int8_mac_coverage": info["int8"]["coverage_macs"],
        "opset": info["opset"],
    }


def _print_table(src: Path, out: Path, rows: list[dict], align: dict | None, target: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"exported {src} -> {out}")
    for c in ("format", "file", "size", "MACs", "int8 MACs"):
        t.add_column(c, justify="right" if c in ("size", "MACs", "int8 MACs") else "left")
    for r in rows:
        t.add_row(
            r["format"],
            r["path"],
            f"{r['size_bytes'] / 1024:.1f} KiB",
            f"{r['macs']:,}",
            f"{100 * r['int8_mac_coverage']:.0f} %",
        )
    console = Console()
    console.print(t)
    if align and align["misaligned"]:
        names = ", ".join(f"{m['layer']} ({m['channels']})" for m in align["misaligned"])
        console.print(
            f"note: {target} runs channels in multiples of {align['multiple']}; "
            f"these layers are padded: {names} (prune with --round-to {align['multiple']})",
            style="yellow",
            highlight=False,
        )
