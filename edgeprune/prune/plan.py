"""Pruning plans: choose which channels go, store the choice as JSON, replay it.

Consumes: a model + example inputs (traced to a ``Graph``), importance scores, a ratio (global or
per group) or a MAC target, round_to, max_layer_ratio. Produces: a ``PrunePlan``: per layer the
kept indices of each axis, parameter slices (layer scale, class token), attribute fix-ups
(num_heads, head size), the model's signature and input shapes. Plain JSON, no pickles; it
replays on a fresh instance of the same model with ``edgeprune.prune.apply``.

Reusable pieces for schedules and searches: ``score_groups`` (importance.py), ``select_channels`` (scores
-> keep masks), ``plan_from_keep`` (keep masks -> PrunePlan), ``plan(..., ratios={group: r})``.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch.nn as nn

from ..errors import UserError
from ..graph import Graph, split_inputs, trace
from ..graph.groups import input_specs
from ..graph.trace import ignore_entries
from ..limits import MAX_INPUT_ELEMENTS, input_shape_ok
from .importance import check_importance, score_groups

PLAN_VERSION = 1


def as_plan_list(plans) -> list:
    """``None``, one ``PrunePlan`` or a sequence of them (a model's ``edgeprune_plan``, a saved
    model's plan chain) as a list in replay order."""
    if plans is None:
        return []
    if isinstance(plans, (list, tuple)):
        return list(plans)
    return [plans]


@dataclass
class PrunePlan:
    modules: dict = field(default_factory=dict)  # layer -> {role: kept indices}
    params: list = field(default_factory=list)  # {"name", "axis", "keep"}
    attrs: list = field(default_factory=list)  # {"module", "attr", "value"}
    groups: list = field(default_factory=list)  # {"id", "channels", "kept"}
    signature: str = ""
    inputs: list = field(default_factory=list)  # [{"shape", "dtype"}]
    settings: dict = field(default_factory=dict)
    version: int = PLAN_VERSION
    pinned: list = field(default_factory=list)  # {"group", "layers", "channels", "reason"}: never cut

    @property
    def hash(self) -> str:
        core = {"modules": self.modules, "params": self.params, "attrs": self.attrs, "signature": self.signature}
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def empty(self) -> bool:
        return not (self.modules or self.params or self.attrs)

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "hash": self.hash,
            "signature": self.signature,
            "inputs": self.inputs,
            "settings": self.settings,
            "groups": self.groups,
            "modules": self.modules,
            "params": self.params,
            "attrs": self.attrs,
            "pinned": self.pinned,
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, d) -> PrunePlan:
        """A plan from its JSON object; any malformed field raises PlanError (a UserError) naming it."""
        check_plan_dict(d)
        plan = cls(
            modules=d["modules"],
            params=d["params"],
            attrs=d["attrs"],
            groups=d.get("groups", []),
            signature=d["signature"],
            inputs=d.get("inputs", []),
            settings=d.get("settings", {}),
            version=d["version"],
            pinned=d.get("pinned", []),
        )
        if "hash" in d and d["hash"] != plan.hash:
            raise PlanError(
                f"prune plan hash {d['hash']} does not match its content ({plan.hash}); the file was edited or damaged"
            )
        return plan

    @classmethod
    def from_json(cls, text: str) -> PrunePlan:
        try:
            d = json.loads(text)
        except ValueError as e:  # (JSONDecodeError, and a number past Python's digit limit)
            raise PlanError(f"prune plan is not valid JSON: {e}; write it again with `edgeprune prune`") from None
        except RecursionError:
            raise PlanError(
                "prune plan is not valid JSON (nested too deep); write it again with `edgeprune prune`"
            ) from None
        return cls.from_dict(d)


class PlanError(UserError):
    """A prune plan file that is not a plan: the message names the field and what it must be."""


# field -> (JSON type, what each element must be: None, or a checker of one element)
def _is_index_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_PLAN_FIELDS = {
    "version": (int, None),
    "hash": (str, None),
    "signature": (str, None),
    "modules": (dict, None),
    "params": (list, ("an object {name: str, axis: int, keep: [int >= 0]}", lambda e: (
        isinstance(e, dict) and isinstance(e.get("name"), str) and _is_int(e.get("axis")) and _is_index_list(e.get("keep"))
    ))),
    "attrs": (list, ("an object {module: str, attr: str, value: int}", lambda e: (
        isinstance(e, dict) and isinstance(e.get("module"), str) and isinstance(e.get("attr"), str)
        and _is_int(e.get("value"))
    ))),
    "groups": (list, ("an object", lambda e: isinstance(e, dict))),
    "inputs": (list, (f"an object {{shape: [int > 0], at most {MAX_INPUT_ELEMENTS} elements; dtype: str}}", lambda e: (
        isinstance(e, dict) and isinstance(e.get("dtype", ""), str) and input_shape_ok(e.get("shape"))
    ))),
    "settings": (dict, None),
    "pinned": (list, ("an object", lambda e: isinstance(e, dict))),
}  # fmt: skip
_PLAN_REQUIRED = ("version", "signature", "modules", "params", "attrs")


