"""Deterministic training and evaluation of classifiers on ``DataSplits``.

Consumes: an ``nn.Module``, ``DataSplits`` (or a data spec), hyper-parameters and a seed.
Produces: ``train`` -> ``(model, metrics)`` with per-epoch train loss / val top-1 and final
test top-1; ``evaluate`` -> ``{metric_name: value}``.

Determinism for a fixed seed on CPU: ``torch.manual_seed`` before anything random happens
(init is the caller's, but dropout etc. here), ``torch.use_deterministic_algorithms(True)``
during training, a single-process DataLoader, and a dedicated seeded generator for shuffling
so nothing else that draws random numbers can shift the batch order.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data import DataSplits
from ..data import load as load_data
from ..progress import Progress, as_progress


def _loader(data, batch_size: int, shuffle: bool = False, generator=None) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)


def _topk(k: int):
    def metric(outputs: torch.Tensor, targets: torch.Tensor) -> float:
        k_ = min(k, outputs.shape[1])
        top = outputs.topk(k_, dim=1).indices
        return float((top == targets[:, None]).any(dim=1).float().mean()) if len(targets) else 0.0

    metric.__name__ = f"top{k}"
    return metric


METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {"top1": _topk(1), "top5": _topk(5)}


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset | DataLoader, metric: str | Callable = "top1", batch_size: int = 256
) -> dict[str, float]:
    """Score ``model`` on ``dataset``; returns ``{name: value}`` (top-1 is in [0, 1]).

    ``metric`` is ``"top1"``, ``"top5"`` or a callable ``(logits[N, K], targets[N]) -> float``
    applied to the whole dataset's outputs at once (named after the callable).
    """
    fn = METRICS.get(metric) if isinstance(metric, str) else metric
    if fn is None:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)} or pass a callable")
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    was_training = model.training
    model.eval()
    outs, ys = [], []
    try:
        for x, y in _loader(dataset, batch_size):
            outs.append(model(x).float())
            ys.append(torch.as_tensor(y))
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("evaluate: the dataset is empty")
    return {name: float(fn(torch.cat(outs), torch.cat(ys)))}


@contextlib.contextmanager
def deterministic():
    """Turn on deterministic algorithms for the block, restoring the previous setting after."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Pin torch's intra-op thread count to ``n`` for the block (None or 0: leave it), restoring it
    after. Float sums inside conv kernels depend on the count, so a fixed one gives the same bits
    on every machine; training, recovery, calibration and the build all pin it through here."""
    prev = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def train(
    model: nn.Module,
    data: DataSplits | str,
    epochs: int = 10,
    seed: int = 0,
    lr: float = 3e-3,
    batch_size: int = 32,
    weight_decay: float = 1e-4,
    optimizer: str = "adamw",
    progress: Progress | bool | None = None,
    metric: str | Callable = "top1",
    loss_fn: Callable | None = None,
    threads: int | None = 1,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model`` in place on ``data.train``; returns ``(model, metrics)``.

    Optimiser AdamW (or ``"sgd"``, momentum 0.9, nesterov) with a one-cycle-free cosine decay
    to 0 over ``epochs``; cross-entropy loss unless ``loss_fn(logits, y)`` is given. ``metrics``:
    ``train_loss`` and ``val_<metric>`` per epoch, ``test_<metric>`` and ``val_<metric>`` at the
    end, ``epochs``, ``seed``, ``seconds``. ``progress``: an ``edgeprune.progress.Progress`` told of every batch (a bool or None: no events).
    ``threads`` (default 1) fixes torch's intra-op thread count while training: the float sums
    inside conv kernels depend on it, so one thread gives the same numbers on every machine
    (and small models train no slower); pass None to keep torch's setting, or N for big models.
    """
    if isinstance(data, str):
        data = load_data(data, seed=seed)
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    bar = as_progress(progress)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    loader = _loader(data.train, batch_size, shuffle=True, generator=gen)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose 'adamw' or 'sgd'")
    steps = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    mname = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    history: dict[str, list[float]] = {"train_loss": [], f"val_{mname}": []}
    t0 = time.perf_counter()
    with deterministic(), torch_threads(threads):
        bar.start(epochs * len(loader), "training")
        try:
            for epoch in range(epochs):
                model.train()
                total, count = 0.0, 0
                for x, y in loader:
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x), y)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(y)
                    count += len(y)
                    bar.advance(1)
                history["train_loss"].append(total / max(count, 1))
                val = evaluate(model, data.val, metric)[mname]
                history[f"val_{mname}"].append(val)
                bar.advance(0, f"epoch {epoch + 1}/{epochs} loss {history['train_loss'][-1]:.3f} val {mname} {val:.3f}")
        finally:
            bar.close()
    model.eval()
    metrics: dict[str, Any] = dict(history)
    metrics[f"val_{mname}"] = history[f"val_{mname}"][-1] if epochs else evaluate(model, data.val, metric)[mname]
    metrics["val_history"] = history[f"val_{mname}"]
    metrics[f"test_{mname}"] = evaluate(model, data.test, metric)[mname]
    # the settings echoed by keyword on purpose (alike in shape to prune/schedule.py's admm_prune
    # call, unrelated code): the metrics record what this run used
    metrics.update(
        epochs=epochs,
        seed=seed,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimizer,
        threads=threads,
        seconds=round(time.perf_counter() - t0, 3),
    )
    return model, metrics
