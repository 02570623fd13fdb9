"""benchmarks/runtime_zoo.py on its smallest classifier, one round: it exports the fp32 and int8
files, runs our runtime, LiteRT and ONNX Runtime on them (after checking they agree) and writes one
row per (precision, runtime) whose ratios are the medians' ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "runtime_zoo.py"


def test_one_classifier_gives_a_row_per_precision_and_runtime(tmp_path):
    out = tmp_path / "rows.json"
    cmd = [sys.executable, str(SCRIPT), "--models", "squeezenet1_1", "--rounds", "2", "--runs", "1", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    rows = json.loads(out.read_text())
    assert {(r["precision"], r["runtime"]) for r in rows} == {
        (p, rt) for p in ("fp32", "int8") for rt in ("edgeprune", "litert", "onnxruntime")
    }
    for p in ("fp32", "int8"):
        ours = next(r for r in rows if r["precision"] == p and r["runtime"] == "edgeprune")
        for r in (r for r in rows if r["precision"] == p):
            assert len(r["rounds_ms"]) == 2 and r["median_ms"] > 0 and r["load_ms"] > 0
            assert abs(r["ratio_vs_ours"] - r["median_ms"] / ours["median_ms"]) < 0.01
            assert r["file"] == {"fp32": {"onnxruntime": "model.onnx"}, "int8": {"onnxruntime": "model.int8.onnx"}}[
                p
            ].get(r["runtime"], "model.tflite" if p == "fp32" else "model.int8.tflite")


def test_an_unknown_model_exits_2_naming_the_choices():
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", "alexnet"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "invalid choice: 'alexnet'" in r.stderr and "efficientnet_b0" in r.stderr
