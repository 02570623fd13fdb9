"""``inspect_tflite(path)``: what is in a TFLite file: ops, params, MACs, int8 coverage, sparse tensors.

Consumes: a ``.tflite`` file (any converter; read with the ``tflite`` flatbuffer accessors after
the checks of ``tflite_family.read_model``). Produces: a JSON-ready dict with the same top-level
keys as ``inspect_onnx`` (size_bytes, params, macs, ops, int8, inputs, outputs, metadata, layers)
plus ``sparse_tensors``, ``xnnpack`` (the ops LiteRT's default XNNPACK delegate takes and the
ones left to the builtin kernels) and ``edgeprune_runtime`` (whether edgeprune's runtime runs the
file, and per operator kind how many run int8 and how many on sparse kernels, from a load of the
file by the runtime itself).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from .tflite_family import TFLiteFileError, metadata, read_model, schema_module

# Builtin ops the XNNPACK delegate of LiteRT 2.x accepts (fp32, and int8 where marked in its
# docs); DENSIFY and DEQUANTIZE of constant weights are folded by the delegate at load time.
XNNPACK_OPS = {
    "ABS", "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CEIL", "CONCATENATION", "CONV_2D", "DENSIFY",
    "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DIV", "ELU", "FLOOR", "FULLY_CONNECTED", "GELU",
    "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM", "MUL", "NEG", "PAD",
    "PRELU", "QUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "ROUND", "RSQRT",
    "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "STRIDED_SLICE",
    "SUB", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
}  # fmt: skip
# ...except, in int8, a BATCH_MATMUL whose second operand has a nonzero zero point: LiteRT 2.3's
# XNNPACK delegate leaves it to the builtin kernel (timed at 12x128x32x128: 1.08 ms with and
# without the delegate; 67 us delegated when that zero point is 0, as our quantizer writes it)
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8"}


def _names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _tensor_info(t) -> dict:
    shape = [int(s) for s in t.ShapeAsNumpy()] if t.ShapeLength() else []
    info = {"name": t.Name().decode(errors="replace"), "shape": shape, "dtype": TYPE_NAMES.get(t.Type(), str(t.Type()))}
    q = t.Quantization()
    if q is not None and q.ScaleLength():
        info["scale"] = [float(s) for s in q.ScaleAsNumpy()]
        info["zero_point"] = [int(z) for z in q.ZeroPointAsNumpy()]
        info["quantized_dimension"] = int(q.QuantizedDimension())
    return info


def _xnnpack_refuses(op_name: str, ins: list[dict]) -> bool:
    """An op of XNNPACK_OPS the delegate still leaves to LiteRT's builtin kernels."""
    if op_name == "BATCH_MATMUL" and len(ins) > 1 and ins[0]["dtype"] == "int8":
        return any(z != 0 for z in ins[1].get("zero_point", [0]))
    return False


def _macs(op_name: str, ins: list[dict], outs: list[dict]) -> int:
    out = outs[0]["shape"] if outs else []
    n_out = int(np.prod(out)) if out else 0
    if op_name == "CONV_2D" and len(ins) > 1 and len(ins[1]["shape"]) == 4:
        _, kh, kw, ci = ins[1]["shape"]
        return n_out * kh * kw * ci
    if op_name == "DEPTHWISE_CONV_2D" and len(ins) > 1 and len(ins[1]["shape"]) == 4:
        return n_out * ins[1]["shape"][1] * ins[1]["shape"][2]
    if op_name in ("FULLY_CONNECTED", "BATCH_MATMUL") and len(ins) > 1 and ins[1]["shape"]:
        k = ins[1]["shape"][-1] if op_name == "FULLY_CONNECTED" else ins[0]["shape"][-1]
        return n_out * k
    return 0


def inspect_tflite(path: str | os.PathLike) -> dict:
    """The report of ``path``; a file whose tables point outside it (truncated, corrupt) raises
    TFLiteFileError (a UserError) naming it: ``read_model`` checks the root, the rest is checked here
    as it is read."""
    p = Path(path)
    data = p.read_bytes()
    m = read_model(data, str(p))
    try:
        return _inspect(p, data, m)
    except UserError:
        raise
    except Exception as e:  # a flatbuffer offset or length past the end, an index out of its table
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TFLiteFileError(f"{p}: truncated or corrupt TFLite file ({msg[:200]}); re-export it") from None


