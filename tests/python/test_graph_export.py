"""The torch.export capture path and the order of capture paths.

Consumes: small models written here: keyword-only inputs, data-dependent mask code, in-place index
assignment, ``**kwargs`` forwards and ``ModelOutput`` outputs. Produces: assertions that
``capture="export"`` captures them with plans naming the model's modules, that ratio 0 is exact and
ratio 0.5 prunes to a smaller model with the same outputs' shapes, that tuple, dict and
``BatchEncoding`` example inputs give the same groups, and that a model no path captures raises one
line naming where each path stopped and how to make the code a leaf.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn as nn

import edgeprune.graph as epg
import edgeprune.prune as epp
from edgeprune.errors import UserError
from edgeprune.graph.trace import AUTO_ORDER

transformers = pytest.importorskip("transformers")


@dataclasses.dataclass
class Out(transformers.utils.ModelOutput):
    logits: torch.Tensor = None
    hidden: torch.Tensor = None


class Masked(nn.Module):
    """Token model whose forward symbolic fx cannot follow: keyword-only inputs, a ``**kwargs``
    pass-through, mask code, in-place index assignment and a ModelOutput result."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.up = nn.Linear(16, 32)
        self.down = nn.Linear(32, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 5)

    def block(self, h, **kwargs):
        mask = kwargs["attention_mask"]
        h = h.clone()
        h[mask == 0] = 0.0  # in-place index assignment
        return h + self.down(torch.relu(self.up(h)))

    def forward(self, *, input_ids, attention_mask):
        h = self.emb(input_ids)
        h = torch.where(attention_mask[..., None] > 0, h, h * 0.5)  # mask code on values
        h = self.norm(self.block(h, attention_mask=attention_mask))
        return Out(logits=self.head(h), hidden=h)


def _tokens():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 20, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _outs(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    return out.logits, out.hidden


def _prune(model, inputs, ratio, capture="export"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = epg.trace(model, inputs, capture=capture)
        return graph, epp.plan(model, inputs, ratio=ratio, round_to=1, global_ranking=False, graph=graph)


def test_export_captures_keyword_mask_code_and_model_output_and_prunes():
    torch.manual_seed(0)
    model, inputs = Masked().eval(), _tokens()
    graph, plan0 = _prune(model, inputs, 0.0)
    assert {"emb", "up", "down", "norm", "head"} <= {n.target for n in graph.gm.nodes if n.op == "call_module"}
    same = epp.apply(model, plan0)
    for a, b in zip(_outs(model, inputs), _outs(same, inputs)):
        assert (a - b).abs().max().item() <= 1e-5
    _, plan = _prune(model, inputs, 0.5)
    assert plan.modules["up"]["out"] and len(plan.modules["up"]["out"]) == 16  # the hidden neurons are named
    small = epp.apply(model, plan)
    assert small.up.out_features == 16 and small.down.in_features == 16
    assert small.emb.embedding_dim == 16  # the residual reaches the output: kept
    for a, b in zip(_outs(model, inputs), _outs(small, inputs)):
        assert a.shape == b.shape
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_export_accepts_dict_batch_encoding_and_tuple_inputs_alike():
    torch.manual_seed(0)
    model = Masked().eval()
    groups = {}
    for kind in ("dict", "batch"):
        inputs = _tokens() if kind == "dict" else transformers.BatchEncoding(_tokens())
        graph, _ = _prune(model, inputs, 0.5)
        groups[kind] = sorted((g.id, g.size, g.prunable) for g in graph.groups())
    assert groups["dict"] == groups["batch"] and any(p for _, _, p in groups["dict"])

    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(1, 3, 8, 8)
    by_path = {}
    for path in ("fx", "export", "eager"):
        graph, _ = _prune(conv, (x,), 0.5, capture=path)
        by_path[path] = sorted((g.id, g.size, g.prunable) for g in graph.groups())
    assert by_path["export"] == by_path["fx"] == by_path["eager"]


def test_auto_tries_fx_then_the_eager_recording_then_export():
    assert AUTO_ORDER == ("fx", "eager", "export")
    with pytest.raises(UserError, match="capture='bogus': use 'auto', 'fx', 'export' or 'eager'"):
        epg.trace(nn.Linear(2, 2), torch.randn(1, 2), capture="bogus")


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent: symbolic fx and export stop here
            x = x * 2
        return self.a(x.view(7, -1))  # wrong for these inputs: the eager run stops here


def test_no_capture_path_names_where_each_stopped_and_the_leaf_fix():
    with pytest.raises(UserError) as e:
        epg.trace(Broken(), torch.ones(1, 4))
    msg = str(e.value)
    line = Broken.forward.__code__.co_firstlineno
    assert msg.startswith("cannot capture Broken: torch.fx stopped at ") and "\n" not in msg
    assert f"test_graph_export.py:{line + 1} with TraceError" in msg.split("; ")[0]
    assert "the eager recording stopped at " in msg and f"test_graph_export.py:{line + 3} with RuntimeError" in msg
    export = next(p for p in msg.split("; ") if p.startswith("torch.export stopped"))
    assert f"test_graph_export.py:{line + 1}" in export
    assert "register_layer(TheModuleType, LayerRule(trace=...))" in msg


class _Residual(nn.Module):
    """``x + drop(mix(x))`` where ``drop`` is an identity module called on the output of another
    leaf (SegFormer's ``drop_path`` after its ``hidden_dropout``): both recorded calls name the same
    output, and the region of ``hidden_dropout`` must get its own call signature."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(8, 8)
        self.drop_path = nn.Identity()  # registered first, as in SegFormer: its call is listed first
        self.hidden_dropout = nn.Dropout(0.0)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(x + self.drop_path(self.hidden_dropout(self.mix(x))))


def test_export_capture_matches_an_identity_call_to_its_own_module():
    torch.manual_seed(0)
    model, x = _Residual().eval(), torch.randn(2, 8)
    graph = epg.trace(model, (x,), capture="export")
    calls = [n.target for n in graph.gm.nodes if n.op == "call_module"]
    assert {"mix", "head"} <= set(calls)
    _, plan0 = _prune(model, (x,), 0.0)
    same = epp.apply(model, plan0)
    with torch.no_grad():
        assert (same(x) - model(x)).abs().max().item() <= 1e-6
