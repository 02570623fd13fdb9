"""``inspect_onnx(path)``: what is in an ONNX file, and which ops run int8 and which do not (and why).

Consumes: an ONNX file (any producer). Produces: a JSON-ready dict: inputs/outputs, op counts,
parameter count, MACs (from shape inference, batch 1), file size, metadata_props, and per
compute op its precision (int8 when its inputs arrive through DequantizeLinear, fp16, fp32)
with the reason every op that stayed fp32 did so; int8 coverage by ops and by MACs.

What the file says is not what a runtime runs: ONNX Runtime fuses a DequantizeLinear -> Conv ->
QuantizeLinear group into an int8 kernel only when the pattern suits the CPU. ``ort_kernels``
(``inspect_onnx(path, runtime=True)``) reads the graph ONNX Runtime really executes (its optimized
model, ``SessionOptions.optimized_model_filepath``, CPU provider, all optimizations) and reports
per Conv/Gemm/MatMul the kernel it runs (QLinearConv, QGemm, ConvInteger, MatMulInteger... or a
float Conv/FusedConv/Gemm) and, for every float fallback of an op the file quantized, why.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from ..errors import UserError
from .onnx_align import padding_of

# Ops that carry MACs (weights) and ops the QDQ scheme can run in int8 when fed by DQ.
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QUANTIZABLE_BY_EDGEPRUNE = ("Conv", "Gemm", "MatMul")
COMPUTE = WEIGHTED + (
    "Add",
    "Mul",
    "Sub",
    "Concat",
    "AveragePool",
    "GlobalAveragePool",
    "MaxPool",
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSwish",
    "Softmax",
    "LSTM",
    "GRU",
    "Resize",
    "BatchNormalization",
    "LayerNormalization",
)
_DTYPES = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
}


def _dims(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def _num(dims) -> int:
    n = 1
    for d in dims:
        n *= d if isinstance(d, int) and d > 0 else 1  # symbolic batch counts as 1
    return n


def read_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse an ONNX file; an empty, truncated or non-ONNX file raises UserError naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror or e})") from None
    if size == 0:
        raise UserError(f"{path}: empty file (0 bytes), not an ONNX model; export it again")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable ONNX file (truncated or corrupt: {msg[:200]})") from None
    if model.ir_version <= 0 or not model.graph.output or not model.opset_import:
        raise UserError(f"{path}: not an ONNX model (no IR version, opset or graph outputs); export it again")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, TypeError, UnicodeDecodeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a valid ONNX model ({msg[:200]})") from None
    # the checker leaves declared shapes alone: a negative size would count negative MACs and
    # make inputs no runtime can take
    for kind, vis in (("input", model.graph.input), ("output", model.graph.output), ("value", model.graph.value_info)):
        for vi in vis:
            for axis, d in enumerate(vi.type.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value < 0:
                    raise UserError(
                        f"{path}: {kind} {vi.name!r:.60} has size {d.dim_value} on axis {axis}; a size must be "
                        ">= 0 or a named (symbolic) dimension; export it again"
                    )
    return model


def inspect_onnx(path: str | os.PathLike, runtime: bool = False) -> dict:
    """The file's contents and int8 coverage; with ``runtime=True`` also ``"runtime"``: ``ort_kernels``."""
    info = _inspect_file(Path(path))
    if runtime:
        info["runtime"] = ort_kernels(path, info["layers"])
    return info


