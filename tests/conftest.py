"""Shared pytest fixtures for the whole suite.

Consumes: the shipped digits data and the demo CNN. Produces fixtures:
  ``digits``                  session ``DataSplits`` of ``ep.data.load("digits")``;
  ``trained_demo_cnn_dir``    session path of a saved (``ep.save``) demo CNN trained on digits with
                              seed 0, cached under ``build/test-cache/`` keyed by a hash of the
                              model/data/io/training source, the data file, the torch version and the
                              recipe below, so a stale cache is never used and the suite trains once;
  ``trained_demo_cnn``        a fresh ``nn.Module`` loaded from that directory for each test (tests may
                              mutate it freely); its training metrics are in ``.edgeprune_metadata``;
  ``run_cli``                 ``run_cli(*argv) -> CliResult(code, out, err)`` calling
                              ``edgeprune.cli.main.main`` in-process;
  ``tmp_out``                 a not-yet-existing output directory path under ``tmp_path``.
It also sets EDGEPRUNE_MIN_MACS_PER_THREAD=0 for the whole run (see below).
Other engineers add fixtures in their own ``tests/python/conftest_*.py`` modules.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

# Layers split every call over the threads asked for, however small (by default calls under
# ~1M multiply-adds a thread stay on one: csrc/layers/layers.h), so the small test shapes still
# check that thread splits change no bit. Read once by the core, before any layer call.
os.environ["EDGEPRUNE_MIN_MACS_PER_THREAD"] = "0"

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "test-cache"
# The recipe of the cached model. Part of the cache key.
DEMO_RECIPE = {"spec": "edgeprune:demo-cnn", "data": "digits", "epochs": 10, "seed": 0}


def _source_hash() -> str:
    import torch

    h = hashlib.sha256()
    pkg = ROOT / "edgeprune"
    files = sorted(
        [
            *(pkg / "models").rglob("*.py"),
            *(pkg / "data").rglob("*.py"),
            pkg / "data" / "digits.npz",
            pkg / "io.py",
            pkg / "fsutil.py",
        ]
    )
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    h.update(repr(sorted(DEMO_RECIPE.items())).encode())
    h.update(torch.__version__.encode())
    return h.hexdigest()[:16]


def train_demo_cnn(out_dir: Path, epochs: int = DEMO_RECIPE["epochs"], seed: int = DEMO_RECIPE["seed"]) -> Path:
    """Build, train and save the demo CNN the way ``edgeprune train`` does (seeded before build)."""
    import torch

    import edgeprune as ep

    data = ep.data.load(DEMO_RECIPE["data"], seed=seed)
    torch.manual_seed(seed)
    model = ep.models.build(DEMO_RECIPE["spec"], num_classes=data.num_classes)
    model, metrics = ep.models.train(model, data, epochs=epochs, seed=seed, progress=False)
    ep.save(model, out_dir, metadata={"train": metrics, "data": DEMO_RECIPE["data"]})
    return out_dir


@pytest.fixture(scope="session")
def digits():
    import edgeprune as ep

    return ep.data.load("digits")


@pytest.fixture(scope="session")
def trained_demo_cnn_dir() -> Path:
    path = CACHE / f"demo-cnn-{_source_hash()}"
    if not (path / "model.json").is_file():
        # Train into a private directory, then rename it into place only if no concurrent test
        # run got there first (renaming onto a non-empty directory fails): a directory other
        # processes may be reading is never replaced.
        mine = CACHE / f".{path.name}.{os.getpid()}"
        train_demo_cnn(mine)
        try:
            os.rename(mine, path)
        except OSError:
            shutil.rmtree(mine, ignore_errors=True)
    return path


@pytest.fixture
def trained_demo_cnn(trained_demo_cnn_dir):
    import edgeprune as ep

    return ep.load(trained_demo_cnn_dir)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run ``edgeprune ARGV...`` in-process; returns ``CliResult(code, out, err)``."""
    from edgeprune.cli.main import main

    def run(*argv: str) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse errors and --version exit
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(int(code), captured.out, captured.err)

    return run


@pytest.fixture
def tmp_out(tmp_path) -> Path:
    return tmp_path / "out"


class ProgressEvents:
    """An ``edgeprune.progress.Progress`` that keeps every event: ``("start", total, description)``,
    ``("advance", n, status)``, ``("close",)``."""

    def __init__(self):
        self.events = []

    def start(self, total, description):
        self.events.append(("start", total, description))

    def advance(self, n=1, status=None):
        self.events.append(("advance", n, status))

    def close(self):
        self.events.append(("close",))


@pytest.fixture
def progress_events() -> ProgressEvents:
    return ProgressEvents()
