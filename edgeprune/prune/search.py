"""Adaptive structured pruning: sensitivity scan, budget allocation, prune -> recover -> evaluate
with back-off, and the search log (JSON + PNG).

Consumes: a trained model, data splits (``.train`` / ``.val`` / ``.test``), example inputs, a
budget (MACs or params: a fraction <= 1 of the original or an absolute count; latency:
milliseconds on a target profile, predicted by ``edgeprune.estimate``) and a maximum accuracy
drop in points. Produces: ``SearchResult`` with the pruned, recovered model (the input is left
untouched), the plans that made it (replayable in order), whether budget and accuracy were both
met, the best point reached, and a log of every decision.

Algorithm (docs/methods.md), performance-driven at every step:
1. scan: each prunable channel group alone, at several ratios, without recovery: the validation
   metric drop and the cost (MACs / params / estimated ms) of each point;
2. allocate: start from nothing removed and repeatedly take the move (one group, one level
   further) with the smallest drop per unit of cost saved, re-measuring the real cost of the
   combined allocation after every move, until the step's cost target is met;
3. progress: the cost target moves from the baseline to the budget in ``steps`` steps (AGP
   fractions by default). Before every step the current, recovered model is re-scanned and the
   cuts re-allocated from the drops measured on it; the step is then pruned, recovered
   (fine-tuning + distillation from the unpruned model; the last step recovers
   ``final_epochs_factor`` times longer) and evaluated. When the drop exceeds the limit, the
   excess is charged to the groups that step cut (so the next allocation moves away from them)
   and the step is retried half-way between the last good point and the planned one (at most
   ``max_backoff`` back-offs per run); if it still fails the search stops at the last good point
   (``met`` is False: the CLI exits 3 and names the best point reached).
The first scan checks the whole budget is reachable at all. Every step's scan, the measured drop
per group and the allocation are kept in the log (and drawn by ``write_log``). Decisions use the
validation split; the test split is only reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..modcopy import copy_model
from ..progress import Progress, as_progress
from ..recover import RecoverConfig, Regularizer, finetune, top1
from .importance import needs_data
from .schedule import _config, _copy_attrs, _frozen_teacher, regularised_training, step_targets

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
    progress: Progress | bool | None = None,
) -> list[dict]:
    """Each prunable group alone at each level, no recovery: one row per distinct kept count."""
    if graph is None:
        graph, scores = engine.analyse(model)
    sizes = _group_sizes(graph)
    rows = []
    bar = as_progress(progress)
    bar.start(len(sizes) * len(levels), "sensitivity scan")
    try:
        for gid, size in sizes.items():
            seen = {size}
            for r in levels:
                bar.advance(1, gid)
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
    finally:
        bar.close()
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
            # savings past the target are worth nothing: near the target a small cut that just
            # reaches it beats a big one that overshoots (and costs accuracy for no budget)
            saved = min(saved, max(cost - limit, 1e-9 * max(base_cost, 1.0)))
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
        step = max(1, graph.group(g).round_step(engine.round_to, kept[g]))
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
    final_epochs_factor: int = 2,
    metric: Callable = top1,
    seed: int = 0,
    progress: Progress | bool | None = None,
) -> SearchResult:
    """Adaptive pruning to ``budget`` under ``max_acc_drop`` points; see the module docstring."""
    if max_acc_drop < 0:
        raise ValueError(f"max_acc_drop must be >= 0 points, got {max_acc_drop}")
    t_start = time.perf_counter()
    cfg = _config(recover, finetune_epochs, seed)
    engine = _Engine(example_inputs, importance, round_to, seed, data.train if needs_data(importance) else None, ignore)
    teacher = _frozen_teacher(model) if distill else None
    work = _copy_attrs(model, copy_model(model))
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
            "final_epochs_factor": final_epochs_factor,
            "distill": distill,
            "regularizers": [r.describe() for r in regularizers],
            "max_backoff": max_backoff,
            "seed": seed,
        },
        "sensitivity": [],
        "allocation": {},
        "steps": [],
    }
    work, row = regularised_training(work, data, cfg, teacher, regularizers, metric, progress)
    if row is not None:
        log["sparsity_training"] = row
    st = _State(work, data, engine, budget, metric, cfg, teacher, regularizers, levels, progress, log)
    st.base_val, st.base_cost, st.limit, st.max_drop = base_val, base_cost, limit, max_acc_drop / 100.0
    reason = _feasibility(st)
    fractions = step_targets(progression, 1.0, steps) if progression != "oneshot" else [1.0]
    if not reason:
        reason = _progress_loop(st, fractions, max_backoff, final_epochs_factor)
    return _finish(st, reason, base_test, example_inputs, t_start)


class _State:
    """The adaptive loop's working state: the current model and what was accepted so far."""

    def __init__(self, work, data, engine, budget, metric, cfg, teacher, regs, levels, progress, log):
        self.work, self.data, self.engine, self.budget, self.metric = work, data, engine, budget, metric
        self.cfg, self.teacher, self.regs, self.levels, self.progress, self.log = (
            cfg,
            teacher,
            regs,
            levels,
            progress,
            log,
        )
        self.plans: list = []
        self.penalty: dict[str, float] = {}  # group -> extra drop (per fraction removed) after a failed step
        self.accepted: dict = {}
        self.current: dict[str, int] = {}


