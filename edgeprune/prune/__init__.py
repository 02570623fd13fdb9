"""Structured pruning: plans over channel groups, and their replay.

Consumes: a model, example inputs, importance settings. Produces: ``PrunePlan`` (JSON) and pruned
models. Public: ``plan``, ``apply``, ``PrunePlan``, ``count_macs_params``, ``score_groups``,
``select_channels``, ``plan_from_keep``, ``IMPORTANCES``, and the importance registry
(``register_importance``, ``needs_data``; docs/methods.md).
"""

from __future__ import annotations

from .apply import apply
from .importance import IMPORTANCES, needs_data, register_importance, score_groups
from .macs import count_macs_params
from .plan import PrunePlan, plan, plan_from_keep, select_channels

__all__ = [
    "plan",
    "apply",
    "PrunePlan",
    "count_macs_params",
    "score_groups",
    "select_channels",
    "plan_from_keep",
    "IMPORTANCES",
    "needs_data",
    "register_importance",
]
