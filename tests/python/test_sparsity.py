"""Tests of edgeprune.prune.sparsity: criteria, patterns (unstructured, 1x4, 4x1, 2:4), caps,
monotone re-masking, the per-layer report, and masks that survive recovery.

Consumes: the tiny synthetic data and CNN of test_recover. Produces: assertions on the masks.
"""

from __future__ import annotations

import pytest
import torch
from conftest_tiny import *  # noqa: F403  (module-scoped fixtures: data, trained)
from test_recover import make_model
from torch import nn

from edgeprune import recover
from edgeprune.cli._tables import sparsity_table
from edgeprune.prune import sparsity as S


def test_prunable_weights_are_conv_and_linear(trained):
    assert S.prunable_weights(trained) == ["conv1.weight", "conv2.weight", "fc.weight"]
    assert S.prunable_weights(trained, ignore=["conv1"]) == ["conv2.weight", "fc.weight"]
    with pytest.raises(ValueError, match="not a conv/linear weight"):
        S.prunable_weights(trained, names=["bn1.weight"])


def test_unstructured_global_hits_the_target_and_removes_smallest(trained):
    masks = S.make_masks(trained, 0.8)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == total - round(0.8 * total)
    # everything removed is no larger than anything kept (one global magnitude threshold)
    params = dict(trained.named_parameters())
    removed_max = max(float(params[n].detach().abs()[~m].max()) for n, m in masks.items())
    kept_min = min(float(params[n].detach().abs()[m].min()) for n, m in masks.items())
    assert removed_max <= kept_min


def test_layer_cap_keeps_every_layer_alive(trained):
    masks = S.make_masks(trained, 0.95, max_layer_sparsity=0.9)
    for n, m in masks.items():
        assert m.float().mean() >= 0.1 - 1e-6, n


@pytest.mark.parametrize("pattern,block", [("1x4", (1, 4)), ("4x1", (4, 1))])
def test_block_patterns(trained, pattern, block):
    masks = S.make_masks(trained, 0.5, pattern=pattern)
    for n, m in masks.items():
        assert S.check_pattern(m, pattern), n
        mat = m.reshape(m.shape[0], -1)
        if mat.shape[0] % block[0] == 0 and mat.shape[1] % block[1] == 0:
            blocks = mat.reshape(mat.shape[0] // block[0], block[0], mat.shape[1] // block[1], block[1]).sum((1, 3))
            assert set(blocks.unique().tolist()) <= {0, block[0] * block[1]}
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) / total == pytest.approx(0.5, abs=0.02)
    # an unstructured mask is (almost surely) not a block mask
    assert not S.check_pattern(S.make_masks(trained, 0.5)["conv2.weight"], pattern)


def test_two_four_keeps_exactly_two_of_four(trained):
    masks = S.make_masks(trained, None, pattern="2:4")
    # conv1 has K = 1*3*3 = 9: not a multiple of 4, left dense (and absent from the masks)
    assert set(masks) == {"conv2.weight", "fc.weight"}
    for n, m in masks.items():
        mat = m.reshape(m.shape[0], -1)
        assert (mat.reshape(mat.shape[0], -1, 4).sum(2) == 2).all(), n
        assert S.check_pattern(m, "2:4")
        # the two kept are the two largest of each 4
        w = dict(trained.named_parameters())[n].detach().abs().reshape(mat.shape[0], -1, 4)
        kept_min = torch.where(mat.reshape(w.shape), w, torch.full_like(w, 1e9)).min(2).values
        removed_max = torch.where(~mat.reshape(w.shape), w, torch.full_like(w, -1)).max(2).values
        assert (kept_min >= removed_max).all()
    rep = S.sparsity_report(trained, masks, pattern="2:4")
    conv1 = [r for r in rep["layers"] if r["layer"] == "conv1.weight"][0]
    assert conv1["pattern"] == "dense" and "multiple of 4" in conv1["note"]
    with pytest.raises(ValueError, match="2 of every 4"):
        S.make_masks(trained, 0.7, pattern="2:4")


