"""Layer rules, recurrent layers, split/unbind forms and ignore= semantics of edgeprune.graph.

Consumes: small models defined here. Produces: assertions that a user-registered layer type is
traced, cut and scored through its LayerRule end to end; that LSTM/GRU/RNN hidden units are pruned
with their gates; that split with a list of sizes and unbind on any dim are followed; and that
ignore= takes names, module objects and types, warns on unreached names and rejects unknown ones.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn as nn
from graph_trace import group_of, trace_warnings

import edgeprune.graph as epg
import edgeprune.prune as epp
from edgeprune.graph import surgery
from edgeprune.graph.rules import LayerRule, register_layer, unregister_layer


def _exact_and_smaller(model, x, **kw):
    """ratio 0 gives the same outputs; ratio 0.5 (every group cut) gives fewer parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same = epp.apply(model, epp.plan(model, x, ratio=0.0, **kw))
        plan = epp.plan(model, x, ratio=0.5, round_to=None, global_ranking=False, **kw)
        small = epp.apply(model, plan)
    args = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        ref, got, out = model(*args), same(*args), small(*args)
    for r, g, o in zip(*(t if isinstance(t, tuple) else (t,) for t in (ref, got, out))):
        assert (r - g).abs().max().item() <= 1e-5
        assert o.shape == r.shape
    n = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in small.parameters()) < n
    return small, plan


# -- a user-defined layer -----------------------------------------------------------------------


class ScaledMix(nn.Module):
    """A layer edgeprune has never seen: y = (x * scale) @ weight.T, weight stored [out, in]."""

    def __init__(self, cin, cout):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.scale = nn.Parameter(torch.rand(cin) + 0.5)
        self.weight = nn.Parameter(torch.randn(cout, cin) / cin**0.5)

    def forward(self, x):
        return torch.einsum("bi,oi->bo", x * self.scale, self.weight)


def _trace_mix(ctx, node, m, result):
    ctx.consume(node, ctx.arg(node), 1, "in")
    return ctx.produce(node, m.cout, 1)


def _prune_mix(m, roles, where):
    if "in" in roles:
        surgery.slice_param(m, "scale", 0, roles["in"])
        surgery.slice_param(m, "weight", 1, roles["in"])
        m.cin = len(roles["in"])
    if "out" in roles:
        surgery.slice_param(m, "weight", 0, roles["out"])
        m.cout = len(roles["out"])


def _positions_mix(m, role, pick):
    w = surgery.picked(m.weight, pick)
    return w if role == "out" else w.t()


class MixNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 16)
        self.mix = ScaledMix(16, 12)
        self.b = nn.Linear(12, 3)

    def forward(self, x):
        return self.b(torch.relu(self.mix(torch.relu(self.a(x)))))


@pytest.fixture
def mix_rule():
    register_layer(ScaledMix, LayerRule(_trace_mix, _prune_mix, _positions_mix))
    yield
    unregister_layer(ScaledMix)


def test_unregistered_layer_is_kept_whole_with_a_warning():
    g, warns = trace_warnings(MixNet().eval(), torch.randn(4, 6))
    assert not group_of(g, "a").prunable
    assert any("einsum" in w for w in warns)


def test_registered_layer_is_traced_cut_and_scored(mix_rule):
    torch.manual_seed(0)
    model, x = MixNet().eval(), torch.randn(4, 6)
    g, _ = trace_warnings(model, x)
    a = group_of(g, "a")
    assert a.size == 16 and ("module", "mix", "in") in a.members
    assert group_of(g, "mix").size == 12 and ("module", "b", "in") in group_of(g, "mix").members
    small, _ = _exact_and_smaller(model, x)
    assert (small.mix.cin, small.mix.cout) == (8, 6) and small.mix.scale.shape == (8,)
    assert small.a.out_features == 8 and small.b.in_features == 6
    # the rule's positions feed the importance scores: the weakest output of mix goes first
    with torch.no_grad():
        model.mix.weight[5].mul_(1e-4)
    plan = epp.plan(model, x, ratio=0.5, round_to=None, global_ranking=False)
    assert 5 not in plan.modules["mix"]["out"]


