"""The prune recipe of `edgeprune prune`: recovery, schedules, budgets and sparsity.

Consumes: the ``prune`` parser (to add the flags), then the parsed flags, the loaded model and an
example input. Produces: ``--out`` (model/, result.json, plan(s), schedule / search / sparsity logs),
the result table or JSON on stdout, and whether every gate passed (the CLI exits 3 when not).
The work itself is done by ``edgeprune.prune.search`` (adaptive budgets), ``edgeprune.prune.schedule``
(schedules, sparsity) and ``edgeprune.recover``; this module only turns flags into their arguments.
The leading underscore keeps it out of the subcommand list (cli/main.py).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..errors import UserError
from ._progress import renderer
from .common import check_at_least, print_json

_RECIPE_FLAGS = (
    "data",
    "schedule",
    "steps",
    "budget_macs",
    "budget_params",
    "budget_latency",
    "sparsity",
    "regularize",
    "max_acc_drop",
    "threshold",
)


def add_arguments(p, how) -> None:
    """Add the recovery / schedule / budget / sparsity flags to the ``prune`` parser.

    ``how`` is the parser's mutually exclusive group of targets (--ratio, --target-macs, --plan):
    a budget or a sparsity is one more kind of target."""
    how.add_argument(
        "--budget-macs",
        type=float,
        metavar="F",
        help="adaptive search to this MAC budget (fraction <= 1 or a count); implies --schedule adaptive",
    )
    # one add_argument per flag on purpose: each flag's name, type, default and help are its own
    how.add_argument(
        "--budget-params",
        type=float,
        metavar="F",
        help="adaptive search to this parameter budget (fraction <= 1 or a count)",
    )
    how.add_argument(
        "--budget-latency", type=float, metavar="MS", help="adaptive search to this estimated latency in ms on --target"
    )
    how.add_argument(
        "--sparsity",
        type=float,
        metavar="S",
        help="unstructured/block weight sparsity in [0, 1) instead of removing channels",
    )
    g = p.add_argument_group("recovery and schedules")
    _add_recovery_arguments(g)
    _add_sparsity_arguments(g)


def _add_recovery_arguments(g) -> None:
    from ..prune.schedule import SCHEDULES
    from ..recover import regularizer_names

    g.add_argument(
        "--data",
        metavar="DATA",
        help="data spec to fine-tune and evaluate on (e.g. digits); needed by every option of this group",
    )
    g.add_argument(
        "--schedule",
        choices=(*SCHEDULES, "adaptive", "admm"),
        default=None,
        help="oneshot, linear, agp (cubic), adaptive, or admm (weights: ADMM towards --sparsity, rho "
        "rising 3e-2 -> 1) (default: adaptive with a --budget-*, else oneshot)",
    )
    g.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help="pruning steps, each followed by recovery (default 5; 1 for oneshot)",
    )
    g.add_argument("--finetune-epochs", type=int, default=3, metavar="N", help="recovery epochs per step (default 3)")
    g.add_argument("--lr", type=float, default=0.05, metavar="LR", help="recovery learning rate (default 0.05, SGD)")
    g.add_argument(
        "--distill",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="distil from the unpruned model during recovery (default on)",
    )
    g.add_argument(
        "--max-acc-drop",
        type=float,
        default=None,
        metavar="POINTS",
        help="largest allowed validation top-1 drop in points (default 1.0 for adaptive); "
        "exit 3 with the best point reached when it cannot be met",
    )
    # one add_argument per flag on purpose: each flag's name, type, default and help are its own
    g.add_argument("--target", metavar="PROFILE", help="device profile for --budget-latency (e.g. rpi4)")
    g.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "int8"),
        help="precision of the --budget-latency estimate (default fp32)",
    )
    # one add_argument per flag on purpose: each flag's name, type, default and help are its own
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="threads of the --budget-latency estimate (default: all cores of the target)",
    )
    g.add_argument(
        "--regularize",
        choices=regularizer_names(),
        default=None,
        help="sparsity regulariser, applied in a sparsity-training phase before the first cut and in "
        "the recoveries between steps: " + ", ".join(regularizer_names()),
    )
    g.add_argument("--reg-lambda", type=float, default=None, metavar="L", help="regulariser strength")


def _add_sparsity_arguments(g) -> None:
    """The weight-sparsity flags; their choices are the registries' and tables' names, so a criterion or
    threshold rule added there is accepted here without a second list."""
    from ..prune.sparsity import PATTERNS, criterion_names
    from ..prune.threshold import METHODS

    # one add_argument per flag on purpose: each flag's name, type, default and help are its own
    g.add_argument(
        "--sparsity-pattern",
        choices=PATTERNS,
        default="unstructured",
        help="pattern of --sparsity (2:4 is 50 %% by definition)",
    )
    g.add_argument(
        "--sparsity-criterion",
        choices=criterion_names(),
        default="magnitude",
        help="weight score for --sparsity: magnitude |w|, taylor |w*grad|, gradient |grad|, "
        "activation |w|*||x|| (Wanda), random (default magnitude)",
    )
    g.add_argument(
        "--threshold",
        choices=METHODS,
        default=None,
        help="dynamic threshold recomputed at every step: solve (meet the step's --ratio/--sparsity "
        "share), or with --threshold-value: relative (coef x max score), percentile, absolute, mean "
        "(coef x mean score), iterative (coef x max, raised x1.5 every step until the step's share goes); "
        "capped by the step's share; without --ratio/--sparsity a value rule decides alone",
    )
    g.add_argument(
        "--threshold-value",
        type=float,
        default=None,
        metavar="V",
        help="coefficient (relative), quantile in [0, 1] (percentile) or score (absolute)",
    )
    # one add_argument per flag on purpose: each flag's name, type, default and help are its own
    g.add_argument(
        "--threshold-scope",
        choices=("global", "layer"),
        default="global",
        help="compare scores across all layers (global, default) or within each layer",
    )


def wants_recipe(args) -> bool:
    """True when the run needs this module (recovery, a schedule, a budget or sparsity)."""
    return any(getattr(args, a, None) is not None for a in _RECIPE_FLAGS)


def _fail(msg: str):
    raise UserError(msg)


def _budgets(args) -> list[tuple[str, float]]:
    from ..prune.search import BUDGET_KINDS

    return [(k, getattr(args, f"budget_{k}")) for k in BUDGET_KINDS if getattr(args, f"budget_{k}") is not None]


def _check_recipe_args(args) -> str:
    budget = _budgets(args)
    schedule = args.schedule or ("adaptive" if budget else "oneshot")
    if not args.data:
        _fail("--data is required for recovery, schedules, budgets and --sparsity (e.g. --data digits)")
    if args.plan:
        _fail("--plan replays a plan as is; drop --data/--schedule/recovery flags, or prune with --ratio")
    if schedule == "adaptive" and not budget:
        _fail("--schedule adaptive needs a budget: --budget-macs F, --budget-params F or --budget-latency MS")
    if budget and schedule != "adaptive":
        _fail(f"--budget-{budget[0][0]} works with --schedule adaptive, not {schedule}")
    if args.sparsity is not None and schedule == "adaptive":
        _fail("--sparsity uses --schedule oneshot, linear or agp")
    if args.budget_latency is not None and not args.target:
        _fail("--budget-latency needs --target PROFILE (e.g. --target rpi4); see `edgeprune targets list`")
    if args.sparsity is not None and not 0 <= args.sparsity < 1:
        _fail(f"--sparsity {args.sparsity}: must be in [0, 1)")
    if args.sparsity is not None and args.sparsity_pattern == "2:4" and args.sparsity != 0.5:
        _fail(f"--sparsity {args.sparsity} with --sparsity-pattern 2:4: 2:4 keeps 2 of 4, pass --sparsity 0.5")
    check_at_least(("--steps", args.steps, 1), ("--finetune-epochs", args.finetune_epochs, 0))
    if not 0 < args.lr < math.inf:  # (nan fails both)
        _fail(f"--lr {args.lr}: must be a finite number > 0")
    if args.threshold is not None:
        if schedule == "adaptive":
            _fail(
                "--threshold applies to --schedule oneshot, linear or agp (the adaptive search allocates ratios itself)"
            )
        if args.threshold != "solve" and args.threshold_value is None:
            _fail(f"--threshold {args.threshold} needs --threshold-value V")
        if args.target_macs is not None:
            _fail("--threshold selects channels by score; combine it with --ratio, not --target-macs")
    check_at_least(("--max-acc-drop", args.max_acc_drop, 0), unit="points")
    for k, v in budget:
        if not v > 0:
            _fail(f"--budget-{k} {v}: must be > 0")
    return schedule


def _load_data(args, example_inputs):
    import edgeprune as ep

    try:
        data = ep.data.load(args.data, seed=args.seed)
    except (ValueError, FileNotFoundError) as e:
        _fail(f"--data {args.data}: {str(e).splitlines()[0]}")
    if tuple(data.input_shape) != tuple(example_inputs.shape[1:]):
        _fail(
            f"--data {args.data}: samples are {tuple(data.input_shape)}, the model takes "
            f"{tuple(example_inputs.shape[1:])}; pass matching --data or --input-shape"
        )
    if args.budget_latency is not None:
        try:
            ep.targets.load(args.target)
        except (ValueError, FileNotFoundError) as e:
            _fail(f"--target {args.target}: {str(e).splitlines()[0]}")
    return data


def _threshold(args):
    if args.threshold is None:
        return None
    from ..prune.threshold import DynamicThreshold

    try:
        return DynamicThreshold(
            args.threshold,
            args.threshold_value,
            args.threshold_scope,
            max_layer_ratio=0.99 if args.sparsity is not None else args.max_layer_ratio,
        )
    except ValueError as e:
        _fail(f"--threshold {args.threshold}: {e}")


def _common(args, model) -> dict:
    """The keyword arguments every schedule takes: recovery, distillation, regularisers, progress."""
    from .. import recover as rec

    regs = [rec.make_regularizer(args.regularize, model, args.reg_lambda)] if args.regularize else []
    return {
        "recover": rec.RecoverConfig(
            epochs=args.finetune_epochs, lr=args.lr, seed=args.seed, **getattr(args, "recover_overrides", {})
        ),
        "distill": args.distill,
        "regularizers": regs,
        "progress": renderer(not args.json and sys.stderr.isatty()),
    }


def _run_adaptive(args, model, data, example_inputs, steps, out, common):
    """(pruned model, new plans, met, reason, files, extra) of the adaptive budget search."""
    from ..prune.search import Budget, search, write_log

    kind, value = _budgets(args)[0]
    budget = Budget(
        kind, value, target=args.target if kind == "latency" else None, precision=args.precision, threads=args.threads
    )
    max_drop = 1.0 if args.max_acc_drop is None else args.max_acc_drop
    try:
        res = search(
            model,
            data,
            example_inputs,
            budget,
            max_acc_drop=max_drop,
            steps=steps,
            importance=args.importance,
            round_to=args.round_to,
            ignore=tuple(args.ignore),
            seed=args.seed,
            **common,
        )
    except ValueError as e:
        _fail(f"--budget-{kind}: {str(e).splitlines()[0]}")
    files = {k: str(v) for k, v in write_log(res.log, out).items()}
    return res.model, res.plans, res.met, res.reason, files, {"budget": res.log["budget"], "best": res.best}


def _run_sparsity(args, model, data, schedule, steps, out, common):
    """(pruned model, masks, files, extra) of a weight-sparsity schedule."""
    from ..fsutil import write_json
    from ..prune.schedule import sparsify
    from ..prune.sparsity import sparsity_report
    from ._tables import sparsity_table

    res = sparsify(
        model,
        data,
        args.sparsity,
        pattern=args.sparsity_pattern,
        criterion=args.sparsity_criterion,
        schedule=schedule,
        steps=steps,
        ignore=tuple(args.ignore),
        threshold=_threshold(args),
        **common,
    )
    rep = sparsity_report(res.model, res.masks, pattern=args.sparsity_pattern)
    files = {
        "sparsity": str(write_json(out / "sparsity.json", rep)),
        "schedule": str(write_json(out / "schedule.json", res.to_dict())),
    }
    if not args.json:
        from rich.console import Console

        Console().print(sparsity_table(rep))
    return res.model, res.masks, files, {"sparsity": rep["total"], "pattern": args.sparsity_pattern}


def _run_structured(args, model, data, example_inputs, schedule, steps, out, common):
    """(pruned model, new plans, files) of a channel-pruning schedule."""
    from ..fsutil import write_json
    from ..prune.schedule import prune_structured

    ratio = args.ratio if args.ratio is not None else (None if args.target_macs is not None else 0.5)
    try:
        res = prune_structured(
            model,
            data,
            example_inputs,
            ratio=ratio,
            target_macs=args.target_macs,
            schedule=schedule,
            steps=steps,
            importance=args.importance,
            round_to=args.round_to,
            global_ranking=False if args.per_layer else None,
            ignore=tuple(args.ignore),
            max_layer_ratio=args.max_layer_ratio,
            threshold=_threshold(args),
            seed=args.seed,
            **common,
        )
    except ValueError as e:
        _fail(f"--model {args.model}: {str(e).splitlines()[0]}")
    return res.model, res.plans, {"schedule": str(write_json(out / "schedule.json", res.to_dict()))}


def run_recipe(args, model, example_inputs, out: Path) -> bool:
    """Run the prune recipe the flags describe, write into ``out`` (the staging directory that
    becomes ``--out`` on success), print the result.

    Returns True when every gate passed (budget met and the drop within --max-acc-drop), False
    when the best point reached misses one (the CLI exits 3). Raises ``UserError`` for bad
    flags or data."""
    from .. import recover as rec
    from ..prune.macs import count_macs_params
    from ..prune.plan import as_plan_list

    schedule = _check_recipe_args(args)
    data = _load_data(args, example_inputs)
    steps = args.steps or (1 if schedule == "oneshot" else 5)
    common = _common(args, model)
    _threshold(args)  # bad threshold flags fail before any output exists
    model.eval()
    macs0, params0 = count_macs_params(model, example_inputs)
    base = {"macs": macs0, "params": params0, "val_top1": rec.top1(model, data.val)}
    base["test_top1"] = rec.top1(model, data.test)
    out = Path(out)
    met, reason, extra, masks = True, "", {}, None
    plans = as_plan_list(getattr(model, "edgeprune_plan", None))  # a model loaded from an ep.save dir keeps its plans
    if schedule == "adaptive":
        pruned, new_plans, met, reason, files, extra = _run_adaptive(
            args, model, data, example_inputs, steps, out, common
        )
    elif args.sparsity is not None:
        pruned, masks, files, extra = _run_sparsity(args, model, data, schedule, steps, out, common)
        new_plans = []
    else:
        pruned, new_plans, files = _run_structured(args, model, data, example_inputs, schedule, steps, out, common)
    pruned.eval()
    val, test = rec.top1(pruned, data.val), rec.top1(pruned, data.test)
    drop_val = 100 * (base["val_top1"] - val)
    if schedule != "adaptive" and args.max_acc_drop is not None and drop_val > args.max_acc_drop + 1e-9:
        met = False
        reason = f"the validation drop {drop_val:.2f} points exceeds --max-acc-drop {args.max_acc_drop}"
    result = {"out": str(out), "model": args.model, "data": args.data, "schedule": schedule, "steps": steps}
    result.update({"seed": args.seed, "met": met, "reason": reason, "before": base})
    _save(args, pruned, plans + list(new_plans), new_plans, masks, result, files, val, test)
    macs1, params1 = count_macs_params(pruned, example_inputs)
    result["after"] = {"macs": macs1, "params": params1, "val_top1": val, "test_top1": test}
    result["macs_ratio"] = macs1 / macs0 if macs0 else None
    result["drop_points"] = {"val": drop_val, "test": 100 * (base["test_top1"] - test)}
    result["plan_hashes"] = [p.hash for p in new_plans]
    # the files are written in the staging directory; the result names where they end up
    shown = Path(args.out)
    result["out"] = str(shown)
    result["files"] = {k: str(shown / Path(v).relative_to(out)) for k, v in files.items()}
    result.update(extra)
    return _finish(args, result, out)


def _save(args, pruned, all_plans, new_plans, masks, result, files, val, test) -> None:
    """model/ (with every plan that rebuilds it) and plan.json / plans.json of this run's plans."""
    from ..fsutil import write_json
    from ..io import save

    out = Path(result["out"])
    meta = {"pruned_from": args.model, "schedule": result["schedule"], "data": args.data}
    meta.update({"val_top1": val, "test_top1": test, "met": result["met"]})
    plan = all_plans if len(all_plans) > 1 else (all_plans[0] if all_plans else None)
    save(pruned, out / "model", plan=plan, masks=masks, metadata=meta)
    files["model"] = str(out / "model")
    if new_plans:
        files["plan"] = str(write_json(out / "plan.json", new_plans[-1].to_dict()))
        if len(new_plans) > 1:
            files["plans"] = str(write_json(out / "plans.json", [p.to_dict() for p in new_plans]))


