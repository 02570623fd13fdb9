"""`edgeprune prune --explain` and `--ignore` as a user meets them on the command line.

Consumes: a model file written to a temp dir (one layer whose channels must stay). Produces:
assertions on the JSON listing of pinned groups (group, layers, reason) and on the one-line exit-2
error for an --ignore name that matches nothing.
"""

from __future__ import annotations

import json

MODEL = """
import torch
import torch.nn as nn


class Net(nn.Module):
    input_shape = (3, 8, 8)

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.c = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.b(torch.relu(self.a(x))))
        h = h.view(h.shape[0], 16, -1).mean(-1).view(-1, 16, 1, 1)  # 16 hard-coded: b keeps its channels
        return self.fc(self.c(h).flatten(1))


def net():
    return Net()
"""


def _spec(tmp_path):
    f = tmp_path / "net.py"
    f.write_text(MODEL)
    return f"{f}:net"


def test_explain_lists_pinned_groups_with_layers_and_reason(run_cli, tmp_path):
    res = run_cli(
        "prune",
        "--model",
        _spec(tmp_path),
        "--ratio",
        "0.5",
        "--round-to",
        "1",
        "--out",
        tmp_path / "o",
        "--json",
        "--explain",
    )
    assert res.code == 0, res.err
    pinned = {p["group"]: p for p in json.loads(res.out)["pinned"]}
    assert "hard-codes size 16" in pinned["b"]["reason"] and "b" in pinned["b"]["layers"]
    assert "model output" in pinned["fc"]["reason"]
    assert "a" not in pinned  # a is pruned: it is not listed


def test_ignore_name_that_matches_nothing_exits_2_with_close_names(run_cli, tmp_path):
    res = run_cli("prune", "--model", _spec(tmp_path), "--ratio", "0.5", "--out", tmp_path / "o", "--ignore", "bb")
    assert res.code == 2
    lines = [line for line in res.err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: --ignore: ignore='bb' matches no prunable layer")
    assert "close names: b" in lines[0]
