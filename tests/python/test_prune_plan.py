"""Importance scorers, selection, PrunePlan JSON replay and bad inputs.

Consumes: zoo models and small local models. Produces: assertions on scores (vs hand-computed
values), plans (round trip through JSON on a fresh instance), ratio/target_macs/max_layer_ratio
semantics and one-line errors for bad input.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).parent))
from zoo import build  # noqa: E402

import edgeprune.graph as epg  # noqa: E402
import edgeprune.prune as epp  # noqa: E402
from edgeprune.errors import UserError  # noqa: E402
from edgeprune.prune import IMPORTANCES, PrunePlan, score_groups  # noqa: E402

warnings.filterwarnings("ignore", message="edgeprune.trace")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval(), torch.randn(5, 4)


def test_l1_l2_scores_match_hand_computation():
    model, x = _mlp()
    g = epg.trace(model, x)
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    for imp, f in (("l1", lambda v: v.abs().sum(1)), ("l2", lambda v: v.norm(dim=1))):
        s = score_groups(g, imp, reduction="mean")["0"]
        expect = (f(w1) + f(w2.t())) / 2
        np.testing.assert_allclose(s, expect.double().numpy(), rtol=1e-6)
        s = score_groups(g, imp, reduction="sum")["0"]
        np.testing.assert_allclose(s, (f(w1) + f(w2.t())).double().numpy(), rtol=1e-6)
        s = score_groups(g, imp, reduction="max")["0"]
        np.testing.assert_allclose(s, torch.maximum(f(w1), f(w2.t())).double().numpy(), rtol=1e-6)


def test_lamp_score_matches_its_definition():
    model, x = _mlp()
    g = epg.trace(model, x)

    def lamp(rows):
        sq = rows.pow(2).sum(1)
        return torch.stack([sq[i] / sq[sq >= sq[i]].sum() for i in range(len(sq))])

    s = score_groups(g, "lamp", reduction="sum")["0"]
    expect = lamp(model[0].weight.detach()) + lamp(model[2].weight.detach().t())
    np.testing.assert_allclose(s, expect.double().numpy(), rtol=1e-5)


def test_activation_score_is_weight_norm_times_activation_norm():
    model, x = _mlp()
    g = epg.trace(model, x)
    s = score_groups(g, "activation", calib=x, reduction="sum")["0"]
    with torch.no_grad():
        y1 = model[0](x)
        x2 = torch.relu(y1)
    w1, w2 = model[0].weight, model[2].weight
    expect = w1.norm(dim=1) * y1.norm(dim=0) + w2.t().norm(dim=1) * x2.norm(dim=0)
    np.testing.assert_allclose(s, expect.detach().double().numpy(), rtol=1e-5)


def test_taylor_and_gradient_use_the_loss_gradient():
    model, x = _mlp()
    y = torch.tensor([0, 1, 2, 0, 1])
    g = epg.trace(model, x)
    tay = score_groups(g, "taylor", calib=(x, y), reduction="sum")["0"]
    grad = score_groups(g, "gradient", calib=(x, y), reduction="sum")["0"]
    loss = nn.functional.cross_entropy(model(x), y)
    g1, g2 = torch.autograd.grad(loss, [model[0].weight, model[2].weight])
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    np.testing.assert_allclose(tay, ((w1 * g1).sum(1).abs() + (w2 * g2).sum(0).abs()).double().numpy(), rtol=1e-5)
    np.testing.assert_allclose(grad, (g1.norm(dim=1) + g2.norm(dim=0)).double().numpy(), rtol=1e-5)


def test_fpgm_lamp_bn_scale_random_and_zeroed_channel():
    model, x = build("resnet_basic")
    with torch.no_grad():
        model.layer1[0].conv1.weight[3] = 0
        model.layer1[0].bn1.weight[5] = 0
    g = epg.trace(model, x)
    gid = "layer1.0.conv1"
    for imp in IMPORTANCES:
        s = score_groups(g, imp, calib=x, seed=3)
        assert set(s) == {grp.id for grp in g.groups()}
        assert s[gid].shape == (16,) and np.isfinite(s[gid]).all() and (s[gid] >= 0).all()
    assert int(np.argmin(score_groups(g, "l1")[gid])) == 3
    assert int(np.argmin(score_groups(g, "bn_scale")[gid])) == 5
    assert int(np.argmin(score_groups(g, "taylor", calib=x)[gid])) in (3, 5)
    # FPGM: a filter equal to the layer's geometric median scores lowest
    w = model.layer1[0].conv1.weight.detach().clone()
    with torch.no_grad():
        model.layer1[0].conv1.weight[7] = torch.median(w, dim=0).values
        model.layer1[0].conv1.weight[3] = w[4] * 3
    fp = score_groups(epg.trace(model, x), "fpgm", reduction="max")[gid]
    assert fp[7] < np.median(fp)
    r1, r2 = score_groups(g, "random", seed=1)[gid], score_groups(g, "random", seed=1)[gid]
    np.testing.assert_array_equal(r1, r2)
    assert not np.array_equal(r1, score_groups(g, "random", seed=2)[gid])


def test_plan_json_replays_on_a_fresh_instance():
    model, x = build("mobilenet_v3")
    plan = epp.plan(model, x, ratio=0.5, importance="l2", round_to=4)
    text = plan.to_json()
    d = json.loads(text)
    assert d["hash"] == plan.hash and d["settings"]["ratio"] == 0.5 and d["inputs"][0]["shape"] == [2, 3, 16, 16]
    again = PrunePlan.from_json(text)
    fresh, _ = build("mobilenet_v3", seed=5)  # same architecture, other weights
    a, b = epp.apply(model, plan), epp.apply(fresh, again)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    fresh.load_state_dict(model.state_dict())
    b = epp.apply(fresh, again)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_apply_copies_spec_attributes_and_leaves_input_alone():
    model, x = build("resnet_basic")
    model.edgeprune_spec, model.input_shape = "zoo:resnet_basic", (3, 16, 16)
    plan = epp.plan(model, x, ratio=0.5, round_to=1)
    pruned = epp.apply(model, plan)
    assert pruned.edgeprune_spec == "zoo:resnet_basic" and pruned.input_shape == (3, 16, 16)
    assert pruned.edgeprune_plan_hash == plan.hash
    assert model.stem[0].out_channels == 16


def test_plan_for_another_model_is_refused():
    model, x = build("resnet_basic")
    other, _ = build("resnet_bottleneck")
    plan = epp.plan(model, x, ratio=0.5, round_to=1)
    with pytest.raises(ValueError, match="made for another model"):
        epp.apply(other, plan)
    pruned = epp.apply(model, plan)
    with pytest.raises(ValueError, match="made for another model"):
        epp.apply(pruned, plan)


def test_damaged_plan_is_refused():
    model, x = build("resnet_basic")
    d = epp.plan(model, x, ratio=0.5, round_to=1).to_dict()
    d["modules"]["stem.0"]["out"] = [0, 1]
    with pytest.raises(ValueError, match="does not match its content"):
        PrunePlan.from_dict(d)
    with pytest.raises(ValueError, match="not valid JSON"):
        PrunePlan.from_json("{nope")
    with pytest.raises(ValueError, match="version"):
        PrunePlan.from_dict({"version": 99})


def test_plan_with_an_unknown_role_is_refused():
    # a hand-edited plan (no hash) that misspells a role: refused, never silently left uncut
    model, x = build("resnet_basic")
    d = epp.plan(model, x, ratio=0.5, round_to=1).to_dict()
    del d["hash"]
    d["modules"]["stem.0"]["outs"] = d["modules"]["stem.0"].pop("out")
    with pytest.raises(ValueError, match=r"stem\.0: Conv2d has no role 'outs' \(its roles: out, in\)"):
        epp.apply(model, PrunePlan.from_dict(d))
    bn = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and n in d["modules"])
    d = epp.plan(model, x, ratio=0.5, round_to=1).to_dict()
    del d["hash"]
    d["modules"][bn]["out"] = d["modules"][bn].pop("channels")
    with pytest.raises(ValueError, match=f"{bn}: BatchNorm2d has no role 'out' \\(its roles: channels\\)"):
        epp.apply(model, PrunePlan.from_dict(d))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"ratio": 1.0}, r"ratio=1.0 is outside \[0, 1\)"),
        ({"ratio": -0.1}, "outside"),
        ({"importance": "magic"}, "unknown importance 'magic'"),
        ({"round_to": 0}, "round_to"),
        ({"max_layer_ratio": 0}, "max_layer_ratio"),
        ({"target_macs": -1}, "target_macs"),
        ({"ratios": {"nope": 0.5}}, "unknown groups"),
    ],
)
def test_bad_plan_arguments(kw, match):
    model, x = build("resnet_basic")
    with pytest.raises(ValueError, match=match):
        epp.plan(model, x, **kw)


def test_global_and_per_layer_ratio_and_max_layer_ratio():
    model, x = build("resnet_bottleneck")
    g = epg.trace(model, x)
    per = epp.plan(model, x, ratio=0.5, round_to=1, global_ranking=False, graph=g)
    for e in per.groups:
        if g.group(e["id"]).prunable:
            assert e["kept"] == e["channels"] - e["channels"] // 2
    glob = epp.plan(model, x, ratio=0.5, round_to=1, graph=g, max_layer_ratio=0.6)
    total = sum(e["channels"] for e in glob.groups if g.group(e["id"]).prunable)
    removed = sum(e["channels"] - e["kept"] for e in glob.groups)
    assert removed == total // 2
    for e in glob.groups:
        assert e["kept"] >= int(np.ceil(e["channels"] * 0.4 - 1e-9))


def test_target_macs_meets_the_budget():
    model, x = build("resnet_basic")
    base, _ = epp.count_macs_params(model, x)
    plan = epp.plan(model, x, target_macs=0.5, round_to=1)
    macs, _ = epp.count_macs_params(epp.apply(model, plan), x)
    assert macs <= 0.5 * base and macs > 0.3 * base
    assert 0 < plan.settings["ratio"] < 0.95


def test_count_macs_params_of_a_conv():
    model = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    macs, params = epp.count_macs_params(model, torch.zeros(1, 3, 5, 5))
    assert (macs, params) == (8 * 3 * 9 * 25, 8 * 3 * 9)


def test_count_macs_includes_attention():
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(1, 5, 8)
    macs, params = epp.count_macs_params(mha, (x, x, x))
    projections = 5 * (3 * 8 * 8) + 5 * 8 * 8
    attention = 2 * 5 * 5 * (4 + 4)  # heads * Lq * Lk * (head_dim for QK^T + head_dim for PV)
    assert (macs, params) == (projections + attention, 4 * 8 * 8 + 4 * 8)


@pytest.mark.parametrize("name,factory", [("bert", "Bert"), ("vit", "ViT"), ("shufflenet_v2", "ShuffleNetV2")])
def test_save_load_replays_plan_with_attributes_and_parameters(tmp_path, name, factory):
    import edgeprune as ep

    zoo_file = Path(__file__).parent / "zoo.py"
    model = ep.models.build(f"{zoo_file}:{factory}").eval()
    _, x = build(name)
    plan = epp.plan(model, x, ratio=0.5, round_to=1)
    assert not plan.empty
    pruned = epp.apply(model, plan)
    ep.save(pruned, tmp_path / "m", plan=plan)
    loaded = ep.load(tmp_path / "m", trust_code=True)  # the zoo factory file was copied into the dir
    assert [p.shape for p in loaded.parameters()] == [p.shape for p in pruned.parameters()]
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
    if name == "bert":
        assert plan.attrs  # heads removed: num_attention_heads / all_head_size rewritten
    if name == "vit":
        assert {p["name"] for p in plan.params} == {"class_token", "pos_embedding"}
    for a in plan.attrs:
        assert getattr(loaded.get_submodule(a["module"]), a["attr"]) == a["value"]


def test_round_to_picks_the_nearest_multiple_within_the_layer_floor():
    model, x = build("resnet_basic")
    g = epg.trace(model, x)
    gid = "layer1.0.conv1"  # 16 channels
    kept = lambda p: next(e["kept"] for e in p.groups if e["id"] == gid)  # noqa: E731
    # 12 left: 8 and 16 are equally near, the tie removes more
    assert kept(epp.plan(model, x, ratios={gid: 0.25}, round_to=8, graph=g)) == 8
    # 13 left: 16 is nearer, so the group stays whole
    assert kept(epp.plan(model, x, ratios={gid: 0.2}, round_to=8, graph=g)) == 16
    # max_layer_ratio 0.4 keeps at least 10: rounding down to 8 is not allowed
    assert kept(epp.plan(model, x, ratios={gid: 0.25}, round_to=8, max_layer_ratio=0.4, graph=g)) == 16
    assert kept(epp.plan(model, x, ratios={gid: 0.25}, round_to=4, max_layer_ratio=0.4, graph=g)) == 12


class _GroupedBlock(nn.Module):
    """A RegNet-style bottleneck: 1x1, grouped 3x3 with `groups` conv groups, 1x1."""

    def __init__(self, width, groups):
        super().__init__()
        self.a = nn.Conv2d(8, width, 1)
        self.b = nn.Conv2d(width, width, 3, padding=1, groups=groups)
        self.c = nn.Conv2d(width, 8, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


@pytest.mark.parametrize(
    "width, groups, kept_per_group",
    [
        (48, 2, 8),  # 12 of 24 per conv group: 8 and 16 are equally near, the tie removes more
        (240, 2, 56),  # 60 of 120: 56 (the tie again)
        (216, 3, 48),  # 45 of 72 (ratio 0.375): 48 is nearer than 40
        (64, 4, 8),  # 8 of 16: already a multiple
        (16, 2, 4),  # 4 of 8 per conv group is below round_to: only the layer (8) is a multiple of 8
    ],
)
def test_round_to_applies_to_every_conv_group_of_a_grouped_conv(width, groups, kept_per_group):
    torch.manual_seed(0)
    model, x = _GroupedBlock(width, groups).eval(), torch.randn(1, 8, 6, 6)
    ratio = 0.375 if width == 216 else 0.5
    g = epg.trace(model, x)
    spans = {grp.id: grp.spans_conv_groups for grp in g.groups() if grp.prunable}
    assert spans == {"a": True, "b": True}
    plan = epp.plan(model, x, ratio=ratio, round_to=8, global_ranking=False, graph=g)
    pruned = epp.apply(model, plan)
    assert pruned.b.in_channels == pruned.b.out_channels == kept_per_group * groups
    assert pruned(x).shape == model(x).shape


def test_magnitude_importance_keeps_accuracy_better_than_random(trained_demo_cnn, digits):
    import edgeprune as ep

    model = trained_demo_cnn.eval()
    x = torch.zeros(1, 1, 32, 32)
    g = epg.trace(model, x)
    base = ep.models.evaluate(model, digits.test)["top1"]

    def top1(importance, seed=0):
        p = epp.plan(model, x, ratio=0.05, importance=importance, round_to=1, global_ranking=False, seed=seed, graph=g)
        return ep.models.evaluate(epp.apply(model, p), digits.test)["top1"]

    l2 = top1("l2")
    random = [top1("random", seed) for seed in range(4)]
    assert l2 >= base - 0.015
    assert l2 >= float(np.mean(random))


def test_apply_records_the_plan_chain_for_save(tmp_path):
    import edgeprune as ep

    model = ep.models.build("edgeprune:demo-cnn").eval()
    x = torch.randn(2, 1, 32, 32)
    first = epp.apply(model, epp.plan(model, x, ratio=0.3, round_to=4))
    ep.save(first, tmp_path / "a")  # no plan= : the pruned model carries it
    loaded = ep.load(tmp_path / "a")
    second = epp.apply(loaded, epp.plan(loaded, x, ratio=0.3, round_to=4))
    assert isinstance(second.edgeprune_plan, list) and len(second.edgeprune_plan) == 2
    ep.save(second, tmp_path / "b")
    again = ep.load(tmp_path / "b")
    with torch.no_grad():
        assert torch.equal(again(x), second(x))


class _KeywordNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, *, x, scale):
        return self.b(torch.relu(self.a(x))) * scale


def test_count_macs_params_takes_keyword_inputs():
    # a tokenizer's BatchEncoding or any dict of keyword inputs, as ep.plan takes them
    model = _KeywordNet()
    macs, params = epp.count_macs_params(model, {"x": torch.zeros(2, 6), "scale": torch.ones(1)})
    assert (macs, params) == (2 * (6 * 8 + 8 * 3), 6 * 8 + 8 + 8 * 3 + 3)


def test_ignore_none_is_no_ignore_and_a_non_list_is_refused():
    model, x = build("resnet_basic")
    assert epp.plan(model, x, ratio=0.5, ignore=None).to_dict() == epp.plan(model, x, ratio=0.5).to_dict()
    with pytest.raises(UserError, match="ignore=3: pass layer names, module objects or module types"):
        epp.plan(model, x, ratio=0.5, ignore=3)


class _CachingAttention(nn.Module):
    """Caches a tensor computed from a parameter on its first eval-mode forward, as LeViT's
    attention does with its position biases: run with gradients on, the cache has a grad_fn."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Linear(8, 16), nn.Linear(16, 4)
        self.bias = nn.Parameter(torch.randn(4))
        self.cache = {}

    def forward(self, x):
        if self.training:
            b = self.bias * 2
        else:
            b = self.cache.setdefault("cpu", self.bias * 2)
        return self.out(torch.relu(self.inp(x))) + b


