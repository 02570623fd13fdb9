"""CLI of the foundation: `targets list|show`, `train`, `doctor`, exit codes and messages."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

import edgeprune as ep
from edgeprune import __version__

ROOT = Path(__file__).resolve().parents[2]
# `edgeprune train` of the demo CNN on the shipped digits data: the start of most train command lines here
TRAIN_DEMO = ("train", "--model", "edgeprune:demo-cnn", "--data", "digits")


def test_version(run_cli):
    r = run_cli("--version")
    assert r.code == 0 and r.out.strip() == f"edgeprune {__version__}"


def test_targets_list(run_cli):
    r = run_cli("targets", "list", "--json")
    assert r.code == 0
    assert [d["name"] for d in json.loads(r.out)] == ep.targets.names()
    human = run_cli("targets", "list")
    assert human.code == 0 and all(n in human.out for n in ep.targets.names())
    assert "38.4" in human.out and "fp16, x8" in human.out


def test_targets_show_json_has_every_field(run_cli):
    r = run_cli("targets", "show", "jetson-orin-nano", "--json")
    assert r.code == 0
    d = json.loads(r.out)
    assert d == ep.targets.load("jetson-orin-nano").to_dict()
    assert d["gpu"]["int8_tops"] == 20.0 and d["deploy"]["channel_multiple"] == 16
    human = run_cli("targets", "show", "rpi4")
    assert human.code == 0 and "cpu.qemu_cpu" in human.out and "cortex-a72" in human.out


CPU_FIELDS = ("arch", "uarch", "cores", "freq_ghz", "features", "qemu_cpu")


def test_targets_show_bad_profile_exits_2_naming_the_field(run_cli, tmp_path):
    bad = tmp_path / "typo.toml"
    bad.write_text((ROOT / "targets" / "rpi4.toml").read_text().replace("freq_ghz", "frq_ghz"))
    r = run_cli("targets", "show", str(bad))
    assert r.code == 2 and r.out == ""
    assert r.err == f"error: {bad}: unknown field 'cpu.frq_ghz' (fields of [cpu]: {', '.join(CPU_FIELDS)})\n"
    r2 = run_cli("targets", "show", "rpi9")
    assert r2.code == 2 and "unknown target 'rpi9'" in r2.err and r2.err.count("\n") == 1


def test_targets_without_action_is_usage_error(run_cli):
    r = run_cli("targets")
    assert r.code == 2 and "error:" in r.err


def test_train_missing_npz_exits_2(run_cli, tmp_out):
    r = run_cli("train", "--model", "edgeprune:demo-cnn", "--data", "missing.npz", "--out", tmp_out)
    assert r.code == 2
    assert r.err == "error: --data missing.npz: file not found\n"
    assert not tmp_out.exists()


def test_train_bad_model_and_flags(run_cli, tmp_out, tmp_path):
    r = run_cli("train", "--model", "nonsense", "--data", "digits", "--out", tmp_out)
    assert r.code == 2 and r.err.startswith("error: --model nonsense: unknown model spec") and "accepted forms" in r.err
    r = run_cli(*TRAIN_DEMO, "--epochs", "-1", "--out", tmp_out)
    assert r.code == 2 and "--epochs -1: must be >= 0" in r.err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    r = run_cli(*TRAIN_DEMO, "--epochs", "0", "--out", tmp_path / "full")
    assert r.code == 2 and "is not empty; pass --force" in r.err
    assert (tmp_path / "full" / "keep.txt").exists()
    r = run_cli(*TRAIN_DEMO)
    assert r.code == 2 and "--out" in r.err


def test_train_weights_pickle_refused_then_trusted(run_cli, tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save(ep.models.build("edgeprune:demo-cnn"), whole)
    args = [*TRAIN_DEMO, "--epochs", "0", "--weights", str(whole)]
    r = run_cli(*args, "--out", tmp_path / "a")
    assert r.code == 2 and f"--weights {whole}: contains pickled Python objects" in r.err
    r = run_cli(*args, "--trust-pickle", "--out", tmp_path / "b", "--json")
    assert r.code == 0 and json.loads(r.out)["metrics"]["epochs"] == 0


def test_train_reaches_97_and_repeats_the_fixture_run(run_cli, tmp_out, trained_demo_cnn_dir, digits):
    # The cached fixture trained with the same recipe (seed 0, 10 epochs) in another run:
    # the CLI must reproduce it exactly, weights included.
    r = run_cli(*TRAIN_DEMO, "--epochs", "10", "--seed", "0", "--out", tmp_out, "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["test_top1"] >= 0.97
    cached = json.loads((trained_demo_cnn_dir / "model.json").read_text())["metadata"]["train"]
    assert result["test_top1"] == cached["test_top1"] and result["metrics"]["train_loss"] == cached["train_loss"]
    a = torch.load(tmp_out / "weights.pt", weights_only=True)
    b = torch.load(trained_demo_cnn_dir / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = ep.load(tmp_out)
    assert ep.models.evaluate(model, digits.test)["top1"] == result["test_top1"]


def test_train_human_output(run_cli, tmp_out):
    r = run_cli(*TRAIN_DEMO, "--epochs", "1", "--out", tmp_out)
    assert r.code == 0
    assert r.out.startswith("test top-1 ") and f"saved to {tmp_out}" in r.out
    assert (tmp_out / "model.json").is_file()


def test_doctor(run_cli):
    r = run_cli("doctor", "--json")
    assert r.code == 0
    d = json.loads(r.out)
    assert d["python"] == platform.python_version() and d["edgeprune"] == __version__
    assert d["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert set(d["tools"]) >= {"aarch64-linux-gnu-g++", "qemu-aarch64"}
    core = d["core"]
    if core["built"]:
        from edgeprune import _core

        assert core["selected_isa"] == _core.selected_isa() and core["selected_isa"] in core["compiled_isas"]
        assert core["l1d_bytes"] == _core.l1d_bytes()
    else:
        assert core["error"].startswith("not built")
    human = run_cli("doctor")
    assert human.code == 0 and ("edgeprune._core" in human.out or "selected_isa" in human.out)


def test_doctor_reports_a_bad_isa_override_without_failing():
    import os
    import subprocess
    import sys

    env = {**os.environ, "EDGEPRUNE_ISA": "no-such-isa", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "edgeprune.cli.main", "doctor", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["env"]["EDGEPRUNE_ISA"] == "no-such-isa"
    if d["core"]["built"]:
        assert d["core"]["selected_isa"].startswith("error: ") and "no-such-isa" in d["core"]["selected_isa"]
        assert "reference" in d["core"]["compiled_isas"]
    else:
        assert d["core"]["error"].startswith("not built")


def test_train_on_npz_adapts_the_demo_cnn(run_cli, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20).astype(np.int64)
    x = rng.standard_normal((60, 3, 16, 16)).astype(np.float32) + y[:, None, None, None]  # separable
    np.savez(tmp_path / "three.npz", x=x, y=y)
    out = tmp_path / "m"
    r = run_cli(
        "train",
        "--model",
        "edgeprune:demo-cnn",
        "--data",
        tmp_path / "three.npz",
        "--epochs",
        "3",
        "--out",
        out,
        "--json",
    )
    assert r.code == 0, r.err
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["build_kwargs"] == {"num_classes": 3, "in_channels": 3}
    assert ep.load(out)(torch.zeros(2, 3, 16, 16)).shape == (2, 3)


def test_train_model_that_does_not_fit_the_data(run_cli, tmp_path):
    (tmp_path / "nets_h2.py").write_text(
        "import torch.nn as nn\n"
        "def five():\n    return nn.Sequential(nn.Flatten(), nn.Linear(1024, 5))\n"
        "def wrong_input():\n    return nn.Sequential(nn.Flatten(), nn.Linear(7, 10))\n"
    )
    r = run_cli("train", "--model", f"{tmp_path / 'nets_h2.py'}:five", "--data", "digits", "--out", tmp_path / "a")
    assert r.code == 2 and "outputs shape (1, 5) but --data digits has 10 classes" in r.err
    r = run_cli(
        "train", "--model", f"{tmp_path / 'nets_h2.py'}:wrong_input", "--data", "digits", "--out", tmp_path / "b"
    )
    assert r.code == 2 and "does not accept --data digits samples of shape (1, 32, 32)" in r.err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_train_continues_from_a_saved_pruned_model(run_cli, trained_demo_cnn, digits, tmp_path):
    from edgeprune.prune import apply, plan

    p = plan(trained_demo_cnn, digits.test.tensors[0][:1], ratio=0.5, round_to=8)
    pruned = apply(trained_demo_cnn, p)
    ep.save(pruned, tmp_path / "pruned", plan=p)
    r = run_cli(
        "train",
        "--model",
        tmp_path / "pruned",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--out",
        tmp_path / "tuned",
        "--json",
    )
    assert r.code == 0, r.err
    manifest = json.loads((tmp_path / "tuned" / "model.json").read_text())
    assert manifest["spec"] == "edgeprune:demo-cnn" and manifest["plan"] == json.loads(json.dumps(p.to_dict()))
    tuned = ep.load(tmp_path / "tuned")
    assert sum(t.numel() for t in tuned.parameters()) == sum(t.numel() for t in pruned.parameters())
    assert ep.models.evaluate(tuned, digits.test)["top1"] == json.loads(r.out)["test_top1"]
