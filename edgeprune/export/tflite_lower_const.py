"""Static facts of an ONNX graph for the TFLite lowering: tensor shapes and constant folding.

Consumes: an ``onnx.ModelProto`` and the ``Lowering`` state (its ``consts``). Produces: the shape
of every tensor (``infer_shapes``) and, for a node whose inputs are all constant (or a ``Shape``
of a tensor with a static shape), its outputs as constants (``fold_node``), so shape arithmetic,
position embeddings and DequantizeLinear of weights never become TFLite ops.
"""

from __future__ import annotations

import numpy as np
import onnx


def infer_dtypes(proto: onnx.ModelProto) -> dict[str, np.dtype]:
    """{tensor name: numpy dtype} from ONNX type inference."""
    g = onnx.shape_inference.infer_shapes(proto).graph
    out = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.tensor_type.elem_type:
            out[vi.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    return out


def infer_shapes(proto: onnx.ModelProto) -> dict[str, list[int]]:
    """{tensor name: static shape}: ONNX shape inference, completed by one ONNX Runtime run."""
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    g = inferred.graph
    shapes: dict[str, list[int]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [int(d.dim_value) for d in dims]
    inits = {i.name for i in g.initializer}
    missing = [o for n in g.node for o in n.output if o and o not in shapes and o not in inits]
    if missing:
        shapes.update(_run_shapes(proto, missing))
    return shapes


def _run_shapes(proto: onnx.ModelProto, names: list[str]) -> dict[str, list[int]]:
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dt = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(i.type, np.float32)
        feeds[i.name] = np.zeros(shape, dtype=dt)
    outs = sess.run(names, feeds)
    return {n: list(o.shape) for n, o in zip(names, outs)}


def fold_node(lw, node) -> bool:
    """Evaluate ``node`` at export time if it is constant; True if it was (its outputs are consts)."""
    consts = lw.consts
    if node.op_type == "Constant":
        consts[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
        return True
    if node.op_type == "Shape" and node.input[0] in lw.shapes:
        s = np.array(lw.shape(node.input[0]), dtype=np.int64)
        start, end = _attr(node, "start", 0), _attr(node, "end", None)
        consts[node.output[0]] = s[start:end]
        return True
    if node.op_type == "DequantizeLinear" and node.input[0] in consts:
        q = consts[node.input[0]]
        scale = np.asarray(consts[node.input[1]], dtype=np.float32)
        zp = np.asarray(consts[node.input[2]]) if len(node.input) > 2 else np.zeros_like(q[:0])
        axis = _attr(node, "axis", 1)
        shape = [1] * q.ndim
        if scale.ndim == 1 and q.ndim > 0:
            shape[axis] = -1
        val = (q.astype(np.float32) - zp.astype(np.float32).reshape(shape)) * scale.reshape(shape)
        consts[node.output[0]] = val.astype(np.float32)
        lw.qconsts[node.output[0]] = (q, scale, zp, axis)
        return True
    ins = [i for i in node.input if i]
    if not ins or any(i not in consts for i in ins):
        return False
    if node.op_type == "GatherElements":
        # onnx's reference GatherElements goes through np.choose, which takes at most 32/64
        # choices and falls back to a wrong loop beyond that (BERT's token-type buffer gathered
        # by 128 positions)
        data, idx = consts[node.input[0]], consts[node.input[1]].astype(np.int64)
        axis = _attr(node, "axis", 0) % data.ndim
        idx = np.where(idx < 0, idx + data.shape[axis], idx)
        consts[node.output[0]] = np.take_along_axis(data, idx, axis=axis)
        return True
    from onnx.reference import ReferenceEvaluator

    g = onnx.helper.make_graph(
        [node],
        "fold",
        [
            onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(consts[i].dtype), None)
            for i in ins
        ],
        [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o],
    )
    opset = [o for o in lw.proto.opset_import]
    model = onnx.helper.make_model(g, opset_imports=opset)
    outs = ReferenceEvaluator(model).run(None, {i: consts[i] for i in ins})
    for name, v in zip([o for o in node.output if o], outs):
        consts[name] = np.asarray(v)
    return True


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default
