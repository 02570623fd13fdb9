"""`edgeprune quantize`: calibrate int8 scales for a model and save the QuantizedModel.

Consumes: ``--model SPEC|DIR`` (optionally ``--weights``), ``--calib DATA`` (a data spec; its train
split is the calibration set, its test split measures accuracy), ``--calib-n``, ``--method``,
``--target`` and ``--out DIR``. Produces: ``DIR/model`` (ep.save of the model as given, pruned or
not), ``DIR/folded.pt`` and ``DIR/quant.json`` (every scale, JSON), and fp32 vs int8 (fake-quant)
top-1 printed as a table or JSON. ``--max-acc-drop`` turns the accuracy drop into a gate (exit 3).
``--calib FILE.npz`` of named inputs without labels (``input_ids``, ``attention_mask``: a
transformer's calibration set) calibrates on them all and reports the cosine of int8 to fp32
outputs instead of top-1 (``DIR/example.pt`` keeps one sample for the exporters).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._progress import renderer
from .common import (
    EXIT_GATE,
    UsageError,
    add_trust_flags,
    check_at_least,
    check_model_fits_data,
    check_out,
    first_line,
    input_paths,
    load_model,
    print_json,
    staged_out,
)


# the add_parser shape of every command module on purpose: main.py registers each one, and each
# spells its own name, help, description and flags (a shared wrapper would only rename add_parser)
def add_parser(subparsers) -> None:
    from ..quant.config import METHODS

    p = subparsers.add_parser(
        "quantize",
        help="calibrate int8 scales (PTQ, optional QAT) and save them",
        description="Calibrate int8 quantization for --model on --calib data and save "
        "the model plus its scales (quant.json) to --out.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="SPEC|DIR",
        help="a model spec (edgeprune:demo-cnn, file.py:factory, ...) or a dir written by ep.save",
    )
    p.add_argument("--weights", metavar="FILE", help="state_dict to load into --model (weights_only)")
    add_trust_flags(p)
    p.add_argument(
        "--calib",
        required=True,
        metavar="DATA",
        help="calibration data spec (digits, file.npz, ...), or an .npz of named model inputs (input_ids, attention_mask, ...)",
    )
    p.add_argument("--calib-n", type=int, default=512, metavar="N", help="calibration samples (default 512)")
    p.add_argument("--method", choices=METHODS, default="percentile", help="range calibration (default percentile)")
    p.add_argument("--percentile", type=float, default=99.99, help="kept percentage for --method percentile")
    # one add_argument per flag on purpose: each flag's name, type, default and help are its own
    p.add_argument(
        "--target",
        metavar="T",
        help="device profile (rpi4, x86-avx2, jetson-orin-nano, ...) "
        "that sets activation dtype/symmetry and Q/DQ placement",
    )
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per layer (default: per channel)")
    p.add_argument(
        "--qat-epochs",
        type=int,
        default=0,
        metavar="N",
        help="fine-tune N epochs through fake quantization after calibration (default 0)",
    )
    p.add_argument(
        "--max-acc-drop",
        type=float,
        metavar="POINTS",
        help="fail (exit 3) when int8 top-1 is more than POINTS percentage points below fp32",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    import edgeprune as ep
    from edgeprune.quant import CalibrationError, Int8UnsupportedError, QuantizeError, qat
    from edgeprune.quant import inputs as model_inputs

    check_at_least(("--calib-n", args.calib_n, 1))
    if not 50 < args.percentile <= 100:
        raise UsageError(f"--percentile {args.percentile}: must be in (50, 100] (the kept percentage, e.g. 99.99)")
    check_at_least(("--qat-epochs", args.qat_epochs, 0))
    check_out(args.out, args.force, inputs=input_paths(args))
    if args.target:
        try:
            ep.targets.load(args.target)
        except (ValueError, FileNotFoundError) as e:
            raise UsageError(f"--target {args.target}: {first_line(e)}") from None
    try:
        named = ep.data.is_named_inputs(args.calib)
        if named:
            if args.qat_epochs or args.max_acc_drop is not None:
                raise UsageError(
                    f"--calib {args.calib} holds named model inputs without labels; --qat-epochs and "
                    "--max-acc-drop need labelled data (an .npz with x and y, or a dataset spec)"
                )
            inputs = ep.data.load_inputs(args.calib)
            data = model_inputs.split(inputs, 32)
        else:
            data = ep.data.load(args.calib)
    except ValueError as e:
        raise UsageError(f"--calib {args.calib}: {first_line(e)}") from None
    model = load_model(args.model, args.weights, args.trust_pickle, args.trust_code)
    if not named:
        check_model_fits_data(model, data, f"--model {args.model}", f"--calib {args.calib}")
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    try:
        qm = ep.quantize(
            model,
            data,
            method=args.method,
            per_channel=not args.per_tensor,
            target=args.target,
            calib_n=args.calib_n,
            progress=renderer(progress),
            percentile=args.percentile,
        )
    except CalibrationError as e:
        raise UsageError(f"--calib {args.calib}: {first_line(e)}") from None
    except Int8UnsupportedError as e:
        raise UsageError(f"--target {args.target}: {first_line(e)}") from None
    except QuantizeError as e:
        raise UsageError(f"--model {args.model}: {first_line(e)}") from None
    except ValueError as e:  # bad --percentile and the like
        raise UsageError(first_line(e)) from None
    out = Path(args.out)
    agreement = fp32 = int8 = drop = None
    with staged_out(out, args.force, inputs=input_paths(args)) as tmp:
        if args.qat_epochs:
            qm = qat(qm, data, epochs=args.qat_epochs, progress=renderer(progress))
        if named:  # no labels: how closely the int8 outputs follow the fp32 ones
            agreement = model_inputs.output_cosine(model, qm, inputs)
            qm.metadata.update({"calib": args.calib, "output_cosine": agreement})
        else:
            fp32 = ep.models.evaluate(model, data.test)["top1"]
            int8 = ep.models.evaluate(qm.module, data.test)["top1"]
            drop = 100.0 * (fp32 - int8)
            qm.metadata.update({"calib": args.calib, "fp32_top1": fp32, "int8_top1": int8})
        qm.save(tmp)
    result = {
        "out": str(out),
        "model": args.model,
        "calib": args.calib,
        **qm.summary(),
        "fp32_top1": fp32,
        "int8_top1": int8,
        "acc_drop_points": drop,
        "output_cosine": agreement,
        "inputs": qm.input_names,
        "calibration_samples": qm.metadata.get("calibration_samples"),
    }
    gate_failed = args.max_acc_drop is not None and drop is not None and drop > args.max_acc_drop
    result["gate"] = (
        None if args.max_acc_drop is None else {"max_acc_drop": args.max_acc_drop, "passed": not gate_failed}
    )
    if args.json:
        print_json(result)
    else:
        _print_table(result)
    if gate_failed:
        print(
            f"error: int8 top-1 dropped {drop:.2f} points (> --max-acc-drop {args.max_acc_drop}); "
            "try --method percentile/mse, more --calib-n, or --qat-epochs",
            file=sys.stderr,
        )
        return EXIT_GATE
    return 0


def _print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"int8 quantization -> {r['out']}")
    t.add_column("setting")
    t.add_column("value")
    rows = [
        ("method", r["method"]),
        ("target", r["target"] or "(none)"),
        (
            "activations",
            f"{r['activation_dtype']} {'symmetric' if r['symmetric_activations'] else 'asymmetric'}"
            f", per tensor, Q/DQ on {r['placement'].replace('_', ' + ')}",
        ),
        (
            "weights",
            f"int8 symmetric {'per channel' if r['per_channel'] else 'per tensor'}"
            f"{' (7-bit, reduce_range)' if r['reduce_range'] else ''}",
        ),
        ("quantized layers", str(r["quantized_layers"])),
        ("activation points", str(r["activation_points"])),
        ("calibration samples", str(r["calibration_samples"])),
    ]
    if r["inputs"]:
        rows.append(("inputs", ", ".join(r["inputs"])))
    if r["output_cosine"] is not None:
        c = r["output_cosine"]
        rows.append(
            ("int8 vs fp32 output cosine", f"mean {c['mean']:.5f}, min {c['min']:.5f} over {c['samples']} samples")
        )
    else:
        rows.append(
            (
                "top-1 fp32 / int8",
                f"{100 * r['fp32_top1']:.2f} % / {100 * r['int8_top1']:.2f} % "
                f"({r['acc_drop_points']:+.2f} points drop)",
            )
        )
    for s in r["skipped"]:
        rows.append((f"kept fp32: {s['name']}", s["reason"]))
    for k, v in rows:
        t.add_row(k, v)
    Console().print(t)
