"""Scale-out flags of the commands that train (``prune``, ``train``, and ``build`` through the same calls).

Consumes: parsed flags (``--nproc``, ``--device``, ``--lr-scaling``, ``--batch-size``, ``--workers``,
``--resume``, ``--checkpoint-every``) and the command line. Produces: the re-launch of a command under
``torch.distributed.run`` (``relaunch``), and ``scaled``, the context a training command's body runs in:
this process's ``World``, the learning rate for it, the run's active ``Checkpointer`` (resuming from
``--resume DIR``), and outputs by rank: rank 0 writes into the staging directory that replaces ``--out``
when the body succeeds (``common.staged_out``) and prints; other ranks write into a scratch directory
that is deleted and print nothing, so one code path serves every rank. Checkpoints live in
``--out/checkpoints`` while the run lasts (a killed run leaves them for ``--resume``) and are moved into
the staging directory before it is published.

A command uses it as ``prune`` and ``train`` do::

    code = _scale.relaunch(args)          # --nproc N: run N copies under torch.distributed.run
    if code is not None:
        return code
    with _scale.scaled(args, print_json, batch_size=args.batch_size) as run:
        ...  # train with lr=run.lr; write into run.out; print with run.print_json
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import EXIT_USAGE, check_at_least, input_paths, staged_out
from .common import check_out as check_out_dir

# Flags that do not change the numbers a run produces (left out of the run a resume must match).
_NOT_RESULT = {
    "out",
    "force",
    "json",
    "resume",
    "nproc",
    "device",
    "checkpoint_every",
    "workers",
    "verbose",
    "no_progress",
    "run",
    "argv",
    "command",
    "recover_overrides",
}


def add_arguments(p, *, checkpoints: bool, batch_size: bool) -> None:
    """Add the scale-out flags to a subcommand parser."""
    g = p.add_argument_group("scaling out (torchrun, devices, checkpoints)")
    g.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="run as N data-parallel processes on this machine (re-launches under torch.distributed.run)",
    )
    g.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where training runs: cuda (one GPU per process), cpu, or auto (cuda when available; default)",
    )
    # one add_argument per flag on purpose: each flag's name, type, default and help are its own
    g.add_argument(
        "--lr-scaling",
        choices=("linear", "none"),
        default="linear",
        help="learning rate with N processes: linear (x N, the effective batch grows N times; default) or none",
    )
    if batch_size:
        g.add_argument("--batch-size", type=int, default=32, metavar="B", help="batch size per process (default 32)")
    g.add_argument(
        "--workers", type=int, default=0, metavar="W", help="DataLoader worker processes per process (default 0)"
    )
    if checkpoints:
        g.add_argument(
            "--resume",
            metavar="DIR",
            help="continue the run whose --out was DIR from its last complete checkpoint (DIR/checkpoints)",
        )
        g.add_argument(
            "--checkpoint-every",
            type=int,
            default=1,
            metavar="N",
            help="checkpoint every N recovery epochs as well as after every step (0: steps only; default 1)",
        )


def relaunch(args) -> int | None:
    """Exit code of the command re-run as ``--nproc`` processes, or None to run here."""
    from .. import distributed

    check_at_least(("--nproc", args.nproc, 1))
    distributed.resolve_device(args.device)  # --device cuda without CUDA fails before anything starts
    argv = getattr(args, "argv", None)
    if argv is None:
        argv = sys.argv[1:]
    return distributed.launch_if_requested(distributed.strip_flag(argv, "--nproc"), args.nproc)


def setup(args):
    """Join the torchrun process group (if any) on ``--device``; check the loop flags; return the World."""
    from .. import distributed

    check_at_least(("--batch-size", getattr(args, "batch_size", 1), 1), ("--workers", args.workers, 0))
    check_at_least(("--checkpoint-every", getattr(args, "checkpoint_every", 0), 0), unit="epochs")
    return distributed.setup(args.device)


def describe(world, batch_size: int, lr: float, scaled: float, rule: str) -> str:
    """The one line rank 0 prints about a data-parallel run."""
    from .. import distributed

    return (
        f"data-parallel: {world.size} processes ({world.backend} on {world.device}); batch {batch_size} per process, "
        f"effective batch {distributed.effective_batch(batch_size, world)}; lr {scaled:g} "
        f"({lr:g} with --lr-scaling {rule})"
    )


def run_description(args) -> dict:
    """The flags that determine a run's result (what a resumed run must repeat)."""
    return {
        k: v
        for k, v in sorted(vars(args).items())
        if k not in _NOT_RESULT and (v is None or isinstance(v, (str, int, float, bool, list, tuple)))
    }


