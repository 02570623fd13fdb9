"""Regularisers and ADMM as documented (docs/methods.md): none is silently a no-op, the sparse
ones leave exact zeros, ADMM's rho rises, and every method is reachable from the CLI.

Consumes: the tiny synthetic data and CNN of test_recover, written to an .npz and a model file for
the CLI runs. Produces: assertions.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from conftest_tiny import *  # noqa: F403  (module-scoped fixtures: data, trained)

import edgeprune as ep
from edgeprune import recover
from edgeprune.errors import UserError
from edgeprune.prune import schedule as S

X = torch.zeros(1, 1, 8, 8)


def _zeros(model) -> int:
    return sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


@pytest.mark.parametrize("name", recover.regularizer_names())
def test_every_regulariser_changes_the_weights(trained, data, name):
    import copy

    kw = dict(epochs=1, max_batches_per_epoch=4, restore_best=False)
    plain, _ = recover.finetune(copy.deepcopy(trained), data, **kw)
    reg = recover.make_regularizer(name, trained)
    model, hist = recover.finetune(copy.deepcopy(trained), data, regularizers=[reg], **kw)
    assert hist["regularizers"][0]["name"] == name
    differs = [not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), model.state_dict().values())]
    assert any(differs), name
    assert sorted(model.state_dict()) == sorted(plain.state_dict())  # L0 gates folded away at the end


def test_proximal_forms_leave_exact_zeros_subgradient_does_not(trained, data):
    import copy

    got = {}
    for name, lam in (("l1", 1e-3), ("l1-prox", 1e-1), ("irls", 1e-3), ("l0", 5e-2)):
        # a few dozen steps here: the gates get a faster learning rate to travel from open to closed
        reg = recover.L0(lam, gate_lr=0.5) if name == "l0" else recover.make_regularizer(name, trained, lam)
        model, _ = recover.finetune(copy.deepcopy(trained), data, epochs=2, regularizers=[reg], restore_best=False)
        got[name] = _zeros(model)
    assert got["l1"] == 0
    assert got["l1-prox"] > 100 and got["irls"] > 100 and got["l0"] > 100, got


def test_group_lasso_acts_in_a_one_shot_structured_run(trained, data):
    kw = dict(ratio=0.25, schedule="oneshot", round_to=1, finetune_epochs=1)
    plain = S.prune_structured(trained, data, X, **kw)
    reg = S.prune_structured(
        trained, data, X, regularizers=[recover.make_regularizer("group-lasso", trained, 10.0)], **kw
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), reg.model.state_dict().values())
    )
    ran = reg.to_dict()["baseline"]["sparsity_training"]
    assert ran["regularizers"][0]["name"] == "group-lasso" and ran["epochs"] == 1
    assert "sparsity_training" not in plain.to_dict()["baseline"]
    with pytest.raises(UserError, match="recovery has 0 epochs"):
        S.prune_structured(
            trained, data, X, ratio=0.25, finetune_epochs=0, regularizers=[recover.make_regularizer("l1", trained)]
        )


@pytest.mark.parametrize("method", ["admm", "irls", "l0"])
def test_sparse_methods_reach_the_target_with_exact_zeros(trained, data, method):
    cfg = recover.RecoverConfig(epochs=1, lr=0.05)
    if method == "admm":
        res = S.sparsify_admm(trained, data, 0.8, admm_epochs=3, retrain_epochs=1, recover=cfg)
        rhos = res.baseline["rhos"]
        assert rhos == sorted(rhos) and rhos[-1] > rhos[0]
    else:
        reg = recover.make_regularizer(method, trained)
        res = S.sparsify(trained, data, 0.8, schedule="agp", steps=2, recover=cfg, regularizers=[reg])
        assert res.baseline["sparsity_training"]["regularizers"][0]["name"] == method
        assert res.log[0]["regularizers"][0]["name"] == method and res.log[-1]["regularizers"] == []
    params = dict(res.model.named_parameters())
    total = sum(m.numel() for m in res.masks.values())
    zeros = sum(int((params[n] == 0).sum()) for n in res.masks)
    assert zeros / total == pytest.approx(0.8, abs=0.02)
    assert recover.top1(res.model, data.val) > 0.85


# -- the CLI ----------------------------------------------------------------------------------

# source text on purpose (NoConsumer is also a class in test_methods.py, Tiny mirrors test_recover's
# TinyCNN): the CLI imports this file as a user's model file, which cannot import the test modules
MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(16)
            self.fc = nn.Linear(64, 4)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(self.bn2(self.conv2(x)))
            return self.fc(nn.functional.adaptive_avg_pool2d(x, 2).flatten(1))

    class NoConsumer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.fc = nn.Linear(64, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.conv1(x)).sum(1).flatten(1))

    def tiny():
        torch.manual_seed(0)
        m = Tiny()
        m.input_shape = (1, 8, 8)
        return m

    def no_consumer():
        torch.manual_seed(0)
        m = NoConsumer()
        m.input_shape = (1, 8, 8)
        return m
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("methods_cli")
    (d / "tiny.py").write_text(MODEL_FILE)
    x = torch.cat([data.train.tensors[0], data.val.tensors[0]]).numpy()
    y = torch.cat([data.train.tensors[1], data.val.tensors[1]]).numpy()
    np.savez(d / "blobs.npz", x=x.astype(np.float32), y=y.astype(np.int64))
    return d


FAST = ("--finetune-epochs", "1", "--round-to", "1")


def _prune(run_cli, files, out, *flags, model="tiny"):
    return run_cli(
        "prune", "--model", f"{files / 'tiny.py'}:{model}", "--data", str(files / "blobs.npz"), *flags, "--out", out
    )


def test_cli_admm_reaches_the_sparsity(run_cli, files, tmp_path):
    res = _prune(run_cli, files, tmp_path / "a", "--sparsity", "0.7", "--schedule", "admm", "--json")
    assert res.code == 0, res.err
    rep = json.loads((tmp_path / "a" / "sparsity.json").read_text())
    assert rep["total"]["sparsity"] == pytest.approx(0.7, abs=0.02)
    sched = json.loads((tmp_path / "a" / "schedule.json").read_text())
    assert sched["baseline"]["schedule"] == "admm" and sched["baseline"]["rhos"][-1] == pytest.approx(1.0)
    res = _prune(run_cli, files, tmp_path / "b", "--ratio", "0.5", "--schedule", "admm")
    assert res.code == 2 and "--schedule admm prunes weights: give --sparsity" in res.err


def test_cli_regularize_l2_is_applied_and_recorded(run_cli, files, tmp_path):
    for name, extra in (("plain", ()), ("l2", ("--regularize", "l2", "--reg-lambda", "0.05"))):
        res = _prune(run_cli, files, tmp_path / name, "--ratio", "0.25", *FAST, *extra)
        assert res.code == 0, res.err
    sched = json.loads((tmp_path / "l2" / "schedule.json").read_text())
    assert sched["baseline"]["sparsity_training"]["regularizers"][0]["name"] == "l2"
    a = ep.load(tmp_path / "plain" / "model", trust_code=True).state_dict()
    b = ep.load(tmp_path / "l2" / "model", trust_code=True).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    res = _prune(run_cli, files, tmp_path / "z", "--ratio", "0.25", "--regularize", "l1-prox", "--finetune-epochs", "0")
    assert res.code == 2 and "recovery has 0 epochs" in res.err


def test_cli_weight_criteria_and_mean_threshold(run_cli, files, tmp_path):
    masks = {}
    for crit in ("gradient", "random", "magnitude"):
        res = _prune(run_cli, files, tmp_path / crit, "--sparsity", "0.5", "--sparsity-criterion", crit, *FAST)
        assert res.code == 0, res.err
        masks[crit] = ep.load(tmp_path / crit / "model", trust_code=True).state_dict()["conv2.weight"] == 0
    assert not torch.equal(masks["gradient"], masks["magnitude"])
    assert not torch.equal(masks["random"], masks["magnitude"])
    res = _prune(
        run_cli, files, tmp_path / "mean", "--sparsity", "0.9", "--threshold", "mean", "--threshold-value", "0.5", *FAST
    )
    assert res.code == 0, res.err
    sp = json.loads((tmp_path / "mean" / "sparsity.json").read_text())["total"]["sparsity"]
    assert 0.05 < sp < 0.9  # below 0.5 x mean goes, well short of the cap


def test_cli_pure_relative_threshold_is_coef_times_max(run_cli, files, tmp_path):
    from edgeprune.prune.importance import score_groups

    res = _prune(run_cli, files, tmp_path / "r", "--threshold", "relative", "--threshold-value", "0.8", *FAST, "--json")
    assert res.code == 0, res.err
    model = ep.models.build(f"{files / 'tiny.py'}:tiny")
    scores = score_groups(ep.graph.trace(model, X), "l2")
    top = max(scores[g].max() for g in ("conv1", "conv2"))
    # channels at or above 0.8 x the max score stay; --max-layer-ratio 0.9 keeps at least 10 % of a group
    want = {g: max(int((scores[g] >= 0.8 * top).sum()), len(scores[g]) - int(0.9 * len(scores[g]))) for g in scores}
    pruned = ep.load(tmp_path / "r" / "model", trust_code=True)
    assert (pruned.conv1.out_channels, pruned.conv2.out_channels) == (want["conv1"], want["conv2"])
    assert want["conv1"] + want["conv2"] < 24


def test_cli_connection_on_a_conv_without_a_following_layer_exits_2(run_cli, files, tmp_path):
    res = run_cli(
        "prune",
        "--model",
        f"{files / 'tiny.py'}:no_consumer",
        "--ratio",
        "0.5",
        "--importance",
        "connection",
        "--out",
        tmp_path / "c",
    )
    assert res.code == 2
    assert "no following layer" in res.err and "use another importance" in res.err and "l2" in res.err


def test_adaptive_search_rescans_before_every_step_and_charges_failures(trained, data, tmp_path):
    from edgeprune.prune import search as SE

    res = SE.search(trained, data, X, SE.Budget("macs", 0.5), steps=3, round_to=1, finetune_epochs=1, max_acc_drop=50)
    done = [s for s in res.log["steps"] if "accepted" in s]
    assert len(done) >= 2
    for s in done:  # every step: a scan of the model it was about to prune, with the drop per group
        assert {r["group"] for r in s["sensitivity"]} <= {"conv1", "conv2"} and s["drop_per_group"]
    # the second scan ran on the pruned, recovered model: its channel counts are the first step's kept ones
    assert {r["group"]: r["channels"] for r in done[1]["sensitivity"]} == {
        g: k for g, k in done[0]["kept"].items() if g in {r["group"] for r in done[1]["sensitivity"]}
    }
    assert res.met and ep.prune.count_macs_params(res.model, X)[0] <= 0.5 * ep.prune.count_macs_params(trained, X)[0]
    paths = SE.write_log(res.log, tmp_path)
    assert json.loads(paths["json"].read_text())["steps"][0]["drop_per_group"]

    def pair_metric(model, dataset):  # each group alone is harmless, both together are not
        return 1.0 - 0.1 * (model.conv1.out_channels < 8 and model.conv2.out_channels < 16)

    moved = SE.search(
        trained,
        data,
        X,
        SE.Budget("macs", 0.6),
        steps=2,
        levels=(0.25,),
        round_to=1,
        finetune_epochs=0,
        max_acc_drop=0.0,
        max_backoff=1,
        metric=pair_metric,
    )
    rows = [s for s in moved.log["steps"] if "allocation" in s]
    i = next(i for i, r in enumerate(rows) if not r["accepted"])  # the first step that cut both
    assert min(rows[i + 1]["allocation"]["penalty"].get(g, 0) for g in ("conv1", "conv2")) > 0
    # ... and the search then found a way round it: only one group cut, the budget and the gate met
    assert moved.met and moved.best["drop_points"] == 0 and moved.model.conv2.out_channels == 16


def test_a_regulariser_with_nothing_to_act_on_says_so(data):
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    with pytest.raises(UserError, match="bn-l1: the model has no BatchNorm"):
        recover.finetune(mlp, data, epochs=1, regularizers=[recover.make_regularizer("bn-l1", mlp)])
    with pytest.raises(UserError, match="group-lasso: no channel group"):
        recover.finetune(mlp, data, epochs=1, regularizers=[recover.GroupLasso([])])
