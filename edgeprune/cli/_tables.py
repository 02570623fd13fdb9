"""Rich tables of the library's row functions, for the CLI's terminal output.

Consumes: a build report (``edgeprune.report.summary_header``/``summary_rows``) or a weight
sparsity report (``edgeprune.prune.sparsity.report_rows``). Produces: ``rich.table.Table`` objects;
the library computes the rows, only this layer knows about rich.
"""

from __future__ import annotations

from typing import Any


def _table(title: str, header: list[str], rows: list[list[str]]):
    from rich.table import Table  # lazily: `edgeprune --help` stays quick

    t = Table(title=title)
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*row)
    return t


def summary_table(report: dict[str, Any]):
    """The build summary, titled with the model and target."""
    from ..report import summary_header, summary_rows

    target = (report.get("target") or {}).get("name", "?")
    title = f"edgeprune build: {report.get('model', '?')} → {target}"
    return _table(title, summary_header(report), summary_rows(report))


def sparsity_table(report: dict, title: str = "weight sparsity"):
    """A weight sparsity report (``sparsity_report``) per layer and in total."""
    from ..prune.sparsity import REPORT_HEADER, report_rows

    return _table(title, list(REPORT_HEADER), report_rows(report))
