"""Unstructured and block sparsity masks for the sparse kernels, and a per-layer sparsity report.

Consumes: a model, a target sparsity, a pattern and a criterion (plus calibration data for the
data-aware criteria). Produces: masks (dict parameter name -> bool tensor, True = kept) in the
format ``edgeprune.recover.finetune(masks=...)`` keeps fixed and ``edgeprune.io.save(...,
masks=...)`` stores, and a report of per-layer sparsity.

Weights are seen as matrices ``[O, K]``: a Linear's ``[out, in]``, a Conv's
``[out, in/groups * kh * kw]`` in PyTorch order (input channel major, then kernel row, column).
Patterns, matching the kernels of the C++ core (docs/kernels.md):
- ``unstructured``: any single weight;
- ``1x4``: blocks of 1 output x 4 consecutive K entries (the int8 kernels' input blocks);
- ``4x1``: blocks of 4 output channels x 1 K entry (4 outputs sharing a pattern, fp32 kernels);
- ``2:4``: in every run of 4 consecutive K entries exactly 2 are kept (50 % by definition);
  layers whose K is not a multiple of 4 stay dense and the report says so.
A partial block at the matrix edge is a smaller block; block scores are the mean element score.

Criteria (docs/methods.md), a registry users extend with ``register_criterion``: ``magnitude``
|w|; ``taylor`` |w * dL/dw| and ``gradient`` |dL/dw| (gradients of the cross-entropy averaged over
a few calibration batches); ``activation`` |w_ij| * ||x_j||_2 (Wanda, Sun et al. 2023: the input
feature norms measured on calibration data); ``random`` (seeded uniform scores, a baseline).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batches import iter_batches
from ..errors import UserError
from . import _collect
from ._registry import Registry
from .threshold import DynamicThreshold, select

PATTERNS = ("unstructured", "1x4", "4x1", "2:4")
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_weights(model: nn.Module, names: Iterable[str] | None = None, ignore: Iterable[str] = ()) -> list[str]:
    """Parameter names of conv / linear weights (the layers the sparse kernels run)."""
    ignore = set(ignore)
    found = [
        f"{n}.weight" if n else "weight"
        for n, m in model.named_modules()
        if isinstance(m, _LAYERS) and n not in ignore and f"{n}.weight" not in ignore
    ]
    if names is None:
        return found
    names = list(names)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ValueError(f"not a conv/linear weight: {unknown}; choose from {found}")
    return names


def _module_of(model: nn.Module, pname: str) -> nn.Module:
    return model.get_submodule(pname.rsplit(".", 1)[0]) if "." in pname else model


class Criterion:
    """A weight-level scorer: ``scores(view)`` returns one score per weight (the weight's shape)
    for every name in ``view.names``; higher = more important. ``needs`` is a subset of
    weights / gradients / activations."""

    needs: frozenset = frozenset({"weights"})
    description: str = ""

    def scores(self, view: WeightView) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@dataclass
class WeightView:
    """What a criterion sees: the model, the weight names to score, their parameters, the
    calibration batches (``[((x,), y), ...]``, None without data), the summed calibration
    gradients (``needs`` gradients) and a seed."""

    model: nn.Module
    names: list
    params: dict
    batches: list | None
    grads: dict | None
    seed: int = 0


class _FnCriterion(Criterion):
    def __init__(self, fn, needs=("weights",), description=""):
        self.fn, self.needs, self.description = fn, frozenset(needs), description

    def scores(self, view):
        return self.fn(view)


_CRITERIA = Registry("sparsity criterion", Criterion, lambda fn, needs: _FnCriterion(fn, needs))


def register_criterion(name: str, obj, *, needs=None, replace: bool = False) -> Criterion:
    """Add a weight-level criterion (a ``Criterion`` or a callable ``fn(WeightView) -> scores``)."""
    return _CRITERIA.register(name, obj, needs, replace)


# the same thin accessors as prune/importance.py's on purpose: each registry has its own public
# names (Registry holds the shared logic)
def criterion_names() -> tuple[str, ...]:
    return _CRITERIA.names()


def get_criterion(name: str) -> Criterion:
    return _CRITERIA.get(name)


def criterion_needs_data(name: str) -> bool:
    """True when the weight-level criterion ``name`` scores from calibration data."""
    return _CRITERIA.needs_data(name)


def __getattr__(attr):
    if attr == "CRITERIA":  # the registered names, live
        return criterion_names()
    raise AttributeError(attr)


def element_scores(
    model: nn.Module,
    criterion: str = "magnitude",
    names: Iterable[str] | None = None,
    data=None,
    batches: int = 4,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Per-weight importance (shape of each weight) under ``criterion``."""
    crit = get_criterion(criterion)
    names = prunable_weights(model) if names is None else list(names)
    params = dict(model.named_parameters())
    calib = grads = None
    if crit.needs & {"gradients", "activations"}:
        if data is None:
            raise UserError(f"sparsity criterion {criterion!r} needs calibration data (pass data=..., --data DATA)")
        calib = [((x,), y) for x, y in iter_batches(data, max_batches=batches, batch_size=batch_size)]
        if "gradients" in crit.needs:
            summed, n = _collect.gradients(model, calib)
            grads = {k: summed.get(k, torch.zeros_like(params[k])) / max(n, 1) for k in names}
    return crit.scores(WeightView(model, names, params, calib, grads, seed))


def _taylor(view):
    return {n: (view.params[n].detach() * view.grads[n]).abs() for n in view.names}


def _gradient(view):
    return {n: view.grads[n].abs() for n in view.names}


def _random(view):
    g = torch.Generator().manual_seed(view.seed)
    return {n: torch.rand(view.params[n].shape, generator=g) for n in view.names}


def _activation(view):
    """|w_ij| * ||x_j||_2 with x_j the j-th input entry of the layer over the calibration data."""
    sq: dict[str, torch.Tensor] = {}
    by_module = {n: _module_of(view.model, n) for n in view.names}
    pname = {id(m): n for n, m in by_module.items()}

    def fwd(_name, mod, x, _y):
        x = x.detach()
        if isinstance(mod, nn.Linear):
            s = x.reshape(-1, x.shape[-1]).pow(2).sum(0).expand(mod.out_features, -1)  # [O, K]
        else:
            if isinstance(mod, nn.Conv2d):
                u = F.unfold(x, mod.kernel_size, mod.dilation, mod.padding, mod.stride)  # [N, C*kh*kw, L]
            else:  # Conv1d / Conv3d: per input channel only, spread evenly over the kernel
                u = x.flatten(2).repeat_interleave(math.prod(mod.kernel_size), 1)
            g = mod.groups
            per = u.pow(2).sum((0, 2)).view(g, -1)  # [groups, K_g]
            s = per.repeat_interleave(mod.out_channels // g, 0)  # [O, K_g]
        n = pname[id(mod)]
        sq[n] = sq.get(n, 0) + s

    _collect.record(view.model, by_module, view.batches, on_forward=fwd)
    out = {}
    for n in view.names:
        w = view.params[n].detach()
        norms = sq[n].sqrt().reshape(w.shape[0], -1)
        out[n] = (w.reshape(w.shape[0], -1).abs() * norms).view_as(w)
    return out


for _name, _fn, _needs, _desc in (
    ("magnitude", lambda v: {n: v.params[n].detach().abs().clone() for n in v.names}, ("weights",), "|w|"),
    ("taylor", _taylor, ("weights", "gradients"), "|w * dL/dw|"),
    ("activation", _activation, ("weights", "activations"), "|w_ij| * ||x_j||_2 (Wanda)"),
    ("gradient", _gradient, ("weights", "gradients"), "|dL/dw|"),
    ("random", _random, ("weights",), "uniform random (a baseline)"),
):
    register_criterion(_name, _FnCriterion(_fn, _needs, _desc), replace=True)


def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _block_shape(pattern: str) -> tuple[int, int]:
    return {"unstructured": (1, 1), "1x4": (1, 4), "4x1": (4, 1)}[pattern]


def _to_blocks(score: torch.Tensor, bo: int, bk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean element score and element count of each (bo x bk) block of an [O, K] matrix."""
    O, K = score.shape
    po, pk = (-O) % bo, (-K) % bk
    s = F.pad(score, (0, pk, 0, po))
    c = F.pad(torch.ones_like(score), (0, pk, 0, po))
    fin = torch.isfinite(s)
    ssum = torch.where(fin, s, torch.zeros_like(s)).reshape((O + po) // bo, bo, (K + pk) // bk, bk).sum((1, 3))
    cnt = c.reshape((O + po) // bo, bo, (K + pk) // bk, bk).sum((1, 3))
    # a block with a removed (-inf) element was removed as a whole earlier: it stays removed
    dead = (~fin & (c > 0)).reshape((O + po) // bo, bo, (K + pk) // bk, bk).any(3).any(1)
    mean = ssum / cnt.clamp(min=1)
    mean[dead] = -math.inf
    return mean, cnt


def _from_blocks(keep_blocks: torch.Tensor, bo: int, bk: int, O: int, K: int) -> torch.Tensor:
    return keep_blocks.repeat_interleave(bo, 0).repeat_interleave(bk, 1)[:O, :K]


def n_m_mask(score: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the ``n`` best of every ``m`` consecutive K entries of an [O, K] score (K % m == 0)."""
    O, K = score.shape
    groups = score.reshape(O, K // m, m)
    idx = torch.argsort(groups, dim=2, descending=True, stable=True)[..., :n]
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, idx, True)
    return keep.reshape(O, K)


def make_masks(
    model: nn.Module,
    sparsity: float | None,
    pattern: str = "unstructured",
    criterion: str = "magnitude",
    *,
    data=None,
    names: Iterable[str] | None = None,
    ignore: Iterable[str] = (),
    threshold: DynamicThreshold | None = None,
    previous: Mapping[str, torch.Tensor] | None = None,
    max_layer_sparsity: float = 0.99,
    batches: int = 4,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Masks (True = kept) removing ``sparsity`` of the selected weights in ``pattern``.

    ``threshold`` chooses how (default: solved globally to hit ``sparsity`` exactly, each layer
    capped at ``max_layer_sparsity`` so none is emptied). ``previous`` masks are honoured:
    weights removed before stay removed (monotone schedules). For ``2:4`` the sparsity is 0.5
    by definition and ``sparsity`` must be None or 0.5.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown sparsity pattern {pattern!r}; use one of {', '.join(PATTERNS)}")
    if pattern == "2:4":
        if sparsity not in (None, 0.5):
            raise ValueError(f"pattern 2:4 keeps exactly 2 of every 4 weights (sparsity 0.5), got sparsity {sparsity}")
    elif sparsity is None and threshold is not None and threshold.method != "solve":
        pass  # a pure threshold run: the rule alone decides (max_layer_sparsity still caps a layer)
    elif sparsity is None or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    names = prunable_weights(model, names, ignore)
    scores = element_scores(model, criterion, names, data, batches, seed=seed)
    if previous:
        for n in names:
            if n in previous:
                scores[n] = torch.where(previous[n].to(torch.bool), scores[n], torch.full_like(scores[n], -math.inf))
    if pattern == "2:4":
        out = {}
        for n in names:
            s = _as_matrix(scores[n])
            if s.shape[1] % 4 == 0:
                out[n] = n_m_mask(s).view_as(scores[n])
        return out
    bo, bk = _block_shape(pattern)
    block_scores, block_w, shapes = {}, {}, {}
    for n in names:
        s = _as_matrix(scores[n])
        shapes[n] = (tuple(scores[n].shape), s.shape)
        block_scores[n], block_w[n] = _to_blocks(s, bo, bk)
    rule = threshold or DynamicThreshold("solve", scope="global", max_layer_ratio=max_layer_sparsity)
    if rule.max_layer_ratio > max_layer_sparsity:
        rule = dataclasses.replace(rule, max_layer_ratio=max_layer_sparsity)
    keep = rule.masks(block_scores, sparsity, weights=block_w)
    return {n: _from_blocks(keep[n], bo, bk, *shapes[n][1]).reshape(shapes[n][0]) for n in names}


def check_pattern(mask: torch.Tensor, pattern: str) -> bool:
    """True when ``mask`` (a weight's keep mask) follows ``pattern``."""
    m = _as_matrix(mask.to(torch.bool))
    O, K = m.shape
    if pattern == "unstructured":
        return True
    if pattern == "2:4":
        return K % 4 == 0 and bool((m.reshape(O, K // 4, 4).sum(2) == 2).all())
    bo, bk = _block_shape(pattern)
    mf = F.pad(m.float(), (0, (-K) % bk, 0, (-O) % bo))
    blocks = mf.reshape(mf.shape[0] // bo, bo, mf.shape[1] // bk, bk)
    cnt = F.pad(torch.ones(O, K), (0, (-K) % bk, 0, (-O) % bo)).reshape(blocks.shape).sum((1, 3))
    s = blocks.sum((1, 3))
    return bool(((s == 0) | (s == cnt)).all())


def sparsity_report(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor] | None = None,
    pattern: str | None = None,
    names: Iterable[str] | None = None,
) -> dict:
    """Per-layer and total sparsity of conv/linear weights (zeros counted from the weights,
    or from ``masks`` when given). JSON-serialisable."""
    params = dict(model.named_parameters())
    names = prunable_weights(model) if names is None else list(names)
    rows, zeros_all, total_all = [], 0, 0
    for n in names:
        w = params[n].detach()
        kept = masks[n].to(torch.bool) if masks is not None and n in masks else (w != 0)
        total = w.numel()
        nz = int(kept.sum())
        row = {
            "layer": n,
            "shape": list(w.shape),
            "total": total,
            "nonzero": nz,
            "sparsity": 1.0 - nz / total if total else 0.0,
            "masked": masks is not None and n in masks,
        }
        if pattern is not None:
            row["pattern"] = pattern if row["masked"] else "dense"
            if pattern == "2:4" and not row["masked"]:
                row["note"] = "K not a multiple of 4: left dense"
        rows.append(row)
        zeros_all += total - nz
        total_all += total
    return {
        "layers": rows,
        "total": {"weights": total_all, "zeros": zeros_all, "sparsity": zeros_all / total_all if total_all else 0.0},
    }


REPORT_HEADER = ("layer", "shape", "nonzero", "total", "sparsity")


def report_rows(report: dict) -> list[list[str]]:
    """``sparsity_report`` as text rows under ``REPORT_HEADER``: one per layer, then the total
    (the CLI renders them with ``edgeprune.cli._tables.sparsity_table``)."""
    rows = [
        [r["layer"], "x".join(map(str, r["shape"])), str(r["nonzero"]), str(r["total"]), f"{100 * r['sparsity']:.1f} %"]
        for r in report["layers"]
    ]
    tot = report["total"]
    rows.append(
        ["total", "", str(tot["weights"] - tot["zeros"]), str(tot["weights"]), f"{100 * tot['sparsity']:.1f} %"]
    )
    return rows


def projection(sparsity: float | None, pattern: str = "unstructured"):
    """``project(name, w) -> keep mask``: the nearest point of 'this layer at ``sparsity`` in
    ``pattern``' by magnitude. ADMM (``edgeprune.recover.admm_prune``) projects onto it each epoch."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown sparsity pattern {pattern!r}; use one of {', '.join(PATTERNS)}")
    if pattern != "2:4" and (sparsity is None or not 0.0 <= sparsity < 1.0):
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")

    def project(name: str, w: torch.Tensor) -> torch.Tensor:
        s = _as_matrix(w.detach().abs())
        if pattern == "2:4":
            return n_m_mask(s).view_as(w) if s.shape[1] % 4 == 0 else torch.ones_like(w, dtype=torch.bool)
        bo, bk = _block_shape(pattern)
        blocks, cnt = _to_blocks(s, bo, bk)
        keep = select({name: blocks}, sparsity, weights={name: cnt}, scope="layer")[name]
        return _from_blocks(keep, bo, bk, *s.shape).reshape(w.shape)

    return project
