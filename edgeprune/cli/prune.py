"""`edgeprune prune`: structured pruning of a model to a ratio or a MAC budget.

Consumes: ``--model SPEC|DIR`` (optionally ``--weights``), ``--ratio R`` or ``--target-macs F``
(or ``--plan FILE`` to replay a saved plan, or only a value ``--threshold``: a pure threshold
run), ``--importance``, ``--round-to``, ``--ignore``, ``--calib DATA`` for data-driven importances,
``--out DIR``. The method flags (``--importance``, ``--sparsity-criterion``, ``--threshold``,
``--regularize``, ``--schedule``) take their choices from the registries (docs/methods.md).
Produces: ``DIR/model`` (ep.save of the pruned model with its plan, so ep.load rebuilds it),
``DIR/plan.json``, and a before/after table (params, MACs, per-layer channels) or the same as JSON.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from ..limits import MAX_INPUT_ELEMENTS, input_shape_ok
from .common import (
    EXIT_GATE,
    UsageError,
    add_trust_flags,
    check_at_least,
    check_model_fits_data,
    first_line,
    input_paths,
    load_model,
    print_json,
    staged_out,
)


def _value_thresholds() -> tuple[str, ...]:
    """The threshold rules that decide alone (every rule but solve): with one of these and no
    --ratio/--sparsity the run is uncapped."""
    from ..prune.threshold import METHODS

    return tuple(m for m in METHODS if m != "solve")


# the add_parser shape of every command module on purpose: main.py registers each one, and each
# spells its own name, help, description and flags (a shared wrapper would only rename add_parser)
def add_parser(subparsers) -> None:
    from ..prune.importance import names as importance_names

    p = subparsers.add_parser(
        "prune",
        help="remove whole channels (structured pruning) and save the smaller model",
        description="Prune --model to --ratio (fraction of channels removed) or --target-macs, "
        "and write the pruned model and its plan to --out.",
    )
    # one add_argument per flag on purpose: each flag's name, type, default and help are its own
    p.add_argument(
        "--model",
        required=True,
        metavar="SPEC|DIR",
        help="edgeprune:demo-cnn, file.py:factory, package.module:factory, torchvision:NAME, or an ep.save dir",
    )
    p.add_argument("--weights", metavar="FILE", help="state_dict to load into --model (weights_only)")
    add_trust_flags(p)
    how = p.add_mutually_exclusive_group(required=False)  # one of them, or a value --threshold alone
    how.add_argument("--ratio", type=float, metavar="R", help="fraction of prunable channels to remove, in [0, 1)")
    # one add_argument per flag on purpose: each flag's name, type, default and help are its own
    how.add_argument(
        "--target-macs",
        type=float,
        metavar="F",
        help="MAC budget: a fraction (<= 1) of the model's MACs, or an absolute count",
    )
    how.add_argument("--plan", metavar="FILE", help="replay a plan.json written by an earlier prune")
    p.add_argument(
        "--importance",
        default="l2",
        metavar="NAME",
        help=f"channel importance: {', '.join(importance_names())} (default l2; docs/methods.md)",
    )
    p.add_argument(
        "--reduction",
        default="mean",
        choices=("sum", "mean", "max"),
        help="how scores of coupled layers combine (default mean)",
    )
    p.add_argument(
        "--round-to", type=int, default=8, metavar="N", help="kept channels are multiples of N (default 8; 1 disables)"
    )
    p.add_argument("--ignore", nargs="+", default=[], metavar="NAME", help="layers (or prefixes) never pruned")
    p.add_argument(
        "--per-layer",
        action="store_true",
        help="remove --ratio of every group instead of ranking globally (the default for transformers models)",
    )
    p.add_argument(
        "--max-layer-ratio",
        type=float,
        default=0.9,
        metavar="R",
        help="never remove more than this fraction of one group (default 0.9)",
    )
    # one add_argument per flag on purpose: each flag's name, type, default and help are its own
    p.add_argument(
        "--attention",
        choices=("heads", "head_dims"),
        default="heads",
        help="prune whole attention heads (default) or shrink every head",
    )
    p.add_argument(
        "--calib", metavar="DATA", help="data spec for the data-driven importances (taylor, activation...; e.g. digits)"
    )
    p.add_argument("--input-shape", metavar="C,H,W", help="example input shape when the model does not carry one")
    p.add_argument("--seed", type=int, default=0, help="seed for --importance random (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--explain", action="store_true", help="list the channels that are never pruned: group, layers, reason"
    )
    from ._recipe import add_arguments as add_recipe_arguments  # recovery, schedules, budgets, sparsity

    add_recipe_arguments(p, how)
    from . import _scale

    _scale.add_arguments(p, checkpoints=True, batch_size=True)
    p.set_defaults(run=run)


def _check_target(args) -> None:
    """One target (--ratio, --target-macs, --plan, a --budget-*, --sparsity), or a pure threshold
    run: a value --threshold alone, uncapped (ratio 1.0: only --max-layer-ratio bounds a group)."""
    targets = ("ratio", "target_macs", "plan", "budget_macs", "budget_params", "budget_latency", "sparsity")
    if getattr(args, "schedule", None) == "admm" and args.sparsity is None:
        raise UsageError("--schedule admm prunes weights: give --sparsity S (for channels use oneshot, linear or agp)")
    if any(getattr(args, t, None) is not None for t in targets):
        return
    if getattr(args, "threshold", None) in _value_thresholds():
        args.ratio = 1.0
        return
    raise UsageError(
        "give a target: --ratio R, --target-macs F, --plan FILE, --budget-macs/--budget-params/--budget-latency, "
        f"--sparsity S, or a value --threshold ({', '.join(_value_thresholds())}) alone"
    )


def _check_flags(args) -> None:
    from edgeprune.prune.importance import names as importance_names
    from edgeprune.prune.importance import needs_data

    _check_target(args)
    if args.ratio is not None and not 0 <= args.ratio < 1 and not _pure_threshold(args):
        raise UsageError(f"--ratio {args.ratio}: must be in [0, 1) (the fraction of channels to remove, e.g. 0.5)")
    if args.target_macs is not None and not args.target_macs > 0:
        raise UsageError(f"--target-macs {args.target_macs}: must be > 0 (a fraction <= 1 or a MAC count)")
    if args.importance not in importance_names():
        raise UsageError(f"--importance {args.importance}: unknown; choose one of {', '.join(importance_names())}")
    check_at_least(("--round-to", args.round_to, 1), ("--seed", args.seed, 0))
    if not 0 < args.max_layer_ratio <= 1:
        raise UsageError(f"--max-layer-ratio {args.max_layer_ratio}: must be in (0, 1]")
    if needs_data(args.importance) and not args.calib and not args.data and args.plan is None:
        raise UsageError(
            f"--importance {args.importance} needs calibration data: add --calib DATA (e.g. --calib digits)"
        )


def _read_plan(path):
    from edgeprune.prune import PrunePlan

    try:
        with open(path, encoding="utf-8") as f:
            return PrunePlan.from_json(f.read())
    except OSError as e:
        raise UsageError(f"--plan {path}: cannot read it ({e.strerror})") from None
    except ValueError as e:
        raise UsageError(f"--plan {path}: {first_line(e)}") from None


def _pure_threshold(args) -> bool:
    return args.ratio == 1.0 and getattr(args, "threshold", None) in _value_thresholds()


def _input_shape(args, model) -> tuple:
    if args.input_shape:
        try:
            shape = tuple(int(s) for s in args.input_shape.split(","))
        except ValueError:
            raise UsageError(f"--input-shape {args.input_shape}: expected integers like 3,224,224") from None
        if not shape or any(s <= 0 for s in shape):
            raise UsageError(f"--input-shape {args.input_shape}: sizes must be positive")
        if not input_shape_ok(shape):
            raise UsageError(f"--input-shape {args.input_shape}: at most {MAX_INPUT_ELEMENTS} elements")
        return shape
    shape = getattr(model, "input_shape", None)
    if not shape:
        raise UsageError(f"--model {args.model}: the model does not say its input shape; pass --input-shape C,H,W")
    return tuple(int(s) for s in shape)


def _token_inputs(args, model):
    """Token ids and a mask for a ``transformers`` token model (``--input-shape`` is then the
    sequence length), or None for models that take one tensor."""
    from edgeprune.models.hf_dir import token_inputs

    inputs = None if getattr(model, "input_shape", None) else token_inputs(model)
    if inputs is None:
        return None
    if args.calib:
        raise UsageError(
            f"--calib {args.calib}: data-driven importances need image data; token models score by weights"
        )
    if not args.input_shape:
        return inputs
    try:
        (n,) = (int(s) for s in args.input_shape.split(","))
    except ValueError:
        raise UsageError(
            f"--input-shape {args.input_shape}: a token model takes one integer, the sequence length (e.g. 128)"
        ) from None
    if not 0 < n <= MAX_INPUT_ELEMENTS:
        raise UsageError(f"--input-shape {args.input_shape}: the sequence length must be 1..{MAX_INPUT_ELEMENTS}")
    return token_inputs(model, seq_len=n)


def _channels(module):
    import torch.nn as nn

    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Embedding):
        return module.embedding_dim
    if isinstance(module, nn.MultiheadAttention):
        return module.embed_dim
    for attr in ("num_features", "num_channels"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    shape = getattr(module, "normalized_shape", None)
    return int(shape[-1]) if shape else None


def run(args) -> int:
    import torch

    from edgeprune.prune import count_macs_params

    from . import _recipe, _scale

    _check_flags(args)
    _scale.check_out(args)  # a run resumed in place writes over its own --out
    relaunched = _scale.relaunch(args)  # --nproc N: the same command line (--trust-code too) on N processes
    if relaunched is not None:
        return relaunched
    plan_obj = _read_plan(args.plan) if args.plan else None
    model = load_model(args.model, args.weights, args.trust_pickle, args.trust_code)
    model.eval()
    x = _token_inputs(args, model)
    if x is None:
        shape = _input_shape(args, model)
        x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0))
    calib = _calib(args, model)
    try:
        macs0, params0 = count_macs_params(model, x)
    except Exception as e:
        given = f"--input-shape {args.input_shape}" if args.input_shape else f"--model {args.model}"
        raise UsageError(f"{given}: the model does not run on its example input ({first_line(e)})") from None
    if _recipe.wants_recipe(args) and isinstance(x, dict):
        raise UsageError(
            f"--model {args.model}: a token model prunes by --ratio or --target-macs without --data; "
            "recovery and searches need a labelled image dataset"
        )
    if _recipe.wants_recipe(args):  # --data/--schedule/--budget-*/--sparsity: prune + recover
        met = _run_recipe_scaled(args, model, x, _recipe)
        return 0 if met else EXIT_GATE
    if args.resume:
        raise UsageError("--resume continues a run with recovery (--data and a --schedule); this one has none")
    from ..distributed import env_world

    if env_world()[0] != 0:  # under torchrun without recovery there is nothing to share: rank 0 alone prunes
        return 0
    plan_obj, pruned, notes = _plan_and_apply(args, model, x, calib, plan_obj)
    macs1, params1 = count_macs_params(pruned, x)
    layers = _changed_layers(model, pruned, plan_obj)
    out = _save(args, model, pruned, plan_obj)
    result = {
        "out": str(out),
        "model": args.model,
        "plan": str(out / "plan.json"),
        "plan_hash": plan_obj.hash,
        "settings": plan_obj.settings,
        "before": {"macs": macs0, "params": params0},
        "after": {"macs": macs1, "params": params1},
        "macs_ratio": macs1 / macs0 if macs0 else None,
        "params_ratio": params1 / params0 if params0 else None,
        "layers": layers,
        "attributes": plan_obj.attrs,
        "warnings": notes,
    }
    if getattr(args, "explain", False):
        result["pinned"] = plan_obj.pinned
    _show(args, result)
    return 0


def _calib(args, model):
    """The training split of ``--calib`` (for data-driven importances), checked against the model; or None."""
    if not args.calib:
        return None
    import edgeprune as ep

    try:
        calib_splits = ep.data.load(args.calib)
    except ValueError as e:
        raise UsageError(f"--calib {args.calib}: {first_line(e)}") from None
    check_model_fits_data(model, calib_splits, f"--model {args.model}", f"--calib {args.calib}")
    return calib_splits.train


def _plan_and_apply(args, model, x, calib, plan_obj):
    """``(plan, pruned model, edgeprune warnings)``: the given plan (``--plan``) or one computed from
    the flags, applied to ``model``."""
    import edgeprune as ep

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if plan_obj is None:
            plan_obj = _plan(args, model, x, calib)
        try:
            pruned = ep.apply(model, plan_obj)
        except ValueError as e:
            raise UsageError(f"--plan {args.plan or '(computed)'}: {first_line(e)}") from None
    notes = [str(w.message) for w in caught if "edgeprune" in str(w.message)]
    return plan_obj, pruned, notes


def _plan(args, model, x, calib):
    import edgeprune as ep

    try:
        # every argument by keyword on purpose (the same shape as pipeline's bench_remote call, another
        # function): each value is one of this command's flags
        return ep.plan(
            model,
            x,
            ratio=args.ratio if args.ratio is not None else 0.5,
            importance=args.importance,
            round_to=args.round_to,
            global_ranking=False if args.per_layer else None,
            ignore=tuple(args.ignore),
            max_layer_ratio=args.max_layer_ratio,
            target_macs=args.target_macs,
            seed=args.seed,
            reduction=args.reduction,
            calib=calib,
            attention=args.attention,
        )
    except ValueError as e:
        msg = first_line(e)
        if "ignore=" in msg:
            raise UsageError(f"--ignore: {msg}") from None
        raise UsageError(f"--model {args.model}: {msg}") from None


def _changed_layers(model, pruned, plan_obj) -> list[dict]:
    """One row per layer whose channel count the plan changed: name, type, before, after."""
    layers = []
    for name, roles in plan_obj.modules.items():
        if not ({"out", "channels", "dim", "embed"} & set(roles)):
            continue
        before, after = _channels(model.get_submodule(name)), _channels(pruned.get_submodule(name))
        if before is not None and before != after:
            layers.append(
                {"name": name, "type": type(model.get_submodule(name)).__name__, "before": before, "after": after}
            )
    return layers


def _save(args, model, pruned, plan_obj) -> Path:
    """Write ``--out``: the pruned model with its whole plan chain, and plan.json (this run's plan)."""
    import edgeprune as ep
    from edgeprune.fsutil import write_json
    from edgeprune.prune.plan import as_plan_list

    out = Path(args.out)
    plans = as_plan_list(getattr(model, "edgeprune_plan", None)) + [plan_obj]
    with staged_out(out, args.force, inputs=input_paths(args)) as tmp:
        try:
            ep.save(
                pruned,
                tmp / "model",
                plan=plans if len(plans) > 1 else plan_obj,
                metadata={"pruned_from": args.model, "plan_hash": plan_obj.hash},
            )
        except ValueError as e:
            raise UsageError(f"--model {args.model}: {first_line(e)}") from None
        write_json(tmp / "plan.json", plan_obj.to_dict())
    return out


def _show(args, result: dict) -> None:
    if args.json:
        print_json(result)
        return
    for n in result["warnings"]:
        print(f"warning: {n}", file=sys.stderr)
    _print_table(result)
    if "pinned" in result:
        _print_pinned(result["pinned"])


def _run_recipe_scaled(args, model, x, recipe) -> bool:
    """``run_recipe`` on this rank of a (possibly) data-parallel run, with checkpoints and --resume:
    rank 0 writes into the staging directory that becomes --out, other ranks into a scratch one."""
    from .. import checkpoint, distributed
    from ..errors import UserError
    from ..prune.search import BUDGET_KINDS
    from . import _scale

    if args.resume and (args.sparsity is not None or any(getattr(args, f"budget_{k}") for k in BUDGET_KINDS)):
        raise UsageError("--resume continues structured schedules (oneshot, linear, agp); drop --resume")
    with _scale.scaled(args, print_json, batch_size=args.batch_size) as run:
        args.lr = run.lr
        args.recover_overrides = {"batch_size": args.batch_size, "workers": args.workers}
        try:
            return recipe.run_recipe(args, model, x, run.out)
        except UserError as e:  # it names --model; a checkpoint or a lost rank says more
            if isinstance(e.__context__, (checkpoint.CheckpointError, distributed.DistributedError)):
                raise e.__context__ from None
            raise


def _print_pinned(pinned: list) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="channels never pruned (--explain)")
    for col in ("group", "channels", "layers", "reason"):
        t.add_column(col)
    for p in pinned:
        layers = ", ".join(p["layers"][:4]) + (f" (+{len(p['layers']) - 4})" if len(p["layers"]) > 4 else "")
        t.add_row(p["group"], str(p["channels"]), layers, p["reason"])
    Console().print(t if pinned else "every channel group can be pruned")


def _print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"pruned {r['model']} -> {r['out']}")
    t.add_column("")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    t.add_column("ratio", justify="right")
    for key in ("params", "macs"):
        b, a = r["before"][key], r["after"][key]
        t.add_row(key, f"{b:,}", f"{a:,}", f"{a / b:.2f}x" if b else "-")
    console.print(t)
    if r["layers"]:
        lt = Table(title="channels per layer")
        lt.add_column("layer")
        lt.add_column("type")
        lt.add_column("before", justify="right")
        lt.add_column("after", justify="right")
        for layer in r["layers"]:
            lt.add_row(layer["name"], layer["type"], str(layer["before"]), str(layer["after"]))
        console.print(lt)
    for a in r["attributes"]:
        console.print(f"set {a['module']}.{a['attr']} = {a['value']}")
