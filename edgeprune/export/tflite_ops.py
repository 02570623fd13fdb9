"""The per-op lowerings of ONNX nodes to TFLite builtin ops (the registry ``HANDLERS``).

Consumes: a ``tflite_lower.Lowering`` (values, constants, layouts, quantization points) and one
ONNX node. Produces: TFLite operators appended to the lowering's model and the node's outputs
bound to TFLite tensors. Convs, FCs, adds, muls, means, pools, concats and reshapes run int8
when the lowering's rules allow (see ``tflite_lower``); every other op runs in float.
A new lowering is one function here plus its row in ``HANDLERS``.
"""

from __future__ import annotations

import functools

import numpy as np

from .tflite_lower import ACT, NHWC, SAME, VALID, Lowering, Val, _attr, unsupported
from .tflite_schema import OP, Quant


# ---- helpers ------------------------------------------------------------------------------------
def clip_bounds(lw: Lowering, node) -> tuple[float, float]:
    lo, hi = _attr(node, "min", -np.inf), _attr(node, "max", np.inf)
    if len(node.input) > 1 and node.input[1]:
        lo = float(lw.consts[node.input[1]])
    if len(node.input) > 2 and node.input[2]:
        hi = float(lw.consts[node.input[2]])
    return float(lo), float(hi)


def act_of(lw: Lowering, node) -> str | None:
    """The fused-activation name a Relu/Clip node stands for, or None."""
    if node.op_type == "Relu":
        return "RELU"
    if node.op_type == "Clip":
        return {(0.0, 6.0): "RELU6", (0.0, np.inf): "RELU", (-1.0, 1.0): "RELU_N1_TO_1"}.get(clip_bounds(lw, node))
    return None


def fuse_act(lw: Lowering, name: str) -> tuple[int, str]:
    """(fused activation code, the tensor the op's result stands for) after an optional Relu/Clip."""
    users = lw.consumers.get(name, [])
    if len(users) == 1 and name not in lw.graph_outputs:
        a = act_of(lw, users[0])
        if a is not None:
            lw.skip.add(users[0].name)
            return ACT[a], users[0].output[0]
    return 0, name


def int8_act(act: int, q: Quant | None) -> int:
    """The fused activation for an int8 output at ``q``: RELU6 whose upper bound lies beyond the
    int8 range clamps nothing there, and TFLite rejects a bound that overflows int32 (tiny scales),
    so it becomes RELU (the same int8 results)."""
    if q is None or act != ACT["RELU6"]:
        return act
    return ACT["RELU"] if 6.0 / float(q.scale[0]) + float(q.zero_point[0]) >= 127 else act


def bind_all(lw: Lowering, names, val: Val) -> Val:
    for n in names:
        lw.bind(n, val)
    return val


def tmp(lw: Lowering, name: str, shape, like: Val | None = None, quant: Quant | None = None, dtype=np.float32) -> int:
    """A new intermediate tensor that has no ONNX name (explicit pads, decompositions)."""
    return lw.m.tensor(name, shape, 9 if quant is not None else dtype, quant)


def transpose_version(rank: int, int8: bool = False) -> int:
    """TRANSPOSE's version as TFLite's converter sets it: 6 past rank 5, 4 past rank 4, 2 for int8."""
    return 6 if rank > 5 else 4 if rank > 4 else 2 if int8 else 1


def float_const(lw: Lowering, name: str, value, rank: int, nhwc: bool) -> int:
    """A float constant broadcast-ready for a value of ``rank`` stored NHWC or not."""
    v = np.asarray(value, dtype=np.float32)
    if nhwc and v.ndim > 0:
        v = v.reshape((1,) * (rank - v.ndim) + v.shape).transpose(NHWC)
    return lw.m.const(name, v)


