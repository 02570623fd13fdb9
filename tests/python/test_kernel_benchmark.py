"""Tests of benchmarks/kernels.py (the kernel table): its rows, their arithmetic, and its errors.

Consumes: the benchmark script, run as a subprocess on one small shape with a tiny time budget.
Produces: pass/fail. No assertion is about speed (this machine is shared): only about which rows
the JSON holds and how their numbers relate.
"""

from __future__ import annotations

import importlib.util
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
        if "summary" in r:
            continue
        assert r["ms"] > 0 and r["baseline_ms"] > 0
        assert r["ratio"] == pytest.approx(r["baseline_ms"] / r["ms"], rel=2e-3, abs=2e-3)
        assert r["gflops"] == pytest.approx(2.0 * r["M"] * r["K"] * r["N"] / (r["ms"] * 1e6), rel=2e-3, abs=0.01)
        assert r["baseline"].startswith("numpy sgemm") or r["kernel"] == "scipy_csr"


# a (flags, message) table like test_bad_input_exits_2_with_one_line in test_cli_build.py on
# purpose: each lists the inputs of its own command line, so neither can share the other's rows
@pytest.mark.parametrize(
    "args, message",
    [
        (["--shape", "24x40"], "is not MxKxN"),
        (["--shape", "0x40x36"], "must be positive"),
        (["--sparsity", "1.5"], "is not a sparsity in [0, 1)"),
        (["--min-time", "0"], "--min-time must be positive"),
        (["--isa", "sparc"], "--isa sparc is not supported here"),
        (["--model", "vgg"], "invalid choice: 'vgg'"),
        (["--kernel", "conv"], "invalid choice: 'conv'"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "rows.json"
    r = run(*args, "--json", str(out), cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and "error" in r.stderr
    assert list(tmp_path.iterdir()) == []


def load_script():
    spec = importlib.util.spec_from_file_location("bench_kernels", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_model_shapes_follow_the_architectures():
    k = load_script()
    v2 = k.mobilenet_v2()
    # MobileNetV2: 17 blocks, 16 with an expand conv, each with a projection, the head and the FC
    assert len(v2) == 16 + 17 + 1 + 1
    assert v2[:3] == [(16, 32, 112 * 112), (96, 16, 112 * 112), (24, 96, 56 * 56)]
    assert (96, 576, 196) in v2 and (144, 24, 3136) in v2 and v2[-2:] == [(1280, 320, 49), (1000, 1280, 1)]
    v3 = k.mobilenet_v3_large()
    assert v3[0] == (16, 16, 112 * 112) and (72, 24, 1) in v3 and (168, 672, 1) in v3  # SE squeeze = 672 / 4
    assert v3[-3:] == [(960, 160, 49), (1280, 960, 1), (1000, 1280, 1)]
    b0 = k.efficientnet_b0()
    assert b0[:3] == [(8, 32, 1), (32, 8, 1), (16, 32, 112 * 112)]  # first block: SE, no expand conv
    assert (1152, 192, 49) in b0 and (48, 1152, 1) in b0
    r50 = k.resnet50()
    assert len(r50) == 2 * 16 + 4 + 1 and (256, 64, 3136) in r50 and (2048, 1024, 49) in r50
    assert (512, 256, 784) in r50 and r50[-1] == (1000, 2048, 1)
    tagged = k.model_shapes(list(k.MODELS))
    assert len(tagged) == len(set(v2 + v3 + b0 + r50 + k.bert_base()))
    assert set(tagged[(1000, 1280, 1)]) == {"mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0"}
    assert {n for shape in tagged for n in shape} >= {1, 49, 196, 784, 3136, 12544, 128}


def test_summaries_are_geometric_means_with_the_worst_shape():
    k = load_script()
    base = dict(kernel="spmm_f32_b1", isa="avx512", sparsity=0.9, block=1, threads=1, baseline="numpy")
    rows = [{**base, "M": m, "K": 8, "N": 8, "ratio": r} for m, r in [(1, 2.0), (2, 8.0), (3, 4.0)]]
    rows.append({**base, "isa": "avx2", "M": 1, "K": 8, "N": 8, "ratio": 3.0})  # a group of one: no summary
    (s,) = k.summaries(rows)
    assert s["ratio"] == pytest.approx(4.0) and s["shapes"] == 3
    assert s["min_ratio"] == 2.0 and s["min_shape"] == "1x8x8" and s["isa"] == "avx512"


def test_smoke_runs_the_smallest_shape_of_each_model_with_summaries(tmp_path):
    out = tmp_path / "rows.json"
    r = run("--smoke", "--model", "bert_base", "--model", "resnet50", "--kernel", "spmm_f32_b1",
            "--min-time", "0.001", "--json", str(out), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    shaped = [r for r in rows if "summary" not in r]
    assert {(r["M"], r["K"], r["N"]) for r in shaped} == {(768, 768, 128), (1000, 2048, 1)}
    assert {r["kernel"] for r in rows} == {"spmm_f32_b1"} and {r["sparsity"] for r in rows} == {0.9}
    assert all(r["models"] == ["resnet50"] for r in shaped if r["N"] == 1)
    summary = [r for r in rows if "summary" in r]
    assert summary and all(s["shapes"] == 2 for s in summary)
