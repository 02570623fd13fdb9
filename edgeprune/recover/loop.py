"""The recovery fine-tuning loop: SGD/AdamW, cosine LR, early stopping, distillation, masks.

Consumes: a (pruned) model, data (an object with ``.train`` and ``.val`` torch Datasets of
``(x, y)``, as ``edgeprune.data.load`` returns, or a ``(train, val)`` pair), an optional teacher
(the unpruned model), optional fixed masks (parameter name -> bool tensor) and regularisers.
Produces: the same model, trained in place (best validation epoch restored), and a history dict
(per-epoch losses, learning rate, validation metric, the distillation share of the loss).

Runs are deterministic on CPU for a fixed seed: the shuffling generator and torch's RNG are
seeded, batches are drawn from one seeded permutation per epoch (loader workers only read
samples), and the global RNG state is restored afterwards so the caller's randomness is not
disturbed. Under torchrun (``edgeprune.distributed``) the same loop runs in DDP: every rank
takes its slice of the same global batches, and validation counts are summed over ranks. The
loop's state after an epoch can be handed out and resumed (checkpoints).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from .. import distributed
from ..models.training import deterministic, torch_threads
from ..progress import NO_PROGRESS, Progress, as_progress
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
    workers: int = 0  # DataLoader worker processes per rank (batches are the same with any number)

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
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")

    def to_dict(self) -> dict:
        return asdict(self)


def _splits(data):
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    if hasattr(data, "train"):
        return data.train, getattr(data, "val", None)
    raise TypeError("data must have .train/.val (edgeprune.data.load) or be a (train, val) pair")


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def top1(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``dataset`` (eval mode, restored afterwards).

    Under torchrun every rank scores its share of a sized dataset and the counts are summed, so
    every rank returns the same number (and must call it: it is a collective)."""
    was_training = model.training
    model.eval()
    dev = _device_of(model)
    world = distributed.current()
    if world.distributed and hasattr(dataset, "__len__"):
        dataset = Subset(dataset, distributed.rank_slice(len(dataset), world))
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        correct += int((model(x.to(dev)).argmax(1).cpu() == y).sum())
        total += int(y.numel())
    correct, total = distributed.all_reduce_sum([correct, total])
    model.train(was_training)
    return correct / max(total, 1)


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
    progress: Progress | bool | None = None,
    description: str = "recover",
    threads: int | None = 1,
    on_epoch: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    **overrides,
) -> tuple[nn.Module, dict]:
    """Fine-tune ``model`` in place; return ``(model, history)``.

    ``overrides`` are ``RecoverConfig`` fields (``finetune(m, d, epochs=3, lr=0.01)``).
    With ``teacher`` and ``config.distill``, the loss is ``(1-w)*CE + w*T^2*KL`` against the
    teacher's logits. ``masks`` are applied first and stay fixed (see ``MaskGuard``).
    Early stopping watches ``metric`` on the validation split; the best epoch's weights are
    restored when ``restore_best``. With ``epochs=0`` only the masks are applied and the model
    evaluated. ``threads`` (default 1) pins torch's intra-op threads for the run, because conv
    float sums depend on it: one thread gives the same numbers on every machine. ``progress``: an
    ``edgeprune.progress.Progress`` told of every batch on the main rank (a bool or None: no events).

    Under torchrun (``edgeprune.distributed.setup``) the model trains in DDP on the world's device:
    ``batch_size`` is per rank and every step sees the same global batch whatever the world size.
    ``on_epoch(state)`` is called on every rank after each epoch but the last with the loop's
    resumable state (``{"meta": JSON-able dict, "tensors": dict of tensors}``); passing such a state
    back as ``resume`` (plus ``"rng"``, this rank's torch RNG state saved with it) continues after
    that epoch with the numbers an uninterrupted run gives.
    """
    cfg = replace(config or RecoverConfig(), **overrides)
    train_set, val_set = _splits(data)
    regs = list(regularizers)
    rng_state = torch.get_rng_state()
    torch.manual_seed(cfg.seed)
    dev = torch.device(distributed.current().device)
    homes = [(m, _device_of(m)) for m in (model, teacher) if m is not None]
    if masks and dev.type != "cpu":
        masks = {k: v.to(dev) for k, v in masks.items()}
    try:
        with deterministic(), torch_threads(threads):
            for m, _ in homes:
                m.to(dev)
            run = _Run(model, train_set, val_set, cfg, teacher, masks, regs, metric)
            return run.fit(progress, description, on_epoch, resume)
    finally:
        for m, home in homes:
            m.to(home)
        torch.set_rng_state(rng_state)


def _lr_at(cfg: RecoverConfig, t: float) -> float:
    return cfg.lr * (0.5 * (1 + math.cos(math.pi * t)) if cfg.lr_schedule == "cosine" else 1.0)