def test_models_holding_non_leaf_tensors_prune_and_quantize():
    model = _CachingAttention().eval()
    x = torch.randn(3, 8)
    model(x)  # fills the cache with a tensor that has a grad_fn: copy.deepcopy refuses such a model
    assert model.cache["cpu"].grad_fn is not None
    pruned = epp.apply(model, epp.plan(model, x, ratio=0.5))
    assert pruned.inp.out_features == 8 and pruned.cache["cpu"].grad_fn is None
    torch.testing.assert_close(pruned.cache["cpu"], model.cache["cpu"].detach())
    assert model.inp.out_features == 16  # the original is untouched


class _FusedSingleHead(nn.Module):
    """One fused projection split into 4 query, 4 key and 8 value channels (one head): the
    channel group has 12 classes, 4 query/key pairs and 8 value channels."""

    def __init__(self):
        super().__init__()
        self.kd, self.vd = 4, 8
        self.qkv, self.proj = nn.Linear(16, 16), nn.Linear(8, 16)
        with torch.no_grad():
            self.qkv.weight[8:] *= 1e-3  # the value channels score lowest

    def forward(self, x):
        q, k, v = self.qkv(x).split([self.kd, self.kd, self.vd], dim=-1)
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return self.proj(attn @ v)


def test_no_layer_loses_every_channel_when_a_group_spreads_unevenly_over_layers():
    model = _FusedSingleHead().eval()
    x = torch.randn(1, 5, 16)
    plan = epp.plan(model, x, ratio=0.7, round_to=1)
    # by score alone the 8 removals are the 8 value channels, leaving proj without inputs; the
    # layer floor (max_layer_ratio 0.9: 1 of 8) puts the best-scored value channel back
    assert len(plan.modules["proj"]["in"]) == 1 and plan.modules["qkv"]["out"][:8] == list(range(8))
    pruned = epp.apply(model, plan)
    assert pruned.vd == 1 and pruned.proj.in_features == 1 and pruned(x).shape == (1, 5, 16)