def _finish(args, result: dict, out) -> bool:
    from ..fsutil import write_json

    write_json(out / "result.json", result)
    if args.json:
        print_json(result)
    else:
        _print_recipe(result)
    if not result["met"]:
        a, b = result["after"], result["before"]
        print(
            f"quality gate failed: {result['reason']}; best point reached: val top-1 {a['val_top1']:.4f} "
            f"({result['drop_points']['val']:+.2f} points), {a['macs']:,} MACs ({a['macs'] / b['macs']:.2f}x), "
            f"saved in {Path(args.out) / 'model'}",
            file=sys.stderr,
        )
    return result["met"]


def _print_recipe(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{r['schedule']} pruning of {r['model']} on {r['data']} -> {r['out']}")
    for col in ("", "before", "after", "ratio / delta"):
        t.add_column(col, justify="right" if col else "left")
    b, a = r["before"], r["after"]
    t.add_row("MACs", f"{b['macs']:,}", f"{a['macs']:,}", f"{a['macs'] / b['macs']:.2f}x" if b["macs"] else "-")
    t.add_row(
        "params", f"{b['params']:,}", f"{a['params']:,}", f"{a['params'] / b['params']:.2f}x" if b["params"] else "-"
    )
    t.add_row("val top-1", f"{b['val_top1']:.4f}", f"{a['val_top1']:.4f}", f"{-r['drop_points']['val']:+.2f} pt")
    t.add_row("test top-1", f"{b['test_top1']:.4f}", f"{a['test_top1']:.4f}", f"{-r['drop_points']['test']:+.2f} pt")
    if "sparsity" in r:
        t.add_row("weight sparsity", "0.00", f"{r['sparsity']['sparsity']:.2f}", r["pattern"])
    Console().print(t)