def _loaders(train_set, cfg: RecoverConfig, gen: torch.Generator):
    """``(epoch -> DataLoader, batches per epoch)`` for this rank.

    A sized dataset goes through ``GlobalBatchSampler`` (the same global batches for any world size).
    An ``IterableDataset`` is read as a stream split over ranks and loader workers (``RankStream``);
    it has no length, so ``max_batches_per_epoch`` fixes the steps of an epoch on every rank."""
    if isinstance(train_set, IterableDataset):
        if cfg.max_batches_per_epoch is None:
            raise ValueError("training on an IterableDataset needs max_batches_per_epoch (it has no length)")
        stream = RankStream(train_set, cfg.max_batches_per_epoch * cfg.batch_size)
        return (lambda epoch: DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.workers)), (
            cfg.max_batches_per_epoch
        )
    sampler = distributed.GlobalBatchSampler(len(train_set), cfg.batch_size, gen)
    per_epoch = len(sampler) if cfg.max_batches_per_epoch is None else min(len(sampler), cfg.max_batches_per_epoch)

    def loader(epoch: int) -> DataLoader:
        # the loader's own generator only seeds worker processes; batches come from ``sampler``
        seeds = torch.Generator().manual_seed(cfg.seed * 1009 + epoch)
        return DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.workers, generator=seeds)

    return loader, per_epoch


def _optimizer_for(cfg, model, regs):
    """The optimizer over the model's parameters, except those a regulariser owns and steps
    itself (L0 gates: their own optimizer, no weight decay pulling them half-open)."""
    skip = {id(p) for r in regs for p in r.extra_parameters()}
    return _make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad and id(p) not in skip])


class RankStream(IterableDataset):
    """Every ``(ranks x workers)``-th sample of a stream for this rank and loader worker, ``samples`` of
    them per epoch; a shard that runs out starts its stream again, so every rank takes as many steps
    (DDP needs that) and an epoch is the same whatever the stream's length."""

    def __init__(self, stream: IterableDataset, samples: int, world: distributed.World | None = None):
        self.stream, self.samples = stream, int(samples)
        self.world = world or distributed.current()

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        shards, shard = self.world.size * workers, self.world.rank * workers + wid
        quota = self.samples // workers + (1 if wid < self.samples % workers else 0)
        given = 0
        while given < quota:
            before = given
            for i, item in enumerate(self.stream):
                if i % shards == shard:
                    yield item
                    given += 1
                    if given == quota:
                        return
            if given == before:
                raise ValueError(f"the training stream gave no sample to rank {self.world.rank}, worker {wid}")


