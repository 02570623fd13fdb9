"""Library loops report progress events and draw nothing; the CLI draws them as bars on a terminal only.

Consumes: the digits data, the trained demo CNN. Produces: failures when recovery, calibration or a
pruning schedule stop reporting through ``edgeprune.progress.Progress``, write to the terminal
themselves, or when ``edgeprune quantize`` stops showing its bar on a terminal (or shows it in a pipe).
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import torch
from torch.utils.data import Subset

import edgeprune as ep
from edgeprune.data import DataSplits

ROOT = Path(__file__).resolve().parents[2]


def _subset(d: DataSplits, n: int) -> DataSplits:
    return DataSplits(Subset(d.train, range(n)), Subset(d.val, range(n)), d.test, d.num_classes, d.input_shape)


def _runs(events):
    """``[(description, total, advanced, statuses)]`` for each start..close run of ``events``."""
    runs, cur = [], None
    for e in events:
        if e[0] == "start":
            assert cur is None, f"start inside an open run: {events}"
            cur = [e[2], e[1], 0, []]
        elif e[0] == "advance":
            cur[2] += e[1]
            cur[3] += [e[2]] if e[2] else []
        else:
            runs.append(tuple(cur))
            cur = None
    assert cur is None, "a run was never closed"
    return runs


def test_recovery_reports_every_batch_and_draws_nothing(digits, trained_demo_cnn, progress_events, capsys):
    from edgeprune.recover import finetune

    finetune(trained_demo_cnn, _subset(digits, 64), epochs=2, batch_size=32, progress=progress_events)
    [(desc, total, advanced, statuses)] = _runs(progress_events.events)
    assert (desc, total, advanced) == ("recover", 4, 4)
    assert [s.split(" loss ")[0] for s in statuses] == ["epoch 1/2"] * 2 + ["epoch 2/2"] * 2
    assert capsys.readouterr() == ("", "")


def test_calibration_reports_every_batch_of_every_pass(digits, trained_demo_cnn, progress_events, capsys):
    ep.quantize(trained_demo_cnn, digits, method="percentile", calib_n=128, batch_size=64, progress=progress_events)
    # two batches, seen by the min/max pass and again by the histogram pass
    assert _runs(progress_events.events) == [("calibrating", 4, 4, [])]
    assert capsys.readouterr() == ("", "")


def test_a_schedule_reports_each_recovery_step(digits, trained_demo_cnn, progress_events, capsys):
    from edgeprune.prune.schedule import prune_structured

    prune_structured(
        trained_demo_cnn,
        _subset(digits, 64),
        torch.zeros(1, *digits.input_shape),
        ratio=0.5,
        schedule="linear",
        steps=2,
        finetune_epochs=1,
        progress=progress_events,
    )
    runs = _runs(progress_events.events)
    assert [(d, t, a) for d, t, a, _ in runs] == [("step 1/2", 2, 2), ("step 2/2", 2, 2)]
    assert capsys.readouterr() == ("", "")


def _quantize_cli(model_dir: Path, out: Path, *, tty: bool) -> str:
    """stderr of ``edgeprune quantize`` run with stderr on a pseudo-terminal (``tty``) or a pipe."""
    argv = [sys.executable, "-m", "edgeprune.cli.main", "quantize", "--model", str(model_dir), "--calib", "digits"]
    argv += ["--calib-n", "256", "--out", str(out), "--force"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", "COLUMNS": "100"}
    if not tty:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stderr
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        r = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=slave, timeout=300)
    finally:
        os.close(slave)
    reader.join(timeout=30)
    os.close(master)
    assert r.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_the_cli_draws_the_calibration_bar_on_a_terminal_only(trained_demo_cnn_dir, tmp_path):
    assert "calibrating" in _quantize_cli(trained_demo_cnn_dir, tmp_path / "a", tty=True)
    assert "calibrating" not in _quantize_cli(trained_demo_cnn_dir, tmp_path / "b", tty=False)
