"""Renders library progress events (``edgeprune.progress.Progress``) as a rich bar on stderr.

Consumes: ``start``/``advance``/``close`` events from library loops. Produces: a transient rich
progress bar on stderr when it is a terminal, nothing otherwise (CI logs stay clean).
"""

from __future__ import annotations

import sys

from ..progress import NO_PROGRESS, Progress


class RichProgress:
    """One transient bar per ``start``; ``close`` removes it."""

    def __init__(self) -> None:
        self._bar = None
        self._task = None

    def start(self, total: int, description: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self.close()
        self._bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(file=sys.stderr),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, status="")

    def advance(self, n: int = 1, status: str | None = None) -> None:
        if self._bar is None:
            return
        self._bar.advance(self._task, n)
        if status is not None:
            self._bar.update(self._task, status=status)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def renderer(enabled: bool | None = None) -> Progress:
    """A rich renderer when ``enabled`` (None: when stderr is a terminal), else the no-op one."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return RichProgress() if enabled else NO_PROGRESS