@dataclasses.dataclass
class _Graph:
    """Lookups over one shape-inferred graph that the per-node readers below share."""

    shapes: dict[str, Any]
    types: dict[str, int]
    inits: dict[str, Any]
    producer: dict[str, Any]
    consumers: dict[str, list]
    has_qdq: bool

    @classmethod
    def of(cls, g) -> _Graph:
        vis = list(g.value_info) + list(g.input) + list(g.output)
        shapes = {vi.name: _dims(vi) for vi in vis}
        types = {vi.name: vi.type.tensor_type.elem_type for vi in vis}
        inits = {i.name: i for i in g.initializer}
        for name, init in inits.items():
            shapes[name] = list(init.dims)
            types[name] = init.data_type
        consumers: dict[str, list] = {}
        for n in g.node:
            for t in n.input:
                consumers.setdefault(t, []).append(n)
        has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.node)
        return cls(shapes, types, inits, {o: n for n in g.node for o in n.output}, consumers, has_qdq)

    def from_dq(self, t: str) -> bool:
        p = self.producer.get(t)
        return p is not None and p.op_type == "DequantizeLinear"

    def from_dq_through(self, t: str) -> bool:
        """Produced by a DequantizeLinear, directly or through value-preserving ops that ONNX
        Runtime moves a DequantizeLinear across (its QDQ propagation: Transpose, Reshape...)."""
        for _ in range(8):
            p = self.producer.get(t)
            if p is None or p.op_type not in _DQ_PROPAGATES:
                return p is not None and p.op_type == "DequantizeLinear"
            t = p.input[0]
        return False

    def weight_shape(self, t: str):
        p = self.producer.get(t)
        if p is not None and p.op_type == "DequantizeLinear":
            t = p.input[0]
        return self.shapes.get(t)

    def requantized(self, t: str) -> bool:
        """The tensor goes only into QuantizeLinear, directly or through one fusable Relu/Clip."""
        users = self.consumers.get(t, [])
        if len(users) == 1 and users[0].op_type in ("Relu", "Clip"):
            users = self.consumers.get(users[0].output[0], [])
        return bool(users) and all(u.op_type == "QuantizeLinear" for u in users)

    def fused_activation(self, n) -> bool:
        """Relu/Clip between an int8 op (all inputs from DequantizeLinear) and a QuantizeLinear:
        runtimes fuse it into that op (ONNX Runtime's Relu/Clip-Quantize fusion)."""
        p = self.producer.get(n.input[0])
        users = self.consumers.get(n.output[0], [])
        if p is None or len(users) != 1 or users[0].op_type != "QuantizeLinear":
            return False
        data = [t for t in (p.input[:2] if p.op_type in WEIGHTED else p.input) if t and t not in self.inits]
        return bool(data) and all(self.from_dq(t) for t in (p.input[:2] if p.op_type in WEIGHTED else data))


# single-input ops whose output values are their input's, which ONNX Runtime moves a DQ across
_DQ_PROPAGATES = ("Transpose", "Reshape", "Squeeze", "Unsqueeze")


