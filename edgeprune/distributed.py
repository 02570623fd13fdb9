"""Data-parallel runs under ``torchrun``: the process group, the rank's device, sharding and the launcher.

Consumes: the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...),
a device choice (``cpu``, ``cuda`` or ``auto``) and, for the launcher, a command line and a process count.
Produces: the ``World`` this process belongs to (rank, size, device, backend), collectives that turn a
lost peer into one clear ``DistributedError`` instead of a hang, a batch sampler that gives every rank
its slice of the same global batches, DDP wrapping, and ``launch_if_requested`` which re-runs a command
under ``torch.distributed.run`` on this machine.

Invariants:
- Outside ``torchrun`` (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) nothing is initialised and every helper
  is the single-process identity: the same code path runs with and without a process group.
- Rank 0 decides and writes; every other rank receives decisions through ``broadcast_object``.
- Every collective waits at most ``timeout_seconds()`` (``EDGEPRUNE_DIST_TIMEOUT``, default 60 s), so a
  rank that died makes the others fail within that time with a message saying so.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import UserError

TIMEOUT_ENV = "EDGEPRUNE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
DEVICES = ("auto", "cpu", "cuda")


class DistributedError(UserError):
    """A data-parallel run cannot go on: bad environment, or another rank stopped answering."""


@dataclass(frozen=True)
class World:
    """Where this process stands in the run: rank, number of ranks, its device and the backend."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


_world = World()


