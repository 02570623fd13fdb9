"""One MAC counter for both budget searches.

Consumes: the models of tests/python/zoo.py (unpruned and pruned at ratio 0.5) and a hand-counted
model. Produces: assertions that the build's bisecting search (``pipeline.macs_cost``) and the
adaptive search (``prune.search.Budget("macs").cost``) count the same MACs on every zoo model,
that the latency estimate (whose MACs fill the build report) counts them too, and that the count
is right on a model whose MACs are known by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).parent))
from zoo import ZOO, build  # noqa: E402

import edgeprune.prune as epp  # noqa: E402
from edgeprune import pipeline  # noqa: E402
from edgeprune.estimate import estimate  # noqa: E402
from edgeprune.prune.search import Budget  # noqa: E402


@pytest.mark.parametrize("name", sorted(ZOO))
def test_both_budget_searches_count_the_same_macs(name):
    model, x = build(name)
    adaptive = Budget("macs", 0.5)
    pruned = epp.apply(model, epp.plan(model, x, ratio=0.5))
    for m in (model, pruned):
        bisect_macs = pipeline.macs_cost(m, x)
        assert bisect_macs == adaptive.cost(m, x) > 0
    assert pipeline.macs_cost(pruned, x) < pipeline.macs_cost(model, x)


# the estimator runs a model on a float input of its shape (token models take integer ids)
IMAGE_MODELS = sorted(n for n in ZOO if not n.startswith("bert"))


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_the_estimate_counts_the_same_macs(name):
    model, x = build(name)
    one = x[:1]
    est = estimate(model, "rpi4", precision="fp32", input_shape=tuple(one.shape[1:]))
    assert est.macs == pipeline.macs_cost(model, one)


def test_the_mac_count_matches_a_hand_count():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8 x 16 x 16 outputs, 3 * 9 MACs each
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: 8 x 16 x 16 outputs, 9 MACs each
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),  # 10 outputs, 8 MACs each
    )
    x = torch.zeros(1, 3, 16, 16)
    expected = 8 * 16 * 16 * 27 + 8 * 16 * 16 * 9 + 10 * 8
    assert pipeline.macs_cost(model, x) == Budget("macs", 0.5).cost(model, x) == expected
