"""Fixed weight masks: zero the pruned weights and keep them zero while training.

Consumes: a model and ``masks`` (dict parameter name -> bool tensor of the parameter's shape,
True = kept), the format ``edgeprune.io.save(..., masks=...)`` stores. Produces: the model with
masked weights zeroed in place, and a ``MaskGuard`` the fine-tuning loop calls around every
optimizer step so neither the gradient nor the optimizer state (momentum, Adam moments, weight
decay) can bring a pruned weight back.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Validate names and shapes; return the masks as bool tensors keyed like ``named_parameters``."""
    params = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask for unknown parameter {name!r}; the model has e.g. {sorted(params)[:5]}")
        mask = torch.as_tensor(mask).to(torch.bool)
        if tuple(mask.shape) != tuple(params[name].shape):
            raise ValueError(
                f"mask for {name!r} has shape {tuple(mask.shape)}, parameter has {tuple(params[name].shape)}"
            )
        out[name] = mask
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero every masked-out weight of ``model`` in place and return it."""
    params = dict(model.named_parameters())
    for name, mask in check_masks(model, masks).items():
        params[name].mul_(mask.to(params[name].dtype))
    return model


class MaskGuard:
    """Keeps masked weights at exactly zero across optimizer steps.

    ``before_step`` zeroes the masked gradient entries (so momentum and Adam moments of pruned
    weights stay zero); ``after_step`` re-zeroes the weights (decoupled weight decay and any
    proximal update cannot move a zero, but a re-zero is cheap and makes the invariant exact).
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor] | None):
        params = dict(model.named_parameters())
        self._pairs = [(params[n], m.to(params[n].dtype)) for n, m in check_masks(model, masks or {}).items()]

    def __bool__(self) -> bool:
        return bool(self._pairs)

    @torch.no_grad()
    def before_step(self) -> None:
        for p, m in self._pairs:
            if p.grad is not None:
                p.grad.mul_(m)

    @torch.no_grad()
    def after_step(self) -> None:
        for p, m in self._pairs:
            p.mul_(m)


def masks_from_zeros(model: nn.Module, names=None) -> dict[str, torch.Tensor]:
    """Masks (True = nonzero) from the current zeros of the named parameters (default: all weights of dim >= 2)."""
    out = {}
    for name, p in model.named_parameters():
        if (names is None and p.dim() >= 2) or (names is not None and name in names):
            out[name] = p.detach() != 0
    return out
