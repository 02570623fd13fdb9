"""Model-spec resolution (with a trust model) and safe weight loading.

Consumes: a model spec:
  ``edgeprune:demo-cnn``       a built-in model;
  ``torchvision:NAME``         ``torchvision.models.get_model(NAME, weights=None)`` if installed;
  ``timm:NAME``                ``timm.create_model(NAME, pretrained=False)`` if installed;
  ``transformers:AUTO_CLASS``  ``transformers.AUTO_CLASS.from_config(AutoConfig.for_model(**kwargs))``;
  ``path/file.py:factory``     a factory in a Python file;
  ``package.module:factory``   a factory in an importable module;
  ``DIR``                      a directory written by ``ep.save`` (model.json + weights.pt), or by
                               ``save_pretrained`` (config.json + weights; ``hf_dir``).
Produces: an ``nn.Module`` carrying ``edgeprune_spec`` (str), ``input_shape`` (C, H, W) when
known, and ``edgeprune_build_kwargs`` (the keyword arguments given to the factory), so
``ep.save`` can record how to rebuild it.

Trust: a spec the caller types runs what it names. A spec read from a file (``model.json``)
is data from whoever wrote that file: only the prefixes of ``FACTORIES`` (a registry;
``register_factory`` adds one) resolve without ``trust_code=True``, and their keyword
arguments must be JSON scalars or lists named in the factory's signature. ``check_spec`` is
that gate; it imports and calls nothing.

``load_weights`` reads a state_dict with ``torch.load(weights_only=True)``: a file holding a
pickled whole model is refused unless the caller trusts it, because unpickling runs code.
"""

from __future__ import annotations

import inspect
import os
import pickle
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from .demo_cnn import demo_cnn

SPEC_FORMS = (
    "'edgeprune:demo-cnn', 'path/file.py:factory', 'package.module:factory', 'torchvision:NAME', "
    "'timm:NAME', 'transformers:AutoModel...', or a directory written by ep.save or save_pretrained"
)

BUILTIN = {"demo-cnn": demo_cnn}

# keyword arguments that make a well-known factory download or unpickle something
_NETWORK_KWARGS = {
    "weights",
    "pretrained",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "checkpoint_path",
    "progress",
    "trust_remote_code",
    "auto_map",
    "cache_dir",
    "revision",
    "token",
}


class SpecError(UserError):
    """A model spec that cannot be resolved or is not trusted (one line; CLI exit 2)."""


def _tag(model: nn.Module, spec: str, kwargs: dict, input_shape=None) -> nn.Module:
    model.edgeprune_spec = spec
    model.edgeprune_build_kwargs = dict(kwargs)
    if input_shape is not None and getattr(model, "input_shape", None) is None:
        model.input_shape = tuple(int(s) for s in input_shape)
    elif getattr(model, "input_shape", None) is not None:
        model.input_shape = tuple(int(s) for s in model.input_shape)
    return model


def _edgeprune(name: str, spec: str) -> Callable:
    if name not in BUILTIN:
        raise SpecError(
            f"model spec {spec!r}: unknown built-in model; built-ins: " + ", ".join(f"edgeprune:{k}" for k in BUILTIN)
        )
    return BUILTIN[name]


