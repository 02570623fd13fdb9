"""`edgeprune bench ARTIFACT`: measure latency on this machine (and optionally estimate a target).

Consumes: an artifact path (.onnx, .tflite, or an ep.save directory) and run settings; with
``--device user@host[:port]`` the run happens on that device over SSH (edgeprune.remote).
Produces: a table of timings on stdout (or JSON with ``--json``, to stdout or a file), exit 0;
exit 2 on a missing artifact, an unknown runtime/target, a runtime that cannot load it, or a
device that cannot be reached, refuses the key or lacks the runtime.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .common import UsageError, add_device_flags, print_json

MAX_THREADS = 256
MAX_RUNS = 100_000


# the add_parser shape of every command module on purpose: main.py registers each one, and each
# spells its own name, help, description and flags (a shared wrapper would only rename add_parser)
def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure latency of an artifact with onnxruntime / litert / torch",
        description="Time an exported model on this machine: init, first run, mean, median, min, max, std, "
        "p90, p99, peak RSS and (ONNX Runtime) a per-layer profile. Runs the same on a Pi or Jetson.",
    )
    p.add_argument("artifact", help="model.onnx / model.int8.onnx, *.tflite, or a model directory (ep.save)")
    p.add_argument(
        "--runtime",
        choices=["onnxruntime", "litert", "tflite-runtime", "torch", "tensorrt", "edgeprune"],
        default=None,
        help="default: from the artifact (.onnx -> onnxruntime, .tflite -> litert, directory -> torch); "
        "tensorrt builds an engine with the Jetson's trtexec",
    )
    add_device_flags(
        p,
        device_help="run on this device over SSH (system ssh/scp, ~/.ssh/config honoured); needs python3, numpy "
        "and the runtime there, not edgeprune",
        remote_python_default="python3",
        remote_python_help="with --device: the device's Python (default python3)",
        remote_tmp=True,
    )
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs after the first (default 5)")
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--input-shape", default=None, metavar="C,H,W", help="for models with dynamic input dims")
    p.add_argument("--target", default=None, help="also print the latency estimate for this device profile")
    p.add_argument("--no-layers", action="store_true", help="skip the ONNX Runtime per-layer profile")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="measure in this process (default: a fresh one, so peak RSS is the model's own)",
    )
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="allow a model directory whose model.json names a factory outside edgeprune's registry to run it",
    )
    p.add_argument("--top", type=int, default=10, help="layers shown in the per-layer table (default 10)")
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help="write the result as JSON to FILE (or stdout when no FILE is given)",
    )
    p.set_defaults(run=run)


def _shape(text):
    if text is None:
        return None
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise UsageError(f"--input-shape {text!r} is not C,H,W with positive integers; e.g. --input-shape 3,224,224")
    return dims


def run(args: argparse.Namespace) -> int:
    # the module, not the re-exported function of the same name (it has BenchError too)
    bench = importlib.import_module("edgeprune.bench")
    artifact = Path(args.artifact)
    if not artifact.exists():
        raise UsageError(f"artifact {artifact} does not exist; pass a file written by `edgeprune build` or `export`")
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        raise UsageError("--threads and --runs must be >= 1 and --warmup >= 0")
    # upper bounds: a typo must not start thousands of threads or a run of days
    if args.threads > MAX_THREADS:
        raise UsageError(f"--threads {args.threads}: at most {MAX_THREADS}; a device has fewer cores than that")
    if args.top < 0:
        raise UsageError(f"--top {args.top}: must be >= 0 (0 shows no per-layer table)")
    if args.runs > MAX_RUNS or args.warmup > MAX_RUNS:
        raise UsageError(f"--runs and --warmup: at most {MAX_RUNS} each (got {args.runs} and {args.warmup})")
    shape = _shape(args.input_shape)
    profile = None
    if args.target:
        profile = _load_target(args.target)
    if args.device:
        result = _bench_on_device(args, artifact, shape)
    else:
        result = _bench_here(args, artifact, shape, bench)
    out = result.to_dict()
    if profile is not None:
        out["target_estimate"] = _estimate(artifact, result, profile, shape, args.trust_code)

    if args.json:
        if args.json == "-":
            print_json(out)
        else:
            from edgeprune import fsutil

            fsutil.write_text(args.json, json.dumps(out, indent=2) + "\n")
    if args.json != "-":
        _print_human(out, args.top)
    for w in out["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _bench_on_device(args, artifact: Path, shape):
    remote = importlib.import_module("edgeprune.remote")
    try:
        # every argument by keyword, as pipeline._device_latency's call too, on purpose: here they come
        # from this command's flags, there from a BuildSpec (bench_remote itself is the shared code)
        return remote.bench_remote(
            artifact,
            args.device,
            identity=args.identity,
            runtime=args.runtime,
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
            input_shape=shape,
            layer_profile=not args.no_layers,
            remote_python=args.remote_python,
            ssh_options=args.ssh_option,
            remote_tmp=args.remote_tmp,
        )
    except remote.RemoteError as e:
        raise UsageError(str(e)) from None  # it names the device already


def _bench_here(args, artifact: Path, shape, bench):
    try:
        runtime = args.runtime or bench.default_runtime(artifact)
        return bench.bench(
            artifact,
            runtime=runtime,
            threads=args.threads,
            warmup=args.warmup,
            runs=args.runs,
            input_shape=shape,
            layer_profile=not args.no_layers,
            isolate=not args.in_process,
            trust_code=args.trust_code,
        )
    except bench.BenchError as e:
        raise UsageError(f"bench {artifact}: {e}") from None


def _load_target(name):
    from edgeprune import targets

    from .targets import announce

    announce(name)
    try:
        return targets.load(name)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise UsageError(f"--target {name}: {e}; see `edgeprune targets list`") from None


def _estimate(artifact: Path, result, profile, shape, trust_code: bool = False):
    estimate = importlib.import_module("edgeprune.estimate")
    threads = min(result.threads, int(profile.cpu.cores))
    if artifact.suffix.lower() == ".onnx":
        est = estimate.estimate(artifact, profile, precision=None, threads=threads, input_shape=shape)
    elif artifact.is_dir():
        from edgeprune.io import load

        est = estimate.estimate(
            load(artifact, trust_code=trust_code), profile, precision="fp32", threads=threads, input_shape=shape
        )
    else:
        return {"estimate": True, "error": f"no estimator for {artifact.suffix} files; estimate the .onnx instead"}
    d = est.to_dict()
    d.pop("layers")  # the per-layer roofline is in `ep.estimate(...)`; keep bench output short
    return d


def _print_human(out, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    # stdout unless the JSON went there
    console = Console(stderr=False, highlight=False)
    where = f" · on {out['host']['device']}" if out["host"].get("device") else ""
    t = Table(
        title=f"{out['artifact']}{where} · {out['runtime_version']} · {out['threads']} thread(s) · {out['runs']} runs"
    )
    t.add_column("statistic")
    t.add_column("value", justify="right")
    for k in ("init", "first", "mean", "median", "min", "max", "std", "p90", "p99"):
        t.add_row(f"{k} ms", f"{out[k + '_ms']:.3f}")
    t.add_row("cv", f"{100 * out['cv']:.1f}%")
    t.add_row("peak RSS", "-" if out["peak_rss_mb"] is None else f"{out['peak_rss_mb']:.1f} MB")
    console.print(t)
    if out["layers"]:
        lt = Table(
            title=f"slowest {min(top, len(out['layers']))} of {len(out['layers'])} nodes ({out['runtime']} profile)"
        )
        lt.add_column("node")
        lt.add_column("op")
        lt.add_column("mean ms", justify="right")
        lt.add_column("share", justify="right")
        for row in out["layers"][:top]:
            lt.add_row(row["name"], row["op_type"], f"{row['mean_ms']:.4f}", f"{100 * row['share']:.1f}%")
        console.print(lt)
    est = out.get("target_estimate")
    if est:
        if "error" in est:
            console.print(f"target estimate: {est['error']}")
        else:
            console.print(
                f"[bold]estimate[/bold] for {est['target']} ({est['precision']}, {est['threads']} threads): "
                f"{est['total_ms']:.2f} ms (a calibrated roofline, not a measurement)"
            )


def main(argv: list[str] | None = None) -> int:
    """Torch-free entry point for devices: ``python -m edgeprune.cli.bench ARTIFACT [flags]``.

    ``edgeprune bench`` builds every subcommand's parser, and some of those need torch; this
    one builds only its own, so a Pi or Jetson with just numpy + onnxruntime (or LiteRT) can
    run it. Same flags, output and exit codes.
    """
    from .common import EXIT_USAGE
    from .main import _Parser

    parser = _Parser(prog="python -m edgeprune.cli")
    add_parser(parser.add_subparsers(dest="command", parser_class=_Parser))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
