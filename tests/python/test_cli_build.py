"""`edgeprune build` end to end on the demo CNN (small settings) and every bad input.

Consumes: the cached trained demo CNN (tests/conftest.py), the digits data, target profiles.
Produces: pass/fail. Checks files against their contents (manifest hashes, channel counts in
the ONNX files, Q/DQ symmetry on Jetson Orin), reproducibility of two same-seed runs, the
accuracy gate (exit 3), SIGINT leaving nothing under the final name, and exit 2 on bad input.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[2]
FILES = [
    "model/model.json",
    "model/weights.pt",
    "model.onnx",
    "model.int8.onnx",
    "report.json",
    "report.md",
    "plots/metric_vs_macs.png",
    "plots/metric_vs_latency.png",
    "plots/channels.png",
    "manifest.json",
]
SMALL = ["--data", "digits", "--epochs", "1", "--bench-runs", "3"]
# no recovery epochs and no host benchmark: the quickest build that still has data
QUICK = ["--data", "digits", "--epochs", "0", "--bench-runs", "0"]
ONE_EPOCH = ["--data", "digits", "--epochs", "1"]


def _build(run_cli, model, target, *flags):
    """``edgeprune build --model MODEL --target TARGET FLAGS...`` in-process (``run_cli`` fixture)."""
    return run_cli("build", "--model", model, "--target", target, *flags)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _conv_out_channels(path: Path) -> list[int]:
    """Output channels of each Conv in an ONNX file (weights possibly behind DequantizeLinear)."""
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    out = []
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        name = n.input[1]
        while name not in inits and name in producer:
            name = producer[name].input[0]
        out.append(int(inits[name].shape[0]))
    return out


@pytest.fixture(scope="module")
def rpi4_build(tmp_path_factory, trained_demo_cnn_dir):
    """One rpi4 build shared by the read-only checks below (built through the CLI in-process)."""
    from edgeprune.cli.main import main

    out = tmp_path_factory.mktemp("b") / "rpi4"
    code = main(
        ["build", "--model", str(trained_demo_cnn_dir), "--target", "rpi4", "--ratio", "0.5", *SMALL, "--out", str(out)]
    )
    assert code == 0
    return out


def test_build_writes_every_file_with_correct_hashes(rpi4_build):
    for f in FILES:
        assert (rpi4_build / f).is_file(), f"missing {f}"
    manifest = json.loads((rpi4_build / "manifest.json").read_text())
    on_disk = sorted(str(p.relative_to(rpi4_build)) for p in rpi4_build.rglob("*") if p.is_file())
    assert sorted([*manifest["files"], "manifest.json"]) == on_disk
    for rel, info in manifest["files"].items():
        assert info["sha256"] == _sha(rpi4_build / rel) and info["size_bytes"] == (rpi4_build / rel).stat().st_size
        assert info["timings"] == (rel in ("report.json", "report.md"))
    assert manifest["format"] == "edgeprune-build" and manifest["manifest_version"] == 1
    assert manifest["target"] == "rpi4" and manifest["seed"] == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (rpi4_build.stat().st_mode & 0o777) == 0o777 & ~umask
    assert all((p.stat().st_mode & 0o777) == (0o777 if p.is_dir() else 0o666) & ~umask for p in rpi4_build.rglob("*"))
    assert {"edgeprune", "torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert "--target rpi4" in manifest["command_line"]


def test_report_contents(rpi4_build):
    rep = json.loads((rpi4_build / "report.json").read_text())
    assert rep["format"] == "edgeprune-report" and rep["report_version"] == 1
    names = [s["name"] for s in rep["stages"]]
    assert names == ["baseline", "pruned", "recovered", "int8"]
    assert rep["stages_ran"] == [
        "load",
        "baseline",
        "prune",
        "recover",
        "save",
        "quantize",
        "export",
        "bench",
        "estimate",
        "report",
    ]
    base = rep["stages"][0]
    for s in rep["stages"]:
        assert s["estimate"]["estimate"] is True and s["estimate"]["target"] == "rpi4"
        acc = s["accuracy"]
        assert acc["delta_pts"] == pytest.approx(100 * (acc["value"] - base["accuracy"]["value"]), abs=1e-3)
        h = s["host_latency"]
        if s["name"] == "pruned":  # before recovery: not an artifact, so not timed
            assert h is None
            continue
        assert (
            h["estimate"] is False
            and h["runs"] == 3
            and h["artifact"] == s.get("artifact", "unpruned model.onnx (not kept)")
        )
        assert h["min_ms"] <= h["median_ms"] <= h["p99_ms"] <= h["max_ms"]
        assert h["peak_rss_mb"] > 0
    assert rep["stages"][1]["macs"] < base["macs"] and rep["stages"][1]["params"] < base["params"]
    assert rep["stages"][3]["estimate"]["precision"] == "int8"
    # rpi4 ships model.int8.tflite; the int8 ONNX is listed beside it
    int8 = rep["stages"][3]
    assert int8["artifact"] == "model.int8.tflite"
    assert int8["size_bytes"] == (rpi4_build / "model.int8.tflite").stat().st_size
    onnx_int8 = next(a for a in int8["other_artifacts"] if a["artifact"] == "model.int8.onnx")
    assert onnx_int8["size_bytes"] == (rpi4_build / "model.int8.onnx").stat().st_size
    # each deployed int8 file scores what the fake-quant twin scores (same scales), within 1 sample in 100
    assert int8["file_accuracy"] == pytest.approx(int8["accuracy"]["value"], abs=0.01)
    assert onnx_int8["onnx_accuracy"] == pytest.approx(int8["accuracy"]["value"], abs=0.01)
    assert rep["target_estimate"]["estimate"] is True and rep["target_estimate"]["layers"]
    assert "skipped" not in (rpi4_build / "report.md").read_text() or rep["stages_skipped"]
    md = (rpi4_build / "report.md").read_text()
    assert "## Summary" in md and "**estimates**" in md and "edgeprune bench model.int8.tflite" in md


def test_channels_are_multiples_of_the_profile_and_match_the_artifacts(rpi4_build):
    import edgeprune as ep

    rep = json.loads((rpi4_build / "report.json").read_text())
    layers = {layer["name"]: layer for layer in rep["layers"]}
    changed = [layer for layer in layers.values() if layer["after"] != layer["before"]]
    assert changed, "ratio 0.5 pruned nothing"
    assert all(layer["after"] % 8 == 0 for layer in changed)
    # the saved model, both ONNX files and the report agree on every conv's channel count
    model = ep.load(rpi4_build / "model")
    convs = [int(m.out_channels) for _, m in model.named_modules() if isinstance(m, __import__("torch").nn.Conv2d)]
    assert _conv_out_channels(rpi4_build / "model.onnx") == convs
    assert _conv_out_channels(rpi4_build / "model.int8.onnx") == convs
    assert [layers[n]["after"] for n, m in model.named_modules() if n in layers and hasattr(m, "out_channels")] == convs


def test_same_seed_same_plan_accuracy_and_hashes(rpi4_build, trained_demo_cnn_dir, tmp_path, run_cli):
    again = tmp_path / "again"
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", "--ratio", "0.5", *SMALL, "--out", again)
    assert r.code == 0, r.err
    m1 = json.loads((rpi4_build / "manifest.json").read_text())["files"]
    m2 = json.loads((again / "manifest.json").read_text())["files"]
    assert m1.keys() == m2.keys()
    differing = [k for k in m1 if not m1[k]["timings"] and m1[k]["sha256"] != m2[k]["sha256"]]
    assert differing == []
    r1 = json.loads((rpi4_build / "report.json").read_text())
    r2 = json.loads((again / "report.json").read_text())
    assert r1["plan"] == r2["plan"] and r1["plan"] is not None
    assert [s["accuracy"] for s in r1["stages"]] == [s["accuracy"] for s in r2["stages"]]
    assert [s["estimate"] for s in r1["stages"]] == [s["estimate"] for s in r2["stages"]]


def test_json_output_and_orin_tensorrt_ready(trained_demo_cnn_dir, tmp_out, run_cli):
    r = _build(run_cli, trained_demo_cnn_dir, "jetson-orin-nano", "--ratio", "0.3", *QUICK, "--out", tmp_out, "--json")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert summary["target"] == "jetson-orin-nano" and summary["deployed"]["artifact"] == "model.int8.onnx"
    trt = summary["deploy"]["trtexec"]
    assert trt.startswith("trtexec --onnx=model.int8.onnx --int8 --fp16 --saveEngine=model.int8.engine")
    assert "--shapes" not in trt  # the export has a static batch: TensorRT takes the shapes from it
    assert trt in (tmp_out / "report.md").read_text()
    gpu = json.loads((tmp_out / "report.json").read_text())["target_estimate_gpu"]
    assert gpu["estimate"] is True and gpu["calibrated"] is False and gpu["precision"] == "int8"
    assert "uncalibrated" in (tmp_out / "report.md").read_text()
    # symmetric Q/DQ: every activation zero point is 0 (TensorRT's explicit quantization)
    m = onnx.load(str(tmp_out / "model.int8.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    zps = [inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zps and all(np.all(z == 0) for z in zps)
    rep = json.loads((tmp_out / "report.json").read_text())
    changed = [layer for layer in rep["layers"] if layer["after"] != layer["before"]]
    assert changed and all(layer["after"] % 16 == 0 for layer in changed)
    assert rep["stages_skipped"]["recover"] == "recover_epochs is 0"
    assert "bench" not in rep["stages_ran"]


def test_jetson_nano_gets_fp16_and_no_int8(trained_demo_cnn_dir, tmp_out, run_cli):
    r = _build(run_cli, trained_demo_cnn_dir, "jetson-nano", "--ratio", "0.25", *QUICK, "--out", tmp_out)
    assert r.code == 0, r.err
    assert (tmp_out / "model.fp16.onnx").is_file() and not (tmp_out / "model.int8.onnx").exists()
    rep = json.loads((tmp_out / "report.json").read_text())
    assert rep["deploy"]["trtexec"].startswith("trtexec --onnx=model.fp16.onnx --fp16 ")
    assert rep["stages"][-1]["name"] == "fp16" and rep["stages"][-1]["estimate"]["precision"] == "fp16"
    assert "int8" not in [s["name"] for s in rep["stages"]]
    import edgeprune as ep

    from_file = ep.estimate(tmp_out / "model.fp16.onnx", "jetson-nano", precision=None)
    assert from_file.precision == "fp16"
    assert from_file.total_ms == pytest.approx(rep["stages"][-1]["estimate"]["total_ms"], abs=1e-3)


def test_accuracy_gate_exits_3_and_still_writes(trained_demo_cnn_dir, tmp_out, run_cli):
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", "--ratio", "0.9", *QUICK, "--max-acc-drop", "0", "--out", tmp_out)
    assert r.code == 3
    assert "accuracy gate failed" in r.err and "--max-acc-drop 0" in r.err
    rep = json.loads((tmp_out / "report.json").read_text())
    assert rep["gate"]["passed"] is False and rep["gate"]["drop_pts"] > 0
    assert (tmp_out / "manifest.json").is_file() and "**FAILED**" in (tmp_out / "report.md").read_text()


def test_budget_macs_fraction_and_latency(trained_demo_cnn_dir, tmp_path, run_cli):
    out, bisect = tmp_path / "macs", ["--search", "bisect", *QUICK]
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", "--budget-macs", "0.5", *bisect, "--out", out, "--json")
    assert r.code == 0, r.err
    s = json.loads(r.out)
    base, pruned = s["stages"][0]["macs"], s["stages"][1]["macs"]
    assert s["budget"]["met"] and pruned <= 0.5 * base and s["budget"]["achieved"] == pruned
    # latency budget: 95 % of the unpruned model's int8 estimate, so reachable only by pruning
    import edgeprune as ep

    budget = 0.95 * ep.estimate(ep.load(trained_demo_cnn_dir), "rpi4", precision="int8").total_ms
    out2 = tmp_path / "lat"
    r = _build(
        run_cli, trained_demo_cnn_dir, "rpi4", "--budget-latency", f"{budget:.6f}", *bisect, "--out", out2, "--json"
    )
    assert r.code == 0, r.err
    s = json.loads(r.out)
    assert s["budget"]["kind"] == "latency_ms" and s["budget"]["met"]
    assert s["budget"]["achieved"] <= budget and s["stages"][-1]["estimate"]["total_ms"] <= budget
    assert s["stages"][-1]["estimate"]["precision"] == "int8"


def test_adaptive_search_meets_a_macs_budget_under_the_accuracy_limit(trained_demo_cnn_dir, tmp_out, run_cli):
    flags = ["--budget-macs", "0.5", "--max-acc-drop", "3", *ONE_EPOCH, "--search-steps", "2", "--bench-runs", "0"]
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", *flags, "--out", tmp_out, "--json")
    assert r.code == 0, r.err
    s = json.loads(r.out)
    assert [st["name"] for st in s["stages"]] == ["baseline", "recovered", "int8"]
    assert s["budget"]["met"] and s["stages"][1]["macs"] <= 0.5 * s["stages"][0]["macs"]
    assert s["stages_skipped"]["recover"] == "done after every step of the adaptive search"
    rep = json.loads((tmp_out / "report.json").read_text())
    assert rep["settings"]["search"] == "adaptive" and isinstance(rep["plan"], list) and rep["plan"]
    assert rep["search"]["result"]["met"] is True
    labels = [p["label"] for p in rep["steps"]]
    assert labels[0] == "baseline" and labels[-1] == "int8" and all(lb.endswith("(val)") for lb in labels[1:-1])
    # the saved model replays every plan of the search
    import edgeprune as ep

    assert sum(p.numel() for p in ep.load(tmp_out / "model").parameters()) == s["stages"][1]["params"]


def test_unreachable_budget_exits_3(trained_demo_cnn_dir, tmp_out, run_cli):
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", "--budget-macs", "10", "--bench-runs", "0", "--out", tmp_out)
    assert r.code == 3 and "budget not met" in r.err
    assert json.loads((tmp_out / "report.json").read_text())["budget"]["met"] is False


def test_without_data_no_int8_and_says_why(trained_demo_cnn_dir, tmp_out, run_cli):
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", "--bench-runs", "0", "--out", tmp_out)
    assert r.code == 0, r.err
    rep = json.loads((tmp_out / "report.json").read_text())
    assert "no calibration data" in rep["stages_skipped"]["quantize"]
    assert "no data" in rep["stages_skipped"]["recover"]
    assert (tmp_out / "model.onnx").is_file() and not (tmp_out / "model.int8.onnx").exists()
    assert all(s["accuracy"] is None for s in rep["stages"])
    assert rep["target_estimate"]["precision"] == "fp32"  # what ships, not the profile's int8


def test_calib_alone_gives_int8_without_accuracy(trained_demo_cnn_dir, tmp_out, run_cli):
    flags = ["--calib", "digits", "--formats", "onnx-int8", "--bench-runs", "0"]
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", *flags, "--out", tmp_out)
    assert r.code == 0, r.err
    rep = json.loads((tmp_out / "report.json").read_text())
    assert (tmp_out / "model.int8.onnx").is_file() and not (tmp_out / "model.onnx").exists()
    assert "quantize" in rep["stages_ran"] and rep["stages"][-1]["name"] == "int8"
    assert all(s["accuracy"] is None for s in rep["stages"])


def test_scratch_comparison(rpi4_build, trained_demo_cnn_dir, tmp_out, run_cli):
    flags = ["--ratio", "0.5", *ONE_EPOCH, "--scratch-epochs", "1", "--bench-runs", "0"]
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", *flags, "--out", tmp_out)
    assert r.code == 0, r.err
    rep = json.loads((tmp_out / "report.json").read_text())
    sc = rep["scratch"]
    recovered = next(s for s in rep["stages"] if s["name"] == "recovered")
    assert sc["epochs"] == 1 and sc["prune_recover_top1"] == recovered["accuracy"]["value"]
    assert sc["delta_pts"] == pytest.approx(100 * (sc["top1"] - sc["prune_recover_top1"]), abs=1e-3)
    assert "scratch" in rep["stages_ran"] and "from scratch (1 epochs)" in (tmp_out / "report.md").read_text()
    # the comparison model is not an artifact: the same files as the same build without it
    assert sorted(json.loads((tmp_out / "manifest.json").read_text())["files"]) == sorted(
        json.loads((rpi4_build / "manifest.json").read_text())["files"]
    )


def test_force_replaces_only_after_success(trained_demo_cnn_dir, tmp_out, run_cli):
    tmp_out.mkdir()
    (tmp_out / "old.txt").write_text("keep me")
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", "--out", tmp_out)
    assert r.code == 2 and "--force" in r.err and (tmp_out / "old.txt").is_file()
    # --force with a build that fails on bad input: the old contents stay
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", "--data", "nope.npz", "--force", "--out", tmp_out)
    assert r.code == 2 and (tmp_out / "old.txt").read_text() == "keep me"
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", "--bench-runs", "0", "--force", "--out", tmp_out)
    assert r.code == 0 and not (tmp_out / "old.txt").exists() and (tmp_out / "manifest.json").is_file()


# a (flags, message) table like the bad-argument one of test_kernel_benchmark.py on purpose: each
# lists the inputs of its own command line, so neither can share the other's rows
@pytest.mark.parametrize(
    "extra,match",
    [
        (["--target", "no-such-board"], "no-such-board"),
        (["--model", "edgeprune:no-such-model"], "no-such-model"),
        (["--weights", "missing.pt"], "missing.pt"),
        (["--data", "missing.npz"], "missing.npz"),
        (["--calib", "missing.npz", "--data", "digits"], "missing.npz"),
        (["--ratio", "1.5"], "--ratio 1.5"),
        (["--ratio", "0.5", "--budget-macs", "0.5"], "not allowed with argument"),
        (["--budget-macs", "lots"], "--budget-macs 'lots'"),
        (["--budget-latency", "0"], "--budget-latency 0: must be > 0"),
        (["--max-acc-drop", "1"], "--max-acc-drop needs --data"),
        (["--formats", "onnx,pdf"], "formats pdf"),
        (["--formats", ","], "--formats is empty"),
        (["--formats", "onnx,onnx-int8"], "need calibration data"),
        (["--target", "jetson-nano", "--formats", "onnx-int8", "--data", "digits"], "no int8 path"),
        (["--epochs", "-1"], "--epochs"),
        (["--search", "adaptive", "--budget-macs", "0.5"], "search 'adaptive' needs data"),
        (["--search-steps", "0"], "--search-steps"),
        (["--scratch-epochs", "-2"], "--scratch-epochs"),
        (["--importance", "l7"], "importance 'l7' is unknown"),
        (["--importance", "taylor"], "importance taylor scores channels on data"),
    ],
)
def test_bad_input_exits_2_with_one_line(trained_demo_cnn_dir, tmp_out, run_cli, extra, match):
    args = {"--model": str(trained_demo_cnn_dir), "--target": "rpi4"}
    rest = []
    it = iter(extra)
    for a in it:
        if a in args:
            args[a] = next(it)
        else:
            rest.append(a)
    argv = ["build", *[x for kv in args.items() for x in kv], *rest, "--bench-runs", "0", "--out", str(tmp_out)]
    r = run_cli(*argv)
    assert r.code == 2, (r.code, r.err)
    errors = [line for line in r.err.splitlines() if not line.startswith("build [")]  # progress lines
    assert len(errors) == 1 and errors[0].startswith("error: ") and match in errors[0], r.err
    assert not tmp_out.exists()


def test_out_is_a_file_exits_2(trained_demo_cnn_dir, tmp_path, run_cli):
    f = tmp_path / "file"
    f.write_text("x")
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", "--out", f)
    assert r.code == 2 and "not a directory" in r.err


def test_sigint_leaves_no_partial_artifact(trained_demo_cnn_dir, tmp_path):
    import threading

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # a long host benchmark keeps the build busy after the artifacts exist in the temp dir
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeprune.cli.main",
            "build",
            "--model",
            str(trained_demo_cnn_dir),
            "--target",
            "rpi4",
            "--data",
            "digits",
            "--epochs",
            "0",
            "--bench-runs",
            "10000000",
            "--out",
            str(out),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        staged = None
        while time.monotonic() < deadline and proc.poll() is None:
            tmps = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
            if tmps and (tmps[0] / "model.int8.onnx").is_file() and any("] bench" in ln for ln in lines):
                staged = tmps[0]
                break
            time.sleep(0.05)
        assert staged is not None, "the build never reached the bench stage: " + "".join(lines)
        assert (staged / "model" / "model.json").is_file()  # there was something to leave behind
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(lines)
    assert "interrupted" in "".join(lines)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # temp dir removed too


def test_estimates_of_the_exported_files_match_the_saved_model(rpi4_build):
    import edgeprune as ep

    model = ep.load(rpi4_build / "model")
    for fname, precision in (("model.onnx", "fp32"), ("model.int8.onnx", "int8")):
        from_file = ep.estimate(rpi4_build / fname, "rpi4", precision=None)
        from_model = ep.estimate(model, "rpi4", precision=precision)
        assert from_file.precision == precision and from_file.macs == from_model.macs
        assert [la.kind for la in from_file.layers] == [lb.kind for lb in from_model.layers]
        assert from_file.total_ms == pytest.approx(from_model.total_ms, rel=1e-9)


def test_bench_cli_on_the_build_outputs(rpi4_build, run_cli):
    r = run_cli("bench", rpi4_build / "model.int8.onnx", "--runs", "3", "--warmup", "0", "--target", "rpi4", "--json")
    assert r.code == 0, r.err
    import edgeprune as ep

    out = json.loads(r.out)
    model = ep.load(rpi4_build / "model")
    # the estimate uses the bench's thread count (1 here), not all the target's cores
    assert out["target_estimate"]["threads"] == 1
    assert out["target_estimate"]["total_ms"] == pytest.approx(
        ep.estimate(model, "rpi4", "int8", threads=1).total_ms, abs=1e-3
    )
    assert any(row["op_type"] in ("QLinearConv", "Conv", "DequantizeLinear") for row in out["layers"])
    # the torch runtime on the saved model directory, with its estimate taken from the module
    r = run_cli("bench", rpi4_build / "model", "--runs", "3", "--warmup", "0", "--target", "rpi4", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["runtime"] == "torch" and out["inputs"] == {"input": [1, 1, 32, 32]}
    assert out["target_estimate"]["precision"] == "fp32"
    assert out["target_estimate"]["total_ms"] == pytest.approx(
        ep.estimate(model, "rpi4", "fp32", threads=1).total_ms, abs=1e-3
    )


def test_budget_already_met_prunes_nothing(trained_demo_cnn_dir, tmp_out, run_cli):
    flags = ["--budget-macs", "1.0", *ONE_EPOCH, "--bench-runs", "0"]
    r = _build(run_cli, trained_demo_cnn_dir, "rpi4", *flags, "--out", tmp_out, "--json")
    assert r.code == 0, r.err
    s = json.loads(r.out)
    assert [st["name"] for st in s["stages"]] == ["baseline", "int8"]
    assert s["stages"][1]["macs"] == s["stages"][0]["macs"] and s["budget"]["met"]
    assert s["stages_skipped"]["recover"] == "nothing was pruned: the unpruned model already meets the budget"
    rep = json.loads((tmp_out / "report.json").read_text())
    assert rep["plan"] is None and all(layer["before"] == layer["after"] for layer in rep["layers"])
    assert "Nothing was pruned" in (tmp_out / "report.md").read_text()


def test_model_that_cannot_be_quantized_exits_2(tmp_path, tmp_out, run_cli):
    factory = tmp_path / "noweights.py"
    factory.write_text(
        "from torch import nn\n"
        "class M(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.input_shape = (1, 32, 32)\n"
        "    def forward(self, x):\n"
        "        return x.flatten(1)[:, :10] * 2\n"
        "def make():\n"
        "    return M()\n"
    )
    r = _build(run_cli, f"{factory}:make", "rpi4", "--data", "digits", "--bench-runs", "0", "--out", tmp_out)
    assert r.code == 2 and "int8 quantization: M has no Conv1d/Conv2d/Linear layer" in r.err
    assert not tmp_out.exists()


def test_build_reports_the_host_runtimes_of_the_shipped_fp32_model(rpi4_build):
    rep = json.loads((rpi4_build / "report.json").read_text())
    hr = rep["host_runtimes"]
    rows = {r["runtime"]: r for r in hr["rows"]}
    assert set(rows) == {"onnxruntime", "litert", "edgeprune"}, hr
    assert rows["onnxruntime"]["artifact"] == "model.onnx" and rows["edgeprune"]["artifact"] == "model.tflite"
    assert all(r["median_ms"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
    assert hr["fastest"] == min(rows.values(), key=lambda r: r["median_ms"])["runtime"]
    md = (rpi4_build / "report.md").read_text()
    assert "## Host runtimes (measured, fp32" in md and f"Fastest on this host: **{hr['fastest']}**." in md
    assert f"| edgeprune | model.tflite | {rows['edgeprune']['median_ms']:.3f} |" in md