def _need(module: str, spec: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SpecError(f"model spec {spec!r}: {module} is not installed (pip install {module})") from None


def _torchvision(name: str, spec: str) -> Callable:
    tv = _need("torchvision", spec)
    try:
        builder = tv.models.get_model_builder(name)
    except ValueError as e:
        raise SpecError(f"model spec {spec!r}: {e}") from None

    def make(**kwargs):
        model = builder(weights=None, **kwargs)
        model.input_shape = getattr(model, "input_shape", None) or (3, 224, 224)
        return model

    make.__signature__ = inspect.signature(builder)
    return make


def _timm(name: str, spec: str) -> Callable:
    timm = _need("timm", spec)
    if not timm.is_model(name):
        raise SpecError(f"model spec {spec!r}: timm has no model {name!r} (see timm.list_models())")
    return lambda **kwargs: timm.create_model(name, pretrained=False, **kwargs)


def _transformers(name: str, spec: str) -> Callable:
    tf = _need("transformers", spec)
    if not name.startswith("AutoModel") or not hasattr(tf, name):
        raise SpecError(
            f"model spec {spec!r}: expected a transformers auto class such as AutoModelForImageClassification"
        )
    auto = getattr(tf, name)

    def make(model_type: str, **config):
        return auto.from_config(tf.AutoConfig.for_model(model_type, **config))

    return make


def _transformers_class(name: str, spec: str) -> Callable:
    """A ``transformers`` model class by name, built from a config dict (random weights): how a pruned
    Hugging Face model is saved (``edgeprune.prune.hf``); the name must be a PreTrainedModel class."""
    tf = _need("transformers", spec)
    cls = getattr(tf, name, None)
    if not (isinstance(cls, type) and issubclass(cls, tf.PreTrainedModel)):
        raise SpecError(f"model spec {spec!r}: {name!r} is not a transformers model class")

    def make(config: dict, add_pooling_layer: bool | None = None):
        if not isinstance(config, dict):
            raise SpecError(f"model spec {spec!r}: 'config' must be a JSON object")
        cfg = cls.config_class.from_dict(dict(config))
        if add_pooling_layer is None:
            return cls(cfg).eval()
        if not isinstance(add_pooling_layer, bool):
            raise SpecError(f"model spec {spec!r}: 'add_pooling_layer' must be true or false")
        # BERT-family encoders built without their pooler (sentence embedders) say so here
        return cls(cfg, add_pooling_layer=add_pooling_layer).eval()

    return make


# prefix -> resolver(name, spec) returning the factory; every entry is trusted (see module docstring)
FACTORIES: dict[str, Callable[[str, str], Callable]] = {
    "edgeprune": _edgeprune,
    "torchvision": _torchvision,
    "timm": _timm,
    "transformers": _transformers,
    "transformers_class": _transformers_class,
}


def register_factory(prefix: str, resolver: Callable[[str, str], Callable]) -> None:
    """Trust ``prefix:NAME`` specs: ``resolver(NAME, spec)`` returns the factory (raise SpecError if unknown)."""
    if not prefix.isidentifier():
        raise SpecError(f"factory prefix {prefix!r}: must be a Python identifier")
    FACTORIES[prefix] = resolver


def is_trusted(spec: str) -> bool:
    """True when ``spec`` names a registered factory (no user code runs to build it)."""
    prefix, sep, _ = spec.partition(":")
    return bool(sep) and prefix in FACTORIES


def _json_value(v) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return not isinstance(v, float) or v == v and abs(v) != float("inf")
    if isinstance(v, list):
        return all(_json_value(x) for x in v)
    return False


def _json_object(v) -> bool:
    """A JSON object of JSON values (a saved transformers config): data, never code."""
    if isinstance(v, dict):
        return all(isinstance(k, str) and _json_object(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_json_object(x) for x in v)
    return _json_value(v)


# (prefix, kwarg) pairs that take a JSON object: a transformers config is rebuilt from its dict
_OBJECT_KWARGS = {("transformers_class", "config")}


def check_kwargs(spec: str, kwargs: Any, factory: Callable | None = None, where: str = "model.json") -> dict:
    """Validate ``build_kwargs`` read from a file: names in the factory's signature, JSON scalars/lists."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise SpecError(f"{where}: build_kwargs must be an object, got {type(kwargs).__name__}")
    for k, v in kwargs.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise SpecError(f"{where}: build_kwargs key {k!r} is not a parameter name")
        if k in _NETWORK_KWARGS:
            raise SpecError(f"{where}: build_kwargs {k!r} is refused (it would download or run code)")
        if (spec.partition(":")[0], k) in _OBJECT_KWARGS:
            if not (isinstance(v, dict) and _json_object(v)):
                raise SpecError(f"{where}: build_kwargs {k!r} must be a JSON object")
            continue
        if not _json_value(v):
            raise SpecError(f"{where}: build_kwargs {k!r} must be a number, string, bool, null or a list of them")
    if factory is not None:
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            return dict(kwargs)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise SpecError(
                    f"{where}: build_kwargs {unknown} are not parameters of {spec!r} (it takes {sorted(params)})"
                )
    return dict(kwargs)


def check_spec(spec: Any, trust_code: bool, where: str = "model.json") -> str:
    """Refuse a spec read from ``where`` that would import user code without ``trust_code``.

    Imports and calls nothing; returns the spec. Well-known prefixes pass; ``file.py:fn`` and
    ``package.module:fn`` need ``trust_code=True`` (CLI ``--trust-code``).
    """
    if not isinstance(spec, str) or not spec or "\x00" in spec:
        raise SpecError(f"{where}: 'spec' must be a non-empty string, got {spec!r}")
    if is_trusted(spec):
        return spec
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise SpecError(f"{where}: unknown model spec {spec!r}; expected {SPEC_FORMS}")
    if not trust_code:
        raise SpecError(
            f"{where}: model spec {spec!r} runs Python code from outside edgeprune; refused (nothing was imported); "
            "pass --trust-code (trust_code=True) if you trust whoever wrote this directory"
        )
    return spec


def normalize_spec(spec: str) -> str:
    """Make ``file.py:fn`` specs absolute so they name the same file from any working directory."""
    target, sep, name = spec.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{name}"
    return spec


def resolve_factory(spec: str) -> Callable | None:
    """The factory of a registered prefix (nothing else is imported), or None for other specs."""
    if not is_trusted(spec):
        return None
    prefix, _, name = spec.partition(":")
    return FACTORIES[prefix](name, spec)


def _call(factory: Callable, spec: str, kwargs: dict, registered: bool = False) -> nn.Module:
    try:
        with warnings.catch_warnings():
            if registered:  # our own factories: torch's warnings about odd sizes (zero classes) are
                # not the user's to read; the weights check after the build says what is wrong
                warnings.simplefilter("ignore", UserWarning)
            model = factory(**kwargs)
    except TypeError as e:
        raise SpecError(f"model spec {spec!r}: {str(e).splitlines()[0]}") from None
    except (ValueError, RuntimeError, AssertionError, OverflowError) as e:
        if not registered:
            raise  # a user's factory failing is theirs to see in full
        raise SpecError(f"model spec {spec!r}: cannot build it with {kwargs} ({type(e).__name__}: {e})") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"model spec {spec!r}: factory returned {type(model).__name__}, expected an nn.Module")
    return model


def build(spec: str, trust_code: bool = False, **kwargs: Any) -> nn.Module:
    """Build the model named by ``spec``; ``kwargs`` go to the factory (e.g. ``num_classes=5``).

    A spec given here runs what it names (``file.py:fn`` included: the caller typed it). A
    directory's own spec is checked by ``check_spec``: ``trust_code`` is passed on to ``ep.load``.
    """
    if not isinstance(spec, str) or not spec:
        raise SpecError(f"model spec {spec!r}: expected {SPEC_FORMS}")
    path = Path(spec).expanduser()
    if path.is_dir() and not kwargs:
        from .hf_dir import is_hf_dir, load_hf_dir

        if is_hf_dir(path):
            return load_hf_dir(path, trust_code=trust_code)
    if path.is_dir():
        from ..io import load  # function-local: io builds models, so importing it at top would cycle

        if kwargs:
            raise SpecError(f"model spec {spec!r}: a saved model directory takes no factory arguments")
        return load(path, trust_code=trust_code)
    factory = resolve_factory(spec)
    if factory is not None:
        return _tag(_call(factory, spec, kwargs, registered=True), spec, kwargs)
    if spec.rpartition(":")[0] and not path.exists():
        from ..data import resolve_callable

        spec = normalize_spec(spec)
        try:
            factory = resolve_callable(spec, "model spec")
        except ValueError as e:
            raise SpecError(str(e).splitlines()[0]) from None
        # a factory may set input_shape itself; we keep it
        return _tag(_call(factory, spec, kwargs), spec, kwargs)
    raise SpecError(f"unknown model spec {spec!r}; accepted forms: {SPEC_FORMS}")


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
    raise UserError(f"{path}: holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")


def check_finite(state: dict, path) -> None:
    """Refuse NaN/Inf in any floating tensor of a state_dict (a model built on them reports nonsense),
    and tensors that are not plain dense ones (sparse, quantized, complex): no layer loads those."""
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and (v.layout != torch.strided or v.is_quantized or v.is_complex()):
            kind = "quantized" if v.is_quantized else "complex" if v.is_complex() else str(v.layout)
            raise UserError(f"{path}: tensor {k!r} is a {kind} tensor; save dense float weights (model.state_dict())")
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel() and not torch.isfinite(v).all():
            raise UserError(f"{path}: tensor {k!r} contains NaN or infinite values; retrain or restore the weights")


def torch_load(p: Path, trust_pickle: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``; every unreadable file becomes one UserError naming it."""
    try:
        # (torch warns about odd pickle protocols and storages: the errors below say it in one line)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses classes it does not know: a pickled module or any other object
        if "Unsupported global" not in str(e):
            raise UserError(f"{p}: not a readable torch file (corrupt or not written by torch.save)") from None
        if not trust_pickle:
            raise UserError(
                f"{p}: contains pickled Python objects (e.g. a whole nn.Module), refused because unpickling "
                "can run arbitrary code; save model.state_dict() instead, or pass --trust-pickle "
                "(trust_pickle=True) if you trust this file"
            ) from None
    except FileNotFoundError:
        raise UserError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a directory, expected a torch file") from None
    except PermissionError:
        raise UserError(f"{p}: permission denied") from None
    except (
        RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError, TypeError,
        struct.error, OverflowError, AttributeError,
        AssertionError,  # torch's loader asserts on a malformed storage reference ("saved_id must be a tuple")
    ):  # fmt: skip
        raise UserError(f"{p}: not a readable torch file (truncated, corrupt or not written by torch.save)") from None
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"{p}: cannot unpickle it ({type(e).__name__})") from None


def load_weights(
    model: nn.Module, path: str | os.PathLike, trust_pickle: bool = False, strict: bool = True
) -> nn.Module:
    """Load a state_dict file into ``model`` (in place; also returned).

    The file is read with ``weights_only=True``. A pickled whole model (``torch.save(model)``)
    is refused with a UserError unless ``trust_pickle=True`` (CLI ``--trust-pickle``).
    Missing/unexpected keys, shape mismatches and NaN/Inf values raise UserError naming them.
    """
    p = Path(path)
    if p.is_dir() and (p / "weights.pt").is_file():
        p = p / "weights.pt"
    if not p.is_file():
        raise UserError(f"{p}: weights file not found")
    state = _extract_state_dict(torch_load(p, trust_pickle), p)
    own = model.state_dict()
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if mismatched:
        raise UserError(f"{p}: shape mismatch for {len(mismatched)} tensors ({'; '.join(mismatched[:3])})")
    if strict:
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise UserError(
                f"{p}: state_dict does not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
    check_finite(state, p)
    model.load_state_dict(state, strict=strict)
    return model


def check_size(factory: Callable, spec: str, kwargs: dict, limit: int, where) -> None:
    """Refuse kwargs that build a model of more than ``limit`` values (built on the meta device: no memory)."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a probe: the real build reports what matters
            probe = factory(**kwargs)
        n = sum(t.numel() for t in probe.state_dict().values())
    except Exception:
        return  # a factory that cannot build on the meta device is checked by the real build
    if n > limit:
        raise SpecError(
            f"{where}: {spec!r} with build_kwargs {kwargs} has {n:,} values, far more than its weights file; refused"
        )
