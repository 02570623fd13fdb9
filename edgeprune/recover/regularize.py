"""Sparsity regularisers for recovery / sparsity training, with a lambda schedule.

Consumes: a model (and, for group lasso, channel groups described as lists of
``(parameter name, dim)`` members whose slices along ``dim`` form one channel). Produces: a
penalty tensor the fine-tuning loop adds to the loss as ``lambda(t) * penalty``, and optional
proximal updates applied after each optimizer step (soft thresholding: the operator that makes
an L1 / group-lasso penalty produce exact zeros instead of values that only hover near zero).

Regularisers: L1 on BatchNorm gamma (network slimming, Liu et al. 2017), group lasso on channel
groups (Wen et al. 2016), L1 / L2 on weights, and ADMM towards a projection (Zhang et al. 2018)
for unstructured or block targets. The projection is passed in by the caller
(``edgeprune.prune.sparsity`` builds them), because this package sits below ``edgeprune.prune``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d)
_NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class LambdaSchedule:
    """Multiplier of lambda over training progress ``t`` in [0, 1].

    ``constant``: 1. ``linear``: 0 -> 1 over the run. ``cosine``: smooth 0 -> 1. ``step``: 0
    before ``warmup`` then 1. Any kind stays 0 before ``warmup`` (a fraction of the run), so a
    model can settle after pruning before it is pushed further towards sparsity.
    """

    kind: str = "constant"
    warmup: float = 0.0

    def __post_init__(self):
        if self.kind not in ("constant", "linear", "cosine", "step"):
            raise ValueError(f"unknown lambda schedule {self.kind!r}; use constant, linear, cosine or step")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"lambda warmup must be in [0, 1), got {self.warmup}")

    def __call__(self, t: float) -> float:
        t = min(max(t, 0.0), 1.0)
        if t < self.warmup:
            return 0.0
        if self.kind in ("constant", "step"):
            return 1.0
        u = (t - self.warmup) / (1.0 - self.warmup)
        if self.kind == "linear":
            return u
        return 0.5 * (1.0 - math.cos(math.pi * u))


class Regularizer(abc.ABC):
    """Base: ``penalty(model)`` is added to the loss as ``lam * schedule(t) * penalty``."""

    name = "regularizer"

    def __init__(self, lam: float, schedule: LambdaSchedule | str = "constant", proximal: bool = False):
        if lam < 0:
            raise ValueError(f"{self.name}: lambda must be >= 0, got {lam}")
        self.lam = float(lam)
        self.schedule = schedule if isinstance(schedule, LambdaSchedule) else LambdaSchedule(schedule)
        self.proximal = bool(proximal)

    def lam_at(self, t: float) -> float:
        return self.lam * self.schedule(t)

    def on_start(self, model: nn.Module) -> None:
        """Called once before the first step."""

    @abc.abstractmethod
    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The unscaled penalty (a scalar tensor with a gradient)."""

    def loss_term(self, model: nn.Module, t: float) -> torch.Tensor:
        lam = self.lam_at(t)
        if lam == 0.0 or self.proximal:
            return torch.zeros(())
        return lam * self.penalty(model)

    def after_step(self, model: nn.Module, lr: float, t: float) -> None:
        """Proximal update (only when ``proximal=True``)."""

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        """Per-epoch state update (ADMM's dual variables)."""

    def describe(self) -> dict:
        return {
            "name": self.name,
            "lambda": self.lam,
            "schedule": self.schedule.kind,
            "warmup": self.schedule.warmup,
            "proximal": self.proximal,
        }


def _soft_threshold_(x: torch.Tensor, thr: float) -> None:
    x.copy_(torch.sign(x) * torch.clamp(x.abs() - thr, min=0.0))


class BNL1(Regularizer):
    """L1 on BatchNorm scales |gamma| (network slimming): channels whose gamma reaches 0 carry nothing."""

    name = "bn-l1"

    def __init__(
        self, lam: float = 1e-4, schedule="constant", proximal: bool = False, names: Iterable[str] | None = None
    ):
        super().__init__(lam, schedule, proximal)
        self.names = set(names) if names is not None else None

    def _gammas(self, model):
        for name, m in model.named_modules():
            if isinstance(m, _NORM_LAYERS) and m.weight is not None and (self.names is None or name in self.names):
                yield m.weight

    def penalty(self, model):
        terms = [g.abs().sum() for g in self._gammas(model)]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    @torch.no_grad()
    def after_step(self, model, lr, t):
        if self.proximal and self.lam_at(t) > 0:
            for g in self._gammas(model):
                _soft_threshold_(g, lr * self.lam_at(t))


