"""Tests of benchmarks/kernels.py (the issue-6 table): its rows, their arithmetic, and its errors.

Consumes: the benchmark script, run as a subprocess on one small shape with a tiny time budget.
Produces: pass/fail. No assertion is about speed (this machine is shared): only about which rows
the JSON holds and how their numbers relate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"


def run(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("kbench") / "rows.json"
    r = run(
        "--quick", "--shape", "24x40x36", "--sparsity", "0.9", "--min-time", "0.001", "--json", str(out), cwd=out.parent
    )
    assert r.returncode == 0, r.stderr
    assert not (out.parent / "rows.json.tmp").exists()
    return json.loads(out.read_text())


def test_rows_cover_every_kernel_on_the_asked_shape(rows):
    kinds = {r["kernel"] for r in rows}
    assert {"dense_f32", "gemm_s8", "spmm_f32_b1", "spmm_f32_b4", "spmm_s8"} <= kinds
    assert {(r["M"], r["K"], r["N"]) for r in rows} == {(24, 40, 36)}
    sparse = [r for r in rows if r["kernel"] in ("spmm_f32_b1", "spmm_f32_b4", "spmm_s8", "scipy_csr")]
    assert sparse and {r["sparsity"] for r in sparse} == {0.9}
    assert {r["threads"] for r in rows} == {1}, "--quick has no thread rows"
    # sparse int8 is measured on both weight patterns
    assert {r["block"] for r in rows if r["kernel"] == "spmm_s8"} == {"1x4", "1x1"}


def test_row_numbers_agree(rows):
    for r in rows:
        assert r["ms"] > 0 and r["baseline_ms"] > 0
        assert r["ratio"] == pytest.approx(r["baseline_ms"] / r["ms"], rel=2e-3, abs=2e-3)
        assert r["gflops"] == pytest.approx(2.0 * r["M"] * r["K"] * r["N"] / (r["ms"] * 1e6), rel=2e-3, abs=0.01)
        assert r["baseline"].startswith("numpy sgemm") or r["kernel"] == "scipy_csr"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shape", "24x40"], "is not MxKxN"),
        (["--shape", "0x40x36"], "must be positive"),
        (["--sparsity", "1.5"], "is not a sparsity in [0, 1)"),
        (["--min-time", "0"], "--min-time must be positive"),
        (["--isa", "sparc"], "--isa sparc is not supported here"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "rows.json"
    r = run(*args, "--json", str(out), cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and "error" in r.stderr
    assert list(tmp_path.iterdir()) == []
