"""torchvision and timm classifiers (random weights) through trace, plan, apply and ONNX export.

Runs in the side environment ``make zoo`` builds (torch 2.14.1, torchvision, timm); in the default
environment neither library is installed and the module is skipped as a whole.
Consumes: classifiers built by name, at 64x64 input (224 for models that fix their input size).
Produces: assertions that removing half of every group's channels (round_to 8, l2) leaves a model
with fewer MACs that runs, keeps its output shape, and exports to ONNX matching torch in ONNX
Runtime within 1e-3 relative.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import edgeprune.prune as epp
from edgeprune.export.onnx import torch_to_onnx

pytestmark = pytest.mark.zoo

TORCHVISION = [
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "mnasnet1_0",
    "shufflenet_v2_x1_0",
    "squeezenet1_1",
    "densenet121",
    "regnet_y_400mf",
    "convnext_tiny",
    "vgg11_bn",
    "googlenet",
    "vit_b_16",
    "swin_t",
]
TIMM = [
    "resnet18",
    "convnext_atto",
    "efficientnet_b0",
    "regnetx_002",
    "mobilevit_xxs",
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
]
FIXED_SIZE = ("vit", "deit", "swin", "googlenet")


def _size(name):
    return 224 if any(name.startswith(p) for p in FIXED_SIZE) else 64


def _check(model, name):
    torch.manual_seed(0)
    model.eval()
    x = torch.randn(1, 3, _size(name), _size(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = epp.plan(model, x, ratio=0.5, round_to=8, global_ranking=False)
    small = epp.apply(model, plan)
    macs0, _ = epp.count_macs_params(model, x)
    macs1, _ = epp.count_macs_params(small, x)
    assert macs1 < 0.8 * macs0, (name, macs1 / macs0)
    with torch.no_grad():
        ref = small(x)
    assert ref.shape == model(x).shape
    import onnxruntime as ort

    sess = ort.InferenceSession(torch_to_onnx(small, (x,)).SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - ref.numpy()).max() <= 1e-3 * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_classifier_prunes_runs_and_exports(name):
    tv = pytest.importorskip("torchvision")
    _check(tv.models.get_model(name, weights=None, num_classes=10), name)


@pytest.mark.parametrize("name", TIMM)
def test_timm_classifier_prunes_runs_and_exports(name):
    timm = pytest.importorskip("timm")
    kw = {"img_size": 224} if "patch16" in name else {}
    _check(timm.create_model(name, pretrained=False, num_classes=10, **kw), name)
