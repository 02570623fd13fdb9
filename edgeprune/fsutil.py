"""Crash-safe file writing: every artifact is written to a temporary name and renamed.

Consumes: bytes/text/JSON and a destination path. Produces: the file at that path, or
nothing at all (an interrupted write never leaves a half file under the final name).

``staged_dir(path, force)`` is the one way a command writes its output directory: it refuses a
non-empty ``path`` without ``force`` before any work, yields an empty temporary sibling, and
only when the block succeeds moves the old ``path`` aside, renames the sibling into place and
deletes the old one. A failure or Ctrl-C leaves the old directory untouched and removes the
sibling. Problems with the destination raise ``OutputError`` (a ``UserError``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import UserError


class OutputError(UserError):
    """The output path cannot be written (exists, not a directory, read-only...). CLI exit 2."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publishable(path: Path, mode: int) -> None:
    # mkstemp/mkdtemp create 0600/0700 entries; an artifact is meant to be copied to a device or
    # shared, so give it the permissions a plain open()/mkdir() would have had.
    path.chmod(mode & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    Use it for writers that want a filename (torch.save, onnx.save, a C library).
    On any exception (including KeyboardInterrupt) the temporary file is removed.
    """
    final = Path(path)
    if final.is_dir():
        raise OutputError(f"{final}: is a directory; give a file path")
    with _creating_next_to(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _publishable(tmp_path, 0o666)
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` over ``final``; an existing ``final`` is moved aside first and deleted after."""
    if not final.exists():
        os.replace(tmp, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    os.replace(final, old / final.name)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old / final.name, final)  # put the old output back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _creating_next_to(final: Path) -> Iterator[None]:
    """An OSError while making ``final``'s parent or a temporary sibling of it becomes one
    OutputError naming ``final`` (not the hidden temporary name)."""
    try:
        yield
    except PermissionError:
        raise OutputError(f"{final}: cannot write in {final.parent} (permission denied); choose another path") from None
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{final}: a parent of it is a file, not a directory; choose another path") from None
    except OSError as e:
        raise OutputError(f"{final}: cannot create it ({e.strerror or e}); choose another path") from None


def _mkdtemp_next_to(final: Path) -> Path:
    with _creating_next_to(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path``."""
    final = Path(path)
    tmp = _mkdtemp_next_to(final)
    try:
        yield tmp
        _publishable(tmp, 0o777)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_out_dir(path: str | os.PathLike, force: bool, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse ``path`` as an output directory if it is a file, non-empty without ``force``, or
    the same as (or a parent of) one of ``inputs``: replacing it would delete that input."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory; choose another path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(f"{out}: is not empty; pass --force (force=True) to replace it or choose another directory")
    if out.is_dir():
        real = out.resolve()
        for given in inputs:
            source = Path(given).resolve()
            if source == real or real in source.parents:
                raise OutputError(
                    f"{out}: holds the input {given}, which replacing it would delete; choose another directory"
                )
    return out


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike, force: bool, inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Check ``path`` (``check_out_dir``), yield an empty sibling, and publish it over ``path`` on success."""
    final = check_out_dir(path, force, inputs)
    with atomic_dir(final) as tmp:
        yield tmp


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
