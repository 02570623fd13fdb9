"""Pruning schedules with recovery between steps: one-shot, iterative linear, AGP cubic.

Consumes: a trained model, data splits (``.train`` / ``.val`` / ``.test``), a final target
(structured: a channel ratio or a MAC budget; unstructured/block: a weight sparsity), a
schedule and a recovery config. Produces: a new model (the input is left untouched: it is the
distillation teacher), the plans or masks that made it, and a JSON-serialisable log with one
row per step (target, what was reached, MACs, params, validation metric before and after
recovery, seconds).

Step targets for ``steps = T`` and t = 1..T (docs/methods.md):
- ``oneshot``: s_T only (T is 1);
- ``linear``:  s_t = s_i + (s_f - s_i) * t / T;
- ``agp``:     s_t = s_f + (s_i - s_f) * (1 - t / T)^3 (Zhu & Gupta 2017: big steps first,
  while the network has redundancy to spare, small ones at the end).
Each step is followed by recovery (fine-tuning with distillation from the unpruned model).

Entry points: ``sparsify`` (unstructured / block masks, masks only grow), ``sparsify_admm``
(ADMM towards the per-layer sparse set, then masked retraining), ``prune_structured`` (channels,
by ratio, MAC target or a ``DynamicThreshold``); ``step_targets`` and ``incremental_ratio``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import checkpoint, distributed
from ..errors import UserError
from ..modcopy import copy_model
from ..progress import Progress
from ..recover import RecoverConfig, Regularizer, apply_masks, finetune, top1
from .sparsity import make_masks, projection, prunable_weights, sparsity_report
from .threshold import DynamicThreshold

SCHEDULES = ("oneshot", "linear", "agp")
# ADMM defaults, measured on the digits demo CNN at 90 % sparsity (docs/methods.md)
ADMM_RHO, ADMM_RHO_GROWTH, ADMM_RHO_MAX = 3e-2, 1.5, 1.0
ADMM_EPOCHS, ADMM_RETRAIN_EPOCHS = 10, 5
_NO_EPOCHS = (
    "a regulariser acts during recovery, and recovery has 0 epochs: give recovery epochs "
    "(e.g. --finetune-epochs 3) or drop the regulariser"
)


def step_targets(kind: str, final: float, steps: int = 1, initial: float = 0.0) -> list[float]:
    """The cumulative target after each step of schedule ``kind``."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; use one of {', '.join(SCHEDULES)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if kind == "oneshot":
        return [float(final)]
    T = steps
    if kind == "linear":
        return [initial + (final - initial) * t / T for t in range(1, T + 1)]
    return [final + (initial - final) * (1.0 - t / T) ** 3 for t in range(1, T + 1)]


def _frozen_teacher(model: nn.Module) -> nn.Module:
    teacher = copy_model(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@dataclass
class ScheduleResult:
    """What a schedule produced: the model, its masks or plans, and the per-step log."""

    model: nn.Module
    log: list[dict] = field(default_factory=list)
    masks: dict[str, torch.Tensor] | None = None
    plans: list[Any] = field(default_factory=list)
    baseline: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "baseline": self.baseline,
            "steps": self.log,
            "plans": [p.to_dict() if hasattr(p, "to_dict") else p for p in self.plans],
        }


def _config(recover: RecoverConfig | None, finetune_epochs: int | None, seed: int = 0) -> RecoverConfig:
    cfg = recover or RecoverConfig(seed=seed)
    if finetune_epochs is not None:
        cfg = RecoverConfig(**{**cfg.to_dict(), "epochs": finetune_epochs})
    return cfg


def _work_copy(model: nn.Module) -> nn.Module:
    """A deep copy to prune (the input stays the teacher) that keeps the model's edgeprune attributes."""
    work = copy_model(model)
    for attr in ("edgeprune_spec", "input_shape", "edgeprune_build_kwargs", "edgeprune_plan"):
        if hasattr(model, attr):
            setattr(work, attr, getattr(model, attr))
    return work


def _weight_targets(pattern, sparsity, threshold, schedule, steps) -> tuple[list, str]:
    if pattern == "2:4":
        return [0.5], "oneshot"
    if sparsity is None and threshold is not None and threshold.method != "solve":
        return [None] * (1 if schedule == "oneshot" else steps), schedule  # a pure threshold run: the rule decides
    return step_targets(schedule, sparsity, steps), schedule