class _Run:
    """One fine-tuning run: its model (DDP-wrapped when distributed), optimiser, sampler and counters."""

    def __init__(self, model, train_set, val_set, cfg, teacher, masks, regs, metric):
        self.model, self.train_set, self.val_set, self.cfg = model, train_set, val_set, cfg
        self.teacher, self.regs, self.metric = teacher, regs, metric
        self.guard = MaskGuard(model, masks)
        if masks:
            apply_masks(model, masks)
        self.use_teacher = teacher is not None and cfg.distill and cfg.distill_weight > 0
        if self.use_teacher:
            teacher.eval()
        self.history: dict = {
            "config": cfg.to_dict(),
            "distill": bool(self.use_teacher),
            "regularizers": [r.describe() for r in regs],
            "epochs": [],
        }
        self.step = self.bad_epochs = self.epoch = 0
        self.best: tuple = (-math.inf, 0, None)

    def fit(self, progress, description, on_epoch, resume):
        # regularisers that reparametrise the model (L0 gates) start before the first evaluation and
        # before DDP wraps the model, so every state_dict snapshot and checkpoint has one layout and
        # DDP averages the gates' gradients too; they end (fold their state into the weights) last
        started = self.cfg.epochs > 0
        if started:
            dev = _device_of(self.model)
            for r in self.regs:
                r.on_start(self.model)
            self.model.to(dev)  # parameters a regulariser added live where the model does
        try:
            return self._fit(progress, description, on_epoch, resume)
        finally:
            if started:
                for r in self.regs:
                    r.on_end(self.model)

    def _fit(self, progress, description, on_epoch, resume):
        cfg, model, history = self.cfg, self.model, self.history
        if resume is None:
            val0 = self.metric(model, self.val_set) if self.val_set is not None else None
            history["val_before"] = val0
            self.best = (val0 if val0 is not None else -math.inf, 0, copy.deepcopy(model.state_dict()))
        if cfg.epochs == 0:
            history.update(best_epoch=0, best_val=history["val_before"], stopped_early=False)
            return model, history
        gen = torch.Generator().manual_seed(cfg.seed)
        loader_for, per_epoch = _loaders(self.train_set, cfg, gen)
        total = max(per_epoch * cfg.epochs, 1)
        opt = _optimizer_for(cfg, model, self.regs)
        if resume is not None:
            self._restore(resume, opt, gen)
        ddp = distributed.wrap(model)
        stopped_early = False
        bar = as_progress(progress) if distributed.is_main() else NO_PROGRESS
        bar.start(total, description)
        try:
            if self.step:
                bar.advance(self.step)  # a resumed run's bar starts where the saved one stopped
            with distributed.global_batchnorm(model):
                for epoch in range(self.epoch + 1, cfg.epochs + 1):
                    loader = loader_for(epoch)
                    with distributed.translate_errors(f"training epoch {epoch}", only_collective=True):
                        row = self._epoch(ddp, loader, opt, epoch, per_epoch, total, bar)
                    history["epochs"].append(row)
                    self.epoch = epoch
                    if cfg.patience is not None and self.bad_epochs >= cfg.patience:
                        stopped_early = epoch < cfg.epochs
                        break
                    if on_epoch is not None and epoch < cfg.epochs:
                        on_epoch(self._state(opt, gen))
        finally:
            bar.close()
        if self.val_set is not None and cfg.restore_best and self.best[1] != len(history["epochs"]):
            model.load_state_dict(self.best[2])
        history.update(
            best_epoch=self.best[1],
            best_val=self.best[0] if self.val_set is not None else None,
            stopped_early=stopped_early,
        )
        return model, history

    def _epoch(self, ddp, loader, opt, epoch, per_epoch, total, bar: Progress) -> dict:
        cfg, model = self.cfg, self.model
        dev = _device_of(model)
        model.train()
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "reg": 0.0}
        seen = 0
        lr = _lr_at(cfg, self.step / total)
        for i, (x, y) in enumerate(loader):
            if i >= per_epoch:
                break
            x, y = x.to(dev), y.to(dev)
            t = self.step / total
            lr = _lr_at(cfg, t)
            for g in opt.param_groups:
                g["lr"] = lr
            out = ddp(x)
            t_out = None
            if self.use_teacher:
                with torch.no_grad():
                    t_out = self.teacher(x)
            loss, ce, kd = distillation_loss(
                out, t_out, y, cfg.temperature, cfg.distill_weight if self.use_teacher else 0.0
            )
            reg = torch.zeros((), device=dev)
            for r in self.regs:
                reg = reg + r.loss_term(model, t)
            total_loss = loss + reg
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            self.guard.before_step()
            opt.step()
            for r in self.regs:
                r.after_step(model, lr, t)
            self.guard.after_step()
            n = int(y.numel())
            seen += n
            for k, v in (("loss", total_loss), ("ce", ce), ("kd", kd), ("reg", reg)):
                sums[k] += float(v.detach()) * n
            self.step += 1
            bar.advance(1, f"epoch {epoch}/{cfg.epochs} loss {float(total_loss.detach()):.3f}")
        for r in self.regs:
            r.on_epoch_end(model, epoch)
        self.guard.after_step()
        *totals, seen = distributed.all_reduce_sum([*sums.values(), seen])
        row = {k: v / max(seen, 1) for k, v in zip(sums, totals)}
        row.update(epoch=epoch, lr=lr, seconds=time.perf_counter() - t0)
        if self.val_set is not None:
            row["val"] = self.metric(model, self.val_set)
            if row["val"] > self.best[0] + cfg.min_delta:
                self.best = (row["val"], epoch, copy.deepcopy(model.state_dict()))
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
        return row

    def _state(self, opt, gen) -> dict:
        meta = {
            "epoch": self.epoch,
            "step": self.step,
            "bad_epochs": self.bad_epochs,
            "best_val": self.best[0],
            "best_epoch": self.best[1],
            "history": self.history,
        }
        tensors = {
            "model": self.model.state_dict(),
            "best": self.best[2] if self.best[2] is not None else {},
            "optimizer": opt.state_dict(),
            "sampler": gen.get_state(),
        }
        return {"meta": copy.deepcopy(meta), "tensors": tensors}

    def _restore(self, state: dict, opt, gen) -> None:
        meta, tensors = state["meta"], state["tensors"]
        dev = _device_of(self.model)
        self.model.load_state_dict(tensors["model"])
        opt.load_state_dict(tensors["optimizer"])
        gen.set_state(tensors["sampler"])
        best_sd = {k: v.to(dev) for k, v in tensors["best"].items()} or None
        self.best = (meta["best_val"], meta["best_epoch"], best_sd)
        self.epoch, self.step, self.bad_epochs = meta["epoch"], meta["step"], meta["bad_epochs"]
        self.history = copy.deepcopy(meta["history"])
        self.history["config"] = self.cfg.to_dict()
        if state.get("rng") is not None:
            torch.set_rng_state(state["rng"])


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
    progress: Progress | bool | None = None,
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
