"""One gradient collector and one activation recorder for the data-driven scorers.

Consumes: a model, calibration batches (``(inputs tuple, labels or None)`` pairs, as
``edgeprune.prune.importance.calib_batches`` returns) and, for activations, the modules to watch
with a callback. Produces: summed parameter gradients of the calibration loss, or whatever the
callback accumulates from each watched module's input, output and (optionally) output gradient.

Both structured importances (``importance.py``) and weight-level criteria (``sparsity.py``)
collect through here. The model's training mode and gradients are restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn


def calibration_loss(out, y):
    """Cross-entropy against the labels; without labels, against the model's own predictions
    (outputs that are not logits: their mean square)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if y is not None and out.dim() == 2:
        return F.cross_entropy(out, y.long())
    if out.dim() == 2:
        return F.cross_entropy(out, out.detach().argmax(-1))
    return out.float().pow(2).mean()


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)


def gradients(model: nn.Module, batches, loss_fn: Callable | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """``({parameter name: gradient summed over batches}, number of batches)``."""
    grads: dict[str, torch.Tensor] = {}
    params = dict(model.named_parameters())
    with _eval_mode(model):
        for inputs, y in batches:
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                (loss_fn or calibration_loss)(model(*inputs), y).backward()
            for n, p in params.items():
                if p.grad is not None:
                    grads[n] = grads.get(n, 0) + p.grad.detach().clone()
    return grads, len(batches)


def record(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    batches,
    on_forward: Callable | None = None,
    on_backward: Callable | None = None,
    loss_fn: Callable | None = None,
) -> None:
    """Run ``batches`` through ``model`` with hooks on ``modules``.

    ``on_forward(name, module, input, output)`` sees every watched call (no gradient);
    ``on_backward(name, module, output, d_loss/d_output)`` is called after the backward pass of
    the calibration loss when given (then the forward runs with gradients)."""
    hooks = []
    outputs: list = []

    def hook_for(name):
        def fn(m, inp, out):
            x = inp[0] if inp else None
            y = out[0] if isinstance(out, tuple) else out
            if on_forward is not None:
                on_forward(name, m, x, y)
            if on_backward is not None and isinstance(y, torch.Tensor) and y.requires_grad:
                y.retain_grad()
                outputs.append((name, m, y))

        return fn

    for name, m in modules.items():
        hooks.append(m.register_forward_hook(hook_for(name)))
    try:
        with _eval_mode(model):
            for inputs, y in batches:
                outputs.clear()
                if on_backward is None:
                    with torch.no_grad():
                        model(*inputs)
                    continue
                model.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    (loss_fn or calibration_loss)(model(*inputs), y).backward()
                for name, m, z in outputs:
                    if z.grad is not None:
                        on_backward(name, m, z.detach(), z.grad.detach())
    finally:
        for h in hooks:
            h.remove()
