"""Zero-channel padding of a QDQ int8 ONNX graph, so ONNX Runtime runs every convolution on its fast int8 path.

Consumes: the QDQ ``onnx.ModelProto`` that ``onnx.quantize_onnx`` writes (NCHW; weights and biases
are DequantizeLinear nodes of int8/int32 initializers, or float initializers for layers left fp32).
Produces: the same function with some channel groups widened by zero channels, and what changed in
the metadata key ``edgeprune_channel_padding``: {"groups": {first tensor of a group: [channels,
padded]}, "layers": {Conv node: its weight's shape before padding}} (``inspect`` reports a padded
file's parameters and MACs without the zero channels, and the padding apart: ``padding_of``).

Why: ONNX Runtime's CPU QLinearConv has a fast path (indirect convolution on packed int8 filters)
only when a depthwise convolution has a multiple of 16 channels (8 on ARM64) and a dense
convolution a multiple of 4 input channels. Any other count falls back to im2col and a generic
GEMM: on MobileNetV3-Small the 72-, 88- and 120-channel depthwise layers and the 3-channel stem ran
2.5-3x slower than the same float convolutions, enough to make the whole int8 file slower than
fp32. Torchvision's own widths hit this, and pruning produces such counts all the time.

Why the padding is exact: a channel group is a set of tensors that share one channel axis, closed
under every op that touches it. Its producers (dense convolutions) get zero filters and zero
biases, its depthwise convolutions zero filters, its consumers (dense convolutions) zero input
weights. Inside the group every op is channel-wise (activations, Q/DQ with one scale, pools,
broadcasting Mul/Add) and finite, so whatever the extra channels hold never leaves them, and the
consumers multiply it by zero. A group that reaches anything else (a graph output, Concat,
Reshape/Flatten, Gemm, a per-channel activation scale, a constant operand, a shared weight) is
left as it is. A quantized graph input is padded after its QuantizeLinear with the zero point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_meta import set_metadata

DEPTHWISE_ALIGN = 16  # x86 MLAS; ARM64 needs 8, which 16 also satisfies
INPUT_ALIGN = 4
METADATA_KEY = "edgeprune_channel_padding"

# ops that map each channel to itself (and finite values to finite values)
_CHANNELWISE = {
    "QuantizeLinear",
    "DequantizeLinear",
    "Relu",
    "Clip",
    "LeakyRelu",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "Tanh",
    "Identity",
    "Mul",
    "Add",
    "Sub",
    "GlobalAveragePool",
    "AveragePool",
    "MaxPool",
}


class _Abort(Exception):
    """The group reaches an op the padding cannot see through; leave it unpadded."""


@dataclass
class _Group:
    channels: int
    tensors: set = field(default_factory=set)
    producers: set = field(default_factory=set)  # dense convs whose output rows grow
    consumers: set = field(default_factory=set)  # dense convs whose input columns grow
    depthwise: set = field(default_factory=set)
    input_quants: set = field(default_factory=set)  # QuantizeLinear of a graph input: Pad after it


class _Graph:
    """Index of one graph: producers, consumers, initializers, ranks and channel counts."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in self.graph.output}
        self.inputs = {i.name for i in self.graph.input}
        inferred = onnx.shape_inference.infer_shapes(model)
        self.shape = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            self.shape[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def channels(self, t: str):
        s = self.shape.get(t)
        return s[1] if s is not None and len(s) == 4 else None

    def weight_shape(self, conv) -> tuple:
        return tuple(self._weight_init(conv.input[1]).dims)  # from the proto: no copy of the weights

    def _weight_init(self, name: str):
        """The initializer behind a weight input: itself, or the quantized values of its DequantizeLinear."""
        if name in self.inits:
            return self.inits[name]
        dq = self.producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in self.inits:
            return self.inits[dq.input[0]]
        raise _Abort(f"weight {name} is not a constant")


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _conv_kind(g: _Graph, node) -> str | None:
    """'dense' (group 1), 'depthwise' (one filter per channel) or None."""
    if node.op_type != "Conv":
        return None
    group = _attr(node, "group", 1)
    if group == 1:
        return "dense"
    w = g.weight_shape(node)
    return "depthwise" if w[0] == group and w[1] == 1 and g.channels(node.input[0]) == group else None


def _collect(g: _Graph, seed: str) -> _Group:
    """The channel group of tensor ``seed``. Raises _Abort when it cannot be padded exactly."""
    c = g.channels(seed)
    if c is None:
        raise _Abort("unknown channel count")
    grp = _Group(c, tensors={seed})
    todo = [seed]

    def add(t: str) -> None:
        if t not in grp.tensors:
            if g.channels(t) != c or t in g.inits:
                raise _Abort(f"{t} is not a {c}-channel activation")
            grp.tensors.add(t)
            todo.append(t)

    def channel_operands(node) -> None:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale = numpy_helper.to_array(g.inits[node.input[1]]) if node.input[1] in g.inits else None
            if scale is None or scale.size != 1:
                raise _Abort(f"{node.name} has a per-channel or computed scale")
            add(node.input[0])
            return
        binary = node.op_type in ("Mul", "Add", "Sub")
        for i in node.input[: 2 if binary else 1]:
            if i in g.inits:
                if numpy_helper.to_array(g.inits[i]).size != 1:
                    raise _Abort(f"{node.name} has a constant operand")
                continue
            shape = g.shape.get(i)
            if shape is not None and all(d == 1 for d in shape):
                continue  # a scalar (e.g. a dequantized constant): the same for every channel
            ci = g.channels(i)
            if ci == c:
                add(i)
            elif not (binary and ci == 1):  # a [N, 1, H, W] operand broadcasts over channels
                raise _Abort(f"{node.name} mixes {c} channels with {i}")

    while todo:
        t = todo.pop()
        if t in g.outputs:
            raise _Abort(f"{t} is a graph output")
        p = g.producer.get(t)
        if p is None:
            raise _Abort(f"{t} is a graph input")
        kind = _conv_kind(g, p)
        if kind == "dense":
            grp.producers.add(p.name)
        elif kind == "depthwise":
            grp.depthwise.add(p.name)
            add(p.input[0])
        elif p.op_type == "QuantizeLinear" and p.input[0] in g.inputs:
            grp.input_quants.add(p.name)
        elif p.op_type in _CHANNELWISE:
            channel_operands(p)
        else:
            raise _Abort(f"{t} comes from {p.op_type}")
        for u in g.consumers.get(t, []):
            kind = _conv_kind(g, u)
            if kind is not None and u.input[0] != t:
                raise _Abort(f"{t} is a weight of {u.name}")
            if kind == "dense":
                grp.consumers.add(u.name)
            elif kind == "depthwise":
                grp.depthwise.add(u.name)
                add(u.output[0])
            elif u.op_type in _CHANNELWISE:
                channel_operands(u)
                for o in u.output:
                    add(o)
            else:
                raise _Abort(f"{t} feeds {u.op_type}")
    return grp


def _seeds(g: _Graph) -> list[tuple[str, int]]:
    """(tensor, alignment) for every convolution input ONNX Runtime's fast int8 path cannot take."""
    out = []
    for n in g.graph.node:
        try:
            kind = _conv_kind(g, n)
        except _Abort:
            continue
        c = g.channels(n.input[0]) if kind else None
        if c is None:
            continue
        if kind == "depthwise" and c % DEPTHWISE_ALIGN:
            out.append((n.input[0], DEPTHWISE_ALIGN))
        elif kind == "dense" and c % INPUT_ALIGN:
            out.append((n.input[0], INPUT_ALIGN))
    return out


class _Padder:
    """Applies one group's padding to the graph's initializers and nodes."""

    def __init__(self, g: _Graph, model: onnx.ModelProto):
        self.g = g
        self.model = model
        self.pads: dict[str, onnx.NodeProto] = {}  # QuantizeLinear name -> the Pad that follows it
        self.shapes: dict[str, list] = {}  # node -> its weight's shape before padding
        self.use_count: dict[str, int] = {}
        for n in model.graph.node:
            for i in n.input:
                self.use_count[i] = self.use_count.get(i, 0) + 1

    def _check_private(self, name: str) -> None:
        if self.use_count.get(name, 0) != 1:
            raise _Abort(f"{name} is shared")

    def _pad_init(self, name: str, axis: int, extra: int, mode="constant") -> None:
        init = self.g.inits[name]
        a = numpy_helper.to_array(init)
        if a.ndim == 0:
            return  # one scale / zero point for all channels
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, extra)
        init.CopyFrom(numpy_helper.from_array(np.pad(a, widths, mode=mode), name))

    def _pad_param(self, name: str, axis: int, extra: int) -> None:
        """A weight or bias input: a float initializer, or a DequantizeLinear (values, scale, zero point)."""
        if name in self.g.inits:
            self._pad_init(name, axis, extra)
            return
        dq = self.g.producer[name]
        self._pad_init(dq.input[0], axis, extra)
        scale = numpy_helper.to_array(self.g.inits[dq.input[1]])
        if scale.ndim == 1 and _attr(dq, "axis", 1) == axis:  # per-channel parameters along the padded axis
            # the last channel's scale repeated: the values are 0, and a bias scale stays s_in * s_w,
            # which ONNX Runtime's QDQ fusion checks before it picks an int8 kernel
            self._pad_init(dq.input[1], 0, extra, mode="edge")
            if len(dq.input) > 2 and dq.input[2]:
                self._pad_init(dq.input[2], 0, extra)

    def params(self, conv) -> list[str]:
        names = [conv.input[1]] + ([conv.input[2]] if len(conv.input) > 2 and conv.input[2] else [])
        out = []
        for name in names:
            self._check_private(name)
            if name not in self.g.inits:
                dq = self.g.producer.get(name)
                if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in self.g.inits:
                    raise _Abort(f"{name} is not a constant")
                for i in dq.input:
                    if i:
                        self._check_private(i)
            out.append(name)
        return out

    def check(self, grp: _Group, nodes: dict) -> None:
        for name in grp.producers | grp.depthwise | grp.consumers:
            self.params(nodes[name])

    def apply(self, grp: _Group, nodes: dict, extra: int) -> None:
        for name in grp.producers | grp.depthwise | grp.consumers:
            self.shapes.setdefault(name, list(self.g.weight_shape(nodes[name])))
        for name in grp.producers | grp.depthwise:
            for p in self.params(nodes[name]):
                self._pad_param(p, 0, extra)
        for name in grp.depthwise:
            for a in nodes[name].attribute:
                if a.name == "group":
                    a.i = grp.channels + extra
        for name in grp.consumers:
            self._pad_param(nodes[name].input[1], 1, extra)
        for name in sorted(grp.input_quants):
            self._pad_after_quantize(nodes[name], extra)

    def _pad_after_quantize(self, q, extra: int) -> None:
        """Rewire the readers of a quantized graph input to a Pad of it with its zero point (see ``splice``)."""
        src, dst = q.output[0], q.output[0] + "_channel_padded"
        pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, extra, 0, 0], dtype=np.int64), dst + "_pads")
        self.model.graph.initializer.append(pads)
        for n in self.model.graph.node:
            for i, name in enumerate(n.input):
                if name == src:
                    n.input[i] = dst
        self.pads[q.name] = helper.make_node(
            "Pad", [src, pads.name, q.input[2]], [dst], name=dst + "_Pad", mode="constant"
        )

    def splice(self) -> None:
        """Insert the recorded Pad nodes after their QuantizeLinear, last: rebuilding the node list copies
        the nodes, and the edits above hold references to them."""
        if not self.pads:
            return
        nodes = []
        for n in self.model.graph.node:
            nodes.append(n)
            if n.name in self.pads:
                nodes.append(self.pads[n.name])
        del self.model.graph.node[:]
        self.model.graph.node.extend(nodes)


