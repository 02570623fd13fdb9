"""CLI: `edgeprune quantize`, `edgeprune export`, `edgeprune inspect` end to end, and their bad inputs.

Consumes: the cached trained demo CNN dir and the ``run_cli`` fixture (tests/conftest.py).
Produces: pass/fail on files written, JSON printed, exit codes (0, 2 bad input, 3 gate) and messages.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from conftest_quant import *  # noqa: F401,F403
from conftest_quant import ort_logits, stack

from edgeprune.quant import QuantizedModel


def _quantize_json(run_cli, model, out, *flags):
    """``edgeprune quantize --model MODEL --calib digits --calib-n 64 FLAGS... --out OUT --json`` in-process."""
    return run_cli("quantize", "--model", model, "--calib", "digits", "--calib-n", "64", *flags, "--out", out, "--json")


@pytest.fixture(scope="module")
def qdir(tmp_path_factory, trained_demo_cnn_dir):
    """A quantized dir written by the CLI once for this module (exit code and JSON checked in a test)."""
    from edgeprune.cli.main import main

    out = tmp_path_factory.mktemp("cli") / "q"
    code = main(
        [
            "quantize",
            "--model",
            str(trained_demo_cnn_dir),
            "--calib",
            "digits",
            "--calib-n",
            "256",
            "--method",
            "mse",
            "--target",
            "rpi4",
            "--out",
            str(out),
            "--json",
        ]
    )
    return out, code


def test_quantize_writes_model_and_scales(qdir, run_cli, tmp_out):
    out, code = qdir
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["folded.pt", "model", "quant.json"]
    q = json.loads((out / "quant.json").read_text())
    assert q["config"]["method"] == "mse" and q["config"]["target"] == "rpi4"
    assert q["metadata"]["calibration_samples"] == 256
    assert q["metadata"]["int8_top1"] >= q["metadata"]["fp32_top1"] - 0.01
    assert QuantizedModel.load(out).points == q["points"]


def test_quantize_json_output(run_cli, trained_demo_cnn_dir, tmp_out):
    r = _quantize_json(run_cli, trained_demo_cnn_dir, tmp_out, "--method", "minmax")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["method"] == "minmax" and d["quantized_layers"] == 9 and d["calibration_samples"] == 64
    assert d["acc_drop_points"] == pytest.approx(100 * (d["fp32_top1"] - d["int8_top1"]))
    assert d["gate"] is None


def test_export_and_inspect_cli(qdir, run_cli, tmp_out, digits):
    out, _ = qdir
    r = run_cli(
        "export", out, "--format", "onnx", "--format", "onnx-int8", "--out", tmp_out, "--dynamic-batch", "--json"
    )
    assert r.code == 0, r.err
    files = {f["format"]: f for f in json.loads(r.out)["files"]}
    assert json.loads(r.out)["channel_alignment"] is None  # no --target given
    assert set(files) == {"onnx", "onnx-int8"}
    assert files["onnx-int8"]["int8_mac_coverage"] == 1.0 and files["onnx"]["int8_mac_coverage"] == 0.0
    assert files["onnx-int8"]["size_bytes"] < files["onnx"]["size_bytes"] / 2
    meta = {p.key: p.value for p in onnx.load(files["onnx-int8"]["path"]).metadata_props}
    assert meta["edgeprune_target"] == "rpi4"
    # the int8 file is the quantized dir's model: ORT agrees with its fake-quant
    qm = QuantizedModel.load(out)
    x, _ = stack(digits.test, 128)
    agree = float((ort_logits(files["onnx-int8"]["path"], x).argmax(1) == qm(x).numpy().argmax(1)).mean())
    assert agree >= 0.99
    r = run_cli("inspect", files["onnx-int8"]["path"], "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["ops"]["Conv"] == 8 and info["ops"]["Gemm"] == 1 and info["int8"]["weighted_int8_ops"] == 9
    r = run_cli("inspect", files["onnx"]["path"], "--json")
    fp32 = json.loads(r.out)["int8"]
    assert fp32["int8_ops"] == 0 and fp32["fp32_ops"]
    assert all(f["reason"].startswith("fp32 model: no QuantizeLinear") for f in fp32["fp32_ops"])
    r = run_cli("inspect", files["onnx-int8"]["path"], "--layers")  # the human tables
    assert r.code == 0 and "int8 MAC coverage" in r.out and "100.0 %" in r.out
    assert f"every compute op ({info['int8']['compute_ops']}) is int8 in the file" in r.out
    rt = info["runtime"]  # what ONNX Runtime runs: every conv/gemm is an int8 kernel or a float fallback with a reason
    assert rt["int8_weighted_ops"] + len(rt["float_fallbacks"]) == rt["weighted_ops"] == 9
    assert f"{rt['int8_weighted_ops']} of 9 conv/gemm/matmul" in r.out
    r = run_cli("inspect", files["onnx"]["path"])
    assert r.code == 0 and "ops that stayed fp32" in r.out and "fp32 model" in r.out


def test_calibration_shape_mismatch_exits_2_naming_both_shapes(run_cli, trained_demo_cnn_dir, tmp_path):
    npz = tmp_path / "small.npz"
    np.savez(npz, x=np.zeros((40, 1, 8, 8), np.float32), y=np.arange(40) % 10)
    r = run_cli("quantize", "--model", trained_demo_cnn_dir, "--calib", npz, "--out", tmp_path / "o")
    assert r.code == 2
    assert "(1, 8, 8)" in r.err and "(1, 32, 32)" in r.err and r.err.count("\n") == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_jetson_nano_target_refused(run_cli, trained_demo_cnn_dir, tmp_out):
    r = run_cli(
        "quantize", "--model", trained_demo_cnn_dir, "--calib", "digits", "--target", "jetson-nano", "--out", tmp_out
    )
    assert r.code == 2 and "no int8 path" in r.err and "fp16" in r.err


def test_quality_gate_exit_3(run_cli, trained_demo_cnn_dir, tmp_out):
    # a negative budget cannot be met: int8 is never better than fp32 by a whole point here
    r = _quantize_json(run_cli, trained_demo_cnn_dir, tmp_out, "--max-acc-drop", "-1")
    assert r.code == 3
    assert json.loads(r.out)["gate"] == {"max_acc_drop": -1.0, "passed": False}


def test_export_bad_inputs(run_cli, trained_demo_cnn_dir, tmp_path, qdir):
    r = run_cli("export", tmp_path / "missing", "--out", tmp_path / "o")
    assert r.code == 2 and "no such directory" in r.err
    r = run_cli("export", trained_demo_cnn_dir, "--format", "onnx-int8", "--out", tmp_path / "o")
    assert r.code == 2 and "edgeprune quantize" in r.err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    r = run_cli("export", qdir[0], "--out", tmp_path / "full")
    assert r.code == 2 and "--force" in r.err and (tmp_path / "full" / "x").read_text() == "keep"
    r = run_cli("export", qdir[0], "--format", "onnx-int8", "--target", "jetson-nano", "--out", tmp_path / "n")
    assert r.code == 2 and "fp16" in r.err
    # a prune output dir holds the saved model one level down: the message names the dir once
    (tmp_path / "pruned" / "model").mkdir(parents=True)
    (tmp_path / "pruned" / "model" / "model.json").write_text("{}")
    r = run_cli("export", tmp_path / "pruned", "--out", tmp_path / "p")
    want = f"error: {tmp_path / 'pruned'}: no model.json (not a directory written by ep.save)"
    assert r.code == 2 and r.err.startswith(want) and r.err.count(str(tmp_path / "pruned") + ":") == 1, r.err
    assert "pass that" in r.err and not (tmp_path / "p").exists()


def test_inspect_bad_file(run_cli, tmp_path):
    r = run_cli("inspect", tmp_path / "nope.onnx")
    assert r.code == 2 and "no such file" in r.err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    r = run_cli("inspect", bad)
    assert r.code == 2 and "not a readable ONNX file" in r.err


def test_fp32_export_of_a_model_dir(run_cli, trained_demo_cnn_dir, tmp_out, digits):
    import edgeprune as ep

    r = run_cli("export", trained_demo_cnn_dir, "--out", tmp_out, "--json")
    assert r.code == 0, r.err
    path = json.loads(r.out)["files"][0]["path"]
    model = ep.load(trained_demo_cnn_dir)
    x, _ = stack(digits.test, 8)
    with torch.no_grad():
        ref = model(x).numpy()
    got = ort_logits(path, x)
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-4


def test_quantize_with_qat(run_cli, trained_demo_cnn_dir, tmp_out):
    r = _quantize_json(run_cli, trained_demo_cnn_dir, tmp_out, "--method", "percentile", "--qat-epochs", "1")
    assert r.code == 0, r.err
    q = json.loads((tmp_out / "quant.json").read_text())
    assert q["metadata"]["qat"]["epochs"] == 1
    assert q["metadata"]["qat"]["history"]["loop"] == "edgeprune.recover.finetune"
    assert json.loads(r.out)["int8_top1"] >= json.loads(r.out)["fp32_top1"] - 0.01


def test_export_notes_channels_off_the_target_multiple(run_cli, tmp_path):
    import edgeprune as ep

    model = ep.models.build("edgeprune:demo-cnn", width=12)
    ep.save(model, tmp_path / "m")
    r = run_cli("export", tmp_path / "m", "--target", "x86-avx2", "--out", tmp_path / "o")
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    assert "multiples of 8" in text and "stem.0 (12)" in text and "--round-to 8" in text
