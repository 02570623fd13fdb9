"""Torch fake-quant modules that apply a QuantizedModel's scales.

Consumes: the BN-folded fp32 ``torch.fx.GraphModule`` and the per-point / per-layer scales.
Produces: an ``nn.Module`` computing what the int8 ONNX computes (quantize -> dequantize at the
same tensors with the same scales, weights int8 per output channel, bias int32 at s_in*s_w),
usable for evaluation and, in train mode, for QAT (straight-through estimator gradients).
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .observers import Observer

QUANT_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)
# int32 bounds that float32 represents exactly (2**31 - 1 would round up to 2**31 and overflow)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 128


class QuantPoint(nn.Module):
    """One activation tensor: observes it during calibration, fake-quantizes it afterwards."""

    def __init__(self, name: str, bins: int = 2048):
        super().__init__()
        self.point_name = name
        self.mode = "off"  # off | minmax | histogram | quant
        self.observer = Observer(bins)
        self.scale = 1.0
        self.zero_point = 0
        self.qmin, self.qmax = -128, 127

    def set_qparams(self, scale: float, zero_point: int, qmin: int, qmax: int) -> None:
        self.scale, self.zero_point, self.qmin, self.qmax = float(scale), int(zero_point), int(qmin), int(qmax)
        self.mode = "quant"

    def forward(self, x):
        if self.mode == "quant":
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.qmin, self.qmax)
        if self.mode == "minmax":
            self.observer.observe_minmax(x)
        elif self.mode == "histogram":
            self.observer.observe_histogram(x)
        return x


def _ste_round(x):
    return x + (torch.round(x) - x).detach()


class QuantLayer(nn.Module):
    """A Conv1d/Conv2d/Linear whose weight (int8 per output channel) and bias (int32) are fake-quantized.

    In eval mode the stored weight scales are used (those of the QuantizedModel); in train mode
    (QAT) they are recomputed from the current weights each step, as they will be after QAT.
    """

    def __init__(self, layer: nn.Module, weight_scale, qmax: int, per_channel: bool, input_point: QuantPoint | None):
        super().__init__()
        self.layer = layer
        self.qmax = int(qmax)
        self.per_channel = per_channel
        self.register_buffer("weight_scale", torch.tensor(weight_scale, dtype=torch.float32))
        # not a submodule: the point is owned by the graph; we only read its scale
        self._input_point = [input_point]
        self.quantize_weights = True

    def current_weight_scale(self) -> torch.Tensor:
        if not self.training:
            return self.weight_scale
        w = self.layer.weight.detach()
        if self.per_channel:
            amax = w.abs().reshape(w.shape[0], -1).amax(dim=1)
        else:
            amax = w.abs().max().reshape(1).expand(w.shape[0])
        amax = torch.where(amax > 0, amax, amax.max().clamp_min(1e-8).expand_as(amax))
        return (amax / self.qmax).float()

    def quantized_params(self):
        w, b = self.layer.weight, self.layer.bias
        if not self.quantize_weights:
            return w, b
        s = self.current_weight_scale()
        s_full = s if s.numel() == w.shape[0] else s.expand(w.shape[0])
        zeros = torch.zeros(w.shape[0], dtype=torch.int32)
        wq = torch.fake_quantize_per_channel_affine(w, s_full, zeros, 0, -self.qmax, self.qmax)
        point = self._input_point[0]
        if b is not None and point is not None and point.mode == "quant":
            bs = (torch.tensor(point.scale, dtype=torch.float32) * s_full).float()
            bq = torch.clamp(_ste_round(b / bs), INT32_MIN, INT32_MAX) * bs
        else:
            bq = b
        return wq, bq

    def forward(self, x):
        w, b = self.quantized_params()
        m = self.layer
        if isinstance(m, nn.Linear):
            return F.linear(x, w, b)
        if isinstance(m, nn.Conv2d):
            return m._conv_forward(x, w, b)
        return m._conv_forward(x, w, b)  # Conv1d


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


class GatedHardswish(nn.Module):
    """HardSwish as ``x * g / 6`` with the gate ``g = relu6(x + 3)`` rounded to 255 steps of 6/255.

    This is the arithmetic of the int8 ONNX file for ONNX Runtime, which has no int8 HardSwish and
    runs it as QLinearAdd (the gate; its saturation is the relu6) and QLinearMul
    (``export.onnx_hardswish``). The grid is fixed, so there is nothing to calibrate; while
    ``active`` is False (calibration) this is the plain HardSwish.
    """

    GATE_SCALE = 6.0 / 255.0

    def __init__(self):
        super().__init__()
        self.active = False

    def forward(self, x):
        if not self.active:
            return F.hardswish(x)
        g = torch.fake_quantize_per_tensor_affine(torch.clamp(x + 3.0, 0.0, 6.0), self.GATE_SCALE, 0, 0, 255)
        return x * (g / 6.0)


def build_module(
    folded: fx.GraphModule, points: list[str], layers: dict, bins: int = 2048, gates: tuple = ()
) -> fx.GraphModule:
    """A copy of ``folded`` with a QuantPoint after each point node and QuantLayers in place.

    ``layers`` maps a layer target to {"input": point, "weight_scale": [...], "qmax", "per_channel"}.
    ``gates`` names HardSwish nodes computed as ``GatedHardswish`` (inactive until switched on).
    Points start in mode "off" and layers with ``quantize_weights`` False, ready for calibration.
    """
    gm = copy.deepcopy(folded)
    graph = gm.graph
    by_name = {n.name: n for n in graph.nodes}
    qpoints: dict[str, QuantPoint] = {}
    for i, name in enumerate(points):
        node = by_name[name]
        attr = f"edgeprune_fq_{i}"
        qp = QuantPoint(name, bins)
        gm.add_module(attr, qp)
        qpoints[name] = qp
        with graph.inserting_after(node):
            new = graph.call_module(attr, (node,))
        node.replace_all_uses_with(new, delete_user_cb=lambda u, new=new: u is not new)
    for target, info in layers.items():
        layer = gm.get_submodule(target)
        ql = QuantLayer(layer, info["weight_scale"], info["qmax"], info["per_channel"], qpoints.get(info["input"]))
        ql.quantize_weights = False
        _set_submodule(gm, target, ql)
    for i, name in enumerate(gates):
        node = by_name[name]
        attr = f"edgeprune_gate_{i}"
        gm.add_module(attr, GatedHardswish())
        with graph.inserting_before(node):
            new = graph.call_module(attr, (node.args[0],))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.lint()
    gm.recompile()
    gm.eval()
    return gm


def quant_points(gm: nn.Module) -> dict[str, QuantPoint]:
    return {m.point_name: m for m in gm.modules() if isinstance(m, QuantPoint)}


def gated_hardswishes(gm: nn.Module) -> list[GatedHardswish]:
    return [m for m in gm.modules() if isinstance(m, GatedHardswish)]


def quant_layers(gm: nn.Module) -> dict[str, QuantLayer]:
    return {name: m for name, m in gm.named_modules() if isinstance(m, QuantLayer)}
