"""One calibration-batch iterator for every consumer of "a few batches of data".

Consumes: a calibration source in any of the forms the API accepts: a ``DataSplits`` (its
``.train``), a tensor or numpy array of inputs, an ``(x, y)`` pair of tensors, a map-style
``Dataset`` of ``x`` or ``(x, y)`` items, or any iterable of batches (a ``DataLoader``) whose
items are tensors or ``(x, y)`` pairs. Produces: ``(x, y)`` batches in order, ``y`` None when
the source has no labels, stopping after ``max_batches`` batches or ``max_samples`` samples.

Importance scoring, weight-level criteria and int8 calibration all read their data through
``iter_batches``, so a source that works for one works for all.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..errors import UserError

__all__ = ["iter_batches"]


def _split(item):
    """``(x, y)`` of one batch or sample; ``y`` None when there is no label."""
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            return item[0], item[1]
        if len(item) == 1:
            return item[0], None
        raise UserError(f"a calibration batch has {len(item)} parts; give tensors or (inputs, labels) pairs")
    return item, None


def _stack(items, what: str) -> torch.Tensor:
    ts = [torch.as_tensor(t) for t in items]
    shapes = {tuple(t.shape) for t in ts}
    if len(shapes) > 1:
        raise UserError(f"calibration {what} have different shapes {sorted(shapes)}; resize them to one shape")
    return torch.stack(ts)


def _source_batches(source, batch_size: int) -> Iterator:
    if hasattr(source, "train") and hasattr(source, "num_classes"):
        source = source.train
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(source)
    if isinstance(source, torch.Tensor):
        for i in range(0, source.shape[0], batch_size):
            yield source[i : i + batch_size], None
        return
    if isinstance(source, tuple) and len(source) == 2 and all(isinstance(t, torch.Tensor) for t in source):
        x, y = source
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    if isinstance(source, torch.utils.data.Dataset) and hasattr(source, "__len__"):
        for i in range(0, len(source), batch_size):
            pairs = [_split(source[j]) for j in range(i, min(i + batch_size, len(source)))]
            ys = [p[1] for p in pairs]
            y = None if any(v is None for v in ys) else _stack(ys, "labels")
            yield _stack([p[0] for p in pairs], "samples"), y
        return
    for batch in source:
        x, y = _split(batch)
        yield torch.as_tensor(x), (None if y is None else torch.as_tensor(y))


def iter_batches(
    source, *, max_batches: int | None = None, max_samples: int | None = None, batch_size: int = 32
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(x, y)`` batches of ``source`` (see the module docstring), in order.

    ``max_samples`` cuts the last batch so exactly that many samples are seen (when the source
    has them); ``max_batches`` stops after that many batches. Raises ``UserError`` for an empty
    source or one whose items are not tensors / pairs."""
    if source is None:
        raise UserError("no calibration data: pass calib=... (a Dataset, DataLoader, tensor or DataSplits)")
    seen = batches = 0
    for x, y in _source_batches(source, batch_size):
        if max_batches is not None and batches >= max_batches:
            return
        if max_samples is not None:
            if seen >= max_samples:
                return
            if seen + x.shape[0] > max_samples:
                x = x[: max_samples - seen]
                y = None if y is None else y[: max_samples - seen]
        seen += int(x.shape[0])
        batches += 1
        yield x, y
    if batches == 0:
        raise UserError("calibration data is empty: give at least one sample")