def check_plan_dict(d) -> None:
    """Raise PlanError unless ``d`` has the shape ``PrunePlan.to_dict`` writes (unknown keys refused)."""
    fix = "write the plan again with `edgeprune prune`"
    if not isinstance(d, dict):
        raise PlanError(f"a prune plan must be a JSON object, got {type(d).__name__}; {fix}")
    unknown = sorted(set(d) - set(_PLAN_FIELDS))
    if unknown:
        raise PlanError(f"prune plan has unknown field {unknown[0]!r} (fields: {', '.join(_PLAN_FIELDS)}); {fix}")
    if d.get("version") != PLAN_VERSION:
        raise PlanError(f"prune plan version {d.get('version')!r} is not supported (expected {PLAN_VERSION})")
    for key, (typ, item) in _PLAN_FIELDS.items():
        if key not in d:
            if key in _PLAN_REQUIRED:
                raise PlanError(f"prune plan field {key!r} is missing or not a {typ.__name__}; {fix}")
            continue
        if not isinstance(d[key], typ) or isinstance(d[key], bool):
            raise PlanError(f"prune plan field {key!r} is missing or not a {typ.__name__}; {fix}")
        if item is not None:
            what, ok = item
            bad = next((i for i, e in enumerate(d[key]) if not ok(e)), None)
            if bad is not None:
                raise PlanError(f"prune plan field {key!r}: entry {bad} must be {what}, got {d[key][bad]!r:.80}")
    for name, roles in d["modules"].items():
        if not isinstance(roles, dict) or not all(_is_index_list(v) for v in roles.values()):
            raise PlanError(f"prune plan entry for layer {name!r} must map roles to lists of ints >= 0; {fix}")


def _check_args(ratio, round_to, max_layer_ratio, target_macs):
    if not (isinstance(ratio, (int, float)) and 0 <= ratio < 1):
        raise ValueError(f"ratio={ratio!r} is outside [0, 1); pass the fraction of channels to remove, e.g. 0.5")
    if not (round_to is None or (isinstance(round_to, int) and round_to >= 1)):
        raise ValueError(f"round_to={round_to!r} must be an integer >= 1")
    if not (0 < max_layer_ratio <= 1):
        raise ValueError(f"max_layer_ratio={max_layer_ratio!r} must be in (0, 1]")
    if target_macs is not None and not target_macs > 0:
        raise ValueError(f"target_macs={target_macs!r} must be > 0 (a fraction <= 1 of the original, or a MAC count)")


