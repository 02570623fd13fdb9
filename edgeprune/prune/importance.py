"""Importance scorers for structured pruning (docs/methods.md).

Consumes: a ``Graph`` (channel groups and the layer slices they touch), the model, and for the
data-driven scorers a few calibration batches. Produces: ``{group_id: np.ndarray}`` with one score
per prunable channel of each group (higher = more important), reduced over every coupled layer
with sum / mean / max. Scorers: l1, l2, bn_scale (|gamma|, network slimming), taylor
(|sum w * dL/dw|, Molchanov 2019), gradient (||dL/dW_c||), activation (||W_c|| * ||X_c||_2 on
calibration data), fpgm (distance to the layer's geometric median), lamp, random.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..graph.surgery import param_matrix, position_matrix

IMPORTANCES = ("l1", "l2", "bn_scale", "taylor", "gradient", "activation", "fpgm", "lamp", "random")
REDUCTIONS = ("sum", "mean", "max")


def check_importance(name: str) -> str:
    if name not in IMPORTANCES:
        raise ValueError(f"unknown importance {name!r}; choose one of {', '.join(IMPORTANCES)}")
    return name


# -- calibration data -------------------------------------------------------------------------


def calib_batches(calib, example_inputs, max_batches: int = 4, batch_size: int = 32):
    """Normalise calibration data to a list of (inputs tuple, labels or None)."""
    if calib is None:
        return [(tuple(example_inputs), None)]
    if isinstance(calib, torch.Tensor):
        return [((calib,), None)]
    if isinstance(calib, tuple) and len(calib) == 2 and all(isinstance(t, torch.Tensor) for t in calib):
        return [((calib[0],), calib[1])]
    if isinstance(calib, torch.utils.data.Dataset) and hasattr(calib, "__len__"):
        calib = torch.utils.data.DataLoader(calib, batch_size=batch_size, shuffle=False)
    out = []
    for batch in calib:
        if isinstance(batch, torch.Tensor):
            out.append(((batch,), None))
        elif isinstance(batch, (list, tuple)) and len(batch) == 2:
            out.append(((batch[0],), batch[1]))
        else:
            raise TypeError("calibration batches must be tensors or (inputs, labels) pairs")
        if len(out) >= max_batches:
            break
    if not out:
        raise ValueError("calibration data is empty")
    return out


def _loss(out, y):
    if isinstance(out, (tuple, list)):
        out = out[0]
    if y is not None and out.dim() == 2:
        return F.cross_entropy(out, y.long())
    if out.dim() == 2:  # no labels: agreement with the model's own predictions
        return F.cross_entropy(out, out.detach().argmax(-1))
    return out.float().pow(2).mean()


def _gradients(model, batches, loss_fn):
    grads = {}
    was = model.training
    model.eval()
    params = dict(model.named_parameters())
    try:
        for inputs, y in batches:
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = (loss_fn or _loss)(model(*inputs), y)
                loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    grads[n] = grads.get(n, 0) + p.grad.detach().clone()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return grads


def _activation_norms(model, graph, batches):
    """Squared L2 norm per channel of every scored module's input and output."""
    sums: dict = {}
    hooks = []
    names = {s.target for s in graph.slices if s.kind == "module"}

    def cdim(m, t):
        if isinstance(m, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)):
            return 1
        return t.dim() - 1

    def hook(name):
        def fn(m, inp, out):
            x = inp[0] if inp else None
            y = out[0] if isinstance(out, tuple) else out
            for key, t in (("in", x), ("out", y)):
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    d = cdim(m, t)
                    v = t.detach().float().movedim(d, 0).reshape(t.shape[d], -1).pow(2).sum(1)
                    sums[(name, key)] = sums.get((name, key), 0) + v

        return fn

    for name in names:
        try:
            hooks.append(graph.module(name).register_forward_hook(hook(name)))
        except AttributeError:
            continue
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for inputs, _ in batches:
                model(*inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {k: v.sqrt() for k, v in sums.items()}


# -- per-slice scores -------------------------------------------------------------------------


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


def _slice_scores(graph, s, importance, grads, acts, rng):
    """Score per position of one slice, or None when this slice has nothing to say."""
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

            def pick(p):
                g = lookup.get(p)
                return None if g is None else g

            G = position_matrix(m, s.role, pick=pick)
    n = len(s.ids)
    if M.shape[0] != n:
        return None
    if importance == "l1":
        return M.abs().sum(1)
    if importance == "l2":
        return M.norm(dim=1)
    if importance == "fpgm":
        return _fpgm(M)
    if importance == "lamp":
        return _lamp(M)
    if importance == "random":
        return torch.from_numpy(rng.random(n))
    if importance == "bn_scale":
        if s.kind == "module" and s.role == "channels":
            return M[:, 0].abs()
        return None
    if importance in ("taylor", "gradient"):
        if G is None or G.shape != M.shape:
            return None
        return (M * G).sum(1).abs() if importance == "taylor" else G.norm(dim=1)
    if importance == "activation":
        if s.kind != "module" or s.role not in ("in", "out"):
            return None
        x = acts.get((s.target, s.role))
        if x is None or x.shape[0] != n:
            return None
        return M.norm(dim=1) * x
    raise ValueError(f"unknown importance {importance!r}")


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

    Groups a scorer has nothing to say about (e.g. bn_scale on a group without a norm layer,
    activation on a group no layer consumes) fall back to l2, so every group gets a score."""
    check_importance(importance)
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    rng = np.random.default_rng(seed)
    grads = acts = None
    if importance in ("taylor", "gradient", "activation"):
        batches = calib_batches(calib, graph.example_inputs, calib_batches_max)
        if importance == "activation":
            acts = _activation_norms(graph.model, graph, batches)
        else:
            grads = _gradients(graph.model, batches, loss_fn)
    groups = graph.groups()
    sums = [np.zeros(g.size) for g in groups]
    counts = [np.zeros(g.size) for g in groups]
    maxs = [np.full(g.size, -np.inf) for g in groups]

    def accumulate(imp, only=None):
        for s in graph.slices:
            gi, ci = graph.class_of_positions(s.ids)
            ok = gi >= 0
            if only is not None:
                ok &= np.isin(gi, only)
            if not ok.any():
                continue
            v = _slice_scores(graph, s, imp, grads, acts, rng)
            if v is None:
                continue
            v = v.detach().double().numpy()
            for g in np.unique(gi[ok]).tolist():
                sel = ok & (gi == g)
                np.add.at(sums[g], ci[sel], v[sel])
                np.add.at(counts[g], ci[sel], 1)
                np.maximum.at(maxs[g], ci[sel], v[sel])

    with torch.no_grad():
        accumulate(importance)
        missing = [i for i, g in enumerate(groups) if g.size and counts[i].sum() == 0]
        if missing and importance != "l2":
            accumulate("l2", only=np.array(missing))
    out = {}
    for i, g in enumerate(groups):
        if reduction == "sum":
            sc = sums[i]
        elif reduction == "mean":
            sc = sums[i] / np.maximum(counts[i], 1)
        else:
            sc = np.where(np.isfinite(maxs[i]), maxs[i], 0.0)
        out[g.id] = sc
    return out