def _params(g) -> int:
    """Initializer elements, without the Q/DQ scales and zero points, a Pad's pad widths and the
    quantized scalar constants of rewritten ops (HardSwish's 3)."""
    qparam_inputs = {
        n.input[k]
        for n in g.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Pad")
        for k in (1, 2)
        if len(n.input) > k
    }
    scalars = {i.name for i in g.initializer if not i.dims}
    qparam_inputs |= {n.input[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in scalars}
    return sum(int(np.prod(i.dims)) if i.dims else 1 for i in g.initializer if i.name not in qparam_inputs)


def _node_macs(gr: _Graph, n, real_w=None) -> int:
    """Multiply-accumulates of one compute node; ``real_w``: a padded Conv's weight shape before padding."""
    macs = 0
    out_shape = gr.shapes.get(n.output[0]) if n.output else None
    w = gr.weight_shape(n.input[1]) if len(n.input) > 1 else None
    if real_w and out_shape and len(out_shape) > 1:
        out_shape, w = [out_shape[0], real_w[0], *out_shape[2:]], real_w
    if n.op_type == "Conv" and out_shape and w:
        macs = _num(out_shape) * _num(w[1:])
    elif n.op_type == "ConvTranspose" and w and gr.shapes.get(n.input[0]):
        macs = _num(gr.shapes[n.input[0]]) * _num(w[1:])
    elif n.op_type in ("Gemm", "MatMul") and out_shape and gr.shapes.get(n.input[0]):
        a = gr.shapes[n.input[0]]
        trans_a = next((x.i for x in n.attribute if x.name == "transA"), 0)
        k = a[-2] if trans_a else a[-1]
        if not (isinstance(k, int) and k > 0) and w and len(w) >= 2:
            # the input's last dim can be symbolic (a Reshape to a computed shape: attention's
            # context before the output projection); a weight states K
            trans_b = next((x.i for x in n.attribute if x.name == "transB"), 0)
            k = w[-1] if trans_b else w[-2]
        macs = _num(out_shape) * (k if isinstance(k, int) and k > 0 else 1)
    return macs


_NO_QDQ = "fp32 model: no QuantizeLinear/DequantizeLinear in the graph"


def _weighted_precision(gr: _Graph, n) -> tuple[str, str | None]:
    act_q = gr.from_dq(n.input[0])
    w_q = len(n.input) > 1 and gr.from_dq(n.input[1])
    if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] not in gr.inits:
        # activation x activation (attention scores): int8 when both arrive dequantized; ONNX
        # Runtime runs MatMulIntegerToFloat (float out) or QLinearMatMul (re-quantized out)
        if gr.from_dq_through(n.input[0]) and gr.from_dq_through(n.input[1]):
            return "int8", None
        if gr.has_qdq:
            return "fp32", (
                "MatMul of two activations (e.g. attention) with an fp32 input (no DequantizeLinear "
                "before it, e.g. a softmax output): runs in float"
            )
    if act_q and w_q:
        return "int8", None
    if not gr.has_qdq:
        return "fp32", _NO_QDQ
    if n.op_type not in QUANTIZABLE_BY_EDGEPRUNE:
        return "fp32", f"{n.op_type} has no int8 path in edgeprune's quantizer; kept fp32"
    if not w_q:
        return "fp32", "weight is an fp32 tensor (no DequantizeLinear): layer was not quantized"
    return "fp32", "activation input is fp32 (no DequantizeLinear before it)"


def _node_precision(gr: _Graph, n) -> tuple[str, str | None]:
    """(precision, why it is not int8) of one compute node."""
    float_inputs = [
        t for t in n.input if t and gr.types.get(t, TensorProto.FLOAT) in (TensorProto.FLOAT, TensorProto.FLOAT16)
    ]
    if float_inputs and all(gr.types.get(t) == TensorProto.FLOAT16 for t in float_inputs):
        return "fp16", None
    if n.op_type in WEIGHTED:
        return _weighted_precision(gr, n)
    if n.op_type in ("Relu", "Clip") and gr.fused_activation(n):
        return "int8", None  # folded into the int8 conv/gemm before it
    dq = [gr.from_dq(t) for t in float_inputs]
    if float_inputs and all(dq) and gr.requantized(n.output[0]):
        return "int8", None
    if float_inputs and all(dq):
        return "fp32", (
            f"{n.op_type} inputs are int8 but its output is not re-quantized (no QuantizeLinear "
            "after it), so runtimes compute it in float"
        )
    if not gr.has_qdq:
        return "fp32", _NO_QDQ
    return "fp32", (
        f"{n.op_type} inputs are fp32 (no DequantizeLinear before them); edgeprune quantizes "
        "only Conv/Gemm inputs and outputs, so this op runs in float"
    )


def _int8_summary(layers: list[dict]) -> dict:
    """Counts of int8 compute and weighted ops, MAC coverage and why the rest stayed fp32."""
    total_macs = sum(l["macs"] for l in layers)
    int8_macs = sum(l["macs"] for l in layers if l["precision"] == "int8")
    weighted = [l for l in layers if l["op"] in WEIGHTED]
    return {
        "compute_ops": len(layers),
        "int8_ops": sum(1 for l in layers if l["precision"] == "int8"),
        "weighted_ops": len(weighted),
        "weighted_int8_ops": sum(1 for l in weighted if l["precision"] == "int8"),
        "coverage_macs": (int8_macs / total_macs) if total_macs else 0.0,
        "fp32_ops": [
            {"name": l["name"], "op": l["op"], "reason": l["reason"]} for l in layers if l["precision"] == "fp32"
        ],
    }


def _inspect_file(path: Path) -> dict:
    model = read_onnx(path)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    gr = _Graph.of(inferred.graph)
    padded = padding_of(model).get("layers", {})
    ops: dict[str, int] = {}
    layers = []
    pad_macs = pad_params = 0
    for n in inferred.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
        if n.op_type not in COMPUTE:
            continue
        precision, reason = _node_precision(gr, n)
        real_w = padded.get(n.name) if n.op_type == "Conv" else None
        layers.append(
            {
                "name": n.name or n.output[0],
                "op": n.op_type,
                "macs": int(_node_macs(gr, n, real_w)),
                "precision": precision,
                "reason": reason,
            }
        )
        if real_w:  # the zero channels apart: parameters and MACs are the model's
            layers[-1]["padded_macs"] = int(_node_macs(gr, n))
            pad_macs += layers[-1]["padded_macs"] - layers[-1]["macs"]
            w = gr.weight_shape(n.input[1]) or real_w
            pad_params += _num(w) - _num(real_w)
            if len(n.input) > 2 and n.input[2]:
                pad_params += w[0] - real_w[0]
    info = {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "metadata": {p.key: p.value for p in model.metadata_props},
        "inputs": [
            {"name": i.name, "shape": _dims(i), "dtype": _DTYPES.get(i.type.tensor_type.elem_type, "?")}
            for i in model.graph.input
            if i.name not in gr.inits
        ],
        "outputs": [
            {"name": o.name, "shape": _dims(o), "dtype": _DTYPES.get(o.type.tensor_type.elem_type, "?")}
            for o in model.graph.output
        ],
        "ops": dict(sorted(ops.items())),
        "params": int(_params(inferred.graph)) - pad_params,
        "macs": int(sum(l["macs"] for l in layers)),
        "int8": _int8_summary(layers),
        "layers": layers,
    }
    if padded:
        groups = padding_of(model)["groups"]
        info["padding"] = {"groups": groups, "params": pad_params, "macs": pad_macs}
    return info


# kernels ONNX Runtime runs for a Conv/Gemm/MatMul, by op type (any domain)
INT8_KERNELS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "QGemm",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "QAttention",
        "QLinearConvTranspose",
    }
)
FLOAT_KERNELS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul", "NhwcFusedConv", "Attention"}
)


def _optimized_graph(path: Path, threads: int) -> tuple[onnx.ModelProto, str]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opt_path = Path(tmp) / "optimized.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(opt_path)
        so.log_severity_level = 3  # ORT warns that an NCHWc-optimized file is host-specific: we only read it
        so.intra_op_num_threads = threads
        try:
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{path}: ONNX Runtime cannot load it ({msg[:200]})") from None
        return onnx.load(str(opt_path), load_external_data=False), ort.__version__


def _zp_dtype(node, inits: dict):
    """The zero point type of a Q/DQ node ('uint8', 'int8', ...) or None."""
    if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
        return None
    zp = inits.get(node.input[2])
    return None if zp is None else _DTYPES.get(zp.data_type, str(zp.data_type))


def _fallback_reason(layer: dict, kernel, graph) -> str:
    """Why ONNX Runtime runs ``kernel`` (a float node of its optimized graph) for ``layer``."""
    if layer["precision"] != "int8":
        return layer["reason"] or f"{layer['precision']} in the file"
    if kernel is None:
        return "ONNX Runtime removed or merged the node"
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    users = [n for n in graph.node if kernel.output and kernel.output[0] in n.input]
    in_dt = _zp_dtype(producer.get(kernel.input[0]), inits)
    out_dt = _zp_dtype(users[0], inits) if len(users) == 1 else None
    if out_dt is None:
        return f"the {layer['op']} output is not quantized right after it, so ONNX Runtime keeps a float kernel"
    if in_dt != out_dt:
        return (
            f"activation types differ around it (input {in_dt}, output {out_dt}) after ONNX Runtime's "
            "int8->uint8 rewrite; write uint8 activations (export without --target, or an x86 target)"
        )
    if in_dt == "int8":
        return (
            f"int8 activations: ONNX Runtime on this CPU fuses QDQ {layer['op']} only with uint8 activations "
            "(export without --target, or with an x86 target)"
        )
    return f"ONNX Runtime has no int8 kernel for this {layer['op']} pattern (runs float {kernel.op_type})"


