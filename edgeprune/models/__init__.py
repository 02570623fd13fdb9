"""Models: the built-in demo CNN, model-spec resolution, weight loading, training, evaluation.

Consumes: model specs (``edgeprune:demo-cnn``, ``file.py:fn``, ``module:fn``, ``torchvision:NAME``,
a saved directory), state_dict files, ``DataSplits``.
Produces: ``nn.Module`` objects tagged with ``edgeprune_spec`` / ``input_shape``, training
metrics, and ``{"top1": ...}`` scores.
"""

from __future__ import annotations

from .demo_cnn import DemoCNN, demo_cnn
from .spec import FACTORIES, SPEC_FORMS, SpecError, build, load_weights, normalize_spec, register_factory
from .training import METRICS, evaluate, train

__all__ = [
    "DemoCNN",
    "demo_cnn",
    "FACTORIES",
    "SPEC_FORMS",
    "SpecError",
    "build",
    "load_weights",
    "normalize_spec",
    "register_factory",
    "METRICS",
    "evaluate",
    "train",
]
