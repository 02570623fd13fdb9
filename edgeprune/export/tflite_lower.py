"""Lower an ONNX graph we exported (fp32, or int8 QDQ with our scales) to a TFLite model.

Consumes: an ``onnx.ModelProto`` from ``edgeprune.export.onnx`` (static shapes, batch 1) and
options (``io_int8``). Produces: a ``tflite_schema.Model`` (tensors, constants, builtin ops).

Layout: TFLite kernels are NHWC. Every rank-4 activation may be stored NHWC ("nhwc" values: the
ONNX tensor transposed by (0, 2, 3, 1)) or in its ONNX order ("plain"). Convs, pools and
elementwise ops keep NHWC; an op that needs the ONNX order (a flatten, a reshape, a transpose)
gets a TRANSPOSE in front, or a RESHAPE when the move is a no-op in memory (H = W = 1 or C = 1),
and the common channels-last permute (0, 2, 3, 1) of an NHWC value costs nothing. Graph inputs
of rank 4 are NHWC, so an image classifier is transpose-free end to end.

int8: a QuantizeLinear/DequantizeLinear pair becomes the quantization parameters of the tensor
it sits on; it is never an op unless the graph changes precision there. An op runs int8 when its
activation inputs are int8, its weights are DequantizeLinear of int8 constants and its output is
followed by a QuantizeLinear (whose scale the output tensor takes, bit for bit); otherwise it runs
in float behind a DEQUANTIZE. Float I/O gets a QUANTIZE at the input and a DEQUANTIZE at the output.

Every ONNX op without a lowering raises ``TFLiteLoweringError`` naming the op, the node and the
nearest supported alternative: the writer never emits a silently different graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import UserError
from .tflite_lower_const import fold_node, infer_shapes
from .tflite_schema import OP, Model, Quant

NHWC = (0, 2, 3, 1)
NCHW = (0, 3, 1, 2)
ACT = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
SAME, VALID = 0, 1
INT8 = 9  # TensorType.INT8

# the nearest thing a user can write instead, for the error message
ALTERNATIVES = {
    "ConvTranspose": "an nn.Upsample(mode='nearest') followed by a Conv2d",
    "Einsum": "torch.matmul / the @ operator",
    "InstanceNormalization": "BatchNorm2d or LayerNorm over the last dimension",
    "GroupNormalization": "BatchNorm2d or LayerNorm over the last dimension",
    "Resize": "nn.Upsample / F.interpolate with mode nearest, nearest-exact or bilinear on NCHW images",
    "LSTM": "nn.LSTM without pack_padded_sequence, proj_size or a cell clip",
    "GRU": "nn.GRU without pack_padded_sequence",
    "Erf": "F.gelu (exact or tanh) instead of a hand-written erf",
    "Pad": "zero padding (padding_mode='zeros') or reflect padding",
    "GridSample": "a fixed resampling written as strided Conv2d / AvgPool2d / slicing",
    "TopK": "the full output, with top-k taken by the caller",
    "ScatterND": "torch.cat of slices",
    "NonZero": "a mask multiply (static shapes)",
}


class TFLiteLoweringError(UserError):
    """An ONNX op or pattern that the TFLite writer cannot express."""


@dataclass
class Val:
    index: int  # TFLite tensor
    nhwc: bool  # stored as the ONNX tensor transposed by NHWC


def unsupported(node, what: str = "") -> TFLiteLoweringError:
    alt = ALTERNATIVES.get(node.op_type, "ops of the README's TFLite section (Ops list)")
    detail = f" ({what})" if what else ""
    return TFLiteLoweringError(
        f"ONNX op {node.op_type}{detail} at node {node.name or node.output[0]!r} has no TFLite lowering; "
        f"use {alt}, or export --format onnx"
    )


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class Lowering:
    """One pass over the ONNX graph in its (topological) order, emitting TFLite ops."""

    def __init__(self, proto: onnx.ModelProto, io_int8: bool = False):
        self.proto = proto
        self.graph = proto.graph
        self.io_int8 = io_int8
        self.m = Model()
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.qconsts: dict[str, tuple] = {}  # DequantizeLinear of a constant: name -> (q, scale, zp, axis)
        self.vals: dict[str, Val] = {}
        self.cache: dict[tuple, Val] = {}
        self.skip: set[str] = set()
        self.shapes = infer_shapes(proto)
        self.dtypes: dict | None = None  # element types, inferred on first need (mask arithmetic)
        self.consumers: dict[str, list] = {}
        for i, n in enumerate(self.graph.node):
            n.name = n.name or f"{n.op_type}_{i}"  # patterns and skips go by node name
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.graph_outputs = {o.name for o in self.graph.output}
        for n in self.graph.node:  # fused activations read Clip bounds before their Constant node
            if n.op_type == "Constant":
                fold_node(self, n)

    # ---- values ---------------------------------------------------------------------------------
    def shape(self, name: str) -> list[int]:
        if name in self.consts:
            return list(self.consts[name].shape)
        return list(self.shapes[name])

    def stored_shape(self, name: str, nhwc: bool) -> list[int]:
        s = self.shape(name)
        return [s[p] for p in NHWC] if nhwc else s

    def new(self, name: str, nhwc: bool, dtype=np.float32, quant: Quant | None = None, label: str = "") -> Val:
        """A tensor for ONNX value ``name`` (its shape) stored NHWC or not, named ``label`` or ``name``."""
        shape = self.stored_shape(name, nhwc)
        dtype = INT8 if quant is not None else dtype
        return Val(self.m.tensor(label or name, shape, dtype, quant), nhwc)

    def bind(self, name: str, val: Val) -> Val:
        self.vals[name] = val
        return val

    def is_int8(self, val: Val) -> bool:
        return self.m.tensors[val.index].dtype == INT8

    def quant_of(self, val: Val) -> Quant | None:
        return self.m.tensors[val.index].quant

    def get(self, name: str, nhwc: bool | None = None, want_float: bool = False) -> Val:
        """The value of ONNX tensor ``name`` in the requested layout (None: as stored)."""
        if name in self.consts and name not in self.vals:
            v = self.consts[name]
            v = v.astype(np.float32) if v.dtype == np.float64 else v
            lay = bool(nhwc) and v.ndim == 4
            key = ("const", name, lay)
            if key not in self.cache:
                self.cache[key] = Val(self.m.const(name, v.transpose(NHWC) if lay else v), lay)
            return self.cache[key]
        val = self.vals[name]
        if nhwc is not None and len(self.shape(name)) == 4 and val.nhwc != nhwc:
            val = self._relayout(name, val, nhwc)
        return self._floatv(name, val, want_float)

    def _relayout(self, name: str, val: Val, nhwc: bool) -> Val:
        key = (name, val.index, nhwc)
        if key in self.cache:
            return self.cache[key]
        s = self.shape(name)
        q = self.quant_of(val)
        dtype = self.m.tensors[val.index].dtype
        out = self.new(name, nhwc, dtype=dtype, quant=q, label=f"{name}_{'nhwc' if nhwc else 'nchw'}")
        if s[2] * s[3] == 1 or s[1] == 1:  # same bytes in both layouts
            self.reshape_op(val.index, out.index, self.stored_shape(name, nhwc))
        else:
            perm = np.array(NHWC if nhwc else NCHW, dtype=np.int32)
            self.m.op(
                OP.TRANSPOSE, [val.index, self.m.const("perm", perm)], [out.index], version=2 if q is not None else 1
            )
        self.cache[key] = out
        return out

    def _floatv(self, name: str, val: Val, want_float: bool) -> Val:
        if not want_float or not self.is_int8(val):
            return val
        key = ("float", val.index)
        if key not in self.cache:
            out = self.new(name, val.nhwc, label=f"{name}_dequant")
            self.m.op(OP.DEQUANTIZE, [val.index], [out.index], version=2)
            self.cache[key] = out
        return self.cache[key]

    def reshape_op(self, src: int, dst: int, shape) -> None:
        self.m.op(OP.RESHAPE, [src, self.m.const("shape", np.array(shape, dtype=np.int32))], [dst])

    # ---- quantization points --------------------------------------------------------------------
    def out_quant(self, name: str) -> Quant | None:
        """The Quant of the QuantizeLinear that is the only consumer of ``name``, if any."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or name in self.graph_outputs:
            return None
        return self.q_params(users[0])

    def q_params(self, qnode) -> Quant:
        scale = np.asarray(self.consts[qnode.input[1]], dtype=np.float32)
        zp = self.consts[qnode.input[2]] if len(qnode.input) > 2 else np.zeros_like(scale, dtype=np.int8)
        zp = np.asarray(zp).astype(np.int64) - (128 if zp.dtype == np.uint8 else 0)
        return Quant(scale.reshape(-1), zp.reshape(-1), 0)

    def requant(self, name: str, val: Val, quant: Quant) -> Val:
        """``val`` (int8) re-expressed at ``quant`` (a QUANTIZE int8 -> int8 when scales differ)."""
        q = self.quant_of(val)
        if q is not None and _same_quant(q, quant):
            return val
        out = self.new(name, val.nhwc, quant=quant, label=f"{name}_requant")
        self.m.op(OP.QUANTIZE, [val.index], [out.index])
        return out

    # ---- driver ---------------------------------------------------------------------------------
    def run(self) -> Model:
        from . import tflite_ops

        init_names = set(self.consts)
        for inp in self.graph.input:
            if inp.name in init_names:
                continue
            self._graph_input(inp)
        patterns = tflite_ops.match_patterns(self)
        for node in self.graph.node:
            if node.name in self.skip:
                continue
            if node.name in patterns:
                patterns[node.name]()
                continue
            if fold_node(self, node):
                continue
            handler = tflite_ops.HANDLERS.get(node.op_type)
            if handler is None:
                raise unsupported(node)
            handler(self, node)
        for out in self.graph.output:
            self._graph_output(out.name)
        return self.m

    def _graph_input(self, inp) -> None:
        elem = inp.type.tensor_type.elem_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        nhwc = len(self.shape(inp.name)) == 4
        quant = None
        users = self.consumers.get(inp.name, [])
        if self.io_int8 and users and all(u.op_type == "QuantizeLinear" for u in users):
            quant = self.q_params(users[0])
        val = self.new(inp.name, nhwc, dtype=dtype, quant=quant)
        self.m.inputs.append(val.index)
        self.bind(inp.name, val)

    def _graph_output(self, name: str) -> None:
        val = self.vals[name]
        rank4 = len(self.shape(name)) == 4
        if rank4 and not val.nhwc:
            val = self.get(name, nhwc=True)
        if self.is_int8(val) and not self.io_int8:
            val = self._floatv(name, val, True)
        if val.index in self.m.inputs or val.index in self.m.outputs or self.m.tensors[val.index].buffer:
            dtype = self.m.tensors[val.index].dtype
            copy = self.new(name, val.nhwc, dtype=dtype, quant=self.quant_of(val), label=f"{name}_out")
            self.reshape_op(val.index, copy.index, self.m.tensors[val.index].shape)
            val = copy
        self.m.tensors[val.index].name = name
        self.m.outputs.append(val.index)


