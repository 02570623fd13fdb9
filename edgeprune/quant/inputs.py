"""Calibration batches for models with several, named or integer inputs (token ids and masks).

Consumes: a model and a calibration source whose batches are mappings of input name to tensor (a
dict or a ``transformers`` ``BatchEncoding``), or tuples of tensors for a model whose forward takes
at least that many positional tensor inputs (a CNN's ``forward(x)`` reads a pair as (inputs, labels)). Produces: ``Inputs``: the input names in the forward's order and the
batches as tuples of tensors in that order, cut to at most ``limit`` samples.

Why a separate path: ``data.iter_batches`` reads one input and an optional label, which is what
CNN calibration sets are; a transformer's batch is several tensors that must stay together.
Sources of one input tensor return None here and keep the ``iter_batches`` path.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import UserError


@dataclass
class Inputs:
    names: list  # forward parameter names, in the order the captured graph takes them
    batches: list  # tuples of tensors, one per name


def _params(model: nn.Module) -> list[inspect.Parameter]:
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return []
    return [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def parameter_names(model: nn.Module) -> list[str]:
    """The named parameters of ``model.forward`` (no ``*args`` / ``**kwargs``)."""
    return [p.name for p in _params(model)]


def fixed_flags(model: nn.Module) -> dict:
    """Keyword flags every capture of ``model`` passes: ``use_cache=False`` where forward takes it (a
    decoder's key/value cache is an output for generation, not part of the function exported)."""
    return {"use_cache": False} if "use_cache" in parameter_names(model) else {}


def _takes_kwargs(model: nn.Module) -> bool:
    try:
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return False


def _tensor_positional(model: nn.Module) -> int:
    """How many leading positional parameters take tensors: required ones, or ones defaulting to
    None (``input_ids=None, attention_mask=None`` in ``transformers``); a flag such as
    ``return_features=False`` ends the run, so an (inputs, labels) pair never feeds it."""
    n = 0
    for p in _params(model):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or p.default not in (p.empty, None):
            break
        n += 1
    return n


def _is_mapping(item) -> bool:
    return isinstance(item, Mapping)  # a BatchEncoding is a UserDict, hence a Mapping


class Peeked:
    """A one-pass iterable (a DataLoader, a generator) whose first batch is read ahead, so the
    kind of batch can be told without losing it."""

    def __init__(self, source):
        self._it = iter(source)
        self.first = next(self._it, None)
        self._used = False

    def __iter__(self):
        if self._used:
            raise UserError("calibration data can be read once here; pass a list or a DataLoader")
        self._used = True
        if self.first is not None:
            yield self.first
        yield from self._it


def peekable(source):
    """``source`` itself, or a ``Peeked`` of it when it is an iterable of batches other than a
    list, a tuple, a mapping, a tensor, an array, a Dataset or DataSplits."""
    plain = (list, tuple, Mapping, torch.Tensor, torch.utils.data.Dataset, str, bytes)
    if isinstance(source, plain) or hasattr(source, "num_classes") or hasattr(source, "__array__"):
        return source
    return Peeked(source) if hasattr(source, "__iter__") else source


def _first(source):
    if _is_mapping(source) or isinstance(source, (tuple, torch.Tensor)):
        return source, [source]
    if isinstance(source, list) and source:
        return source[0], source
    if isinstance(source, Peeked) and source.first is not None:
        return source.first, source
    return None, None


def structured(model: nn.Module, source) -> bool:
    """Whether ``source`` holds named or several inputs per batch (this module's path)."""
    first, _ = _first(source)
    if first is None:
        return False
    if _is_mapping(first):
        return True
    n = _tensor_positional(model)
    return isinstance(first, tuple) and 2 <= len(first) <= n and all(isinstance(t, torch.Tensor) for t in first)


def _ordered(model: nn.Module, batch, where: str) -> tuple[list, tuple]:
    """(names, tensors) of one batch, in the forward's parameter order."""
    params = [p.name for p in _params(model)]
    if _is_mapping(batch):
        keys = list(batch.keys())
        unknown = [k for k in keys if k not in params]
        if unknown and not _takes_kwargs(model):
            raise UserError(
                f"{where}: input {unknown[0]!r} is not a parameter of {type(model).__name__}.forward "
                f"(it takes {', '.join(params)}); rename or drop it"
            )
        names = [p for p in params if p in batch] + unknown
        values = [batch[k] for k in names]
    else:
        names, values = params[: len(batch)], list(batch)
    out = []
    for name, v in zip(names, values):
        if not isinstance(v, torch.Tensor):
            try:
                v = torch.as_tensor(v)
            except (TypeError, ValueError, RuntimeError) as e:
                raise UserError(f"{where}: input {name!r} is not a tensor ({type(v).__name__}: {e})") from None
        out.append(v)
    return names, tuple(out)


def collect(model: nn.Module, source, limit: int | None) -> Inputs:
    """The batches of a structured source (see ``structured``), at most ``limit`` samples in all."""
    _, items = _first(source)
    names = None
    batches: list = []
    seen = 0
    for i, item in enumerate(items):
        where = f"calibration batch {i}"
        if not (_is_mapping(item) or isinstance(item, tuple)):
            raise UserError(f"{where} is a {type(item).__name__}; give every batch as a dict of input tensors")
        got, xs = _ordered(model, item, where)
        if names is None:
            names, first = got, [tuple(x.shape[1:]) for x in xs]
        elif got != names:
            raise UserError(
                f"{where} has inputs {got} but the first batch has {names}; give every batch the same inputs"
            )
        for name, x, want in zip(names, xs, first):
            if tuple(x.shape[1:]) != want:
                raise UserError(
                    f"{where}: input {name!r} has shape {tuple(x.shape[1:])} per sample but the first batch has "
                    f"{want}; pad or cut every batch to one length (the int8 graph has fixed shapes)"
                )
        n = {int(x.shape[0]) if x.dim() else 1 for x in xs}
        if len(n) != 1 or any(x.dim() == 0 for x in xs):
            raise UserError(
                f"{where}: inputs {names} have batch sizes {sorted(n)}; give every input the same first dimension"
            )
        size = n.pop()
        if limit is not None and seen + size > limit:
            xs = tuple(x[: limit - seen] for x in xs)
            size = limit - seen
        if size <= 0:
            break
        batches.append(xs)
        seen += size
    if not batches:
        raise UserError("calibration data is empty; pass at least one sample")
    return Inputs(names, batches)


def leading(model: nn.Module, names: list) -> bool:
    """Whether ``names`` are the forward's first positional parameters, in order (a graph traced
    by torch.fx then takes them positionally)."""
    params = [p.name for p in _params(model) if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return params[: len(names)] == list(names)


def bind(names: list, args: tuple, kwargs: dict, what: str = "the quantized model") -> tuple:
    """The tensors of one call ``(*args, **kwargs)`` in the order of ``names``."""
    if len(args) == 1 and not kwargs and _is_mapping(args[0]):
        args, kwargs = (), dict(args[0])
    bound = dict(zip(names, args))
    for k, v in kwargs.items():
        if k not in names:
            raise UserError(f"{what} takes inputs {names}, not {k!r}")
        bound[k] = v
    missing = [n for n in names if n not in bound]
    if missing or len(args) > len(names):
        raise UserError(f"{what} takes inputs {names}; got {len(args)} positional and {sorted(kwargs)} named")
    return tuple(bound[n] for n in names)


def split(inputs: Mapping, batch_size: int) -> list[dict]:
    """{name: tensor of N samples} as a list of dict batches of at most ``batch_size`` samples."""
    n = int(next(iter(inputs.values())).shape[0])
    return [{k: v[i : i + batch_size] for k, v in inputs.items()} for i in range(0, n, batch_size)]


def first_tensor(out) -> torch.Tensor:
    """The first tensor of a model output: a tensor, a tuple/list, a dict or a ``ModelOutput``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)) and out:
        return first_tensor(out[0])
    raise TypeError(f"model output {type(out).__name__} holds no tensor")


def output_cosine(model: nn.Module, quantized, inputs: Mapping, limit: int = 64) -> dict:
    """How closely the int8 twin follows the fp32 model on named inputs, for data without labels:
    the cosine of their first outputs per sample, over at most ``limit`` samples: {"mean", "min", "samples"}."""
    n = min(limit, int(next(iter(inputs.values())).shape[0]))
    cos = []
    with torch.no_grad():
        for i in range(n):
            sample = {k: v[i : i + 1] for k, v in inputs.items()}
            a = first_tensor(model.eval()(**sample)).double().flatten()
            b = first_tensor(quantized(**sample)).double().flatten()
            cos.append(float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30)))
    return {"mean": sum(cos) / n, "min": min(cos), "samples": n}
