"""One small model per op a structured pruner is expected to follow (our own versions of the kinds
of models a peer pruner's test suite uses).

Consumes: models defined here: concat (also cascaded and along a non-channel dim), split, unbind,
pixel shuffle, grouped and depthwise conv, several inputs and outputs, LSTM, embeddings with layer
norm and attention, squeeze-excitation with a reduction, layer scale, flatten into a classifier,
a channels-first LayerNorm subclass.
Produces: for each, assertions that ratio 0 reproduces the outputs exactly, that ratio 0.5 (every
group cut) leaves a smaller model with the same output shapes, and that every group that can be
pruned lost channels (the expected number of prunable groups is stated per model).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import edgeprune.graph as epg
import edgeprune.prune as epp


def _cbr(cin, cout, k=3, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups), nn.BatchNorm2d(cout), nn.ReLU())


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = _cbr(3, 8), _cbr(3, 12)
        self.c = _cbr(20, 16)
        self.d, self.e = _cbr(16, 8), _cbr(36, 8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        ab = torch.cat([self.a(x), self.b(x)], 1)
        c = self.c(ab)
        return self.head(self.e(torch.cat([ab, c], 1)) + self.d(c))  # cascaded concat


class SpatialConcat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = _cbr(3, 8), _cbr(3, 8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], dim=2))  # along height: a and b tie


class Split(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = 8, 8
        self.a = _cbr(3, 16)
        self.b, self.c = _cbr(8, 8), _cbr(8, 8)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y1, y2 = torch.split(self.a(x), [self.c1, self.c2], 1)
        return self.head(torch.cat([self.b(y1), self.c(y2)], 1))


# shaped like Fused in test_graph_rules.py on purpose: this one checks the peer graph, that one the
# plan and the pruned sizes, each with its own widths and gate
class Unbind(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(10, 3 * 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        q, k, v = self.qkv(x).reshape(x.shape[0], 3, -1).unbind(1)
        return self.out(torch.tanh(q + k) * v)


class PixelShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = _cbr(3, 8)
        self.up = nn.Conv2d(8, 4 * 6, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.b = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.b(torch.relu(self.shuffle(self.up(self.a(x)))))


class GroupedDepthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = _cbr(3, 16)
        self.g = _cbr(16, 16, groups=4)
        self.dw = _cbr(16, 32, groups=16)  # depthwise with a channel multiplier of 2
        self.pw = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        return self.pw(self.dw(self.g(self.a(x))))


class MultiIO(nn.Module):
    def __init__(self):
        super().__init__()
        self.img, self.vec = _cbr(3, 8), nn.Linear(5, 8)
        self.fuse = nn.Linear(8, 12)
        self.out1, self.out2 = nn.Linear(12, 3), nn.Linear(12, 2)

    def forward(self, x, v):
        h = torch.relu(self.fuse(self.img(x).mean((2, 3)) + self.vec(v)))
        return self.out1(h), self.out2(h)


class LSTMTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 12)
        self.lstm = nn.LSTM(12, 16, num_layers=2, batch_first=True, bidirectional=True)
        self.tag = nn.Linear(32, 5)

    def forward(self, t):
        return self.tag(self.lstm(self.emb(t))[0])


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 16)
        self.norm = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.ff1, self.ff2 = nn.Linear(16, 32), nn.Linear(32, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, t):
        h = self.emb(t)
        n = self.norm(h)
        h = h + self.attn(n, n, n, need_weights=False)[0]
        h = h + self.ff2(torch.relu(self.ff1(h)))
        return self.head(h.mean(1))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = _cbr(3, 16)
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)  # reduction 4
        self.b = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        h = self.a(x)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(h.mean((2, 3), keepdim=True)))))
        return self.b(h * s)


class LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw1, self.pw2 = nn.Linear(16, 32), nn.Linear(32, 16)
        self.gamma = nn.Parameter(torch.rand(16) + 0.5)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.stem(x)
        y = self.pw2(torch.nn.functional.gelu(self.pw1(self.dw(h).permute(0, 2, 3, 1))))
        h = h + (self.gamma * y).permute(0, 3, 1, 2)
        return self.head(h.mean((2, 3)))


class FlattenHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = _cbr(3, 8)
        self.fc1, self.fc2 = nn.Linear(8 * 4 * 4, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(nn.functional.adaptive_avg_pool2d(self.a(x), 4), 1))))


class LayerNorm2d(nn.LayerNorm):
    """Channels-first LayerNorm as torchvision and timm write it: a subclass with its own forward."""

    def forward(self, x):
        y = nn.functional.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class ChannelsFirstNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.norm, self.b = nn.Conv2d(3, 16, 3, padding=1), LayerNorm2d(16), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.b(torch.relu(self.norm(self.a(x))))


def _img():
    return torch.randn(2, 3, 8, 8)


def _tok():
    return torch.randint(0, 30, (2, 6))


# model -> (inputs, number of prunable groups)
MODELS = {
    "concat": (Concat, _img, 4),  # d and e are added: one group
    "spatial_concat": (SpatialConcat, _img, 1),
    "split": (Split, _img, 3),
    "unbind": (Unbind, lambda: torch.randn(4, 10), 1),
    "pixel_shuffle": (PixelShuffle, _img, 2),
    "grouped_depthwise": (GroupedDepthwise, _img, 2),
    "multi_io": (MultiIO, lambda: (_img(), torch.randn(2, 5)), 2),
    "lstm": (LSTMTagger, _tok, 2),
    "attention": (Attention, _tok, 2),  # nn.MultiheadAttention's width is the residual width
    "squeeze_excite": (SqueezeExcite, _img, 2),
    "layer_scale": (LayerScale, _img, 2),
    "flatten": (FlattenHead, _img, 2),
    "layer_norm_2d": (ChannelsFirstNorm, _img, 1),
}


def _run(model, x):
    with torch.no_grad():
        out = model(*x) if isinstance(x, tuple) else model(x)
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", list(MODELS))
def test_prunes_exactly_at_zero_and_cuts_every_group_at_half(name):
    cls, make, n_groups = MODELS[name]
    torch.manual_seed(0)
    model, x = cls().eval(), make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = epg.trace(model, x)
    prunable = [g for g in graph.groups() if g.prunable]
    assert len(prunable) == n_groups, ([g.id for g in prunable], [str(w.message) for w in caught])
    same = epp.apply(model, epp.plan(model, x, ratio=0.0, graph=graph))
    for a, b in zip(_run(model, x), _run(same, x)):
        assert (a - b).abs().max().item() <= 1e-5
    plan = epp.plan(model, x, ratio=0.5, round_to=None, global_ranking=False, graph=graph)
    small = epp.apply(model, plan)
    for a, b in zip(_run(model, x), _run(small, x)):
        assert a.shape == b.shape
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    cut = {g["id"]: g for g in plan.groups}
    for g in prunable:
        assert cut[g.id]["kept"] <= g.size - g.size // 2, g.id  # every prunable group lost its half
