"""Shared CLI plumbing: exit codes, the one-line usage error, JSON printing, output dirs, model loading,
and the flags several commands spell alike (--trust-code, --device and its SSH companions).

Consumes: values from subcommands. Produces: text on stdout/stderr and exit codes.
Every command writes its ``--out`` through ``staged_out`` (``edgeprune.fsutil.staged_dir``) and
loads ``--model`` through ``load_model`` (which honours ``--trust-code`` / ``--trust-pickle``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .. import fsutil
from ..errors import UserError

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_GATE = 3


# Kept for API compatibility: bad input or usage is a UserError (one line: what, where, how to
# fix), which cli/main.py turns into exit code 2.
UsageError = UserError


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


# argument names that are outputs or not paths read: never counted as inputs of a command
_NOT_INPUTS = {"out", "json", "resume", "argv", "command", "run"}


def input_paths(args) -> list[str]:
    """The paths on the command line that exist (``--model DIR``, ``--plan``, ``--weights``,
    ``--data``, a positional artifact, ...), so ``--out --force`` can refuse to replace a
    directory that holds one. ``--resume`` is left out: resuming in place replaces its own
    ``--out`` on purpose (its checkpoints are carried over)."""
    found = []
    for key, value in vars(args).items():
        if key in _NOT_INPUTS or key.startswith("out"):
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, (str, os.PathLike)) and str(v) and os.path.exists(v):
                found.append(str(v))
    return found


@contextlib.contextmanager
def staged_out(path: str | os.PathLike, force: bool, flag: str = "--out", inputs=()) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path`` that replaces it when the block succeeds.

    A non-empty ``path`` without ``--force``, or one that holds any of ``inputs``
    (``input_paths``), is refused before the block runs; a failure or Ctrl-C inside it leaves the
    old ``path`` untouched (``edgeprune.fsutil.staged_dir``).
    """
    try:
        with fsutil.staged_dir(path, force, inputs) as tmp:
            yield tmp
    except fsutil.OutputError as e:
        raise UsageError(f"{flag} {e}") from None


def check_out(path: str | os.PathLike, force: bool, flag: str = "--out", inputs=()) -> None:
    """Fail fast on an unusable ``--out`` before any long work (``staged_out`` checks again)."""
    try:
        fsutil.check_out_dir(path, force, inputs)
    except fsutil.OutputError as e:
        raise UsageError(f"{flag} {e}") from None


def add_trust_flags(p, pickle: bool = True) -> None:
    """``--trust-code`` (and ``--trust-pickle``) for every subcommand that loads a model."""
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="allow a model directory whose model.json names a Python factory outside edgeprune's registry "
        "(file.py:fn or package.module:fn) to run it",
    )
    if pickle:
        p.add_argument(
            "--trust-pickle", action="store_true", help="allow --weights to be a pickled whole model (runs code)"
        )


def add_device_flags(
    p, *, device_help: str, remote_python_default: str | None, remote_python_help: str, remote_tmp: bool
) -> None:
    """``--device`` and its SSH companions, spelled alike for ``bench`` and ``build``."""
    p.add_argument("--device", default=None, metavar="USER@HOST[:PORT]", help=device_help)
    p.add_argument("--identity", default=None, metavar="KEY", help="with --device: the SSH private key to use")
    p.add_argument("--remote-python", default=remote_python_default, metavar="PATH", help=remote_python_help)
    if remote_tmp:
        p.add_argument(
            "--remote-tmp",
            default=None,
            metavar="DIR",
            help="with --device: where the temp dir goes on the device (default $TMPDIR or /tmp)",
        )
    p.add_argument(
        "--ssh-option",
        action="append",
        default=[],
        metavar="OPT",
        help="with --device: an extra ssh -o option, e.g. UserKnownHostsFile=known_hosts (repeatable)",
    )


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (our errors are one line; library ones may not be)."""
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def check_at_least(*checks: tuple[str, int | float | None, int | float], unit: str = "") -> None:
    """Each ``(flag, value, low)``: a given value below ``low`` is a UsageError
    ``--steps 0: must be >= 1`` (``unit`` appended: ``>= 0 points``). None means the flag was not given."""
    for flag, value, low in checks:
        if value is not None and value < low:
            raise UsageError(f"{flag} {value}: must be >= {low}" + (f" {unit}" if unit else ""))


def flag_error(flag: str, value, e: BaseException) -> UsageError:
    """A UsageError naming the flag and the value it got: `--data missing.npz: file not found`."""
    msg = first_line(e)
    # our loaders' messages often start with the file or spec already; do not say it twice
    if msg.startswith(str(value)) or msg.startswith(repr(str(value))):
        return UsageError(f"{flag} {msg}")
    return UsageError(f"{flag} {value}: {msg}")


def path_error(path, e: BaseException) -> UsageError:
    """A UsageError for a file or directory argument: `mdl: no model.json ...`, the path said once."""
    msg = first_line(e)
    return UsageError(msg if msg.startswith(str(path)) else f"{path}: {msg}")


def load_model(
    spec: str, weights: str | None = None, trust_pickle: bool = False, trust_code: bool = False, **build_kwargs
):
    """Build ``--model`` and load ``--weights`` into it; bad input becomes a one-line UsageError."""
    import edgeprune as ep  # imported here: `edgeprune bench` must start without torch

    try:
        model = ep.models.build(spec, trust_code=trust_code, **build_kwargs)
    except ValueError as e:
        raise flag_error("--model", spec, e) from None
    if weights:
        try:
            ep.models.load_weights(model, weights, trust_pickle=trust_pickle)
        except ValueError as e:
            raise flag_error("--weights", weights, e) from None
    return model


def check_model_fits_data(model, data, model_flag: str, data_flag: str) -> None:
    """Run one sample: the model must accept the data's shape and have an output per class."""
    import torch

    x0, _ = data.train[0]
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            logits = model(torch.as_tensor(x0)[None])
            model.train(was_training)
    except Exception as e:
        raise UsageError(
            f"{model_flag}: does not accept {data_flag} samples of shape {tuple(data.input_shape)} "
            f"({type(e).__name__}: {first_line(e)})"
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] < data.num_classes:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UsageError(
            f"{model_flag}: outputs shape {shape} but {data_flag} has {data.num_classes} classes "
            f"(labels 0..{data.num_classes - 1}); build the model with num_classes={data.num_classes} or fix the labels"
        )
    if not torch.isfinite(logits).all():
        raise UsageError(f"{model_flag}: outputs NaN or infinite values on {data_flag}; check the weights")
