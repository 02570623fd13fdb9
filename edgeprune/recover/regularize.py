"""Sparsity regularisers for recovery / sparsity training, with a lambda schedule.

Consumes: a model (and, for group lasso, channel groups described as lists of
``(parameter name, dim)`` members whose slices along ``dim`` form one channel). Produces: a
penalty tensor the fine-tuning loop adds to the loss as ``lambda(t) * penalty``, and optional
proximal updates applied after each optimizer step (soft thresholding: the operator that makes
an L1 / group-lasso penalty produce exact zeros instead of values that only hover near zero).

Regularisers (docs/methods.md): L1 on BatchNorm gamma (network slimming, Liu et al. 2017), group
lasso on channel groups (Wen et al. 2016), L1 / L2 on weights (subgradient or proximal), IRLS
(iteratively reweighted L1 / L2, Candes, Wakin & Boyd 2008; Chartrand & Yin 2008), L0 through
hard-concrete gates (Louizos, Welling & Kingma 2018), and ADMM towards a projection with a rising
rho (Zhang et al. 2018; Boyd et al. 2011) for unstructured or block targets. ``make`` builds one
by name from a registry (``register_regularizer`` adds more). The projection is passed in by the caller
(``edgeprune.prune.sparsity`` builds them), because this package sits below ``edgeprune.prune``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError

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

    def on_end(self, model: nn.Module) -> None:
        """Called once after the last step (and after the best epoch is restored)."""

    def extra_parameters(self) -> list:
        """Parameters this regulariser adds to the model and steps itself (kept out of the
        fine-tuning optimizer)."""
        return []

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

    def on_start(self, model):
        if next(self._gammas(model), None) is None:  # nothing to act on: say so instead of a silent no-op
            raise UserError(
                "regulariser bn-l1: the model has no BatchNorm layer with a scale (gamma); "
                "use l1, l1-prox, irls or group-lasso"
            )

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
        self.name = ("l1" if p == 1 else "l2") + ("-prox" if proximal else "")
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
        if not self.groups:
            raise UserError("regulariser group-lasso: no channel group to act on; use l1, l1-prox or irls")
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

    rho schedule: after every dual update rho <- min(rho * rho_growth, rho_max), and the scaled
    dual U is rescaled by old/new rho so the unscaled multiplier rho * U is unchanged (Boyd et al.
    2011, 3.4.1). A small rho first lets the weights move; a large one at the end pins them to S.
    """

    name = "admm"

    def __init__(
        self,
        project: Callable[[str, torch.Tensor], torch.Tensor],
        names: Iterable[str],
        rho: float = 1e-3,
        schedule="constant",
        rho_growth: float = 1.0,
        rho_max: float | None = None,
    ):
        super().__init__(rho, schedule, proximal=False)
        if not rho_growth >= 1.0:
            raise ValueError(f"admm: rho_growth must be >= 1, got {rho_growth}")
        self.project = project
        self.names = list(names)
        self.rho0, self.rho_growth = float(rho), float(rho_growth)
        self.rho_max = float(rho_max) if rho_max is not None else None
        self.rhos: list[float] = [float(rho)]
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
        new = self.lam * self.rho_growth
        if self.rho_max is not None:
            new = min(new, self.rho_max)
        if new != self.lam:
            for n in self.names:
                self.U[n].mul_(self.lam / new)
            self.lam = new
        self.rhos.append(self.lam)

    @torch.no_grad()
    def masks(self) -> dict[str, torch.Tensor]:
        return {n: self.project(n, self._params[n].detach()) for n in self.names}

    @torch.no_grad()
    def primal_residual(self) -> float:
        """sum ||W - Z||^2 / sum ||W||^2: how far the weights still are from the sparse set."""
        num = sum(float((self._params[n] - self.Z[n]).pow(2).sum()) for n in self.names)
        den = sum(float(self._params[n].pow(2).sum()) for n in self.names) or 1.0
        return num / den

    def describe(self) -> dict:
        d = super().describe()
        d.update(rho0=self.rho0, rho_growth=self.rho_growth, rho_max=self.rho_max, rhos=list(self.rhos))
        return d