def test_register_layer_rejects_what_is_not_a_layer_rule():
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_layer(int, LayerRule(_trace_mix))
    with pytest.raises(TypeError, match="LayerRule"):
        register_layer(ScaledMix, _trace_mix)


# -- recurrent layers ---------------------------------------------------------------------------


class Recurrent(nn.Module):
    def __init__(self, kind, bidirectional, batch_first):
        super().__init__()
        self.emb = nn.Embedding(20, 12)
        self.pre = nn.Linear(12, 10)
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
        self.rnn = cls(10, 16, num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
        self.head = nn.Linear(16 * (2 if bidirectional else 1), 4)
        self.batch_first = batch_first

    def forward(self, tokens):
        h = self.pre(self.emb(tokens))
        if not self.batch_first:
            h = h.transpose(0, 1)
        out, _ = self.rnn(h)
        return self.head(out.mean(1 if self.batch_first else 0))


@pytest.mark.parametrize(
    "kind,bidirectional,batch_first", [("lstm", True, True), ("gru", False, False), ("rnn", True, False)]
)
def test_recurrent_hidden_units_are_pruned_with_their_gates(kind, bidirectional, batch_first):
    torch.manual_seed(0)
    model = Recurrent(kind, bidirectional, batch_first).eval()
    x = torch.randint(0, 20, (3, 5))
    g, _ = trace_warnings(model, x)
    hid = group_of(g, "rnn")
    assert hid.size == 16 and ("module", "head", "in") in hid.members
    assert ("module", "rnn", "in") in group_of(g, "pre").members
    small, _ = _exact_and_smaller(model, x)
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    assert small.rnn.hidden_size == 8 and small.rnn.input_size == 5
    assert small.rnn.weight_ih_l1.shape == (gates * 8, 8 * (2 if bidirectional else 1))
    assert small.rnn.weight_hh_l0.shape == (gates * 8, 8)


def test_recurrent_layer_with_a_caller_state_keeps_its_units():
    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 8, batch_first=True)
            self.head = nn.Linear(8, 2)

        def forward(self, x, h0):
            return self.head(self.rnn(x, h0)[0])

    g, _ = trace_warnings(WithState().eval(), (torch.randn(2, 3, 4), torch.zeros(1, 2, 8)))
    assert not group_of(g, "rnn").prunable


# -- split / unbind -----------------------------------------------------------------------------


class SplitSizes(nn.Module):
    def __init__(self, c1=6, c2=10):
        super().__init__()
        self.c1, self.c2 = c1, c2
        self.a = nn.Conv2d(3, c1 + c2, 1)
        self.b = nn.Conv2d(c1, 4, 1)
        self.c = nn.Conv2d(c2, 4, 1)

    def forward(self, x):
        y1, y2 = torch.split(self.a(x), [self.c1, self.c2], dim=1)
        return self.b(y1) + self.c(y2)


def test_split_with_a_list_of_sizes_held_by_attributes_is_pruned():
    torch.manual_seed(0)
    model, x = SplitSizes().eval(), torch.randn(1, 3, 4, 4)
    g, warns = trace_warnings(model, x)
    assert not [w for w in warns if "unevenly" in w]
    assert group_of(g, "a").prunable
    small, plan = _exact_and_smaller(model, x)
    assert small.b.in_channels == small.c1 and small.c.in_channels == small.c2
    assert small.a.out_channels == small.c1 + small.c2 < 16


def test_split_with_equal_literal_sizes_names_the_hard_coded_size():
    # two 1x1 convs like Expand in test_graph.py on purpose: the forward between them is the case
    class Literal(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.b = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            y1, y2 = torch.split(self.a(x), [4, 4], dim=1)
            return self.b(y1 * y2)

    g, warns = trace_warnings(Literal().eval(), torch.randn(1, 3, 4, 4))
    assert not group_of(g, "a").prunable
    assert any("hard-codes size 4" in w for w in warns) and not any("unevenly" in w for w in warns)


def test_unbind_on_dim_one_splits_a_fused_projection():
    # shaped like Unbind in test_graph_peer.py on purpose: that one checks the peer graph, this one
    # the plan and the pruned sizes, each with its own widths and gate
    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 3 * 12)
            self.out = nn.Linear(12, 8)

        def forward(self, x):
            q, k, v = self.qkv(x).reshape(x.shape[0], 3, -1).unbind(1)
            return self.out(torch.sigmoid(q * k) * v)

    torch.manual_seed(0)
    model, x = Fused().eval(), torch.randn(5, 8)
    g, warns = trace_warnings(model, x)
    grp = group_of(g, "qkv")
    assert grp.size == 12 and ("module", "out", "in") in grp.members, warns
    small, _ = _exact_and_smaller(model, x)
    assert small.qkv.out_features == 18 and small.out.in_features == 6


