"""Post-training int8 quantization: BN folding, quant-point analysis, calibration, QuantizedModel.

Consumes: an ``nn.Module`` (pruned or not), calibration data (a torch Dataset of (x, y) or x, a
DataLoader or iterable of batches, a tensor/array N x C x H x W, or a DataSplits whose ``.train``
is used; for models of several or named inputs, such as ``transformers`` encoders, dicts or
``BatchEncoding`` s of token ids and masks: ``inputs.py``), a method and a target.
Capture: symbolic ``torch.fx``, or ``torch.export`` (``graph.export``) where fx cannot follow the
forward; an export capture holds the example's batch size of 1, so calibration feeds it one sample
at a time.
Produces: a ``QuantizedModel``: the BN-folded fp32 graph plus JSON-serializable scales, which are
the one source of truth that the fake-quant torch module and every exporter use unchanged.

Where activations are quantized: the input of every Conv1d/Conv2d/Linear, and (placement
"inputs_outputs", the ONNX Runtime scheme) its output, taken after a directly following ReLU or
ReLU6 so that ONNX Runtime can fuse Conv+ReLU into one QLinearConv; in that placement residual
adds, average pools and concats fed by quantized tensors get an output point too (QLinearAdd,
QLinearAveragePool, QLinearConcat). Attention's matmuls of two activations (``q @ k^T`` and
probabilities ``@ v``; ``scaled_dot_product_attention`` is first rewritten into them, softmax and
the mask, by ``_split_attention``) get points on both operands and their result, so they run as
int8 matmuls while softmax and layer norm stay float. A point right after a value-preserving op
(flatten, reshape, transpose, max pool, dropout) reuses its source's scale. TensorRT placement
("inputs") quantizes layer inputs only.
Every other op stays fp32, and ``skipped`` says which weighted ops were not quantized and why.
In that placement a HardSwish computes ``x * q(relu6(x + 3)) / 6`` with the gate on a fixed 6/255
grid (``fakequant.GatedHardswish``): the form the ONNX Runtime file runs as int8 kernels.
The graph input is always calibrated min/max (its range is the data's range); the method
applies to every other tensor. Weights: symmetric int8 per output channel ([-127, 127], or
[-63, 63] with ``reduce_range``); biases int32 at s_in * s_w (a channel's weight scale is widened
when its bias would not fit int32).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import operator
from pathlib import Path

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .. import fsutil
from .._version import __version__
from ..data.batches import iter_batches
from ..errors import UserError, detail_line
from ..limits import MAX_INPUT_ELEMENTS, input_shape_ok
from ..modcopy import copy_model
from ..models.training import torch_threads
from ..progress import Progress, as_progress
from . import inputs as model_inputs
from .config import QuantConfig, make_config
from .fakequant import QUANT_LAYER_TYPES, build_module, gated_hardswishes, quant_layers, quant_points
from .observers import activation_qparams, f32, weight_scales

_RELU_FUNCS = {torch.relu, F.relu, F.relu6, torch.relu_}
_WEIGHTED_FUNCS = {
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.linear,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
    torch.conv2d,
    torch.matmul,
    torch.bmm,
    torch.mm,
}


class CalibrationError(UserError):
    """Calibration data that does not fit the model (shape or dtype); the message names both."""


class QuantizeError(UserError):
    """A model that cannot be quantized as given (e.g. captured by neither torch.fx nor torch.export)."""


# ---- BN folding and analysis -----------------------------------------------------------------
_FOLD_PATTERNS = (
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
    (nn.Linear, nn.BatchNorm1d),
)


def _plain_twin(m: nn.Module) -> nn.Module | None:
    """The plain ``nn.Linear``/``nn.Conv1d``/``nn.Conv2d`` a subclass with its own ``forward``
    computes, or None. Falcon's ``FalconLinear`` computes ``x @ W.T + b`` by hand: the same function,
    but a type the quantizer would leave in float. Equality is checked on a random input, so a
    subclass that computes something else (a weight-standardized or dynamically padded conv) stays."""
    base = next((t for t in QUANT_LAYER_TYPES if isinstance(m, t)), None)
    if base is None or type(m) is base:  # (a subclass that keeps forward may override a helper:
        return None  # Conv2d's _conv_forward; so every subclass is checked)
    g = torch.Generator().manual_seed(0)
    if base is nn.Linear:
        x = torch.randn(2, 3, m.in_features, generator=g, dtype=m.weight.dtype)
    else:
        x = torch.randn(1, m.in_channels, *([9] * (2 if base is nn.Conv2d else 1)), generator=g, dtype=m.weight.dtype)
    try:
        with torch.no_grad():
            got = m(x)
            want = base.forward(m, x)
    except Exception:  # a forward that wants other inputs is not a plain layer
        return None
    if not isinstance(got, torch.Tensor) or got.shape != want.shape or not torch.allclose(got, want, 1e-5, 1e-6):
        return None
    twin = copy.copy(m)  # the same parameters and settings, the base class's forward
    twin.__class__ = base
    return twin


def _canonical(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``transformers`` ``Conv1D`` (GPT-2's projections: ``x @ W + b``
    with W stored input-major) replaced by the ``nn.Linear`` it computes (weight ``W.T``), and every
    subclass of a quantized layer type that computes that layer by hand (``_plain_twin``) by the plain
    layer, so the quantizer, the fake-quant twin and the exporters see one kind of each layer."""
    out = copy_model(model)
    for name, m in list(out.named_modules()):
        twin = _plain_twin(m)
        if twin is not None:
            parent, _, attr = name.rpartition(".")
            setattr(out.get_submodule(parent) if parent else out, attr, twin)
            continue
        if type(m).__name__ != "Conv1D" or not hasattr(m, "nf") or getattr(m, "weight", None) is None:
            continue
        if m.weight.dim() != 2 or m.weight.shape[1] != m.nf:
            continue
        lin = nn.Linear(m.weight.shape[0], m.nf, bias=m.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(m.weight.t())
            if m.bias is not None:
                lin.bias.copy_(m.bias)
        parent, _, attr = name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, attr, lin)
    return out


def _fx_capture(model: nn.Module) -> fx.GraphModule:
    was_training = model.training
    model.eval()
    try:
        return fx.symbolic_trace(_canonical(model))
    finally:
        model.train(was_training)


def _export_capture(model: nn.Module, example: tuple, names: list | None) -> fx.GraphModule:
    """The ``graph.export`` recording of ``model`` on ``example`` as a runnable GraphModule whose
    positional inputs are the example's tensors, in order, and whose output is the flat tuple of
    the model's output tensors (one tensor when there is one)."""
    from ..graph.export import export_graph
    from ..graph.record import spec_output_names

    root = _canonical(model).eval()
    fixed = model_inputs.fixed_flags(model)
    with torch.no_grad():
        if names:
            rec = export_graph(root, (), {**dict(zip(names, example)), **fixed})
        else:
            rec = export_graph(root, tuple(example), fixed)
    for target, value in rec.consts.items():
        root.register_buffer(target, value)
    for n in list(rec.graph.nodes):  # the fixed flags are constants of the export, unused inputs here
        if n.op == "placeholder" and n.name in fixed and not n.users:
            rec.graph.erase_node(n)
    gm = fx.GraphModule(root, rec.graph)
    if sum(1 for n in gm.graph.nodes if n.op == "placeholder") != len(example):
        raise ValueError(f"the export has {len(rec.inputs)} tensor inputs where {len(example)} were given")
    out = next(n for n in gm.graph.nodes if n.op == "output")
    if isinstance(out.args[0], tuple) and len(out.args[0]) == 1:
        out.args = (out.args[0][0],)
    gm.recompile()
    gm.meta["edgeprune_capture"] = "export"
    names = spec_output_names(rec.out_spec)
    if names:  # what the exporters name the file's outputs (last_hidden_state, pooler_output, ...)
        gm.meta["edgeprune_output_names"] = names
    return gm.eval()


def capture(model: nn.Module, example: tuple | None = None, names: list | None = None) -> fx.GraphModule:
    """The graph the quantizer works on (see ``fold_bn``); QuantizeError when neither capture works."""
    if not names or model_inputs.leading(model, names):
        try:
            return _fx_capture(model)
        except Exception as e:  # symbolic tracing failed: fall back to export, or say what to do
            fx_error = f"torch.fx: {type(e).__name__}: {first_line(e)}"
            if example is None:
                raise QuantizeError(
                    f"cannot quantize {type(model).__name__}: torch.fx could not trace it ({fx_error}); "
                    "make its forward free of data-dependent control flow, or pass calibration data so "
                    "torch.export can capture it"
                ) from e
    else:
        fx_error = "torch.fx: named inputs"
    try:
        return _export_capture(model, example, names)
    except Exception as e:
        raise QuantizeError(
            f"cannot quantize {type(model).__name__}: neither torch.fx ({fx_error}) nor torch.export "
            f"({type(e).__name__}: {first_line(e)}) could capture it; make its forward free of "
            "data-dependent control flow"
        ) from e


def fold_bn(model: nn.Module, example: tuple | None = None, names: list | None = None) -> fx.GraphModule:
    """A captured copy of ``model`` (eval mode) with every Conv/Linear -> BatchNorm pair folded.

    Capture: symbolic ``torch.fx`` when it can follow the forward and the inputs (``names``:
    keyword inputs in forward order) are its leading parameters; otherwise ``torch.export`` on
    ``example`` (data-dependent code, as in ``transformers`` models, or inputs given by name out of
    order). The folding is the same rewrite as ``torch.fx.experimental.optimization.fuse``, written
    out here because importing that module drags in torch.utils.mkldnn and its deprecated
    TorchScript decorators. A pair folds only when the BN is the conv's sole user and tracks
    running statistics.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    gm = capture(model, example, names)
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        prev = node.args[0] if node.op == "call_module" and node.args else None
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
            continue
        first, bn = modules.get(prev.target), modules.get(node.target)
        if not any(type(first) is a and type(bn) is b for a, b in _FOLD_PATTERNS) or not bn.track_running_stats:
            continue
        fused = (fuse_linear_bn_eval if isinstance(first, nn.Linear) else fuse_conv_bn_eval)(first.eval(), bn.eval())
        parent, _, attr = prev.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, attr, fused)
        modules[prev.target] = fused
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    _split_silu(gm, modules)
    _split_attention(gm)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()


def _split_silu(gm: fx.GraphModule, modules: dict) -> None:
    """Rewrite every SiLU as ``x * sigmoid(x)``: the sigmoid output then gets its own int8 point, so
    runtimes run both halves in int8 (LOGISTIC + MUL) instead of dequantizing around a fused SiLU.
    The ONNX exporter writes SiLU as Sigmoid and Mul anyway; this makes the twin match that graph."""
    for node in list(gm.graph.nodes):
        is_silu = (
            node.op == "call_module"
            and isinstance(modules.get(node.target), nn.SiLU)
            or node.op == "call_function"
            and node.target is F.silu
        )
        if not is_silu or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        with gm.graph.inserting_after(node):
            sig = gm.graph.call_function(torch.sigmoid, (node.args[0],))
        with gm.graph.inserting_after(sig):
            mul = gm.graph.call_function(operator.mul, (node.args[0], sig))
        node.replace_all_uses_with(mul)
        gm.graph.erase_node(node)


_SDPA_FUNCS = {F.scaled_dot_product_attention, torch.ops.aten.scaled_dot_product_attention.default}
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _mask_bias(mask: torch.Tensor) -> torch.Tensor:
    """An ``scaled_dot_product_attention`` mask as the bias added to the scores: a boolean mask
    keeps the True positions and gives the others float32's lowest value (a finite value, as
    ``transformers``' eager attention uses, so softmax never meets -inf - -inf and needs no NaN
    clean-up; a row masked everywhere then attends evenly instead of giving zeros); a float mask
    is the bias itself."""
    if mask.dtype == torch.bool:
        return torch.where(mask, 0.0, torch.finfo(torch.float32).min)
    return mask


def _split_attention(gm: fx.GraphModule) -> None:
    """Rewrite every ``scaled_dot_product_attention`` (eval: no dropout) as the ops it computes,
    ``softmax(q @ k^T * scale + mask bias) @ v`` (``_mask_bias``), so each of its two matmuls gets
    int8 points on its operands and its result (``analyze``): runtimes then run them as int8
    matmuls, and softmax and the mask stay float. Causal and grouped-query calls stay whole
    (float)."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _SDPA_FUNCS:
            continue
        a = dict(zip(_SDPA_ARGS, node.args))
        a.update(node.kwargs)
        q, k, v, mask = a["query"], a["key"], a["value"], a.get("attn_mask")
        if a.get("dropout_p", 0.0) or a.get("is_causal", False) or a.get("enable_gqa", False):
            continue
        if not all(isinstance(t, fx.Node) for t in (q, k, v)) or not (mask is None or isinstance(mask, fx.Node)):
            continue
        scale = a.get("scale")
        g = gm.graph
        with g.inserting_before(node):
            kt = g.call_function(torch.transpose, (k, -2, -1))
            scores = g.call_function(torch.matmul, (q, kt))
            if scale is None:  # the default, 1 / sqrt(head size), read when the graph runs
                size = g.call_method("size", (q, -1))
                scale = g.call_function(operator.pow, (size, -0.5))
            scores = g.call_function(operator.mul, (scores, scale))
            if mask is not None:
                scores = g.call_function(operator.add, (scores, g.call_function(_mask_bias, (mask,))))
            probs = g.call_function(torch.softmax, (scores, -1))
            out = g.call_function(torch.matmul, (probs, v))
        node.replace_all_uses_with(out)
        g.erase_node(node)


_CLAMP_FUNCS = {torch.clamp, torch.clip, torch.clamp_min, F.hardtanh}
_CLAMP_METHODS = ("clamp", "clip", "clamp_min", "clamp_", "clip_", "clamp_min_")


def _clamp_bounds(node: fx.Node) -> tuple | None:
    """(min, max) of a clamp written as a function or method call (torch.clamp(x, 0, 6),
    x.clamp(min=0), F.hardtanh(x, 0.0, 6.0)), when both are numbers or absent; else None."""
    names = ("min_val", "max_val") if node.target is F.hardtanh else ("min", "max")
    if node.target in (torch.clamp_min, "clamp_min", "clamp_min_"):
        names = ("min",)
    bounds = list(node.args[1:]) + [None] * (len(names) - len(node.args[1:]))
    bounds = [node.kwargs.get(n, b) for n, b in zip(names, bounds)]
    if node.target is F.hardtanh:
        bounds = [d if b is None else b for b, d in zip(bounds, (-1.0, 1.0))]  # hardtanh's defaults
    if len(bounds) == 1:
        bounds.append(None)
    if not all(b is None or (isinstance(b, (int, float)) and not isinstance(b, bool)) for b in bounds):
        return None
    return tuple(bounds)


def _is_relu(node: fx.Node, modules: dict) -> bool:
    """ReLU or ReLU6, as a module, a function or a clamp to [0, 6] or [0, inf): exported as Relu /
    Clip(0, 6), both fused by runtimes into the conv before them."""
    if node.op == "call_module":
        m = modules.get(node.target)
        if type(m) is nn.Hardtanh:
            return (m.min_val, m.max_val) == (0.0, 6.0)
        return type(m) in (nn.ReLU, nn.ReLU6)
    if node.op == "call_function" and node.target in _RELU_FUNCS:
        return True
    if (node.op == "call_function" and node.target in _CLAMP_FUNCS) or (
        node.op == "call_method" and node.target in _CLAMP_METHODS
    ):
        return _clamp_bounds(node) in ((0, 6), (0, None))
    return node.op == "call_method" and node.target in ("relu", "relu_")


def analyze(gm: fx.GraphModule, config: QuantConfig):
    """(points, layers, skipped, shared): quant points (FX node names, graph order), layer roles,
    skipped weighted ops, and {point: source point} for points that reuse another's scale."""
    modules = dict(gm.named_modules())
    layers: dict[str, dict] = {}
    skipped: list[dict] = []
    wanted: set[str] = set()
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = modules[node.target]
            if type(mod) in QUANT_LAYER_TYPES and calls[node.target] > 1:
                # one module, several calls (ALBERT's shared layers): each call would need its own
                # input and output scales, which one entry per layer cannot hold
                if node.target not in {s["name"] for s in skipped}:
                    skipped.append(
                        {
                            "name": node.target,
                            "op": type(mod).__name__,
                            "reason": f"called {calls[node.target]} times (shared weights); kept fp32",
                        }
                    )
            elif type(mod) in QUANT_LAYER_TYPES and isinstance(node.args[0], fx.Node):
                inp = node.args[0]
                out = node
                relu = False
                users = list(node.users)
                if len(users) == 1 and _is_relu(users[0], modules):
                    out, relu = users[0], True
                info = {
                    "kind": "linear" if isinstance(mod, nn.Linear) else "conv",
                    "input": inp.name,
                    "output": None,
                    "relu": relu,
                }
                wanted.add(inp.name)
                if config.placement == "inputs_outputs":
                    info["output"] = out.name
                    wanted.add(out.name)
                layers[node.target] = info
            elif any(True for _ in mod.parameters(recurse=False)) and not isinstance(
                mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.PReLU)
            ):
                skipped.append(
                    {
                        "name": node.target,
                        "op": type(mod).__name__,
                        "reason": f"{type(mod).__name__} has no int8 implementation here; kept fp32",
                    }
                )
        elif node.op == "call_function" and node.target in _WEIGHTED_FUNCS and not _is_activation_matmul(node):
            skipped.append(
                {
                    "name": node.name,
                    "op": getattr(node.target, "__name__", str(node.target)),
                    "reason": "functional weighted op (not an nn.Module layer); kept fp32",
                }
            )
    ops = _analyze_ops(gm, modules, layers, wanted) if config.placement == "inputs_outputs" else {}
    points = [n.name for n in gm.graph.nodes if n.name in wanted]
    # A point right after a value-preserving op (flatten, reshape, max pool, ...) of another point
    # takes that point's scale: Q(DQ(x)) with equal parameters is lossless and runtimes drop it.
    shared = {}
    nodes = {n.name: n for n in gm.graph.nodes}
    for name in points:
        node = nodes[name]
        if _is_passthrough(node, modules) and isinstance(node.args[0], fx.Node):
            src = node.args[0].name
            while (
                src not in wanted and _is_passthrough(nodes[src], modules) and isinstance(nodes[src].args[0], fx.Node)
            ):
                src = nodes[src].args[0].name
            if src in wanted:
                shared[name] = shared.get(src, src)
    return points, layers, ops, skipped, shared


_ADD_FUNCS = {operator.add, torch.add}
_AVGPOOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AvgPool1d)
_AVGPOOL_FUNCS = {F.adaptive_avg_pool2d, F.avg_pool2d, F.adaptive_avg_pool1d, F.avg_pool1d}


_SIGMOID_FUNCS = {torch.sigmoid, F.sigmoid}
_HARDSWISH_FUNCS = {F.hardswish}
_MUL_FUNCS = {operator.mul, torch.mul}
_UNARY_MODULES = {nn.Sigmoid: "sigmoid", nn.Hardsigmoid: "hardsigmoid", nn.Hardswish: "hardswish"}


def _float_meta(a) -> bool:
    m = a.meta.get("tensor_meta") if isinstance(a, fx.Node) else None
    return m is not None and hasattr(m, "shape") and m.dtype.is_floating_point


def _activation_kind(node: fx.Node, modules: dict) -> str | None:
    """ "sigmoid" / "hardsigmoid" / "hardswish" / "mul" (tensor x tensor, broadcasting allowed:
    squeeze-excite gates)."""
    if node.op == "call_module":
        return _UNARY_MODULES.get(type(modules.get(node.target)))
    if node.op == "call_function" and node.target is F.hardsigmoid:
        plain = len(node.args) == 1 and not node.kwargs.get("inplace", False)
        return "hardsigmoid" if _float_meta(node) and plain else None
    if (
        node.op == "call_function"
        and node.target in _SIGMOID_FUNCS
        or (node.op == "call_method" and node.target == "sigmoid")
    ):
        return "sigmoid" if _float_meta(node) and len(node.args) == 1 else None
    if node.op == "call_function" and node.target in _HARDSWISH_FUNCS:
        return "hardswish" if _float_meta(node) and len(node.args) == 1 and not node.kwargs else None
    if node.op == "call_function" and node.target in _MUL_FUNCS or node.op == "call_method" and node.target == "mul":
        args = node.args[:2]
        if len(args) == 2 and not node.kwargs and all(_float_meta(a) for a in args) and _float_meta(node):
            return "mul"
    return None


_MATMUL_FUNCS = {
    torch.matmul,
    torch.bmm,
    operator.matmul,
    torch.ops.aten.matmul.default,
    torch.ops.aten.bmm.default,
}


def _is_activation_matmul(node: fx.Node) -> bool:
    """A matmul of two float activations of rank >= 2 (attention's q @ k^T and probabilities @ v),
    not of a weight (a parameter read by ``get_attr``)."""
    is_mm = (node.op == "call_function" and node.target in _MATMUL_FUNCS) or (
        node.op == "call_method" and node.target in ("matmul", "bmm")
    )
    if not is_mm or len(node.args) != 2 or node.kwargs or not _float_meta(node):
        return False
    for a in node.args:
        if not _float_meta(a) or len(a.meta["tensor_meta"].shape) < 2 or a.op == "get_attr":
            return False
    return True


def _op_kind(node: fx.Node, modules: dict) -> str | None:
    kind = _activation_kind(node, modules)
    if kind is not None:
        return kind
    if _is_activation_matmul(node):
        return "matmul"
    if node.op == "call_function" and node.target in _ADD_FUNCS or node.op == "call_method" and node.target == "add":
        args = node.args[:2]
        metas = [a.meta.get("tensor_meta") if isinstance(a, fx.Node) else None for a in args]
        # tensor + tensor of one shape and a float dtype (not size arithmetic, not broadcasting)
        if (
            len(args) == 2
            and all(m is not None and hasattr(m, "shape") for m in metas)
            and metas[0].shape == metas[1].shape
            and metas[0].dtype.is_floating_point
            and not node.kwargs
        ):
            return "add"
        return None
    if (
        node.op == "call_module"
        and isinstance(modules.get(node.target), _AVGPOOL_MODULES)
        or node.op == "call_function"
        and node.target in _AVGPOOL_FUNCS
    ):
        return "avgpool"
    if (
        node.op == "call_function"
        and node.target in (torch.cat, torch.concat)
        and node.args
        and isinstance(node.args[0], (list, tuple))
        and len(node.args[0]) > 1
        and all(
            isinstance(a, fx.Node) and getattr(a.meta.get("tensor_meta"), "dtype", torch.int64).is_floating_point
            for a in node.args[0]
        )
    ):
        return "concat"
    return None


OP_KINDS = ("add", "mul", "matmul", "avgpool", "concat", *_UNARY_MODULES.values())
_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def check_quant_dict(d: dict, folded: nn.Module, qfile) -> None:
    """Raise QuantizeError unless ``quant.json``'s points, layers and ops agree with each other and
    with the folded model: every reference resolves, every scale fits its layer, every integer
    range fits its dtype. A file edited out of agreement fails here, on load, with one line,
    instead of deep inside an exporter."""

    def bad(what: str) -> QuantizeError:
        return QuantizeError(f"{qfile}: {what}; quantize the model again")

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    shape = d.get("input_shape")
    if shape is not None and not input_shape_ok(shape):
        raise bad(f"input_shape {shape!r:.80} must list positive integers, {MAX_INPUT_ELEMENTS} elements at most")
    points, layers, ops = d.get("points"), d.get("layers"), d.get("ops") or {}
    if not isinstance(points, dict) or not isinstance(layers, dict) or not isinstance(ops, dict):
        raise bad("'points', 'layers' and 'ops' must be JSON objects")
    for name, pt in points.items():
        if not isinstance(pt, dict) or pt.get("dtype") not in _INT_RANGES:
            raise bad(f"point {name!r} must have dtype int8 or uint8")
        lo, hi = _INT_RANGES[pt["dtype"]]
        qmin, qmax, zp = pt.get("qmin"), pt.get("qmax"), pt.get("zero_point")
        if not (integer(qmin) and integer(qmax) and lo <= qmin < qmax <= hi):
            raise bad(f"point {name!r}: qmin {qmin!r} and qmax {qmax!r} must satisfy {lo} <= qmin < qmax <= {hi}")
        if not (integer(zp) and qmin <= zp <= qmax):
            raise bad(f"point {name!r}: zero_point {zp!r} must be an integer in [{qmin}, {qmax}]")
        if not (number(pt.get("scale")) and pt["scale"] > 0):
            raise bad(f"point {name!r}: scale {pt.get('scale')!r} must be a positive number")
        if not (number(pt.get("min")) and number(pt.get("max")) and pt["min"] <= pt["max"]):
            raise bad(f"point {name!r}: min and max must be numbers with min <= max")
    modules = dict(folded.named_modules())
    for name, info in layers.items():
        mod = modules.get(name)
        if not isinstance(info, dict) or not isinstance(getattr(mod, "weight", None), torch.Tensor):
            raise bad(f"layer {name!r} is not a layer with weights in the model")
        w = mod.weight
        axis = info.get("axis", 0)
        if not integer(axis) or not 0 <= axis < w.dim():
            raise bad(f"layer {name!r}: axis {axis!r} must be in [0, {w.dim()})")
        for key in ("weight_scale", "bias_scale"):
            v = info.get(key)
            if v is None and key == "bias_scale":
                continue
            if not (isinstance(v, list) and len(v) == w.shape[axis] and all(number(x) and x > 0 for x in v)):
                raise bad(f"layer {name!r}: {key} must list {w.shape[axis]} positive numbers (one per channel)")
        qmax = info.get("weight_qmax", 127)
        if not (integer(qmax) and 1 <= qmax <= 127):
            raise bad(f"layer {name!r}: weight_qmax {qmax!r} must be an integer in [1, 127]")
        for key in ("input", "output"):
            ref = info.get(key)
            if ref and ref not in points:
                raise bad(f"layer {name!r}: its {key} {ref!r} is not one of the points")
    for name, op in ops.items():
        if not isinstance(op, dict) or op.get("kind") not in OP_KINDS:
            raise bad(f"op {name!r}: kind must be one of {', '.join(OP_KINDS)}")
        refs = op.get("inputs")
        if not (isinstance(refs, list) and refs and all(isinstance(r, str) for r in refs)):
            raise bad(f"op {name!r}: inputs must be a list of point names")
        for ref in [*refs, op.get("output")]:
            if ref not in points:
                raise bad(f"op {name!r}: {ref!r} is not one of the points")


def _op_inputs(node: fx.Node, kind: str) -> list[fx.Node]:
    if kind in ("add", "mul", "matmul"):
        return list(node.args[:2])
    if kind == "concat":
        return list(node.args[0])
    return list(node.args[:1])


def _analyze_ops(gm: fx.GraphModule, modules: dict, layers: dict, wanted: set) -> dict:
    """Residual adds, average pools and concats whose inputs are quantizable tensors: give them
    an output point too, so runtimes run them in int8 (QLinearAdd, QLinearAveragePool,
    QLinearConcat) instead of dequantizing around them. Their inputs must be tensors the exporter can locate: a layer's
    input or output, an earlier such op's output, or the graph input."""
    locatable = {n.name for n in gm.graph.nodes if n.op == "placeholder"}
    for info in layers.values():
        locatable.add(info["input"])
        if info["output"]:
            locatable.add(info["output"])
    ops: dict[str, dict] = {}
    for node in gm.graph.nodes:
        kind = _op_kind(node, modules)
        if kind is None:
            continue
        if kind == "matmul":
            ins = _matmul_inputs(node, modules, locatable)
            if ins is None:
                continue
        else:
            ins = [a.name for a in _op_inputs(node, kind)]
            if not all(i in locatable for i in ins):
                continue
        out, relu = node, False
        users = list(node.users)
        if len(users) == 1 and _is_relu(users[0], modules) and kind not in _UNARY_MODULES.values():
            out, relu = users[0], True
        ops[node.name] = {"kind": kind, "inputs": ins, "output": out.name, "relu": relu}
        wanted.update(ins)
        wanted.add(out.name)
        locatable.add(out.name)
    return ops


def _matmul_inputs(node: fx.Node, modules: dict, locatable: set) -> list[str] | None:
    """The points a matmul of two activations reads: an operand that is a view (reshape,
    transpose, ...) of a locatable point reads that point (a view changes no value, so its int8
    bytes are the point's); any other operand gets a point of its own, on the operand itself,
    which the exporter finds as the matmul's input. None when neither operand leads to a
    locatable point (the exporter could not find the matmul)."""
    ins, found = [], False
    for a in node.args:
        src = a
        while src.name not in locatable and _is_passthrough(src, modules) and isinstance(src.args[0], fx.Node):
            src = src.args[0]
        if src.name in locatable:
            ins.append(src.name)
            found = True
        else:
            ins.append(a.name)
    return ins if found else None


_PASSTHROUGH_MODULES = (nn.Flatten, nn.Identity, nn.Dropout, nn.MaxPool1d, nn.MaxPool2d, nn.Unflatten)
_PASSTHROUGH_FUNCS = {
    torch.flatten,
    torch.reshape,
    F.max_pool1d,
    F.max_pool2d,
    F.dropout,
    torch.squeeze,
    torch.unsqueeze,
    torch.transpose,
    torch.permute,
    # the same moves in a torch.export capture
    torch.ops.aten.view.default,
    torch.ops.aten.reshape.default,
    torch.ops.aten.transpose.int,
    torch.ops.aten.permute.default,
    torch.ops.aten.unsqueeze.default,
    torch.ops.aten.squeeze.dim,
    torch.ops.aten.flatten.using_ints,
    torch.ops.aten.contiguous.default,
    torch.ops.aten.clone.default,
    torch.ops.aten.expand.default,  # repeats values (grouped-query attention's keys and values)
}
# ops whose outputs are pieces of their input, read through operator.getitem (GPT-2's fused
# query/key/value projection split in three)
_SPLIT_FUNCS = {torch.split, torch.chunk, torch.ops.aten.split.Tensor, torch.ops.aten.split_with_sizes.default}
_PASSTHROUGH_METHODS = {
    "flatten",
    "view",
    "reshape",
    "squeeze",
    "unsqueeze",
    "contiguous",
    "transpose",
    "permute",
}


