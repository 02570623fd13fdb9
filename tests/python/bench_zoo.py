"""Test helper: the benchmark's model zoo (benchmarks/models.py), loaded by path for the tests that
run its full-size CNNs (the runtime and TFLite exports of the torchvision-shaped models).

Consumes: benchmarks/models.py. Produces: ``bench_models``, that file as a module (its
``MobileNetV2``, ``LOCAL``, ``EXTRA``, ... classes and tables). Not a product API: tests only.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_models", ROOT / "benchmarks" / "models.py")
bench_models = importlib.util.module_from_spec(_spec)
_saved_path = list(sys.path)
_spec.loader.exec_module(bench_models)
sys.path[:] = _saved_path  # the benchmark puts benchmarks/ first; its kernels.py would shadow a package