class IRLS(Regularizer):
    """Iteratively reweighted L1 (``p=1``) or L2 (``p=2``) on conv / linear weights.

    ``p=1`` (Candes, Wakin & Boyd 2008): ``sum c_i |w_i|`` with ``c_i = 1 / (|w_i| + eps)``,
    applied as a weighted soft threshold after every step (``w <- sign(w) max(|w| - lr lam c, 0)``:
    exact zeros); the weights c are recomputed from the current weights every epoch, so small
    weights are pushed harder each round (a closer surrogate of the L0 count than plain L1).
    ``p=2`` (Chartrand & Yin 2008): ``sum c_i w_i^2`` with ``c_i = 1 / (w_i^2 + eps^2)``, a smooth
    surrogate of the count of nonzeros, added to the loss."""

    def __init__(self, lam: float = 2e-5, p: int = 1, eps: float = 1e-3, schedule="constant", names=None):
        if p not in (1, 2):
            raise ValueError(f"irls: p must be 1 or 2, got {p}")
        self.p, self.eps = p, float(eps)
        self.name = "irls" if p == 1 else "irls-l2"
        super().__init__(lam, schedule, proximal=p == 1)
        self.names = set(names) if names is not None else None
        self.c: dict[int, torch.Tensor] = {}
        self.rounds = 0

    def _weights(self, model):
        for name, m in model.named_modules():
            if isinstance(m, _WEIGHT_LAYERS) and (self.names is None or f"{name}.weight" in self.names):
                yield m.weight

    @torch.no_grad()
    def _reweight(self, model):
        for w in self._weights(model):
            a = w.detach().abs()
            self.c[id(w)] = 1.0 / (a + self.eps) if self.p == 1 else 1.0 / (a * a + self.eps**2)
        self.rounds += 1

    def on_start(self, model):
        self.c, self.rounds = {}, 0
        self._reweight(model)

    def on_epoch_end(self, model, epoch):
        self._reweight(model)

    def penalty(self, model):
        if not self.c:
            self._reweight(model)
        ws = list(self._weights(model))
        terms = [(self.c[id(w)] * (w.abs() if self.p == 1 else w * w)).sum() for w in ws]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    @torch.no_grad()
    def after_step(self, model, lr, t):
        lam = self.lam_at(t)
        if self.p != 1 or lam == 0:
            return
        for w in self._weights(model):
            thr = lr * lam * self.c[id(w)]
            w.copy_(torch.sign(w) * torch.clamp(w.abs() - thr, min=0.0))

    def describe(self) -> dict:
        return {**super().describe(), "p": self.p, "eps": self.eps, "reweightings": self.rounds}


class _HardConcreteGate(nn.Module):
    """w -> w * z with z a hard-concrete gate per weight (Louizos et al. 2018): a stretched,
    clamped binary concrete; in eval mode z is deterministic and exactly 0 or 1 at the ends."""

    BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1

    def __init__(self, shape, init_open: float = 0.95):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full(shape, math.log(init_open / (1.0 - init_open))))

    def gate(self) -> torch.Tensor:
        la = self.log_alpha
        if self.training:
            u = torch.rand_like(la).clamp(1e-6, 1.0 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + la) / self.BETA)
        else:
            s = torch.sigmoid(la)
        return (s * (self.ZETA - self.GAMMA) + self.GAMMA).clamp(0.0, 1.0)

    def forward(self, w):
        return w * self.gate()

    def open_probability(self) -> torch.Tensor:
        """P(z != 0): the expected L0 norm's per-weight term."""
        return torch.sigmoid(self.log_alpha - self.BETA * math.log(-self.GAMMA / self.ZETA))