class WeightNorm(Regularizer):
    """L1 (``p=1``) or squared L2 (``p=2``) on the weights of conv / linear layers."""

    def __init__(
        self,
        lam: float = 1e-5,
        p: int = 1,
        schedule="constant",
        proximal: bool = False,
        names: Iterable[str] | None = None,
    ):
        if p not in (1, 2):
            raise ValueError(f"weight regulariser p must be 1 or 2, got {p}")
        self.p = p
        self.name = "l1" if p == 1 else "l2"
        super().__init__(lam, schedule, proximal)
        self.names = set(names) if names is not None else None

    def _weights(self, model):
        for name, m in model.named_modules():
            if isinstance(m, _WEIGHT_LAYERS) and (self.names is None or f"{name}.weight" in self.names):
                yield m.weight

    def penalty(self, model):
        terms = [(w.abs().sum() if self.p == 1 else (w * w).sum()) for w in self._weights(model)]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    @torch.no_grad()
    def after_step(self, model, lr, t):
        lam = self.lam_at(t)
        if not self.proximal or lam == 0:
            return
        for w in self._weights(model):
            if self.p == 1:
                _soft_threshold_(w, lr * lam)
            else:  # prox of lam*||w||^2 is a shrink by 1 / (1 + 2 lr lam)
                w.div_(1.0 + 2.0 * lr * lam)


@dataclass(frozen=True)
class ChannelGroupSpec:
    """One coupled channel group: ``members`` are ``(parameter name, dim)``; slice c of each is channel c.

    ``channels`` (optional) restricts the penalty to those channel indices, e.g. the channels a
    plan is about to remove, so the penalty moves their information elsewhere before they go.
    """

    members: tuple[tuple[str, int], ...]
    channels: tuple[int, ...] | None = None


class GroupLasso(Regularizer):
    """Group lasso: sum over channels c of sqrt(sum over members ||W_m[c]||^2).

    Each term is the Euclidean norm of everything channel c owns across the coupled layers, so
    the penalty drives whole channels (not single weights) to zero, which is what structured
    pruning removes.
    """

    name = "group-lasso"

    def __init__(
        self,
        groups: Sequence[ChannelGroupSpec],
        lam: float = 1e-3,
        schedule="constant",
        proximal: bool = False,
        eps: float = 1e-12,
    ):
        super().__init__(lam, schedule, proximal)
        self.groups = list(groups)
        self.eps = eps
        self._params: dict[str, nn.Parameter] = {}

    def on_start(self, model):
        self._params = dict(model.named_parameters())
        for g in self.groups:
            sizes = set()
            for name, dim in g.members:
                if name not in self._params:
                    raise ValueError(f"group lasso: unknown parameter {name!r}")
                sizes.add(self._params[name].shape[dim])
            if len(sizes) != 1:
                raise ValueError(f"group lasso: members {g.members} disagree on the channel count {sorted(sizes)}")

    def channel_norms(self, model: nn.Module | None = None) -> list[torch.Tensor]:
        """Per group, the vector of channel norms (over all members)."""
        params = dict(model.named_parameters()) if model is not None else self._params
        out = []
        for g in self.groups:
            sq = None
            for name, dim in g.members:
                p = params[name]
                s = p.movedim(dim, 0).reshape(p.shape[dim], -1).pow(2).sum(1)
                sq = s if sq is None else sq + s
            norms = torch.sqrt(sq + self.eps)
            if g.channels is not None:
                norms = norms[list(g.channels)]
            out.append(norms)
        return out

    def penalty(self, model):
        if not self._params:
            self.on_start(model)
        norms = self.channel_norms(model)
        return torch.stack([n.sum() for n in norms]).sum() if norms else torch.zeros(())

    @torch.no_grad()
    def after_step(self, model, lr, t):
        lam = self.lam_at(t)
        if not self.proximal or lam == 0:
            return
        thr = lr * lam
        for g, norms in zip(self.groups, self.channel_norms(model)):
            scale = torch.clamp(1.0 - thr / norms, min=0.0)  # group soft threshold
            full = torch.ones(self._params[g.members[0][0]].shape[g.members[0][1]])
            if g.channels is not None:
                full[list(g.channels)] = scale
            else:
                full = scale
            for name, dim in g.members:
                p = self._params[name]
                shape = [1] * p.dim()
                shape[dim] = -1
                p.mul_(full.view(shape).to(p.dtype))

    @staticmethod
    def per_layer(model: nn.Module, skip_last: bool = True) -> list[ChannelGroupSpec]:
        """Groups without a traced graph: each conv/linear's output channels, plus the BatchNorm
        registered right after it when its size matches (the usual conv-bn pattern). The final
        classifier is skipped by default: its outputs are the classes."""
        mods = list(model.named_modules())
        groups = []
        layers = [
            (i, n, m) for i, (n, m) in enumerate(mods) if isinstance(m, _WEIGHT_LAYERS) and getattr(m, "groups", 1) == 1
        ]
        if skip_last and layers:
            layers = layers[:-1]
        for i, name, m in layers:
            members = [(f"{name}.weight", 0)]
            if m.bias is not None:
                members.append((f"{name}.bias", 0))
            if i + 1 < len(mods):
                bn_name, bn = mods[i + 1]
                if isinstance(bn, _NORM_LAYERS) and bn.num_features == m.weight.shape[0] and bn.affine:
                    members += [(f"{bn_name}.weight", 0), (f"{bn_name}.bias", 0)]
            groups.append(ChannelGroupSpec(tuple(members)))
        return groups


