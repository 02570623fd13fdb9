"""Model-spec resolution and safe weight loading.

Consumes: a model spec (docs/architecture.md, Specs):
  ``edgeprune:demo-cnn``       the built-in demo CNN;
  ``path/file.py:factory``     a factory in a Python file (stored with an absolute path);
  ``package.module:factory``   a factory in an importable module;
  ``torchvision:NAME``         ``torchvision.models.get_model(NAME, weights=None)`` if installed;
  ``DIR``                      a directory written by ``ep.save`` (model.json + weights.pt).
Produces: an ``nn.Module`` carrying ``edgeprune_spec`` (str), ``input_shape`` (C, H, W) when
known, and ``edgeprune_build_kwargs`` (the keyword arguments given to the factory), so
``ep.save`` can record how to rebuild it.

``load_weights`` reads a state_dict with ``torch.load(weights_only=True)``: a file holding a
pickled whole model is refused unless the caller trusts it, because unpickling runs code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import resolve_callable
from .demo_cnn import demo_cnn

SPEC_FORMS = (
    "'edgeprune:demo-cnn', 'path/file.py:factory', 'package.module:factory', "
    "'torchvision:NAME' or a directory written by ep.save"
)

BUILTIN = {"demo-cnn": demo_cnn}


def _tag(model: nn.Module, spec: str, kwargs: dict, input_shape=None) -> nn.Module:
    model.edgeprune_spec = spec
    model.edgeprune_build_kwargs = dict(kwargs)
    if input_shape is not None and getattr(model, "input_shape", None) is None:
        model.input_shape = tuple(int(s) for s in input_shape)
    elif getattr(model, "input_shape", None) is not None:
        model.input_shape = tuple(int(s) for s in model.input_shape)
    return model


def normalize_spec(spec: str) -> str:
    """Make ``file.py:fn`` specs absolute so a saved model rebuilds from any working directory."""
    target, sep, name = spec.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{name}"
    return spec


def build(spec: str, **kwargs: Any) -> nn.Module:
    """Build the model named by ``spec``; ``kwargs`` go to the factory (e.g. ``num_classes=5``)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model spec {spec!r}: expected {SPEC_FORMS}")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model.json").is_file():
            raise ValueError(f"model spec {spec!r}: directory has no model.json (not written by ep.save)")
        from ..io import load  # function-local: io builds models, so importing it at top would cycle

        if kwargs:
            raise ValueError(f"model spec {spec!r}: a saved model directory takes no factory arguments")
        return load(path)
    prefix, sep, name = spec.partition(":")
    if sep and prefix == "edgeprune":
        if name not in BUILTIN:
            raise ValueError(
                f"model spec {spec!r}: unknown built-in model; built-ins: "
                + ", ".join(f"edgeprune:{k}" for k in BUILTIN)
            )
        return _tag(BUILTIN[name](**kwargs), spec, kwargs)
    if sep and prefix == "torchvision":
        try:
            import torchvision
        except ImportError:
            raise ValueError(f"model spec {spec!r}: torchvision is not installed (pip install torchvision)") from None
        try:
            model = torchvision.models.get_model(name, weights=None, **kwargs)
        except ValueError as e:
            raise ValueError(f"model spec {spec!r}: {e}") from None
        return _tag(model, spec, kwargs, input_shape=(3, 224, 224))
    if spec.rpartition(":")[0] and not path.exists():
        spec = normalize_spec(spec)
        factory = resolve_callable(spec, "model spec")
        model = factory(**kwargs)
        if not isinstance(model, nn.Module):
            raise ValueError(f"model spec {spec!r}: factory returned {type(model).__name__}, expected an nn.Module")
        # a factory may set input_shape itself; we keep it
        return _tag(model, spec, kwargs)
    raise ValueError(f"unknown model spec {spec!r}; accepted forms: {SPEC_FORMS}")


def _extract_state_dict(obj, path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        # common checkpoint layouts: {"state_dict": {...}} / {"model": {...}}
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
            if isinstance(inner, nn.Module):
                return inner.state_dict()
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")


def load_weights(
    model: nn.Module, path: str | os.PathLike, trust_pickle: bool = False, strict: bool = True
) -> nn.Module:
    """Load a state_dict file into ``model`` (in place; also returned).

    The file is read with ``weights_only=True``. A pickled whole model (``torch.save(model)``)
    is refused with a ValueError unless ``trust_pickle=True`` (CLI ``--trust-pickle``).
    Missing/unexpected keys or shape mismatches raise ValueError naming them.
    """
    p = Path(path)
    if p.is_dir() and (p / "weights.pt").is_file():
        p = p / "weights.pt"
    if not p.is_file():
        raise ValueError(f"{p}: weights file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust_pickle:
            raise ValueError(
                f"{p}: contains pickled Python objects (e.g. a whole nn.Module), refused because unpickling "
                "can run arbitrary code; save model.state_dict() instead, or pass trust_pickle=True "
                "(--trust-pickle) if you trust this file"
            ) from None
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(
            f"{p}: not a readable torch file ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    state = _extract_state_dict(obj, p)
    own = model.state_dict()
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if mismatched:
        raise ValueError(f"{p}: shape mismatch for {len(mismatched)} tensors ({'; '.join(mismatched[:3])})")
    if strict:
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"{p}: state_dict does not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
    model.load_state_dict(state, strict=strict)
    return model
