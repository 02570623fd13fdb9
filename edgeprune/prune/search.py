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


# Kept for API compatibility: bad recipe input is a UserError like every other (the CLI exits 2).
RecipeInputError = UserError