def test_criteria_differ_and_use_data(trained, data):
    mag = S.make_masks(trained, 0.6, criterion="magnitude")
    tay = S.make_masks(trained, 0.6, criterion="taylor", data=data)
    act = S.make_masks(trained, 0.6, criterion="activation", data=data)
    assert any(not torch.equal(mag[n], tay[n]) for n in mag)
    assert any(not torch.equal(mag[n], act[n]) for n in mag)
    with pytest.raises(ValueError, match="calibration data"):
        S.make_masks(trained, 0.6, criterion="taylor")
    with pytest.raises(ValueError, match="unknown sparsity criterion"):
        S.make_masks(trained, 0.6, criterion="hessian")


def test_activation_scores_are_weight_times_input_norm():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(3, 2))
    x = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]])
    ds = torch.utils.data.TensorDataset(x, torch.zeros(2, dtype=torch.long))
    s = S.element_scores(lin, "activation", data=ds)["0.weight"]
    col = torch.tensor([2.0, 0.0, 8.0]).sqrt()
    assert torch.allclose(s, lin[0].weight.detach().abs() * col)
    conv = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, groups=2))
    xc = torch.randn(3, 2, 5, 5)
    s = S.element_scores(conv, "activation", data=torch.utils.data.TensorDataset(xc, torch.zeros(3, dtype=torch.long)))
    u = nn.functional.unfold(xc, 3, padding=1).pow(2).sum((0, 2)).sqrt().view(2, 9)  # per group columns
    ref = conv[0].weight.detach().abs().reshape(4, 9) * u.repeat_interleave(2, 0)
    assert torch.allclose(s["0.weight"].reshape(4, 9), ref, rtol=1e-5)


def test_previous_masks_are_honoured(trained):
    first = S.make_masks(trained, 0.5)
    # a weight mask that is *not* the magnitude one: later masks must still contain its removals
    second = S.make_masks(trained, 0.7, previous={n: ~m.flip(-1) | m for n, m in first.items()})
    for n in first:
        prev = ~first[n].flip(-1) | first[n]
        assert (second[n] <= prev).all()


def test_masks_survive_recovery_and_report(trained, data):
    model = make_model()
    model.load_state_dict(trained.state_dict())
    masks = S.make_masks(model, 0.9)
    model, _ = recover.finetune(model, data, epochs=1, lr=0.01, masks=masks)
    rep = S.sparsity_report(model)
    assert rep["total"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    by = {r["layer"]: r for r in rep["layers"]}
    for n, m in masks.items():
        assert by[n]["nonzero"] == int(m.sum())
    rows = S.report_rows(rep)
    assert rows[-1] == [
        "total",
        "",
        str(rep["total"]["weights"] - rep["total"]["zeros"]),
        str(rep["total"]["weights"]),
        "90.0 %",
    ]
    assert [r[0] for r in rows[:-1]] == [r["layer"] for r in rep["layers"]]
    assert sparsity_table(rep).row_count == len(rep["layers"]) + 1


def test_projection_per_layer_patterns():
    torch.manual_seed(0)
    w = torch.randn(8, 12)
    keep = S.projection(0.75, "unstructured")("w", w)
    assert int(keep.sum()) == 24 and w.abs()[keep].min() >= w.abs()[~keep].max()
    k24 = S.projection(None, "2:4")("w", w)
    assert (k24.reshape(8, 3, 4).sum(2) == 2).all()
    k14 = S.projection(0.5, "1x4")("w", w)
    assert S.check_pattern(k14, "1x4") and int(k14.sum()) == 48
    assert S.projection(None, "2:4")("w", torch.randn(4, 9)).all()  # K % 4 != 0: left dense
    with pytest.raises(ValueError, match="pattern"):
        S.projection(0.5, "8x8")
