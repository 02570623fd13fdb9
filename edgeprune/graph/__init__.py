"""Model graph capture and channel groups: ``trace(model, example_inputs) -> Graph``.

Consumes: an ``nn.Module`` and example inputs (a tensor, a tuple, or a dict of keyword inputs).
Produces: a ``Graph`` whose ``groups()`` are the ``ChannelGroup``s of channels that must be removed
together; ``surgery`` slices layers to the kept channels (used by ``edgeprune.prune.apply``).
``register_layer(type, LayerRule(...))`` teaches the graph a module type (see ``rules.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from ..errors import UserError
from .groups import ChannelGroup, Graph, model_signature
from .rules import LayerRule, register_layer, unregister_layer
from .trace import Ann, analyze, ignore_entries


def split_inputs(example_inputs) -> tuple:
    """(args, kwargs) from a tensor, a tuple/list of positional inputs, or a mapping of keyword
    inputs (a dict, a ``transformers`` BatchEncoding)."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        if not all(isinstance(k, str) for k in example_inputs):
            raise UserError("example_inputs: a mapping of inputs needs string keys (the forward's argument names)")
        return (), dict(example_inputs)
    if isinstance(example_inputs, (list, tuple)) and example_inputs:
        return tuple(example_inputs), {}
    raise UserError(
        f"example_inputs is a {type(example_inputs).__name__}: pass a tensor, a tuple of inputs, or a dict of "
        "keyword inputs such as a tokenizer's BatchEncoding"
    )


def trace(model: nn.Module, example_inputs, attention: str = "heads", ignore=(), capture: str = "auto") -> Graph:
    """Capture ``model`` and find its channel groups.

    example_inputs: a tensor, a tuple, or a dict / BatchEncoding of keyword inputs.
    attention: "heads" removes whole attention heads, "head_dims" shrinks every head equally.
    ignore: layer names (or prefixes), module objects or module types whose channels are never
    removed; a name the traced forward never reaches only warns.
    capture: "auto" (torch.fx, then an eager recording), "fx" or "eager" only."""
    args, kwargs = split_inputs(example_inputs)
    graph, an = analyze(model, args, attention=attention, ignore=ignore_entries(ignore), kwargs=kwargs, capture=capture)
    return Graph(model, graph, an, args, attention, kwargs=kwargs)


__all__ = [
    "trace",
    "Graph",
    "ChannelGroup",
    "model_signature",
    "split_inputs",
    "LayerRule",
    "register_layer",
    "unregister_layer",
    "Ann",
]
