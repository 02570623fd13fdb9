"""The recovery fine-tuning loop: SGD/AdamW, cosine LR, early stopping, distillation, masks.

Consumes: a (pruned) model, data (an object with ``.train`` and ``.val`` torch Datasets of
``(x, y)``, as ``edgeprune.data.load`` returns, or a ``(train, val)`` pair), an optional teacher
(the unpruned model), optional fixed masks (parameter name -> bool tensor) and regularisers.
Produces: the same model, trained in place (best validation epoch restored), and a history dict
(per-epoch losses, learning rate, validation metric, the distillation share of the loss).

Runs are deterministic on CPU for a fixed seed: the shuffling generator and torch's RNG are
seeded, batches are loaded in the main process, and the global RNG state is restored afterwards
so the caller's randomness is not disturbed.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..models.training import deterministic
from .distill import distillation_loss
from .masks import MaskGuard, apply_masks
from .regularize import Regularizer


@dataclass(frozen=True)
class RecoverConfig:
    """Hyper-parameters of one recovery run (all JSON-serialisable, stored in search logs)."""

    epochs: int = 5
    optimizer: str = "sgd"  # "sgd" (momentum, nesterov) or "adamw"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 32
    lr_schedule: str = "cosine"  # "cosine" (per batch, to 0) or "constant"
    distill: bool = True  # used only when a teacher is given
    temperature: float = 4.0
    distill_weight: float = 0.7
    patience: int | None = None  # early stopping: epochs without a val improvement
    min_delta: float = 0.0
    restore_best: bool = True
    seed: int = 0
    max_batches_per_epoch: int | None = None

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use sgd or adamw")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"unknown lr schedule {self.lr_schedule!r}; use cosine or constant")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


def _splits(data):
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    if hasattr(data, "train"):
        return data.train, getattr(data, "val", None)
    raise TypeError("data must have .train/.val (edgeprune.data.load) or be a (train, val) pair")


@torch.no_grad()
def top1(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``dataset`` (eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    model.train(was_training)
    return correct / max(total, 1)


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
        disable=not enabled,
    )


def _make_optimizer(cfg: RecoverConfig, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def finetune(
    model: nn.Module,
    data,
    config: RecoverConfig | None = None,
    *,
    teacher: nn.Module | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    regularizers: Iterable[Regularizer] = (),
    metric: Callable[[nn.Module, Dataset], float] = top1,
    progress: bool = False,
    description: str = "recover",
    threads: int | None = 1,
    **overrides,
) -> tuple[nn.Module, dict]:
    """Fine-tune ``model`` in place; return ``(model, history)``.

    ``overrides`` are ``RecoverConfig`` fields (``finetune(m, d, epochs=3, lr=0.01)``).
    With ``teacher`` and ``config.distill``, the loss is ``(1-w)*CE + w*T^2*KL`` against the
    teacher's logits. ``masks`` are applied first and stay fixed (see ``MaskGuard``).
    Early stopping watches ``metric`` on the validation split; the best epoch's weights are
    restored when ``restore_best``. With ``epochs=0`` only the masks are applied and the model
    evaluated. ``threads`` (default 1) pins torch's intra-op threads for the run, because conv
    float sums depend on it: one thread gives the same numbers on every machine.
    """
    cfg = replace(config or RecoverConfig(), **overrides)
    train_set, val_set = _splits(data)
    regs = list(regularizers)
    rng_state = torch.get_rng_state()
    torch.manual_seed(cfg.seed)
    try:
        with deterministic(), _threads(threads):
            return _finetune(model, train_set, val_set, cfg, teacher, masks, regs, metric, progress, description)
    finally:
        torch.set_rng_state(rng_state)


@contextlib.contextmanager
def _threads(n: int | None):
    prev = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _finetune(model, train_set, val_set, cfg, teacher, masks, regs, metric, progress, description):
    guard = MaskGuard(model, masks)
    if masks:
        apply_masks(model, masks)
    # regularisers that reparametrise the model (L0 gates) start before the first evaluation, so
    # every state_dict snapshot has one layout, and end (fold their state into the weights) last
    started = cfg.epochs > 0
    if started:
        for r in regs:
            r.on_start(model)
    try:
        return _train(model, train_set, val_set, cfg, teacher, guard, regs, metric, progress, description)
    finally:
        if started:
            for r in regs:
                r.on_end(model)


def _optimizer_for(cfg, model, regs):
    """The optimizer over the model's parameters, except those a regulariser owns and steps
    itself (L0 gates: their own optimizer, no weight decay pulling them half-open)."""
    skip = {id(p) for r in regs for p in r.extra_parameters()}
    return _make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad and id(p) not in skip])


def _train(model, train_set, val_set, cfg, teacher, guard, regs, metric, progress, description):
    use_teacher = teacher is not None and cfg.distill and cfg.distill_weight > 0
    if use_teacher:
        teacher.eval()
    history: dict = {
        "config": cfg.to_dict(),
        "distill": bool(use_teacher),
        "regularizers": [r.describe() for r in regs],
        "epochs": [],
    }
    val0 = metric(model, val_set) if val_set is not None else None
    history["val_before"] = val0
    best = (val0 if val0 is not None else -math.inf, 0, copy.deepcopy(model.state_dict()))
    if cfg.epochs == 0:
        history.update(best_epoch=0, best_val=val0, stopped_early=False)
        return model, history

    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=gen, drop_last=False)
    per_epoch = len(loader) if cfg.max_batches_per_epoch is None else min(len(loader), cfg.max_batches_per_epoch)
    total = max(per_epoch * cfg.epochs, 1)
    opt = _optimizer_for(cfg, model, regs)

    step = 0
    bad_epochs = 0
    stopped_early = False
    with _progress(progress) as bar:
        task = bar.add_task(description, total=total, status="")
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "reg": 0.0}
            seen = 0
            for i, (x, y) in enumerate(loader):
                if i >= per_epoch:
                    break
                t = step / total
                lr = cfg.lr * (0.5 * (1 + math.cos(math.pi * t)) if cfg.lr_schedule == "cosine" else 1.0)
                for g in opt.param_groups:
                    g["lr"] = lr
                out = model(x)
                t_out = None
                if use_teacher:
                    with torch.no_grad():
                        t_out = teacher(x)
                loss, ce, kd = distillation_loss(
                    out, t_out, y, cfg.temperature, cfg.distill_weight if use_teacher else 0.0
                )
                reg = torch.zeros(())
                for r in regs:
                    reg = reg + r.loss_term(model, t)
                total_loss = loss + reg
                opt.zero_grad(set_to_none=True)
                total_loss.backward()
                guard.before_step()
                opt.step()
                for r in regs:
                    r.after_step(model, lr, t)
                guard.after_step()
                n = int(y.numel())
                seen += n
                sums["loss"] += float(total_loss.detach()) * n
                sums["ce"] += float(ce) * n
                sums["kd"] += float(kd) * n
                sums["reg"] += float(reg.detach()) * n
                step += 1
                bar.update(task, advance=1, status=f"epoch {epoch}/{cfg.epochs} loss {float(total_loss.detach()):.3f}")
            for r in regs:
                r.on_epoch_end(model, epoch)
            guard.after_step()
            row = {k: v / max(seen, 1) for k, v in sums.items()}
            row.update(epoch=epoch, lr=lr, seconds=time.perf_counter() - t0)
            if val_set is not None:
                row["val"] = metric(model, val_set)
                if row["val"] > best[0] + cfg.min_delta:
                    best = (row["val"], epoch, copy.deepcopy(model.state_dict()))
                    bad_epochs = 0
                else:
                    bad_epochs += 1
            history["epochs"].append(row)
            if cfg.patience is not None and bad_epochs >= cfg.patience:
                stopped_early = epoch < cfg.epochs
                break
    if val_set is not None and cfg.restore_best and best[1] != len(history["epochs"]):
        model.load_state_dict(best[2])
    history.update(best_epoch=best[1], best_val=best[0] if val_set is not None else None, stopped_early=stopped_early)
    return model, history


def admm_prune(
    model: nn.Module,
    data,
    project: Callable[[str, torch.Tensor], torch.Tensor],
    names: Iterable[str],
    config: RecoverConfig | None = None,
    *,
    rho: float = 1e-3,
    rho_growth: float = 1.0,
    rho_max: float | None = None,
    teacher: nn.Module | None = None,
    retrain_epochs: int | None = None,
    regularizers: Iterable[Regularizer] = (),
    progress: bool = False,
    threads: int | None = 1,
    **overrides,
) -> tuple[nn.Module, dict, dict]:
    """ADMM sparsification then masked retraining; return ``(model, masks, history)``.

    Phase 1 trains with the ADMM penalty pulling the named weights towards the sparse set
    ``project`` defines (rho grows by ``rho_growth`` per epoch up to ``rho_max``); phase 2 cuts
    to the hard masks and retrains with them fixed.
    """
    from .regularize import ADMM

    cfg = replace(config or RecoverConfig(), **overrides)
    admm = ADMM(project, names, rho=rho, rho_growth=rho_growth, rho_max=rho_max)
    model, h1 = finetune(
        model,
        data,
        cfg,
        teacher=teacher,
        regularizers=[admm, *regularizers],
        progress=progress,
        description="admm",
        restore_best=False,
        threads=threads,
    )
    residual = admm.primal_residual()
    masks = admm.masks()
    epochs2 = cfg.epochs if retrain_epochs is None else retrain_epochs
    model, h2 = finetune(
        model,
        data,
        cfg,
        teacher=teacher,
        masks=masks,
        progress=progress,
        description="retrain",
        epochs=epochs2,
        threads=threads,
    )
    return model, masks, {"admm": h1, "retrain": h2, "primal_residual": residual, "rhos": list(admm.rhos)}
