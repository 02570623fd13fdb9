"""Tests of edgeprune.prune.search: budgets (MACs, params, estimated latency on rpi4), the
sensitivity scan, greedy allocation, back-off and the gate, reproducibility, and the log files.

Consumes: the tiny synthetic data and CNN of test_recover. Produces: assertions.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest_tiny import *  # noqa: F403  (module-scoped fixture data; trained is its own below)
from test_recover import make_model

import edgeprune as ep
from edgeprune import recover
from edgeprune.prune import PrunePlan
from edgeprune.prune import search as S

X = torch.zeros(1, 1, 8, 8)


# not conftest_tiny's trained: a third epoch, and an input shape for the latency budget's estimate
@pytest.fixture(scope="module")
def trained(data):
    model, _ = recover.finetune(make_model(), data, epochs=3, lr=0.05)
    model.input_shape = (1, 8, 8)
    return model


def _run(trained, data, budget, **kw):
    kw.setdefault("max_acc_drop", 5.0)
    kw.setdefault("steps", 3)
    kw.setdefault("round_to", 2)
    kw.setdefault("finetune_epochs", 1)
    return S.search(trained, data, X, budget, **kw)


def _macs(m):
    return ep.prune.count_macs_params(m, X)[0]


def test_macs_budget_is_met_and_plans_replay(trained, data):
    res = _run(trained, data, S.Budget("macs", 0.5))
    assert res.met, res.reason
    assert _macs(res.model) <= 0.5 * _macs(trained)
    assert res.best["drop_points"] <= 5.0
    assert res.log["allocation"]["feasible"]
    # the sensitivity scan covered both groups, each point cheaper than the baseline
    assert {r["group"] for r in res.log["sensitivity"]} == {"conv1", "conv2"}
    assert all(r["kept"] < r["channels"] and r["cost"] < res.log["baseline"]["cost"] for r in res.log["sensitivity"])
    # the plans replay in order on a fresh model, and the weights then fit exactly
    fresh = make_model(seed=5)
    for p in res.plans:
        fresh = ep.prune.apply(fresh, PrunePlan.from_json(p.to_json()))
    fresh.load_state_dict(res.model.state_dict())
    fresh.eval()
    res.model.eval()
    xb = data.val.tensors[0][:16]
    assert torch.allclose(fresh(xb), res.model(xb), atol=1e-6)
    # the input model is untouched (it was the distillation teacher)
    assert trained.conv2.weight.shape[0] == 16


def test_params_budget_absolute_count(trained, data):
    base_params = sum(p.numel() for p in trained.parameters())
    res = _run(trained, data, S.Budget("params", int(0.6 * base_params)))
    assert res.met and sum(p.numel() for p in res.model.parameters()) <= 0.6 * base_params


def test_latency_budget_on_rpi4_meets_the_estimate(trained, data):
    base_ms = ep.estimate(trained, "rpi4", threads=1).total_ms
    budget = S.Budget("latency", 0.7 * base_ms, target="rpi4", threads=1)
    res = _run(trained, data, budget)
    assert res.met, res.reason
    assert ep.estimate(res.model, "rpi4", threads=1).total_ms <= 0.7 * base_ms
    assert res.log["budget"]["unit"] == "ms"


def test_same_seed_same_plans_and_accuracy(trained, data):
    a = _run(trained, data, S.Budget("macs", 0.5))
    b = _run(trained, data, S.Budget("macs", 0.5))
    assert [p.hash for p in a.plans] == [p.hash for p in b.plans]
    assert a.best == b.best
    assert [s.get("val_recovered") for s in a.log["steps"]] == [s.get("val_recovered") for s in b.log["steps"]]


def test_unmeetable_drop_backs_off_and_reports_the_best_point(trained, data):
    # a metric that any removal of conv2 channels hurts (pluggable metrics are part of the API),
    # a budget that needs them removed, and no drop allowed: back-offs are tried, then it stops
    def width_metric(model, dataset):
        return model.conv2.out_channels / 16

    res = _run(
        trained, data, S.Budget("macs", 0.1), max_acc_drop=0.0, max_backoff=1, finetune_epochs=0, metric=width_metric
    )
    assert not res.met
    assert "max-acc-drop" in res.reason or "over the budget" in res.reason
    steps = [s for s in res.log["steps"] if "accepted" in s]
    assert any(not s["accepted"] for s in steps)
    assert any("backoff_to" in s for s in steps)
    best = res.best
    assert best["drop_points"] <= 0.0 + 1e-9  # the best point respects the accuracy limit
    assert best["cost"] > res.log["budget"]["limit"]  # ... and therefore misses the budget


def test_allocation_takes_the_insensitive_group_first(trained, data):
    engine = S._Engine(X, "l2", 2, 0, None, ())
    graph, scores = engine.analyse(trained)
    budget = S.Budget("macs", 0.9)
    base = budget.cost(trained, X)
    scan = []
    for gid, size in S._group_sizes(graph).items():
        for kept in (size * 3 // 4, size // 2):
            p = engine.plan(trained, graph, scores, {gid: 1 - kept / size})
            scan.append(
                {
                    "group": gid,
                    "kept": kept,
                    "channels": size,
                    "drop": 0.5 if gid == "conv2" else 0.0,  # conv2 declared very sensitive
                    "cost": budget.cost(engine.apply(trained, p), X),
                }
            )
    kept, cost, moves = S.allocate(trained, engine, budget, scan, 0.9 * base, base, graph, scores)
    assert moves[0]["group"] == "conv1"
    assert cost <= 0.9 * base


def test_log_files(trained, data, tmp_path):
    res = _run(trained, data, S.Budget("macs", 0.6))
    paths = S.write_log(res.log, tmp_path)
    log = json.loads(paths["json"].read_text())
    assert log["result"]["met"] == res.met and len(log["steps"]) == len(res.log["steps"])
    assert log["budget"]["kind"] == "macs" and log["sensitivity"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_validation():
    with pytest.raises(ValueError, match="unknown budget"):
        S.Budget("flops", 0.5)
    with pytest.raises(ValueError, match="target profile"):
        S.Budget("latency", 3.0)
    with pytest.raises(ValueError, match="> 0"):
        S.Budget("macs", 0)
    assert S.Budget("macs", 0.4).limit(1000) == pytest.approx(400)
    assert S.Budget("macs", 5000).limit(1000) == 5000


def test_nothing_prunable_is_reported_not_crashed(data):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))  # outputs are the classes
    model.input_shape = (1, 8, 8)
    res = S.search(model, data, X, S.Budget("macs", 0.5), steps=2, finetune_epochs=0)
    assert not res.met and "cannot be reached" in res.reason
    assert res.plans == [] and not res.log["allocation"]["feasible"]


def test_data_driven_importance_uses_the_training_split(trained, data):
    res = _run(trained, data, S.Budget("macs", 0.6), importance="taylor")
    assert res.met and res.log["settings"]["importance"] == "taylor"