def _is_passthrough(node: fx.Node, modules: dict) -> bool:
    """Ops whose output values are a subset/rearrangement of their input's (no new values): views,
    repeats, the pieces of a split; a conversion to the dtype the tensor already has
    (``aten.to.dtype``, as GPT-Neo's attention writes it) is one too."""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _PASSTHROUGH_MODULES)
    if node.op == "call_function" and node.target is operator.getitem:
        src = node.args[0]
        return isinstance(src, fx.Node) and src.op == "call_function" and src.target in _SPLIT_FUNCS
    if node.op == "call_function" and node.target in _SPLIT_FUNCS:
        return True
    if node.op == "call_function" and node.target is torch.ops.aten.to.dtype:
        src, out = node.args[0], node.meta.get("tensor_meta")
        before = src.meta.get("tensor_meta") if isinstance(src, fx.Node) else None
        return out is not None and before is not None and out.dtype == before.dtype
    if node.op == "call_function":
        return node.target in _PASSTHROUGH_FUNCS
    return node.op == "call_method" and node.target in _PASSTHROUGH_METHODS


# ---- calibration data ------------------------------------------------------------------------
def _as_batches(calib_data, limit: int | None, batch_size: int):
    """Yield input tensors N x ... from any source ``iter_batches`` reads, at most ``limit`` samples.

    Labels are dropped; a source ``iter_batches`` refuses raises CalibrationError with its message."""
    try:
        for x, _ in iter_batches(calib_data, max_samples=limit, batch_size=batch_size):
            yield x
    except CalibrationError:
        raise
    except UserError as e:
        raise CalibrationError(str(e)) from e
    except (RuntimeError, TypeError, ValueError) as e:  # torch.as_tensor of a dict or a list of tensors
        raise CalibrationError(
            f"calibration batches must be tensors or (inputs, labels) pairs, not several or named inputs "
            f"({first_line(e)}); quantize a model that takes one input tensor"
        ) from e


def _shape(t) -> str:
    return "(" + ", ".join(str(int(s)) for s in t) + ")"


def _as_input(x: torch.Tensor) -> torch.Tensor:
    """Float data as float32; integer data (token ids) unchanged."""
    return x.float() if torch.is_floating_point(x) else x


def _calibration_batches(model: nn.Module, calib_data, calib_n, batch_size) -> tuple:
    """(input names or None, batches as tuples of tensors), checked against the model."""
    names = None
    calib_data = model_inputs.peekable(calib_data)  # a DataLoader of dicts: look at one batch first
    if model_inputs.structured(model, calib_data):
        try:
            got = model_inputs.collect(model, calib_data, calib_n)
        except UserError as e:
            raise CalibrationError(str(e)) from None
        names, batches = got.names, got.batches
    else:
        batches = [(x,) for x in _as_batches(calib_data, calib_n, batch_size)]
    if not batches or batches[0][0].shape[0] == 0:
        raise CalibrationError("calibration data is empty; pass at least one sample")
    if names is None:
        check_calibration(model, batches[0][0])
    else:
        _check_named_calibration(model, names, batches[0])
    _check_finite_inputs(model, batches)
    return names, batches


def _runnable(gm: fx.GraphModule, xs: tuple):
    """The calls that feed batch ``xs`` to ``gm``: the whole batch, or one sample at a time for a
    torch.export capture, whose reshapes hold the example's batch size of 1."""
    if gm.meta.get("edgeprune_capture") != "export":
        return [xs]
    return [tuple(t[i : i + 1] for t in xs) for i in range(len(xs[0]))]


def _check_named_calibration(model: nn.Module, names: list, xs: tuple) -> None:
    """Refuse named calibration inputs the model does not run on, naming them and the model's error."""
    try:
        with torch.no_grad():
            model.eval()(**{n: _as_input(x[:1]) for n, x in zip(names, xs)})
    except Exception as e:
        shapes = ", ".join(f"{n} {_shape(x.shape[1:])} {str(x.dtype).replace('torch.', '')}" for n, x in zip(names, xs))
        raise CalibrationError(
            f"the model rejects calibration inputs {shapes} per sample: {first_line(e)}; "
            "pass the inputs its forward takes"
        ) from e


def check_calibration(model: nn.Module, x: torch.Tensor) -> None:
    """Refuse calibration data whose shape or dtype does not match the model, naming both.

    Float data must have the model's ``input_shape`` (when the model declares one). Integer data
    is accepted only if the model runs on it (token ids for an embedding); otherwise the model
    wants float32 and the message says so.
    """
    expected = getattr(model, "input_shape", None)
    got = tuple(x.shape[1:])
    dtype = str(x.dtype).replace("torch.", "")
    want = _shape(expected) if expected else "its input shape"
    if torch.is_floating_point(x) and expected is not None and tuple(expected) != got:
        raise CalibrationError(
            f"calibration data has shape {_shape(got)} per sample but the model expects {want}; "
            "pass calibration data of the model's input shape"
        )
    try:
        with torch.no_grad():
            model.eval()(_as_input(x[:1]))
    except Exception as e:
        if not torch.is_floating_point(x):
            raise CalibrationError(
                f"calibration data has dtype {dtype} and shape {_shape(got)} per sample, which the model rejects "
                f"(it expects float32 of shape {want}); convert the data to float32: {str(e).splitlines()[0]}"
            ) from e
        raise CalibrationError(
            f"the model rejects calibration data of shape {_shape(got)} ({dtype}) per sample "
            f"(expected {want}): {str(e).splitlines()[0]}"
        ) from e


# ---- QuantizedModel ----------------------------------------------------------------------------
def first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _finite(v) -> bool:
    """A JSON number that is finite as a float (an integer past float range is not)."""
    try:
        return bool(np.isfinite(float(v)))
    except OverflowError:
        return False


def _finite_scales(where: str, name: str, values, positive: bool = True) -> None:
    vals = values if isinstance(values, list) else [values]
    for v in vals:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v) and (v > 0 or not positive)
        if not ok:
            raise QuantizeError(f"{where}: scale of {name!r} is {v!r}; scales must be finite and > 0 (re-quantize)")


