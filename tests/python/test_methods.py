"""The pruning methods against their definitions (docs/methods.md): each score against a direct
numpy computation, the registries (a user-defined importance end to end), thresholds, and the
data batching shared by every scorer.

Consumes: tiny models defined here and the synthetic blobs of test_recover. Produces: assertions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest_tiny import *  # noqa: F403  (module-scoped fixture: data)
from test_recover import make_model
from torch import nn

import edgeprune as ep
from edgeprune.data.batches import iter_batches
from edgeprune.errors import UserError
from edgeprune.graph import trace
from edgeprune.prune import importance as I
from edgeprune.prune import sparsity as SP
from edgeprune.prune.threshold import DynamicThreshold, removed_fraction, select

X = torch.zeros(1, 1, 8, 8)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@pytest.fixture(scope="module")
def calib(data):
    x, y = data.train.tensors
    return x[:64], y[:64]


def _record_input(model, layer, x):
    seen = []
    h = layer.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().numpy().copy()))
    with torch.no_grad():
        model(x)
    h.remove()
    return seen[0]


def test_activation_aware_linear_matches_numpy(calib):
    model = MLP().eval()
    x, y = calib
    a = _record_input(model, model.fc1, x).reshape(len(x), -1)  # [N, 64]
    w = model.fc1.weight.detach().numpy().astype(np.float64)
    expected = np.abs(a @ w.T).mean(0) / np.sqrt(np.linalg.norm(w, axis=1))
    got = I.score_groups(trace(model, X), "activation_aware", calib=(x, y))["fc1"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # not the weight-norm-times-activation score it replaced
    assert not np.allclose(got, I.score_groups(trace(model, X), "activation", calib=(x, y))["fc1"])


def test_activation_aware_conv_matches_numpy(calib):
    model = make_model().eval()
    x, y = calib
    a = _record_input(model, model.conv2, x)  # [N, 8, 8, 8]
    w = model.conv2.weight.detach().numpy().astype(np.float64)  # [16, 8, 3, 3]
    pad = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.lib.stride_tricks.sliding_window_view(pad, (3, 3), axis=(2, 3))  # [N, 8, 8, 8, 3, 3]
    dots = np.einsum("ncpqij,ocij->nopq", patches, w)  # <x, w_c> at every output position
    expected = np.abs(dots).mean((0, 2, 3)) / np.sqrt(np.linalg.norm(w.reshape(16, -1), axis=1))
    got = I.score_groups(trace(model, X), "activation_aware", calib=(x, y))["conv2"]
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_activation_gradient_is_dj_dz_times_z(calib):
    model = MLP().eval()
    x, y = calib
    z = model.fc1(x.flatten(1))
    z.retain_grad()
    F.cross_entropy(model.fc2(torch.relu(z)), y).backward()
    expected = (z.grad * z).abs().mean(0).detach().double().numpy()  # one position per sample
    model.zero_grad()
    got = I.score_groups(trace(model, X), "activation_gradient", calib=(x, y))["fc1"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_connection_importance_is_mean_of_in_times_out_squares():
    model = MLP()
    w1 = model.fc1.weight.detach().double().numpy()  # [k, i]
    w2 = model.fc2.weight.detach().double().numpy()  # [j, k]
    expected = np.einsum("ki,jk->kij", w1**2, w2**2).mean((1, 2))
    got = I.score_groups(trace(model, X), "connection")["fc1"]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# also spelled out in MODEL_FILE of test_methods_recovery.py on purpose: there it is the source of a
# user's model file that the CLI imports, which cannot import the test modules
class NoConsumer(nn.Module):
    """conv1's channels are summed away: no layer follows them."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(64, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv1(x)).sum(1).flatten(1))


def test_connection_without_a_following_layer_names_alternatives():
    graph = trace(NoConsumer(), X)
    assert any(g.prunable for g in graph.groups())
    with pytest.raises(UserError, match=r"connection.*conv1.*no following layer.*use another importance.*l2"):
        I.score_groups(graph, "connection")


def test_registry_needs_and_unknown_names():
    assert {"l1", "l2", "taylor", "activation_aware", "activation_gradient", "connection"} <= set(I.names())
    assert I.needs_data("taylor") and I.needs_data("activation_aware") and not I.needs_data("connection")
    assert I.IMPORTANCES == I.names()
    with pytest.raises(UserError, match="unknown importance 'nope'; choose one of l1, l2"):
        I.get_importance("nope")
    with pytest.raises(UserError, match="already registered"):
        I.register_importance("l2", lambda v: None)
    with pytest.raises(UserError, match="needs"):
        I.register_importance("bad_needs", lambda v: None, needs=("weights", "labels"))


