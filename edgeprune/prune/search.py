"""Adaptive structured pruning: sensitivity scan, budget allocation, prune -> recover -> evaluate
with back-off, and the search log (JSON + PNG).

Consumes: a trained model, data splits (``.train`` / ``.val`` / ``.test``), example inputs, a
budget (MACs or params: a fraction <= 1 of the original or an absolute count; latency:
milliseconds on a target profile, predicted by ``edgeprune.estimate``) and a maximum accuracy
drop in points. Produces: ``SearchResult`` with the pruned, recovered model (the input is left
untouched), the plans that made it (replayable in order), whether budget and accuracy were both
met, the best point reached, and a log of every decision.

Algorithm (docs/methods.md):
1. scan: each prunable channel group alone, at several ratios, without recovery: the validation
   metric drop and the cost (MACs / params / estimated ms) of each point;
2. allocate: start from nothing removed and repeatedly take the move (one group, one level
   further) with the smallest drop per unit of cost saved, re-measuring the real cost of the
   combined allocation after every move, until the budget is met;
3. progress: reach the allocated channel counts in ``steps`` steps (AGP fractions by default),
   each step planned on the current model with importance recomputed from its current weights,
   then recovered (fine-tuning + distillation from the unpruned model) and evaluated; when the
   drop exceeds the limit, the step is retried half-way between the last good point and the
   planned one (at most ``max_backoff`` back-offs per run), and if it still fails the search
   stops at the last good point (``met`` is False: the CLI exits 3 and names the best point reached).
Decisions use the validation split; the test split is only reported.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..recover import RecoverConfig, Regularizer, finetune, top1
from .schedule import _copy_attrs, _frozen_teacher, step_targets

BUDGET_KINDS = ("macs", "params", "latency")
DEFAULT_LEVELS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Budget:
    """What the pruned model must fit: ``macs`` / ``params`` (fraction <= 1 or a count) or
    ``latency`` (ms on ``target``, estimated at ``precision`` with ``threads``)."""

    kind: str
    value: float
    target: str | None = None
    precision: str = "fp32"
    threads: int | None = None

    def __post_init__(self):
        if self.kind not in BUDGET_KINDS:
            raise ValueError(f"unknown budget {self.kind!r}; use macs, params or latency")
        if not self.value > 0:
            raise ValueError(f"budget {self.kind} must be > 0, got {self.value}")
        if self.kind == "latency" and not self.target:
            raise ValueError("a latency budget needs a target profile (e.g. --target rpi4)")

    def cost(self, model: nn.Module, example_inputs) -> float:
        if self.kind == "latency":
            from ..estimate import estimate

            shape = tuple(example_inputs.shape[1:]) if isinstance(example_inputs, torch.Tensor) else None
            return float(
                estimate(model, self.target, precision=self.precision, threads=self.threads, input_shape=shape).total_ms
            )
        from .macs import count_macs_params

        macs, params = count_macs_params(model, example_inputs)
        return float(macs if self.kind == "macs" else params)

    def limit(self, base_cost: float) -> float:
        if self.kind != "latency" and self.value <= 1:
            return self.value * base_cost
        return float(self.value)

    @property
    def unit(self) -> str:
        return {"macs": "MACs", "params": "params", "latency": "ms"}[self.kind]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    model: nn.Module
    plans: list
    met: bool
    log: dict
    reason: str = ""

    @property
    def best(self) -> dict:
        return self.log["result"]["best"]


def _group_sizes(graph) -> dict[str, int]:
    return {g.id: g.size for g in graph.groups() if g.prunable}


def _kept_from_plan(p, sizes: dict[str, int]) -> dict[str, int]:
    kept = dict(sizes)
    for row in p.groups:
        if row["id"] in kept:
            kept[row["id"]] = int(row["kept"])
    return kept


class _Engine:
    """The structural engine's calls the search needs, with the settings fixed once."""

    def __init__(self, x, importance, round_to, seed, calib, ignore):
        from ..graph import trace
        from .apply import apply
        from .importance import score_groups
        from .plan import plan

        self.x, self.importance, self.round_to, self.seed, self.calib = x, importance, round_to, seed, calib
        self.ignore = tuple(ignore)
        self._apply, self._plan, self._score, self._trace = apply, plan, score_groups, trace

    def analyse(self, model):
        graph = self._trace(model, self.x, ignore=self.ignore)
        scores = self._score(graph, self.importance, calib=self.calib, seed=self.seed)
        return graph, scores

    def plan(self, model, graph, scores, ratios: dict[str, float]):
        ratios = {g: r for g, r in ratios.items() if r > 0}
        return self._plan(
            model,
            self.x,
            ratio=0.0,
            ratios=ratios,
            importance=self.importance,
            round_to=self.round_to,
            max_layer_ratio=1.0,
            seed=self.seed,
            graph=graph,
            scores=scores,
            ignore=self.ignore,
        )

    def apply(self, model, p):
        return _copy_attrs(model, self._apply(model, p, verify=False))