def padding_of(model: onnx.ModelProto) -> dict:
    """The ``edgeprune_channel_padding`` record of a file ({} when it has none or it is malformed)."""
    raw = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    try:
        rec = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    ok = isinstance(rec, dict) and isinstance(rec.get("groups"), dict) and isinstance(rec.get("layers"), dict)
    if not ok or not all(
        isinstance(v, list) and all(isinstance(d, int) and d > 0 for d in v) for v in rec["layers"].values()
    ):
        return {}
    return rec


def align_channels(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every paddable channel group widened to what ONNX Runtime's int8 kernels need.

    Returns the input unchanged when nothing needs padding."""
    g = _Graph(model)
    nodes = {n.name: n for n in model.graph.node}
    if len(nodes) != len(model.graph.node):
        return model  # unnamed or duplicate node names: nothing to address groups by
    done: set[str] = set()
    record = {}
    padder = _Padder(g, model)
    for seed, _ in _seeds(g):
        if seed in done:
            continue
        try:
            grp = _collect(g, seed)
            padder.check(grp, nodes)
        except _Abort:
            done.add(seed)
            continue
        done |= grp.tensors
        align = DEPTHWISE_ALIGN if grp.depthwise else INPUT_ALIGN
        extra = -grp.channels % align
        if extra:
            padder.apply(grp, nodes, extra)
            record[min(grp.tensors)] = [grp.channels, grp.channels + extra]
    padder.splice()
    if record:
        del model.graph.value_info[:]
        set_metadata(model, {METADATA_KEY: {"groups": record, "layers": padder.shapes}})
    return model
