"""Crash-safe checkpoints of a prune -> recover run, and resuming from the last complete one.

Consumes: the state a run hands over after every pruning step and every N recovery epochs (JSON-able
metadata: step, plan chain, search log, loop counters; tensors: model weights, optimizer and sampler
state), the torch RNG state of every rank, and a ``run`` description (the flags that determine the
result) that a resume must match.
Produces: ``ROOT/ckpt-NNNNNN/`` directories holding ``state.pt`` (tensors only, read back with
``torch.load(weights_only=True)``), ``meta.json`` and ``manifest.json`` (format, world size, run,
sha256 of the two files). A checkpoint is written into a temporary sibling directory and renamed
into place, so a directory under its final name is complete; a kill during a write leaves the
previous checkpoint as the newest. The ``keep`` newest are kept.

Rank 0 alone writes; every rank takes part in ``save`` (it gathers RNG states), so call it on all
ranks. ``load_latest`` checks the manifest and raises ``CheckpointError`` naming the bad file.
The active checkpointer of a run is ambient (``use`` / ``active``), so the loops deep inside a
command pick it up without every layer in between passing it along.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import distributed
from .errors import UserError
from .fsutil import atomic_dir

FORMAT = 1
PREFIX = "ckpt-"
FILES = ("state.pt", "meta.json")


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or from a different run or world size."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: where it was, its metadata and its tensors, and this rank's RNG state."""

    path: Path
    meta: dict
    tensors: dict
    rng: torch.Tensor | None = None
    world_size: int = 1


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (also the build manifest's file hashes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _complete(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[len(PREFIX) :]))


def write(root: str | Path, meta: dict, tensors: dict, rngs: list, run: dict, keep: int = 2) -> Path:
    """Write one checkpoint under ``root`` (next sequence number) atomically; prune to ``keep``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    done = _complete(root)
    seq = int(done[-1].name[len(PREFIX) :]) + 1 if done else 1
    final = root / f"{PREFIX}{seq:06d}"
    with atomic_dir(final) as tmp:  # written beside it, renamed into place when complete
        torch.save({"tensors": tensors, "rng": list(rngs)}, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        manifest = {
            "format": FORMAT,
            "world_size": len(rngs),
            "run": run,
            "sha256": {name: sha256_file(tmp / name) for name in FILES},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    for old in _complete(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f".{PREFIX}*.tmp"):  # an earlier run's interrupted write
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete, delete its directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({type(e).__name__}); delete its directory") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object; delete its directory")
    return obj


def load_latest(root: str | Path, world_size: int, run: dict | None = None, rank: int = 0) -> Checkpoint:
    """The newest complete checkpoint under ``root``, verified; ``CheckpointError`` naming the file if not usable.

    ``world_size`` must equal the one that wrote it (RNG streams and data shards are per rank);
    ``run`` (when given) must equal the stored run description key by key."""
    root = Path(root)
    done = _complete(root)
    if not done:
        raise CheckpointError(
            f"{root}: no complete checkpoint (a run writes {PREFIX}NNNNNN/ there after every pruning step); "
            "check the --resume directory"
        )
    path = done[-1]
    manifest = _read_json(path / "manifest.json")
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path / 'manifest.json'}: format {manifest.get('format')!r}, expected {FORMAT}")
    for name in FILES:
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing; the checkpoint is incomplete, delete {path}")
        if sha256_file(f) != manifest.get("sha256", {}).get(name):
            raise CheckpointError(f"{f}: contents do not match the manifest checksum (corrupt); delete {path}")
    stored = int(manifest.get("world_size", 0))
    if stored != world_size:
        raise CheckpointError(
            f"{path}: written by a run of {stored} process(es), this run has {world_size}; "
            f"resume with the same number of processes (--nproc {stored})"
        )
    if run is not None and manifest.get("run") != run:
        old = manifest.get("run") or {}
        diff = sorted(k for k in set(old) | set(run) if old.get(k) != run.get(k))
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {run.get(k)!r}" for k in diff[:4])
        raise CheckpointError(f"{path}: written by a different run ({shown}); resume with the same flags")
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(f"{path / 'state.pt'}: cannot load ({type(e).__name__}); delete {path}") from None
    meta = _read_json(path / "meta.json")
    rngs = state.get("rng") or [None] * stored
    return Checkpoint(path, meta, state.get("tensors", {}), rngs[rank], stored)


@dataclass
class Checkpointer:
    """Where a run checkpoints, how often, what it resumes from, and the run description to match.

    ``every_epochs``: also checkpoint inside a recovery every N epochs (0: only after steps)."""

    root: Path
    run: dict = field(default_factory=dict)
    every_epochs: int = 1
    keep: int = 2
    resume_from: Checkpoint | None = None
    written: list = field(default_factory=list)

    def take_resume(self) -> Checkpoint | None:
        """The checkpoint to resume from, once (later calls get None: the run has moved past it)."""
        ck, self.resume_from = self.resume_from, None
        return ck

    def save(self, meta: dict, tensors: dict) -> Path | None:
        """Collective: gather every rank's RNG state, rank 0 writes, all ranks wait for the write."""
        rngs = distributed.all_gather_object(torch.get_rng_state())
        path = None
        if distributed.is_main():
            path = write(self.root, meta, _cpu(tensors), rngs, self.run, self.keep)
            self.written.append(path)
        distributed.barrier()
        return path

    def wants_epoch(self, epoch: int) -> bool:
        return self.every_epochs > 0 and epoch % self.every_epochs == 0


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


_active: contextvars.ContextVar[Checkpointer | None] = contextvars.ContextVar("edgeprune_checkpointer", default=None)


@contextlib.contextmanager
def use(checkpointer: Checkpointer | None) -> Iterator[Checkpointer | None]:
    """Make ``checkpointer`` the run's active one for the block."""
    token = _active.set(checkpointer)
    try:
        yield checkpointer
    finally:
        _active.reset(token)


def active() -> Checkpointer | None:
    """The checkpointer of the current run, or None (no checkpoints)."""
    return _active.get()