def checkpointer(args, world, run: dict):
    """The run's Checkpointer in ``--out/checkpoints``, loaded from ``--resume DIR`` when given."""
    from .. import checkpoint

    resume = None
    if args.resume:
        resume = checkpoint.load_latest(Path(args.resume) / "checkpoints", world.size, run, world.rank)
    return checkpoint.Checkpointer(
        Path(args.out) / "checkpoints", run=run, every_epochs=args.checkpoint_every, resume_from=resume
    )


def check_out(args) -> None:
    """Fail early, on every rank, for an ``--out`` that rank 0 would refuse later."""
    check_out_dir(args.out, args.force or _resuming_in_place(args), inputs=input_paths(args))


def _resuming_in_place(args) -> bool:
    resume = getattr(args, "resume", None)
    return bool(resume) and Path(resume).resolve() == Path(args.out).resolve()


@contextlib.contextmanager
def rank_outputs(args, world, print_json):
    """``(out dir, print_json)`` for this rank: rank 0 a staging directory published as ``--out`` when
    the block succeeds; other ranks a scratch directory, deleted after, with stdout/stderr muted."""
    if world.main:
        # resuming in place replaces the run's own --out (its checkpoints are carried over)
        with staged_out(args.out, args.force or _resuming_in_place(args), inputs=input_paths(args)) as tmp:
            yield tmp, print_json
            _carry_checkpoints(Path(args.out), tmp)
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"edgeprune-rank{world.rank}-"))
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield scratch, (lambda obj: None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _carry_checkpoints(out: Path, staging: Path) -> None:
    """Move the run's ``out/checkpoints`` into the staging directory that is about to replace ``out``."""
    ckpts = out / "checkpoints"
    if ckpts.is_dir() and not (staging / "checkpoints").exists():
        os.replace(ckpts, staging / "checkpoints")


@dataclass
class Scaled:
    """What a command's body needs on this rank: the world, its learning rate, and where to write/print."""

    world: Any
    lr: float
    out: Path
    print_json: Callable[[Any], None]


@contextlib.contextmanager
def scaled(args, print_json, *, batch_size: int) -> Iterator[Scaled]:
    """Run a training command's body on this rank of a (possibly) data-parallel run.

    Joins the process group on ``--device``, checks ``--out`` on every rank, makes the run's
    checkpointer active (commands with ``--resume``), scales ``--lr``, prints the batch line on rank 0,
    routes outputs by rank (``rank_outputs``), turns a lost rank into one error line and exit 2, and
    leaves the process group after rank 0 has written everything."""
    from .. import checkpoint, distributed

    world = setup(args)
    ok = False
    try:
        check_out(args)
        ck = checkpointer(args, world, run_description(args)) if hasattr(args, "resume") else None
        lr = distributed.scaled_lr(args.lr, args.lr_scaling, world)
        if world.distributed and world.main:
            print(describe(world, batch_size, args.lr, lr, args.lr_scaling), file=sys.stderr)
        with rank_outputs(args, world, print_json) as (prepare, printer), checkpoint.use(ck):
            yield Scaled(world, lr, prepare, printer)
        ok = True
    except distributed.DistributedError as e:
        abort(e)
    finally:
        finish(world, ok)


def abort(error: Exception) -> None:
    """Print the error and leave at once, skipping destructors: after a peer died, DDP's and the process
    group's destructors wait for it, and this rank would hang instead of exiting with the message."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_USAGE)


def finish(world, ok: bool) -> None:
    """Leave the process group; after a success all ranks first wait until rank 0 has written everything."""
    from .. import distributed

    if world.distributed and ok:
        distributed.barrier()
    distributed.shutdown()


__all__ = [
    "scaled",
    "Scaled",
    "add_arguments",
    "relaunch",
    "setup",
    "describe",
    "run_description",
    "checkpointer",
    "check_out",
    "rank_outputs",
    "finish",
    "abort",
]
