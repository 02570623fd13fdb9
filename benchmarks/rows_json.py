"""The ``--json`` output of the benchmark scripts that print to stdout or write a file.

Consumes: a benchmark's rows (JSON-able) and the ``--json`` value. Produces: the rows as indented
JSON on stdout (``-``) or in that file (parent folders made, a trailing newline); for the coverage
reports, the count of rows per ``status``.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_rows(rows, dest: str, indent: int) -> None:
    """``rows`` as JSON to stdout when ``dest`` is ``-``, else to the file ``dest``."""
    text = json.dumps(rows, indent=indent)
    if dest == "-":
        print(text)
    else:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_text(text + "\n")


def status_counts(rows) -> dict[str, int]:
    """{status: rows with it}, the last row of the coverage reports (op_coverage, hf_coverage)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts
