"""Tests of edgeprune.prune.schedule: step targets and the unstructured/block schedules with
recovery between steps (AGP hits its sparsity at every step, masks only grow, seed -> same result).

Consumes: the tiny synthetic data and CNN of test_recover. Produces: assertions.
"""

from __future__ import annotations

import pytest
import torch
from conftest_tiny import *  # noqa: F403  (module-scoped fixtures: data, trained)
from test_recover import make_model

from edgeprune import recover
from edgeprune.prune import schedule as S
from edgeprune.prune.sparsity import check_pattern, sparsity_report


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
    for (na, pa), (_nb, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), na


X = torch.zeros(1, 1, 8, 8)


def _channels(m):
    return m.conv1.out_channels + m.conv2.out_channels


def test_structured_agp_steps_with_recovery_and_replay(trained, data):
    import edgeprune as ep

    res = S.prune_structured(
        trained, data, X, ratio=0.5, schedule="agp", steps=3, round_to=1, finetune_epochs=1, global_ranking=False
    )
    assert len(res.log) == 3
    # AGP: the channel count follows s_t = 0.5 * (1 - (1 - t/3)^3) of the original 24
    kept_per_step = []
    m = make_model(seed=9)
    for p in res.plans:
        m = ep.prune.apply(m, p)
        kept_per_step.append(_channels(m))
    targets = [24 * (1 - s) for s in S.step_targets("agp", 0.5, 3)]
    assert kept_per_step[-1] == 12
    for kept, target in zip(kept_per_step, targets):
        assert abs(kept - target) <= 2  # per-group floor rounding
    assert kept_per_step == sorted(kept_per_step, reverse=True)
    assert all(r["val_recovered"] >= r["val_pruned"] for r in res.log)
    m.load_state_dict(res.model.state_dict())  # the plans replay to the recovered shape
    assert res.model.edgeprune_plan == res.plans
    assert _channels(trained) == 24  # input untouched


def test_structured_target_macs_linear(trained, data):
    import edgeprune as ep

    res = S.prune_structured(
        trained, data, X, target_macs=0.5, schedule="linear", steps=2, round_to=2, finetune_epochs=1
    )
    base = ep.prune.count_macs_params(trained, X)[0]
    ratios = [r["macs_ratio"] for r in res.log]
    assert ratios[-1] <= 0.5 and ratios[0] > ratios[-1]
    assert ep.prune.count_macs_params(res.model, X)[0] <= 0.5 * base
    with pytest.raises(ValueError, match="exactly one"):
        S.prune_structured(trained, data, X, ratio=0.5, target_macs=0.5)


def test_structured_regularizer_acts_between_steps(trained, data):
    reg = recover.BNL1(lam=0.3)
    with_reg = S.prune_structured(
        trained,
        data,
        X,
        ratio=0.25,
        schedule="linear",
        steps=2,
        round_to=1,
        finetune_epochs=1,
        regularizers=[reg],
        importance="bn_scale",
    )
    plain = S.prune_structured(
        trained, data, X, ratio=0.25, schedule="linear", steps=2, round_to=1, finetune_epochs=1, importance="bn_scale"
    )
    # the BN-L1 recovery after step 1 changes which channels step 2 removes or the weights it keeps
    assert any(a.hash != b.hash for a, b in zip(with_reg.plans, plain.plans)) or not torch.equal(
        with_reg.model.bn2.weight, plain.model.bn2.weight
    )


def test_structured_dynamic_threshold_solve_and_relative(trained, data):
    from edgeprune.prune.threshold import DynamicThreshold

    solved = S.prune_structured(
        trained,
        data,
        X,
        ratio=0.5,
        schedule="linear",
        steps=2,
        round_to=1,
        finetune_epochs=1,
        threshold=DynamicThreshold("solve", scope="layer"),
    )
    assert _channels(solved.model) == 12  # per layer: half of 8 and half of 16
    assert solved.model.conv1.out_channels == 4 and solved.model.conv2.out_channels == 8
    assert solved.plans[0].settings["threshold"]["method"] == "solve"
    # relative: channels below 0.9 x the max score of their layer go, recomputed at every step
    rel = S.prune_structured(
        trained,
        data,
        X,
        schedule="oneshot",
        round_to=1,
        finetune_epochs=0,
        threshold=DynamicThreshold("relative", 0.9, scope="layer"),
    )
    from edgeprune.graph import trace
    from edgeprune.prune.importance import score_groups

    sc = score_groups(trace(trained, X), "l2")
    expected = sum(int((s >= 0.9 * s.max()).sum()) for s in (sc["conv1"], sc["conv2"]))
    assert _channels(rel.model) == expected < 24


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.8), ("4x1", 0.5)])
def test_admm_sparsify_per_layer(trained, data, pattern, sparsity):
    res = S.sparsify_admm(
        trained,
        data,
        sparsity,
        pattern=pattern,
        rho=1.0,
        admm_epochs=2,
        retrain_epochs=1,
        recover=recover.RecoverConfig(lr=0.02),
    )
    params = dict(res.model.named_parameters())
    for n, m in res.masks.items():
        assert m.float().mean() == pytest.approx(1 - sparsity, abs=0.05), n  # per layer
        assert check_pattern(m, pattern)
        assert torch.count_nonzero(params[n][~m]) == 0
    assert res.log[0]["primal_residual"] < 0.1
    assert res.log[0]["val_recovered"] > 0.9
