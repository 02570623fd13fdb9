"""Copies of models that ``copy.deepcopy`` alone refuses.

Consumes: an ``nn.Module``. Produces: an independent deep copy. Models cache tensors computed from
their parameters in plain attributes (LeViT's attention-bias cache, filled by an eval-mode forward
run with gradients on); such a tensor has a ``grad_fn``, and torch refuses to deepcopy any
non-leaf tensor, so pruning and quantizing such a model failed on the copy. Here each one is
copied as a detached clone: same values, no autograd history (a copy never shares a graph with
its original anyway).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

# how far into an attribute's dicts, lists and tuples non-leaf tensors are looked for: caches are
# a dict of tensors or a list of them; deeper structures are not state a layer keeps
_DEPTH = 3


def _non_leaf(value, found: dict, depth: int) -> None:
    if isinstance(value, torch.Tensor):
        if value.grad_fn is not None:
            found[id(value)] = value.detach().clone()
    elif depth and isinstance(value, dict):
        for v in value.values():
            _non_leaf(v, found, depth - 1)
    elif depth and isinstance(value, (list, tuple)):
        for v in value:
            _non_leaf(v, found, depth - 1)


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, with the non-leaf tensors its layers hold copied detached."""
    memo: dict = {}
    for m in model.modules():
        for key, value in vars(m).items():
            if key not in ("_parameters", "_modules"):
                _non_leaf(value, memo, _DEPTH)
    return copy.deepcopy(model, memo)
