"""Model graph capture and channel groups: ``trace(model, example_inputs) -> Graph``.

Consumes: an ``nn.Module`` and example inputs (a tensor or a tuple of tensors). Produces: a
``Graph`` whose ``groups()`` are the ``ChannelGroup``s of channels that must be removed
together; ``surgery`` slices layers to the kept channels (used by ``edgeprune.prune.apply``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .groups import ChannelGroup, Graph, model_signature
from .trace import analyze


def as_inputs(example_inputs) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in example_inputs):
        return tuple(example_inputs)
    raise TypeError("example_inputs must be a tensor or a tuple of tensors")


def trace(model: nn.Module, example_inputs, attention: str = "heads", ignore=()) -> Graph:
    """Capture ``model`` with torch.fx and find its channel groups.

    attention: "heads" removes whole attention heads, "head_dims" shrinks every head equally.
    ignore: layer names (or prefixes) whose channels are never removed."""
    inputs = as_inputs(example_inputs)
    gm, an = analyze(model, inputs, attention=attention, ignore=tuple(ignore))
    return Graph(model, gm, an, inputs, attention)


__all__ = ["trace", "Graph", "ChannelGroup", "model_signature", "as_inputs"]