def sparsify(
    model: nn.Module,
    data,
    sparsity: float | None,
    *,
    pattern: str = "unstructured",
    criterion: str = "magnitude",
    schedule: str = "agp",
    steps: int = 5,
    threshold: DynamicThreshold | None = None,
    max_layer_sparsity: float = 0.99,
    recover: RecoverConfig | None = None,
    finetune_epochs: int | None = None,
    distill: bool = True,
    regularizers: Sequence[Regularizer] = (),
    ignore: Iterable[str] = (),
    metric: Callable = top1,
    seed: int = 0,
    progress: Progress | bool | None = None,
) -> ScheduleResult:
    """Unstructured / block sparsity by ``schedule`` with masked recovery after every step.

    Masks are recomputed at every step from the current (fine-tuned) weights with a dynamic
    threshold, and only ever grow: a weight removed at step t stays removed. ``regularizers`` act
    in a sparsity-training phase before the first cut and in the recoveries between steps; the
    last recovery is plain (a regulariser there would only fight the final masks). ``2:4`` is 50 %
    by definition and is applied in one shot. ``schedule="admm"`` runs ``sparsify_admm`` with its
    defaults (``steps`` and ``criterion`` do not apply: ADMM projects by magnitude).
    """
    if schedule == "admm":
        if criterion != "magnitude" or threshold is not None:
            raise UserError(
                "schedule admm projects onto the sparse set by magnitude; drop the criterion/threshold "
                "or use schedule oneshot, linear or agp"
            )
        kw = dict(pattern=pattern, ignore=ignore, recover=recover, distill=distill, metric=metric, progress=progress)
        return sparsify_admm(model, data, sparsity, regularizers=regularizers, **kw)
    cfg = _config(recover, finetune_epochs)
    if regularizers and cfg.epochs < 1:
        raise UserError(_NO_EPOCHS)
    teacher = _frozen_teacher(model) if distill else None
    work, pre = regularised_training(_work_copy(model), data, cfg, teacher, regularizers, metric, progress)
    targets, schedule = _weight_targets(pattern, sparsity, threshold, schedule, steps)
    base_val = metric(work, data.val) if hasattr(data, "val") else None
    result = ScheduleResult(
        model=work,
        baseline={
            "val": base_val,
            "schedule": schedule,
            "pattern": pattern,
            "criterion": criterion,
            "targets": targets,
            "recover": cfg.to_dict(),
            "distill": distill,
            "regularizers": [r.describe() for r in regularizers],
        },
    )
    if pre is not None:
        result.baseline["sparsity_training"] = pre
    masks = None
    mask_kw = dict(data=data, ignore=ignore, threshold=threshold, max_layer_sparsity=max_layer_sparsity)
    for t, target in enumerate(targets, 1):
        t0 = time.perf_counter()
        cut = None if pattern == "2:4" else target
        masks = make_masks(work, cut, pattern, criterion, previous=masks, seed=seed + t, **mask_kw)
        masks = distributed.broadcast_object(masks)  # rank 0's masks on every rank
        apply_masks(work, masks)
        val_cut = metric(work, data.val)
        regs = () if t == len(targets) else regularizers  # as structured: the last recovery is plain
        work, hist = finetune(
            work,
            data,
            cfg,
            teacher=teacher,
            masks=masks,
            regularizers=regs,
            metric=metric,
            progress=progress,
            description=f"step {t}/{len(targets)}",
        )
        result.log.append(_weight_step_row(t, target, work, masks, val_cut, metric(work, data.val), hist, t0))
        if threshold is not None and threshold.method == "iterative":
            result.log[-1]["threshold_coefficient"] = threshold.history[-1]
    result.masks = masks
    work.edgeprune_masks = masks
    return result


def _weight_step_row(t: int, target, work, masks, val_cut, val_recovered, hist: dict, t0: float) -> dict:
    """The log row of one ``sparsify`` step."""
    rep = sparsity_report(work, masks)
    return {
        "step": t,
        "target": target,
        "sparsity": rep["total"]["sparsity"],
        "val_pruned": val_cut,
        "val_recovered": val_recovered,
        "epochs": len(hist["epochs"]),
        "regularizers": hist["regularizers"],
        "seconds": round(time.perf_counter() - t0, 3),
    }


