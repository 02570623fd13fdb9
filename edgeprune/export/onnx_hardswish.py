"""HardSwish of a QDQ int8 ONNX graph as two int8 kernels of ONNX Runtime instead of four float ops.

Consumes: the QDQ ``onnx.ModelProto`` that ``onnx.quantize_onnx`` writes, where a quantized
HardSwish is ``DequantizeLinear -> HardSwish -> QuantizeLinear``.
Produces: the same graph with each such HardSwish written as ``x * g / 6``, ``g = relu6(x + 3)``:

    DQ(x) -> Add(DQ(3)) -> Q(6/255) -> DQ(1/255) -> Mul(DQ(x), .) -> Q(out)

ONNX Runtime fuses the Add into QLinearAdd (its uint8/int8 saturation is the relu6: the gate's grid
covers exactly [0, 6]) and the Mul into QLinearMul, and reading the gate's codes at 1/255 instead
of 6/255 is the division by 6. A squeeze-excite gate's hard sigmoid quantized at 1/255 over [0, 1]
has the same codes as relu6(x + 3) at 6/255, so it becomes the Add and its QuantizeLinear alone
(exact). The metadata key ``edgeprune_hardswish_gates`` counts the rewrites.

Why: ONNX Runtime has no int8 HardSwish, so the plain form runs as DequantizeLinear, HardSigmoid,
Mul and QuantizeLinear in float, four passes over four times the bytes: on MobileNetV3-Small that
glue was a third of the int8 run, and the rewrite took the int8 file from 2.12 to 1.82 ms (fp32:
2.19 ms). The gate is rounded to 1/255 on a fixed grid (no calibration needed: its range is [0, 1]),
so each output moves by at most |x| / 510 on top of its own rounding. The fake-quant twin computes
the same (``quant.fakequant.GatedHardswish``), so the file still equals the twin; the TFLite file
keeps HARD_SWISH, an int8 kernel of LiteRT's own.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_meta import set_metadata

METADATA_KEY = "edgeprune_hardswish_gates"


def split_hardswish(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every quantized HardSwish and hard-sigmoid gate rewritten (see the module
    docstring); in place."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    rewrites: dict[str, list] = {}
    removed: set[str] = set()
    for n in g.node:
        dq, users = producer.get(n.input[0]) if n.input else None, consumers.get(n.output[0], [])
        if n.op_type not in ("HardSwish", "HardSigmoid") or dq is None or dq.op_type != "DequantizeLinear":
            continue
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or n.output[0] in outputs:
            continue
        zero = _const(inits, dq.input[2] if len(dq.input) > 2 else "")
        if zero is None or zero.size != 1 or zero.dtype not in (np.uint8, np.int8):
            continue
        t = f"{n.name or n.output[0]}_gate{len(rewrites)}"
        if n.op_type == "HardSwish":
            rewrites[n.name] = _gated(n, t, zero.dtype, g)
        elif _is_gate(n, users[0], inits, zero.dtype):
            rewrites[n.name] = _gate_only(n, users[0], t, zero.dtype, g)
            removed.add(users[0].name)
    if rewrites:
        nodes = []
        for n in g.node:
            if n.name not in removed:
                nodes += rewrites.get(n.name, [n])
        del g.node[:]
        g.node.extend(nodes)
        set_metadata(model, {METADATA_KEY: str(len(rewrites))})
    return model


def _const(inits, name: str):
    return numpy_helper.to_array(inits[name]) if name in inits else None


def _is_gate(hsig, q, inits, dtype) -> bool:
    """A PyTorch hard sigmoid (relu6(x + 3) / 6) quantized on the [0, 1] grid of 1/255 (a
    squeeze-excite gate's point): its codes are those of relu6(x + 3) at 6/255."""
    attrs = {a.name: helper.get_attribute_value(a) for a in hsig.attribute}
    if not np.isclose(attrs.get("alpha", 0.2), 1 / 6) or attrs.get("beta", 0.5) != 0.5:
        return False
    scale, zero = _const(inits, q.input[1]), _const(inits, q.input[2] if len(q.input) > 2 else "")
    if scale is None or zero is None or scale.size != 1 or zero.size != 1 or zero.dtype != dtype:
        return False
    return np.float32(scale) == np.float32(1 / 255) and int(zero) == (0 if dtype == np.uint8 else -128)


def _three(g, t: str, dtype) -> tuple[str, list]:
    """The grid's zero point, and the constant 3 as DequantizeLinear inputs (code 255 at 3/255)."""
    lo = 0 if dtype == np.uint8 else -128  # the grid's code for 0
    for suffix, value, dt in (("_zero", lo, dtype), ("_three", lo + 255, dtype), ("_three_scale", 3 / 255, np.float32)):
        g.initializer.append(numpy_helper.from_array(np.array(value, dtype=dt), t + suffix))
    return t + "_zero", [t + "_three", t + "_three_scale", t + "_zero"]


def _scale(g, name: str, value: float) -> str:
    g.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
    return name


def _add_three(x: str, t: str, three: list) -> list:
    return [
        helper.make_node("DequantizeLinear", three, [t + "_three_dq"], name=t + "_three_DequantizeLinear"),
        helper.make_node("Add", [x, t + "_three_dq"], [t + "_sum"], name=t + "_Add"),
    ]


def _gate_only(hsig, q, t: str, dtype, g) -> list:
    """Nodes replacing a gate's HardSigmoid -> QuantizeLinear: Add(3) -> QuantizeLinear at 6/255.
    The readers' DequantizeLinear (1/255) is unchanged: reading the codes at 1/255 divides by 6."""
    zero, three = _three(g, t, dtype)
    quant = helper.make_node("QuantizeLinear", [t + "_sum", _scale(g, t + "_scale", 6 / 255), zero], list(q.output))
    quant.name = q.name
    return _add_three(hsig.input[0], t, three) + [quant]


def _gated(hs, t: str, dtype, g) -> list:
    """The nodes replacing HardSwish ``hs`` (its input and output names kept)."""
    zero, three = _three(g, t, dtype)
    x = hs.input[0]
    return _add_three(x, t, three) + [
        helper.make_node(
            "QuantizeLinear", [t + "_sum", _scale(g, t + "_scale", 6 / 255), zero], [t + "_q"], name=t + "_Q"
        ),
        helper.make_node(
            "DequantizeLinear", [t + "_q", _scale(g, t + "_by6", 1 / 255), zero], [t + "_g"], name=t + "_DQ"
        ),
        helper.make_node("Mul", [x, t + "_g"], [hs.output[0]], name=t + "_Mul"),
    ]
