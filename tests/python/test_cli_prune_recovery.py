"""Tests of the recovery flags of `edgeprune prune`: adaptive budgets, schedules, sparsity,
the accuracy gate (exit 3 with the best point), reproducibility, and one-line input errors.

Consumes: the cached trained demo CNN (tests/conftest.py) and the shipped digits data.
Produces: assertions on exit codes, JSON results and the files written.
"""

from __future__ import annotations

import json

import pytest
import torch

import edgeprune as ep

FAST = ("--finetune-epochs", "1", "--steps", "2")


@pytest.fixture
def prune_cli(run_cli, trained_demo_cnn_dir):
    """``prune_cli(*flags, out=, as_json=True)``: ``edgeprune prune --model <the demo CNN> --data digits
    FLAGS... --out OUT [--json]`` in-process."""

    def run(*flags, out, as_json=True):
        tail = ["--out", out, *(["--json"] if as_json else [])]
        return run_cli("prune", "--model", trained_demo_cnn_dir, "--data", "digits", *flags, *tail)

    return run


def _json(res):
    assert res.code in (0, 3), res.err
    return json.loads(res.out)


def test_adaptive_macs_budget_writes_model_log_and_plot(prune_cli, tmp_out):
    res = prune_cli("--budget-macs", "0.5", "--round-to", "4", *FAST, "--max-acc-drop", "5", out=tmp_out)
    r = _json(res)
    assert res.code == 0 and r["met"] and r["schedule"] == "adaptive"
    assert r["after"]["macs"] <= 0.5 * r["before"]["macs"]
    assert r["drop_points"]["val"] <= 5
    for name in ("model/model.json", "search.json", "search.png", "plan.json", "result.json"):
        assert (tmp_out / name).is_file(), name
    log = json.loads((tmp_out / "search.json").read_text())
    assert log["sensitivity"] and log["steps"] and log["result"]["met"]
    # the saved model reloads (plans replayed) with the accuracy the result reports
    m = ep.load(tmp_out / "model")
    data = ep.data.load("digits")
    assert ep.models.evaluate(m, data.test)["top1"] == pytest.approx(r["after"]["test_top1"])
    assert ep.prune.count_macs_params(m, torch.zeros(1, 1, 32, 32))[0] == r["after"]["macs"]


def test_same_command_twice_same_plan_and_accuracy(prune_cli, tmp_path):
    outs = []
    for i in range(2):
        res = prune_cli(
            "--ratio",
            "0.4",
            "--schedule",
            "agp",
            *FAST,
            "--round-to",
            "4",
            "--regularize",
            "bn-l1",
            "--reg-lambda",
            "1e-3",
            out=tmp_path / f"o{i}",
        )
        outs.append(_json(res))
    sched = json.loads((tmp_path / "o0" / "schedule.json").read_text())
    assert sched["baseline"]["regularizers"][0]["name"] == "bn-l1" and len(sched["steps"]) == 2
    assert outs[0]["plan_hashes"] == outs[1]["plan_hashes"] and outs[0]["plan_hashes"]
    assert outs[0]["after"] == outs[1]["after"]
    assert (tmp_path / "o0" / "plans.json").read_text() == (tmp_path / "o1" / "plans.json").read_text()


def test_gate_fails_with_exit_3_and_best_point(prune_cli, tmp_out):
    # a third of the MACs in one step, with no drop allowed and no recovery: cannot be met
    res = prune_cli(
        "--budget-macs", "0.3", "--max-acc-drop", "0", "--finetune-epochs", "0", "--steps", "1", out=tmp_out
    )
    assert res.code == 3
    r = json.loads(res.out)
    assert not r["met"] and r["reason"]
    assert "best point reached" in res.err and "quality gate failed" in res.err
    assert (tmp_out / "model" / "model.json").is_file()  # the best point is saved


def test_sparsity_2_4_and_report(prune_cli, tmp_out):
    res = prune_cli("--sparsity", "0.5", "--sparsity-pattern", "2:4", "--finetune-epochs", "1", out=tmp_out)
    r = _json(res)
    assert res.code == 0 and r["pattern"] == "2:4"
    m = ep.load(tmp_out / "model")
    assert m.edgeprune_masks
    for name, mask in m.edgeprune_masks.items():
        mat = mask.reshape(mask.shape[0], -1)
        assert (mat.reshape(mat.shape[0], -1, 4).sum(2) == 2).all(), name
        w = dict(m.named_parameters())[name]
        assert torch.count_nonzero(w[~mask]) == 0
    rep = json.loads((tmp_out / "sparsity.json").read_text())
    assert {row["layer"] for row in rep["layers"] if row["masked"]} == set(m.edgeprune_masks)


def test_latency_budget_on_rpi4(prune_cli, trained_demo_cnn_dir, tmp_out):
    base = ep.estimate(ep.load(trained_demo_cnn_dir), "rpi4").total_ms
    res = prune_cli(
        "--budget-latency",
        f"{0.6 * base:.6f}",
        "--target",
        "rpi4",
        "--round-to",
        "4",
        *FAST,
        "--max-acc-drop",
        "10",
        out=tmp_out,
    )
    r = _json(res)
    assert res.code == 0, r["reason"]
    assert ep.estimate(ep.load(tmp_out / "model"), "rpi4").total_ms <= 0.6 * base
    assert r["budget"]["kind"] == "latency" and r["budget"]["target"] == "rpi4"


@pytest.mark.parametrize(
    "argv,message",
    [
        (("--budget-macs", "0.5"), "--data is required"),
        (("--data", "digits", "--budget-latency", "3"), "--target"),
        (("--data", "digits", "--schedule", "adaptive", "--ratio", "0.5"), "needs a budget"),
        (("--data", "digits", "--budget-macs", "0.5", "--schedule", "agp"), "--schedule adaptive"),
        (("--data", "digits", "--sparsity", "0.7", "--sparsity-pattern", "2:4"), "2:4"),
        (("--data", "nope-no-such-data", "--ratio", "0.5"), "--data nope-no-such-data"),
        (("--data", "digits", "--budget-latency", "3", "--target", "no-such-board"), "--target no-such-board"),
    ],
)
def test_bad_input_is_one_line_exit_2(run_cli, trained_demo_cnn_dir, tmp_out, argv, message):
    res = run_cli("prune", "--model", trained_demo_cnn_dir, *argv, "--out", tmp_out)
    assert res.code == 2, res.err
    lines = [ln for ln in res.err.strip().splitlines() if ln]
    assert len(lines) == 1 and message in lines[0], res.err
    assert not tmp_out.exists()  # nothing written on bad input


def test_dynamic_threshold_flags(prune_cli, trained_demo_cnn_dir, tmp_out):
    from edgeprune.prune.sparsity import prunable_weights

    res = prune_cli(
        "--sparsity",
        "0.8",
        "--threshold",
        "relative",
        "--threshold-value",
        "0.05",
        "--finetune-epochs",
        "0",
        out=tmp_out,
    )
    r = _json(res)
    m = ep.load(trained_demo_cnn_dir)
    params = dict(m.named_parameters())
    w = torch.cat([params[n].detach().abs().flatten() for n in prunable_weights(m)])
    expected = float((w < 0.05 * w.max()).float().mean())
    assert expected < 0.8  # the cap does not bind here: the threshold alone decides
    assert r["sparsity"]["sparsity"] == pytest.approx(expected, abs=1e-4)
    bad = prune_cli("--sparsity", "0.8", "--threshold", "percentile", out=tmp_out.parent / "o2", as_json=False)
    assert bad.code == 2 and "--threshold-value" in bad.err
