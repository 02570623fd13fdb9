"""ONNX writers: fp32, fp16 and int8 QDQ, all checked with ``onnx.checker`` (full check).

Consumes: an ``nn.Module`` (fp32 / fp16) or a ``QuantizedModel`` (int8), example inputs and
export options. Produces: ``onnx.ModelProto`` objects (saved by ``edgeprune.export.export``).

Exporter choice: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter) first. On
the CNN/MLP graphs we ship it yields a clean, constant-folded graph with Conv/Gemm nodes whose
weights keep their parameter names, supports opset 17 directly (the dynamo exporter starts at
18 and down-converts), and takes ~0.1 s instead of seconds. If it fails on a model, the dynamo
exporter is tried; both results must pass the full checker.

int8: we do not let a tool recalibrate. The BN-folded fp32 graph is exported, then every scale
of the QuantizedModel is written unchanged: weights become int8 initializers (symmetric per
output channel; uint8 at zero point 128 in a file without a target, ``file_weight_dtype``)
behind DequantizeLinear(axis), biases int32 at s_in*s_w behind
DequantizeLinear, and each activation quant point gets a QuantizeLinear/DequantizeLinear pair
(the QDQ format that ONNX Runtime fuses into QLinearConv/QGemm and TensorRT reads as explicit
quantization). Conv/Gemm/MatMul nodes are matched to layers by weight name, else by weight
values; quantized adds, average pools and concats are located through their (already located)
inputs.
Every test compares the result in ONNX Runtime with the QuantizedModel's torch fake-quant twin.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from ..graph.export import quiet_torch_logs
from ..graph.record import flat_output_names

DEFAULT_OPSET = 17


def torch_to_onnx(
    model: torch.nn.Module,
    example_inputs,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    input_names: list | None = None,
) -> onnx.ModelProto:
    """Export ``model`` (eval mode) to an in-memory ModelProto. Inputs are ``input_names`` (a model
    of named inputs: ``input_ids``, ``attention_mask``, ...), else 'input' or 'input_0', 'input_1', ...;
    outputs are named by ``output_names``."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    _refuse_unexportable(model)
    if input_names and len(input_names) == len(example_inputs):
        in_names = list(input_names)
    else:
        in_names = ["input"] if len(example_inputs) == 1 else [f"input_{i}" for i in range(len(example_inputs))]
    dyn = {n: {0: "batch"} for n in in_names + ["output"]} if dynamic_batch else None
    was_training = model.training
    model.eval()
    # nn.MultiheadAttention's eval fast path is one fused aten op no ONNX exporter translates;
    # the regular path exports as plain MatMul/Softmax.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad(), quiet_torch_logs():
            warnings.simplefilter("ignore")
            out_names = output_names(model, example_inputs)
            try:
                torch.onnx.export(
                    model,
                    example_inputs,
                    buf,
                    dynamo=False,
                    opset_version=opset,
                    input_names=in_names,
                    output_names=["output"],
                    dynamic_axes=dyn,
                    do_constant_folding=True,
                )
            except Exception as first:
                buf = io.BytesIO()
                shapes = {n: {0: torch.export.Dim("batch")} for n in in_names} if dynamic_batch else None
                try:
                    prog = torch.onnx.export(
                        model,
                        example_inputs,
                        dynamo=True,
                        opset_version=max(opset, 18),
                        input_names=in_names,
                        output_names=["output"],
                        dynamic_shapes=shapes,
                        verbose=False,
                    )
                    prog.save(buf)
                except Exception as second:
                    raise RuntimeError(
                        f"ONNX export of {type(model).__name__} failed with both torch exporters: "
                        f"TorchScript: {_first_line(first)}; dynamo: {_first_line(second)}"
                    ) from second
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
    proto = onnx.load_from_string(buf.getvalue())
    _name_outputs(proto, out_names)
    return proto


def _refuse_unexportable(model: torch.nn.Module) -> None:
    """Modules ONNX has no form for that an exporter would still write wrong: ONNX's LSTM has no
    projection, and torch's dynamo exporter writes an LSTM with ``proj_size`` as one whose hidden
    size is the projection's, dropping the projection (ONNX Runtime then refuses its states)."""
    from ..errors import UserError

    for name, m in model.named_modules():
        if isinstance(m, torch.nn.LSTM) and m.proj_size > 0:
            raise UserError(
                f"nn.LSTM '{name}' has proj_size={m.proj_size}, which ONNX's LSTM cannot express; "
                "use proj_size=0 with a Linear after the LSTM"
            )


def output_names(model: torch.nn.Module, example_inputs) -> list:
    """Names of the model's output tensors in the order exporters flatten them: the fields of a
    ``ModelOutput`` or dict (``last_hidden_state``, ``pooler_output``; a tuple field as ``name_0``,
    ``name_1``, ...), else 'output', 'output_1', ... A captured GraphModule carries its model's names
    in ``meta["edgeprune_output_names"]``; other modules are run once on the example (in eval mode:
    the caller's)."""
    names = getattr(model, "meta", {}).get("edgeprune_output_names") if hasattr(model, "meta") else None
    if names:
        return list(names)
    try:
        with torch.no_grad():
            out = model(*example_inputs)
    except Exception:  # the exporter ran it; a failure here only costs the names
        return []
    return flat_output_names(out)


def _name_outputs(proto: onnx.ModelProto, names: list) -> None:
    """Rename the graph outputs to ``names`` when there is one name per output; an output that is
    also a graph input, or whose new name the graph already uses, keeps its name."""
    g = proto.graph
    if len(names) != len(g.output) or len(set(names)) != len(names):
        return
    used = {t for n in g.node for t in (*n.input, *n.output)} | {i.name for i in g.input}
    used |= {i.name for i in g.initializer}
    inputs = {i.name for i in g.input}
    for out, new in zip(g.output, names):
        if out.name == new or out.name in inputs or new in used:
            continue
        _rename_tensor(g, out.name, new, ("output", "input"))
        for vi in g.value_info:
            if vi.name == out.name:
                vi.name = new
        out.name = new
        used.add(new)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---- int8 QDQ ----------------------------------------------------------------------------------
def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _find_layer_node(graph, inits: dict, target: str, weight: np.ndarray):
    """(node, axis, transposed) of the Conv/Gemm/MatMul computing layer ``target``."""
    name = f"{target}.weight"
    candidates = [
        n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in inits
    ]
    for n in candidates:
        if n.input[1] == name:
            return n, _weight_axis(n)
    for n in candidates:  # renamed by constant folding: match by value
        w = inits[n.input[1]]
        axis = _weight_axis(n)
        ref = weight if axis == 0 else weight.T
        if w.shape == ref.shape and np.array_equal(w, ref):
            return n, axis
    return None, None


def _weight_axis(node) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1  # MatMul: weight is [in, out]


def file_activation_dtype(qmodel) -> str:
    """The activation type the int8 ONNX file carries for ``qmodel``.

    Without a target, asymmetric int8 activations are written as uint8 (zero point + 128: the
    same values). ONNX Runtime on x86 fuses QDQ Conv/MatMul/Add into int8 kernels only with uint8
    activations; it rewrites int8 pairs to uint8 itself, but not all of them (a Conv whose input
    was rewritten and whose output was not stays a float Conv), so a file meant for any host is
    written in the form x86 wants. A target keeps its own scheme (ARM: int8; TensorRT: symmetric int8).
    """
    cfg = qmodel.config
    if cfg.target is None and cfg.activation_dtype == "int8" and not cfg.symmetric_activations:
        return "uint8"
    return cfg.activation_dtype


