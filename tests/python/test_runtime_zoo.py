"""The runtime on torchvision-shaped classifiers and on every test-zoo model, exported by
edgeprune's own TFLite writer.

Consumes: MobileNetV2/V3-Large, ResNet-18, EfficientNet-B0, ShuffleNetV2, SqueezeNet 1.1 and
MNASNet 1.0 as defined in benchmarks/models.py (random weights and BatchNorm statistics, 48x48
inputs), dense and with their 1x1 convs and FC layers pruned to 90 % unstructured (the writer
stores those in TFLite's sparse encoding). Produces: assertions that edgeprune.runtime matches
LiteRT on the same file within 1e-4 relative on every compiled path, gives the same bits for 1, 2
and 4 threads, and runs the pruned files' sparse 1x1 convs on the sparse kernels, channel-major.
Every model of the test zoo (tests/python/zoo.py: ResNets, MobileNets, EfficientNet, ShuffleNet,
DenseNet, ConvNeXt, ResNeXt, a UNet with transposed convolutions, ViTs, BERT) runs too, matching
LiteRT on the same file with the same inputs (token ids for BERT).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgeprune as ep
from edgeprune import kernels
from edgeprune.export import export
from edgeprune.export.tflite_family import run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_zoo import bench_models  # noqa: E402
from conftest_quant import one_torch_thread  # noqa: E402,F401  (torch on one thread here)
from runtime_models import litert_run  # noqa: E402
from zoo import ZOO as TEST_ZOO  # noqa: E402
from zoo import build  # noqa: E402

ZOO = {
    "mobilenet_v2": bench_models.MobileNetV2,
    "mobilenet_v3_large": bench_models.MobileNetV3Large,
    "resnet18": bench_models.LOCAL["resnet18"],
    "efficientnet_b0": bench_models.EfficientNetB0,
    "shufflenet_v2_x1_0": bench_models.ShuffleNetV2,
    "squeezenet1_1": bench_models.EXTRA["squeezenet1_1"],
    "mnasnet1_0": bench_models.EXTRA["mnasnet1_0"],
}
ISAS = [i for i in ("reference", "avx2", "avx512", "neon", "neon-dotprod") if i in kernels.supported_isas()]


def _model(name: str, sparse: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ZOO[name]()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
            pointwise = isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
            if sparse and (pointwise or isinstance(m, torch.nn.Linear)):
                w = m.weight
                w[w.abs() < w.abs().flatten().quantile(0.9)] = 0  # 90 % by magnitude
    return model.eval()


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse90"])
@pytest.mark.parametrize("name", list(ZOO))
def test_runtime_matches_litert_on_our_tflite_files(name, sparse, tmp_path):
    model = _model(name, sparse)
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    want = run(path, [x.numpy()])[0]
    xh = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
    tol = 1e-4 * float(np.abs(want).max())
    for isa in ISAS:
        got = ep.runtime.load(path, isa=isa)(xh)[0]
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) <= tol, (name, isa)
    outs = [ep.runtime.load(path, threads=t)(xh)[0] for t in (1, 2, 4)]
    assert all(np.array_equal(outs[0], o) for o in outs[1:]), name
    labels = [lbl for _, lbl, _ in ep.runtime.load(path).profile(runs=1)]
    n_sparse = sum("sparse" in lbl for lbl in labels)
    if not sparse:
        assert n_sparse == 0 and not any(lbl.startswith("layout") for lbl in labels), labels
    else:
        assert n_sparse >= 3, labels
        if name in ("mobilenet_v2", "mnasnet1_0", "efficientnet_b0"):  # 1x1 / depthwise chains
            assert sum(lbl.endswith(" nchw") for lbl in labels) >= 10, labels


@pytest.mark.parametrize("name", list(TEST_ZOO))
def test_runtime_matches_litert_on_every_test_zoo_model(name, tmp_path):
    model, x = build(name)
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x[:1],))["tflite"]
    data = Path(path).read_bytes()
    m = ep.runtime.load(data)
    rng = np.random.default_rng(3)
    xs = [
        rng.standard_normal(i["shape"]).astype(np.float32)
        if np.dtype(i["dtype"]) == np.float32
        else rng.integers(0, 50, i["shape"]).astype(i["dtype"])  # token ids inside the zoo's vocabulary
        for i in m.inputs
    ]
    want = litert_run(data, xs)
    for isa in ISAS:
        got = ep.runtime.load(data, isa=isa)(*xs)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape, (name, isa)
            assert float(np.abs(g - w).max()) <= 1e-4 * float(np.abs(w).max()), (name, isa)
    outs = [ep.runtime.load(data, threads=t)(*xs)[0] for t in (1, 2, 4)]
    assert all(np.array_equal(outs[0], o) for o in outs[1:]), name