def _inspect(p: Path, data: bytes, m) -> dict:
    tflite = schema_module()
    op_names = _names(tflite.BuiltinOperator)
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        codes.append((op_names.get(code, f"CUSTOM:{oc.CustomCode()}"), int(oc.Version())))
    g = m.Subgraphs(0)
    tensors = [_tensor_info(g.Tensors(i)) for i in range(g.TensorsLength())]
    sparse = []
    const = set()
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        if t.Buffer() and m.Buffers(t.Buffer()).DataLength():
            const.add(i)
        sp = t.Sparsity()
        if sp is not None:
            nbytes = m.Buffers(t.Buffer()).DataLength() if t.Buffer() else 0
            blocks = [int(b) for b in sp.BlockMapAsNumpy()] if sp.BlockMapLength() else []
            sparse.append(
                {"name": tensors[i]["name"], "shape": tensors[i]["shape"], "bytes": nbytes, "block_map": blocks}
            )
    ops: dict[str, int] = {}
    layers, params_seen = [], set()
    params = total = int8_macs = 0
    xnn_no: dict[str, int] = {}
    for j in range(g.OperatorsLength()):
        op = g.Operators(j)
        name, _ = codes[op.OpcodeIndex()]
        ops[name] = ops.get(name, 0) + 1
        ins_idx = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
        outs_idx = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
        ins = [tensors[i] for i in ins_idx if i >= 0]
        outs = [tensors[i] for i in outs_idx]
        if name not in XNNPACK_OPS or _xnnpack_refuses(name, ins):
            xnn_no[name] = xnn_no.get(name, 0) + 1
        if name in WEIGHTED or name in ("DENSIFY", "DEQUANTIZE"):
            for i in ins_idx[1:] if name in WEIGHTED else ins_idx:
                if i in const and i not in params_seen:
                    params_seen.add(i)
                    params += int(np.prod(tensors[i]["shape"])) if tensors[i]["shape"] else 1
        macs = _macs(name, ins, outs)
        if macs:
            precision = ins[0]["dtype"] if ins else "float32"
            layers.append({"name": outs[0]["name"] if outs else "", "op": name, "macs": macs, "precision": precision})
            total += macs
            int8_macs += macs if precision == "int8" else 0
    compute = [lay for lay in layers]
    return {
        "path": str(p),
        "size_bytes": len(data),
        "version": int(m.Version()),
        "opset": None,
        "inputs": [tensors[int(i)] for i in g.InputsAsNumpy()],
        "outputs": [tensors[int(i)] for i in g.OutputsAsNumpy()],
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "op_versions": {n: v for n, v in codes},
        "params": params,
        "macs": total,
        "int8": {
            "coverage_macs": int8_macs / total if total else 0.0,
            "weighted_ops": len(compute),
            "weighted_int8_ops": sum(1 for lay in compute if lay["precision"] == "int8"),
            "int8_ops": sum(1 for lay in compute if lay["precision"] == "int8"),
            "compute_ops": len(compute),
            "fp32_ops": [
                {"op": lay["op"], "name": lay["name"], "reason": "float input"}
                for lay in compute
                if lay["precision"] != "int8"
            ],
        },
        "sparse_tensors": sparse,
        "xnnpack": {"delegated_ops": sum(ops.values()) - sum(xnn_no.values()), "builtin_only": xnn_no},
        "edgeprune_runtime": edgeprune_runtime(data),
        "metadata": {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata(p).items()},
        "layers": layers,
    }


def edgeprune_runtime(data: bytes) -> dict:
    """Whether edgeprune's runtime runs the file, asked of the runtime itself (a load, no run): the
    kernel path, the activation arena, and per operator kind how many run int8 and how many on
    sparse kernels; or, when it does not, its one-line reason (the first operator or type it
    does not run)."""
    try:
        from .. import runtime as ep_runtime

        m = ep_runtime.load(data)
    except ImportError as e:  # the compiled extension is not built in this install
        return {"runs": False, "reason": f"edgeprune's runtime is not built here ({e})"}
    except UserError as e:
        return {"runs": False, "reason": str(e).removeprefix("<bytes>: ")}
    kinds: dict[str, dict] = {}
    for kind, label in m.operators:
        k = kinds.setdefault(kind, {"ops": 0, "int8": 0, "sparse": 0})
        k["ops"] += 1
        k["int8"] += " int8 " in f" {label} "
        k["sparse"] += " sparse" in label
    return {"runs": True, "isa": m.isa, "arena_bytes": m.arena_bytes, "operators": kinds}