def _feasibility(st) -> str:
    """Allocate the whole budget once on the unpruned model: the smallest reachable cost and the
    first scan. Returns a reason when the budget cannot be reached at all."""
    graph, scores = st.engine.analyse(st.work)
    sizes = _group_sizes(graph)
    st.current = dict(sizes)
    st.accepted = {"step": 0, "fraction": 0.0, "cost": st.base_cost, "val": st.base_val, "drop": 0.0}
    if st.base_cost <= st.limit:
        st.log["allocation"] = {"kept": sizes, "channels": sizes, "cost": st.base_cost, "moves": [], "feasible": True}
        return ""
    scan = sensitivity_scan(
        st.work, st.data, st.engine, st.budget, st.levels, st.metric, st.base_val, graph, scores, st.progress
    )
    st.log["sensitivity"] = scan
    kept, cost, moves = allocate(st.work, st.engine, st.budget, scan, st.limit, st.base_cost, graph, scores)
    feasible = cost <= st.limit
    st.log["allocation"] = {"kept": kept, "channels": sizes, "cost": cost, "moves": moves, "feasible": feasible}
    if feasible:
        return ""
    return (
        f"the budget {st.limit:.6g} {st.budget.unit} cannot be reached even removing every prunable "
        f"channel the levels allow (smallest: {cost:.6g} {st.budget.unit})"
    )


def _step_plan(st, step: int, f: float, first: bool):
    """Re-scan the current (recovered) model, reallocate for the cost target of fraction ``f``,
    and plan it. Returns ``(plan, step log row)``, plan None when nothing is to be removed."""
    step_limit = st.base_cost - (st.base_cost - st.limit) * f
    graph, scores = st.engine.analyse(st.work)
    cur_cost = st.accepted["cost"]
    row: dict = {"step": step, "fraction": f, "cost_target": step_limit}
    if cur_cost <= step_limit * (1 + 1e-9):
        row["skipped"] = "the current model already meets this step's cost"
        return None, row
    val_now = st.metric(st.work, st.data.val)
    scan = (
        st.log["sensitivity"]
        if first
        else sensitivity_scan(
            st.work, st.data, st.engine, st.budget, st.levels, st.metric, val_now, graph, scores, st.progress
        )
    )
    adjusted = [
        {**r, "drop": r["drop"] + st.penalty.get(r["group"], 0.0) * (1 - r["kept"] / r["channels"])} for r in scan
    ]
    kept, alloc_cost, moves = allocate(st.work, st.engine, st.budget, adjusted, step_limit, cur_cost, graph, scores)
    sizes = _group_sizes(graph)
    row["sensitivity"] = [{k: r[k] for k in ("group", "channels", "kept", "drop", "cost")} for r in scan]
    row["drop_per_group"] = _worst_drop_per_group(scan)
    row["allocation"] = {"kept": kept, "cost": alloc_cost, "penalty": dict(st.penalty)}
    ratios = {g: 1.0 - kept[g] / sizes[g] for g in kept if kept[g] < sizes[g]}
    p = st.engine.plan(st.work, graph, scores, ratios)
    if p.empty:
        row["skipped"] = "nothing to remove at this fraction"
        return None, row
    return p, row


def _worst_drop_per_group(scan) -> dict[str, float]:
    """The measured validation drop (points) of each group at the deepest level scanned."""
    out: dict[str, tuple] = {}
    for r in scan:
        if r["group"] not in out or r["kept"] < out[r["group"]][0]:
            out[r["group"]] = (r["kept"], 100 * r["drop"])
    return {g: v[1] for g, v in out.items()}