def test_user_importance_prunes_end_to_end(data):
    model = make_model().eval()
    # keep the channels with the LARGEST first weight: a scorer no built-in criterion matches
    I.register_importance("first_weight", lambda view: view.weights[:, 0], replace=True)
    try:
        assert not I.needs_data("first_weight")
        p = ep.plan(model, X, ratio=0.5, importance="first_weight", round_to=1, global_ranking=False)
        pruned = ep.apply(model, p)
        w = model.conv1.weight.detach().reshape(8, -1)[:, 0]
        kept = pruned.conv1.weight.detach().reshape(pruned.conv1.out_channels, -1)[:, 0]
        # conv1 group's score = mean over conv1 rows, bn1 gamma and conv2 columns, so check through the API
        sc = I.score_groups(trace(model, X), "first_weight")["conv1"]
        want = np.sort(np.argsort(-sc, kind="stable")[:4])
        assert torch.equal(kept, w[torch.from_numpy(want)])
        from edgeprune.prune import schedule as S

        res = S.prune_structured(model, data, X, ratio=0.5, importance="first_weight", round_to=1, finetune_epochs=0)
        assert res.baseline["importance"] == "first_weight" and res.model.conv2.out_channels < 16
    finally:
        I._REGISTRY.items.pop("first_weight", None)


def test_weight_criteria_gradient_and_random(data):
    model = make_model()
    g = SP.element_scores(model, "gradient", data=data, batches=2, batch_size=64)
    x, y = data.train.tensors
    model.eval().zero_grad()  # scores are collected in eval mode (BatchNorm running stats)
    (F.cross_entropy(model(x[:64]), y[:64]) + F.cross_entropy(model(x[64:128]), y[64:128])).backward()
    torch.testing.assert_close(g["conv1.weight"], model.conv1.weight.grad.abs() / 2)
    r1 = SP.element_scores(model, "random", seed=3)
    r2 = SP.element_scores(model, "random", seed=3)
    assert all(torch.equal(r1[n], r2[n]) for n in r1)
    m_mag = SP.make_masks(model, 0.5)
    for crit in ("gradient", "random"):
        m = SP.make_masks(model, 0.5, criterion=crit, data=data)
        assert any(not torch.equal(m[n], m_mag[n]) for n in m), crit
    assert SP.criterion_needs_data("gradient") and not SP.criterion_needs_data("random")
    with pytest.raises(UserError, match="needs calibration data"):
        SP.element_scores(model, "gradient")


def test_mean_and_relative_thresholds():
    s = {"a": torch.tensor([1.0, 2.0, 3.0, 10.0]), "b": torch.tensor([4.0, 0.5])}
    keep = select(s, method="mean", value=1.0)  # mean 3.4167
    assert keep["a"].tolist() == [False, False, False, True] and keep["b"].tolist() == [True, False]
    keep = select(s, method="relative", value=0.35)  # 0.35 x max 10 = 3.5
    assert keep["a"].tolist() == [False, False, False, True] and keep["b"].tolist() == [True, False]


def test_iterative_threshold_raises_itself_until_the_target():
    torch.manual_seed(0)
    s = {"w": torch.rand(1000)}
    rule = DynamicThreshold("iterative", 0.01, gamma=1.5)
    fractions = []
    for target in (0.3, 0.6, 0.9):
        fractions.append(removed_fraction(rule.masks(s, target)))
    assert fractions[-1] == pytest.approx(0.9, abs=0.002)
    assert fractions == sorted(fractions) and rule.history == sorted(rule.history)
    assert rule.history[0] > 0.01  # it had to rise within the first step already
    free = DynamicThreshold("iterative", 0.1, delta=0.1)
    got = [removed_fraction(free.masks(s)) for _ in range(3)]  # no target: one raise per step
    assert free.history == pytest.approx([0.1, 0.2, 0.3]) and got == pytest.approx([0.1, 0.2, 0.3], abs=0.05)
    with pytest.raises(UserError, match="gamma must be > 1"):
        DynamicThreshold("iterative", 0.1, gamma=1.0)


def test_iterative_threshold_reaches_a_90_percent_weight_target(data):
    from edgeprune.prune import schedule as S

    def to_90(threshold):  # 90 % in three linear steps, no recovery: only the threshold rule differs
        return S.sparsify(make_model(), data, 0.9, schedule="linear", steps=3, finetune_epochs=0, threshold=threshold)

    absolute = to_90(DynamicThreshold("absolute", 0.05))
    rising = to_90(DynamicThreshold("iterative", 0.05))
    assert absolute.log[-1]["sparsity"] < 0.85  # a fixed value stops short
    assert rising.log[-1]["sparsity"] == pytest.approx(0.9, abs=0.01)
    coefs = [row["threshold_coefficient"] for row in rising.log]
    assert coefs == sorted(coefs) and coefs[0] >= 0.05


def test_iter_batches_forms_and_limits(data):
    x, y = data.train.tensors
    forms = [data.train, (x, y), x, x.numpy(), torch.utils.data.DataLoader(data.train, batch_size=10)]
    for src in forms:
        got = list(iter_batches(src, max_samples=25, batch_size=10))
        assert sum(len(b[0]) for b in got) == 25
        torch.testing.assert_close(torch.cat([b[0] for b in got]), x[:25])
    assert list(iter_batches(x, max_batches=2, batch_size=7))[1][1] is None
    with pytest.raises(UserError, match="empty"):
        list(iter_batches(x[:0]))
    with pytest.raises(UserError, match="no calibration data"):
        list(iter_batches(None))
