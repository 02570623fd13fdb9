"""Tests of edgeprune.prune.schedule: step targets and the unstructured/block schedules with
recovery between steps (AGP hits its sparsity at every step, masks only grow, seed -> same result).

Consumes: the tiny synthetic data and CNN of test_recover. Produces: assertions.
"""
from __future__ import annotations

import pytest
import torch

from edgeprune import recover
from edgeprune.prune import schedule as S
from edgeprune.prune.sparsity import check_pattern, sparsity_report
from test_recover import make_model, tiny_data


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def trained(data):
    model, _ = recover.finetune(make_model(), data, epochs=2, lr=0.05)
    return model


def test_step_targets():
    assert S.step_targets("oneshot", 0.8, 5) == [0.8]
    assert S.step_targets("linear", 0.9, 3) == pytest.approx([0.3, 0.6, 0.9])
    agp = S.step_targets("agp", 0.9, 4)
    ref = [0.9 + (0 - 0.9) * (1 - t / 4) ** 3 for t in range(1, 5)]
    assert agp == pytest.approx(ref) and agp[-1] == pytest.approx(0.9)
    # AGP prunes fast early, slowly late: its increments shrink
    inc = [b - a for a, b in zip([0] + agp, agp)]
    assert inc == sorted(inc, reverse=True)
    assert S.step_targets("agp", 0.9, 3, initial=0.5)[-1] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="unknown schedule"):
        S.step_targets("cubic", 0.5, 3)
    with pytest.raises(ValueError, match="steps"):
        S.step_targets("agp", 0.5, 0)


def test_incremental_ratio_composes():
    kept = 1.0
    prev = 0.0
    for target in (0.3, 0.5, 0.6):
        kept *= 1 - S.incremental_ratio(prev, target)
        prev = target
        assert 1 - kept == pytest.approx(target)


@pytest.mark.parametrize("kind,steps", [("agp", 3), ("linear", 2), ("oneshot", 1)])
def test_sparsify_hits_every_step_target(trained, data, kind, steps):
    res = S.sparsify(trained, data, 0.8, schedule=kind, steps=steps, finetune_epochs=1, distill=True)
    targets = S.step_targets(kind, 0.8, steps)
    assert [row["target"] for row in res.log] == pytest.approx(targets)
    n = sum(m.numel() for m in res.masks.values())
    for row, target in zip(res.log, targets):
        # sparsity after each step's recovery: the target, to within one weight
        assert row["sparsity"] == pytest.approx(target, abs=1.5 / n)
    assert sparsity_report(res.model)["total"]["sparsity"] == pytest.approx(0.8, abs=1.5 / n)
    assert res.log[-1]["val_recovered"] >= res.log[-1]["val_pruned"]  # recovery helps
    assert res.log[-1]["val_recovered"] > 0.9
    # the input model is the untouched teacher
    assert sparsity_report(trained)["total"]["sparsity"] == 0.0


def test_masks_only_grow_and_stay_fixed(trained, data):
    res = S.sparsify(trained, data, 0.7, schedule="linear", steps=3, finetune_epochs=1)
    params = dict(res.model.named_parameters())
    for n, m in res.masks.items():
        assert torch.count_nonzero(params[n][~m]) == 0
    assert res.model.edgeprune_masks is res.masks


def test_block_pattern_schedule_keeps_the_pattern(trained, data):
    res = S.sparsify(trained, data, 0.5, pattern="1x4", schedule="agp", steps=2, finetune_epochs=1)
    assert all(check_pattern(m, "1x4") for m in res.masks.values())
    two_four = S.sparsify(trained, data, None, pattern="2:4", schedule="agp", steps=4, finetune_epochs=1)
    assert len(two_four.log) == 1 and two_four.baseline["schedule"] == "oneshot"
    assert all(check_pattern(m, "2:4") for m in two_four.masks.values())


def test_same_seed_same_masks_and_accuracy(trained, data):
    a = S.sparsify(trained, data, 0.6, schedule="agp", steps=2, finetune_epochs=1)
    b = S.sparsify(trained, data, 0.6, schedule="agp", steps=2, finetune_epochs=1)
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert [r["val_recovered"] for r in a.log] == [r["val_recovered"] for r in b.log]
    for (na, pa), (nb, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), na
