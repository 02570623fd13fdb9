"""Shared CLI plumbing: exit codes, the one-line usage error, JSON printing, output dirs.

Consumes: values from subcommands. Produces: text on stdout/stderr and exit codes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

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


def prepare_out_dir(path: str | os.PathLike, force: bool) -> Path:
    """Return ``path`` as an empty-or-new directory; refuse a non-empty one without --force."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory; choose another path")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UsageError(f"--out {out} is not empty; pass --force to replace it or choose another directory")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (our errors are one line; library ones may not be)."""
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def flag_error(flag: str, value, e: BaseException) -> UsageError:
    """A UsageError naming the flag and the value it got: `--data missing.npz: file not found`."""
    msg = first_line(e)
    # our loaders' messages often start with the file or spec already; do not say it twice
    if msg.startswith(str(value)) or msg.startswith(repr(str(value))):
        return UsageError(f"{flag} {msg}")
    return UsageError(f"{flag} {value}: {msg}")


def load_model(spec: str, weights: str | None = None, trust_pickle: bool = False, **build_kwargs):
    """Build ``--model`` and load ``--weights`` into it; bad input becomes a one-line UsageError."""
    import edgeprune as ep  # imported here: `edgeprune bench` must start without torch

    try:
        model = ep.models.build(spec, **build_kwargs)
    except ValueError as e:
        raise flag_error("--model", spec, e) from None
    if weights:
        try:
            ep.models.load_weights(model, weights, trust_pickle=trust_pickle)
        except ValueError as e:
            raise flag_error("--weights", weights, e) from None
    return model
