"""torchvision-shaped classifiers and a transformers BERT encoder through the TFLite writer.

Consumes: the torchvision-shaped architectures of benchmarks/models.py (random weights, 48x48
inputs: every layer type and coupling of the 224x224 models at a fraction of the cost), a tiny
``transformers`` BertModel from a config (random weights, token ids + attention mask), LiteRT.
Produces: assertions that fp32 files match torch within 1e-4 relative in XNNPACK and builtin mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.export import export
from edgeprune.export.tflite_family import run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_zoo import bench_models  # noqa: E402
from conftest_quant import one_torch_thread  # noqa: E402,F401  (torch on one thread here)

TV = {
    "mobilenet_v2": bench_models.MobileNetV2,
    "mobilenet_v3_large": bench_models.MobileNetV3Large,
    "resnet18": bench_models.LOCAL["resnet18"],
    "resnet50": bench_models.LOCAL["resnet50"],
    "efficientnet_b0": bench_models.EfficientNetB0,
    "shufflenet_v2_x1_0": bench_models.ShuffleNetV2,
    "densenet121": bench_models.DenseNet121,
    **bench_models.EXTRA,
}
HEAVY = {"resnet50", "densenet121"}


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return model.eval()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in TV])
def test_torchvision_shaped_fp32(name, tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(TV[name]())
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    with torch.no_grad():
        ref = model(x).numpy()
    for builtin in (False, True):
        y = run(path, [x.numpy()], builtin=builtin)[0]
        assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max(), (name, builtin)


def test_transformers_bert_encoder_with_attention_mask(tmp_path):
    pytest.importorskip("transformers")
    from bert_encoder import bert_encoder

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    model, ids, mask = bert_encoder(12, 3, vocab_size=120, max_position_embeddings=32, **small)
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(ids, mask))["tflite"]
    with torch.no_grad():
        ref = model(ids, mask).numpy()
    for builtin in (False, True):
        y = run(path, [ids.numpy(), mask.numpy()], builtin=builtin)[0]
        assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max(), builtin