class _CoincidentSizes(nn.Module):
    """LeViT's single-head attention: the value width is computed as ``ratio * kd``, which equals the
    attribute ``out_dim`` by coincidence, so the analysis takes ``out_dim`` for the split's size."""

    def __init__(self):
        super().__init__()
        self.kd, self.ratio, self.out_dim = 4, 2, 8
        self.qkv, self.proj = nn.Linear(16, 16), nn.Linear(8, 16)
        self.ffn = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 1, -1).split([self.kd, self.kd, self.ratio * self.kd], dim=3)
        attn = torch.softmax(q.transpose(1, 2) @ k.permute(0, 2, 3, 1), dim=-1)
        h = (attn @ v.transpose(1, 2)).transpose(1, 2).reshape(b, n, self.out_dim)
        x = x + self.proj(h)
        return x + self.ffn(x)


def test_a_group_whose_cut_breaks_the_forward_is_kept_whole_with_a_warning():
    torch.manual_seed(0)
    model = _CoincidentSizes().eval()
    x = torch.randn(1, 5, 16)
    with pytest.warns(UserWarning, match=r"edgeprune.plan: cutting group qkv breaks the model \(RuntimeError: split"):
        plan = epp.plan(model, x, ratio=0.5, round_to=1, ignore="proj")
    assert "qkv" not in plan.modules and plan.modules["ffn.0"]["out"]  # the rest is still cut
    pruned = epp.apply(model, plan)
    assert pruned(x).shape == (1, 5, 16) and pruned.ffn[0].out_features == 16
