"""The ``--json`` output of the benchmark scripts that print to stdout or write a file.

Consumes: a benchmark's rows (JSON-able) and the ``--json`` value. Produces: the rows as indented
JSON on stdout (``-``) or in that file (parent folders made, a trailing newline).
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
