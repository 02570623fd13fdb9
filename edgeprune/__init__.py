"""edgeprune: prune, recover, quantize and compile PyTorch models for edge devices.

Consumes: a trained ``torch.nn.Module`` (or a model spec) and data specs.
Produces: pruned models, plans, quantized models, exported artifacts, latency figures.

The public names below are re-exported explicitly. They are resolved lazily, so that
``import edgeprune`` (and ``edgeprune --version``) does not pay for importing torch.
"""

from __future__ import annotations

import importlib

from ._version import __version__

# public name -> (module, attribute or None for the module itself)
_EXPORTS: dict[str, tuple[str, str | None]] = {
    # sub-packages / modules
    "data": ("edgeprune.data", None),
    "models": ("edgeprune.models", None),
    "targets": ("edgeprune.targets", None),
    "kernels": ("edgeprune.kernels", None),
    "runtime": ("edgeprune.runtime", None),
    # functions, in data-flow order (docs/architecture.md)
    "trace": ("edgeprune.graph", "trace"),
    "plan": ("edgeprune.prune", "plan"),
    "apply": ("edgeprune.prune", "apply"),
    "save": ("edgeprune.io", "save"),
    "load": ("edgeprune.io", "load"),
    "quantize": ("edgeprune.quant", "quantize"),
    "export": ("edgeprune.export", None),  # the package: callable as export(), and ep.export.inspect_onnx works
    "estimate": ("edgeprune.estimate", "estimate"),
    "bench": ("edgeprune.bench", "bench"),
    # the whole job (edgeprune build)
    "build": ("edgeprune.pipeline", "build"),
    "BuildSpec": ("edgeprune.pipeline", "BuildSpec"),
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    try:
        module_name, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'edgeprune' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
