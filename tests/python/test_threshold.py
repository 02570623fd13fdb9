"""Tests of edgeprune.prune.threshold: solved, relative, percentile and absolute thresholds,
global and per-layer scope, caps, and recomputation from the current scores at every step.

Consumes: small hand-made score tensors. Produces: assertions on exactly which items go.
"""

from __future__ import annotations

import math

import pytest
import torch

from edgeprune.prune import threshold as T


def scores():
    return {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([0.1, 0.2, 5.0, 6.0, 7.0, 8.0])}


def test_solve_global_removes_exactly_the_lowest():
    keep = T.select(scores(), 0.5)
    assert keep["a"].tolist() == [False, False, False, True]
    assert keep["b"].tolist() == [False, False, True, True, True, True]
    assert T.removed_fraction(keep) == pytest.approx(0.5)


def test_solve_per_layer_hits_the_target_in_every_layer():
    keep = T.select(scores(), 0.5, scope="layer")
    assert keep["a"].tolist() == [False, False, True, True]
    assert keep["b"].tolist() == [False, False, False, True, True, True]


def test_solve_with_weights_counts_weight_not_items():
    s = {"a": torch.tensor([1.0, 2.0, 3.0])}
    w = {"a": torch.tensor([4.0, 1.0, 1.0])}  # removing the first item alone is 2/3 of the weight
    assert T.select(s, 0.5, weights=w)["a"].tolist() == [False, True, True]
    assert T.select(s, 0.1, weights=w)["a"].tolist() == [False, True, True]
    assert T.removed_fraction(T.select(s, 0.5, weights=w), w) == pytest.approx(4 / 6)


def test_global_cap_redistributes_to_other_layers():
    keep = T.select(scores(), 0.5, max_layer_ratio=0.5)
    # 'a' may lose at most 2 of 4; the 5 removals go 2 to 'a' and 3 to 'b'
    assert keep["a"].tolist() == [False, False, True, True]
    assert keep["b"].tolist() == [False, False, False, True, True, True]
    assert T.removed_fraction(keep) == pytest.approx(0.5)


def test_relative_and_percentile_and_absolute():
    s = scores()
    rel = T.select(s, method="relative", value=0.5)  # global max 8 -> threshold 4
    assert rel["a"].tolist() == [False, False, False, True]
    rel_layer = T.select(s, method="relative", value=0.5, scope="layer")  # a: 2, b: 4
    assert rel_layer["a"].tolist() == [False, True, True, True]
    assert rel_layer["b"].tolist() == [False, False, True, True, True, True]
    q = T.select({"x": torch.arange(10.0)}, method="percentile", value=0.3)
    assert int((~q["x"]).sum()) == 3
    ab = T.select(s, method="absolute", value=2.5)
    assert int((~ab["a"]).sum()) == 2 and int((~ab["b"]).sum()) == 2


def test_min_keep_never_empties_a_layer():
    keep = T.select(
        {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([9.0, 9.0])}, method="absolute", value=5.0, min_keep=1
    )
    assert int(keep["a"].sum()) == 1 and keep["b"].all()


def test_removed_items_stay_removed():
    s = {"a": torch.tensor([-math.inf, 0.5, 0.6, 0.7])}
    assert T.select(s, 0.0)["a"].tolist() == [False, True, True, True]
    assert T.select(s, method="relative", value=0.0)["a"].tolist() == [False, True, True, True]


def test_dynamic_threshold_recomputed_each_step():
    torch.manual_seed(0)
    rule = T.DynamicThreshold("solve", scope="global")
    w = {"a": torch.randn(100), "b": 3 * torch.randn(50)}
    prev = {n: torch.ones_like(v, dtype=torch.bool) for n, v in w.items()}
    thresholds = []
    for target in (0.2, 0.4, 0.6):
        s = {n: torch.where(prev[n], w[n].abs(), torch.full_like(w[n], -math.inf)) for n in w}
        keep = rule.masks(s, target)
        assert T.removed_fraction(keep) == pytest.approx(target, abs=1 / 150)
        assert all((keep[n] <= prev[n]).all() for n in w)  # monotone
        thresholds.append(max(float(w[n].abs()[~keep[n]].max()) for n in w))
        prev = keep
        # the surviving weights change between steps (as fine-tuning would change them)
        w = {n: v * (1 + 0.1 * torch.randn_like(v)) for n, v in w.items()}
    assert thresholds == sorted(thresholds)  # the threshold moves up with the target


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown threshold method"):
        T.select(scores(), 0.5, method="median")
    with pytest.raises(ValueError, match="target fraction"):
        T.select(scores(), 1.5)
    with pytest.raises(ValueError, match="scope"):
        T.DynamicThreshold(scope="model")
    with pytest.raises(ValueError, match="needs a value"):
        T.select(scores(), method="relative")


def test_threshold_rules_capped_by_the_target():
    s = scores()  # 10 items, global max 8
    uncapped = T.select(s, method="relative", value=0.9)  # below 7.2: 8 items go
    assert T.removed_fraction(uncapped) == pytest.approx(0.8)
    capped = T.select(s, 0.3, method="relative", value=0.9)
    assert T.removed_fraction(capped) == pytest.approx(0.3)
    assert capped["b"].tolist() == [False, False, True, True, True, True]  # the 3 lowest
    assert capped["a"].tolist() == [False, True, True, True]
    # a cap above what the threshold removes changes nothing
    loose = T.select(s, 0.95, method="relative", value=0.9)
    assert all(torch.equal(loose[n], uncapped[n]) for n in s)
    # per layer: the 0.9-quantile removes 3 of a and 5 of b; a 25 % cap lets 1 of 4 and 1 of 6
    # go (a cap is never exceeded: 1.5 items -> 1)
    layer = T.select(s, 0.25, method="percentile", value=0.9, scope="layer")
    assert [int((~m).sum()) for m in layer.values()] == [1, 1]