def _same_quant(a: Quant, b: Quant) -> bool:
    return (
        np.array_equal(np.asarray(a.scale, np.float32), np.asarray(b.scale, np.float32))
        and np.array_equal(np.asarray(a.zero_point), np.asarray(b.zero_point))
        and a.dim == b.dim
    )


def lower(proto: onnx.ModelProto, io_int8: bool = False) -> Model:
    """The TFLite model of ``proto`` (see the module docstring for layouts and int8)."""
    return Lowering(conv1d_as_conv2d(proto), io_int8=io_int8).run()


_ELEMENTWISE_AFTER_CONV = ("Relu", "Clip", "QuantizeLinear", "DequantizeLinear")


def _one_d_weight(n, inits: dict, producers: dict) -> str | None:
    """The initializer name of a Conv / ConvTranspose node's rank-3 weight (through an int8
    weight's DequantizeLinear), else None."""
    if n.op_type not in ("Conv", "ConvTranspose") or len(n.input) < 2:
        return None
    w = n.input[1]
    if w in producers and producers[w].op_type == "DequantizeLinear":
        w = producers[w].input[0]
    return w if w in inits and len(inits[w].dims) == 3 else None


def _is_one_d(n, inits: dict, producers: dict) -> bool:
    """A 1-D Conv, ConvTranspose (no output_shape), MaxPool (no indices read) or AveragePool."""
    attrs = {a.name: a for a in n.attribute}
    if n.op_type in ("MaxPool", "AveragePool"):
        one_output = len(n.output) < 2 or not n.output[1]
        return "kernel_shape" in attrs and len(attrs["kernel_shape"].ints) == 1 and one_output
    if n.op_type == "ConvTranspose" and "output_shape" in attrs:
        return False
    return _one_d_weight(n, inits, producers) is not None


