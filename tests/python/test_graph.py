"""Channel groups found by edgeprune.trace on specific couplings.

Consumes: small models (zoo and local). Produces: assertions on group membership, sizes,
exactness, unknown-op handling and attribute fix-ups.
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).parent))
from graph_trace import group_of, trace_warnings  # noqa: E402
from zoo import build  # noqa: E402

import edgeprune.graph as epg  # noqa: E402
import edgeprune.prune as epp  # noqa: E402


def test_residual_add_couples_block_outputs():
    model, x = build("resnet_basic")
    g, _ = trace_warnings(model, x)
    stem = group_of(g, "stem.0")
    # the stem feeds the identity shortcuts of layer1: one group, 16 channels
    assert {"stem.0", "layer1.0.conv2", "layer1.1.conv2"} <= set(stem.sources)
    assert stem.size == 16 and stem.exact
    assert ("module", "layer2.0.downsample.0", "in") in stem.members
    # the classifier's outputs are model outputs: never pruned
    fc = group_of(g, "fc")
    assert not fc.prunable and "model output" in fc.kept_reasons


def test_depthwise_follows_its_input_and_se_couples_with_main_branch():
    model, x = build("mobilenet_v3")
    g, _ = trace_warnings(model, x)
    exp = group_of(g, "features.1.block.0.0")
    members = {(t, r) for _, t, r in exp.members}
    assert ("features.1.block.1.0", "out") in members  # depthwise conv rides along
    assert "features.1.block.2.fc2" in exp.sources  # SE expand is multiplied into the branch
    assert ("features.1.block.2.fc1", "in") in members
    assert exp.size == 48


def test_shufflenet_split_and_shuffle_keep_equal_halves():
    model, x = build("shufflenet_v2")
    g, _ = trace_warnings(model, x)
    plan = epp.plan(model, x, ratio=0.5, round_to=1, graph=g)
    pruned = epp.apply(model, plan)
    for unit in pruned.stage2:
        for m in unit.branch2:
            if isinstance(m, nn.Conv2d) and m.groups > 1:
                assert m.groups == m.in_channels == m.out_channels
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)


def test_concat_maps_positions_to_each_producer():
    model, x = build("densenet")
    g, _ = trace_warnings(model, x)
    trans = next(s for s in g.slices if s.target == "transition.2" and s.role == "in")
    gi, _ = g.class_of_positions(trans.ids)
    owners = [g.groups()[i].id for i in gi.tolist()]
    assert owners[:16] == ["stem"] * 16
    assert owners[16:24] == ["layers.0.conv2"] * 8 and owners[32:] == ["layers.2.conv2"] * 8


def test_flatten_into_linear_repeats_channel_positions():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    x = torch.randn(1, 3, 6, 6)
    g, _ = trace_warnings(model, x)
    grp = group_of(g, "0")
    assert grp.size == 8
    plan = epp.plan(model, x, ratio=0.5, round_to=1, graph=g)
    pruned = epp.apply(model, plan)
    assert pruned[0].out_channels == 4 and pruned[3].in_features == 4 * 16


def test_layernorm_groups_are_marked_inexact():
    model, x = build("convnext")
    g, _ = trace_warnings(model, x)
    stem = group_of(g, "stem")
    assert not stem.exact and any("LayerNorm" in r for r in stem.inexact_reasons)
    assert group_of(g, "blocks.0.pwconv1").exact
    # the layer scale parameter is cut along with the residual channels
    plan = epp.plan(model, x, ratio=0.5, round_to=1, graph=g)
    assert {p["name"] for p in plan.params} >= {"blocks.0.gamma", "blocks.1.gamma"}
    pruned = epp.apply(model, plan)
    assert pruned.blocks[0].gamma.shape[0] == pruned.stem.out_channels < 16


def test_bert_heads_update_attributes():
    model, x = build("bert")
    g, warns = trace_warnings(model, x)
    assert not [w for w in warns if "hard-codes" in w]
    heads = group_of(g, "layers.0.attention.query")
    assert heads.size == 4 and heads.exact
    assert {"layers.0.attention.key", "layers.0.attention.value"} <= set(heads.sources)
    keep = {heads.id: [True, False, True, False]}
    plan = epp.plan_from_keep(g, keep)
    pruned = epp.apply(model, plan)
    att = pruned.layers[0].attention
    assert (att.num_attention_heads, att.attention_head_size, att.all_head_size) == (2, 8, 16)
    assert pruned.layers[0].attn_out.in_features == 16


def test_head_dims_mode_shrinks_every_head():
    model, x = build("bert")
    g, _ = trace_warnings(model, x, attention="head_dims")
    grp = group_of(g, "layers.0.attention.query")
    assert grp.size == 8 and not grp.exact
    plan = epp.plan(model, x, ratio=0.5, ratios={grp.id: 0.5}, round_to=1, graph=g)
    pruned = epp.apply(model, plan)
    att = pruned.layers[0].attention
    assert (att.num_attention_heads, att.attention_head_size) == (4, 4)


def test_multihead_attention_heads_and_embed_dim():
    model, x = build("vit")
    g, _ = trace_warnings(model, x)
    grp = group_of(g, "conv_proj")
    assert grp.size == 4  # four heads of 8 dims tie the residual stream
    plan = epp.plan_from_keep(g, {grp.id: [True, True, False, True]})
    pruned = epp.apply(model, plan)
    mha = pruned.blocks[0].self_attention
    assert (mha.embed_dim, mha.num_heads, mha.head_dim) == (24, 3, 8)
    assert pruned.class_token.shape[-1] == 24 and pruned.pos_embedding.shape[-1] == 24


class _Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = torch.cumsum(self.a(x), dim=1)  # an op the engine does not model
        return self.c(torch.relu(self.b(y)))


def test_unknown_op_pins_its_channels_with_a_warning():
    model, x = _Odd().eval(), torch.randn(1, 3, 8, 8)
    g, warns = trace_warnings(model, x)
    assert any("cumsum" in w for w in warns)
    assert not group_of(g, "a").prunable
    assert group_of(g, "b").prunable
    plan = epp.plan(model, x, ratio=0.5, round_to=1, graph=g)
    pruned = epp.apply(model, plan)
    assert pruned.a.out_channels == 8 and pruned.b.out_channels < 8
    with torch.no_grad():
        assert pruned(x).shape == (1, 4, 8, 8)


def test_hard_coded_view_size_is_kept_whole():
    # the same two-Linear skeleton as Branchy below on purpose: each test's forward is its case
    # (here a hard-coded view size, there a data-dependent branch), so each spells its model out
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(8, 8)
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            h = self.q(x).view(x.shape[0], 2, 4).relu()
            return self.out(h.reshape(x.shape[0], 8))

    model, x = Fixed().eval(), torch.randn(2, 8)
    g, warns = trace_warnings(model, x)
    assert any("hard-codes size" in w for w in warns)
    assert not group_of(g, "q").prunable


def test_ignore_keeps_named_layers_and_rejects_unknown_names():
    model, x = build("resnet_basic")
    g, _ = trace_warnings(model, x, ignore=["layer1.0.conv1"])
    assert not group_of(g, "layer1.0.conv1").prunable
    with pytest.raises(ValueError, match="matches no prunable layer"):
        epg.trace(model, x, ignore=["nope"])


def test_data_dependent_branch_is_captured_by_an_eager_recording():
    # the same two-Linear skeleton as Fixed above on purpose: the forward is the case under test
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(8, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(h if h.sum() > -1e9 else -h)  # torch.fx cannot branch on a value

    model, x = Branchy().eval(), torch.randn(3, 4)
    g, _ = trace_warnings(model, x)
    assert group_of(g, "a").size == 8 and ("module", "b", "in") in group_of(g, "a").members
    pruned = epp.apply(model, epp.plan(model, x, ratio=0.5, round_to=1, graph=g))
    assert pruned.a.out_features == 4 and pruned.b.in_features == 4
    with torch.no_grad():
        exact = epp.apply(model, epp.plan(model, x, ratio=0.0, graph=g))
        assert torch.allclose(exact(x), model(x), atol=1e-6)


def test_model_no_capture_path_handles_names_the_line_and_the_fix():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.a(x)
            return self.a(x.view(7, -1))  # fails on these inputs in every capture

    from edgeprune.errors import UserError

    with pytest.raises(UserError) as e:
        epg.trace(Broken(), -torch.ones(1, 4))
    msg = str(e.value)
    assert "cannot capture Broken" in msg and "torch.fx stopped" in msg
    assert f"test_graph.py:{Broken.forward.__code__.co_firstlineno + 3}" in msg
    assert "register_layer" in msg and "\n" not in msg


def test_literal_split_sizes_and_layer_weights_used_as_tensors_are_kept():
    class Literal(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.bn = nn.BatchNorm2d(8)
            self.b = nn.Conv2d(8, 8, 1)
            self.c = nn.Conv2d(4, 4, 1)
            self.d = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y1, y2 = torch.split(self.a(x), [4, 4], dim=1)  # literal sizes
            z = self.b(torch.cat([self.c(y1), self.d(y2)], 1))
            return z * self.bn.weight.view(1, -1, 1, 1)  # a BN weight used as a plain tensor

    model, x = Literal().eval(), torch.randn(1, 3, 4, 4)
    g, warns = trace_warnings(model, x)
    assert not group_of(g, "a").prunable and any("split" in w for w in warns)
    assert not group_of(g, "b").prunable  # coupled to bn.weight, which only the BN surgery may cut
    assert group_of(g, "c").prunable
    plan = epp.plan(model, x, ratio=0.5, round_to=1, graph=g)
    with torch.no_grad():
        assert epp.apply(model, plan)(x).shape == (1, 8, 4, 4)


def test_expand_with_literal_channel_count_is_kept():
    # two 1x1 convs like Literal in test_graph_rules.py on purpose: the forward between them is the
    # case (a literal expand here, a literal split there)
    class Expand(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.b = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            s = self.a(x).mean((2, 3), keepdim=True)
            return self.b(s.expand(1, 8, 4, 4))

    model, x = Expand().eval(), torch.randn(1, 3, 4, 4)
    g, warns = trace_warnings(model, x)
    assert not group_of(g, "a").prunable and any("hard-codes size 8" in w for w in warns)


def test_trace_keeps_each_module_training_flag():
    model, x = build("resnet_basic")
    model.train()
    model.stem[1].eval()  # e.g. a frozen BatchNorm inside a model being fine-tuned
    epg.trace(model, x)
    assert model.training and model.layer1.training and not model.stem[1].training


def test_timm_fused_qkv_attention_ties_heads_to_the_residual_width():
    model, x = build("vit_timm")
    g, warns = trace_warnings(model, x)
    grp = group_of(g, "patch_embed")
    # reshape(B, N, C) with C read from the residual stream ties heads to residual channels
    assert grp.size == 4 and "blocks.0.attn.qkv" in grp.sources and not [w for w in warns if "kept whole" in w]
    plan = epp.plan_from_keep(g, {grp.id: [True, False, True, True]})
    pruned = epp.apply(model, plan)
    for blk in pruned.blocks:
        assert (blk.attn.num_heads, blk.attn.head_dim) == (3, 8)
        assert blk.attn.qkv.out_features == 72 and blk.attn.proj.in_features == 24
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)


def test_pixel_shuffle_and_normalize_are_followed():
    class SuperRes(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.b = nn.Conv2d(16, 32, 3, padding=1)
            self.out = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x):
            y = nn.functional.normalize(self.a(x), dim=1)
            return self.out(nn.functional.pixel_shuffle(self.b(y), 2))

    model, x = SuperRes().eval(), torch.randn(1, 3, 8, 8)
    g, warns = trace_warnings(model, x)
    assert not warns
    b = group_of(g, "b")
    assert b.size == 8 and b.atoms_per_class == {"b": 4}  # one output channel = 4 input channels
    assert not group_of(g, "a").exact  # normalize divides by a norm over the channels
    plan = epp.plan_from_keep(g, {"b": [True, False] * 4})
    pruned = epp.apply(model, plan)
    assert pruned.b.out_channels == 16 and pruned.out.in_channels == 4
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref.out.weight[:, 1::2] = 0  # the removed shuffled channels, zeroed in their consumer
        assert torch.allclose(pruned(x), ref(x), atol=1e-5)


def test_view_sized_by_channels_after_an_unfollowed_op_pins_those_channels():
    # MaxViT: q/k/v go through torch.einsum (pinned), then out.reshape(B, G, P, D) with D read from
    # the block input's shape; the residual channels D must stay, or the view no longer fits
    model, x = build("maxvit_einsum")
    g, warns = trace_warnings(model, x)
    assert any("einsum" in w for w in warns)
    assert any("reshape" in w and "sized by a channel count" in w for w in warns)
    stem = group_of(g, "stem")
    assert not stem.prunable and any("reshape" in r for r in stem.kept_reasons)
    assert not group_of(g, "attn.to_qkv").prunable
    assert group_of(g, "mlp.1").prunable  # channels away from the view are still pruned
    plan = epp.plan(model, x, ratio=0.5, round_to=4, graph=g)
    pruned = epp.apply(model, plan)
    assert pruned.stem.out_channels == 16 and pruned.mlp[1].out_features < 32
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)


def test_parameter_viewed_with_a_channel_count_is_cut_with_those_channels_or_kept():
    class Scaled(nn.Module):
        def __init__(self, couple: bool):
            super().__init__()
            self.couple = couple
            self.a = nn.Linear(8, 8)
            self.gamma = nn.Parameter(torch.rand(8) + 0.5)
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            h = self.a(x)
            B, C = h.shape
            s = self.gamma.view(1, C)
            if self.couple:
                return self.out(h * s)  # gamma is cut with a's channels: the view still fits
            return self.out(h) + s.sum()  # gamma never cut: C must stay 8

    x = torch.randn(2, 8)
    for couple in (True, False):
        model = Scaled(couple).eval()
        g, warns = trace_warnings(model, x)
        assert group_of(g, "a").prunable == couple
        assert couple or any("gamma" in w for w in warns)
        pruned = epp.apply(model, epp.plan(model, x, ratio=0.5, round_to=1, graph=g))
        with torch.no_grad():
            assert pruned(x).shape == (2, 3)


@pytest.mark.parametrize("name", ["shufflenet_v2", "densenet", "bert", "vit_timm"])
def test_eager_recording_finds_the_groups_torch_fx_finds(name):
    model, x = build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fx_graph = epg.trace(model, x, capture="fx")
        eager = epg.trace(model, x, capture="eager")

    def key(g):
        return [(grp.id, grp.size, sorted(grp.members)) for grp in g.groups()]

    assert key(eager) == key(fx_graph)
    plan_fx = epp.plan(model, x, ratio=0.4, graph=fx_graph)
    plan_eager = epp.plan(model, x, ratio=0.4, graph=eager)
    assert plan_eager.modules == plan_fx.modules and plan_eager.attrs == plan_fx.attrs