def magnitude_projection(sparsity: float) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """Projection onto 'at most (1 - sparsity) of the entries nonzero', per tensor, by magnitude."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")

    def project(name: str, w: torch.Tensor) -> torch.Tensor:
        k = int(round(sparsity * w.numel()))
        if k == 0:
            return torch.ones_like(w, dtype=torch.bool)
        thr = w.abs().flatten().kthvalue(k).values
        keep = w.abs() > thr
        # ties at the threshold: keep exactly numel - k entries, stable by index
        missing = (w.numel() - k) - int(keep.sum())
        if missing > 0:
            tie = ((w.abs() == thr) & ~keep).flatten().nonzero().flatten()[:missing]
            keep = keep.flatten()
            keep[tie] = True
            keep = keep.view_as(w)
        return keep

    return project


class ADMM(Regularizer):
    """ADMM towards a sparse target (Zhang et al. 2018).

    Splits ``min loss(W) s.t. W in S`` into ``loss(W) + rho/2 ||W - Z + U||^2`` with
    ``Z = proj_S(W + U)`` and ``U += W - Z`` updated each epoch. ``project(name, tensor)``
    returns a bool keep-mask for the set S (unstructured, 1x4, 4x1, 2:4, ...). After training,
    ``masks()`` gives the final hard masks: W is already close to Z, so the hard cut costs little.
    """

    name = "admm"

    def __init__(
        self,
        project: Callable[[str, torch.Tensor], torch.Tensor],
        names: Iterable[str],
        rho: float = 1e-3,
        schedule="constant",
    ):
        super().__init__(rho, schedule, proximal=False)
        self.project = project
        self.names = list(names)
        self.Z: dict[str, torch.Tensor] = {}
        self.U: dict[str, torch.Tensor] = {}
        self._params: dict[str, nn.Parameter] = {}

    @torch.no_grad()
    def on_start(self, model):
        self._params = dict(model.named_parameters())
        for n in self.names:
            w = self._params[n].detach()
            self.Z[n] = w * self.project(n, w)
            self.U[n] = torch.zeros_like(w)

    def penalty(self, model):
        if not self._params:
            self.on_start(model)
        terms = [0.5 * (self._params[n] - self.Z[n] + self.U[n]).pow(2).sum() for n in self.names]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    @torch.no_grad()
    def on_epoch_end(self, model, epoch):
        for n in self.names:
            w = self._params[n].detach()
            v = w + self.U[n]
            self.Z[n] = v * self.project(n, v)
            self.U[n] = self.U[n] + w - self.Z[n]

    @torch.no_grad()
    def masks(self) -> dict[str, torch.Tensor]:
        return {n: self.project(n, self._params[n].detach()) for n in self.names}

    @torch.no_grad()
    def primal_residual(self) -> float:
        """sum ||W - Z||^2 / sum ||W||^2: how far the weights still are from the sparse set."""
        num = sum(float((self._params[n] - self.Z[n]).pow(2).sum()) for n in self.names)
        den = sum(float(self._params[n].pow(2).sum()) for n in self.names) or 1.0
        return num / den


def make(
    name: str,
    model: nn.Module,
    lam: float | None = None,
    schedule="constant",
    groups: Sequence[ChannelGroupSpec] | None = None,
    proximal: bool = False,
) -> Regularizer:
    """Build a regulariser by its CLI name: ``bn-l1``, ``group-lasso``, ``l1`` or ``l2``."""
    if name == "bn-l1":
        return BNL1(1e-4 if lam is None else lam, schedule, proximal)
    if name == "group-lasso":
        return GroupLasso(
            groups if groups is not None else GroupLasso.per_layer(model),
            1e-3 if lam is None else lam,
            schedule,
            proximal,
        )
    if name == "l1":
        return WeightNorm(1e-5 if lam is None else lam, 1, schedule, proximal)
    if name == "l2":
        return WeightNorm(1e-4 if lam is None else lam, 2, schedule, proximal)
    raise ValueError(f"unknown regulariser {name!r}; use bn-l1, group-lasso, l1 or l2")
