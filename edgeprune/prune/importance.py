"""Importance scorers for structured pruning, behind a registry users extend (docs/methods.md).

Consumes: a ``Graph`` (channel groups and the layer slices they touch), the model, and for the
data-driven scorers a few calibration batches. Produces: ``{group_id: np.ndarray}`` with one score
per prunable channel of each group (higher = more important).

An ``Importance`` declares what it ``needs`` ("weights", "gradients", "activations") and scores
either one layer slice at a time (``slice_scores``: the per-slice scores are reduced over every
coupled layer with sum / mean / max) or whole groups (``group_scores``). ``register_importance``
adds one by name; ``needs_data`` tells callers whether a criterion needs calibration data, so no
caller keeps its own list. Built in: l1, l2, bn_scale (|gamma|, network slimming), taylor
(|sum w * dL/dw|), gradient (||dL/dW_c||), activation (||W_c|| * ||X_c||_2), activation_aware
(mean |<x, w_c>| / sqrt(||w_c||)), activation_gradient (mean over samples of |sum dJ/dz * z|),
connection (mean over i, j of w_ik^2 * w_kj^2), fpgm, lamp, random.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..data.batches import iter_batches
from ..errors import UserError
from ..graph.surgery import param_matrix, position_matrix
from . import _collect
from ._registry import Registry

REDUCTIONS = ("sum", "mean", "max")


@dataclass
class SliceView:
    """What a per-slice scorer sees: one layer slice of a channel group.

    ``weights`` is the slice's position matrix (rows = positions, columns = every weight touching
    that position), ``grads`` the same view of the calibration gradients (None without them),
    ``data`` what the scorer's ``prepare`` returned, ``rng`` a seeded numpy generator."""

    graph: Any
    slice: Any
    weights: torch.Tensor
    grads: torch.Tensor | None
    data: Any
    rng: np.random.Generator


class Importance:
    """A channel scorer. Subclasses set ``needs`` and override ``slice_scores`` (or
    ``group_scores`` for criteria that are not a reduction over layers)."""

    needs: frozenset = frozenset({"weights"})
    description: str = ""

    def prepare(self, graph, batches, loss_fn) -> Any:
        """Collect what the scorer needs from the calibration ``batches`` (None without data)."""
        return None

    def slice_scores(self, view: SliceView) -> torch.Tensor | None:
        """One score per row of ``view.weights``, or None when this slice has nothing to say."""
        return None

    def group_scores(self, graph, data) -> dict | None:
        """``{group_id: scores}`` for every prunable group, or None to score slice by slice."""
        return None


class FunctionImportance(Importance):
    """An importance from a plain ``fn(view) -> scores | None``."""

    def __init__(self, fn: Callable, needs=("weights",), description: str = ""):
        self.fn, self.needs, self.description = fn, frozenset(needs), description

    def slice_scores(self, view):
        return self.fn(view)


_REGISTRY = Registry("importance", Importance, lambda fn, needs: FunctionImportance(fn, needs))


def register_importance(name: str, obj, *, needs=None, replace: bool = False) -> Importance:
    """Add ``obj`` (an ``Importance``, or a callable ``fn(SliceView)`` wrapped with ``needs``,
    default weights only) under ``name``; it is then valid everywhere a criterion name is."""
    return _REGISTRY.register(name, obj, needs, replace)


# the same thin accessors as prune/sparsity.py's criteria on purpose: each registry has its own
# public names (Registry holds the shared logic)
def names() -> tuple[str, ...]:
    return _REGISTRY.names()


def get_importance(name: str) -> Importance:
    return _REGISTRY.get(name)


def check_importance(name: str) -> str:
    get_importance(name)
    return name


def needs_data(name: str) -> bool:
    """True when ``name`` scores from calibration data (gradients or activations)."""
    return _REGISTRY.needs_data(name)


def __getattr__(attr):
    if attr == "IMPORTANCES":  # the registered names, live (users may add more)
        return names()
    raise AttributeError(attr)


# -- calibration data -------------------------------------------------------------------------


def calib_batches(calib, example_inputs, max_batches: int = 4, batch_size: int = 32):
    """Normalise calibration data to a list of (inputs tuple, labels or None)."""
    if calib is None:
        return [(tuple(example_inputs), None)]
    if isinstance(calib, torch.Tensor):  # one batch, as given
        batch_size = max(int(calib.shape[0]), 1)
    elif isinstance(calib, tuple) and len(calib) == 2 and all(isinstance(t, torch.Tensor) for t in calib):
        batch_size = max(int(calib[0].shape[0]), 1)
    return [((x,), y) for x, y in iter_batches(calib, max_batches=max_batches, batch_size=batch_size)]


