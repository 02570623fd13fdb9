"""Tests of edgeprune.bench and `edgeprune bench`: statistics, runtimes, profile parsing, errors.

Consumes: a tiny CNN exported to ONNX in a temp dir. Produces: pass/fail. No assertion is
about speed (this machine is shared): only about what the numbers are and how they relate.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from onnx_files import torch_onnx
from torch import nn

from edgeprune.cli.main import main

B = importlib.import_module("edgeprune.bench")


def _tiny():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()
    m.input_shape = (1, 12, 12)
    return m


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    return torch_onnx(_tiny(), torch.zeros(1, 1, 12, 12), path, dynamic_batch=True)


def test_onnxruntime_statistics_are_consistent(onnx_path):
    r = B.bench(onnx_path, runtime="onnxruntime", threads=1, warmup=1, runs=7)
    d = r.to_dict(samples=True)
    assert d["estimate"] is False and d["runtime"] == "onnxruntime"
    assert d["runtime_version"].startswith("onnxruntime ")
    assert len(d["samples_ms"]) == 7 and d["runs"] == 7 and d["threads"] == 1
    s = np.array(r.samples_ms)
    assert r.mean_ms == pytest.approx(s.mean())
    assert r.median_ms == pytest.approx(np.median(s))
    assert r.std_ms == pytest.approx(s.std())
    assert r.p90_ms == pytest.approx(np.percentile(s, 90))
    assert r.p99_ms == pytest.approx(np.percentile(s, 99))
    assert r.min_ms <= r.median_ms <= r.p90_ms <= r.p99_ms <= r.max_ms
    assert d["init_ms"] > 0 and d["first_ms"] > 0 and d["peak_rss_mb"] > 10
    assert d["inputs"] == {"x": [1, 1, 12, 12]}  # dynamic batch became 1


def test_onnxruntime_layer_profile_names_the_graph_nodes(onnx_path):
    import onnx

    r = B.bench(onnx_path, threads=1, warmup=0, runs=3)
    ops = {row["op_type"] for row in r.layers}
    graph_ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    assert "Conv" in ops and ops <= graph_ops | {
        "FusedConv",
        "MemcpyToHost",
        "MemcpyFromHost",
        "ReorderInput",
        "ReorderOutput",
        "NchwcConv",
        "FusedGemm",
    }
    assert sum(row["share"] for row in r.layers) == pytest.approx(1.0, abs=0.01)
    assert [row["mean_ms"] for row in r.layers] == sorted((row["mean_ms"] for row in r.layers), reverse=True)


def test_no_layer_profile_when_disabled(onnx_path):
    assert B.bench(onnx_path, warmup=0, runs=2, layer_profile=False).layers == []


def test_torch_runtime_on_a_module():
    r = B.bench(_tiny(), runtime="torch", threads=1, warmup=0, runs=3)
    assert r.runtime == "torch" and r.inputs == {"input": [1, 1, 12, 12]} and len(r.samples_ms) == 3
    assert torch.get_num_threads() >= 1


def test_default_runtime_from_the_artifact(tmp_path):
    assert B.default_runtime("a/model.int8.onnx") == "onnxruntime"
    assert B.default_runtime("m.tflite") == "litert"
    unknown = tmp_path / "m.bin"
    unknown.write_bytes(b"x")
    with pytest.raises(B.BenchError, match="cannot tell which runtime"):
        B.default_runtime(unknown)
    assert B.default_runtime(tmp_path) == "torch"
    assert B.default_runtime(_tiny()) == "torch"


def test_parse_ort_profile(tmp_path):
    events = [
        {"cat": "Session", "name": "model_run", "dur": 999},
        {"cat": "Node", "name": "conv1_kernel_time", "dur": 300, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "conv1_kernel_time", "dur": 100, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "fc_kernel_time", "dur": 200, "args": {"op_name": "Gemm"}},
        {"cat": "Node", "name": "fc_fence_before", "dur": 5, "args": {"op_name": "Gemm"}},
    ]
    p = tmp_path / "prof.json"
    p.write_text(json.dumps(events))
    rows = B.parse_ort_profile(p, runs=2)
    assert rows == [
        {"name": "conv1", "op_type": "Conv", "mean_ms": 0.2, "share": 0.6667, "min_ms": 0.1},
        {"name": "fc", "op_type": "Gemm", "mean_ms": 0.1, "share": 0.3333, "min_ms": 0.1},
    ]


def test_noise_warning_only_above_the_threshold():
    assert B.noise_warnings([1.0, 1.01, 0.99, 1.0, 1.0]) == []
    noisy = B.noise_warnings([1.0, 2.0, 1.0, 2.0, 1.0, 2.0])
    assert len(noisy) == 1 and "coefficient of variation 33%" in noisy[0]
    assert B.noise_warnings([1.0, 5.0]) == []  # too few runs to judge


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"runtime": "openvino"}, "not one of"),
        ({"runs": 0}, "runs >= 1"),
        ({"threads": 0}, "threads >= 1"),
    ],
)
def test_bad_arguments(onnx_path, kwargs, match):
    with pytest.raises(B.BenchError, match=match):
        B.bench(onnx_path, **kwargs)


def test_wrong_artifact_for_runtime(tmp_path, onnx_path):
    with pytest.raises(B.BenchError, match="no artifact"):
        B.bench(tmp_path / "missing.onnx")
    with pytest.raises(B.BenchError, match="needs an .onnx file"):
        B.bench(tmp_path, runtime="onnxruntime")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(B.BenchError, match="cannot load"):
        B.bench(bad)
    with pytest.raises(B.BenchError, match="ep.save"):
        B.bench(onnx_path, runtime="torch")


def test_litert_error_or_type_check(tmp_path, onnx_path):
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        with pytest.raises(B.BenchError, match="pip install ai-edge-litert"):
            B.bench(onnx_path, runtime="litert")
    else:
        with pytest.raises(B.BenchError, match="needs a .tflite file"):
            B.bench(onnx_path, runtime="litert")


def test_litert_bench_prints_nothing_of_the_tflite_librarys_own(tmp_path):
    """The TFLite C++ library logs to file descriptor 2 once per process ("INFO: Created TensorFlow
    Lite XNNPACK delegate for CPU."), which no Python setting silences; `bench` on a good file
    prints nothing on stderr, in a fresh process where that line would come."""
    import subprocess
    import sys

    import edgeprune as ep

    ep.export(ep.models.build("edgeprune:demo-cnn"), tmp_path, formats=["tflite"])
    argv = ["bench", str(tmp_path / "model.tflite"), "--runtime", "litert", "--runs", "2", "--warmup", "0"]
    code = f"from edgeprune.cli.main import main; raise SystemExit(main({[*argv, '--in-process', '--no-layers']!r}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and "litert" in r.stdout


# ----------------------------------------------------------------------------- CLI
def test_cli_bench_json_stdout(onnx_path, capsys):
    assert main(["bench", str(onnx_path), "--runs", "3", "--warmup", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 3 and out["runtime"] == "onnxruntime" and out["estimate"] is False
    assert "target_estimate" not in out


def test_cli_bench_json_file_and_target(onnx_path, tmp_path, capsys):
    dest = tmp_path / "r.json"
    assert (
        main(
            [
                "bench",
                str(onnx_path),
                "--runs",
                "3",
                "--warmup",
                "0",
                "--threads",
                "2",
                "--target",
                "rpi4",
                "--json",
                str(dest),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "median ms" in printed and "estimate" in printed
    out = json.loads(dest.read_text())
    assert out["threads"] == 2
    est = out["target_estimate"]
    assert est["estimate"] is True and est["target"] == "rpi4" and est["threads"] == 2 and est["total_ms"] > 0


@pytest.mark.parametrize(
    "argv,match",
    [
        (["bench", "{missing}"], "does not exist"),
        (["bench", "{onnx}", "--runs", "0"], "--runs"),
        (["bench", "{onnx}", "--input-shape", "3,x"], "--input-shape"),
        (["bench", "{onnx}", "--target", "no-such-board"], "--target no-such-board"),
        (["bench", "{onnx}", "--runtime", "openvino"], "invalid choice"),
        (["bench", "{onnx}", "--runtime", "torch"], "ep.save"),
    ],
)
def test_cli_bench_bad_input_exits_2(onnx_path, tmp_path, capsys, argv, match):
    argv = [a.format(missing=tmp_path / "missing.onnx", onnx=onnx_path) for a in argv]
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1  # one line: what, where, how to fix


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse errors exit from inside the parser
        return int(e.code)


def test_isolated_run_reports_its_own_memory(onnx_path):
    inproc = B.bench(onnx_path, warmup=0, runs=3, layer_profile=False)
    iso = B.bench(onnx_path, warmup=0, runs=3, isolate=True)
    assert iso.runs == 3 and len(iso.samples_ms) == 3 and iso.layers and iso.runtime == "onnxruntime"
    # this test process holds torch; the worker holds only numpy + ONNX Runtime
    assert iso.peak_rss_mb < inproc.peak_rss_mb
    assert B.BenchResult.from_dict(iso.to_dict(samples=True)).to_dict() == iso.to_dict()
    with pytest.raises(B.BenchError, match="cannot load"):
        bad = onnx_path.parent / "bad_iso.onnx"
        bad.write_bytes(b"junk")
        B.bench(bad, isolate=True)


def test_cli_bench_unknown_artifact_kind_exits_2(tmp_path, capsys):
    junk = tmp_path / "model.bin"
    junk.write_bytes(b"x")
    assert _exit_code(["bench", str(junk)]) == 2
    assert "cannot tell which runtime runs model.bin" in capsys.readouterr().err


def test_device_entry_point_runs_without_torch(onnx_path, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    # a `torch` that cannot be imported, first on the path: what a device without torch looks like
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('no torch on this device')\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"}

    def bench(*args):
        argv = [sys.executable, "-m", "edgeprune.cli.bench", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    proc = bench(str(onnx_path), "--runs", "3", "--warmup", "0", "--target", "rpi4", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["runs"] == 3 and out["layers"] and out["target_estimate"]["estimate"] is True
    bad = bench(str(tmp_path / "missing.onnx"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr
