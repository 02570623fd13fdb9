"""GPU (TensorRT-style) estimates: the per-layer launch cost and the occupancy term keep a
channel-pruned CNN from looking far faster on a Jetson GPU than its MAC count alone says.

Consumes: ResNet-50's convolution shapes written out here (batch 1, 224x224), unpruned and with
every bottleneck's inner width halved (50 % channel pruning of conv1/conv2). Produces: pass/fail.
"""

from __future__ import annotations

import importlib

import pytest

import edgeprune as ep

E = importlib.import_module("edgeprune.estimate")


def resnet50_ops(inner_scale: float = 1.0) -> list:
    ops = []

    def conv(name, cin, cout, k, hw_out):
        kind = "pointwise" if k == 1 else "conv"
        out = cout * hw_out * hw_out
        ops.append(E.Op(name, kind, macs=out * cin * k * k, weight_elems=cout * cin * k * k, out_elems=out))

    conv("stem", 3, 64, 7, 112)
    cin = 64
    for stage, (planes, blocks, hw) in enumerate([(64, 3, 56), (128, 4, 28), (256, 6, 14), (512, 3, 7)]):
        inner = int(planes * inner_scale)
        for b in range(blocks):
            # ResNet-50 v1.5 (torchvision): the stride sits in conv2, so a stage's first conv1
            # still runs at the previous resolution
            conv(f"s{stage}b{b}.conv1", cin, inner, 1, 2 * hw if b == 0 and stage > 0 else hw)
            conv(f"s{stage}b{b}.conv2", inner, inner, 3, hw)
            conv(f"s{stage}b{b}.conv3", inner, planes * 4, 1, hw)
            if b == 0:
                conv(f"s{stage}b{b}.down", cin, planes * 4, 1, hw)
            ops.append(
                E.Op(f"s{stage}b{b}.add", "eltwise", in_elems=2 * planes * 4 * hw * hw, out_elems=planes * 4 * hw * hw)
            )
            cin = planes * 4
    ops.append(E.Op("fc", "fc", macs=2048 * 1000, weight_elems=2048 * 1000, out_elems=1000))
    return ops


def test_resnet50_macs_are_the_known_4_1_g():
    assert sum(op.macs for op in resnet50_ops()) / 1e9 == pytest.approx(4.09, abs=0.05)


def test_pruned_resnet50_on_orin_gpu_gains_less_than_its_macs_say():
    orin = ep.targets.load("jetson-orin-nano")
    full, pruned = resnet50_ops(), resnet50_ops(0.5)
    mac_ratio = sum(o.macs for o in pruned) / sum(o.macs for o in full)
    gpu = E.estimate_gpu_ops(pruned, orin, "int8").total_ms / E.estimate_gpu_ops(full, orin, "int8").total_ms
    cpu = E.estimate_ops(pruned, orin, "int8", 6).total_ms / E.estimate_ops(full, orin, "int8", 6).total_ms
    assert 0.35 < mac_ratio < 0.45
    # the CPU tracks the MACs; the GPU keeps a fixed cost per layer and loses occupancy on the
    # narrowed late layers, so it gains clearly less
    assert cpu == pytest.approx(mac_ratio, abs=0.1)
    assert gpu > mac_ratio + 0.15 and gpu < 1.0


def test_occupancy_is_reported_and_follows_the_cuda_cores():
    orin, nano = ep.targets.load("jetson-orin-nano"), ep.targets.load("jetson-nano")
    assert E.gpu_cuda_cores(orin.gpu) == 1024 and E.gpu_cuda_cores(nano.gpu) == 128
    est = E.estimate_gpu_ops(resnet50_ops(), orin, "int8")
    assert "1024 x 64" not in est.assumptions["occupancy"] and "65536" in est.assumptions["occupancy"]
    # a layer with fewer output elements than the GPU has lanes runs below peak efficiency
    narrow = [o for o in est.layers if o.name == "s3b1.conv2"][0]
    wide = [o for o in est.layers if o.name == "s0b1.conv2"][0]
    assert narrow.macs == wide.macs  # ResNet keeps MACs per block roughly equal across stages
    assert narrow.compute_ms > 2 * wide.compute_ms


def test_cuda_core_gpu_is_fitted_to_the_published_nano_point_and_labelled():
    """Jetson Nano (no tensor cores): conv/1x1 efficiency fitted to torch2trt's ResNet-50 fp16 29.8 ms."""
    nano, orin = ep.targets.load("jetson-nano"), ep.targets.load("jetson-orin-nano")
    assert E.gpu_tensor_cores(nano.gpu) == 0 and E.gpu_tensor_cores(orin.gpu) == 32
    est = E.estimate_gpu_ops(resnet50_ops(), nano, "fp16")
    assert est.total_ms == pytest.approx(29.8, rel=0.05)
    d = est.to_dict()
    assert d["calibrated"] is True and d["calibration"] == "published"
    assert "torch2trt" in d["assumptions"]["calibration"]
    # Orin's tensor-core peak keeps the assumed efficiencies and says so
    o = E.estimate_gpu_ops(resnet50_ops(), orin, "int8").to_dict()
    assert o["calibrated"] is False and o["calibration"] == "none"
    assert o["assumptions"]["efficiency"]["conv"] == E.GPU_EFFICIENCY["conv"]