def timeout_seconds() -> float:
    """How long a collective waits for the other ranks before failing (``EDGEPRUNE_DIST_TIMEOUT``)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise DistributedError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds, e.g. 60") from None
    if not value > 0:
        raise DistributedError(f"{TIMEOUT_ENV}={raw!r}: must be > 0 seconds")
    return value


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"environment {name}={raw!r}: expected an integer (set by torchrun)") from None


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the environment; ``(0, 1, 0)`` outside torchrun."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if size < 1 or not 0 <= rank < size:
        raise DistributedError(f"environment RANK={rank} WORLD_SIZE={size}: need 0 <= RANK < WORLD_SIZE")
    return rank, size, local


def resolve_device(name: str, local_rank: int = 0) -> str:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is usable, else ``cpu``; ``cuda`` without CUDA fails."""
    if name not in DEVICES:
        raise UserError(f"--device {name}: unknown; choose one of {', '.join(DEVICES)}")
    has_cuda = torch.cuda.is_available() and torch.cuda.device_count() > 0
    if name == "cuda" and not has_cuda:
        raise UserError("--device cuda: this torch build or machine has no usable CUDA device; use --device cpu")
    if name == "cpu" or not has_cuda:
        return "cpu"
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def setup(device: str = "auto") -> World:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU) and return this ``World``.

    Without torchrun this only resolves the device. Calling it again returns the current world."""
    global _world
    import torch.distributed as dist

    rank, size, local = env_world()
    dev = resolve_device(device, local)
    if size > 1 and not (dist.is_available() and dist.is_initialized()):
        if not dist.is_available():
            raise DistributedError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        backend = "nccl" if dev.startswith("cuda") else "gloo"
        if dev.startswith("cuda"):
            torch.cuda.set_device(torch.device(dev))
        with translate_errors("joining the process group"):
            dist.init_process_group(
                backend, timeout=datetime.timedelta(seconds=timeout_seconds()), rank=rank, world_size=size
            )
        _world = World(rank, size, local, dev, backend)
    elif size == 1:
        _world = World(0, 1, 0, dev, None)
    return _world


def current() -> World:
    """The world set up by ``setup`` (a single CPU process before that)."""
    return _world


def is_main() -> bool:
    """True on rank 0 (and in a single-process run): the rank that writes files and prints."""
    return _world.main


def shutdown() -> None:
    """Leave the process group (a no-op outside torchrun); the world is a single process again."""
    global _world
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    _world = World(device=_world.device)


@contextlib.contextmanager
def translate_errors(what: str, *, only_collective: bool = False) -> Iterator[None]:
    """Turn a failed or timed-out collective into one ``DistributedError`` line naming this rank.

    ``only_collective``: the block also runs other code (a training epoch), so translate only
    errors that come from the process group and let the others through unchanged."""
    try:
        yield
    except DistributedError:
        raise
    except (RuntimeError, OSError, ValueError) as e:
        if only_collective and not (_world.distributed and _looks_distributed(e)):
            raise
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(
            f"rank {_world.rank} of {_world.size}: {what} failed: another rank stopped or stopped answering "
            f"within {timeout_seconds():g} s ({detail[:200]}); see that rank's log, then rerun with --resume"
        ) from None


def _looks_distributed(e: BaseException) -> bool:
    import torch.distributed as dist

    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = f"{type(e).__name__} {e}".lower()
    keys = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "store", "socket", "barrier")
    return any(k in text for k in keys)


def barrier() -> None:
    """Wait for every rank (a dead one makes it fail at once: its connections close)."""
    if not _world.distributed:
        return
    import torch.distributed as dist

    with translate_errors("a barrier"):
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (a plan, a decision): rank 0 decides, the others follow."""
    if not _world.distributed:
        return obj
    import torch.distributed as dist

    box = [obj if _world.rank == src else None]
    with translate_errors("broadcasting a decision"):
        dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's ``obj``, in rank order (a single-item list outside torchrun)."""
    if not _world.distributed:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * _world.size
    with translate_errors("gathering state"):
        dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64, so counts stay exact)."""
    if not _world.distributed:
        return [float(v) for v in values]
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if _world.backend == "nccl":
        t = t.to(_world.device)
    with translate_errors("summing over ranks"):
        dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when distributed (gradients averaged over ranks), else itself."""
    if not _world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [torch.device(_world.device).index] if _world.device.startswith("cuda") else None
    with translate_errors("wrapping the model in DDP"):
        return DDP(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def rank_slice(n: int, world: World | None = None) -> range:
    """This rank's contiguous share of ``n`` items (evaluation shards; sizes differ by at most one)."""
    w = world or _world
    return range(w.rank * n // w.size, (w.rank + 1) * n // w.size)


class GlobalBatchSampler(torch.utils.data.Sampler):
    """This rank's part of seeded global batches: every rank draws the same permutation of the data,
    cuts it into global batches of ``batch_size * world.size`` and takes slice ``rank`` of each.

    So the samples of one optimisation step are the same whatever the world size; only how they are
    spread over ranks changes. A short last global batch is padded from the start of the permutation
    to a multiple of the world size (every rank runs the same number of steps, as DDP needs). The
    permutation comes from ``generator`` (one ``randperm`` per epoch), whose state is a checkpoint's.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, world: World | None = None):
        self.n, self.batch_size, self.generator = int(n), int(batch_size), generator
        self.world = world or _world

    def __len__(self) -> int:
        g = self.batch_size * self.world.size
        return (self.n + g - 1) // g if self.n else 0

    def __iter__(self):
        if not self.n:
            return
        perm = torch.randperm(self.n, generator=self.generator).tolist()
        size, rank = self.world.size, self.world.rank
        g = self.batch_size * size
        for start in range(0, self.n, g):
            batch = perm[start : start + g]
            if len(batch) < g:
                want = -(-len(batch) // size) * size
                batch = batch + [perm[i % self.n] for i in range(want - len(batch))]
            per = len(batch) // size
            yield batch[rank * per : (rank + 1) * per]


def launch_if_requested(argv: Sequence[str], nproc: int | None) -> int | None:
    """Re-run ``edgeprune <argv>`` as ``nproc`` processes under ``torch.distributed.run`` on this machine.

    Returns ``None`` when there is nothing to launch (``nproc`` unset or 1, or already inside
    torchrun); else the exit code of the run (the first failing rank's code, 0 when all succeed).
    ``argv`` must not contain ``--nproc`` (``strip_flag`` removes it)."""
    if not nproc or nproc <= 1 or "WORLD_SIZE" in os.environ:
        return None
    if nproc > 64:
        raise UserError(f"--nproc {nproc}: more processes than one machine should run; use torchrun directly")
    import uuid

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=int(nproc),
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.2,
        logs_specs=DefaultLogsSpecs(),
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun does: N processes share the cores
    try:
        elastic_launch(config, sys.executable)(*["-m", "edgeprune.cli.main", *argv])
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values()]
        return next((c for c in codes if c and c > 0), 1)
    return 0


def strip_flag(argv: Sequence[str], flag: str) -> list[str]:
    """``argv`` without ``flag VALUE`` / ``flag=VALUE`` (to re-launch a command without ``--nproc``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        if a.startswith(flag + "="):
            continue
        out.append(a)
    return out


def effective_batch(batch_size: int, world: World | None = None) -> int:
    """Samples per optimisation step: the per-rank batch times the number of ranks."""
    return int(batch_size) * (world or _world).size


def scaled_lr(lr: float, rule: str, world: World | None = None) -> float:
    """The learning rate for ``world``: ``linear`` multiplies by the number of ranks, ``none`` keeps it."""
    if rule not in ("linear", "none"):
        raise UserError(f"--lr-scaling {rule}: unknown; choose linear or none")
    return float(lr) * ((world or _world).size if rule == "linear" else 1)


class _GlobalBatchNorm(torch.autograd.Function):
    """Batch norm over the global batch: statistics and their gradients summed over ranks.

    ``torch.nn.SyncBatchNorm`` does this on GPUs only; this one runs on any backend, so a gloo (CPU)
    run normalises exactly as one process with the whole batch would, and a world size changes only
    float rounding. ``x`` is ``[N, C, ...]``."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, stats: list):
        dims = [0, *range(2, x.dim())]
        n_local = x.numel() // x.shape[1]
        local = torch.cat([x.sum(dims), (x * x).sum(dims), x.new_tensor([float(n_local)])])
        total = _all_reduce_tensor(local)
        c = x.shape[1]
        count = total[2 * c]
        mean = total[:c] / count
        var = (total[c : 2 * c] / count - mean * mean).clamp_min(0)
        shape = [1, c] + [1] * (x.dim() - 2)
        invstd = torch.rsqrt(var + eps)
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(xhat, weight, invstd, count)
        ctx.has_weight = weight is not None
        y = xhat * weight.view(shape) if weight is not None else xhat.clone()
        if bias is not None:
            y = y + bias.view(shape)
        stats[:] = [mean.detach(), var.detach(), count.detach()]
        return y

    @staticmethod
    def backward(ctx, dy):
        xhat, weight, invstd, count = ctx.saved_tensors
        dims = [0, *range(2, dy.dim())]
        c = dy.shape[1]
        shape = [1, c] + [1] * (dy.dim() - 2)
        g = dy * weight.view(shape) if ctx.has_weight else dy
        sums = _all_reduce_tensor(torch.cat([g.sum(dims), (g * xhat).sum(dims)]))
        mean_g, mean_gx = sums[:c] / count, sums[c:] / count
        dx = (g - mean_g.view(shape) - xhat * mean_gx.view(shape)) * invstd.view(shape)
        dw = (dy * xhat).sum(dims) if ctx.has_weight and ctx.needs_input_grad[1] else None
        db = dy.sum(dims) if ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None


def _all_reduce_tensor(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    t = t.contiguous()
    with translate_errors("summing batch-norm statistics"):
        dist.all_reduce(t)
    return t


def _global_bn_forward(bn, x):
    if not (bn.training and _world.distributed):
        return type(bn).forward(bn, x)
    bn._check_input_dim(x)
    stats: list = []
    y = _GlobalBatchNorm.apply(x, bn.weight, bn.bias, bn.eps, stats)
    if bn.track_running_stats:
        mean, var, count = stats
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            f = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            unbiased = var * count / (count - 1).clamp_min(1)
            bn.running_mean.mul_(1 - f).add_(mean, alpha=f)
            bn.running_var.mul_(1 - f).add_(unbiased, alpha=f)
    return y


@contextlib.contextmanager
def global_batchnorm(model: nn.Module) -> Iterator[None]:
    """While distributed, batch-norm layers of ``model`` in training mode normalise over the global batch."""
    if not _world.distributed:
        yield
        return
    patched = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in patched:
        m.forward = _bound(m)
    try:
        yield
    finally:
        for m in patched:
            with contextlib.suppress(AttributeError):
                del m.forward


def _bound(bn):
    def forward(x):
        return _global_bn_forward(bn, x)

    return forward
