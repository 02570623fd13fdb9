"""`--runtime tensorrt`: trtexec's performance summary parsed into bench JSON, and the one-line
error where TensorRT is absent (this machine; the engine build itself needs a Jetson).

Consumes: tests/python/fixtures/trtexec_int8.txt, written in the output format trtexec documents
(TensorRT developer guide, "trtexec": the "=== Performance summary ===" block), and an
``--exportTimes`` JSON of the documented shape. Produces: pass/fail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgeprune import _bench_runner as R

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "trtexec_int8.txt"


def test_parse_trtexec_performance_summary():
    s = R.parse_trtexec(FIXTURE.read_text())
    assert s["version"] == "10.3.0" and s["throughput_qps"] == 1264.15
    assert s["latency"] == {
        "min": 0.765869,
        "max": 1.16138,
        "mean": 0.786011,
        "median": 0.782227,
        "p90": 0.797119,
        "p95": 0.803711,
        "p99": 0.854004,
    }
    assert s["gpu_compute"]["median"] == 0.758301 and s["gpu_compute"]["p99"] == 0.829102
    # "Enqueue Time" and "H2D Latency" lines must not leak into "latency"
    assert set(s) == {"version", "throughput_qps", "latency", "gpu_compute"}


def test_parse_trtexec_without_summary_is_one_line():
    text = "\n".join(FIXTURE.read_text().splitlines()[:9]) + "\n[E] Error[4]: engine build failed\n"
    with pytest.raises(R.RunnerError, match="no performance summary") as e:
        R.parse_trtexec(text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("banner, version", [("v8601", "8.6.1"), ("v8201", "8.2.1"), ("v100300", "10.3.0")])
def test_trtexec_banner_versions(banner, version):
    text = FIXTURE.read_text().replace("TensorRT version: 10.3.0", "").replace("v100300", banner)
    assert R.parse_trtexec(text)["version"] == version


def test_export_times_samples():
    rows = [{"startH2DMs": 1.0, "latencyMs": 0.78, "computeMs": 0.75}, {"startH2DMs": 2.0, "latencyMs": 0.8}]
    assert R.samples_from_export_times(json.dumps(rows)) == [0.78, 0.8]


def test_trtexec_command_precision_flags():
    cmd = R.trtexec_command("m.onnx", 100, 50, "int8", "t.json")
    assert cmd[1:] == [
        "--onnx=m.onnx",
        "--int8",
        "--fp16",
        "--warmUp=100",
        "--iterations=50",
        "--duration=0",
        "--avgRuns=1",
        "--exportTimes=t.json",
    ]
    assert "--int8" not in R.trtexec_command("m.onnx", 100, 50, "fp16", "t.json")


def test_no_tensorrt_here_is_one_line_exit_2(tmp_path, capsys):
    if shutil.which("trtexec") or Path("/usr/src/tensorrt/bin/trtexec").exists():
        pytest.fail("this test needs a machine without TensorRT")
    from edgeprune.cli.main import main

    model = tmp_path / "m.int8.onnx"
    model.write_bytes(b"not really onnx")
    assert main(["bench", str(model), "--runtime", "tensorrt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: bench {model}: runtime tensorrt needs trtexec")


def test_ort_profile_drops_the_cold_first_run(tmp_path):
    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 1000},
        {"cat": "Node", "name": "conv_kernel_time", "ts": 10, "dur": 900, "args": {"op_name": "Conv"}},
        {"cat": "Session", "name": "model_run", "ts": 2000, "dur": 120},
        {"cat": "Node", "name": "conv_kernel_time", "ts": 2010, "dur": 100, "args": {"op_name": "Conv"}},
        {"cat": "Session", "name": "model_run", "ts": 3000, "dur": 120},
        {"cat": "Node", "name": "conv_kernel_time", "ts": 3010, "dur": 110, "args": {"op_name": "Conv"}},
    ]
    p = tmp_path / "prof.json"
    p.write_text(json.dumps(events))
    assert R.parse_ort_profile(p, runs=2, skip_first=True)[0]["mean_ms"] == 0.105
    assert R.parse_ort_profile(p, runs=2, skip_first=True)[0]["min_ms"] == 0.1
    assert R.parse_ort_profile(p, runs=3)[0]["mean_ms"] == 0.11  # the median run, not the cold one


def test_engine_precision_follows_the_file_name():
    assert R.trt_precision("out/model.int8.onnx") == "int8"
    assert R.trt_precision("out/model.onnx") == "fp16" and R.trt_precision("model.fp16.onnx") == "fp16"