def sensitivity_scan(
    model,
    data,
    engine: _Engine,
    budget: Budget,
    levels: Sequence[float],
    metric,
    base_val,
    graph=None,
    scores=None,
    progress=False,
) -> list[dict]:
    """Each prunable group alone at each level, no recovery: one row per distinct kept count."""
    if graph is None:
        graph, scores = engine.analyse(model)
    sizes = _group_sizes(graph)
    rows = []
    from .schedule import _progress_bar

    with _progress_bar(progress) as bar:
        task = bar.add_task("sensitivity scan", total=len(sizes) * len(levels), status="")
        for gid, size in sizes.items():
            seen = {size}
            for r in levels:
                bar.update(task, advance=1, status=gid)
                p = engine.plan(model, graph, scores, {gid: r})
                kept = _kept_from_plan(p, sizes)[gid]
                if kept in seen or p.empty:
                    continue
                seen.add(kept)
                pruned = engine.apply(model, p)
                val = metric(pruned, data.val)
                rows.append(
                    {
                        "group": gid,
                        "ratio": r,
                        "channels": size,
                        "kept": kept,
                        "val": val,
                        "drop": base_val - val,
                        "cost": budget.cost(pruned, engine.x),
                    }
                )
    return rows


def allocate(
    model, engine: _Engine, budget: Budget, scan: list[dict], limit: float, base_cost: float, graph=None, scores=None
) -> tuple[dict[str, int], float, list[dict]]:
    """Greedy allocation: cheapest accuracy per unit of cost first. Returns (kept per group,
    the real cost of that allocation, the moves)."""
    if graph is None:
        graph, scores = engine.analyse(model)
    sizes = _group_sizes(graph)
    options: dict[str, list[dict]] = {g: [{"kept": s, "drop": 0.0, "cost": base_cost}] for g, s in sizes.items()}
    for row in scan:
        options[row["group"]].append(row)
    for g in options:
        options[g].sort(key=lambda r: -r["kept"])
    level = {g: 0 for g in options}
    moves = []
    cost = base_cost
    while cost > limit:
        best = None
        for g, opts in options.items():
            if level[g] + 1 >= len(opts):
                continue
            cur, nxt = opts[level[g]], opts[level[g] + 1]
            saved = cur["cost"] - nxt["cost"]
            if saved <= 0:
                saved = 1e-9 * max(base_cost, 1.0)
            price = (max(nxt["drop"] - cur["drop"], 0.0) + 1e-3) / saved
            if best is None or price < best[0]:
                best = (price, g)
        if best is None:
            break
        g = best[1]
        level[g] += 1
        kept = {k: options[k][level[k]]["kept"] for k in options}
        p = engine.plan(model, graph, scores, {k: 1.0 - kept[k] / sizes[k] for k in kept})
        cost = budget.cost(engine.apply(model, p), engine.x)
        moves.append(
            {"group": g, "kept": kept[g], "channels": sizes[g], "cost": cost, "scan_drop": options[g][level[g]]["drop"]}
        )
    kept = {k: options[k][level[k]]["kept"] for k in options}
    if cost <= limit and moves:
        kept, cost = _refine(model, engine, budget, graph, scores, sizes, kept, cost, limit, options, level, moves)
    return kept, cost, moves


def _refine(model, engine, budget, graph, scores, sizes, kept, cost, limit, options, level, moves):
    """The scan levels are coarse, so the last move may overshoot the budget: give channels back,
    one rounding step at a time, to the groups that lost the most accuracy in the scan, while the
    budget still holds."""
    order = sorted(kept, key=lambda g: -options[g][level[g]]["drop"])
    for g in order:
        step = max(1, graph.group(g).round_step(engine.round_to))
        while kept[g] + step <= sizes[g]:
            trial = dict(kept)
            trial[g] = kept[g] + step
            p = engine.plan(model, graph, scores, {k: 1.0 - trial[k] / sizes[k] for k in trial})
            c = budget.cost(engine.apply(model, p), engine.x)
            if c > limit:
                break
            kept, cost = trial, c
            moves.append({"group": g, "kept": kept[g], "channels": sizes[g], "cost": cost, "refine": True})
    return kept, cost


def search(
    model: nn.Module,
    data,
    example_inputs,
    budget: Budget,
    *,
    max_acc_drop: float = 1.0,
    steps: int = 5,
    progression: str = "agp",
    levels: Sequence[float] = DEFAULT_LEVELS,
    importance: str = "l2",
    round_to: int = 8,
    ignore: Iterable[str] = (),
    recover: RecoverConfig | None = None,
    finetune_epochs: int | None = None,
    distill: bool = True,
    regularizers: Sequence[Regularizer] = (),
    max_backoff: int = 2,
    metric: Callable = top1,
    seed: int = 0,
    progress: bool = False,
) -> SearchResult:
    """Adaptive pruning to ``budget`` under ``max_acc_drop`` points; see the module docstring."""
    if max_acc_drop < 0:
        raise ValueError(f"max_acc_drop must be >= 0 points, got {max_acc_drop}")
    t_start = time.perf_counter()
    cfg = recover or RecoverConfig(seed=seed)
    if finetune_epochs is not None:
        cfg = RecoverConfig(**{**cfg.to_dict(), "epochs": finetune_epochs})
    max_drop = max_acc_drop / 100.0
    calib = data.train if importance in ("taylor", "gradient", "activation") else None
    engine = _Engine(example_inputs, importance, round_to, seed, calib, ignore)
    teacher = _frozen_teacher(model) if distill else None
    work = _copy_attrs(model, copy.deepcopy(model))
    base_val = metric(work, data.val)
    base_test = metric(work, data.test) if getattr(data, "test", None) is not None else None
    base_cost = budget.cost(work, example_inputs)
    limit = budget.limit(base_cost)
    log: dict = {
        "budget": {**budget.to_dict(), "limit": limit, "unit": budget.unit},
        "baseline": {"val": base_val, "test": base_test, "cost": base_cost},
        "settings": {
            "max_acc_drop_points": max_acc_drop,
            "steps": steps,
            "progression": progression,
            "levels": list(levels),
            "importance": importance,
            "round_to": round_to,
            "ignore": list(ignore),
            "recover": cfg.to_dict(),
            "distill": distill,
            "regularizers": [r.describe() for r in regularizers],
            "max_backoff": max_backoff,
            "seed": seed,
        },
        "sensitivity": [],
        "allocation": {},
        "steps": [],
    }

    graph, scores = engine.analyse(work)
    sizes = _group_sizes(graph)
    if base_cost <= limit:
        final_kept, alloc_cost, moves = dict(sizes), base_cost, []
    else:
        log["sensitivity"] = sensitivity_scan(
            work, data, engine, budget, levels, metric, base_val, graph, scores, progress
        )
        final_kept, alloc_cost, moves = allocate(
            work, engine, budget, log["sensitivity"], limit, base_cost, graph, scores
        )
    log["allocation"] = {
        "kept": final_kept,
        "channels": sizes,
        "cost": alloc_cost,
        "moves": moves,
        "feasible": alloc_cost <= limit,
    }
    if alloc_cost > limit:
        reason = (
            f"the budget {limit:.6g} {budget.unit} cannot be reached even removing every prunable "
            f"channel the levels allow (smallest: {alloc_cost:.6g} {budget.unit})"
        )
    else:
        reason = ""

    fractions = step_targets(progression, 1.0, steps) if progression != "oneshot" else [1.0]
    plans: list = []
    accepted = {"step": 0, "fraction": 0.0, "cost": base_cost, "val": base_val, "drop": 0.0}
    current = dict(sizes)
    queue = list(fractions)
    step = 0
    failures = 0  # back-offs are counted over the whole run, so halving can never go on forever
    while queue:
        f = queue.pop(0)
        step += 1
        t0 = time.perf_counter()
        want = {g: max(final_kept[g], int(round(sizes[g] - (sizes[g] - final_kept[g]) * f))) for g in sizes}
        ratios = {g: 1.0 - want[g] / current[g] for g in sizes if want[g] < current[g]}
        g_now, s_now = engine.analyse(work)
        p = engine.plan(work, g_now, s_now, ratios)
        if p.empty:
            log["steps"].append({"step": step, "fraction": f, "skipped": "nothing to remove at this fraction"})
            continue
        candidate = engine.apply(work, p)
        val_cut = metric(candidate, data.val)
        last = not queue
        regs = () if last else regularizers
        candidate, hist = finetune(
            candidate,
            data,
            cfg,
            teacher=teacher,
            metric=metric,
            progress=progress,
            regularizers=regs,
            description=f"step {step}: recover",
            restore_best=cfg.restore_best and not regs,
        )
        val = metric(candidate, data.val)
        cost = budget.cost(candidate, example_inputs)
        kept_now = _kept_from_plan(p, current)
        drop = base_val - val
        ok = drop <= max_drop + 1e-12
        row = {
            "step": step,
            "fraction": f,
            "kept": kept_now,
            "cost": cost,
            "cost_ratio": cost / base_cost,
            "val_pruned": val_cut,
            "val_recovered": val,
            "drop_points": 100 * drop,
            "accepted": ok,
            "epochs": len(hist["epochs"]),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        log["steps"].append(row)
        if ok:
            work, current = candidate, kept_now
            plans.append(p)
            accepted = {"step": step, "fraction": f, "cost": cost, "val": val, "drop": drop}
            continue
        failures += 1
        if failures <= max_backoff:
            back = (accepted["fraction"] + f) / 2.0
            row["backoff_to"] = back
            queue = [back, f] + [q for q in queue if q > f] if back > accepted["fraction"] + 1e-6 else queue
            continue
        reason = (
            f"the accuracy drop {100 * drop:.2f} points exceeds --max-acc-drop {max_acc_drop} at fraction "
            f"{f:.3f} of the allocation after {max_backoff} back-offs"
        )
        break

    met = accepted["cost"] <= limit * (1 + 1e-9) and accepted["drop"] <= max_drop + 1e-12 and not reason
    if not met and not reason:
        reason = f"the best point reached costs {accepted['cost']:.6g} {budget.unit}, over the budget {limit:.6g}"
    work.eval()
    work.edgeprune_plan = list(plans)
    test = metric(work, data.test) if base_test is not None else None
    from .macs import count_macs_params

    macs, params = count_macs_params(work, example_inputs)
    best = {
        "step": accepted["step"],
        "fraction": accepted["fraction"],
        "cost": accepted["cost"],
        "cost_ratio": accepted["cost"] / base_cost,
        "val": accepted["val"],
        "drop_points": 100 * accepted["drop"],
        "test": test,
        "test_drop_points": 100 * (base_test - test) if test is not None else None,
        "macs": int(macs),
        "params": int(params),
        "kept": current,
    }
    log["result"] = {
        "met": met,
        "reason": reason,
        "best": best,
        "plans": [p.hash for p in plans],
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    return SearchResult(model=work, plans=plans, met=met, log=log, reason=reason)


def write_log(log: dict, out_dir: str | Path, stem: str = "search") -> dict[str, Path]:
    """Write ``<stem>.json`` and ``<stem>.png`` (sensitivity curves and the step trajectory)."""
    from ..fsutil import atomic_path, write_json

    out = Path(out_dir)
    paths = {"json": write_json(out / f"{stem}.json", log)}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    by_group: dict[str, list] = {}
    for r in log.get("sensitivity", []):
        by_group.setdefault(r["group"], []).append(r)
    for g, rows in sorted(by_group.items()):
        rows = sorted(rows, key=lambda r: r["kept"], reverse=True)
        ax1.plot([1 - r["kept"] / r["channels"] for r in rows], [100 * r["drop"] for r in rows], marker="o", label=g)
    ax1.set_xlabel("fraction of the group's channels removed (alone, no recovery)")
    ax1.set_ylabel("validation drop (points)")
    ax1.set_title("sensitivity scan")
    if by_group:
        ax1.legend(fontsize=7)
    steps = [s for s in log.get("steps", []) if "val_recovered" in s]
    base = log["baseline"]
    xs = [0] + [s["step"] for s in steps]
    ax2.plot(
        xs,
        [100 * base["val"]] + [100 * s["val_recovered"] for s in steps],
        marker="o",
        color="C0",
        label="val after recovery",
    )
    for s in steps:
        if not s["accepted"]:
            ax2.plot([s["step"]], [100 * s["val_recovered"]], marker="x", color="red", markersize=10)
    ax2.axhline(100 * base["val"] - log["settings"]["max_acc_drop_points"], color="C0", linestyle=":", linewidth=1)
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation top-1 (%)", color="C0")
    ax3 = ax2.twinx()
    ax3.plot(xs, [1.0] + [s["cost_ratio"] for s in steps], marker="s", color="C1", label="cost / baseline")
    ax3.axhline(log["budget"]["limit"] / base["cost"], color="C1", linestyle="--", linewidth=1)
    ax3.set_ylabel(f"{log['budget']['kind']} / baseline (dashed: budget)", color="C1")
    ax2.set_title("prune -> recover -> evaluate (x: backed off)")
    fig.tight_layout()
    with atomic_path(out / f"{stem}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    paths["png"] = out / f"{stem}.png"
    return paths


# ----------------------------------------------------------------------------- CLI recipe
# `edgeprune prune` (edgeprune/cli/prune.py) adds these flags and hands a run that asks for
# recovery, a schedule, a budget or sparsity to ``run_recipe``. The helpers that belong to the
# CLI layer (output directory, JSON printing) are passed in, so this module stays below it.

SCHEDULE_CHOICES = ("oneshot", "linear", "agp", "adaptive")
REGULARIZE_CHOICES = ("bn-l1", "group-lasso", "l1")


class RecipeInputError(UserError):
    """Bad flags or data for the recipe (the CLI turns it into exit code 2)."""


def add_arguments(p, how) -> None:
    """Add the recovery / schedule / budget / sparsity flags to the ``prune`` parser.

    ``how`` is the parser's mutually exclusive group of targets (--ratio, --target-macs, --plan):
    a budget or a sparsity is one more kind of target."""
    import argparse

    how.add_argument(
        "--budget-macs",
        type=float,
        metavar="F",
        help="adaptive search to this MAC budget (fraction <= 1 or a count); implies --schedule adaptive",
    )
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
    g.add_argument(
        "--data",
        metavar="DATA",
        help="data spec to fine-tune and evaluate on (e.g. digits); needed by every option of this group",
    )
    g.add_argument(
        "--schedule",
        choices=SCHEDULE_CHOICES,
        default=None,
        help="oneshot, linear, agp (cubic) or adaptive (default: adaptive with a --budget-*, else oneshot)",
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
    g.add_argument("--target", metavar="PROFILE", help="device profile for --budget-latency (e.g. rpi4)")
    g.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "int8"),
        help="precision of the --budget-latency estimate (default fp32)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="threads of the --budget-latency estimate (default: all cores of the target)",
    )
    g.add_argument(
        "--sparsity-pattern",
        choices=("unstructured", "1x4", "4x1", "2:4"),
        default="unstructured",
        help="pattern of --sparsity (2:4 is 50 %% by definition)",
    )
    g.add_argument(
        "--sparsity-criterion",
        choices=("magnitude", "taylor", "activation"),
        default="magnitude",
        help="weight score for --sparsity: |w|, |w*grad| or |w|*||x|| (default magnitude)",
    )
    g.add_argument(
        "--threshold",
        choices=("solve", "relative", "percentile", "absolute"),
        default=None,
        help="dynamic threshold recomputed from the current scores at every step: solve (meet the "
        "step's --ratio/--sparsity share), or relative (coef x max) / percentile / absolute "
        "with --threshold-value, capped by the step's share",
    )
    g.add_argument(
        "--threshold-value",
        type=float,
        default=None,
        metavar="V",
        help="coefficient (relative), quantile in [0, 1] (percentile) or score (absolute)",
    )
    g.add_argument(
        "--threshold-scope",
        choices=("global", "layer"),
        default="global",
        help="compare scores across all layers (global, default) or within each layer",
    )
    g.add_argument(
        "--regularize",
        choices=REGULARIZE_CHOICES,
        default=None,
        help="sparsity regulariser during the recoveries between steps",
    )
    g.add_argument("--reg-lambda", type=float, default=None, metavar="L", help="regulariser strength")


def wants_recipe(args) -> bool:
    """True when the run needs this module (recovery, a schedule, a budget or sparsity)."""
    return any(
        getattr(args, a, None) is not None
        for a in (
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
    )


def _fail(msg: str):
    raise RecipeInputError(msg)


def _check_recipe_args(args) -> str:
    budget = [(k, getattr(args, f"budget_{k}")) for k in BUDGET_KINDS if getattr(args, f"budget_{k}") is not None]
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
    for flag, value in (("--steps", args.steps), ("--finetune-epochs", args.finetune_epochs)):
        if value is not None and value < (1 if flag == "--steps" else 0):
            _fail(f"{flag} {value}: must be >= {1 if flag == '--steps' else 0}")
    if args.lr <= 0:
        _fail(f"--lr {args.lr}: must be > 0")
    if args.threshold is not None:
        if schedule == "adaptive":
            _fail(
                "--threshold applies to --schedule oneshot, linear or agp (the adaptive search allocates ratios itself)"
            )
        if args.threshold != "solve" and args.threshold_value is None:
            _fail(f"--threshold {args.threshold} needs --threshold-value V")
        if args.target_macs is not None:
            _fail("--threshold selects channels by score; combine it with --ratio, not --target-macs")
    if args.max_acc_drop is not None and args.max_acc_drop < 0:
        _fail(f"--max-acc-drop {args.max_acc_drop}: must be >= 0 points")
    for k, v in budget:
        if not v > 0:
            _fail(f"--budget-{k} {v}: must be > 0")
    return schedule


def run_recipe(args, model: nn.Module, example_inputs, *, prepare_out, print_json) -> bool:
    """Run the prune recipe the flags describe, write ``--out``, print the result.

    Returns True when every gate passed (budget met and the drop within --max-acc-drop), False
    when the best point reached misses one (the CLI exits 3). Raises ``RecipeInputError`` for
    bad flags or data."""
    import sys

    import edgeprune as ep

    from .. import recover as rec
    from ..fsutil import write_json
    from ..io import save
    from .macs import count_macs_params
    from .schedule import prune_structured, sparsify
    from .sparsity import report_table, sparsity_report

    schedule = _check_recipe_args(args)
    try:
        data = ep.data.load(args.data, seed=args.seed)
    except (ValueError, FileNotFoundError) as e:
        _fail(f"--data {args.data}: {str(e).splitlines()[0]}")
    if tuple(data.input_shape) != tuple(example_inputs.shape[1:]):
        _fail(
            f"--data {args.data}: samples are {tuple(data.input_shape)}, the model takes "
            f"{tuple(example_inputs.shape[1:])}; pass matching --data or --input-shape"
        )
    steps = args.steps or (1 if schedule == "oneshot" else 5)
    if args.budget_latency is not None:
        try:
            ep.targets.load(args.target)
        except (ValueError, FileNotFoundError) as e:
            _fail(f"--target {args.target}: {str(e).splitlines()[0]}")
    cfg = rec.RecoverConfig(
        epochs=args.finetune_epochs, lr=args.lr, seed=args.seed, **getattr(args, "recover_overrides", {})
    )
    regs = []
    if args.regularize:
        regs = [rec.make_regularizer(args.regularize, model, args.reg_lambda)]
    progress = sys.stderr.isatty() and not args.json
    rule = None
    if args.threshold is not None:
        from .threshold import DynamicThreshold

        try:
            rule = DynamicThreshold(
                args.threshold,
                args.threshold_value,
                args.threshold_scope,
                max_layer_ratio=0.99 if args.sparsity is not None else args.max_layer_ratio,
            )
        except ValueError as e:
            _fail(f"--threshold {args.threshold}: {e}")
    model.eval()
    macs0, params0 = count_macs_params(model, example_inputs)
    base_val = rec.top1(model, data.val)
    base_test = rec.top1(model, data.test)
    out = prepare_out()
    files: dict[str, str] = {}
    met, reason, extra = True, "", {}
    masks = None
    prev = getattr(model, "edgeprune_plan", None)  # a model loaded from an ep.save dir keeps its plans
    plans: list = list(prev) if isinstance(prev, list) else ([prev] if prev is not None else [])
    if schedule == "adaptive":
        kind, value = next(
            (k, getattr(args, f"budget_{k}")) for k in BUDGET_KINDS if getattr(args, f"budget_{k}") is not None
        )
        budget = Budget(
            kind,
            value,
            target=args.target if kind == "latency" else None,
            precision=args.precision,
            threads=args.threads,
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
                recover=cfg,
                distill=args.distill,
                regularizers=regs,
                seed=args.seed,
                progress=progress,
            )
        except ValueError as e:
            _fail(f"--budget-{kind}: {str(e).splitlines()[0]}")
        pruned, new_plans, met, reason = res.model, res.plans, res.met, res.reason
        files.update({k: str(v) for k, v in write_log(res.log, out).items()})
        extra = {"budget": res.log["budget"], "best": res.best}
    elif args.sparsity is not None:
        res = sparsify(
            model,
            data,
            args.sparsity,
            pattern=args.sparsity_pattern,
            criterion=args.sparsity_criterion,
            schedule=schedule,
            steps=steps,
            recover=cfg,
            distill=args.distill,
            regularizers=regs,
            ignore=tuple(args.ignore),
            threshold=rule,
            progress=progress,
        )
        pruned, new_plans, masks = res.model, [], res.masks
        rep = sparsity_report(pruned, masks, pattern=args.sparsity_pattern)
        files["sparsity"] = str(write_json(out / "sparsity.json", rep))
        files["schedule"] = str(write_json(out / "schedule.json", res.to_dict()))
        extra = {"sparsity": rep["total"], "pattern": args.sparsity_pattern}
        if not args.json:
            from rich.console import Console

            Console().print(report_table(rep))
    else:
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
                global_ranking=not args.per_layer,
                ignore=tuple(args.ignore),
                max_layer_ratio=args.max_layer_ratio,
                recover=cfg,
                distill=args.distill,
                regularizers=regs,
                threshold=rule,
                seed=args.seed,
                progress=progress,
            )
        except ValueError as e:
            _fail(f"--model {args.model}: {str(e).splitlines()[0]}")
        pruned, new_plans = res.model, res.plans
        files["schedule"] = str(write_json(out / "schedule.json", res.to_dict()))
    pruned.eval()
    val, test = rec.top1(pruned, data.val), rec.top1(pruned, data.test)
    drop_val = 100 * (base_val - val)
    if schedule != "adaptive" and args.max_acc_drop is not None and drop_val > args.max_acc_drop + 1e-9:
        met = False
        reason = f"the validation drop {drop_val:.2f} points exceeds --max-acc-drop {args.max_acc_drop}"
    all_plans = plans + list(new_plans)
    save(
        pruned,
        out / "model",
        plan=(all_plans if len(all_plans) > 1 else (all_plans[0] if all_plans else None)),
        masks=masks,
        metadata={
            "pruned_from": args.model,
            "schedule": schedule,
            "data": args.data,
            "val_top1": val,
            "test_top1": test,
            "met": met,
        },
    )
    files["model"] = str(out / "model")
    if new_plans:
        files["plan"] = str(write_json(out / "plan.json", new_plans[-1].to_dict()))
        if len(new_plans) > 1:
            files["plans"] = str(write_json(out / "plans.json", [p.to_dict() for p in new_plans]))
    macs1, params1 = count_macs_params(pruned, example_inputs)
    result = {
        "out": str(out),
        "model": args.model,
        "data": args.data,
        "schedule": schedule,
        "steps": steps,
        "seed": args.seed,
        "met": met,
        "reason": reason,
        "before": {"macs": macs0, "params": params0, "val_top1": base_val, "test_top1": base_test},
        "after": {"macs": macs1, "params": params1, "val_top1": val, "test_top1": test},
        "macs_ratio": macs1 / macs0 if macs0 else None,
        "drop_points": {"val": drop_val, "test": 100 * (base_test - test)},
        "plan_hashes": [p.hash for p in new_plans],
        "files": files,
        **extra,
    }
    write_json(out / "result.json", result)
    if args.json:
        print_json(result)
    else:
        _print_recipe(result)
    if not met:
        print(
            f"quality gate failed: {reason}; best point reached: val top-1 {val:.4f} "
            f"({drop_val:+.2f} points), {macs1:,} MACs ({macs1 / macs0:.2f}x), saved in {out / 'model'}",
            file=sys.stderr,
        )
    return met


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