_FUSABLE = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Add", "Sum")


def _origin(kernel, producer: dict, weighted: set[str]) -> str | None:
    """The file's Conv/Gemm/MatMul a runtime kernel computes, or None (a node ONNX Runtime added).

    ORT keeps a fused node's name (``_token_N`` or ``/SomethingFusion`` appended); its NCHWc
    transformer names a conv after the tensor its fused chain (conv, activation, sum) outputs.
    """
    base = re.sub(r"_token_\d+$", "", kernel.name.removeprefix("fused "))
    while base:  # fusions append "/MatMulAddFusion", "/MatmulTransposeFusion/"... to the node's name
        if base in weighted:
            return base
        base = base.rsplit("/", 1)[0] if "/" in base else ""
    todo = [producer.get(re.sub(r"_nchwc$", "", kernel.name))]
    for _ in range(6):  # walk back through fused activations / sums to the conv
        node = todo.pop(0) if todo else None
        if node is None:
            return None
        name = node.name or node.output[0]
        if name in weighted:
            return name
        if node.op_type in _FUSABLE:
            todo += [producer.get(t) for t in node.input]
    return None


def ort_kernels(path: str | os.PathLike, layers: list[dict] | None = None, threads: int = 1) -> dict:
    """The kernel ONNX Runtime (CPU) runs for every Conv/Gemm/MatMul of the file, int8 or float, and why.

    ``layers`` are ``inspect_onnx(path)["layers"]`` (computed if omitted). ``extra_kernels`` lists
    compute kernels ORT added that the file has no node for (e.g. a BatchNormalization run as a conv).
    """
    path = Path(path)
    if layers is None:
        layers = inspect_onnx(path)["layers"]
    opt, version = _optimized_graph(path, threads)
    producer = {o: n for n in read_onnx(path).graph.node for o in n.output}
    weighted = [l for l in layers if l["op"] in WEIGHTED]
    names = {l["name"] for l in weighted}
    matched, extra = {}, []
    for k in (n for n in opt.graph.node if n.op_type in INT8_KERNELS | FLOAT_KERNELS):
        origin = _origin(k, producer, names)
        if origin is None or origin in matched:
            extra.append({"name": k.name, "kernel": f"{k.domain + '.' if k.domain else ''}{k.op_type}"})
        else:
            matched[origin] = k
    rows = []
    for l in weighted:
        k = matched.get(l["name"])
        int8 = k is not None and k.op_type in INT8_KERNELS
        kernel = None if k is None else f"{k.domain + '.' if k.domain else ''}{k.op_type}"
        reason = None if int8 else _fallback_reason(l, k, opt.graph)
        rows.append(
            {
                "name": l["name"],
                "op": l["op"],
                "macs": l["macs"],
                "file_precision": l["precision"],
                "kernel": kernel,
                "int8": int8,
                "reason": reason,
            }
        )
    total = sum(r["macs"] for r in rows)
    return {
        "engine": f"onnxruntime {version} CPUExecutionProvider (ORT_ENABLE_ALL)",
        "weighted_ops": len(rows),
        "int8_weighted_ops": sum(r["int8"] for r in rows),
        "coverage_macs": (sum(r["macs"] for r in rows if r["int8"]) / total) if total else 0.0,
        "layers": rows,
        "extra_kernels": extra,
        # quantized in the file, float in the runtime: the cases that cost speed
        "float_fallbacks": [r for r in rows if r["file_precision"] == "int8" and not r["int8"]],
    }