class L0(Regularizer):
    """Expected L0 norm through hard-concrete gates (Louizos, Welling & Kingma 2018).

    During training every conv / linear weight is multiplied by its own gate (a parametrisation
    of ``weight``); the loss adds ``lam * sum_i P(z_i != 0)``. The gates' log-alphas are trained
    by their own Adam (no weight decay, learning rate ``gate_lr``). At the end the deterministic
    gates are folded into the weights: a closed gate leaves an exact zero."""

    name = "l0"

    def __init__(self, lam: float = 5e-4, schedule="constant", names=None, gate_lr: float = 0.1):
        super().__init__(lam, schedule, proximal=False)
        self.names = set(names) if names is not None else None
        self.gate_lr = float(gate_lr)
        self.gates: list[_HardConcreteGate] = []
        self._opt = None
        self.closed = 0

    def on_start(self, model):
        from torch.nn.utils import parametrize

        self.gates = []
        for name, m in model.named_modules():
            if isinstance(m, _WEIGHT_LAYERS) and (self.names is None or f"{name}.weight" in self.names):
                g = _HardConcreteGate(tuple(m.weight.shape))
                parametrize.register_parametrization(m, "weight", g)
                self.gates.append(g)
        self._opt = torch.optim.Adam([g.log_alpha for g in self.gates], lr=self.gate_lr)

    def extra_parameters(self):
        return [g.log_alpha for g in self.gates]

    def penalty(self, model):
        terms = [g.open_probability().sum() for g in self.gates]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def after_step(self, model, lr, t):
        if self._opt is not None:
            self._opt.step()
            self._opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def on_end(self, model):
        from torch.nn.utils import parametrize

        self.closed = 0
        for _name, m in list(model.named_modules()):
            if parametrize.is_parametrized(m, "weight"):
                gates = [g for g in m.parametrizations.weight if isinstance(g, _HardConcreteGate)]
                for g in gates:
                    g.eval()
                    self.closed += int((g.gate() == 0).sum())
                if gates:
                    parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        self.gates, self._opt = [], None

    def describe(self) -> dict:
        return {**super().describe(), "gate_lr": self.gate_lr, "closed_gates": self.closed}


_FACTORIES: dict[str, Callable] = {}


def register_regularizer(name: str, factory: Callable, *, replace: bool = False) -> None:
    """Add a regulariser by name: ``factory(model, lam, schedule, groups, proximal) -> Regularizer``
    (``lam`` None means the factory's default)."""
    if name in _FACTORIES and not replace:
        raise ValueError(f"regulariser {name!r} is already registered; pass replace=True to override it")
    _FACTORIES[name] = factory


def regularizer_names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def _or(lam, default):
    return default if lam is None else lam


register_regularizer("bn-l1", lambda m, lam, sch, grp, prox: BNL1(_or(lam, 1e-4), sch, prox))
register_regularizer(
    "group-lasso",
    lambda m, lam, sch, grp, prox: GroupLasso(
        grp if grp is not None else GroupLasso.per_layer(m), _or(lam, 1e-3), sch, prox
    ),
)
register_regularizer("l1", lambda m, lam, sch, grp, prox: WeightNorm(_or(lam, 1e-5), 1, sch, prox))
register_regularizer("l1-prox", lambda m, lam, sch, grp, prox: WeightNorm(_or(lam, 1e-3), 1, sch, True))
register_regularizer("l2", lambda m, lam, sch, grp, prox: WeightNorm(_or(lam, 1e-4), 2, sch, prox))
register_regularizer("irls", lambda m, lam, sch, grp, prox: IRLS(_or(lam, 2e-5), 1, schedule=sch))
register_regularizer("irls-l2", lambda m, lam, sch, grp, prox: IRLS(_or(lam, 1e-7), 2, schedule=sch))
register_regularizer("l0", lambda m, lam, sch, grp, prox: L0(_or(lam, 5e-4), sch))


def make(
    name: str,
    model: nn.Module,
    lam: float | None = None,
    schedule="constant",
    groups: Sequence[ChannelGroupSpec] | None = None,
    proximal: bool = False,
) -> Regularizer:
    """Build a regulariser by its CLI name (``regularizer_names()``: bn-l1, group-lasso, l1,
    l1-prox, l2, irls, irls-l2, l0, and any registered)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown regulariser {name!r}; use one of {', '.join(_FACTORIES)}")
    return _FACTORIES[name](model, lam, schedule, groups, proximal)