def pad_mode(in_hw, k, s, d, pads) -> tuple[int, list[int] | None]:
    """(SAME or VALID, explicit [top, left, bottom, right] pads to add first, or None).

    TF's SAME puts the odd pixel at the end; PyTorch pads symmetrically. SAME is used only when it
    pads exactly like the ONNX node, else an explicit PAD precedes a VALID op.
    """
    if not any(pads):
        return VALID, None
    same = True
    for i in range(2):
        eff = (k[i] - 1) * d[i] + 1
        out = -(-in_hw[i] // s[i])
        total = max((out - 1) * s[i] + eff - in_hw[i], 0)
        onnx_out = (in_hw[i] + pads[i] + pads[i + 2] - eff) // s[i] + 1
        if onnx_out != out or (pads[i], pads[i + 2]) != (total // 2, total - total // 2):
            same = False
    return (SAME, None) if same else (VALID, list(pads))


def explicit_pad(lw: Lowering, name: str, x: Val, pads: list[int]) -> Val:
    t = lw.m.tensors[x.index]
    n, h, w, c = t.shape
    shape = [n, h + pads[0] + pads[2], w + pads[1] + pads[3], c]
    out = tmp(lw, f"{name}_pad", shape, quant=t.quant, dtype=np.float32)
    paddings = np.array([[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]], dtype=np.int32)
    lw.m.op(OP.PAD, [x.index, lw.m.const("paddings", paddings)], [out], version=2 if t.quant else 1)
    return Val(out, True)


# ---- conv / fc ----------------------------------------------------------------------------------
def _conv_weights(lw: Lowering, w: str, bias: str | None, int8: bool, in_scale, depthwise: bool):
    """(weight array, weight Quant, bias array, bias Quant) in TFLite layout."""
    perm = (1, 2, 3, 0) if depthwise else (0, 2, 3, 1)
    dim = 3 if depthwise else 0
    cout = lw.consts[w].shape[0]
    if not int8:
        b = lw.consts[bias].astype(np.float32) if bias else np.zeros(cout, np.float32)
        return lw.consts[w].astype(np.float32).transpose(perm), None, b, None
    q, wq, bq, bquant = _int8_params(lw, w, bias, in_scale, cout, dim)
    return q.transpose(perm), wq, bq, bquant


def _weighted_int8(lw: Lowering, x: str, w: str, bias: str | None, q: Quant | None) -> bool:
    """A conv/FC runs int8 when its input is int8, its weights and bias are quantized constants
    (symmetric weights) and a quantization point follows it."""
    return (
        q is not None
        and lw.is_int8(lw.vals[x])
        and w in lw.qconsts
        and (bias is None or bias in lw.qconsts)
        and not np.any(lw.qconsts[w][2])
    )


def _int8_params(lw: Lowering, w: str, bias: str | None, in_scale, cout: int, dim: int):
    """(int8 weights as stored in ONNX, their Quant, int32 bias, its Quant at s_in * s_w)."""
    q, ws, _, _ = lw.qconsts[w]
    ws = np.asarray(ws, np.float32).reshape(-1)
    wq = Quant(ws, np.zeros(ws.size, np.int64), dim if ws.size > 1 else 0)
    if bias:
        bq, bs, _, _ = lw.qconsts[bias]
        bs = np.asarray(bs, np.float32).reshape(-1)
    else:
        bq = np.zeros(cout, np.int32)
        bs = (np.float32(in_scale) * ws).astype(np.float32)
    return q, wq, bq.astype(np.int32), Quant(bs, np.zeros(bs.size, np.int64), 0)


def onnx_pads(node, in_hw, k, s, d) -> list:
    """The explicit [top, left, bottom, right] pads of a Conv or pool: its ``pads``, or what its
    ``auto_pad`` means (VALID: none; SAME_UPPER / SAME_LOWER: output = ceil(input / stride), the odd
    pixel at the end / the start; SigLIP's patch embedding is written with VALID)."""
    mode = _attr(node, "auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode == "NOTSET":
        return list(_attr(node, "pads", [0, 0, 0, 0]))
    if mode == "VALID":
        return [0, 0, 0, 0]
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise unsupported(node, f"auto_pad {mode}")
    begin, end = [], []
    for n, kk, ss, dd in zip(in_hw, k, s, d):
        total = max(0, (-(-n // ss) - 1) * ss + (kk - 1) * dd + 1 - n)
        small = total // 2
        begin.append(small if mode == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


def conv(lw: Lowering, node) -> None:
    x, w = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if w not in lw.consts or lw.consts[w].ndim != 4:
        raise unsupported(node, "only 2-D convolutions with constant weights")
    act, final = fuse_act(lw, node.output[0])
    q = lw.out_quant(final)
    int8 = _weighted_int8(lw, x, w, bias, q)
    xv = lw.get(x, nhwc=True, want_float=not int8)
    k = list(lw.consts[w].shape[2:])
    s = list(_attr(node, "strides", [1, 1]))
    d = list(_attr(node, "dilations", [1, 1]))
    in_hw = lw.shape(x)[2:]
    pads = onnx_pads(node, in_hw, k, s, d)
    mode, explicit = pad_mode(in_hw, k, s, d, pads)
    if explicit is not None:
        xv = explicit_pad(lw, node.output[0], xv, explicit)
    group = int(_attr(node, "group", 1))
    cin, cout = lw.shape(x)[1], lw.consts[w].shape[0]
    in_scale = lw.quant_of(xv).scale[0] if int8 else None
    act = int8_act(act, q if int8 else None)
    out = lw.new(final, True, quant=q if int8 else None)
    common = {"Padding": mode, "StrideW": s[1], "StrideH": s[0], "FusedActivationFunction": act}
    dil = {"DilationWFactor": d[1], "DilationHFactor": d[0]}
    if group == cin and group > 1 and lw.consts[w].shape[1] == 1:
        wa, wq, ba, bq = _conv_weights(lw, w, bias, int8, in_scale, True)
        ins = [xv.index, lw.m.const(f"{w}", wa, wq), lw.m.const(f"{bias or w + '_bias'}", ba, bq)]
        opts = {**common, **dil, "DepthMultiplier": cout // cin}
        version = 3 if int8 else (2 if d != [1, 1] else 1)
        lw.m.op(OP.DEPTHWISE_CONV_2D, ins, [out.index], ("DepthwiseConv2DOptions", opts), version, node.name)
    else:  # grouped convs too: the filter's input depth is C_in / groups (version 6)
        wa, wq, ba, bq = _conv_weights(lw, w, bias, int8, in_scale, False)
        ins = [xv.index, lw.m.const(f"{w}", wa, wq), lw.m.const(f"{bias or w + '_bias'}", ba, bq)]
        version = 6 if group > 1 else (3 if int8 else 1)
        lw.m.op(OP.CONV_2D, ins, [out.index], ("Conv2DOptions", {**common, **dil}), version, node.name)
    bind_all(lw, {node.output[0], final}, out)


def conv_transpose(lw: Lowering, node) -> None:
    """Stride 1: the equivalent conv (flipped kernel, in/out swapped per group, pad k-1-p);
    otherwise TRANSPOSE_CONV (group 1): VALID, SAME where it crops as the pads do, else a larger
    VALID one and a crop (any pads and output_padding)."""
    import onnx

    x, w = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if w not in lw.consts or lw.consts[w].ndim != 4:
        raise unsupported(node, "only 2-D transposed convolutions with constant weights")
    wt = lw.consts[w].astype(np.float32)
    g = int(_attr(node, "group", 1))
    k, s = list(wt.shape[2:]), list(_attr(node, "strides", [1, 1]))
    d = list(_attr(node, "dilations", [1, 1]))
    pads = list(_attr(node, "pads", [0, 0, 0, 0]))
    if _attr(node, "output_shape", None):
        raise unsupported(node, "an output_shape attribute (give pads and output_padding instead)")
    out_pad = list(_attr(node, "output_padding", [0, 0]))
    if s == [1, 1]:
        cin, cout_g = wt.shape[0], wt.shape[1]
        wc = wt.reshape(g, cin // g, cout_g, *k).transpose(0, 2, 1, 3, 4).reshape(g * cout_g, cin // g, *k)
        name = f"{w}_as_conv"
        lw.consts[name] = np.ascontiguousarray(wc[:, :, ::-1, ::-1])
        cpads = [d[i % 2] * (k[i % 2] - 1) - pads[i] + (out_pad[i - 2] if i >= 2 else 0) for i in range(4)]
        if min(cpads) < 0:
            raise unsupported(node, f"pads {pads} larger than the kernel")
        attrs = {"group": g, "strides": [1, 1], "dilations": d, "pads": cpads}
        conv_node = onnx.helper.make_node(
            "Conv", [x, name] + ([bias] if bias else []), list(node.output), node.name, **attrs
        )
        return conv(lw, conv_node)
    if g != 1 or d != [1, 1]:
        raise unsupported(node, "grouped or dilated transposed convolution with stride > 1")
    in_hw, out_hw = lw.shape(x)[2:], lw.shape(node.output[0])[2:]
    full = [(in_hw[i] - 1) * s[i] + k[i] for i in range(2)]  # every input pixel's taps, uncropped
    crop = None
    if not any(pads) and not any(out_pad):
        mode = VALID
    elif all(out_hw[i] == in_hw[i] * s[i] for i in range(2)) and all(
        (pads[i], pads[i + 2]) == ((full[i] - out_hw[i]) // 2, full[i] - out_hw[i] - (full[i] - out_hw[i]) // 2)
        for i in range(2)
    ):
        mode = SAME  # TF's SAME crops the full result as these pads do
    else:
        # Output pixel o is pixel o + pad_begin of the full result; output_padding reaches past its
        # end, where only the bias lands (TRANSPOSE_CONV fills an output larger than the full result
        # so): a VALID TRANSPOSE_CONV as large as needed, then a STRIDED_SLICE
        mode = VALID
        crop = [max(full[i], pads[i] + out_hw[i]) for i in range(2)]
    xv = lw.get(x, nhwc=True, want_float=True)
    act, final = fuse_act(lw, node.output[0])
    out = lw.new(final, True)
    n, _, _, cout = lw.m.tensors[out.index].shape
    conv_out = out.index if crop is None else tmp(lw, f"{node.output[0]}_uncropped", [n, crop[0], crop[1], cout])
    oshape = lw.m.const("output_shape", np.array(lw.m.tensors[conv_out].shape, np.int32))
    ins = [oshape, lw.m.const(w, wt.transpose(1, 2, 3, 0)), xv.index]
    b = lw.consts[bias].astype(np.float32) if bias else np.zeros(wt.shape[1], np.float32)
    ins.append(lw.m.const(bias or f"{w}_bias", b))
    opts = {"Padding": mode, "StrideW": s[1], "StrideH": s[0], "FusedActivationFunction": act}
    lw.m.op(OP.TRANSPOSE_CONV, ins, [conv_out], ("TransposeConvOptions", opts), 4 if act else 3, node.name)
    if crop is not None:
        begin = np.array([0, pads[0], pads[1], 0], np.int32)
        end = begin + np.array([n, out_hw[0], out_hw[1], cout], np.int32)
        sl = [conv_out] + [
            lw.m.const(nm, v) for nm, v in (("begin", begin), ("end", end), ("strides", np.ones(4, np.int32)))
        ]
        lw.m.op(OP.STRIDED_SLICE, sl, [out.index], ("StridedSliceOptions", {}), 1, node.name)
    bind_all(lw, {node.output[0], final}, out)


def _bias_add(lw: Lowering, name: str, cout: int):
    """The Add right after a MatMul that adds a constant [cout] bias: (add node, bias name) or None."""
    users = lw.consumers.get(name, [])
    if len(users) != 1 or users[0].op_type != "Add" or name in lw.graph_outputs:
        return None
    add = users[0]
    other = add.input[1] if add.input[0] == name else add.input[0]
    if other in lw.consts and lw.consts[other].shape == (cout,):
        return add, other
    return None


def fully_connected(lw: Lowering, node) -> None:
    """Gemm (transA = 0, alpha = beta = 1) and MatMul by a constant 2-D matrix."""
    x, w = node.input[0], node.input[1]
    if w not in lw.consts or lw.consts[w].ndim != 2:
        return batch_matmul(lw, node)
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
            raise unsupported(node, "transA or alpha/beta != 1")
        trans = bool(_attr(node, "transB", 0))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        result = node.output[0]
    else:
        trans, bias, result = False, None, node.output[0]
    cout = lw.consts[w].shape[0 if trans else 1]
    if bias is None:
        found = _bias_add(lw, result, cout)
        if found is not None:
            lw.skip.add(found[0].name)
            bias, result = found[1], found[0].output[0]
    act, final = fuse_act(lw, result)
    q = lw.out_quant(final)
    int8 = _weighted_int8(lw, x, w, bias, q)
    xv = lw.get(x, nhwc=False, want_float=not int8)
    rank = len(lw.shape(x))
    if int8:
        qw, wq, ba, bquant = _int8_params(lw, w, bias, lw.quant_of(xv).scale[0], cout, 0)
        wa = qw if trans else qw.T  # [out, in]: per-channel scales stay on dimension 0
    else:
        wf = lw.consts[w].astype(np.float32)
        wa, wq = (wf if trans else wf.T), None
        ba = lw.consts[bias].astype(np.float32) if bias else np.zeros(cout, np.float32)
        bquant = None
    act = int8_act(act, q if int8 else None)
    out = lw.new(final, False, quant=q if int8 else None)
    ins = [xv.index, lw.m.const(w, np.ascontiguousarray(wa), wq), lw.m.const(bias or f"{w}_bias", ba, bquant)]
    keep = rank > 2
    opts = {"FusedActivationFunction": act, "KeepNumDims": keep}
    version = 5 if keep else (4 if int8 else 1)
    lw.m.op(OP.FULLY_CONNECTED, ins, [out.index], ("FullyConnectedOptions", opts), version, node.name)
    bind_all(lw, {node.output[0], result, final}, out)


def batch_matmul(lw: Lowering, node) -> None:
    """BATCH_MATMUL of two activations: int8 (version 2) when both are int8 and a QuantizeLinear
    follows the output, whose scale the output takes; float otherwise."""
    a = lw.get(node.input[0], nhwc=False)
    b = lw.get(node.input[1], nhwc=False)
    q = lw.out_quant(node.output[0])
    int8 = q is not None and lw.is_int8(a) and lw.is_int8(b)
    if not int8:
        a = lw.get(node.input[0], nhwc=False, want_float=True)
        b = lw.get(node.input[1], nhwc=False, want_float=True)
    out = lw.new(node.output[0], False, quant=q if int8 else None)
    opts = ("BatchMatMulOptions", {"AdjX": False, "AdjY": False})
    lw.m.op(OP.BATCH_MATMUL, [a.index, b.index], [out.index], opts, 2 if int8 else 1, node.name)
    lw.bind(node.output[0], out)


def _permute_reshape(lw: Lowering, name: str, src: int, shape, perm, new_shape) -> int:
    """TRANSPOSE by ``perm`` (skipped when identity) then RESHAPE to ``new_shape`` (skipped when equal)."""
    cur, cur_shape = src, list(shape)
    if list(perm) != sorted(perm):
        cur_shape = [cur_shape[p] for p in perm]
        t = tmp(lw, f"{name}_t", cur_shape)
        lw.m.op(
            OP.TRANSPOSE, [cur, lw.m.const("perm", np.array(perm, np.int32))], [t], None, transpose_version(len(perm))
        )
        cur = t
    if list(new_shape) != cur_shape:
        t = tmp(lw, f"{name}_r", new_shape)
        lw.reshape_op(cur, t, new_shape)
        cur = t
    return cur


def einsum(lw: Lowering, node) -> None:
    """Two-operand einsum without repeated or ellipsis indices, as one BATCH_MATMUL:
    A -> [batch, left, contracted], B -> [batch, contracted, right], then back to the output order."""
    eq = _attr(node, "equation")
    eq = (eq.decode() if isinstance(eq, bytes) else eq).replace(" ", "")
    if "->" not in eq or "." in eq or len(node.input) != 2:
        raise unsupported(node, f"equation {eq!r} (two operands with an explicit output only)")
    lhs, out = eq.split("->")
    a, b = lhs.split(",")
    if len(set(a)) != len(a) or len(set(b)) != len(b) or any(c not in a + b for c in out):
        raise unsupported(node, f"equation {eq!r} (repeated indices)")
    batch = [c for c in out if c in a and c in b]
    left = [c for c in out if c in a and c not in b]
    right = [c for c in out if c in b and c not in a]
    contr = [c for c in a if c in b and c not in out]
    if any(c not in out and c not in contr for c in a + b):
        raise unsupported(node, f"equation {eq!r} (an index summed over one operand only)")
    sa, sb = lw.shape(node.input[0]), lw.shape(node.input[1])
    dim = {**{c: sa[i] for i, c in enumerate(a)}, **{c: sb[i] for i, c in enumerate(b)}}
    nb, nl, nr, nk = (int(np.prod([dim[c] for c in g])) for g in (batch, left, right, contr))
    av = lw.get(node.input[0], nhwc=False, want_float=True)
    bv = lw.get(node.input[1], nhwc=False, want_float=True)
    name = node.output[0]
    a3 = _permute_reshape(lw, f"{name}_a", av.index, sa, [a.index(c) for c in batch + left + contr], [nb, nl, nk])
    b3 = _permute_reshape(lw, f"{name}_b", bv.index, sb, [b.index(c) for c in batch + contr + right], [nb, nk, nr])
    mm = tmp(lw, f"{name}_mm", [nb, nl, nr])
    lw.m.op(OP.BATCH_MATMUL, [a3, b3], [mm], ("BatchMatMulOptions", {"AdjX": False, "AdjY": False}), 1, node.name)
    order = batch + left + right
    full = [dim[c] for c in order]
    outv = lw.new(name, False)
    cur = _permute_reshape(lw, f"{name}_o", mm, [nb, nl, nr], [0, 1, 2], full)
    perm = [order.index(c) for c in out]
    src_shape = full
    if perm != sorted(perm):
        lw.m.op(
            OP.TRANSPOSE,
            [cur, lw.m.const("perm", np.array(perm, np.int32))],
            [outv.index],
            None,
            4 if len(perm) > 4 else 1,
        )
    else:
        lw.reshape_op(cur, outv.index, [src_shape[p] for p in perm])
    lw.bind(name, outv)


# ---- elementwise --------------------------------------------------------------------------------
BINARY = {
    "Add": (OP.ADD, "AddOptions"),
    "Mul": (OP.MUL, "MulOptions"),
    "Sub": (OP.SUB, "SubOptions"),
    "Div": (OP.DIV, "DivOptions"),
}


def _integer_binary(lw: Lowering, node) -> bool:
    """Add / Sub / Mul of integer tensors (RoBERTa's position ids: a cumulative sum of the padding
    mask, times the mask, plus the padding index) as TFLite's int32 op, version 1, which every
    runtime has; int64 operands are CAST to int32 and the result back when ONNX says int64 (token
    ids and positions are far below 2^31). False when an operand is not an integer tensor."""
    acts = [x for x in node.input[:2] if x not in lw.consts]
    if node.op_type not in ("Add", "Sub", "Mul") or not acts:
        return False
    if any(x not in lw.vals or lw.m.tensors[lw.vals[x].index].dtype not in (2, 4) for x in acts):
        return False  # TensorType INT32 = 2, INT64 = 4
    from .tflite_lower_const import infer_dtypes

    if lw.dtypes is None:
        lw.dtypes = infer_dtypes(lw.proto)
    code, opt = BINARY[node.op_type]
    ins = []
    for x in node.input[:2]:
        if x in lw.consts:
            ins.append(lw.m.const(x, np.asarray(lw.consts[x]).astype(np.int32)))
            continue
        v = lw.get(x, nhwc=False)
        if lw.m.tensors[v.index].dtype == 4:
            t = tmp(lw, f"{x}_int32", lw.m.tensors[v.index].shape, dtype=np.int32)
            lw.m.op(OP.CAST, [v.index], [t], None, 1, node.name)
            ins.append(t)
        else:
            ins.append(v.index)
    out_name = node.output[0]
    wide = np.dtype(lw.dtypes.get(out_name, np.int32)) == np.int64
    out = lw.new(out_name, False, dtype=np.int32, label=f"{out_name}_int32" if wide else "")
    lw.m.op(code, ins, [out.index], (opt, {}), 1, node.name)
    if wide:
        out64 = lw.new(out_name, False, dtype=np.int64)
        lw.m.op(OP.CAST, [out.index], [out64.index], None, 1, node.name)
        out = out64
    lw.bind(out_name, out)
    return True


def binary(lw: Lowering, node) -> None:
    if _integer_binary(lw, node):
        return
    code, opt = BINARY[node.op_type]
    out_name = node.output[0]
    rank = len(lw.shape(out_name))
    acts = [x for x in node.input[:2] if x not in lw.consts]
    nhwc = rank == 4 and all(len(lw.shape(x)) == 4 for x in acts) and any(lw.vals[x].nhwc for x in acts)
    act, final = fuse_act(lw, out_name)
    q = lw.out_quant(final)
    int8 = (
        q is not None
        and node.op_type in ("Add", "Mul")
        and len(acts) == 2
        and all(lw.is_int8(lw.vals[x]) for x in acts)
    )
    ins = []
    for x in node.input[:2]:
        if x in lw.consts:
            ins.append(float_const(lw, x, lw.consts[x], rank, nhwc))
        else:
            ins.append(lw.get(x, nhwc=nhwc if len(lw.shape(x)) == 4 else None, want_float=not int8).index)
    act = int8_act(act, q if int8 else None)
    out = lw.new(final, nhwc, quant=q if int8 else None)
    version = 1
    if int8:
        version = 2
        if code == OP.MUL:
            s1, s2 = (lw.m.tensors[i].quant.scale[0] for i in ins)
            version = 3 if s1 * s2 / q.scale[0] >= 1.0 else 2
    lw.m.op(code, ins, [out.index], (opt, {"FusedActivationFunction": act}), version, node.name)
    bind_all(lw, {out_name, final}, out)


def _unary(lw: Lowering, node, code: int, int8_ok: bool = False, version_int8: int = 2) -> None:
    x = node.input[0]
    xv = lw.vals[x] if x in lw.vals else lw.get(x)
    int8 = int8_ok and lw.is_int8(xv)
    if not int8:
        xv = lw.get(x, want_float=True)
    out = lw.new(node.output[0], xv.nhwc, quant=lw.quant_of(xv) if int8 else None)
    lw.m.op(code, [xv.index], [out.index], None, version_int8 if int8 else 1, node.name)
    lw.bind(node.output[0], out)
    if int8:
        _requant_to_next(lw, node.output[0], out)


def arctan(lw: Lowering, node) -> None:
    """Atan as ATAN2(x, 1): TFLite has no ATAN, and its ATAN2 wants operands of one shape, so the
    ones are a BROADCAST_TO of one scalar (no constant as large as x)."""
    xv = lw.get(node.input[0], want_float=True)
    shape = list(lw.m.tensors[xv.index].shape)
    ones = tmp(lw, f"{node.output[0]}_ones", shape)
    target = lw.m.const("shape", np.array(shape, np.int32))
    lw.m.op(OP.BROADCAST_TO, [lw.m.const("one", np.array(1.0, np.float32)), target], [ones], None, 2, node.name)
    out = lw.new(node.output[0], xv.nhwc)
    lw.m.op(OP.ATAN2, [xv.index, ones], [out.index], None, 1, node.name)
    lw.bind(node.output[0], out)


def power(lw: Lowering, node) -> None:
    """Pow (float). A constant scalar exponent becomes the ops it is: x*x for 2 (RMSNorm's
    ``x.pow(2)``), x*x*x for 3 (GPT-2's tanh GELU), SQRT for 0.5, RSQRT for -0.5, 1/x for -1, the
    input itself for 1. Any other exponent is TFLite's POW, broadcast like MUL."""
    x, e = node.input[0], node.input[1]
    xv = lw.get(x, want_float=True)
    shape = lw.m.tensors[xv.index].shape
    rank = len(lw.shape(x))
    ev = lw.consts.get(e)
    k = float(np.asarray(ev).reshape(())) if ev is not None and np.size(ev) == 1 else None
    if k == 1.0:
        return lw.bind(node.output[0], xv)
    out = lw.new(node.output[0], xv.nhwc)
    mul = ("MulOptions", {})
    if k == 2.0:
        lw.m.op(OP.MUL, [xv.index, xv.index], [out.index], mul, 1, node.name)
    elif k == 3.0:
        sq = tmp(lw, f"{node.output[0]}_sq", shape)
        lw.m.op(OP.MUL, [xv.index, xv.index], [sq], mul, 1, node.name)
        lw.m.op(OP.MUL, [sq, xv.index], [out.index], mul, 1, node.name)
    elif k in (0.5, -0.5):
        lw.m.op(OP.SQRT if k == 0.5 else OP.RSQRT, [xv.index], [out.index], None, 1, node.name)
    elif k == -1.0:
        one = lw.m.const(f"{node.output[0]}_one", np.float32(1.0))
        lw.m.op(OP.DIV, [one, xv.index], [out.index], ("DivOptions", {}), 1, node.name)
    else:  # (k is None: a tensor exponent)
        ex = (
            float_const(lw, e, ev, rank, xv.nhwc)
            if ev is not None
            else lw.get(e, nhwc=xv.nhwc if len(lw.shape(e)) == 4 else None, want_float=True).index
        )
        lw.m.op(OP.POW, [xv.index, ex], [out.index], None, 1, node.name)
    lw.bind(node.output[0], out)


def reciprocal(lw: Lowering, node) -> None:
    """1 / x as DIV (TFLite has no reciprocal op); ``torch.rsqrt`` exports as Sqrt + Reciprocal."""
    xv = lw.get(node.input[0], want_float=True)
    out = lw.new(node.output[0], xv.nhwc)
    one = lw.m.const(f"{node.output[0]}_one", np.float32(1.0))
    lw.m.op(OP.DIV, [one, xv.index], [out.index], ("DivOptions", {}), 1, node.name)
    lw.bind(node.output[0], out)


# int8 LOGISTIC requires this output quantization (TFLite's op constraints); the quantizer gives a
# sigmoid output exactly these parameters, so no requantization follows it in our files.
_LOGISTIC_OUT = (1.0 / 256.0, -128)


def _int8_activation(lw: Lowering, node, code: int) -> None:
    """LOGISTIC / HARD_SWISH: int8 in and out when the input is int8 and a QuantizeLinear follows the
    output (the output takes that scale; LOGISTIC takes its fixed one and requantizes if they differ);
    float otherwise."""
    x = node.input[0]
    xv = lw.vals[x] if x in lw.vals else lw.get(x)
    q = lw.out_quant(node.output[0])
    if q is None or not lw.is_int8(xv):
        return _unary(lw, node, code)
    if code == OP.LOGISTIC:
        oq = Quant(np.array([_LOGISTIC_OUT[0]], dtype=np.float32), np.array([_LOGISTIC_OUT[1]], dtype=np.int64), 0)
    else:
        oq = q
    out = lw.new(node.output[0], xv.nhwc, quant=oq)
    # int8 is LOGISTIC's version 2; HARD_SWISH has one version for every type
    lw.m.op(code, [xv.index], [out.index], None, 2 if code == OP.LOGISTIC else 1, node.name)
    lw.bind(node.output[0], out)
    _requant_to_next(lw, node.output[0], out)


def _requant_to_next(lw: Lowering, name: str, val: Val) -> None:
    q = lw.out_quant(name)
    if q is not None:
        lw.bind(name, lw.requant(name, val, q))


def relu_like(lw: Lowering, node) -> None:
    a = act_of(lw, node)
    if a is not None:
        code = {"RELU": OP.RELU, "RELU6": OP.RELU6, "RELU_N1_TO_1": OP.RELU_N1_TO_1}[a]
        return _unary(lw, node, code, int8_ok=True)
    lo, hi = clip_bounds(lw, node)
    xv = lw.get(node.input[0], want_float=True)
    rank = len(lw.shape(node.input[0]))
    cur = xv
    for bound, code, name in ((lo, OP.MAXIMUM, "lo"), (hi, OP.MINIMUM, "hi")):
        if np.isfinite(bound):
            nxt = lw.new(node.output[0], xv.nhwc, label=f"{node.output[0]}_{name}")
            c = float_const(lw, f"{node.output[0]}_{name}_bound", np.float32(bound), rank, xv.nhwc)
            lw.m.op(code, [cur.index, c], [nxt.index], None, 1, node.name)
            cur = nxt
    lw.bind(node.output[0], cur)


def leaky_relu(lw: Lowering, node) -> None:
    """LeakyRelu as LEAKY_RELU (ONNX's default slope is 0.01): int8 in and out (version 2) when the
    input is int8 and a QuantizeLinear follows, as YOLO-style detectors need it; float otherwise."""
    x = node.input[0]
    alpha = float(_attr(node, "alpha", 0.01))
    opts = ("LeakyReluOptions", {"Alpha": alpha})
    xv = lw.vals[x] if x in lw.vals else lw.get(x)
    q = lw.out_quant(node.output[0])
    if q is not None and lw.is_int8(xv) and alpha >= 0:
        out = lw.new(node.output[0], xv.nhwc, quant=q)
        # (version 1 covers int8 too: TFLite's version 2 is int16)
        lw.m.op(OP.LEAKY_RELU, [xv.index], [out.index], opts, 1, node.name)
        lw.bind(node.output[0], out)
        return _requant_to_next(lw, node.output[0], out)
    xv = lw.get(x, want_float=True)
    out = lw.new(node.output[0], xv.nhwc)
    lw.m.op(OP.LEAKY_RELU, [xv.index], [out.index], opts, 1, node.name)
    lw.bind(node.output[0], out)


def prelu(lw: Lowering, node) -> None:
    """PRelu as PRELU, its slopes a constant broadcast like a binary op's (per channel: [1, 1, C] for
    an NHWC value); a slope computed at run time is refused."""
    x, slope = node.input[0], node.input[1]
    if slope not in lw.consts:
        raise unsupported(node, "PRelu slopes computed at run time")
    xv = lw.get(x, want_float=True)
    rank = len(lw.shape(x))
    a = float_const(lw, slope, lw.consts[slope], rank, xv.nhwc and rank == 4)
    out = lw.new(node.output[0], xv.nhwc)
    lw.m.op(OP.PRELU, [xv.index, a], [out.index], None, 1, node.name)
    lw.bind(node.output[0], out)


def elu(lw: Lowering, node) -> None:
    """The ELU family on TFLite's ELU (alpha 1): Elu with alpha 1 (PyTorch's default) is ELU itself;
    any other alpha, Selu and Celu are gamma * (MAXIMUM(x, 0) + alpha * MINIMUM(ELU(x / c), 0)), with
    c = alpha for Celu (its exp(x / alpha)), gamma only for Selu."""
    kind = node.op_type
    alpha = float(_attr(node, "alpha", {"Elu": 1.0, "Celu": 1.0, "Selu": 1.67326319217681884765625}[kind]))
    gamma = float(_attr(node, "gamma", 1.05070102214813232421875)) if kind == "Selu" else 1.0
    xv = lw.get(node.input[0], want_float=True)
    shape = lw.m.tensors[xv.index].shape
    out = lw.new(node.output[0], xv.nhwc)
    if kind == "Elu" and alpha == 1.0:
        lw.m.op(OP.ELU, [xv.index], [out.index], None, 1, node.name)
        return lw.bind(node.output[0], out)
    name = node.output[0]
    zero = lw.m.const(f"{name}_zero", np.float32(0.0))
    src = xv.index
    if kind == "Celu" and alpha != 1.0:
        src = tmp(lw, f"{name}_div", shape)
        lw.m.op(OP.DIV, [xv.index, lw.m.const(f"{name}_c", np.float32(alpha))], [src], ("DivOptions", {}), 1, node.name)
    e, neg, pos, scaled = (tmp(lw, f"{name}_{t}", shape) for t in ("elu", "neg", "pos", "scaled"))
    lw.m.op(OP.ELU, [src], [e], None, 1, node.name)
    lw.m.op(OP.MINIMUM, [e, zero], [neg], None, 1, node.name)
    lw.m.op(OP.MAXIMUM, [xv.index, zero], [pos], None, 1, node.name)
    lw.m.op(OP.MUL, [neg, lw.m.const(f"{name}_alpha", np.float32(alpha))], [scaled], ("MulOptions", {}), 1, node.name)
    if gamma == 1.0:
        lw.m.op(OP.ADD, [pos, scaled], [out.index], ("AddOptions", {}), 1, node.name)
    else:
        total = tmp(lw, f"{name}_sum", shape)
        lw.m.op(OP.ADD, [pos, scaled], [total], ("AddOptions", {}), 1, node.name)
        lw.m.op(
            OP.MUL,
            [total, lw.m.const(f"{name}_gamma", np.float32(gamma))],
            [out.index],
            ("MulOptions", {}),
            1,
            node.name,
        )
    lw.bind(node.output[0], out)


def softplus(lw: Lowering, node) -> None:
    """log(1 + exp(x)) in the form that neither overflows nor loses small values:
    MAXIMUM(x, 0) + LOG(1 + EXP(-|x|)) (Mish exports as Softplus, Tanh and Mul)."""
    xv = lw.get(node.input[0], want_float=True)
    shape = lw.m.tensors[xv.index].shape
    name = node.output[0]
    a, n, e, e1, lg, pos = (tmp(lw, f"{name}_{t}", shape) for t in ("abs", "neg", "exp", "plus1", "log", "pos"))
    out = lw.new(name, xv.nhwc)
    lw.m.op(OP.ABS, [xv.index], [a], None, 1, node.name)
    lw.m.op(OP.NEG, [a], [n], None, 1, node.name)
    lw.m.op(OP.EXP, [n], [e], None, 1, node.name)
    lw.m.op(OP.ADD, [e, lw.m.const(f"{name}_one", np.float32(1.0))], [e1], ("AddOptions", {}), 1, node.name)
    lw.m.op(OP.LOG, [e1], [lg], None, 1, node.name)
    lw.m.op(OP.MAXIMUM, [xv.index, lw.m.const(f"{name}_zero", np.float32(0.0))], [pos], None, 1, node.name)
    lw.m.op(OP.ADD, [pos, lg], [out.index], ("AddOptions", {}), 1, node.name)
    lw.bind(name, out)


def min_max(lw: Lowering, node) -> None:
    """Max / Min of two or more inputs (broadcast) as a chain of MAXIMUM / MINIMUM, float."""
    code = OP.MAXIMUM if node.op_type == "Max" else OP.MINIMUM
    out_name = node.output[0]
    rank = len(lw.shape(out_name))
    acts = [x for x in node.input if x not in lw.consts]
    nhwc = rank == 4 and all(len(lw.shape(x)) == 4 for x in acts) and any(lw.vals[x].nhwc for x in acts)
    ins = []
    for x in node.input:
        if x in lw.consts:
            ins.append(float_const(lw, x, lw.consts[x], rank, nhwc))
        else:
            ins.append(lw.get(x, nhwc=nhwc if len(lw.shape(x)) == 4 else None, want_float=True).index)
    if len(ins) == 1:
        return lw.bind(out_name, lw.get(node.input[0], want_float=True))
    cur = ins[0]
    for i, nxt_in in enumerate(ins[1:]):
        if i == len(ins) - 2:
            out = lw.new(out_name, nhwc)
        else:  # a partial result: the broadcast of the operands so far
            shape = np.broadcast_shapes(*(tuple(lw.m.tensors[t].shape) for t in (cur, nxt_in)))
            out = Val(tmp(lw, f"{out_name}_{i}", list(shape)), nhwc)
        a, b = (lw.m.tensors[t].shape for t in (cur, nxt_in))
        # TFLite's versions: a broadcast past rank 4 is version 3
        version = 3 if list(a) != list(b) and max(len(a), len(b)) > 4 else 1
        lw.m.op(code, [cur, nxt_in], [out.index], None, version, node.name)
        cur = out.index
    lw.bind(out_name, out)


def hard_sigmoid(lw: Lowering, node) -> None:
    """relu6(x + 3) / 6 for PyTorch's Hardsigmoid; MUL, ADD, MAXIMUM, MINIMUM otherwise."""
    alpha, beta = _attr(node, "alpha", 0.2), _attr(node, "beta", 0.5)
    xv = lw.get(node.input[0], want_float=True)
    shape = lw.m.tensors[xv.index].shape
    out = lw.new(node.output[0], xv.nhwc)
    if abs(alpha - 1 / 6) < 1e-6 and abs(beta - 0.5) < 1e-6:
        t1, t2 = tmp(lw, f"{node.output[0]}_plus3", shape), tmp(lw, f"{node.output[0]}_relu6", shape)
        lw.m.op(OP.ADD, [xv.index, lw.m.const("three", np.float32(3.0))], [t1], ("AddOptions", {}), 1, node.name)
        lw.m.op(OP.RELU6, [t1], [t2], None, 1, node.name)
        lw.m.op(OP.MUL, [t2, lw.m.const("sixth", np.float32(1 / 6))], [out.index], ("MulOptions", {}), 1, node.name)
    else:
        steps = [
            (OP.MUL, np.float32(alpha), ("MulOptions", {})),
            (OP.ADD, np.float32(beta), ("AddOptions", {})),
            (OP.MAXIMUM, np.float32(0), None),
            (OP.MINIMUM, np.float32(1), None),
        ]
        cur = xv.index
        for i, (code, c, opts) in enumerate(steps):
            nxt = out.index if i == len(steps) - 1 else tmp(lw, f"{node.output[0]}_{i}", shape)
            lw.m.op(code, [cur, lw.m.const("c", c)], [nxt], opts, 1, node.name)
            cur = nxt
    lw.bind(node.output[0], out)


def softmax(lw: Lowering, node) -> None:
    """SOFTMAX (LogSoftmax: LOG_SOFTMAX) normalises the last axis; another axis (ConvBERT's span
    attention, a classifier's log-probabilities over the channels of an image) is moved there by a
    TRANSPOSE and back."""
    code, opts = (
        (OP.LOG_SOFTMAX, None) if node.op_type == "LogSoftmax" else (OP.SOFTMAX, ("SoftmaxOptions", {"Beta": 1.0}))
    )
    shape = list(lw.shape(node.input[0]))
    rank = len(shape)
    axis = _attr(node, "axis", -1) % rank
    if rank > 5 and axis != rank - 1:
        raise unsupported(node, f"softmax over axis {axis} of a rank-{rank} tensor (TRANSPOSE takes rank <= 5)")
    xv = lw.get(node.input[0], nhwc=False, want_float=True)
    out = lw.new(node.output[0], False)
    if axis == rank - 1:
        lw.m.op(code, [xv.index], [out.index], opts, 1, node.name)
    else:
        perm = [d for d in range(rank) if d != axis] + [axis]  # its own inverse is argsort(perm)
        moved = tmp(lw, f"{node.output[0]}_t", [shape[p] for p in perm])
        soft = tmp(lw, f"{node.output[0]}_s", [shape[p] for p in perm])
        version = 4 if rank > 4 else 1
        lw.m.op(OP.TRANSPOSE, [xv.index, lw.m.const("perm", np.array(perm, np.int32))], [moved], None, version)
        lw.m.op(code, [moved], [soft], opts, 1, node.name)
        back = np.argsort(perm).astype(np.int32)
        lw.m.op(OP.TRANSPOSE, [soft, lw.m.const("perm", back)], [out.index], None, version)
    lw.bind(node.output[0], out)


def alias(lw: Lowering, node) -> None:
    lw.bind(node.output[0], lw.vals[node.input[0]] if node.input[0] in lw.vals else lw.get(node.input[0]))


def quantize_linear(lw: Lowering, node) -> None:
    qp = lw.q_params(node)
    val = lw.vals[node.input[0]] if node.input[0] in lw.vals else lw.get(node.input[0])
    if lw.is_int8(val):
        lw.bind(node.output[0], lw.requant(node.input[0], val, qp))
        return
    out = lw.new(node.output[0], val.nhwc, quant=qp)
    lw.m.op(OP.QUANTIZE, [val.index], [out.index], None, 1, node.name)
    lw.bind(node.output[0], out)


def dequantize_linear(lw: Lowering, node) -> None:
    lw.bind(node.output[0], lw.vals[node.input[0]])


from .tflite_ops_rnn import RNN_HANDLERS  # noqa: E402  (as the shape ops)
from .tflite_ops_shape import (  # noqa: E402  (the shape ops share the helpers above)
    SHAPE_HANDLERS,
    match_patterns,
)

# elementwise ONNX ops that are one float TFLite operator each
UNARY = {
    "Tanh": OP.TANH,
    "Sqrt": OP.SQRT,
    "Exp": OP.EXP,
    "Log": OP.LOG,
    "Floor": OP.FLOOR,
    "Ceil": OP.CEIL,
    "Round": OP.ROUND,
    "Sign": OP.SIGN,
    "Neg": OP.NEG,
    "Abs": OP.ABS,
    "Sin": OP.SIN,
    "Cos": OP.COS,
}

HANDLERS = {
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Gemm": fully_connected,
    "Einsum": einsum,
    "MatMul": fully_connected,
    **{k: binary for k in BINARY},
    "Relu": relu_like,
    "Clip": relu_like,
    "HardSwish": lambda lw, n: _int8_activation(lw, n, OP.HARD_SWISH),
    "Sigmoid": lambda lw, n: _int8_activation(lw, n, OP.LOGISTIC),
    **{k: functools.partial(_unary, code=c) for k, c in UNARY.items()},
    "LeakyRelu": leaky_relu,
    "Atan": arctan,
    "PRelu": prelu,
    "Elu": elu,
    "Selu": elu,
    "Celu": elu,
    "Softplus": softplus,
    "Max": min_max,
    "Min": min_max,
    "Pow": power,
    "Reciprocal": reciprocal,
    "HardSigmoid": hard_sigmoid,
    "Softmax": softmax,
    "LogSoftmax": softmax,
    "Identity": alias,
    "Dropout": alias,
    "QuantizeLinear": quantize_linear,
    "DequantizeLinear": dequantize_linear,
    **SHAPE_HANDLERS,
    **RNN_HANDLERS,
}

__all__ = ["HANDLERS", "match_patterns"]