def read_quant_json(path) -> dict:
    """Read and check ``quant.json``: its structure, and that every scale is finite and > 0 (QuantizeError)."""
    where = str(path)
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # (ValueError: also a 5000-digit number)
        raise QuantizeError(f"{where}: invalid JSON ({first_line(e)})") from None
    except OSError as e:
        raise QuantizeError(f"{where}: cannot read it ({e.strerror or e})") from None
    if not isinstance(d, dict) or d.get("format") != "edgeprune.quantized":
        raise QuantizeError(f"{where}: not an edgeprune quant.json (format != 'edgeprune.quantized')")
    for key, kind in (("config", dict), ("points", dict), ("layers", dict)):
        if not isinstance(d.get(key), kind):
            raise QuantizeError(f"{where}: field {key!r} is missing or not a JSON object")
    if d.get("ops") is not None and not isinstance(d["ops"], dict):
        raise QuantizeError(f"{where}: field 'ops' must be a JSON object")
    emb = d.get("embeddings") or {}
    if not isinstance(emb, dict):
        raise QuantizeError(f"{where}: field 'embeddings' must be a JSON object")
    for name, e in emb.items():
        if not isinstance(e, dict) or not isinstance(e.get("qmax"), int) or not 0 < e["qmax"] <= 127:
            raise QuantizeError(f"{where}: embedding {name!r} needs a scale and a qmax in 1..127")
        _finite_scales(where, name, e.get("scale"))
    if not isinstance(d.get("skipped", []), list) or not isinstance(d.get("metadata") or {}, dict):
        raise QuantizeError(f"{where}: fields 'skipped'/'metadata' must be a list/object")
    for name, p in d["points"].items():
        if not isinstance(p, dict) or not all(k in p for k in ("scale", "zero_point", "qmin", "qmax")):
            raise QuantizeError(f"{where}: point {name!r} needs scale, zero_point, qmin and qmax")
        _finite_scales(where, name, p["scale"])
        for k in ("zero_point", "qmin", "qmax"):
            if not isinstance(p[k], int) or isinstance(p[k], bool) or not -(2**31) <= p[k] < 2**31:
                raise QuantizeError(f"{where}: point {name!r} field {k!r} must be an integer")
    for name, layer in d["layers"].items():
        if not isinstance(layer, dict) or not isinstance(layer.get("weight_scale"), list):
            raise QuantizeError(f"{where}: layer {name!r} needs a weight_scale list")
        if layer.get("input") not in d["points"]:
            raise QuantizeError(f"{where}: layer {name!r} reads point {layer.get('input')!r}, which is not in points")
        if not isinstance(layer.get("weight_qmax"), int) or not 0 < layer["weight_qmax"] <= 127:
            raise QuantizeError(f"{where}: layer {name!r} weight_qmax must be an integer in 1..127")
        _finite_scales(where, f"{name}.weight", layer["weight_scale"])
        if layer.get("bias_scale") is not None:
            _finite_scales(where, f"{name}.bias", layer["bias_scale"])
    return d