def conv1d_as_conv2d(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Each 1-D Conv, ConvTranspose, MaxPool and AveragePool (audio front ends, keyword spotting,
    sensor models, vocoders) as the 2-D op over a height of 1 that TFLite runs: Unsqueeze the input
    at axis 2, weights [O, I/g, K] as [O, I/g, 1, K] (an int8 weight's DequantizeLinear keeps its
    per-channel axis 0), the geometry with a height of 1, and one Squeeze back. The Squeeze goes
    after the Relu/Clip and Q/DQ pair that follow the op, so an int8 conv still sees its output
    quantization. Returns ``proto`` itself when it has no such op, else a rewritten copy."""
    inits = {i.name: i for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    if not any(_is_one_d(n, inits, producers) for n in proto.graph.node):
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    for i, n in enumerate(g.node):  # the insertions below go by node name
        n.name = n.name or f"{n.op_type}_{i}"
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}
    axes = numpy_helper.from_array(np.array([2], np.int64), "edgeprune_conv1d_axes")
    g.initializer.append(axes)
    before: dict = {}  # node name -> nodes to insert before it
    after: dict = {}  # node name -> nodes to insert after it
    done_w: set = set()
    todo = [(n, _one_d_weight(n, inits, producers)) for n in g.node if _is_one_d(n, inits, producers)]
    for k, (n, wq) in enumerate(todo):
        if wq is not None and wq not in done_w:  # [O, I/g, K] -> [O, I/g, 1, K], the same bytes
            t = inits[wq]
            t.dims[:] = [t.dims[0], t.dims[1], 1, t.dims[2]]
            done_w.add(wq)
        x4 = f"{n.input[0]}_conv1d_{k}"
        before[n.name] = [onnx.helper.make_node("Unsqueeze", [n.input[0], axes.name], [x4])]
        n.input[0] = x4
        attrs = {a.name: a for a in n.attribute}
        for name, pad in (("kernel_shape", 1), ("strides", 1), ("dilations", 1), ("output_padding", 0)):
            if name in attrs:
                vals = list(attrs[name].ints)
                del attrs[name].ints[:]
                attrs[name].ints.extend([pad] + vals)
        if "pads" in attrs:
            a, b = list(attrs["pads"].ints)
            del attrs["pads"].ints[:]
            attrs["pads"].ints.extend([0, a, 0, b])
        # follow the one-reader chain of element-wise ops after the conv, then squeeze at its end
        last = n
        while True:
            users = consumers.get(last.output[0], [])
            if len(users) != 1 or users[0].op_type not in _ELEMENTWISE_AFTER_CONV or last.output[0] in graph_outputs:
                break
            last = users[0]
        y = last.output[0]
        y4 = f"{y}_conv1d_{k}"
        last.output[0] = y4
        after[last.name] = [onnx.helper.make_node("Squeeze", [y4, axes.name], [y])]
    nodes = []
    for n in g.node:
        nodes += before.get(n.name, [])
        nodes.append(n)
        nodes += after.get(n.name, [])
    # a Squeeze whose one reader is the next conv's Unsqueeze cancels with it: consecutive 1-D
    # convs stay 4-D (NHWC) between them, with no TRANSPOSE pair
    readers: dict = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    squeezed = {n.output[0]: n for n in nodes if n.op_type == "Squeeze" and n.input[1] == axes.name}
    drop: set = set()
    for n in nodes:
        sq = squeezed.get(n.input[0]) if n.op_type == "Unsqueeze" and n.input[1] == axes.name else None
        if sq is None or len(readers.get(sq.output[0], [])) != 1 or sq.output[0] in graph_outputs:
            continue
        for r in readers.get(n.output[0], []):
            r.input[:] = [sq.input[0] if i == n.output[0] else i for i in r.input]
        drop.update({id(sq), id(n)})
    nodes = [n for n in nodes if id(n) not in drop]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # shapes changed: inferred again
    return out
