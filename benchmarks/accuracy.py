"""Accuracy benchmark: pruning + recovery on digits with the demo CNN.

Consumes: the shipped digits data and the built-in demo CNN (trained here with seed 0, the
recipe of ``edgeprune train``). Produces: JSON rows, one per method, each with the test top-1,
the unpruned baseline measured in the same run, the drop in points, MACs / params / sparsity,
seconds, the command and the seed:

- structured, adaptive schedule (5 steps) to <= 40 % of the MACs, prune + recover;
- the same plan one-shot without recovery, and the same pruned shape trained from scratch;
- unstructured 90 % (AGP, 5 steps), prune + recover;
- the same sparsity one-shot magnitude without recovery, and the same masks trained from scratch;
- the full digits recipe through ``edgeprune prune`` (adaptive, 5 steps), timed end to end.

Run: ``python benchmarks/accuracy.py --json [PATH]`` (PATH or stdout). Acceptance: both
prune + recover rows within 1.0 point of the baseline; the whole run well under 5 minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import edgeprune as ep  # noqa: E402
from edgeprune import recover  # noqa: E402
from edgeprune.prune import schedule as sched  # noqa: E402
from edgeprune.prune import sparsity  # noqa: E402

SEED = 0
TRAIN_EPOCHS = 10


def _points(x: float) -> float:
    return round(100.0 * x, 3)


def _row(name, method, model, data, base_test, seconds, command, **extra):
    x = torch.zeros(1, *data.input_shape)
    test = recover.top1(model, data.test)
    row = {
        "name": name,
        "method": method,
        "model": "edgeprune:demo-cnn",
        "data": "digits",
        "test_top1": round(test, 5),
        "baseline_test_top1": round(base_test, 5),
        "drop_points": round(_points(base_test) - _points(test), 3),
    }
    try:
        from edgeprune.prune import count_macs_params

        macs, params = count_macs_params(model, x)
        row.update(macs=int(macs), params=int(params))
    except ImportError:
        row.update(params=int(sum(p.numel() for p in model.parameters())))
    row["sparsity"] = round(sparsity.sparsity_report(model)["total"]["sparsity"], 5)
    row.update(extra)
    row.update(seconds=round(seconds, 2), command=command, seed=SEED)
    return row


def baseline(data):
    torch.manual_seed(SEED)
    model = ep.models.build("edgeprune:demo-cnn", num_classes=data.num_classes)
    model, _ = ep.models.train(model, data, epochs=TRAIN_EPOCHS, seed=SEED, progress=False)
    return model


def unstructured_rows(model, data, base_test, epochs_per_step=3, steps=5, cmd=""):
    rows = []
    t0 = time.perf_counter()
    res = sched.sparsify(
        model,
        data,
        0.9,
        schedule="agp",
        steps=steps,
        finetune_epochs=epochs_per_step,
        recover=recover.RecoverConfig(lr=0.05, seed=SEED),
    )
    rows.append(
        _row(
            "unstructured-90-agp-recover",
            "magnitude masks, AGP 5 steps, masked fine-tuning + distillation",
            res.model,
            data,
            base_test,
            time.perf_counter() - t0,
            cmd,
            steps=steps,
            epochs_per_step=epochs_per_step,
        )
    )
    t0 = time.perf_counter()
    oneshot = copy.deepcopy(model)
    masks = sparsity.make_masks(oneshot, 0.9)
    recover.apply_masks(oneshot, masks)
    rows.append(
        _row(
            "unstructured-90-oneshot-no-recovery",
            "one-shot global magnitude, no recovery",
            oneshot,
            data,
            base_test,
            time.perf_counter() - t0,
            cmd,
        )
    )
    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    scratch = ep.models.build("edgeprune:demo-cnn", num_classes=data.num_classes)
    scratch, _ = recover.finetune(
        scratch,
        data,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=1e-4,
        epochs=TRAIN_EPOCHS + steps * epochs_per_step,
        masks=res.masks,
        seed=SEED,
    )
    rows.append(
        _row(
            "unstructured-90-same-masks-from-scratch",
            "random init, the AGP run's masks fixed, trained from scratch",
            scratch,
            data,
            base_test,
            time.perf_counter() - t0,
            cmd,
            epochs=TRAIN_EPOCHS + steps * epochs_per_step,
        )
    )
    return rows


def cli_recipe_row(model, data, base_test, cmd=""):
    """The full digits recipe through the CLI (adaptive, 5 steps), timed end to end."""
    import contextlib
    import io
    import tempfile

    from edgeprune.cli.main import main as cli_main

    with tempfile.TemporaryDirectory() as tmp:
        ep.save(model, Path(tmp) / "trained")
        argv = [
            "prune",
            "--model",
            str(Path(tmp) / "trained"),
            "--data",
            "digits",
            "--budget-macs",
            "0.4",
            "--round-to",
            "4",
            "--steps",
            "5",
            "--finetune-epochs",
            "3",
            "--max-acc-drop",
            "1",
            "--seed",
            str(SEED),
            "--out",
            str(Path(tmp) / "out"),
            "--json",
        ]
        buf = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            code = cli_main(argv)
        seconds = time.perf_counter() - t0
        result = json.loads(buf.getvalue())
        pruned = ep.load(Path(tmp) / "out" / "model")
    return _row(
        "cli-adaptive-recipe-5-steps",
        "`edgeprune prune` end to end (load, scan, allocate, 5 x prune+recover, save)",
        pruned,
        data,
        base_test,
        seconds,
        cmd,
        exit_code=code,
        met=result["met"],
        cli="edgeprune " + " ".join(a if "/" not in a else "DIR" for a in argv),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write the rows as JSON to PATH (default: stdout)",
    )
    ap.add_argument("--only", choices=["structured", "unstructured"], default=None)
    args = ap.parse_args(argv)
    cmd = "python benchmarks/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    t_all = time.perf_counter()
    data = ep.data.load("digits", seed=SEED)
    t0 = time.perf_counter()
    model = baseline(data)
    base_test = recover.top1(model, data.test)
    rows = [
        _row(
            "baseline", f"demo CNN trained {TRAIN_EPOCHS} epochs", model, data, base_test, time.perf_counter() - t0, cmd
        )
    ]
    if args.only in (None, "structured"):
        rows += structured_rows(model, data, base_test, cmd=cmd)
    if args.only in (None, "structured"):
        rows.append(cli_recipe_row(model, data, base_test, cmd=cmd))
    if args.only in (None, "unstructured"):
        rows += unstructured_rows(model, data, base_test, cmd=cmd)
    by = {r["name"]: r for r in rows}
    base_macs = rows[0].get("macs")
    acceptance = {}
    if "structured-40pct-macs-adaptive-recover" in by:
        r = by["structured-40pct-macs-adaptive-recover"]
        acceptance["structured_macs_le_40pct"] = r["macs"] <= 0.4 * base_macs
        acceptance["structured_drop_le_1pt"] = r["drop_points"] <= 1.0
        acceptance["cli_recipe_under_5_min"] = by["cli-adaptive-recipe-5-steps"]["seconds"] < 300
    if "unstructured-90-agp-recover" in by:
        r = by["unstructured-90-agp-recover"]
        acceptance["unstructured_sparsity_ge_90pct"] = r["sparsity"] >= 0.9 - 1e-4
        acceptance["unstructured_drop_le_1pt"] = r["drop_points"] <= 1.0
    out = {
        "benchmark": "accuracy",
        "total_seconds": round(time.perf_counter() - t_all, 2),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "acceptance": acceptance,
        "rows": rows,
    }
    text = json.dumps(out, indent=2)
    if args.json in (None, "-"):
        print(text)
    else:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    for r in rows:
        print(
            f"{r['name']:45s} top1 {r['test_top1']:.4f}  drop {r['drop_points']:+.2f} pt  "
            f"{r.get('macs', '-')} MACs  sparsity {r['sparsity']:.2f}  {r['seconds']:.1f} s",
            file=sys.stderr,
        )
    return 0


def _reinit(model):
    torch.manual_seed(SEED)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    return model


def structured_rows(model, data, base_test, steps=5, epochs_per_step=3, round_to=4, cmd=""):
    from edgeprune.prune import search

    rows = []
    x = torch.zeros(1, *data.input_shape)
    t0 = time.perf_counter()
    res = search.search(
        model,
        data,
        x,
        search.Budget("macs", 0.4),
        max_acc_drop=1.0,
        steps=steps,
        round_to=round_to,
        finetune_epochs=epochs_per_step,
        recover=recover.RecoverConfig(lr=0.05, seed=SEED),
        seed=SEED,
    )
    cli = (
        f"edgeprune prune --model DIR_OF_TRAINED_DEMO_CNN --data digits --budget-macs 0.4 --round-to {round_to} "
        f"--steps {steps} --finetune-epochs {epochs_per_step} --max-acc-drop 1 --seed {SEED}"
    )
    rows.append(
        _row(
            "structured-40pct-macs-adaptive-recover",
            "adaptive: sensitivity scan, greedy allocation, AGP 5 steps, fine-tuning + distillation",
            res.model,
            data,
            base_test,
            time.perf_counter() - t0,
            cmd,
            met=res.met,
            kept=res.best["kept"],
            steps=steps,
            epochs_per_step=epochs_per_step,
            round_to=round_to,
            val_drop_points=round(res.best["drop_points"], 3),
            equivalent_cli=cli,
        )
    )
    # the same final channel counts, chosen in one shot by L1 norm, without recovery
    t0 = time.perf_counter()
    sizes = res.log["allocation"]["channels"]
    ratios = {g: 1.0 - k / sizes[g] for g, k in res.best["kept"].items() if k < sizes[g]}
    p = ep.plan(model, x, ratio=0.0, ratios=ratios, importance="l1", round_to=round_to, max_layer_ratio=1.0)
    oneshot = ep.apply(model, p)
    rows.append(
        _row(
            "structured-same-shape-oneshot-l1-no-recovery",
            "one-shot L1 channel selection, no recovery",
            oneshot,
            data,
            base_test,
            time.perf_counter() - t0,
            cmd,
            kept=res.best["kept"],
        )
    )
    # the same pruned shape trained from scratch (Liu et al. 2019), with the epochs of the baseline
    # plus all the recovery epochs
    t0 = time.perf_counter()
    scratch = _reinit(ep.apply(ep.models.build("edgeprune:demo-cnn", num_classes=data.num_classes), p))
    epochs = TRAIN_EPOCHS + steps * epochs_per_step
    scratch, _ = ep.models.train(scratch, data, epochs=epochs, seed=SEED, progress=False)
    rows.append(
        _row(
            "structured-same-shape-from-scratch",
            "random init of the pruned shape, trained from scratch",
            scratch,
            data,
            base_test,
            time.perf_counter() - t0,
            cmd,
            epochs=epochs,
            kept=res.best["kept"],
        )
    )
    return rows


if __name__ == "__main__":
    sys.exit(main())