# -- ignore= ------------------------------------------------------------------------------------


# the same Linear-stack skeleton as KeywordOnly below on purpose: each model is its own case (an
# unused auxiliary head here, keyword-only inputs and mask code there)
class Aux(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)
        self.aux = nn.Linear(8, 2)  # an auxiliary classifier, unused in eval

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def test_ignore_takes_module_objects_and_types():
    model, x = Aux().eval(), torch.randn(2, 4)
    g, _ = trace_warnings(model, x, ignore=[model.a])
    assert not group_of(g, "a").prunable and group_of(g, "b").prunable
    g, _ = trace_warnings(model, x, ignore=nn.Linear)
    assert not any(grp.prunable for grp in g.groups())


def test_ignore_of_an_unreached_layer_warns_and_of_an_unknown_name_lists_close_names():
    model, x = Aux().eval(), torch.randn(2, 4)
    g, warns = trace_warnings(model, x, ignore=["aux"])
    assert any("aux is never reached by the traced forward" in w for w in warns)
    from edgeprune.errors import UserError

    with pytest.raises(UserError, match=r"ignore='hed' matches no prunable layer; close names: head"):
        epg.trace(model, x, ignore=["hed"])
    with pytest.raises(UserError, match="not part of the model"):
        epg.trace(model, x, ignore=[nn.Linear(1, 1)])


def test_round_to_none_means_no_rounding():
    model, x = Aux().eval(), torch.randn(2, 4)
    plan = epp.plan(model, x, ratio=0.25, round_to=None, global_ranking=False)
    assert len(plan.modules["a"]["out"]) == 6 and len(plan.modules["b"]["out"]) == 6


# -- capture of code torch.fx cannot follow ------------------------------------------------------


@dataclasses.dataclass
class Out:
    logits: torch.Tensor
    hidden: tuple


# the same Linear-stack skeleton as Aux above on purpose: the forward is the case under test
class KeywordOnly(nn.Module):
    """Keyword-only inputs, a **kwargs forward, mask code, in-place index assignment, a dataclass out."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, *, input_ids, attention_mask=None, **kwargs):
        h = self.emb(input_ids)
        if attention_mask is not None and bool((attention_mask == 0).any()):
            h = h * attention_mask[..., None]
        z = torch.relu(self.a(h))
        z[:, 0] = 0.0  # in-place index assignment on the token dim
        h = h + self.b(z)
        return Out(logits=self.head(h.mean(1)), hidden=(h,))


def test_keyword_inputs_mask_code_in_place_writes_and_dataclass_outputs_are_captured():
    torch.manual_seed(0)
    model = KeywordOnly().eval()
    ids = torch.randint(0, 20, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1, 3:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    g, _ = trace_warnings(model, inputs)
    a = group_of(g, "a")
    assert a.size == 16 and ("module", "b", "in") in a.members
    assert not group_of(g, "emb").prunable  # the residual is a model output (hidden)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same = epp.apply(model, epp.plan(model, inputs, ratio=0.0, graph=g))
        plan = epp.plan(model, inputs, ratio=0.5, round_to=None, graph=g)
    small = epp.apply(model, plan)  # verified on keyword inputs built from the plan's input specs
    assert [s.get("name") for s in plan.inputs] == ["input_ids", "attention_mask"]
    with torch.no_grad():
        ref = model(**inputs)
        assert (same(**inputs).logits - ref.logits).abs().max() <= 1e-6
        assert small(**inputs).logits.shape == ref.logits.shape
    assert small.a.out_features == 8 and small.b.in_features == 8
