"""Zero-channel padding of int8 ONNX files (edgeprune.export.onnx_align): exact in ONNX Runtime,
int8 kernels everywhere, and groups it cannot see through left alone."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper

import edgeprune as ep
from edgeprune.export import export
from edgeprune.export.inspect import inspect_onnx, ort_kernels
from edgeprune.export.onnx import file_weight_dtype, quantize_onnx, torch_to_onnx, weights_as_uint8
from edgeprune.export.onnx_align import METADATA_KEY, align_channels
from edgeprune.export.onnx_hardswish import split_hardswish

ort = pytest.importorskip("onnxruntime")


class Block(nn.Module):
    """MobileNetV3-style: 1x1 expand to an unaligned width, hard-swish, depthwise, squeeze-excite, 1x1 project."""

    def __init__(self, cin=16, mid=72, cout=24, dw_out=False):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU())
        self.se1, self.se2 = nn.Conv2d(mid, 24, 1), nn.Conv2d(24, mid, 1)
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.dw_out = dw_out

    def forward(self, x):
        d = self.dw(self.expand(x))
        g = nn.functional.hardsigmoid(self.se2(torch.relu(self.se1(nn.functional.adaptive_avg_pool2d(d, 1)))))
        y = self.project(d * g)
        return (y, d) if self.dw_out else y


class Net(nn.Module):
    def __init__(self, dw_out=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU())
        self.block = Block(dw_out=dw_out)
        self.head = nn.Linear(24, 10)
        self.dw_out = dw_out

    def forward(self, x):
        y = self.block(self.stem(x))
        if self.dw_out:
            y, d = y
            return self.head(y.mean((2, 3))), d
        return self.head(y.mean((2, 3)))


def _quantized(model):
    torch.manual_seed(0)
    calib = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.train()
    with torch.no_grad():  # BN statistics from data, so activations have realistic ranges
        model(calib)
    model.eval()
    return ep.quantize(model, calib, method="minmax", calib_n=16, progress=False), calib


def _unaligned(qm, x) -> onnx.ModelProto:
    """The int8 file as ``write_int8`` writes it, without the padding."""
    proto = split_hardswish(quantize_onnx(torch_to_onnx(qm.folded, (x[:1],), False), qm))
    return weights_as_uint8(proto) if file_weight_dtype(qm) == "uint8" else proto


def _session(proto_or_path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    src = proto_or_path.SerializeToString() if isinstance(proto_or_path, onnx.ModelProto) else str(proto_or_path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def test_padding_is_exact_and_every_conv_runs_int8(tmp_path):
    qm, calib = _quantized(Net())
    path = export(qm, tmp_path / "out", formats=["onnx-int8"])["onnx-int8"]
    proto = onnx.load(str(path))
    padded = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    # the 72-channel group (expand output, depthwise, squeeze-excite) to 80; the RGB input to 4
    assert sorted(padded["groups"].values()) == [[3, 4], [72, 80]]
    # every weighted node that changed, with its weight's shape before: stem, expand, dw, se1, se2, project
    assert sorted(padded["layers"].values()) == [
        [16, 3, 3, 3],
        [24, 72, 1, 1],
        [24, 72, 1, 1],
        [72, 1, 3, 3],
        [72, 16, 1, 1],
        [72, 24, 1, 1],
    ]
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    dw = next(
        n for n in proto.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    )
    assert next(a.i for a in dw.attribute if a.name == "group") == 80
    dq = producer[dw.input[1]]
    wq, wz = inits[dq.input[0]], inits[dq.input[2]]
    # the padded filters hold the zero point (uint8 weights at 128): they dequantize to 0
    assert wq.shape == (80, 1, 3, 3) and wz.shape == (80,) and np.all(wz == 128)
    assert np.all(wq[72:] == 128) and np.any(wq[:72] != 128)
    # bit-identical outputs to the unpadded file, on the calibration images and on outliers
    a, b = _session(path), _session(_unaligned(qm, calib))
    name = a.get_inputs()[0].name
    for x in [calib[i : i + 1].numpy() for i in range(4)] + [np.full((1, 3, 32, 32), 3.0, np.float32)]:
        assert np.array_equal(a.run(None, {name: x})[0], b.run(None, {name: x})[0])
    # and ONNX Runtime runs every convolution and the classifier as an int8 kernel
    k = ort_kernels(path)
    assert k["int8_weighted_ops"] == k["weighted_ops"] == 7, k
    # inspect counts the model's parameters and MACs, and the zero channels apart
    plain = inspect_onnx(export(qm.original, tmp_path / "fp32", formats=["onnx"], example_inputs=calib[:1])["onnx"])
    info = inspect_onnx(path)
    assert (info["params"], info["macs"]) == (plain["params"], plain["macs"])
    # stem: +1 input channel (16x3x3 weights, 16x16x16 outputs); expand/dw/se/project: +8 channels
    # (expand and dw carry the folded BatchNorms' biases, se2 its own)
    extra_params = 16 * 9 + (8 * 16 + 8) + (8 * 9 + 8) + (24 * 8) + (8 * 24 + 8) + (24 * 8)
    assert info["padding"]["params"] == extra_params
    stem_macs, expand_macs, dw_macs, project_macs = 16 * 16 * 16 * 9, 16 * 16 * 8 * 16, 8 * 8 * 8 * 9, 8 * 8 * 24 * 8
    se_macs = 24 * 8 + 8 * 24
    assert info["padding"]["macs"] == stem_macs + expand_macs + dw_macs + project_macs + se_macs


def test_a_group_that_reaches_a_graph_output_keeps_its_width(tmp_path):
    qm, calib = _quantized(Net(dw_out=True))
    proto = align_channels(_unaligned(qm, calib))
    padded = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])["groups"]
    assert [3, 4] in padded.values() and [72, 80] not in padded.values()
    out = _session(proto).run(None, {"input": calib[:1].numpy()})
    assert out[1].shape == (1, 72, 8, 8)


def test_aligned_widths_are_left_alone():
    qm, calib = _quantized(nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3, groups=16), nn.ReLU()))
    proto = _unaligned(qm, calib)
    before = [(i.name, tuple(i.dims)) for i in proto.graph.initializer]
    aligned = align_channels(proto)
    # the 3-channel input feeds a dense conv (padded to 4); the 16-channel depthwise is already aligned
    meta = json.loads(next(p.value for p in aligned.metadata_props if p.key == METADATA_KEY))
    assert meta["groups"] == {"input_dequantized": [3, 4]}
    dims = dict((i.name, tuple(i.dims)) for i in aligned.graph.initializer if i.name in dict(before))
    assert sum(dims[n] != d for n, d in before) == 1  # only the stem's weights grew


def test_inspect_reads_a_padded_file_without_torch(tmp_path):
    # `edgeprune inspect` runs on devices without torch: the padding record must not need it
    import subprocess
    import sys

    qm, calib = _quantized(Net())
    path = export(qm, tmp_path / "out", formats=["onnx-int8"])["onnx-int8"]
    code = (
        "import sys\n"
        "class _NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('no torch on this device')\n"
        "sys.meta_path.insert(0, _NoTorch())\n"
        "from edgeprune.cli.main import main\n"
        f"sys.exit(main(['inspect', {str(path)!r}, '--json']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert sorted(info["padding"]["groups"].values()) == [[3, 4], [72, 80]] and info["padding"]["params"] == 944