class QuantizedModel:
    """The folded fp32 graph + scales. ``points`` and ``layers`` are plain JSON data.

    points: {fx node name: {"scale", "zero_point", "qmin", "qmax", "dtype", "min", "max"}}
    layers: {layer target: {"kind", "input", "output", "relu", "weight_scale": [...],
             "weight_qmax", "axis", "bias_scale": [...] or None}}
    ops:    {fx node name: {"kind": "add" | "avgpool" | "concat", "inputs": [...], "output", "relu"}}
    """

    def __init__(
        self,
        original: nn.Module,
        folded: fx.GraphModule,
        config: QuantConfig,
        points: dict,
        layers: dict,
        skipped: list,
        input_shape=None,
        metadata=None,
        ops=None,
        input_names=None,
        example=None,
        embeddings=None,
    ):
        self.original = original
        self.embeddings = dict(embeddings or {})
        self.input_names = list(input_names) if input_names else None
        # one calibration sample (models of named inputs, or captured by torch.export): saved, so
        # that a load captures the same graph again and exporters have inputs of the right types
        self.example = tuple(example) if example is not None else None
        self._export_module = None
        self.ops = dict(ops or {})
        self.folded = folded
        self.config = config
        self.points = points
        self.layers = layers
        self.skipped = skipped
        self.input_shape = tuple(input_shape) if input_shape else None
        self.metadata = dict(metadata or {})
        self._module = None

    # the fake-quant torch module: same scales as the exporters write
    @property
    def module(self) -> fx.GraphModule:
        if self._module is None:
            self._module = self.fake_quant_module()
        return self._module

    def fake_quant_module(self) -> fx.GraphModule:
        gm = build_module(
            self.folded,
            list(self.points),
            {
                t: {
                    "input": l["input"],
                    "weight_scale": l["weight_scale"],
                    "qmax": l["weight_qmax"],
                    "per_channel": self.config.per_channel,
                }
                for t, l in self.layers.items()
            },
            self.config.bins,
            gates=self.gated_hardswish_nodes(),
        )
        for name, qp in quant_points(gm).items():
            p = self.points[name]
            qp.set_qparams(p["scale"], p["zero_point"], p["qmin"], p["qmax"])
        for ql in quant_layers(gm).values():
            ql.quantize_weights = True
        for gate in gated_hardswishes(gm):
            gate.active = True
        _dequantized_tables(gm, self.embeddings)
        return gm.eval()

    def export_module(self) -> fx.GraphModule:
        """The folded graph the int8 exporters trace: ``folded`` with each int8 embedding table's
        values (int8 times its scale). An exporter that folds a lookup at constant positions
        (DeBERTa's, T5's) then folds the same values the twin uses; the lookups it keeps get the
        int8 table itself (``export.onnx``)."""
        if not self.embeddings:
            return self.folded
        if self._export_module is None:
            self._export_module = copy.deepcopy(self.folded)
            _dequantized_tables(self._export_module, self.embeddings)
        return self._export_module

    def gated_hardswish_nodes(self) -> list[str]:
        """The HardSwish nodes whose int8 form is ``x * q(relu6(x + 3)) / 6``: all of them in the ONNX
        Runtime placement, which has no int8 HardSwish (``export.onnx_hardswish`` writes that form)."""
        if self.config.placement != "inputs_outputs":
            return []
        return [name for name, op in self.ops.items() if op["kind"] == "hardswish"]

    def __call__(self, *args, **kwargs):
        """Run the fake-quant twin: one input tensor, or the named inputs it was calibrated with
        (positional in forward order, by name, or one dict). Integer inputs stay integers."""
        if self.input_names:
            xs = model_inputs.bind(self.input_names, args, kwargs)
        else:
            xs = args
        xs = tuple(_as_input(torch.as_tensor(x)) for x in xs)
        if self.example is not None and self.folded.meta.get("edgeprune_capture") == "export":
            names = self.input_names or ["input"]
            for name, x, e in zip(names, xs, self.example):
                if tuple(x.shape[1:]) != tuple(e.shape[1:]):
                    raise UserError(
                        f"the quantized model's graph was captured with {name} of shape {tuple(e.shape[1:])} "
                        f"per sample, not {tuple(x.shape[1:])}; pad or cut the input to that length"
                    )
        with torch.no_grad():
            outs = [self.module(*sample) for sample in _runnable(self.folded, xs)]
        if len(outs) == 1:
            return outs[0]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs))
        return torch.cat(outs)

    def to_dict(self) -> dict:
        return {
            "format": "edgeprune.quantized",
            "version": __version__,
            "config": self.config.to_dict(),
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "inputs": self.input_names,
            "capture": self.folded.meta.get("edgeprune_capture", "fx"),
            "points": self.points,
            "layers": self.layers,
            "ops": self.ops,
            "embeddings": self.embeddings,
            "skipped": self.skipped,
            "metadata": self.metadata,
        }

    def scales_hash(self) -> str:
        blob = {"points": self.points, "layers": self.layers, "ops": self.ops}
        if self.embeddings:  # files written before int8 embeddings keep their hash
            blob["embeddings"] = self.embeddings
        blob = json.dumps(blob, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def save(self, path, plan=None) -> Path:
        """Write ``path/model`` (ep.save of the original model), ``folded.pt`` and ``quant.json``.

        A model pruned by ``ep.apply`` needs its ``plan`` to be rebuilt on load: pass it here
        (a model loaded with ``ep.load`` carries its own).
        """
        from ..io import save as save_model  # io is a lower layer
        from ..prune.hf import is_hf, tag

        if is_hf(self.original):  # a transformers model saves as its class and config (no pickle)
            tag(self.original, self.original)
        path = Path(path)
        with fsutil.atomic_dir(path) as tmp:
            save_model(
                self.original,
                tmp / "model",
                plan=plan,
                metadata={**(getattr(self.original, "edgeprune_metadata", None) or {}), "quantized": True},
            )
            torch.save(self.folded.state_dict(), tmp / "folded.pt")
            if self.example is not None:
                torch.save({f"input_{i}": x for i, x in enumerate(self.example)}, tmp / "example.pt")
            fsutil.write_json(tmp / "quant.json", self.to_dict())
        return path

    @classmethod
    def load(cls, path, trust_code: bool = False) -> QuantizedModel:
        """Read a directory written by ``save``; ``trust_code`` as in ``ep.load``. Bad files raise UserError."""
        from ..io import inside
        from ..io import load as load_model
        from ..models.spec import check_finite, torch_load

        path = Path(path)
        qfile = path / "quant.json"
        if not qfile.is_file():
            raise QuantizeError(f"{path} has no quant.json; write it with `edgeprune quantize` or QuantizedModel.save")
        d = read_quant_json(qfile)
        original = load_model(inside(path, "model", qfile, "model directory"), trust_code=trust_code)
        names = d.get("inputs")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise QuantizeError(f"{qfile}: field 'inputs' must be a list of input names")
        example = None
        if d.get("capture") == "export" or names:
            example = _load_example(inside(path, "example.pt", qfile, "example inputs"), names)
        try:
            folded = fold_bn(original, example, names)
        except QuantizeError as e:
            raise QuantizeError(
                f"{path}: the model cannot be captured again from its inputs {names or ['input']} and "
                f"example.pt ({first_line(e)}); quantize it again"
            ) from None
        folded_file = inside(path, "folded.pt", qfile, "folded weights")
        state = torch_load(folded_file)
        if not isinstance(state, dict):
            raise QuantizeError(f"{folded_file}: not a state_dict (a dict of tensors)")
        try:
            folded.load_state_dict(state)
        except RuntimeError as e:
            raise QuantizeError(
                f"{folded_file}: does not fit the model in {path / 'model'}: {detail_line(e)}"
            ) from None
        check_finite(state, folded_file)
        for target in d.get("embeddings") or {}:
            mod = dict(folded.named_modules()).get(target)
            if type(mod) is not nn.Embedding:
                raise QuantizeError(f"{qfile}: embedding {target!r} is not an nn.Embedding of the model")
        check_quant_dict(d, folded, qfile)
        try:
            config = QuantConfig.from_dict(d["config"])
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise QuantizeError(f"{qfile}: 'config' is not valid ({first_line(e)}); quantize the model again") from None
        try:
            return cls(
                original,
                folded,
                config,
                d["points"],
                d["layers"],
                d.get("skipped", []),
                d.get("input_shape"),
                d.get("metadata"),
                d.get("ops"),
                input_names=names,
                example=example,
                embeddings=d.get("embeddings"),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise QuantizeError(f"{qfile}: malformed ({type(e).__name__}: {e})") from None

    def example_inputs(self) -> tuple | None:
        """One sample of the calibration inputs (named-input models), for exporters."""
        return self.example

    def summary(self) -> dict:
        return {
            "method": self.config.method,
            "target": self.config.target,
            "activation_dtype": self.config.activation_dtype,
            "symmetric_activations": self.config.symmetric_activations,
            "reduce_range": self.config.reduce_range,
            "placement": self.config.placement,
            "per_channel": self.config.per_channel,
            "quantized_layers": len(self.layers),
            "quantized_embeddings": len(self.embeddings),
            "activation_points": len(self.points),
            "skipped": self.skipped,
        }


def _load_example(p: Path, names: list | None) -> tuple:
    """The saved example inputs of an export-captured model (tensors only; no code runs)."""
    from ..models.spec import torch_load

    d = torch_load(p)
    n = len(names) if names else 1
    keys = [f"input_{i}" for i in range(n)]
    if not isinstance(d, dict) or list(d) != keys or not all(isinstance(v, torch.Tensor) for v in d.values()):
        raise QuantizeError(f"{p}: expected tensors {keys}; write it with QuantizedModel.save")
    return tuple(d[k] for k in keys)


def embedding_scales(gm: fx.GraphModule, config: QuantConfig) -> dict:
    """{target: {"scale", "qmax"}}: one symmetric int8 scale per ``nn.Embedding`` table the graph
    calls (weight-only: a lookup copies rows, so the rows stay int8 until the first arithmetic).

    Why per tensor: TFLite's int8 GATHER copies bytes, so its output carries the table's one
    scale. Only in the ONNX Runtime / TFLite placement; a TensorRT graph keeps its tables float.
    A table with ``max_norm`` (rewritten on every lookup) stays float too.
    """
    if config.placement != "inputs_outputs":
        return {}
    modules = dict(gm.named_modules())
    out: dict = {}
    for node in gm.graph.nodes:
        mod = modules.get(node.target) if node.op == "call_module" else None
        if type(mod) is nn.Embedding and mod.max_norm is None and node.target not in out:
            out[node.target] = {"scale": weight_scales(mod.weight, 127, False)[0], "qmax": 127}
    return out


def _dequantized_tables(gm: nn.Module, embeddings: dict) -> None:
    """Give each int8 embedding of ``gm`` its int8 values times its scale, as a new parameter: a
    table tied to an output layer (GPT-2's lm_head) is a separate tensor in the files, quantized
    per channel as a layer, so the layer keeps the float weights."""
    for target, e in embeddings.items():
        emb = gm.get_submodule(target)
        emb.weight = nn.Parameter(torch.from_numpy(dequantized_table(emb.weight, e)), requires_grad=False)


def dequantized_table(weight: torch.Tensor, e: dict) -> np.ndarray:
    """The float32 values an int8 table stands for (what DequantizeLinear and DEQUANTIZE compute)."""
    return embedding_int8(weight, e).astype(np.float32) * np.float32(e["scale"])


def embedding_int8(weight: torch.Tensor, e: dict) -> np.ndarray:
    """The int8 table of an embedding quantized at ``e`` (round half to even, as torch and numpy do)."""
    s = np.float32(e["scale"])
    q = np.round(weight.detach().float().numpy() / s)
    return np.clip(q, -e["qmax"], e["qmax"]).astype(np.int8)


_BIAS_LIMIT = 2.0**30  # headroom below int32's 2**31 - 1 for accumulation


def _layer_scales(gm: fx.GraphModule, layers: dict, points: dict, config: QuantConfig) -> None:
    """Fill weight and bias scales into ``layers`` from the folded weights (in place)."""
    for target, info in layers.items():
        mod = gm.get_submodule(target)
        ws = weight_scales(mod.weight, config.weight_qmax, config.per_channel, axis=0)
        if not config.per_channel:
            ws = ws * mod.weight.shape[0]  # one value, repeated per channel: one shape everywhere
        info["weight_scale"] = ws
        info["weight_qmax"] = config.weight_qmax
        info["axis"] = 0
        s_in = points[info["input"]]["scale"]
        if mod.bias is not None:
            # A bias must fit int32 at s_in * s_w. When the input scale is tiny (a layer fed by
            # near-zero activations) it would not: widen that channel's weight scale until it
            # does, as ONNX Runtime's quantizer does; the weights lose a little resolution there.
            b = mod.bias.detach().abs().double().tolist()
            for c, bc in enumerate(b):
                if bc / (float(np.float32(s_in)) * ws[c]) > _BIAS_LIMIT:
                    ws[c] = f32(bc / (float(np.float32(s_in)) * _BIAS_LIMIT) * 1.01)
            info["weight_scale"] = ws
        # float32 product, as ONNX Runtime and our kernels compute it
        info["bias_scale"] = None if mod.bias is None else [f32(np.float32(s_in) * np.float32(s)) for s in ws]


def _right_operands(ops: dict, config: QuantConfig) -> set:
    """The points read as the right operand of an int8 matmul of two activations (attention's keys
    and values), which get symmetric int8 ranges (zero point 0) whatever the config's scheme:
    LiteRT's XNNPACK delegate runs an int8 BATCH_MATMUL only when that operand's zero point is 0
    (measured 67 us against 1.08 ms in the builtin kernel for 12x128x32x128), and our runtime then
    skips a per-row correction. uint8 activations keep their scheme (zero point 0 is their lowest
    value there)."""
    if config.activation_dtype != "int8":
        return set()
    return {op["inputs"][1] for op in ops.values() if op["kind"] == "matmul"}


def _fix_sigmoid_points(points: dict, ops: dict, config: QuantConfig) -> None:
    """A sigmoid's output takes TFLite's fixed LOGISTIC parameters (scale 1/256 over [0, 1)), whatever
    calibration saw: int8 LOGISTIC kernels require them, and they lose nothing on a [0, 1] range.
    A hard sigmoid's output (a squeeze-excite gate) spans exactly [0, 1]: scale 1/255 over it, so a
    gate calibrated on few samples still holds every value the model can produce."""
    for op in ops.values():
        if op["kind"] not in ("sigmoid", "hardsigmoid"):
            continue
        p = points[op["output"]]
        if not config.symmetric_activations:
            zp = 0 if config.activation_dtype == "uint8" else -128
            levels = 256.0 if op["kind"] == "sigmoid" else 255.0
            p.update(scale=f32(1.0 / levels), zero_point=zp, qmin=zp, qmax=zp + 255)


def quantize(
    model: nn.Module,
    calib_data,
    method: str = "percentile",
    per_channel: bool = True,
    target=None,
    calib_n: int | None = 512,
    batch_size: int = 64,
    progress: Progress | bool | None = None,
    threads: int | None = 1,
    **config_overrides,
) -> QuantizedModel:
    """Calibrate ``model`` on ``calib_data`` and return its QuantizedModel (see module docstring).

    ``target`` (name, path or TargetProfile) sets activation dtype/symmetry, weight range and Q/DQ
    placement; ``config_overrides`` (e.g. ``percentile=99.9``, ``symmetric_activations=True``)
    win over the target. ``threads`` (default 1) pins torch's intra-op threads while calibrating:
    conv float sums depend on the thread count, so one thread gives the same scales on every
    machine (and a shared, loaded machine does not thrash). ``progress``: an ``edgeprune.progress.Progress``
    told of every calibration batch (a bool or None: no events). Raises CalibrationError, QuantizeError or
    Int8UnsupportedError.
    """
    with torch_threads(threads):
        return _quantize(
            model, calib_data, method, per_channel, target, calib_n, batch_size, progress, config_overrides
        )


def _check_finite_inputs(model: nn.Module, batches: list) -> None:
    """Refuse NaN/Inf in the model's weights or in the calibration data, naming the tensor or sample."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise QuantizeError(f"model tensor {name!r} contains NaN or infinite values; fix the weights first")
    seen = 0
    for xs in batches:
        for x in xs:
            if x.is_floating_point() and not torch.isfinite(x).all():
                bad = seen + int((~torch.isfinite(x)).reshape(len(x), -1).any(1).nonzero()[0, 0])
                raise CalibrationError(f"calibration sample {bad} contains NaN or infinite values; clean the data")
        seen += len(xs[0])


def _quantize(model, calib_data, method, per_channel, target, calib_n, batch_size, progress, config_overrides):
    config = make_config(method, per_channel, target, **config_overrides)
    names, batches = _calibration_batches(model, calib_data, calib_n, batch_size)
    example = tuple(_as_input(x[:1]) for x in batches[0])
    folded = fold_bn(model, example, names)
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(folded).propagate(*example)  # shapes tell a tensor add from size arithmetic
    point_names, layers, ops, skipped, shared = analyze(folded, config)
    embeddings = embedding_scales(folded, config)
    skipped = [s for s in skipped if s["name"] not in embeddings]
    if not layers:
        raise QuantizeError(f"{type(model).__name__} has no Conv1d/Conv2d/Linear layer to quantize")
    cal = build_module(
        folded,
        point_names,
        {
            t: {"input": l["input"], "weight_scale": [1.0], "qmax": 127, "per_channel": per_channel}
            for t, l in layers.items()
        },
        config.bins,
    )
    qps = quant_points(cal)
    passes = ["minmax"] + ([] if config.method == "minmax" else ["histogram"])
    bar = as_progress(progress)
    bar.start(len(batches) * len(passes), "calibrating")
    try:
        with torch.no_grad():
            for mode in passes:
                for qp in qps.values():
                    qp.mode = mode
                    if mode == "histogram":
                        qp.observer.start_histogram()
                for x in batches:
                    for sample in _runnable(folded, x):
                        cal(*(_as_input(t) for t in sample))
                    bar.advance(1)
    finally:
        bar.close()
    levels = 256 if config.activation_dtype == "uint8" and not config.symmetric_activations else 128
    points: dict[str, dict] = {}
    inputs = {n.name for n in folded.graph.nodes if n.op == "placeholder"}
    right_operands = _right_operands(ops, config)
    for name in point_names:
        obs = qps[name].observer
        symmetric = config.symmetric_activations or name in right_operands
        # post-ReLU tensors (min >= 0) use all 256 levels for asymmetric int8/uint8
        lv = 256 if (not symmetric and obs.min >= 0) else levels
        # The model input is data: its range is the data's range, and clipping it (as entropy
        # does on digits, where rare bright stroke pixels sit far from the background spike)
        # saturates the very pixels that matter. Inputs are always calibrated min/max.
        method = "minmax" if name in inputs else config.method
        lo, hi = obs.range(method, symmetric, lv, config.percentile)
        scale, zp, qmin, qmax = activation_qparams(lo, hi, config.activation_dtype, symmetric)
        points[name] = {
            "scale": scale,
            "zero_point": zp,
            "qmin": qmin,
            "qmax": qmax,
            "dtype": config.activation_dtype,
            "min": f32(obs.min),
            "max": f32(obs.max),
        }
    _fix_sigmoid_points(points, ops, config)
    for name, src in shared.items():
        points[name] = dict(points[src], min=points[name]["min"], max=points[name]["max"], shared_with=src)
    _layer_scales(folded, layers, points, config)
    for name, p in points.items():  # a NaN/Inf activation range would quantize every value to garbage
        _finite_scales("calibration", name, p["scale"])
    meta = {"calibration_samples": int(sum(b[0].shape[0] for b in batches))}
    for attr in ("edgeprune_spec", "edgeprune_plan_hash"):
        if getattr(model, attr, None) is not None:
            meta[attr] = getattr(model, attr)
    qm = QuantizedModel(
        model,
        folded,
        config,
        points,
        layers,
        skipped,
        getattr(model, "input_shape", None) or (None if names else tuple(batches[0][0].shape[1:])),
        meta,
        ops,
        input_names=names,
        embeddings=embeddings,
        example=example if names or folded.meta.get("edgeprune_capture") == "export" else None,
    )
    return qm
