"""Progress events from library loops, with no rendering here.

Consumes: nothing. Produces: the :class:`Progress` protocol that long loops (training, pruning
schedules, recovery, calibration) take as an argument and report to, :data:`NO_PROGRESS` (the
default: does nothing) and :func:`as_progress`. How a bar looks is the caller's business: the
CLI passes a rich renderer (``edgeprune.cli._progress.RichProgress``); the library never prints.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Progress", "NullProgress", "NO_PROGRESS", "as_progress"]


@runtime_checkable
class Progress(Protocol):
    """What a loop reports: ``start`` once, ``advance`` per unit of work, ``close`` at the end."""

    def start(self, total: int, description: str) -> None: ...

    def advance(self, n: int = 1, status: str | None = None) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Ignores every event (the default when the caller wants no bar)."""

    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, n: int = 1, status: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


NO_PROGRESS = NullProgress()


def as_progress(progress) -> Progress:
    """``progress`` if it is a :class:`Progress`, else the no-op one (``None``/``True``/``False``,
    the old flag: a library loop has no bar of its own to show)."""
    return progress if isinstance(progress, Progress) else NO_PROGRESS
