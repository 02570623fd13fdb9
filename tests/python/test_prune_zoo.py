"""Acceptance of the pruning engine on every zoo architecture.

Consumes: the models of tests/python/zoo.py. Produces: assertions that ratio 0 is the identity,
that pruned models equal the original with the removed channels zeroed in their consumers
(kept-channel equivalence, 0.3 and 0.6), that pruned models export to ONNX and match in ONNX
Runtime, and that kept channel counts are multiples of round_to.
"""

from __future__ import annotations

import copy
import io
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).parent))
from zoo import ZOO, build  # noqa: E402

import edgeprune.graph as epg  # noqa: E402
import edgeprune.prune as epp  # noqa: E402

NAMES = sorted(ZOO)


def _run(model, x):
    with torch.no_grad():
        return model(x)


def _close(a, b, rel):
    scale = max(1.0, float(b.abs().max()))
    return float((a - b).abs().max()) <= rel * scale


def zero_removed_inputs(model: nn.Module, plan) -> nn.Module:
    """The original model with, in every consumer, the input weights of removed channels zeroed."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, roles in plan.modules.items():
            m = ref.get_submodule(name)
            if isinstance(m, nn.MultiheadAttention):
                removed = sorted(set(range(m.embed_dim)) - set(roles["embed"]))
                m.in_proj_weight[:, removed] = 0
                m.out_proj.weight[:, removed] = 0
                continue
            if "in" not in roles:
                continue
            if isinstance(m, nn.Linear):
                removed = sorted(set(range(m.in_features)) - set(roles["in"]))
                m.weight[:, removed] = 0
            elif isinstance(m, nn.modules.conv._ConvNd):
                g = m.groups
                if isinstance(m, nn.modules.conv._ConvTransposeNd):  # weight [in, out/g, ...]
                    removed = sorted(set(range(m.in_channels)) - set(roles["in"]))
                    m.weight[removed] = 0
                elif g == 1:
                    removed = sorted(set(range(m.in_channels)) - set(roles["in"]))
                    m.weight[:, removed] = 0
                else:
                    per = m.in_channels // g
                    cols = sorted(set(range(per)) - {k % per for k in roles["in"]})
                    m.weight[:, cols] = 0
    return ref


@pytest.fixture(scope="module")
def traced():
    out = {}
    for name in NAMES:
        model, x = build(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[name] = (model, x, epg.trace(model, x))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_ratio_zero_is_identity(traced, name):
    model, x, graph = traced[name]
    plan = epp.plan(model, x, ratio=0.0, round_to=1, graph=graph)
    assert plan.empty
    pruned = epp.apply(model, plan)
    assert pruned is not model
    assert float((_run(pruned, x) - _run(model, x)).abs().max()) <= 1e-5


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_kept_channel_equivalence(traced, name, ratio):
    model, x, graph = traced[name]
    exact = {g.id: ratio for g in graph.groups() if g.prunable and g.exact}
    assert exact, f"{name}: no exact prunable group"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = epp.plan(model, x, ratio=ratio, ratios=exact, round_to=1, graph=graph)
    assert not plan.empty
    pruned = epp.apply(model, plan)
    # the input model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    _, params_before = epp.count_macs_params(model, x)
    _, params_after = epp.count_macs_params(pruned, x)
    assert params_after < params_before
    ref = zero_removed_inputs(model, plan)
    assert _close(_run(pruned, x), _run(ref, x), 1e-4)


def _onnx_outputs(model, x):
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"], opset_version=17)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])


@pytest.mark.parametrize("name", NAMES)
def test_pruned_model_exports_to_onnx_and_matches(traced, name):
    model, x, graph = traced[name]
    round_to = 4
    plan = epp.plan(model, x, ratio=0.6, round_to=round_to, graph=graph)
    pruned = epp.apply(model, plan)
    macs0, _ = epp.count_macs_params(model, x)
    macs1, _ = epp.count_macs_params(pruned, x)
    assert macs1 < macs0
    y = _run(pruned, x)
    assert _close(_onnx_outputs(pruned, x), y, 1e-4)
    # round_to: every producing layer of a pruned group keeps a multiple of round_to channels
    checked = 0
    for entry in plan.groups:
        if entry["kept"] == entry["channels"]:
            continue
        group = graph.group(entry["id"])
        for src in group.sources:
            m = pruned.get_submodule(src)
            count = {nn.Linear: "out_features", nn.Embedding: "embedding_dim"}
            attr = next((v for k, v in count.items() if isinstance(m, k)), "out_channels")
            assert getattr(m, attr) % round_to == 0, f"{src} keeps {getattr(m, attr)} channels"
            checked += 1
    assert checked


@pytest.mark.zoo
def test_torchvision_classifiers_prune():
    try:
        tv = pytest.importorskip("torchvision")
    except RuntimeError as e:  # a wheel whose compiled ops do not match this torch build
        pytest.skip(f"torchvision is installed but does not import with this torch: {e}")
    x = torch.randn(1, 3, 224, 224)
    failures = []
    for name in tv.models.list_models(module=tv.models):
        model = tv.models.get_model(name, weights=None).eval()
        try:
            plan = epp.plan(model, x, ratio=0.5, round_to=8)
            pruned = epp.apply(model, plan)
            assert _run(pruned, x).shape == _run(model, x).shape
            assert epp.count_macs_params(pruned, x)[0] < epp.count_macs_params(model, x)[0]
        except Exception as e:  # collect every failure, then report them all
            failures.append(f"{name}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)
