"""Shared CLI plumbing: exit codes, the one-line usage error, JSON printing, output dirs.

Consumes: values from subcommands. Produces: text on stdout/stderr and exit codes.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_GATE = 3


class UsageError(Exception):
    """Bad input or usage. The message is one line: what, where, how to fix. Exit code 2."""


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
