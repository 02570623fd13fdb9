"""Dynamic thresholds: which scored items (weights, blocks, channels) to remove at one step.

Consumes: scores (dict name -> tensor, higher = more important; optional per-item weights such
as block sizes or MACs per channel) and a rule. Produces: keep masks (dict name -> bool tensor
of the score's shape, True = kept).

Rules (docs/methods.md):
- ``solve``: remove exactly the lowest-scored items whose weight adds up to the step's target
  fraction (the threshold is solved from the current distribution, so it moves every step);
- ``relative``: remove items scored below ``coef * max`` (max taken per scope);
- ``percentile``: remove items below the ``q``-quantile (``q`` in [0, 1]) of the scores;
- ``absolute``: remove items scored below a fixed value;
- ``mean``: remove items scored below ``c * mean`` of the scores (per scope);
- ``iterative``: a threshold that raises itself: ``relative`` with a coefficient t that starts at
  ``value`` and grows at every step (``t <- t * gamma``, or ``t <- t + delta``), and keeps growing
  within a step until the step's target is removed (the target says stop); without a target it
  grows once per step. The coefficients used are kept in ``history``.
All but ``solve`` take the step's target as a cap when one is given (never remove more).
``scope="global"`` compares all tensors together; ``"layer"`` applies the rule to each tensor
alone. ``max_layer_ratio`` caps what any one tensor may lose (the excess is re-distributed to
the other tensors under ``solve``), and at least ``min_keep`` items of every tensor survive.
Items scored ``-inf`` (already removed at an earlier step) are always removed first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..errors import UserError

METHODS = ("solve", "relative", "percentile", "absolute", "mean", "iterative")
SCOPES = ("global", "layer")


def _flat(scores: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor] | None):
    names = list(scores)
    s = [scores[n].detach().flatten().double() for n in names]
    w = [
        (weights[n].detach().flatten().double() if weights is not None and n in weights else torch.ones_like(s[i]))
        for i, n in enumerate(names)
    ]
    return names, s, w


def _remove_lowest(s: torch.Tensor, w: torch.Tensor, amount: float, floor: bool = False) -> torch.Tensor:
    """Bool 'removed' vector: the lowest scores (stable by index) until their weight >= amount
    (``floor``: the longest prefix whose weight stays <= amount, for caps)."""
    removed = torch.zeros(s.numel(), dtype=torch.bool)
    if amount <= 0 or s.numel() == 0:
        return removed
    order = torch.argsort(s, stable=True)
    cum = torch.cumsum(w[order], 0)
    if floor:
        k = int(torch.searchsorted(cum, torch.tensor([amount + 1e-9], dtype=cum.dtype), right=True).item())
    else:
        # smallest prefix whose weight reaches the amount (a tiny epsilon absorbs float error)
        k = int(torch.searchsorted(cum, torch.tensor([amount - 1e-9], dtype=cum.dtype)).item()) + 1
    removed[order[: min(k, s.numel())]] = True
    return removed


def _threshold(s: torch.Tensor, method: str, value: float) -> float:
    finite = s[torch.isfinite(s)]
    if finite.numel() == 0:
        return float("inf")
    if method == "relative":
        return value * float(finite.max())
    if method == "percentile":
        return float(torch.quantile(finite, value))
    if method == "mean":
        return value * float(finite.mean())
    return float(value)  # absolute


def select(
    scores: Mapping[str, torch.Tensor],
    target: float | None = None,
    *,
    method: str = "solve",
    value: float | None = None,
    scope: str = "global",
    weights: Mapping[str, torch.Tensor] | None = None,
    max_layer_ratio: float = 1.0,
    min_keep: int = 1,
) -> dict[str, torch.Tensor]:
    """Return keep masks (True = kept) for ``scores`` under one rule; see the module docstring.

    ``target`` is the fraction (by weight) to remove for ``solve``; ``value`` is the coefficient,
    quantile or absolute threshold for the other methods, for which ``target`` (optional) is a
    cap: the lowest-scored items under the threshold go, but never more than ``target``.
    """
    if method not in METHODS or method == "iterative":  # iterative keeps state: DynamicThreshold
        raise UserError(f"unknown threshold method {method!r}; use one of {', '.join(METHODS[:-1])}")
    if scope not in SCOPES:
        raise UserError(f"unknown threshold scope {scope!r}; use global or layer")
    if method == "solve":
        if target is None or not 0.0 <= target <= 1.0:
            raise ValueError(f"threshold method 'solve' needs a target fraction in [0, 1], got {target}")
    elif value is None:
        raise ValueError(f"threshold method {method!r} needs a value")
    elif method in ("relative", "percentile") and not 0.0 <= value <= 1.0:
        raise UserError(f"{method} threshold value must be in [0, 1], got {value}")
    elif method == "mean" and not value >= 0.0:
        raise UserError(f"mean threshold coefficient must be >= 0, got {value}")
    if not 0.0 < max_layer_ratio <= 1.0:
        raise ValueError(f"max_layer_ratio must be in (0, 1], got {max_layer_ratio}")

    if method != "solve" and target is not None and not 0.0 <= target <= 1.0:
        raise ValueError(f"the cap of a {method} threshold must be a fraction in [0, 1], got {target}")
    names, s, w = _flat(scores, weights)
    removed = [torch.zeros(x.numel(), dtype=torch.bool) for x in s]
    if scope == "layer":
        for i in range(len(names)):
            if method == "solve":
                removed[i] = _remove_lowest(s[i], w[i], target * float(w[i].sum()))
            else:
                removed[i] = s[i] < _threshold(s[i], method, value)
                if target is not None:  # capped: never more than the target fraction
                    removed[i] &= _remove_lowest(s[i], w[i], target * float(w[i].sum()), floor=True)
    else:
        if method == "solve":
            removed = _solve_global(s, w, target, max_layer_ratio)
        else:
            thr = _threshold(torch.cat(s), method, value) if s else 0.0
            removed = [x < thr for x in s]
            if target is not None:
                removed = [r & c for r, c in zip(removed, _solve_global(s, w, target, max_layer_ratio, floor=True))]
    out = {}
    for i, n in enumerate(names):
        r = removed[i] | torch.isneginf(s[i])
        r = _cap(r, s[i], w[i], max_layer_ratio, min_keep)
        out[n] = (~r).view(scores[n].shape)
    return out


def _cap(removed, s, w, max_ratio, min_keep):
    """Un-remove the best-scored removed items until the tensor keeps enough."""
    total = float(w.sum())
    n = s.numel()
    keep_w = float(w[~removed].sum())
    need_w = (1.0 - max_ratio) * total
    need_n = min(min_keep, n)
    if keep_w + 1e-9 >= need_w and int((~removed).sum()) >= need_n:
        return removed
    removed = removed.clone()
    cand = removed.nonzero().flatten()
    order = cand[torch.argsort(s[cand], descending=True, stable=True)]
    k_n = max(need_n - int((~removed).sum()), 0)
    k_w = 0
    if keep_w + 1e-9 < need_w:
        cum = torch.cumsum(w[order], 0)
        k_w = int(torch.searchsorted(cum, torch.tensor([need_w - keep_w - 1e-9], dtype=cum.dtype)).item()) + 1
    removed[order[: max(k_n, k_w)]] = False
    return removed


def _solve_global(s, w, target, max_ratio, floor=False):
    """Global 'remove the lowest `target` fraction' with a per-tensor cap, by water-filling:
    tensors that would exceed the cap are fixed at the cap and the rest is re-solved."""
    totals = [float(x.sum()) for x in w]
    amount_total = target * sum(totals)
    fixed: dict[int, torch.Tensor] = {}
    while True:
        free = [i for i in range(len(s)) if i not in fixed]
        amount = amount_total - sum(float(w[i][fixed[i]].sum()) for i in fixed)
        if not free:
            break
        cat_s = torch.cat([s[i] for i in free])
        cat_w = torch.cat([w[i] for i in free])
        rem = _remove_lowest(cat_s, cat_w, amount, floor)
        parts = torch.split(rem, [s[i].numel() for i in free])
        over = [i for i, r in zip(free, parts) if float(w[i][r].sum()) > max_ratio * totals[i] + 1e-9]
        if not over:
            result = dict(fixed)
            result.update(zip(free, parts))
            return [result[i] for i in range(len(s))]
        for i in over:
            fixed[i] = _remove_lowest(s[i], w[i], max_ratio * totals[i])
            # _remove_lowest may overshoot by one item's weight; step back to stay under the cap
            while float(w[i][fixed[i]].sum()) > max_ratio * totals[i] + 1e-9:
                idx = fixed[i].nonzero().flatten()
                fixed[i][idx[torch.argmax(s[i][idx])]] = False
    return [fixed[i] for i in range(len(s))]


@dataclass(frozen=True)
class DynamicThreshold:
    """A threshold rule recomputed from the current scores at every step of a schedule.

    ``gamma`` / ``delta`` drive the ``iterative`` rule (multiplicative by default; additive when
    ``delta`` is given). ``history`` records the coefficient used at each call, and an iterative
    rule continues from its last coefficient: give each run a fresh rule."""

    method: str = "solve"
    value: float | None = None
    scope: str = "global"
    max_layer_ratio: float = 1.0
    min_keep: int = 1
    gamma: float = 1.5
    delta: float | None = None
    history: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"unknown threshold method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.scope not in SCOPES:
            raise UserError(f"unknown threshold scope {self.scope!r}; use global or layer")
        if self.method == "iterative":
            if self.value is None or not 0.0 < self.value <= 1.0:
                raise UserError(
                    f"iterative threshold: the start coefficient (x max score) must be in (0, 1], got {self.value}"
                )
            if self.delta is None and not self.gamma > 1.0:
                raise UserError(f"iterative threshold: gamma must be > 1 so the threshold rises, got {self.gamma}")
            if self.delta is not None and not self.delta > 0.0:
                raise UserError(f"iterative threshold: delta must be > 0 so the threshold rises, got {self.delta}")

    def _select(self, scores, target, method, value, weights):
        return select(
            scores,
            target,
            method=method,
            value=value,
            scope=self.scope,
            weights=weights,
            max_layer_ratio=self.max_layer_ratio,
            min_keep=self.min_keep,
        )

    def _raise(self, t: float) -> float:
        return t + self.delta if self.delta is not None else t * self.gamma

    def masks(self, scores, step_target: float | None = None, weights=None) -> dict[str, torch.Tensor]:
        if self.method != "iterative":
            return self._select(scores, step_target, self.method, self.value, weights)
        t = self.value if not self.history else self._raise(self.history[-1])
        keep = self._select(scores, step_target, "relative", min(t, 1.0), weights)
        while step_target is not None and t < 1.0 and removed_fraction(keep, weights) < step_target - 1e-9:
            t = self._raise(t)
            keep = self._select(scores, step_target, "relative", min(t, 1.0), weights)
        self.history.append(t)
        return keep

    def to_dict(self) -> dict:
        d = {
            "method": self.method,
            "value": self.value,
            "scope": self.scope,
            "max_layer_ratio": self.max_layer_ratio,
            "min_keep": self.min_keep,
        }
        if self.method == "iterative":
            d.update(gamma=self.gamma, delta=self.delta, history=list(self.history))
        return d


def removed_fraction(masks: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor] | None = None) -> float:
    """Fraction (by weight) of items removed across all masks."""
    num = den = 0.0
    for n, m in masks.items():
        w = (
            weights[n].double().flatten()
            if weights is not None and n in weights
            else torch.ones(m.numel(), dtype=torch.float64)
        )
        num += float(w[~m.flatten()].sum())
        den += float(w.sum())
    return num / den if den else 0.0