def file_weight_dtype(qmodel) -> str:
    """The type of the int8 weights in the ONNX file for ``qmodel``: ``"uint8"`` (the int8 values
    plus 128, zero point 128: the same real weights) for a file without a target, else ``"int8"``.

    Why: ONNX Runtime on x86 without VNNI (AVX2, AVX-512 before Cascade Lake, every AMD core
    before Zen 4) multiplies uint8 activations by int8 weights with ``vpmaddubsw``, which adds two
    products in saturating int16: 255 * 127 * 2 does not fit, so full-range weights give results
    far from the model's (0.2 absolute on a small MLP's logits, measured). uint8 x uint8 runs
    there as int16 products summed in int32, exact everywhere. A file for any host takes that form;
    an x86 target says which it wants (VNNI: int8 weights, exact and faster; AVX2: 7-bit weights,
    ``reduce_range``, which cannot saturate), and ARM files keep int8 (no saturating path there).
    """
    cfg = qmodel.config
    if file_activation_dtype(qmodel) == "uint8" and cfg.target is None and not cfg.reduce_range:
        return "uint8"
    return "int8"


def weights_as_uint8(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with the int8 weights of its Conv / Gemm / MatMul layers (DequantizeLinear of an
    int8 initializer at zero point 0, read as a layer's weight input) written as uint8 at zero point
    128: the same real weights (``file_weight_dtype``). Embedding tables (a Gather's) and other
    int8 constants stay int8."""
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    weight_inputs = {n.input[1] for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1}
    done: set[str] = set()
    for n in g.node:
        if n.op_type != "DequantizeLinear" or n.output[0] not in weight_inputs or len(n.input) < 3:
            continue
        values, zero = inits.get(n.input[0]), inits.get(n.input[2])
        if values is None or zero is None or n.input[0] in done:
            continue
        q, z = numpy_helper.to_array(values), numpy_helper.to_array(zero)
        if q.dtype != np.int8 or z.dtype != np.int8 or np.any(z != 0):
            continue
        values.CopyFrom(numpy_helper.from_array((q.astype(np.int16) + 128).astype(np.uint8), values.name))
        zero.CopyFrom(numpy_helper.from_array(np.full(z.shape, 128, np.uint8), zero.name))
        done.add(n.input[0])
    return proto


def _initializers(graph) -> dict[str, np.ndarray]:
    """{name: value} of the initializers, and of Identity nodes of them: the exporter shares equal
    initializers (e.g. the zero biases of freshly folded BN) through Identity nodes."""
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            inits[n.output[0]] = inits[n.input[0]]
    return inits


@dataclass
class _QDQEdit:
    """What ``quantize_onnx`` adds to a copied graph: built piece by piece, spliced in at the end."""

    graph: onnx.GraphProto
    inits: dict
    consumers: dict
    new_inits: list = field(default_factory=list)
    pre_nodes: list = field(default_factory=list)  # QDQ of graph inputs and weights (topologically first)
    after: dict = field(default_factory=dict)  # tensor -> QDQ nodes to place after its producer
    point_tensors: dict = field(default_factory=dict)  # point -> ONNX tensors carrying it
    drop_inits: set = field(default_factory=set)
    renames: dict = field(default_factory=dict)  # producer output renames (tensor -> its fp32 name)
    rewires: dict = field(default_factory=dict)  # consumer input rewires for graph inputs
    replaced: dict = field(default_factory=dict)  # initializer -> consumers now reading a DQ of it
    names: set = field(default_factory=set)  # quantized copies made so far

    def dequantized_const(self, name: str, q: np.ndarray, scale: np.ndarray, zero: np.ndarray, **attrs) -> str:
        """Add ``q`` with its scale/zero point and a DequantizeLinear; return the dequantized tensor's
        name. The float initializer ``name`` goes once every consumer reads a dequantized copy.
        The exporter shares equal initializers (the zero biases of freshly initialised layers), so
        one name may be quantized for several layers: each copy gets its own suffix."""
        base = name
        k = 1
        while f"{base}_quantized" in self.names:
            base, k = f"{name}_{k}", k + 1
        self.names.add(f"{base}_quantized")
        self.new_inits += [
            numpy_helper.from_array(np.ascontiguousarray(q), f"{base}_quantized"),
            numpy_helper.from_array(scale, f"{base}_scale"),
            numpy_helper.from_array(zero, f"{base}_zero_point"),
        ]
        self.pre_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
                [f"{base}_dequantized"],
                name=f"{base}_DequantizeLinear",
                **attrs,
            )
        )
        self.release(name)
        return f"{base}_dequantized"

    def release(self, name: str) -> None:
        """One more consumer of initializer ``name`` reads a quantized copy instead; the float one
        goes once none reads it (a table tied to an output layer feeds a lookup and a layer)."""
        self.replaced[name] = self.replaced.get(name, 0) + 1
        if self.replaced[name] >= len(self.consumers.get(name, [])):
            self.drop_inits.add(name)


def quantize_onnx(fp32: onnx.ModelProto, qmodel) -> onnx.ModelProto:
    """Rewrite the BN-folded fp32 graph of ``qmodel`` into QDQ int8 with exactly its scales."""
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    graph = model.graph
    edit = _QDQEdit(graph, _initializers(graph), _consumers(graph))
    for target, info in qmodel.layers.items():
        _quantize_layer(edit, qmodel, target, info)
    for target, e in getattr(qmodel, "embeddings", {}).items():
        _quantize_embedding(edit, qmodel, target, e)
    # graph inputs by position: an add may read the model input directly
    onnx_inputs = [i.name for i in graph.input if i.name not in edit.inits]
    placeholders = [n.name for n in qmodel.folded.graph.nodes if n.op == "placeholder"]
    for ph, gi in zip(placeholders, onnx_inputs):
        if ph in qmodel.points:
            edit.point_tensors.setdefault(ph, set()).add(gi)
    matmuls: set = set()  # outputs of the MatMul nodes already given to an int8 matmul
    for op_name, op in qmodel.ops.items():
        _map_op(graph, edit.consumers, op_name, op, edit.point_tensors, matmuls)
    _place_activation_qdq(edit, qmodel)
    _splice(edit)
    del graph.value_info[:]  # names changed; shape inference recomputes them
    return model


def _twin_params(qmodel, layer, info: dict):
    """The fake-quant twin's weight and bias of one layer (int8 and int32 grid values times their scales).

    Only this layer's QuantLayer is built, with the input point's parameters: building the whole
    twin (``fake_quant_module``) deep-copies the folded graph, the largest cost of an int8 export.
    """
    from ..quant.fakequant import QuantLayer, QuantPoint

    point = None
    p = qmodel.points.get(info["input"])
    if p is not None:
        point = QuantPoint(info["input"])
        point.set_qparams(p["scale"], p["zero_point"], p["qmin"], p["qmax"])
    twin = QuantLayer(layer, info["weight_scale"], info["weight_qmax"], qmodel.config.per_channel, point)
    twin.training = False  # the stored scales (not .eval(): that would also flip the folded layer's mode)
    return twin.quantized_params()


def _quantize_embedding(edit: _QDQEdit, qmodel, target: str, e: dict) -> None:
    """An int8 embedding table (one scale, zero point 0): its Gather reads int8 rows and a
    DequantizeLinear follows."""
    from ..quant.quantize import dequantized_table, embedding_int8

    weight = qmodel.folded.get_submodule(target).weight
    w = dequantized_table(weight, e)  # the graph was traced from QuantizedModel.export_module
    node = next(
        (
            n
            for n in edit.graph.node
            if n.op_type == "Gather"
            and n.input[0] in edit.inits
            and edit.inits[n.input[0]].shape == w.shape
            and np.array_equal(edit.inits[n.input[0]], w)
        ),
        None,
    )
    if node is None:  # every lookup was at constant positions: folded, from the same int8 values
        return
    # Gather the int8 rows, then dequantize them: a DequantizeLinear of the whole table would run
    # on every call in ONNX Runtime (it keeps Q/DQ of constants for its QDQ fusions: 4 ms for a
    # 30522 x 384 table), while the rows of one sequence take microseconds. Same values: one scale.
    table = f"{node.input[0]}_int8"
    out = node.output[0]
    edit.new_inits += [
        numpy_helper.from_array(embedding_int8(weight, e), table),
        numpy_helper.from_array(np.array(e["scale"], dtype=np.float32), f"{out}_scale"),
        numpy_helper.from_array(np.array(0, np.int8), f"{out}_zero_point"),
    ]
    edit.release(node.input[0])
    node.input[0] = table
    node.output[0] = f"{out}_int8"
    dq = helper.make_node(
        "DequantizeLinear", [f"{out}_int8", f"{out}_scale", f"{out}_zero_point"], [out], name=f"{out}_DequantizeLinear"
    )
    # right after the Gather, as a node of the graph: an activation point on ``out`` then finds
    # the DequantizeLinear as the producer it places its Q/DQ after
    nodes = list(edit.graph.node)
    at = next(i for i, n in enumerate(nodes) if n.output and n.output[0] == f"{out}_int8")
    edit.graph.node.insert(at + 1, dq)


def _quantize_layer(edit: _QDQEdit, qmodel, target: str, info: dict) -> None:
    """int8 weight and int32 bias of one layer as DequantizeLinear constants; record its activation points."""
    layer = qmodel.folded.get_submodule(target)
    node, axis = _find_layer_node(edit.graph, edit.inits, target, layer.weight.detach().numpy())
    if node is None:
        raise RuntimeError(f"layer {target} not found in the exported ONNX graph; cannot place its int8 weights")
    # weights: exactly the fake-quant module's int8 values
    wq_t, bq_t = _twin_params(qmodel, layer, info)
    ws = np.asarray(info["weight_scale"], dtype=np.float32)
    shape = [-1] + [1] * (wq_t.dim() - 1)
    q = torch.round(wq_t.detach() / torch.from_numpy(ws).reshape(shape)).to(torch.int8).numpy()
    if axis == 1:
        q = q.T
    per_channel = qmodel.config.per_channel
    scale_arr = ws if per_channel else ws[:1].reshape(())
    dq_attrs = {"axis": axis} if per_channel else {}
    zeros = np.zeros_like(scale_arr, dtype=np.int8)
    node.input[1] = edit.dequantized_const(node.input[1], q, scale_arr, zeros, **dq_attrs)
    # bias: int32 at s_in * s_w. Conv and Gemm carry it as input 2; a Linear on a 3-D input
    # exports as MatMul followed by an Add of the bias, whose output is the layer's output.
    out_node, bias_slot = node, 2
    if node.op_type == "MatMul" and layer.bias is not None:
        users = edit.consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add":
            add = users[0]
            slot = 1 if add.input[0] == node.output[0] else 0
            if add.input[slot] in edit.inits:
                out_node, bias_slot = add, slot
    if (
        info.get("bias_scale") is not None
        and len(out_node.input) > bias_slot
        and out_node.input[bias_slot] in edit.inits
    ):
        bs = np.asarray(info["bias_scale"], dtype=np.float32)
        bq = np.round(bq_t.detach().numpy().astype(np.float32) / bs).astype(np.int32)
        bname = out_node.input[bias_slot]
        out_node.input[bias_slot] = edit.dequantized_const(bname, bq, bs, np.zeros_like(bq), axis=0)
    # activation points: the layer's input; its output (after a fused ReLU)
    edit.point_tensors.setdefault(info["input"], set()).add(node.input[0])
    if info.get("output"):
        out = out_node.output[0]
        if info.get("relu"):
            users = edit.consumers.get(out, [])
            if len(users) != 1 or users[0].op_type not in ("Relu", "Clip"):
                raise RuntimeError(f"layer {target}: expected one Relu/Clip after {node.name} in the ONNX graph")
            out = users[0].output[0]
        edit.point_tensors.setdefault(info["output"], set()).add(out)


def _place_activation_qdq(edit: _QDQEdit, qmodel) -> None:
    """One QuantizeLinear/DequantizeLinear pair on every ONNX tensor that carries an activation point."""
    as_uint8 = file_activation_dtype(qmodel) == "uint8"
    graph_inputs = {i.name for i in edit.graph.input}
    owner: dict[str, tuple] = {}  # tensor -> (point, scale, zero point) already placed there
    for pname, tensors in edit.point_tensors.items():
        p = qmodel.points[pname]
        zdt = np.uint8 if p["dtype"] == "uint8" or as_uint8 else np.int8
        zp = p["zero_point"] + (128 if as_uint8 and p["dtype"] == "int8" else 0)  # same real values
        for t in sorted(tensors):
            # Two points on one ONNX tensor (e.g. a dropout the exporter removed) must agree;
            # shared points do, and one Q/DQ pair then serves both.
            if t in owner:
                if owner[t][1:] != (p["scale"], p["zero_point"]):
                    raise RuntimeError(
                        f"points {owner[t][0]} and {pname} both land on ONNX tensor {t} with different scales"
                    )
                continue
            owner[t] = (pname, p["scale"], p["zero_point"])
            sname, zname = f"{t}_scale", f"{t}_zero_point"
            edit.new_inits += [
                numpy_helper.from_array(np.array(p["scale"], dtype=np.float32), sname),
                numpy_helper.from_array(np.array(zp, dtype=zdt), zname),
            ]
            if t in graph_inputs:
                src, dst = t, f"{t}_dequantized"
                edit.rewires[t] = dst
            else:
                src, dst = f"{t}_prequant", t
                edit.renames[t] = src
            q = helper.make_node("QuantizeLinear", [src, sname, zname], [f"{t}_quantized"], name=f"{t}_QuantizeLinear")
            dq = helper.make_node(
                "DequantizeLinear", [f"{t}_quantized", sname, zname], [dst], name=f"{t}_DequantizeLinear"
            )
            if t in graph_inputs:
                edit.pre_nodes += [q, dq]
            else:
                edit.after[t] = [q, dq]


def _splice(edit: _QDQEdit) -> None:
    """Write the recorded renames, QDQ nodes and constants into the graph, in topological order."""
    graph = edit.graph
    renamed_from = {v: k for k, v in edit.renames.items()}
    nodes = list(edit.pre_nodes)
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name in edit.rewires:
                n.input[i] = edit.rewires[name]
        for i, name in enumerate(n.output):
            if name in edit.renames:
                n.output[i] = edit.renames[name]
        nodes.append(n)
        for name in list(n.output):
            if name in renamed_from:
                nodes += edit.after[renamed_from[name]]
    del graph.node[:]
    graph.node.extend(nodes)
    keep = [i for i in graph.initializer if i.name not in edit.drop_inits]
    del graph.initializer[:]
    graph.initializer.extend(keep + edit.new_inits)


# ops that move, repeat or cut out values without changing them (the data is their first input):
# a matmul operand reached through them from a located point reads that point's int8 bytes
_VIEW_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Expand", "Split", "Slice")


def _views_back(producers: dict, tensor: str):
    """``tensor`` and each tensor it is a view of, walking back through ``_VIEW_OPS``."""
    yield tensor
    while tensor in producers and producers[tensor].op_type in _VIEW_OPS:
        tensor = producers[tensor].input[0]
        yield tensor


def _map_matmul(graph, op_name: str, op: dict, point_tensors: dict, claimed: set) -> None:
    """Locate an int8 matmul of two activations: the first MatMul not claimed by an earlier one
    whose operands are views of the located input points (at least one is located; the other
    operand's point, if not located yet, is the MatMul's input itself)."""
    found = None
    producers = {o: n for n in graph.node for o in n.output}
    for n in graph.node:
        if n.op_type != "MatMul" or len(n.input) != 2 or n.output[0] in claimed:
            continue
        ok = True
        for p, t in zip(op["inputs"], n.input):
            if p in point_tensors and not any(v in point_tensors[p] for v in _views_back(producers, t)):
                ok = False
        if ok:
            found = n
            break
    if found is None:
        raise RuntimeError(f"matmul {op_name} not found in the exported ONNX graph")
    claimed.add(found.output[0])
    for p, t in zip(op["inputs"], found.input):
        if p not in point_tensors:
            point_tensors[p] = {t}
    point_tensors.setdefault(op["output"], set()).add(found.output[0])


def _map_op(graph, consumers, op_name: str, op: dict, point_tensors: dict, matmuls: set) -> None:
    """Locate a quantized add / mul / average pool / concat / sigmoid / hard sigmoid / hard-swish /
    matmul in the ONNX graph from its input tensors; ``matmuls`` holds the outputs of the MatMuls located
    so far (each is one op's)."""
    if op["kind"] == "matmul":
        return _map_matmul(graph, op_name, op, point_tensors, matmuls)
    ins = []
    for p in op["inputs"]:
        if p not in point_tensors:
            raise RuntimeError(f"{op['kind']} {op_name}: its input {p} was not located in the ONNX graph")
        ins.append(point_tensors[p])
    types = {
        "add": ("Add",),
        "mul": ("Mul",),
        "concat": ("Concat",),
        "sigmoid": ("Sigmoid",),
        "hardsigmoid": ("HardSigmoid",),
        "hardswish": ("HardSwish",),
    }.get(op["kind"], ("GlobalAveragePool", "AveragePool"))
    found = None
    for n in graph.node:
        if n.op_type not in types or len(n.input) < len(ins):
            continue
        if op["kind"] == "concat":
            if len(n.input) == len(ins) and all(t in tensors for t, tensors in zip(n.input, ins)):
                found = n
                break
        elif op["kind"] in ("add", "mul"):
            a, b = n.input[0], n.input[1]
            if (a in ins[0] and b in ins[1]) or (a in ins[1] and b in ins[0]):
                found = n
                break
        elif n.input[0] in ins[0]:
            found = n
            break
    if found is None:
        raise RuntimeError(f"{op['kind']} {op_name} not found in the exported ONNX graph")
    out = found.output[0]
    if op["relu"]:
        users = consumers.get(out, [])
        if len(users) != 1 or users[0].op_type not in ("Relu", "Clip"):
            raise RuntimeError(f"{op_name}: expected one Relu/Clip after {found.name} in the ONNX graph")
        out = users[0].output[0]
    point_tensors.setdefault(op["output"], set()).add(out)


def read_qdq_scales(proto: onnx.ModelProto) -> dict:
    """{tensor name: (scale, zero_point)} of every QuantizeLinear, read back from a file's graph."""
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    out = {}
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear":
            out[n.input[0].removesuffix("_prequant")] = (inits[n.input[1]], inits[n.input[2]])
    return out


# ---- fp16 --------------------------------------------------------------------------------------
def _rename_tensor(g: onnx.GraphProto, old: str, new: str, fields: tuple[str, ...]) -> None:
    """Every mention of tensor ``old`` in the nodes' ``fields`` ("input" / "output") becomes ``new``."""
    for n in g.node:
        for which in fields:
            names = getattr(n, which)
            for k, name in enumerate(names):
                if name == old:
                    names[k] = new


def to_fp16(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute with fp32 inputs/outputs (a Cast at each end), for fp16-only GPUs."""
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    g = model.graph
    for i, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init).astype(np.float16)
            g.initializer[i].CopyFrom(numpy_helper.from_array(arr, init.name))
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    casts_in = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT:
            new = f"{inp.name}_fp16"
            _rename_tensor(g, inp.name, new, ("input",))
            casts_in.append(
                helper.make_node("Cast", [inp.name], [new], name=f"{inp.name}_to_fp16", to=TensorProto.FLOAT16)
            )
    casts_out = []
    for out in g.output:
        if out.type.tensor_type.elem_type == TensorProto.FLOAT:
            new = f"{out.name}_fp16"
            _rename_tensor(g, out.name, new, ("output", "input"))
            casts_out.append(
                helper.make_node("Cast", [new], [out.name], name=f"{out.name}_to_fp32", to=TensorProto.FLOAT)
            )
    nodes = casts_in + list(g.node) + casts_out
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return model
