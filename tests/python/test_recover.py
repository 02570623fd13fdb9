"""Tests of edgeprune.recover: the fine-tuning loop, distillation, fixed masks, regularisers, ADMM.

Consumes: a tiny synthetic dataset and a tiny CNN defined here (fast on 2 shared cores).
Produces: assertions on what each method must do.
"""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from edgeprune import recover
from edgeprune.recover import loop as recover_loop


def tiny_data(n=512, classes=4, seed=0):
    """Blobs: class k lights up quadrant k of an 8x8 image, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.6 * torch.randn(n, 1, 8, 8, generator=g)
    for k in range(classes):
        r, c = divmod(k, 2)
        x[y == k, :, r * 4 : (r + 1) * 4, c * 4 : (c + 1) * 4] += 1.0
    split = int(n * 0.75)
    return types.SimpleNamespace(
        train=TensorDataset(x[:split], y[:split]),
        val=TensorDataset(x[split:], y[split:]),
        test=TensorDataset(x[split:], y[split:]),
        num_classes=classes,
        input_shape=(1, 8, 8),
    )


class TinyCNN(nn.Module):
    def __init__(self, c1=8, c2=16, classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.fc = nn.Linear(c2 * 4, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 2).flatten(1))


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyCNN(**kw)


@pytest.fixture(scope="module")
def data():
    return tiny_data()


def test_finetune_learns_and_reports_history(data):
    model = make_model()
    before = recover.top1(model, data.val)
    model, hist = recover.finetune(model, data, epochs=3, lr=0.05)
    assert hist["epochs"][-1]["val"] > 0.9 > before
    assert len(hist["epochs"]) == 3 and hist["val_before"] == pytest.approx(before)
    # cosine schedule: the learning rate decays towards 0 over the run
    lrs = [row["lr"] for row in hist["epochs"]]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.1 * 0.05


def test_same_seed_same_result_and_caller_rng_untouched(data):
    a, ha = recover.finetune(make_model(), data, epochs=2, seed=3)
    b = make_model()
    torch.manual_seed(123)
    r0 = torch.rand(1)
    torch.manual_seed(123)
    b, hb = recover.finetune(b, data, epochs=2, seed=3)
    assert torch.rand(1) == r0  # the global RNG stream is restored after finetune
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    assert ha["epochs"][-1]["val"] == hb["epochs"][-1]["val"]
    c, _ = recover.finetune(make_model(), data, epochs=2, seed=4)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)  # the seed matters (shuffling)


def test_adamw_and_constant_schedule(data):
    model, hist = recover.finetune(make_model(), data, epochs=2, optimizer="adamw", lr=3e-3, lr_schedule="constant")
    assert {row["lr"] for row in hist["epochs"]} == {3e-3}
    assert hist["epochs"][-1]["val"] > 0.8


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="optimizer"):
        recover.RecoverConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr"):
        recover.RecoverConfig(lr=0)
    with pytest.raises(ValueError, match="weight"):
        recover.distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), weight=1.5)


def test_distillation_loss_matches_formula():
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 3, 0])
    T, w = 3.0, 0.6
    loss, ce, kd = recover.distillation_loss(s, t, y, T, w)
    p_t = torch.softmax(t / T, 1)
    ref_kd = (p_t * (torch.log(p_t) - torch.log_softmax(s / T, 1))).sum(1).mean() * T * T
    ref_ce = nn.functional.cross_entropy(s, y)
    assert kd == pytest.approx(float(ref_kd), rel=1e-5)
    assert loss == pytest.approx(float((1 - w) * ref_ce + w * ref_kd), rel=1e-5)
    # identical logits: the KD term vanishes
    assert recover.distillation_loss(s, s, y, T, w)[2] == pytest.approx(0.0, abs=1e-6)


def test_distillation_is_used_when_a_teacher_is_given(data, monkeypatch):
    teacher, _ = recover.finetune(make_model(seed=1), data, epochs=3, lr=0.05)
    # Labels made useless (all class 0): only the teacher carries information, so a student
    # distilled with weight 1 must learn the teacher's predictions; without it, it cannot.
    useless = TensorDataset(data.train.tensors[0], torch.zeros_like(data.train.tensors[1]))
    calls = {"n": 0, "teacher": 0}
    real = recover_loop.distillation_loss

    def counting(s, t, y, temperature, weight):
        calls["n"] += 1
        calls["teacher"] += t is not None
        return real(s, t, y, temperature, weight)

    monkeypatch.setattr(recover_loop, "distillation_loss", counting)
    student, hist = recover.finetune(
        make_model(seed=2), (useless, data.val), epochs=3, lr=0.05, teacher=teacher, distill_weight=1.0, temperature=2.0
    )
    assert hist["distill"] and calls["teacher"] == calls["n"] > 0
    assert hist["epochs"][0]["kd"] > 0
    agree = recover.top1(student, TensorDataset(data.val.tensors[0], teacher(data.val.tensors[0]).argmax(1)))
    assert agree > 0.85
    plain, hp = recover.finetune(make_model(seed=2), (useless, data.val), epochs=3, lr=0.05)
    assert not hp["distill"] and hp["epochs"][0]["kd"] == 0
    assert recover.top1(plain, data.val) < 0.5


def test_masks_stay_fixed_during_recovery(data):
    model = make_model()
    g = torch.Generator().manual_seed(0)
    masks = {
        "conv2.weight": torch.rand(model.conv2.weight.shape, generator=g) > 0.8,
        "fc.weight": torch.rand(model.fc.weight.shape, generator=g) > 0.5,
    }
    for opt in ("sgd", "adamw"):
        m, _ = recover.finetune(make_model(), data, epochs=2, lr=0.01, optimizer=opt, masks=masks)
        for name, mask in masks.items():
            w = dict(m.named_parameters())[name]
            assert torch.count_nonzero(w[~mask]) == 0, (opt, name)
            assert torch.count_nonzero(w[mask]) == int(mask.sum())  # kept weights are still trained, nonzero
    with pytest.raises(ValueError, match="shape"):
        recover.finetune(make_model(), data, epochs=1, masks={"fc.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="unknown parameter"):
        recover.apply_masks(make_model(), {"nope.weight": torch.ones(1)})


def test_early_stopping_restores_best(data):
    model, hist = recover.finetune(make_model(), data, epochs=8, lr=0.05, patience=1, min_delta=1.0)
    # min_delta 1.0 can never be met: stop after the first epoch without improvement
    assert hist["stopped_early"] and len(hist["epochs"]) == 1 and hist["best_epoch"] == 0
    # the restored weights are the epoch-0 ones: accuracy equals the pre-training value
    assert recover.top1(model, data.val) == pytest.approx(hist["val_before"])


def _group_norms(model, channels):
    w = torch.cat([model.conv1.weight.flatten(1), model.bn1.weight[:, None], model.bn1.bias[:, None]], 1)
    return w[channels].norm(dim=1)


@pytest.mark.parametrize("proximal", [False, True])
def test_group_lasso_drives_pruned_groups_to_zero(data, proximal):
    pruned = (0, 2, 4, 6)
    kept = (1, 3, 5, 7)
    base = make_model()
    groups = [recover.ChannelGroupSpec((("conv1.weight", 0), ("bn1.weight", 0), ("bn1.bias", 0)), channels=pruned)]
    reg = recover.GroupLasso(groups, lam=1.0 if proximal else 0.3, proximal=proximal)
    start = _group_norms(base, list(pruned)).detach().clone()
    model, hist = recover.finetune(
        base, data, epochs=4, lr=0.05, optimizer="sgd", weight_decay=0, regularizers=[reg], restore_best=False
    )
    end = _group_norms(model, list(pruned)).detach()
    assert end.max() < 0.01 * start.min(), (start, end)
    assert _group_norms(model, list(kept)).min() > 0.3  # the other channels are left to the task
    if proximal:
        assert end.max() == 0.0  # the group soft threshold gives exact zeros
    assert hist["regularizers"][0]["name"] == "group-lasso"


def test_group_lasso_per_layer_pairs_conv_with_bn():
    groups = recover.GroupLasso.per_layer(make_model())
    assert [g.members for g in groups] == [
        (("conv1.weight", 0), ("bn1.weight", 0), ("bn1.bias", 0)),
        (("conv2.weight", 0), ("bn2.weight", 0), ("bn2.bias", 0)),
    ]  # the classifier is not a prunable group


# lr 0.05, no weight decay and the last epoch kept: only the regularizer under test moves the weights
PLAIN = dict(lr=0.05, weight_decay=0, restore_best=False)


def test_bn_l1_shrinks_gammas(data):
    plain, _ = recover.finetune(make_model(), data, epochs=3, **PLAIN)
    g_plain = torch.cat([plain.bn1.weight, plain.bn2.weight]).detach().abs()
    slim, h = recover.finetune(make_model(), data, epochs=3, **PLAIN, regularizers=[recover.BNL1(lam=0.3)])
    g_slim = torch.cat([slim.bn1.weight, slim.bn2.weight]).detach().abs()
    assert g_slim.sum() < 0.3 * g_plain.sum()
    assert h["epochs"][-1]["val"] > 0.9  # and the task is still solved
    prox, h = recover.finetune(
        make_model(), data, epochs=3, **PLAIN, regularizers=[recover.BNL1(lam=2.0, proximal=True)]
    )
    g_prox = torch.cat([prox.bn1.weight, prox.bn2.weight]).detach().abs()
    assert int((g_prox == 0).sum()) >= 8 and int((g_plain == 0).sum()) == 0  # soft threshold: exact zeros
    assert h["epochs"][-1]["val"] > 0.9


def test_weight_l1_and_l2(data):
    plain, _ = recover.finetune(make_model(), data, epochs=2, **PLAIN)
    l1, _ = recover.finetune(make_model(), data, epochs=2, **PLAIN, regularizers=[recover.WeightNorm(1e-3, p=1)])
    l2, _ = recover.finetune(make_model(), data, epochs=2, **PLAIN, regularizers=[recover.WeightNorm(1e-2, p=2)])
    s = lambda m, p: sum(float(mod.weight.detach().norm(p)) for mod in (m.conv1, m.conv2, m.fc))  # noqa: E731
    assert s(l1, 1) < s(plain, 1)
    assert s(l2, 2) < s(plain, 2)
    with pytest.raises(ValueError, match="unknown regulariser"):
        recover.make_regularizer("l3", plain)


def test_lambda_schedules():
    assert [recover.LambdaSchedule("linear")(t) for t in (0, 0.5, 1)] == [0, 0.5, 1]
    assert recover.LambdaSchedule("step", warmup=0.3)(0.2) == 0 and recover.LambdaSchedule("step", warmup=0.3)(0.4) == 1
    cos = recover.LambdaSchedule("cosine")
    assert cos(0) == 0 and cos(0.5) == pytest.approx(0.5) and cos(1) == pytest.approx(1)
    reg = recover.BNL1(lam=2.0, schedule=recover.LambdaSchedule("linear", warmup=0.5))
    assert reg.lam_at(0.25) == 0 and reg.lam_at(0.75) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="schedule"):
        recover.LambdaSchedule("exp")


def test_admm_reaches_the_sparse_set_and_keeps_accuracy(data):
    teacher, _ = recover.finetune(make_model(), data, epochs=3, lr=0.05)
    model = make_model()
    model.load_state_dict(teacher.state_dict())
    names = ["conv2.weight", "fc.weight"]
    model, masks, hist = recover.admm_prune(
        model, data, recover.magnitude_projection(0.75), names, epochs=3, lr=0.02, rho=1.0, teacher=teacher
    )
    for n in names:
        w = dict(model.named_parameters())[n]
        assert masks[n].float().mean() == pytest.approx(0.25, abs=0.01)
        assert torch.count_nonzero(w[~masks[n]]) == 0
    assert hist["primal_residual"] < 0.05  # W moved close to its projection before the hard cut
    assert recover.top1(model, data.val) > 0.85


def test_magnitude_projection_keeps_largest():
    w = torch.tensor([[0.1, -0.5, 0.2, 0.9], [0.05, 0.3, -0.7, 0.0]])
    keep = recover.magnitude_projection(0.5)("w", w)
    assert keep.tolist() == [[False, True, False, True], [False, True, True, False]]


def test_distill_flag_off_ignores_the_teacher(data):
    teacher = make_model(seed=1)
    _, hist = recover.finetune(make_model(), data, epochs=1, teacher=teacher, distill=False)
    assert not hist["distill"] and hist["epochs"][0]["kd"] == 0


def test_recover_never_imports_prune():
    """prune.schedule / prune.search import recover, never the other way round."""
    import ast
    from pathlib import Path

    pkg = Path(recover.__file__).parent
    bad = []
    for path in pkg.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if (node.level == 0 and mod.startswith("edgeprune.prune")) or (
                    node.level == 2 and mod.startswith("prune")
                ):
                    bad.append(f"{path.name}: from {'.' * node.level}{mod}")
            elif isinstance(node, ast.Import):
                bad += [f"{path.name}: import {a.name}" for a in node.names if a.name.startswith("edgeprune.prune")]
    assert not bad, bad