def _progress_loop(st, fractions, max_backoff: int, final_epochs_factor: int) -> str:
    """prune -> recover -> evaluate, re-scanning and reallocating before every step; back off
    (half-way between the last good fraction and the failed one) when the drop exceeds the limit,
    and charge the failed step's excess drop to the groups it cut. Returns the stop reason."""
    queue = list(fractions)
    step = failures = 0
    while queue:
        f = queue.pop(0)
        step += 1
        t0 = time.perf_counter()
        p, row = _step_plan(st, step, f, first=step == 1)
        st.log["steps"].append(row)
        if p is None:
            continue
        candidate = st.engine.apply(st.work, p)
        val_cut = st.metric(candidate, st.data.val)
        # the step that reaches the budget is the final point (later steps are skipped): it
        # recovers plain and ``final_epochs_factor`` times longer
        last = not queue or row["allocation"]["cost"] <= st.limit * (1 + 1e-9)
        regs = () if last else st.regs
        cfg = st.cfg
        if last and final_epochs_factor > 1:
            cfg = RecoverConfig(**{**cfg.to_dict(), "epochs": cfg.epochs * final_epochs_factor})
        candidate, hist = finetune(
            candidate,
            st.data,
            cfg,
            teacher=st.teacher,
            metric=st.metric,
            progress=st.progress,
            regularizers=regs,
            description=f"step {step}: recover",
            restore_best=cfg.restore_best and not regs,
        )
        val = st.metric(candidate, st.data.val)
        cost = st.budget.cost(candidate, st.engine.x)
        kept_now = _kept_from_plan(p, st.current)
        drop = st.base_val - val
        ok = drop <= st.max_drop + 1e-12
        row.update(
            kept=kept_now,
            cost=cost,
            cost_ratio=cost / st.base_cost,
            val_pruned=val_cut,
            val_recovered=val,
            drop_points=100 * drop,
            accepted=ok,
            epochs=len(hist["epochs"]),
            regularizers=hist["regularizers"],
            seconds=round(time.perf_counter() - t0, 3),
        )
        if ok:
            st.work, st.current = candidate, kept_now
            st.plans.append(p)
            st.accepted = {"step": step, "fraction": f, "cost": cost, "val": val, "drop": drop}
            continue
        _charge(st, kept_now, drop - st.max_drop)
        failures += 1
        if failures <= max_backoff:
            back = (st.accepted["fraction"] + f) / 2.0
            row["backoff_to"] = back
            queue = [back, f] + [q for q in queue if q > f] if back > st.accepted["fraction"] + 1e-6 else queue
            continue
        return (
            f"the accuracy drop {100 * drop:.2f} points exceeds --max-acc-drop "
            f"{st.log['settings']['max_acc_drop_points']} at fraction {f:.3f} of the budget after "
            f"{max_backoff} back-offs"
        )
    return ""


def _charge(st, kept_now: dict, excess: float) -> None:
    """Move future cuts away from the groups a failed step cut: each gets the excess drop in
    proportion to the share of the removed channels it lost."""
    removed = {g: st.current[g] - kept_now.get(g, st.current[g]) for g in st.current}
    total = sum(v for v in removed.values() if v > 0)
    for g, v in removed.items():
        if v > 0 and total:
            st.penalty[g] = st.penalty.get(g, 0.0) + max(excess, 0.0) * v / total / max(v / st.current[g], 1e-6)


def _finish(st, reason: str, base_test, example_inputs, t_start) -> SearchResult:
    accepted, budget, metric, data = st.accepted, st.budget, st.metric, st.data
    met = accepted["cost"] <= st.limit * (1 + 1e-9) and accepted["drop"] <= st.max_drop + 1e-12 and not reason
    if not met and not reason:
        reason = f"the best point reached costs {accepted['cost']:.6g} {budget.unit}, over the budget {st.limit:.6g}"
    work = st.work
    work.eval()
    work.edgeprune_plan = list(st.plans)
    test = metric(work, data.test) if base_test is not None else None
    from .macs import count_macs_params

    macs, params = count_macs_params(work, example_inputs)
    best = {
        "step": accepted["step"],
        "fraction": accepted["fraction"],
        "cost": accepted["cost"],
        "cost_ratio": accepted["cost"] / st.base_cost,
        "val": accepted["val"],
        "drop_points": 100 * accepted["drop"],
        "test": test,
        "test_drop_points": 100 * (base_test - test) if test is not None else None,
        "macs": int(macs),
        "params": int(params),
        "kept": st.current,
    }
    st.log["result"] = {
        "met": met,
        "reason": reason,
        "best": best,
        "plans": [p.hash for p in st.plans],
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    return SearchResult(model=work, plans=st.plans, met=met, log=st.log, reason=reason)


def _plot_drop_per_group(ax, log: dict) -> None:
    """The drop each group alone causes at its deepest scanned level, re-measured before every step."""
    rows = [s for s in log.get("steps", []) if s.get("drop_per_group")]
    groups = sorted({g for s in rows for g in s["drop_per_group"]})
    for g in groups:
        pts = [(s["step"], s["drop_per_group"][g]) for s in rows if g in s["drop_per_group"]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=g)
    ax.set_xlabel("step (scan on the recovered model before it)")
    ax.set_ylabel("validation drop, deepest level alone (points)")
    ax.set_title("measured sensitivity per group")
    if groups:
        ax.legend(fontsize=7)


def write_log(log: dict, out_dir: str | Path, stem: str = "search") -> dict[str, Path]:
    """Write ``<stem>.json`` and ``<stem>.png`` (first sensitivity scan, the step trajectory, and
    the drop per group re-measured before every step)."""
    from ..fsutil import atomic_path, write_json

    out = Path(out_dir)
    paths = {"json": write_json(out / f"{stem}.json", log)}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax4) = plt.subplots(1, 3, figsize=(16, 4))
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
    _plot_drop_per_group(ax4, log)
    fig.tight_layout()
    with atomic_path(out / f"{stem}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    paths["png"] = out / f"{stem}.png"
    return paths


# Kept for API compatibility: bad recipe input is a UserError like every other (the CLI exits 2).
RecipeInputError = UserError
