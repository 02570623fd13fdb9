"""Accuracy recovery after pruning: fine-tuning, distillation, sparsity regularisers, fixed masks.

Consumes: a pruned model, data splits, optionally the unpruned teacher, masks and regularisers.
Produces: the recovered model and a JSON-serialisable history. This package never imports
``edgeprune.prune``: schedules and the adaptive search call into it, not the other way round.
"""

from __future__ import annotations

from .distill import distillation_loss
from .loop import RecoverConfig, admm_prune, finetune, top1
from .masks import MaskGuard, apply_masks, check_masks, masks_from_zeros
from .regularize import (
    ADMM,
    BNL1,
    IRLS,
    L0,
    ChannelGroupSpec,
    GroupLasso,
    LambdaSchedule,
    Regularizer,
    WeightNorm,
    magnitude_projection,
    register_regularizer,
    regularizer_names,
)
from .regularize import make as make_regularizer

__all__ = [
    "ADMM",
    "BNL1",
    "ChannelGroupSpec",
    "IRLS",
    "L0",
    "GroupLasso",
    "LambdaSchedule",
    "MaskGuard",
    "RecoverConfig",
    "Regularizer",
    "WeightNorm",
    "admm_prune",
    "apply_masks",
    "check_masks",
    "distillation_loss",
    "finetune",
    "magnitude_projection",
    "make_regularizer",
    "masks_from_zeros",
    "register_regularizer",
    "regularizer_names",
    "top1",
]