def _channel_dim(m: nn.Module, t: torch.Tensor) -> int:
    if isinstance(m, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)):
        return 1
    return t.dim() - 1


def _per_channel(m: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """``t`` as [channels, everything else]."""
    d = _channel_dim(m, t)
    return t.detach().float().movedim(d, 0).reshape(t.shape[d], -1)


def _scored_modules(graph, roles=None) -> dict[str, nn.Module]:
    out = {}
    for s in graph.slices:
        if s.kind == "module" and (roles is None or s.role in roles):
            try:
                out[s.target] = graph.module(s.target)
            except AttributeError:
                continue
    return out


def _fpgm(M: torch.Tensor) -> torch.Tensor:
    # Weiszfeld iterations for the geometric median, then each row's distance to it
    med = M.mean(0)
    for _ in range(10):
        d = (M - med).norm(dim=1).clamp_min(1e-12)
        w = 1.0 / d
        med = (M * w[:, None]).sum(0) / w.sum()
    return (M - med).norm(dim=1)


def _lamp(M: torch.Tensor) -> torch.Tensor:
    s = M.pow(2).sum(1)
    order = torch.argsort(s)
    sorted_s = s[order]
    tail = torch.flip(torch.cumsum(torch.flip(sorted_s, [0]), 0), [0])
    out = torch.empty_like(s)
    out[order] = sorted_s / tail.clamp_min(1e-12)
    return out


# -- built-in scorers -------------------------------------------------------------------------


class _Weights(Importance):
    def __init__(self, fn, description):
        self.fn, self.description = fn, description

    def slice_scores(self, view):
        return self.fn(view.weights)


class _Random(Importance):
    description = "uniform random scores (a baseline)"

    def slice_scores(self, view):
        return torch.from_numpy(view.rng.random(view.weights.shape[0]))


class _BNScale(Importance):
    description = "|gamma| of the norm layer (network slimming, Liu et al. 2017)"

    def slice_scores(self, view):
        s = view.slice
        return view.weights[:, 0].abs() if s.kind == "module" and s.role == "channels" else None


class _Gradient(Importance):
    needs = frozenset({"weights", "gradients"})

    def __init__(self, taylor: bool):
        self.taylor = taylor
        self.description = "|sum_c w * dL/dw| (Molchanov et al. 2019)" if taylor else "||dL/dW_c||_2"

    def slice_scores(self, view):
        M, G = view.weights, view.grads
        if G is None or G.shape != M.shape:
            return None
        return (M * G).sum(1).abs() if self.taylor else G.norm(dim=1)


class _ActivationNorm(Importance):
    """||W_c|| * ||X_c||_2 with X_c the channel's input (in) or output (out) over the calibration data."""

    needs = frozenset({"weights", "activations"})
    description = "||W_c||_2 * ||X_c||_2 on calibration data"

    def prepare(self, graph, batches, loss_fn):
        sums: dict = {}

        def fwd(name, m, x, y):
            for key, t in (("in", x), ("out", y)):
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    sums[(name, key)] = sums.get((name, key), 0) + _per_channel(m, t).pow(2).sum(1)

        _collect.record(graph.model, _scored_modules(graph), batches, on_forward=fwd)
        return {k: v.sqrt() for k, v in sums.items()}

    def slice_scores(self, view):
        s = view.slice
        if s.kind != "module" or s.role not in ("in", "out"):
            return None
        x = view.data.get((s.target, s.role))
        if x is None or x.shape[0] != view.weights.shape[0]:
            return None
        return view.weights.norm(dim=1) * x


_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


class _ActivationAware(Importance):
    """S_c = mean over samples of |<x, w_c>| / sqrt(||w_c||_2): the response of output channel c
    to real inputs (its pre-activation output without the bias), normalised by the square root of
    its weight norm. Conv samples are every input patch (batch x output positions)."""

    needs = frozenset({"weights", "activations"})
    description = "mean |<x, w_c>| / sqrt(||w_c||_2) on calibration data"

    def prepare(self, graph, batches, loss_fn):
        sums: dict = {}

        def fwd(name, m, x, y):
            if not isinstance(m, _LAYERS) or not isinstance(y, torch.Tensor):
                return
            z = y.detach().float()
            if m.bias is not None:
                shape = [1] * z.dim()
                shape[_channel_dim(m, z)] = -1
                z = z - m.bias.detach().float().view(shape)
            a = _per_channel(m, z).abs()
            tot, cnt = sums.get(name, (0, 0))
            sums[name] = (tot + a.sum(1), cnt + a.shape[1])

        _collect.record(graph.model, _scored_modules(graph, ("out",)), batches, on_forward=fwd)
        return {k: t / max(c, 1) for k, (t, c) in sums.items()}

    def slice_scores(self, view):
        s = view.slice
        if s.kind != "module" or s.role != "out":
            return None
        r = view.data.get(s.target)
        if r is None or r.shape[0] != view.weights.shape[0]:
            return None
        return r / view.weights.norm(dim=1).clamp_min(1e-12).sqrt()


class _ActivationGradient(Importance):
    """|dJ/dz * z| per output channel: for each sample, |sum over positions of dJ/dz * z|,
    averaged over the calibration samples (the first-order loss change when channel c of the
    activation z is zeroed; Molchanov et al. 2017)."""

    needs = frozenset({"weights", "gradients", "activations"})
    description = "mean_n |sum_positions dJ/dz * z| on calibration data (Molchanov et al. 2017)"

    def prepare(self, graph, batches, loss_fn):
        sums: dict = {}

        def bwd(name, m, z, dz):
            d = _channel_dim(m, z)
            prod = (z.float() * dz.float()).movedim(d, 1)
            per_sample = prod.reshape(prod.shape[0], prod.shape[1], -1).sum(2).abs()  # [N, C]
            tot, cnt = sums.get(name, (0, 0))
            sums[name] = (tot + per_sample.sum(0), cnt + per_sample.shape[0])

        mods = _scored_modules(graph, ("out", "channels"))
        _collect.record(graph.model, mods, batches, on_backward=bwd, loss_fn=loss_fn)
        return {k: t / max(c, 1) for k, (t, c) in sums.items()}

    def slice_scores(self, view):
        s = view.slice
        if s.kind != "module" or s.role not in ("out", "channels"):
            return None
        r = view.data.get(s.target)
        return r if r is not None and r.shape[0] == view.weights.shape[0] else None


class _Connection(Importance):
    """I_k = mean over i, j of w_ik^2 * w_kj^2: hidden unit k through its incoming weights
    (the rows of the layers producing k) and its outgoing weights (the columns of the layers
    consuming k). The mean of the product factorises into mean_i w_ik^2 * mean_j w_kj^2;
    coupled producers (or consumers) are averaged."""

    description = "mean_{i,j} w_ik^2 * w_kj^2 over in- and out-connections"

    def group_scores(self, graph, data):
        groups = graph.groups()
        side = {r: [np.zeros(g.size) for g in groups] for r in ("out", "in")}
        count = {r: [np.zeros(g.size) for g in groups] for r in ("out", "in")}
        for s in graph.slices:
            if s.kind != "module" or s.role not in ("out", "in"):
                continue
            m = graph.module(s.target)
            if not isinstance(m, _LAYERS):
                continue
            M = position_matrix(m, s.role)
            if M is None or M.shape[0] != len(s.ids):
                continue
            v = M.pow(2).mean(1).double().numpy()
            gi, ci = graph.class_of_positions(s.ids)
            for g in np.unique(gi[gi >= 0]).tolist():
                sel = gi == g
                np.add.at(side[s.role][g], ci[sel], v[sel])
                np.add.at(count[s.role][g], ci[sel], 1)
        out = {}
        for i, g in enumerate(groups):
            if not g.prunable or not g.size:
                continue
            missing = [r for r in ("out", "in") if not count[r][i].all()]
            if missing:
                what = "no layer produces them" if "out" in missing else "no following layer consumes them"
                alternatives = ", ".join(n for n in names() if n != "connection")
                raise UserError(
                    f"importance 'connection' is undefined for channel group {g.id}: {what} (a conv or linear "
                    f"is needed on both sides); use another importance ({alternatives})"
                )
            out[g.id] = (side["out"][i] / count["out"][i]) * (side["in"][i] / count["in"][i])
        return out


def _register_builtins():
    for name, fn, desc in (
        ("l1", lambda M: M.abs().sum(1), "||W_c||_1"),
        ("l2", lambda M: M.norm(dim=1), "||W_c||_2"),
        ("bn_scale", None, ""),
        ("taylor", None, ""),
        ("gradient", None, ""),
        ("activation", None, ""),
        ("activation_aware", None, ""),
        ("activation_gradient", None, ""),
        ("connection", None, ""),
        ("fpgm", _fpgm, "distance to the layer's geometric median (He et al. 2019)"),
        ("lamp", _lamp, "layer-adaptive magnitude (Lee et al. 2021)"),
        ("random", None, ""),
    ):
        obj = {
            "bn_scale": _BNScale,
            "taylor": lambda: _Gradient(True),
            "gradient": lambda: _Gradient(False),
            "activation": _ActivationNorm,
            "activation_aware": _ActivationAware,
            "activation_gradient": _ActivationGradient,
            "connection": _Connection,
            "random": _Random,
        }.get(name)
        register_importance(name, obj() if obj else _Weights(fn, desc), replace=True)


_register_builtins()


# -- scoring ----------------------------------------------------------------------------------


def _slice_view(graph, s, grads, data, rng) -> SliceView | None:
    model = graph.model
    if s.kind == "param":
        owner, _, attr = s.target.rpartition(".")
        t = getattr(model.get_submodule(owner) if owner else model, attr)
        axis = int(s.role[4:])
        M = param_matrix(t.detach(), axis)
        G = param_matrix(grads[s.target], axis) if grads is not None and s.target in grads else None
    else:
        m = graph.module(s.target)
        M = position_matrix(m, s.role)
        if M is None:
            return None
        G = None
        if grads is not None:
            prefix = s.target + "." if s.target else ""
            lookup = {p: grads.get(prefix + n) for n, p in m.named_parameters()}
            G = position_matrix(m, s.role, pick=lookup.get)
    if M.shape[0] != len(s.ids):
        return None
    return SliceView(graph, s, M, G, data, rng)


def _reduce(graph, imp, grads, data, rng, reduction, only=None):
    groups = graph.groups()
    sums = [np.zeros(g.size) for g in groups]
    counts = [np.zeros(g.size) for g in groups]
    maxs = [np.full(g.size, -np.inf) for g in groups]
    for s in graph.slices:
        gi, ci = graph.class_of_positions(s.ids)
        ok = gi >= 0
        if only is not None:
            ok &= np.isin(gi, only)
        if not ok.any():
            continue
        view = _slice_view(graph, s, grads, data, rng)
        v = None if view is None else imp.slice_scores(view)
        if v is None:
            continue
        v = v.detach().double().numpy()
        for g in np.unique(gi[ok]).tolist():
            sel = ok & (gi == g)
            np.add.at(sums[g], ci[sel], v[sel])
            np.add.at(counts[g], ci[sel], 1)
            np.maximum.at(maxs[g], ci[sel], v[sel])
    out = {}
    for i, g in enumerate(groups):
        if reduction == "sum":
            sc = sums[i]
        elif reduction == "mean":
            sc = sums[i] / np.maximum(counts[i], 1)
        else:
            sc = np.where(np.isfinite(maxs[i]), maxs[i], 0.0)
        out[g.id] = (sc, counts[i])
    return out


def score_groups(
    graph,
    importance: str = "l2",
    reduction: str = "mean",
    calib=None,
    loss_fn=None,
    seed: int = 0,
    calib_batches_max: int = 4,
) -> dict:
    """Score every channel of every group. Returns {group_id: float64 array (group.size,)}.

    Groups a per-slice scorer has nothing to say about (e.g. bn_scale on a group without a norm
    layer, activation on a group no layer consumes) fall back to l2, so every group gets a score."""
    imp = get_importance(importance)
    if reduction not in REDUCTIONS:
        raise UserError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    rng = np.random.default_rng(seed)
    grads = data = None
    batches = None
    if imp.needs & {"gradients", "activations"}:
        batches = calib_batches(calib, graph.example_inputs, calib_batches_max)
        if "gradients" in imp.needs:
            grads, _ = _collect.gradients(graph.model, batches, loss_fn)
    with torch.no_grad():
        data = imp.prepare(graph, batches, loss_fn) if batches is not None else None
        direct = imp.group_scores(graph, data)
        if direct is not None:
            return {g.id: np.asarray(direct.get(g.id, np.zeros(g.size)), dtype=np.float64) for g in graph.groups()}
        scored = _reduce(graph, imp, grads, data, rng, reduction)
        groups = graph.groups()
        missing = [i for i, g in enumerate(groups) if g.size and scored[g.id][1].sum() == 0]
        if missing and importance != "l2":
            fill = _reduce(graph, get_importance("l2"), None, None, rng, reduction, only=np.array(missing))
            for i in missing:
                scored[groups[i].id] = fill[groups[i].id]
    return {gid: sc for gid, (sc, _) in scored.items()}