def sparsify_admm(
    model: nn.Module,
    data,
    sparsity: float | None,
    *,
    pattern: str = "unstructured",
    rho: float = ADMM_RHO,
    rho_growth: float = ADMM_RHO_GROWTH,
    rho_max: float | None = ADMM_RHO_MAX,
    admm_epochs: int = ADMM_EPOCHS,
    retrain_epochs: int = ADMM_RETRAIN_EPOCHS,
    ignore: Iterable[str] = (),
    recover: RecoverConfig | None = None,
    distill: bool = True,
    regularizers: Sequence[Regularizer] = (),
    metric: Callable = top1,
    progress: Progress | bool | None = None,
) -> ScheduleResult:
    """Unstructured / block sparsity by ADMM: train towards the per-layer sparse set with a rising
    rho, cut to it, then retrain with the masks fixed (``edgeprune.recover.admm_prune``)."""
    from ..recover import admm_prune

    cfg = recover or RecoverConfig()
    teacher = _frozen_teacher(model) if distill else None
    work = _work_copy(model)
    names = prunable_weights(work, ignore=ignore)
    if pattern == "2:4":
        names = [n for n in names if dict(work.named_parameters())[n][0].numel() % 4 == 0]
    base_val = metric(work, data.val)
    t0 = time.perf_counter()
    # keyword arguments on purpose (alike in shape to models/training.py's metrics.update, unrelated
    # code): admm_prune takes many same-typed knobs
    work, masks, hist = admm_prune(
        work,
        data,
        projection(sparsity, pattern),
        names,
        cfg,
        rho=rho,
        rho_growth=rho_growth,
        rho_max=rho_max,
        teacher=teacher,
        retrain_epochs=retrain_epochs,
        regularizers=regularizers,
        progress=progress,
        epochs=admm_epochs,
    )
    rep = sparsity_report(work, masks)
    result = ScheduleResult(
        model=work,
        masks=masks,
        baseline={
            "val": base_val,
            "schedule": "admm",
            "pattern": pattern,
            "rho": rho,
            "rho_growth": rho_growth,
            "rho_max": rho_max,
            "rhos": hist["rhos"],
            "admm_epochs": admm_epochs,
            "retrain_epochs": retrain_epochs,
            "regularizers": [r.describe() for r in regularizers],
            "recover": cfg.to_dict(),
            "distill": distill,
        },
    )
    result.log.append(
        {
            "step": 1,
            "target": 0.5 if pattern == "2:4" else sparsity,
            "sparsity": rep["total"]["sparsity"],
            "primal_residual": hist["primal_residual"],
            "val_recovered": metric(work, data.val),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    work.edgeprune_masks = masks
    return result


def regularised_training(work, data, cfg, teacher, regularizers, metric=top1, progress=None):
    """Sparsity training before the first structured cut (network slimming's recipe, Liu et al.
    2017): recover with the regularisers so the first importance already sees what they drove
    down. Returns ``(model, log row)``; without regularisers, ``(model, None)``.

    Structured schedules run their last recovery plain, so a one-shot run would otherwise never
    apply a regulariser at all. A regulariser with no recovery epochs cannot act: that raises."""
    if not regularizers:
        return work, None
    if cfg.epochs < 1:
        raise UserError(_NO_EPOCHS)
    t0 = time.perf_counter()
    val0 = metric(work, data.val)
    work, hist = finetune(
        work,
        data,
        cfg,
        teacher=teacher,
        regularizers=regularizers,
        metric=metric,
        progress=progress,
        description="sparsity training",
        restore_best=False,
    )
    return work, {
        "step": 0,
        "phase": "regularised training",
        "val_before": val0,
        "val_after": metric(work, data.val),
        "epochs": len(hist["epochs"]),
        "regularizers": hist["regularizers"],
        "seconds": round(time.perf_counter() - t0, 3),
    }


def incremental_ratio(previous: float, target: float) -> float:
    """Ratio to prune from a model that already lost ``previous`` so the total lost is ``target``."""
    if target <= previous:
        return 0.0
    return 1.0 - (1.0 - target) / (1.0 - previous)


def _copy_attrs(src: nn.Module, dst: nn.Module) -> nn.Module:
    for attr in ("edgeprune_spec", "input_shape", "edgeprune_build_kwargs"):
        if hasattr(src, attr):
            setattr(dst, attr, getattr(src, attr))
    return dst


def prune_structured(
    model: nn.Module,
    data,
    example_inputs,
    *,
    ratio: float | None = None,
    target_macs: float | None = None,
    schedule: str = "agp",
    steps: int = 3,
    importance: str = "l2",
    round_to: int = 8,
    global_ranking: bool | None = None,
    ignore: Iterable[str] = (),
    max_layer_ratio: float = 0.9,
    recover: RecoverConfig | None = None,
    finetune_epochs: int | None = None,
    distill: bool = True,
    regularizers: Sequence[Regularizer] = (),
    threshold: DynamicThreshold | None = None,
    metric: Callable = top1,
    seed: int = 0,
    progress: Progress | bool | None = None,
) -> ScheduleResult:
    """Structured (channel) pruning by ``schedule`` with recovery after every step.

    The final target is a channel ``ratio`` or ``target_macs`` (a fraction <= 1 of the MACs or
    an absolute count). Each step plans on the current, already smaller model for the step's
    cumulative target, applies the plan, and fine-tunes with distillation from the unpruned
    model. ``regularizers`` (e.g. BN-L1, group lasso) act in a sparsity-training phase before the
    first cut and in the recoveries *between* steps, so each importance sees what they drove
    down; the last recovery is plain. The log records what ran at every step.
    The returned ``plans`` replay in order on a fresh model (``ep.save(model, dir, plan=plans)``).

    ``threshold`` (a ``DynamicThreshold``) replaces the ratio selection: at every step the
    channel scores of the current model are recomputed and the rule picks what goes (``solve``
    to the step's share of ``ratio``; the value rules from the current score distribution,
    capped by the step's share of ``ratio``; ``ratio`` None or 1.0 leaves them uncapped), then
    kept counts are rounded up to ``round_to``.
    """
    from .macs import count_macs_params

    _check_structured(schedule, ratio, target_macs, threshold)
    cfg = _config(recover, finetune_epochs, seed)
    teacher = _frozen_teacher(model) if distill else None
    fractions = step_targets(schedule, 1.0, steps)
    base_macs, base_params = count_macs_params(model, example_inputs)
    goal_macs = None
    if target_macs is not None:
        goal_macs = target_macs * base_macs if target_macs <= 1 else float(target_macs)
    work = _copy_attrs(model, copy_model(model))
    base_val = metric(work, data.val)
    result = ScheduleResult(
        model=work,
        baseline={
            "val": base_val,
            "macs": int(base_macs),
            "params": int(base_params),
            "schedule": schedule,
            "ratio": ratio,
            "target_macs": target_macs,
            "fractions": fractions,
            "recover": cfg.to_dict(),
            "distill": distill,
            "importance": importance,
            "regularizers": [r.describe() for r in regularizers],
            "threshold": threshold.to_dict() if threshold else None,
        },
    )
    from .plan import default_global_ranking

    global_ranking = default_global_ranking(model, global_ranking)
    plan_kw = {"importance": importance, "round_to": round_to, "global_ranking": global_ranking, "ignore": ignore}
    plan_kw.update(max_layer_ratio=max_layer_ratio, seed=seed, calib=data.train)
    planner = _StepPlanner(example_inputs, plan_kw, threshold, ratio, goal_macs, base_macs, work)
    ck = checkpoint.active()
    work, first, resume = _resume_structured(ck, model, work, result)
    if first == 1 and resume is None:  # a resumed run's weights already went through this phase
        work, row = regularised_training(work, data, cfg, teacher, regularizers, metric, progress)
        if row is not None:
            result.baseline["sparsity_training"] = row
    step = _StructuredStep(model, data, example_inputs, cfg, teacher, regularizers, metric, progress, planner, ck)
    for t, f in enumerate(fractions, 1):
        if t >= first:
            work = step.run(work, result, t, f, len(fractions), resume if t == first else None)
    result.model = work
    if threshold is not None:
        result.baseline["threshold"] = threshold.to_dict()  # with the iterative rule's coefficients
    work.edgeprune_plan = list(result.plans)
    return result


def _check_structured(schedule: str, ratio, target_macs, threshold) -> None:
    if schedule == "admm":
        raise UserError("schedule admm prunes weights (sparsify); for channels use oneshot, linear, agp or adaptive")
    if (ratio is None) == (target_macs is None) and not (threshold is not None and threshold.method != "solve"):
        raise ValueError("give exactly one of ratio or target_macs")
    if threshold is not None and target_macs is not None:
        raise ValueError("a dynamic threshold selects by score; combine it with ratio, not target_macs")


class _StructuredStep:
    """One step of ``prune_structured``: plan on the current model, cut, recover, log, checkpoint."""

    def __init__(self, model, data, example_inputs, cfg, teacher, regularizers, metric, progress, planner, ck):
        self.model, self.data, self.x, self.cfg, self.teacher = model, data, example_inputs, cfg, teacher
        self.regularizers, self.metric, self.progress = regularizers, metric, progress
        self.planner, self.ck = planner, ck

    def run(self, work, result: ScheduleResult, t: int, f: float, steps: int, resume) -> nn.Module:
        """Step ``t`` of ``steps`` towards the cumulative fraction ``f``; returns the recovered model."""
        from .apply import apply
        from .macs import count_macs_params

        data, cfg, metric, ck = self.data, self.cfg, self.metric, self.ck
        t0 = time.perf_counter()
        step_start = (copy.deepcopy(work.state_dict()), len(result.plans)) if ck else None
        p = distributed.broadcast_object(self.planner.plan(work, f))  # under torchrun rank 0 decides for every rank
        if not p.empty:
            work = _copy_attrs(self.model, apply(work, p))
            result.plans.append(p)
        val_cut = metric(work, data.val)
        regs = () if t == steps else self.regularizers
        # a regularised recovery may trade a little validation accuracy for sparsity on purpose:
        # keep its weights rather than restoring the best (least regularised) epoch
        work, hist = finetune(
            work,
            data,
            cfg,
            teacher=self.teacher,
            regularizers=regs,
            metric=metric,
            progress=self.progress,
            description=f"step {t}/{steps}",
            restore_best=cfg.restore_best and not regs,
            on_epoch=_epoch_saver(ck, t, result, step_start),
            resume=_check_replanned(resume, result),
        )
        macs, params = count_macs_params(work, self.x)
        result.log.append(
            {
                "step": t,
                "fraction": f,
                "macs": int(macs),
                "params": int(params),
                "macs_ratio": macs / self.planner.base_macs,
                "val_pruned": val_cut,
                "val_recovered": metric(work, data.val),
                "epochs": len(hist["epochs"]),
                "regularizers": hist["regularizers"],
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        if ck is not None:
            ck.save(_structured_meta("step", t, result), {"model": work.state_dict()})
        return work


# Checkpoints of ``prune_structured`` (``edgeprune.checkpoint``): after every step the pruned model,
# the plan chain and the log; after every N recovery epochs also the weights at the start of the
# step and the recovery loop's state. A mid-step resume restores the step-start weights, plans the
# step again (planning is deterministic; the plan hash is checked) and continues the recovery.


def _structured_meta(phase: str, t: int, result: ScheduleResult, **extra) -> dict:
    return {
        "kind": "structured",
        "phase": phase,
        "step": t,
        "plans": [p.to_dict() for p in result.plans],
        "log": copy.deepcopy(result.log),
        **extra,
    }


def _epoch_saver(ck, t, result, step_start):
    if ck is None:
        return None

    def save(state: dict) -> None:
        if ck.wants_epoch(state["meta"]["epoch"]):
            sd, n_before = step_start
            meta = _structured_meta("epoch", t, result, plans_before_step=n_before, finetune=state["meta"])
            ck.save(meta, {"step_start": sd, "finetune": state["tensors"]})

    return save


def _resume_structured(ck, model, work, result):
    """``(work, first step to run, recovery state to resume or None)`` from the run's checkpoint."""
    from .apply import apply
    from .plan import PrunePlan

    ck_state = ck.take_resume() if ck is not None else None
    if ck_state is None:
        return work, 1, None
    meta = ck_state.meta
    if meta.get("kind") != "structured":
        raise checkpoint.CheckpointError(f"{ck_state.path}: not a checkpoint of a structured schedule")
    plans = [PrunePlan.from_dict(d) for d in meta["plans"]]
    mid = meta["phase"] == "epoch"
    keep = plans[: meta["plans_before_step"]] if mid else plans
    for p in keep:
        work = _copy_attrs(model, apply(work, p))
    work.load_state_dict(ck_state.tensors["step_start" if mid else "model"])
    result.plans, result.log = list(keep), list(meta["log"])
    if not mid:
        if ck_state.rng is not None:
            torch.set_rng_state(ck_state.rng)
        return work, meta["step"] + 1, None
    resume = {"meta": meta["finetune"], "tensors": ck_state.tensors["finetune"], "rng": ck_state.rng}
    resume["plan_hashes"] = [p.hash for p in plans]
    resume["path"] = str(ck_state.path)
    return work, meta["step"], resume


def _check_replanned(resume, result):
    """The recovery state to resume, after checking the step was planned again exactly as before."""
    if resume is not None and [p.hash for p in result.plans] != resume["plan_hashes"]:
        raise checkpoint.CheckpointError(
            f"{resume['path']}: planning the step again gave a different plan; the model, data or flags changed"
        )
    return resume


class _StepPlanner:
    """The plan of one structured step for the cumulative fraction ``f`` of the final target:
    by threshold, by MAC goal, or by ratio. Ratio targets are recomputed from the channels
    actually left, so rounding at one step is made up at the next instead of compounding."""

    def __init__(self, example_inputs, kw, threshold, ratio, goal_macs, base_macs, model):
        self.x, self.kw, self.threshold, self.ratio = example_inputs, kw, threshold, ratio
        self.goal_macs, self.base_macs = goal_macs, base_macs
        self.sizes0 = self.sizes(model)
        self.total0 = sum(self.sizes0.values())

    def sizes(self, m) -> dict:
        from ..graph import trace

        return {g.id: g.size for g in trace(m, self.x, ignore=tuple(self.kw["ignore"])).groups() if g.prunable}

    def _share(self, now, f) -> float:
        return max(0.0, 1.0 - self.total0 * (1 - self.ratio * f) / sum(now.values()))

    def plan(self, work, f):
        from .plan import plan as make_plan

        kw, ratio, rule = self.kw, self.ratio, self.threshold
        if rule is not None:
            uncapped = ratio is None or (ratio >= 1.0 and rule.method != "solve")
            step = None if uncapped else self._share(self.sizes(work), f)
            names = ("importance", "round_to", "ignore", "max_layer_ratio", "seed", "calib")
            return _threshold_plan(work, self.x, rule, step, *(kw[k] for k in names))
        if self.goal_macs is not None:
            step_goal = self.base_macs - (self.base_macs - self.goal_macs) * f
            return make_plan(work, self.x, target_macs=float(step_goal), **kw)
        now = self.sizes(work)
        if kw["global_ranking"]:
            return make_plan(work, self.x, ratio=self._share(now, f), **kw)
        want = {g: int(round(self.sizes0[g] * (1 - ratio * f))) for g in now if g in self.sizes0}
        return make_plan(work, self.x, ratios={g: 1.0 - want[g] / now[g] for g in want if want[g] < now[g]}, **kw)


def _threshold_plan(
    model,
    example_inputs,
    rule: DynamicThreshold,
    step_target,
    importance,
    round_to,
    ignore,
    max_layer_ratio,
    seed,
    calib,
):
    """A plan whose channels are chosen by a dynamic threshold over the current group scores.

    ``solve`` compares groups after dividing each group's scores by their mean (as the ratio
    selection does), so layers of different scale compete fairly; the value rules (relative,
    percentile, absolute, mean, iterative) read the raw scores, so ``relative`` is exactly
    ``coef x max`` as documented."""
    import math

    import numpy as np

    from ..graph import trace
    from .importance import needs_data, score_groups
    from .plan import keep_in_every_layer, plan_that_runs

    graph = trace(model, example_inputs, ignore=tuple(ignore))
    groups = [g for g in graph.groups() if g.prunable]
    raw = score_groups(graph, importance, calib=calib if needs_data(importance) else None, seed=seed)
    normalise = rule.scope == "global" and rule.method == "solve"
    scores = {}
    for g in groups:
        s = np.asarray(raw[g.id], dtype=np.float64)
        mean = s.mean() if s.size else 0.0
        scores[g.id] = torch.from_numpy(s / mean if (normalise and mean > 0) else s)
    rule = dataclasses.replace(rule, max_layer_ratio=min(rule.max_layer_ratio, max_layer_ratio))
    keep = rule.masks(scores, step_target)
    out = {}
    for g in groups:
        k = keep[g.id].numpy()
        n_keep = int(k.sum())
        unit = min(g.round_step(round_to, n_keep), g.size)
        n_keep = min(g.size, int(math.ceil(max(n_keep, 1) / unit) * unit))
        if n_keep >= g.size:
            continue
        order = np.argsort(-scores[g.id].numpy(), kind="stable")
        mask = np.zeros(g.size, dtype=bool)
        mask[order[:n_keep]] = True
        out[g.id] = keep_in_every_layer(graph, g.id, mask, scores[g.id].numpy(), rule.max_layer_ratio)
    return plan_that_runs(
        model,
        graph,
        out,
        {"threshold": rule.to_dict(), "step_target": step_target, "importance": importance, "round_to": round_to},
    )