def select_channels(
    graph: Graph,
    scores: dict,
    ratio: float = 0.5,
    ratios: dict | None = None,
    round_to: int = 1,
    global_ranking: bool = True,
    max_layer_ratio: float = 0.9,
) -> dict:
    """Scores -> {group id: keep mask}. Lowest scores go first.

    ``ratios`` (group id -> fraction) overrides ``ratio`` per group and implies per-group ranking;
    groups missing from it are left whole. Kept counts are rounded to the nearest multiple that
    lets every layer of a pruned group keep a multiple of ``round_to`` channels, and every conv group
    of a grouped convolution too where it keeps at least ``round_to`` (ties remove more; never below
    the ``max_layer_ratio`` floor); a group that would round back to its full size is left whole."""
    groups = [g for g in graph.groups() if g.prunable]
    round_to = round_to or 1
    if ratios is not None:
        unknown = sorted(set(ratios) - {g.id for g in graph.groups()})
        if unknown:
            raise ValueError(f"ratios name unknown groups: {', '.join(unknown[:5])}")
        for gid, r in ratios.items():
            if not 0 <= r < 1:
                raise ValueError(f"ratios[{gid!r}]={r!r} is outside [0, 1)")
    remove: dict = {}
    caps = {g.id: g.size - max(1, math.ceil(g.size * (1 - max_layer_ratio) - 1e-9)) for g in groups}
    if ratios is not None or not global_ranking:
        for g in groups:
            r = ratios.get(g.id, 0.0) if ratios is not None else ratio
            remove[g.id] = min(int(math.floor(r * g.size + 1e-9)), caps[g.id])
    else:
        total = sum(g.size for g in groups)
        budget = int(math.floor(ratio * total + 1e-9))
        entries = []
        for g in groups:
            s = np.asarray(scores[g.id], dtype=np.float64)
            mean = s.mean() if s.size else 0.0
            norm = s / mean if mean > 0 else s
            entries.append(np.stack([norm, np.full(g.size, len(entries), dtype=np.float64)], 1))
        counts = {g.id: 0 for g in groups}
        if entries and budget:
            allv = np.concatenate(entries)
            order = np.argsort(allv[:, 0], kind="stable")
            for k in order:
                if budget == 0:
                    break
                g = groups[int(allv[k, 1])]
                if counts[g.id] < caps[g.id]:
                    counts[g.id] += 1
                    budget -= 1
        remove = counts
    keep = {}
    for g in groups:
        n_rm = remove.get(g.id, 0)
        if n_rm <= 0:
            continue
        raw = g.size - n_rm
        step = min(g.round_step(round_to, raw), g.size)
        floor_keep = max(1, g.size - caps[g.id])
        down, up = (raw // step) * step, int(math.ceil(raw / step)) * step
        # nearest multiple (ties prune more, as Torch-Pruning does), never below the layer floor
        kept = down if down >= max(step, floor_keep) and raw - down <= up - raw else up
        if kept >= g.size:
            continue
        s = np.asarray(scores[g.id], dtype=np.float64)
        order = np.argsort(s, kind="stable")
        mask = np.ones(g.size, dtype=bool)
        mask[order[: g.size - kept]] = False
        keep[g.id] = keep_in_every_layer(graph, g.id, mask, s, max_layer_ratio)
    return keep


def keep_in_every_layer(graph: Graph, gid: str, mask: np.ndarray, scores: np.ndarray, max_layer_ratio: float):
    """``mask`` with classes put back, best score first, in any member layer that would lose more
    than ``max_layer_ratio`` of its channels. A group's classes need not spread evenly over its
    layers: LeViT's single-head attention groups 4 query/key pairs with 8 value channels, and
    removing 8 of the 12 by score took every value channel, leaving the output projection with no
    input."""
    for cls in graph.member_classes(gid):
        floor = max(1, math.ceil(cls.size * (1 - max_layer_ratio) - 1e-9))
        missing = floor - int(mask[cls].sum())
        if missing > 0:
            out = np.unique(cls[~mask[cls]])
            back = out[np.argsort(-scores[out], kind="stable")]
            for c in back:
                if missing <= 0:
                    break
                mask[c] = True
                missing -= int((cls == c).sum())
    return mask


def plan_from_keep(graph: Graph, keep: dict, settings: dict | None = None) -> PrunePlan:
    modules, params, attrs, summary = graph.keep_entries(keep)
    return PrunePlan(
        modules=modules,
        params=params,
        attrs=attrs,
        groups=summary,
        signature=graph.signature,
        inputs=input_specs(graph.example_inputs, getattr(graph, "example_kwargs", None)),
        settings=dict(settings or {}),
        pinned=graph.pinned(),
    )


def _fails(model: nn.Module, plan: PrunePlan) -> str | None:
    """Why ``model`` pruned by ``plan`` fails on the plan's example inputs, or None when it runs."""
    from .apply import apply

    if plan.empty:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # apply's notes belong to the user's own apply
            apply(model, plan, verify=True)
    except ValueError as e:
        cause = e.__cause__ or e
        return f"{type(cause).__name__}: {(str(cause).splitlines() or [''])[0][:200]}"
    return None


def plan_that_runs(model: nn.Module, graph: Graph, keep: dict, settings: dict | None = None) -> PrunePlan:
    """``plan_from_keep``, with every group whose cut alone breaks the pruned model's forward kept
    whole and named in a warning.

    The analysis attributes hard-coded sizes to layer attributes by value; where a size is an
    expression that equals an attribute by coincidence (LeViT's single-head attention splits
    ``attention_ratio * key_dim`` value channels, which equals its ``out_dim_projection``), the cut
    runs into a shape error. Such groups are found by halving the set of cut groups (a few applies,
    only when the whole plan fails) rather than trusted to the analysis."""
    plan = plan_from_keep(graph, keep, settings)
    first = _fails(model, plan)
    if first is None:
        return plan

    def breaking(gids: list) -> list:
        if _fails(model, plan_from_keep(graph, {g: keep[g] for g in gids}, settings)) is None:
            return []
        if len(gids) == 1:
            return gids
        half = len(gids) // 2
        bad = breaking(gids[:half]) + breaking(gids[half:])
        return bad or gids  # each half runs, together they fail: keep all of them whole

    bad = breaking(sorted(keep))
    for gid in bad:
        warnings.warn(f"edgeprune.plan: cutting group {gid} breaks the model ({first}); kept whole", stacklevel=4)
    return plan_from_keep(graph, {g: k for g, k in keep.items() if g not in bad}, settings)


def default_global_ranking(model: nn.Module, global_ranking: bool | None) -> bool:
    """``global_ranking`` as given, or when None: per layer for a Hugging Face ``transformers``
    transformer (its config holds one head count and one feed-forward width for all layers, so only
    equal cuts per layer save and reload with ``save_pretrained``/``from_pretrained``), global
    otherwise (CNNs and staged models, whose configs cannot state any cut)."""
    if global_ranking is not None:
        return bool(global_ranking)
    from .hf import one_shape_per_config

    return not one_shape_per_config(model)


def plan(
    model: nn.Module,
    example_inputs,
    ratio: float = 0.5,
    importance: str = "l2",
    round_to: int = 8,
    global_ranking: bool | None = None,
    ignore=(),
    max_layer_ratio: float = 0.9,
    target_macs=None,
    seed: int = 0,
    reduction: str = "mean",
    ratios: dict | None = None,
    calib=None,
    loss_fn=None,
    attention: str = "heads",
    graph: Graph | None = None,
    scores: dict | None = None,
) -> PrunePlan:
    """Decide which channels to remove. See the module docstring; returns a ``PrunePlan``.

    target_macs: a fraction (<= 1) of the model's MACs or an absolute MAC count; the global ratio
    is searched (bisection) so the pruned model meets it. ``global_ranking`` None (default) ranks
    across layers, except for ``transformers`` transformers: there every layer loses the same share
    (``default_global_ranking``)."""
    _check_args(ratio, round_to, max_layer_ratio, target_macs)
    global_ranking = default_global_ranking(model, global_ranking)
    round_to = round_to or 1  # None: no rounding
    ignore = ignore_entries(ignore)
    check_importance(importance)
    args, kwargs = split_inputs(example_inputs)
    if graph is None:
        graph = trace(model, kwargs or args, attention=attention, ignore=ignore)
    if scores is None:
        scores = score_groups(graph, importance, reduction=reduction, calib=calib, loss_fn=loss_fn, seed=seed)
    settings = {
        "ratio": ratio,
        "importance": importance,
        "round_to": round_to,
        "global_ranking": global_ranking,
        "ignore": [i if isinstance(i, str) else getattr(i, "__name__", type(i).__name__) for i in ignore],
        "max_layer_ratio": max_layer_ratio,
        "target_macs": target_macs,
        "seed": seed,
        "reduction": reduction,
        "attention": attention,
        **({"ratios": dict(ratios)} if ratios is not None else {}),
    }

    def make(r):
        keep = select_channels(
            graph,
            scores,
            ratio=r,
            ratios=ratios,
            round_to=round_to,
            global_ranking=global_ranking,
            max_layer_ratio=max_layer_ratio,
        )
        if ratios is None:  # a config that derives the head size: the residual width follows the heads
            from .hf import couple_residual

            keep = couple_residual(model, graph, scores, keep)
        return plan_that_runs(model, graph, keep, settings)

    if target_macs is None:
        return make(ratio)
    return _bisect_for_macs(model, kwargs or args, make, target_macs, max_layer_ratio)


def _bisect_for_macs(model, inputs, make, target_macs, max_layer_ratio) -> PrunePlan:
    """The plan ``make(ratio)`` of the smallest global ratio whose pruned model meets ``target_macs``
    (ten bisection steps over [0, 0.95]); the ratio found is recorded in its settings."""
    from .apply import apply
    from .macs import count_macs_params

    base, _ = count_macs_params(model, inputs)
    goal = target_macs * base if target_macs <= 1 else float(target_macs)

    def macs_of(p):
        return count_macs_params(apply(model, p, verify=False), inputs)[0]

    lo, hi = 0.0, 0.95
    best = make(hi)
    if macs_of(best) > goal:
        warnings.warn(
            f"target_macs={target_macs} not reachable with max_layer_ratio={max_layer_ratio}; "
            "returning the smallest model found",
            stacklevel=3,  # the caller of plan()
        )
        best.settings["ratio"] = hi
        return best
    for _ in range(10):
        mid = (lo + hi) / 2
        p = make(mid)
        if macs_of(p) <= goal:
            hi, best = mid, p
        else:
            lo = mid
    best.settings["ratio"] = round(hi, 4)
    return best
