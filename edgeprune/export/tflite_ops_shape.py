"""Lowerings of pools, reductions, shape ops, normalizations and two patterns (GELU, channel shuffle) to TFLite.

Consumes: a ``tflite_lower.Lowering`` and one ONNX node (or, for ``match_patterns``, the whole
graph). Produces: TFLite operators and bound outputs, like ``tflite_ops``. Pools, means,
reshapes, transposes, slices, concats and pads keep int8 when their input is int8 (a QUANTIZE re-scales
where the next quantization point differs); normalizations run in float.
"""

from __future__ import annotations

import numpy as np

from .tflite_lower import NHWC, VALID, Lowering, Val, _attr, unsupported
from .tflite_ops import (
    _requant_to_next,
    bind_all,
    explicit_pad,
    fuse_act,
    int8_act,
    onnx_pads,
    pad_mode,
    tmp,
    transpose_version,
)
from .tflite_schema import OP, Quant


def _int8_in(lw: Lowering, name: str, nhwc=None) -> tuple[Val, bool]:
    v = lw.vals.get(name)
    int8 = v is not None and lw.is_int8(v)
    return lw.get(name, nhwc=nhwc, want_float=not int8), int8


def _passthrough_out(lw: Lowering, name: str, src: Val, nhwc: bool, int8: bool) -> Val:
    """The output of an op that moves values without changing them: the input's type and scale."""
    return lw.new(name, nhwc, dtype=lw.m.tensors[src.index].dtype, quant=lw.quant_of(src) if int8 else None)


# ---- pools and means ----------------------------------------------------------------------------
def _max_pad(lw: Lowering, name: str, x: Val, pads: list[int]) -> Val:
    """PADV2 with the lowest value, so padded pixels never win a max (PyTorch's max-pool padding)."""
    t = lw.m.tensors[x.index]
    n, h, w, c = t.shape
    out = tmp(lw, f"{name}_pad", [n, h + pads[0] + pads[2], w + pads[1] + pads[3], c], quant=t.quant)
    paddings = np.array([[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]], dtype=np.int32)
    low = np.array(-128, np.int8) if t.quant is not None else np.array(np.finfo(np.float32).min, np.float32)
    # an int8 pad value carries the input's quantization: TFLite's PADV2 refuses a value whose zero point
    # differs from the output's
    ins = [x.index, lw.m.const("paddings", paddings), lw.m.const("pad_value", low.reshape(()), quant=t.quant)]
    lw.m.op(OP.PADV2, ins, [out], None, 2 if t.quant is not None else 1, name)
    return Val(out, True)


def avg_pool_divisors(in_hw, out_hw, k, s, pads, include_pad: bool) -> np.ndarray:
    """[OH, OW] divisor of each average-pool window as PyTorch computes it (and ONNX Runtime for the
    ONNX it exports): a window starts at o * s - pad_begin and ends at most pad_end past the input;
    count_include_pad counts that whole span, else only the input elements inside it. ceil_mode's
    extra windows therefore divide by less than k."""
    counts = []
    for i in range(2):
        o = np.arange(out_hw[i])
        start = o * s[i] - pads[i]
        end = np.minimum(start + k[i], in_hw[i] + pads[i + 2])
        span = end - start
        inside = np.minimum(end, in_hw[i]) - np.maximum(start, 0)
        counts.append(np.maximum(span if include_pad else inside, 1))
    return np.outer(counts[0], counts[1]).astype(np.float64)


def _avg_pool_divided(lw: Lowering, node, xv: Val, in_hw, out_hw, k, s, pads) -> None:
    """A float average pool whose divisors TFLite's AVERAGE_POOL_2D does not use (ceil_mode windows,
    count_include_pad=0 with padding SAME does not place): zero padding to the windows' full extent,
    a VALID pool (the window sum / (kh * kw)), then a MUL by (kh * kw) / divisor per output pixel,
    which carries the fused activation."""
    ends = [max(0, (out_hw[i] - 1) * s[i] + k[i] - in_hw[i] - pads[i]) for i in range(2)]
    padded = (
        explicit_pad(lw, node.output[0], xv, [pads[0], pads[1], ends[0], ends[1]]) if any(pads) or any(ends) else xv
    )
    n, c = lw.m.tensors[xv.index].shape[0], lw.m.tensors[xv.index].shape[3]
    summed = tmp(lw, f"{node.output[0]}_window_mean", [n, out_hw[0], out_hw[1], c])
    opts = {"Padding": VALID, "StrideW": s[1], "StrideH": s[0], "FilterWidth": k[1], "FilterHeight": k[0]}
    lw.m.op(
        OP.AVERAGE_POOL_2D,
        [padded.index],
        [summed],
        ("Pool2DOptions", {**opts, "FusedActivationFunction": 0}),
        1,
        node.name,
    )
    div = avg_pool_divisors(in_hw, out_hw, k, s, pads, bool(_attr(node, "count_include_pad", 0)))
    scale = (k[0] * k[1] / div).astype(np.float32).reshape(1, out_hw[0], out_hw[1], 1)
    act, final = fuse_act(lw, node.output[0])
    out = lw.new(final, True)
    mul = ("MulOptions", {"FusedActivationFunction": act})
    lw.m.op(OP.MUL, [summed, lw.m.const("avg_pool_scale", scale)], [out.index], mul, 1, node.name)
    bind_all(lw, {node.output[0], final}, out)
    _requant_to_next(lw, final, out)


def _dilated_max_pool(lw: Lowering, node, xv: Val, int8: bool, k, s, d) -> None:
    """A dilated max pool, which TFLite's MAX_POOL_2D cannot express: the input padded with its
    lowest value to every tap's reach, one STRIDED_SLICE per tap (the tap's pixel of every
    window), and a chain of MAXIMUM. Int8 stays int8: slices and maxima keep the input's scale."""
    x = node.input[0]
    in_hw, out_hw = lw.shape(x)[2:], lw.shape(node.output[0])[2:]
    pads = onnx_pads(node, in_hw, k, s, d)
    # rows / columns the last window reaches (ceil_mode windows included)
    reach = [(out_hw[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 for i in range(2)]
    ends = [max(0, reach[i] - in_hw[i] - pads[i]) for i in range(2)]
    if any(pads[:2]) or any(ends):
        xv = _max_pad(lw, node.output[0], xv, [pads[0], pads[1], ends[0], ends[1]])
    n, c = lw.m.tensors[xv.index].shape[0], lw.m.tensors[xv.index].shape[3]
    q = lw.quant_of(xv) if int8 else None
    dtype = lw.m.tensors[xv.index].dtype
    strides = lw.m.const("strides", np.array([1, s[0], s[1], 1], np.int32))
    taps = []
    for ky in range(k[0]):
        for kx in range(k[1]):
            y0, x0 = ky * d[0], kx * d[1]
            begin = lw.m.const("begin", np.array([0, y0, x0, 0], np.int32))
            end = lw.m.const(
                "end", np.array([n, y0 + (out_hw[0] - 1) * s[0] + 1, x0 + (out_hw[1] - 1) * s[1] + 1, c], np.int32)
            )
            tap = lw.m.tensor(f"{node.output[0]}_tap{ky}_{kx}", [n, out_hw[0], out_hw[1], c], dtype, q)
            lw.m.op(
                OP.STRIDED_SLICE,
                [xv.index, begin, end, strides],
                [tap],
                ("StridedSliceOptions", {}),
                2 if int8 else 1,
                node.name,
            )
            taps.append(tap)
    out = _passthrough_out(lw, node.output[0], xv, True, int8)
    acc = taps[0]
    for j, tap in enumerate(taps[1:], 1):
        last = j == len(taps) - 1
        dst = out.index if last else lw.m.tensor(f"{node.output[0]}_max{j}", [n, out_hw[0], out_hw[1], c], dtype, q)
        lw.m.op(OP.MAXIMUM, [acc, tap], [dst], None, 2 if int8 else 1, node.name)
        acc = dst
    if len(taps) == 1:  # a 1x1 window: the one slice is the output
        lw.m.op(OP.MAXIMUM, [acc, acc], [out.index], None, 2 if int8 else 1, node.name)
    lw.bind(node.output[0], out)
    if int8:
        _requant_to_next(lw, node.output[0], out)


def pool(lw: Lowering, node) -> None:
    x = node.input[0]
    xv, int8 = _int8_in(lw, x, nhwc=True)
    k = list(_attr(node, "kernel_shape"))
    s = list(_attr(node, "strides", [1, 1]))
    d = list(_attr(node, "dilations", [1, 1]))
    if len(k) == 2 and d != [1, 1] and node.op_type == "MaxPool":
        # in float (in an int8 file between DEQUANTIZE and QUANTIZE): our runtime's MAXIMUM is float
        return _dilated_max_pool(lw, node, lw.get(x, nhwc=True, want_float=True), False, k, s, d)
    if len(k) != 2:
        raise unsupported(
            node, f"only 2-D pools, not {len(k)}-D ones (torch's LocalResponseNorm exports as a 3-D average pool)"
        )
    if d != [1, 1]:
        raise unsupported(node, "a dilated average pool")
    in_hw, out_hw = lw.shape(x)[2:], lw.shape(node.output[0])[2:]
    pads = onnx_pads(node, in_hw, k, s, d)
    floor_hw = [(in_hw[i] + pads[i] + pads[i + 2] - k[i]) // s[i] + 1 for i in range(2)]
    avg = node.op_type == "AveragePool"
    extra = [out_hw[i] - floor_hw[i] for i in range(2)]
    if any(e < 0 for e in extra):
        raise unsupported(node, f"an output of {out_hw} from {in_hw} that no pooling window rule gives")
    if avg and (any(extra) or (any(pads) and not _attr(node, "count_include_pad", 0))):
        if any(extra) or pad_mode(in_hw, k, s, d, pads)[1] is not None:
            # in float: in an int8 file between DEQUANTIZE and QUANTIZE
            xf = lw.get(x, nhwc=True, want_float=True)
            return _avg_pool_divided(lw, node, xf, in_hw, out_hw, k, s, pads)
    if any(extra):
        # ceil_mode=1 max pools (GoogLeNet, SqueezeNet): the added windows start inside the input
        # (PyTorch's rule) and read lowest-value padding past its end, which never wins the max
        pads = [pads[0], pads[1], pads[2] + extra[0] * s[0], pads[3] + extra[1] * s[1]]
    mode, explicit = pad_mode(in_hw, k, s, d, pads)
    if avg and explicit is None and any(pads) and _attr(node, "count_include_pad", 0):
        # TF's SAME leaves the padding out of each window's count; counting it takes real zeros
        mode, explicit = VALID, list(pads)
    if explicit is not None:
        if not avg:
            xv = _max_pad(lw, node.output[0], xv, explicit)
        else:  # (count_include_pad: the other averages took the divided form above)
            xv = explicit_pad(lw, node.output[0], xv, explicit)
    act, final = fuse_act(lw, node.output[0])
    act = int8_act(act, lw.quant_of(xv) if int8 else None)
    out = _passthrough_out(lw, final, xv, True, int8)
    opts = {"Padding": mode, "StrideW": s[1], "StrideH": s[0], "FilterWidth": k[1], "FilterHeight": k[0]}
    opts["FusedActivationFunction"] = act
    code = OP.AVERAGE_POOL_2D if avg else OP.MAX_POOL_2D
    lw.m.op(code, [xv.index], [out.index], ("Pool2DOptions", opts), 2 if int8 else 1, node.name)
    bind_all(lw, {node.output[0], final}, out)
    if int8:
        _requant_to_next(lw, final, out)


def _mean(lw: Lowering, node, axes: list[int], keep: bool) -> None:
    x = node.input[0]
    rank = len(lw.shape(x))
    axes = sorted(a % rank for a in axes)
    v = lw.vals.get(x)
    nhwc = v is not None and v.nhwc and rank == 4
    if nhwc and not keep:
        rest = [a for a in NHWC if a not in axes]
        nhwc = rest == sorted(rest)
    q = lw.out_quant(node.output[0])
    xv, int8 = _int8_in(lw, x, nhwc=nhwc if rank == 4 else None)
    int8 = int8 and q is not None
    if not int8:
        xv = lw.get(x, nhwc=nhwc if rank == 4 else None, want_float=True)
    stored_axes = [NHWC.index(a) for a in axes] if nhwc else axes
    out_nhwc = nhwc and keep
    out = lw.new(node.output[0], out_nhwc, quant=q if int8 else None)
    ax = lw.m.const("axes", np.array(stored_axes, dtype=np.int32))
    lw.m.op(OP.MEAN, [xv.index, ax], [out.index], ("ReducerOptions", {"KeepDims": keep}), 2 if int8 else 1, node.name)
    lw.bind(node.output[0], out)


def global_average_pool(lw: Lowering, node) -> None:
    _mean(lw, node, [2, 3], True)


def _spatial_max(lw: Lowering, node, keep: bool) -> None:
    """The maximum over H and W of an image (GlobalMaxPool, ReduceMax over axes 2 and 3) as one
    MAX_POOL_2D window the size of the image, int8 when the input is; without keepdims a RESHAPE
    to [N, C] follows."""
    x = node.input[0]
    xv, int8 = _int8_in(lw, x, nhwc=True)
    n, c, h, w = lw.shape(x)
    opts = {"Padding": 1, "StrideW": 1, "StrideH": 1, "FilterWidth": w, "FilterHeight": h}
    pooled = _passthrough_out(lw, node.output[0], xv, True, int8) if keep else None
    if pooled is None:
        q = lw.quant_of(xv) if int8 else None
        pooled = Val(tmp(lw, f"{node.output[0]}_pool", [n, 1, 1, c], quant=q), True)
    lw.m.op(OP.MAX_POOL_2D, [xv.index], [pooled.index], ("Pool2DOptions", opts), 2 if int8 else 1, node.name)
    if keep:
        lw.bind(node.output[0], pooled)
    else:
        out = _passthrough_out(lw, node.output[0], pooled, False, int8)
        lw.reshape_op(pooled.index, out.index, [n, c])
        lw.bind(node.output[0], out)
    if int8:
        _requant_to_next(lw, node.output[0], lw.vals[node.output[0]])


def global_max_pool(lw: Lowering, node) -> None:
    _spatial_max(lw, node, True)


def reduce_extreme(lw: Lowering, node) -> None:
    """ReduceMax over the two spatial axes of an NCHW image (global max pooling) as MAX_POOL_2D;
    ReduceMax / ReduceMin over any other axes (CBAM's maximum over the channels) as REDUCE_MAX /
    REDUCE_MIN in float, on the value where it is stored (NHWC axes mapped) as MEAN is."""
    x = node.input[0]
    rank = len(lw.shape(x))
    axes = sorted(a % rank for a in _reduce_axes(lw, node))
    keep = bool(_attr(node, "keepdims", 1))
    if node.op_type == "ReduceMax" and rank == 4 and axes == [2, 3]:
        return _spatial_max(lw, node, keep)
    v = lw.vals.get(x)
    nhwc = v is not None and v.nhwc and rank == 4
    if nhwc and not keep:
        rest = [a for a in NHWC if a not in axes]
        nhwc = rest == sorted(rest)
    xv = lw.get(x, nhwc=nhwc if rank == 4 else None, want_float=True)
    stored_axes = [NHWC.index(a) for a in axes] if nhwc else axes
    out = lw.new(node.output[0], nhwc and keep)
    code = OP.REDUCE_MAX if node.op_type == "ReduceMax" else OP.REDUCE_MIN
    ax = lw.m.const("axes", np.array(stored_axes, dtype=np.int32))
    lw.m.op(code, [xv.index, ax], [out.index], ("ReducerOptions", {"KeepDims": keep}), 1, node.name)
    lw.bind(node.output[0], out)


def depth_to_space(lw: Lowering, node) -> None:
    """DepthToSpace (PixelShuffle is its CRD mode) on an NHWC image as RESHAPE, TRANSPOSE, RESHAPE:
    [N, H, W, C*b*b] viewed as [N, H, W, C, b, b] (CRD) or [N, H, W, b, b, C] (DCR), the two b axes
    moved beside H and W, then [N, H*b, W*b, C]. Int8 passes through with its scale."""
    x = node.input[0]
    xv, int8 = _int8_in(lw, x, nhwc=True)
    b = int(_attr(node, "blocksize"))
    crd = _attr(node, "mode", b"DCR") in (b"CRD", "CRD")
    n, cin, h, w = lw.shape(x)
    c = cin // (b * b)
    q = lw.quant_of(xv) if int8 else None
    dtype = lw.m.tensors[xv.index].dtype
    six = [n, h, w, c, b, b] if crd else [n, h, w, b, b, c]
    perm = [0, 1, 4, 2, 5, 3] if crd else [0, 1, 3, 2, 4, 5]
    moved = [six[i] for i in perm]
    v6 = lw.m.tensor(f"{node.output[0]}_blocks", six, dtype, q)
    lw.reshape_op(xv.index, v6, six)
    t6 = lw.m.tensor(f"{node.output[0]}_moved", moved, dtype, q)
    lw.m.op(
        OP.TRANSPOSE,
        [v6, lw.m.const("perm", np.array(perm, dtype=np.int32))],
        [t6],
        None,
        transpose_version(6),
        node.name,
    )
    out = _passthrough_out(lw, node.output[0], xv, True, int8)
    lw.reshape_op(t6, out.index, [n, h * b, w * b, c])
    lw.bind(node.output[0], out)
    if int8:
        _requant_to_next(lw, node.output[0], out)


def _reduce_axes(lw: Lowering, node) -> list[int]:
    """A Reduce* node's axes: the attribute (opset < 18) or a constant input; none = all."""
    axes = _attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        if node.input[1] not in lw.consts:
            raise unsupported(node, "reduction axes computed at run time")
        axes = [int(a) for a in np.asarray(lw.consts[node.input[1]]).reshape(-1)]
    if axes is None or (not axes and not _attr(node, "noop_with_empty_axes", 0)):
        axes = list(range(len(lw.shape(node.input[0]))))
    return list(axes)


def reduce_mean(lw: Lowering, node) -> None:
    _mean(lw, node, _reduce_axes(lw, node), bool(_attr(node, "keepdims", 1)))


def reduce_sum(lw: Lowering, node) -> None:
    """ReduceSum (mean pooling over a mask: SUM of masked tokens over the mask's SUM) and ReduceL2
    (``F.normalize``: SQRT of the SUM of squares), float32, plain layout."""
    rank = len(lw.shape(node.input[0]))
    if not node.output[0] or rank == 0:
        raise unsupported(node, "a reduction of a scalar")
    axes = sorted(a % rank for a in _reduce_axes(lw, node))
    keep = bool(_attr(node, "keepdims", 1))
    xv = lw.get(node.input[0], nhwc=False, want_float=True)
    src = xv.index
    if node.op_type == "ReduceL2":
        src = tmp(lw, f"{node.output[0]}_squares", lw.m.tensors[xv.index].shape)
        lw.m.op(OP.MUL, [xv.index, xv.index], [src], ("MulOptions", {}), 1, node.name)
    ax = lw.m.const("axes", np.array(axes, dtype=np.int32))
    out = lw.new(node.output[0], False)
    if node.op_type == "ReduceL2":
        total = tmp(lw, f"{node.output[0]}_sum", lw.shape(node.output[0]))
        lw.m.op(OP.SUM, [src, ax], [total], ("ReducerOptions", {"KeepDims": keep}), 1, node.name)
        lw.m.op(OP.SQRT, [total], [out.index], None, 1, node.name)
    else:
        lw.m.op(OP.SUM, [src, ax], [out.index], ("ReducerOptions", {"KeepDims": keep}), 1, node.name)
    lw.bind(node.output[0], out)


def reduce_log_sum_exp(lw: Lowering, node) -> None:
    """ReduceLogSumExp (``torch.logsumexp``) as m + LOG(SUM(EXP(x - m))), m the REDUCE_MAX over the
    same axes: no overflow for large x, float32, plain layout."""
    shape = lw.shape(node.input[0])
    rank = len(shape)
    if not node.output[0] or rank == 0:
        raise unsupported(node, "a reduction of a scalar")
    axes = sorted(a % rank for a in _reduce_axes(lw, node))
    keep = bool(_attr(node, "keepdims", 1))
    xv = lw.get(node.input[0], nhwc=False, want_float=True)
    name = node.output[0]
    kept = [1 if i in axes else d for i, d in enumerate(shape)]
    ax = lw.m.const("axes", np.array(axes, dtype=np.int32))
    keep_opts = ("ReducerOptions", {"KeepDims": True})
    mx = tmp(lw, f"{name}_max", kept)
    lw.m.op(OP.REDUCE_MAX, [xv.index, ax], [mx], keep_opts, 1, node.name)
    centered = tmp(lw, f"{name}_centered", shape)
    lw.m.op(OP.SUB, [xv.index, mx], [centered], ("SubOptions", {}), 1, node.name)
    ex = tmp(lw, f"{name}_exp", shape)
    lw.m.op(OP.EXP, [centered], [ex], None, 1, node.name)
    total = tmp(lw, f"{name}_sum", kept)
    lw.m.op(OP.SUM, [ex, ax], [total], keep_opts, 1, node.name)
    lg = tmp(lw, f"{name}_log", kept)
    lw.m.op(OP.LOG, [total], [lg], None, 1, node.name)
    out = lw.new(name, False)
    if keep:
        lw.m.op(OP.ADD, [lg, mx], [out.index], ("AddOptions", {}), 1, node.name)
    else:
        result = tmp(lw, f"{name}_kept", kept)
        lw.m.op(OP.ADD, [lg, mx], [result], ("AddOptions", {}), 1, node.name)
        lw.reshape_op(result, out.index, lw.shape(name))
    lw.bind(name, out)


# ---- shape ops ----------------------------------------------------------------------------------
def reshape(lw: Lowering, node) -> None:
    """Reshape, Flatten, Squeeze, Unsqueeze: a RESHAPE of the ONNX-ordered value to the ONNX shape."""
    x, out_name = node.input[0], node.output[0]
    v, s = lw.vals.get(x), lw.shape(x)
    same_bytes = v is not None and v.nhwc and (s[2] * s[3] == 1 or s[1] == 1)
    xv, int8 = _int8_in(lw, x, nhwc=None if same_bytes else False)  # NHWC with H=W=1 is NCHW in memory
    shape = lw.shape(out_name)
    out = _passthrough_out(lw, out_name, xv, False, int8)
    lw.reshape_op(xv.index, out.index, shape)
    lw.bind(out_name, out)
    if int8:
        _requant_to_next(lw, out_name, out)


def transpose(lw: Lowering, node) -> None:
    x, out_name = node.input[0], node.output[0]
    rank = len(lw.shape(x))
    perm = list(_attr(node, "perm", list(range(rank))[::-1]))
    v = lw.vals.get(x)
    if v is not None and rank == 4 and v.nhwc and perm == list(NHWC):
        lw.bind(out_name, Val(v.index, False))  # channels-last view of an NHWC value: same bytes
        return
    if v is not None and rank == 4 and not v.nhwc and perm == [0, 3, 1, 2]:
        lw.bind(out_name, Val(v.index, True))
        return
    xv, int8 = _int8_in(lw, x, nhwc=False)
    out = _passthrough_out(lw, out_name, xv, False, int8)
    p = lw.m.const("perm", np.array(perm, dtype=np.int32))
    lw.m.op(OP.TRANSPOSE, [xv.index, p], [out.index], None, transpose_version(rank, int8), node.name)
    lw.bind(out_name, out)
    if int8:
        _requant_to_next(lw, out_name, out)


def concat(lw: Lowering, node) -> None:
    out_name = node.output[0]
    rank = len(lw.shape(out_name))
    axis = _attr(node, "axis") % rank
    ins = [i for i in node.input if i]
    nhwc = rank == 4 and any(lw.vals.get(i) is not None and lw.vals[i].nhwc for i in ins)
    q = lw.out_quant(out_name)
    int8 = q is not None and all(lw.vals.get(i) is not None and lw.is_int8(lw.vals[i]) for i in ins)
    vals = []
    for i in ins:
        v = lw.get(i, nhwc=nhwc if rank == 4 else None, want_float=not int8)
        vals.append(lw.requant(i, v, q) if int8 else v)  # int8 concat needs one scale
    out = lw.new(out_name, nhwc, quant=q if int8 else None)
    stored = NHWC.index(axis) if nhwc else axis
    opts = ("ConcatenationOptions", {"Axis": stored, "FusedActivationFunction": 0})
    lw.m.op(OP.CONCATENATION, [v.index for v in vals], [out.index], opts, 2 if int8 else 1, node.name)
    lw.bind(out_name, out)


def _gather_axes(lw: Lowering, node, xv: Val, nhwc: bool, int8: bool, picks: dict[int, list[int]]) -> Val:
    """GATHERs of constant indices along ONNX axes (axis -> source index per output position), one
    per axis, the last writing the node's output: edge padding repeats the border index, a negative
    slice step lists its indices backwards. GATHER moves values, so int8 stays int8 at one scale."""
    shape = list(lw.m.tensors[xv.index].shape)
    cur = xv
    items = sorted(picks.items())
    for k, (axis, idx) in enumerate(items):
        stored = NHWC.index(axis) if nhwc else axis
        shape[stored] = len(idx)
        if k == len(items) - 1:
            out = _passthrough_out(lw, node.output[0], xv, nhwc, int8)
        else:
            out = Val(
                tmp(
                    lw,
                    f"{node.output[0]}_gather{k}",
                    list(shape),
                    quant=lw.quant_of(xv) if int8 else None,
                    dtype=lw.m.tensors[xv.index].dtype,
                ),
                nhwc,
            )
        ins = [cur.index, lw.m.const("indices", np.array(idx, np.int32))]
        lw.m.op(OP.GATHER, ins, [out.index], ("GatherOptions", {"Axis": stored}), 2 if int8 else 1, node.name)
        cur = out
    return cur


def pad(lw: Lowering, node) -> None:
    mode = _attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = [int(p) for p in lw.consts[node.input[1]]]
    value = float(lw.consts[node.input[2]]) if len(node.input) > 2 and node.input[2] else 0.0
    if len(node.input) > 3 and node.input[3]:
        raise unsupported(node, "padding over a subset of axes")
    if mode not in ("constant", "reflect", "edge"):
        raise unsupported(node, f"{mode} padding")
    x = node.input[0]
    shape = lw.shape(x)
    rank = len(shape)
    if any(p < 0 for p in pads):
        raise unsupported(node, f"negative pads {pads} (cropping)")
    v = lw.vals.get(x)
    nhwc = v is not None and v.nhwc and rank == 4
    xv, int8 = _int8_in(lw, x, nhwc=nhwc if rank == 4 else None)
    if mode == "edge":  # replicate: the border index repeated, a GATHER per padded axis
        picks = {
            a: [0] * pads[a] + list(range(shape[a])) + [shape[a] - 1] * pads[a + rank]
            for a in range(rank)
            if pads[a] or pads[a + rank]
        }
        if not picks:
            raise unsupported(node, "edge padding by nothing")
        lw.bind(node.output[0], _gather_axes(lw, node, xv, nhwc, int8, picks))
        return
    pairs = np.array([[pads[i], pads[i + rank]] for i in range(rank)], dtype=np.int32)
    if nhwc:
        pairs = pairs[list(NHWC)]
    out = _passthrough_out(lw, node.output[0], xv, nhwc, int8)
    paddings = lw.m.const("paddings", pairs)
    if mode == "reflect":  # ONNX reflect = TF REFLECT: the edge value is not repeated
        if any(p >= d for p, d in zip(pads, list(lw.shape(x)) * 2)):
            raise unsupported(node, "reflect padding as wide as the tensor")
        opts = ("MirrorPadOptions", {"Mode": 0})
        lw.m.op(OP.MIRROR_PAD, [xv.index, paddings], [out.index], opts, 2 if int8 else 1, node.name)
    elif value != 0.0:  # PADV2: the value a quantized input's scale gives it, in int8
        q = lw.quant_of(xv) if int8 else None
        if q is not None:
            qv = np.round(value / float(q.scale.reshape(-1)[0])) + int(np.asarray(q.zero_point).reshape(-1)[0])
            pv = np.array(np.clip(qv, -128, 127), np.int8)
        else:
            pv = np.array(value, np.float32)
        ins = [xv.index, paddings, lw.m.const("pad_value", pv.reshape(()), quant=q)]
        lw.m.op(OP.PADV2, ins, [out.index], None, 2 if int8 else 1, node.name)
    else:
        lw.m.op(OP.PAD, [xv.index, paddings], [out.index], None, 2 if int8 else 1, node.name)
    lw.bind(node.output[0], out)


def _stored_nhwc(lw: Lowering, name: str) -> bool:
    v = lw.vals.get(name)
    return len(lw.shape(name)) == 4 and v is not None and v.nhwc


def slice_(lw: Lowering, node) -> None:
    x = node.input[0]
    shape = lw.shape(x)
    rank = len(shape)
    starts, ends = lw.consts[node.input[1]], lw.consts[node.input[2]]
    axes = lw.consts[node.input[3]] if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
    steps = lw.consts[node.input[4]] if len(node.input) > 4 and node.input[4] else np.ones(len(starts), np.int64)
    begin, end, stride = [0] * rank, list(shape), [1] * rank
    if any(int(st) < 0 for st in steps):
        # (torch.flip exports as a step -1 slice.) Every sliced axis becomes a GATHER of the indices
        # the slice visits, in its order: ONNX clamps starts and ends as Python's slice.indices does
        picks = {}
        for s, e, a, st in zip(starts, ends, axes, steps):
            if int(st) == 0:
                raise unsupported(node, "a slice step of 0")
            a = int(a) % rank
            picks[a] = list(range(*slice(int(s), int(e), int(st)).indices(shape[a])))
            if not picks[a]:
                raise unsupported(node, f"an empty slice of axis {a}")
        nhwc = _stored_nhwc(lw, x)
        xv, int8 = _int8_in(lw, x, nhwc=nhwc)
        lw.bind(node.output[0], _gather_axes(lw, node, xv, nhwc, int8, picks))
        return
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = int(a) % rank
        if st <= 0:
            raise unsupported(node, "a slice step of 0")
        dim = shape[a]
        s, e = int(s), int(e)
        s = min(max(s + dim if s < 0 else s, 0), dim)
        e = min(max(e + dim if e < 0 else e, 0), dim)
        begin[a], end[a], stride[a] = s, e, int(st)
    # a value stored NHWC is sliced where it is (ShuffleNet's channel halves), not moved to NCHW
    nhwc = _stored_nhwc(lw, x)
    if nhwc:
        begin, end, stride = ([v[i] for i in NHWC] for v in (begin, end, stride))
    xv, int8 = _int8_in(lw, x, nhwc=nhwc)  # a slice moves elements: int8 stays int8, same scale
    out = _passthrough_out(lw, node.output[0], xv, nhwc, int8)
    ins = [xv.index] + [
        lw.m.const(n, np.array(v, np.int32)) for n, v in (("begin", begin), ("end", end), ("strides", stride))
    ]
    version = 4 if rank > 4 else (2 if int8 else 1)
    lw.m.op(OP.STRIDED_SLICE, ins, [out.index], ("StridedSliceOptions", {}), version, node.name)
    lw.bind(node.output[0], out)
    if int8:
        _requant_to_next(lw, node.output[0], out)


def split(lw: Lowering, node) -> None:
    x = node.input[0]
    rank = len(lw.shape(x))
    axis = _attr(node, "axis", 0) % rank
    outs = [o for o in node.output]
    sizes = [lw.shape(o)[axis] for o in outs]
    nhwc = _stored_nhwc(lw, x)  # split where the value is stored, as Slice
    xv = lw.get(x, nhwc=nhwc)
    int8 = lw.is_int8(xv)  # int8 parts keep the scale (GPT-2's query, key and value)
    if not int8:
        xv = lw.get(x, nhwc=nhwc, want_float=True)
    vals = [_passthrough_out(lw, o, xv, nhwc, int8) for o in outs]
    stored = NHWC.index(axis) if nhwc else axis
    ins = [xv.index, lw.m.const("sizes", np.array(sizes, np.int32)), lw.m.const("axis", np.array(stored, np.int32))]
    opts = ("SplitVOptions", {"NumSplits": len(outs)})
    lw.m.op(OP.SPLIT_V, ins, [v.index for v in vals], opts, 2 if int8 else 1, node.name)
    for o, v in zip(outs, vals):
        lw.bind(o, v)


def _int8_table(lw: Lowering, data: str, out: str) -> Quant | None:
    """The Quant of an int8 table's rows: a Gather of an int8 constant whose one consumer is a
    DequantizeLinear of one scale (how ``quantize_onnx`` writes an int8 embedding), or None."""
    users = lw.consumers.get(out, [])
    if data not in lw.consts or lw.consts[data].dtype != np.int8 or len(users) != 1:
        return None
    dq = users[0]
    if dq.op_type != "DequantizeLinear" or any(i not in lw.consts for i in dq.input[1:]):
        return None
    quant = lw.q_params(dq)
    return quant if quant.scale.size == 1 else None


def gather(lw: Lowering, node) -> None:
    data, idx = node.input[0], node.input[1]
    axis = _attr(node, "axis", 0) % len(lw.shape(data))
    if idx in lw.consts:
        # ONNX counts negative indices from the end (x[:, -1]); TFLite's GATHER refuses them
        ix = np.asarray(lw.consts[idx]).astype(np.int64)
        dim = lw.shape(data)[axis]
        if np.any(ix < -dim) or np.any(ix >= dim):
            raise unsupported(node, f"indices outside [-{dim}, {dim})")
        iv = lw.m.const("indices", np.where(ix < 0, ix + dim, ix).astype(np.int32))
    else:
        iv = lw.get(idx, nhwc=False).index
    table = _int8_table(lw, data, node.output[0])
    if table is not None:  # an int8 embedding table: int8 rows, dequantized where float is wanted
        tv = lw.m.const(data, lw.consts[data], table)
        out = lw.new(node.output[0], False, quant=table)
        lw.m.op(OP.GATHER, [tv, iv], [out.index], ("GatherOptions", {"Axis": axis}), 2, node.name)
        lw.bind(node.output[0], out)
        return
    dv = lw.get(data, nhwc=False, want_float=True)
    out = _passthrough_out(lw, node.output[0], dv, False, False)
    lw.m.op(OP.GATHER, [dv.index, iv], [out.index], ("GatherOptions", {"Axis": axis}), 1, node.name)
    lw.bind(node.output[0], out)


def gather_nd(lw: Lowering, node) -> None:
    """GatherND at constant indices (GPT-Neo's mask picked at fixed positions, static shapes) as one
    GATHER: the first q dims of the data flattened into one, the index tuples into flat positions.
    Computed indices or batch_dims have no lowering."""
    data, idx = node.input[0], node.input[1]
    if idx not in lw.consts or _attr(node, "batch_dims", 0) != 0:
        raise unsupported(node, "indices computed at run time, or batch_dims")
    shape = [int(d) for d in lw.shape(data)]
    ind = lw.consts[idx].astype(np.int64)
    q = int(ind.shape[-1]) if ind.ndim else 0
    lead = np.array(shape[:q], dtype=np.int64)
    if q < 1 or q > len(shape) or np.any(ind < -lead) or np.any(ind >= lead):
        raise unsupported(node, "index tuples outside the data")
    ind = np.where(ind < 0, ind + lead, ind)
    strides = np.array([int(np.prod(shape[k + 1 : q])) for k in range(q)], dtype=np.int64)
    flat = (ind * strides).sum(axis=-1).astype(np.int32)
    dv = lw.get(data, nhwc=False, want_float=True)
    src = dv.index
    if q > 1:  # [S0 * ... * Sq-1, Sq, ...]
        merged = [int(np.prod(shape[:q]))] + shape[q:]
        src = lw.m.tensor(f"{node.output[0]}_flat", merged, lw.m.tensors[dv.index].dtype, lw.quant_of(dv))
        lw.reshape_op(dv.index, src, merged)
    out = _passthrough_out(lw, node.output[0], dv, False, lw.quant_of(dv) is not None)
    lw.m.op(OP.GATHER, [src, lw.m.const("indices", flat)], [out.index], ("GatherOptions", {"Axis": 0}), 1, node.name)
    lw.bind(node.output[0], out)


# ONNX Resize (coordinate mode, nearest rounding) -> TFLite (align_corners, half_pixel_centers): the
# pairs that compute the same source pixel. PyTorch exports nn.Upsample(mode="nearest") as
# asymmetric + floor, mode="nearest-exact" as half_pixel + round_prefer_ceil ...
_NEAREST = {
    ("asymmetric", "floor"): (False, False),
    ("half_pixel", "round_prefer_ceil"): (False, True),
    ("pytorch_half_pixel", "round_prefer_ceil"): (False, True),
    ("align_corners", "round_prefer_ceil"): (True, False),
}
# ... and bilinear as pytorch_half_pixel (align_corners=False) or align_corners
_LINEAR = {"half_pixel": (False, True), "pytorch_half_pixel": (False, True), "align_corners": (True, False),
           "asymmetric": (False, False)}  # fmt: skip


def _resize_1d(lw: Lowering, node, code, table, align: bool, half: bool, shape, length: int) -> None:
    """Resize of the last dim of [N, C, L] (``nn.Upsample`` on audio or sensor sequences) as the
    image resize over a height of 1, in float: TRANSPOSE to [N, L, C], RESHAPE to [N, 1, L, C],
    RESIZE to [N, 1, L', C], RESHAPE and TRANSPOSE back."""
    n, c, l_in = shape
    xv = lw.get(node.input[0], nhwc=False, want_float=True)
    perm = np.array([0, 2, 1], np.int32)
    nlc = tmp(lw, f"{node.output[0]}_nlc", [n, l_in, c])
    lw.m.op(OP.TRANSPOSE, [xv.index, lw.m.const("perm", perm)], [nlc], None, 1, node.name)
    img = tmp(lw, f"{node.output[0]}_image", [n, 1, l_in, c])
    lw.reshape_op(nlc, img, [n, 1, l_in, c])
    resized = tmp(lw, f"{node.output[0]}_resized", [n, 1, length, c])
    size = lw.m.const("size", np.array([1, length], np.int32))
    opts = (table, {"AlignCorners": align, "HalfPixelCenters": half})
    lw.m.op(code, [img, size], [resized], opts, 3 if half else 1, node.name)
    back = tmp(lw, f"{node.output[0]}_nlc_out", [n, length, c])
    lw.reshape_op(resized, back, [n, length, c])
    out = lw.new(node.output[0], False)
    lw.m.op(OP.TRANSPOSE, [back, lw.m.const("perm", perm)], [out.index], None, 1, node.name)
    lw.bind(node.output[0], out)


def resize(lw: Lowering, node) -> None:
    """Resize of the two spatial dims of a rank-4 tensor, nearest or linear, to a static size:
    RESIZE_NEAREST_NEIGHBOR (int8 stays int8, same scale) or RESIZE_BILINEAR (float)."""
    x = node.input[0]
    shape, out_shape = list(lw.shape(x)), list(lw.shape(node.output[0]))
    mode = _attr(node, "mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    coord = _attr(node, "coordinate_transformation_mode", b"half_pixel")
    coord = coord.decode() if isinstance(coord, bytes) else str(coord)
    rounding = _attr(node, "nearest_mode", b"round_prefer_floor")
    rounding = rounding.decode() if isinstance(rounding, bytes) else str(rounding)
    one_d = len(shape) == 3 and len(out_shape) == 3 and shape[:2] == out_shape[:2]
    if not one_d and (len(shape) != 4 or len(out_shape) != 4 or shape[:2] != out_shape[:2]):
        raise unsupported(node, "a resize other than of the spatial dims of an NCHW or NCL tensor")
    if mode == "nearest":
        flags, code, table = _NEAREST.get((coord, rounding)), OP.RESIZE_NEAREST_NEIGHBOR, "ResizeNearestNeighborOptions"
    elif mode == "linear":
        flags, code, table = _LINEAR.get(coord), OP.RESIZE_BILINEAR, "ResizeBilinearOptions"
    else:
        flags = None
    if flags is None:
        raise unsupported(node, f"mode {mode}, coordinate_transformation_mode {coord}, nearest_mode {rounding}")
    align, half = flags
    if one_d:
        return _resize_1d(lw, node, code, table, align, half, shape, out_shape[2])
    if mode == "nearest":
        xv, int8 = _int8_in(lw, x, nhwc=True)
    else:
        xv, int8 = lw.get(x, nhwc=True, want_float=True), False
    out = _passthrough_out(lw, node.output[0], xv, True, int8)
    size = lw.m.const("size", np.array(out_shape[2:], np.int32))
    opts = (table, {"AlignCorners": align, "HalfPixelCenters": half})
    # TFLite's versions: 2 for int8, 3 for half_pixel_centers
    lw.m.op(code, [xv.index, size], [out.index], opts, 3 if half else (2 if int8 else 1), node.name)
    lw.bind(node.output[0], out)


def expand(lw: Lowering, node) -> None:
    xv = lw.get(node.input[0], nhwc=False)
    int8 = lw.is_int8(xv)  # int8 repeats keep the scale (grouped-query keys and values)
    if not int8:
        xv = lw.get(node.input[0], nhwc=False, want_float=True)
    shape = lw.shape(node.output[0])
    out = _passthrough_out(lw, node.output[0], xv, False, int8)
    # TFLite's versions: 2, 3 for int8 data
    version = 3 if int8 else 2
    lw.m.op(OP.BROADCAST_TO, [xv.index, lw.m.const("shape", np.array(shape, np.int32))], [out.index], None, version)
    lw.bind(node.output[0], out)


def tile(lw: Lowering, node) -> None:
    """Tile by constant repeats (``x.repeat``) as BROADCAST_TO: each repeated axis of size d gets a
    new axis of size 1 before it, broadcast to the repeat count r, and the two merged into r * d
    (copy-major, as Tile lays them out); plain layout, int8 keeps its scale."""
    reps = node.input[1]
    if reps not in lw.consts:
        raise unsupported(node, "Tile repeats computed at run time")
    r = [int(v) for v in np.asarray(lw.consts[reps]).reshape(-1)]
    shape = list(lw.shape(node.input[0]))
    if len(r) != len(shape) or min(r, default=1) < 1:
        raise unsupported(node, f"Tile repeats {r} for a rank-{len(shape)} input")
    xv = lw.get(node.input[0], nhwc=False)
    int8 = lw.is_int8(xv)
    if not int8:
        xv = lw.get(node.input[0], nhwc=False, want_float=True)
    q = lw.quant_of(xv) if int8 else None
    dtype = lw.m.tensors[xv.index].dtype
    split, wide = [], []  # [.., 1, d, ..] and [.., r, d, ..]
    for d, k in zip(shape, r):
        split += [1, d] if k > 1 else [d]
        wide += [k, d] if k > 1 else [d]
    v = lw.m.tensor(f"{node.output[0]}_axes", split, dtype, q)
    lw.reshape_op(xv.index, v, split)
    b = lw.m.tensor(f"{node.output[0]}_copies", wide, dtype, q)
    lw.m.op(OP.BROADCAST_TO, [v, lw.m.const("shape", np.array(wide, np.int32))], [b], None, 3 if int8 else 2)
    out = _passthrough_out(lw, node.output[0], xv, False, int8)
    lw.reshape_op(b, out.index, [d * k for d, k in zip(shape, r)])
    lw.bind(node.output[0], out)


LOGIC = {
    "And": OP.LOGICAL_AND,
    "Or": OP.LOGICAL_OR,
    "Not": OP.LOGICAL_NOT,
    "Equal": OP.EQUAL,
    "Greater": OP.GREATER,
    "GreaterOrEqual": OP.GREATER_EQUAL,
    "Less": OP.LESS,
    "LessOrEqual": OP.LESS_EQUAL,
    "Where": OP.SELECT_V2,
    "IsNaN": OP.NOT_EQUAL,
    "Cast": OP.CAST,
}


def logic(lw: Lowering, node) -> None:
    """Comparisons, logic, Where, Cast and IsNaN (x != x): the attention-mask arithmetic of
    transformers models. Plain layout, numpy broadcasting (which TFLite shares), float inputs."""
    from .tflite_lower_const import infer_dtypes

    if lw.dtypes is None:
        lw.dtypes = infer_dtypes(lw.proto)
    ins = list(node.input) * 2 if node.op_type == "IsNaN" else list(node.input)
    idx = []
    for i in ins:
        if i in lw.consts:
            v = lw.consts[i]
            idx.append(lw.m.const(i, v.astype(np.float32) if v.dtype == np.float64 else v))
        else:
            idx.append(lw.get(i, nhwc=False, want_float=True).index)
    out = lw.new(node.output[0], False, dtype=lw.dtypes.get(node.output[0], np.float32))
    lw.m.op(LOGIC[node.op_type], idx, [out.index], None, 1, node.name)
    lw.bind(node.output[0], out)


def cumsum(lw: Lowering, node) -> None:
    """CumSum along a constant axis (RoBERTa's position ids from the padding mask), in the value's
    own type (float32, int32 or int64) and plain layout; TFLite's CUMSUM takes the same options."""
    if node.input[1] not in lw.consts:
        raise unsupported(node, "a cumulative sum along an axis computed at run time")
    rank = len(lw.shape(node.input[0]))
    axis = int(np.asarray(lw.consts[node.input[1]]).reshape(-1)[0]) % rank
    xv = lw.get(node.input[0], nhwc=False, want_float=True)
    out = _passthrough_out(lw, node.output[0], xv, False, False)
    opts = {"Exclusive": bool(_attr(node, "exclusive", 0)), "Reverse": bool(_attr(node, "reverse", 0))}
    ins = [xv.index, lw.m.const("axis", np.array(axis, np.int32))]
    lw.m.op(OP.CUMSUM, ins, [out.index], ("CumsumOptions", opts), 1, node.name)
    lw.bind(node.output[0], out)


def arg_max(lw: Lowering, node) -> None:
    """ArgMax (CLIP pools its text at the argmax of the ids): ARG_MAX, which drops the axis (a
    RESHAPE restores it for keepdims), with ONNX's int64 indices; the first maximum, as ONNX's
    default ``select_last_index=0``."""
    if _attr(node, "select_last_index", 0):
        raise unsupported(node, "ArgMax with select_last_index=1")
    x = node.input[0]
    rank = len(lw.shape(x))
    axis = _attr(node, "axis", 0) % rank
    xv = lw.get(x, nhwc=False, want_float=True)
    dropped = [d for i, d in enumerate(lw.shape(x)) if i != axis]
    ax = lw.m.const("axis", np.array([axis], np.int32))
    out_name = node.output[0]
    if _attr(node, "keepdims", 1):
        t = tmp(lw, f"{out_name}_dropped", dropped, dtype=np.int64)
        lw.m.op(OP.ARG_MAX, [xv.index, ax], [t], ("ArgMaxOptions", {"OutputType": 4}), 1, node.name)
        out = lw.new(out_name, False, dtype=np.int64)
        lw.reshape_op(t, out.index, lw.shape(out_name))
    else:
        out = lw.new(out_name, False, dtype=np.int64)
        lw.m.op(OP.ARG_MAX, [xv.index, ax], [out.index], ("ArgMaxOptions", {"OutputType": 4}), 1, node.name)
    lw.bind(out_name, out)


def gather_elements(lw: Lowering, node) -> None:
    """GatherElements of a uniform constant (RoBERTa's token types: a zeros buffer expanded, then
    gathered at the position ids): every index picks the same value, so the result is that value
    in the output's shape, a constant. Any other GatherElements has no TFLite lowering."""
    data = node.input[0]
    src = lw.consts.get(data)
    if src is None:
        prod = next((n for n in lw.graph.node if data in n.output), None)
        if prod is not None and prod.op_type == "Expand" and prod.input[0] in lw.consts:
            src = lw.consts[prod.input[0]]
    if src is None or src.size == 0 or not np.all(src == src.reshape(-1)[0]):
        raise unsupported(node, "a gather of elements from values that differ")
    lw.consts[node.output[0]] = np.full(lw.shape(node.output[0]), src.reshape(-1)[0], dtype=src.dtype)


# ---- normalizations -----------------------------------------------------------------------------
def _chain(lw: Lowering, name: str, steps, x: int, shape, final: int) -> None:
    """Emit ``steps`` = [(code, other input index or None, options, out shape or None)] from ``x``."""
    cur = x
    for i, (code, other, opts, oshape) in enumerate(steps):
        nxt = final if i == len(steps) - 1 else tmp(lw, f"{name}_{i}", oshape or shape)
        lw.m.op(code, [cur] + ([other] if other is not None else []), [nxt], opts, 1, name)
        cur = nxt


def _normalize(lw: Lowering, node, xv: Val, axes: list[int], gamma, beta, eps: float) -> None:
    """(x - mean) * rsqrt(var + eps) * gamma + beta over the stored ``axes``: MEAN, SUB, MUL, MEAN, ADD,
    RSQRT, MUL, MUL, ADD (``gamma``/``beta`` already shaped to broadcast, or None)."""
    shape = lw.m.tensors[xv.index].shape
    red = [1 if i in axes else d for i, d in enumerate(shape)]
    name = node.output[0]
    ax = lw.m.const("axes", np.array(axes, np.int32))
    mean = tmp(lw, f"{name}_mean", red)
    lw.m.op(OP.MEAN, [xv.index, ax], [mean], ("ReducerOptions", {"KeepDims": True}), 1, node.name)
    d = tmp(lw, f"{name}_centered", shape)
    lw.m.op(OP.SUB, [xv.index, mean], [d], ("SubOptions", {}), 1, node.name)
    sq = tmp(lw, f"{name}_sq", shape)
    lw.m.op(OP.MUL, [d, d], [sq], ("MulOptions", {}), 1, node.name)
    var = tmp(lw, f"{name}_var", red)
    lw.m.op(OP.MEAN, [sq, ax], [var], ("ReducerOptions", {"KeepDims": True}), 1, node.name)
    out = lw.new(name, xv.nhwc)
    steps = [
        (OP.ADD, lw.m.const("eps", np.float32(eps)), ("AddOptions", {}), red),
        (OP.RSQRT, None, None, red),
        (OP.MUL, d, ("MulOptions", {}), shape),
    ]
    if gamma is not None:
        steps.append((OP.MUL, lw.m.const("gamma", gamma.astype(np.float32)), ("MulOptions", {}), shape))
    if beta is not None:
        steps.append((OP.ADD, lw.m.const("beta", beta.astype(np.float32)), ("AddOptions", {}), shape))
    _chain(lw, name, steps, var, shape, out.index)
    lw.bind(name, out)


def layer_norm(lw: Lowering, node) -> None:
    """LayerNormalization over the axes from ``axis`` to the last (decomposed: TFLite has no builtin
    layer norm), in the ONNX layout, where gamma and beta [shape[axis:]] broadcast as they are."""
    x = node.input[0]
    rank = len(lw.shape(x))
    axis = _attr(node, "axis", -1) % rank
    xv = lw.get(x, nhwc=False, want_float=True)
    gamma = lw.consts[node.input[1]] if len(node.input) > 1 and node.input[1] else None
    beta = lw.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    _normalize(lw, node, xv, list(range(axis, rank)), gamma, beta, float(_attr(node, "epsilon", 1e-5)))


def instance_norm(lw: Lowering, node) -> None:
    """InstanceNormalization (what GroupNorm exports to): per (sample, channel) over the rest."""
    x = node.input[0]
    rank = len(lw.shape(x))
    gamma, beta = lw.consts[node.input[1]], lw.consts[node.input[2]]
    eps = float(_attr(node, "epsilon", 1e-5))
    if rank == 4:
        xv = lw.get(x, nhwc=True, want_float=True)
        return _normalize(lw, node, xv, [1, 2], gamma, beta, eps)
    xv = lw.get(x, nhwc=False, want_float=True)
    bshape = (-1,) + (1,) * (rank - 2)
    _normalize(lw, node, xv, list(range(2, rank)), gamma.reshape(bshape), beta.reshape(bshape), eps)


def batch_norm(lw: Lowering, node) -> None:
    """An unfolded BatchNormalization (inference): MUL by scale, ADD shift, per channel."""
    x = node.input[0]
    rank = len(lw.shape(x))
    if rank not in (2, 4):
        raise unsupported(node, f"batch norm on a rank-{rank} tensor")
    gamma, beta, mean, var = (lw.consts[i].astype(np.float64) for i in node.input[1:5])
    eps = float(_attr(node, "epsilon", 1e-5))
    scale = (gamma / np.sqrt(var + eps)).astype(np.float32)
    shift = (beta - mean * gamma / np.sqrt(var + eps)).astype(np.float32)
    xv = lw.get(x, nhwc=True if rank == 4 else None, want_float=True)
    act, final = fuse_act(lw, node.output[0])
    shape = lw.m.tensors[xv.index].shape
    t = tmp(lw, f"{node.output[0]}_scaled", shape)
    lw.m.op(OP.MUL, [xv.index, lw.m.const("bn_scale", scale)], [t], ("MulOptions", {}), 1, node.name)
    out = lw.new(final, rank == 4)
    opts = ("AddOptions", {"FusedActivationFunction": act})
    lw.m.op(OP.ADD, [t, lw.m.const("bn_shift", shift)], [out.index], opts, 1, node.name)
    bind_all(lw, {node.output[0], final}, out)


# ---- patterns -----------------------------------------------------------------------------------
def _only_user(lw: Lowering, name: str, op_type: str):
    users = lw.consumers.get(name, [])
    if len(users) == 1 and users[0].op_type == op_type and name not in lw.graph_outputs:
        return users[0]
    return None


def _const_of(lw: Lowering, node, other_than: str):
    c = [i for i in node.input if i != other_than]
    if len(c) == 1 and c[0] in lw.consts and lw.consts[c[0]].size == 1:
        return float(lw.consts[c[0]].reshape(-1)[0])
    return None


def _gelu_at(lw: Lowering, producers: dict, erf) -> tuple[str, list, str] | None:
    """(x, the matched nodes, output) of x * 0.5 * (1 + erf(x / sqrt(2))) around ``erf``."""
    scale = producers.get(erf.input[0])
    if scale is None or scale.op_type not in ("Div", "Mul"):
        return None
    x = scale.input[0]
    c = _const_of(lw, scale, x)
    if c is None or not np.isclose(c if scale.op_type == "Div" else 1 / c, np.sqrt(2), rtol=1e-5):
        return None
    add = _only_user(lw, erf.output[0], "Add")
    if add is None or _const_of(lw, add, erf.output[0]) != 1.0:
        return None
    nodes, cur, seen_x, seen_half = [scale, erf, add], add.output[0], False, False
    for _ in range(2):
        m = _only_user(lw, cur, "Mul")
        if m is None:
            return None
        other = m.input[1] if m.input[0] == cur else m.input[0]
        if other == x and not seen_x:
            seen_x = True
        elif _const_of(lw, m, cur) == 0.5 and not seen_half:
            seen_half = True
        else:
            return None
        nodes.append(m)
        cur = m.output[0]
    return x, nodes, cur


def _single(lw: Lowering, name: str) -> bool:
    return len(lw.consumers.get(name, [])) == 1 and name not in lw.graph_outputs


def _mul_by_const(lw: Lowering, producers: dict, name: str, value: float):
    """(the Mul node, its other input) where ``name`` is a single-use Mul by a scalar constant
    close to ``value``, else None."""
    n = producers.get(name)
    if n is None or n.op_type != "Mul" or not _single(lw, name):
        return None
    other = [i for i in n.input if i not in lw.consts]
    if len(other) != 1:
        return None
    c = _const_of(lw, n, other[0])
    return (n, other[0]) if c is not None and np.isclose(c, value, rtol=1e-4) else None


def _cube_nodes(lw: Lowering, producers: dict, name: str, x: str) -> list | None:
    """The nodes computing ``name`` = x**3: Pow(x, 3), or x * (x * x) in either order."""
    n = producers.get(name)
    if n is None or not _single(lw, name):
        return None
    if n.op_type == "Pow" and n.input[0] == x and _const_of(lw, n, x) == 3.0:
        return [n]
    if n.op_type == "Mul" and x in n.input:
        sq = n.input[1] if n.input[0] == x else n.input[0]
        p = producers.get(sq)
        if p is not None and p.op_type == "Mul" and list(p.input) == [x, x] and _single(lw, sq):
            return [p, n]
    return None


def _gelu_tanh_at(lw: Lowering, producers: dict, tanh) -> tuple[str, list, str] | None:
    """(x, the matched nodes, output) of x * 0.5 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    around ``tanh``, in the orders torch's decomposition of F.gelu(approximate="tanh") and GPT-2's
    hand-written form (x**3 as Pow) give."""
    inner = _mul_by_const(lw, producers, tanh.input[0], float(np.sqrt(2 / np.pi)))
    if inner is None:
        return None
    s = producers.get(inner[1])
    if s is None or s.op_type != "Add" or not _single(lw, inner[1]):
        return None
    for x, v in ((s.input[0], s.input[1]), (s.input[1], s.input[0])):
        scaled = _mul_by_const(lw, producers, v, 0.044715)
        cube = scaled and _cube_nodes(lw, producers, scaled[1], x)
        if cube:
            break
    else:
        return None
    add = _only_user(lw, tanh.output[0], "Add")
    if add is None or _const_of(lw, add, tanh.output[0]) != 1.0:
        return None
    nodes = [*cube, scaled[0], s, inner[0], tanh, add]
    # 0.5 * x * (1 + t) in any association: (x * (1 + t)) * 0.5, (0.5 * (1 + t)) * x, or
    # (x * 0.5) * (1 + t)
    m1 = _only_user(lw, add.output[0], "Mul")
    if m1 is None:
        return None
    other = m1.input[1] if m1.input[0] == add.output[0] else m1.input[0]
    half = _mul_by_const(lw, producers, other, 0.5)
    if half is not None and half[1] == x:
        return x, [half[0], *nodes, m1], m1.output[0]
    m2 = _only_user(lw, m1.output[0], "Mul")
    if m2 is None:
        return None
    last = m2.input[1] if m2.input[0] == m1.output[0] else m2.input[0]
    if (other == x and _const_of(lw, m2, m1.output[0]) == 0.5) or (
        _const_of(lw, m1, add.output[0]) == 0.5 and last == x
    ):
        return x, [*nodes, m1, m2], m2.output[0]
    return None


def _shuffle_at(lw: Lowering, producers: dict, tr) -> tuple[str, list, str] | None:
    """(x, the matched nodes, output) of a channel shuffle around its Transpose: Reshape
    [N, C, H, W] -> [N, g, C/g, H, W], Transpose (0, 2, 1, 3, 4), Reshape back to [N, C, H, W]
    (ShuffleNet)."""
    if list(_attr(tr, "perm", [])) != [0, 2, 1, 3, 4]:
        return None
    r1 = producers.get(tr.input[0])
    if r1 is None or r1.op_type != "Reshape" or not _single(lw, tr.input[0]):
        return None
    r2 = _only_user(lw, tr.output[0], "Reshape")
    if r2 is None:
        return None
    x = r1.input[0]
    xs, s1 = list(lw.shape(x)), list(lw.shape(r1.output[0]))
    if len(xs) != 4 or len(s1) != 5 or list(lw.shape(r2.output[0])) != xs:
        return None
    n, c, h, w = xs
    if s1[0] != n or s1[1] * s1[2] != c or s1[3:] != [h, w]:
        return None
    return x, [r1, tr, r2], r2.output[0]


def _emit_shuffle(lw: Lowering, x: str, nodes: list, out_name: str) -> None:
    """A channel shuffle of an NHWC value as one small TRANSPOSE of its channels: [N, H, W, g, C/g]
    -> [N, H, W, C/g, g] between two free RESHAPEs, where the ONNX form would move the whole
    tensor to NCHW and back (three full transposes). Values not stored NHWC take the ONNX ops."""
    v = lw.vals.get(x)
    if v is None or not v.nhwc:
        for node in nodes:
            SHAPE_HANDLERS[node.op_type](lw, node)
        return
    xv, int8 = _int8_in(lw, x)
    n, c, h, w = lw.shape(x)
    g = int(lw.shape(nodes[0].output[0])[1])
    q = lw.quant_of(xv) if int8 else None
    dtype = lw.m.tensors[xv.index].dtype
    name = nodes[1].name
    grouped = tmp(lw, f"{name}_groups", [n, h, w, g, c // g], quant=q, dtype=dtype)
    lw.reshape_op(xv.index, grouped, [n, h, w, g, c // g])
    shuffled = tmp(lw, f"{name}_shuffled", [n, h, w, c // g, g], quant=q, dtype=dtype)
    perm = lw.m.const("perm", np.array([0, 1, 2, 4, 3], dtype=np.int32))
    lw.m.op(OP.TRANSPOSE, [grouped, perm], [shuffled], None, 4, name)
    out = _passthrough_out(lw, out_name, xv, True, int8)
    lw.reshape_op(shuffled, out.index, [n, h, w, c])
    lw.bind(out_name, out)
    if int8:
        _requant_to_next(lw, out_name, out)


def match_patterns(lw: Lowering) -> dict:
    """{node name: emitter} for multi-node patterns written as fewer TFLite ops: GELU, exact (the
    erf form) and approximate (the tanh form), and channel shuffles. The ops are written where the
    pattern's first node stood."""
    producers = {o: n for n in lw.graph.node for o in n.output}
    order = {n.name: i for i, n in enumerate(lw.graph.node)}
    found = {}
    candidates = [(n, _gelu_at, False) for n in lw.graph.node if n.op_type == "Erf"]
    candidates += [(n, _gelu_tanh_at, True) for n in lw.graph.node if n.op_type == "Tanh"]
    for anchor, match, approximate in candidates:
        m = match(lw, producers, anchor)
        if m is None:
            continue
        x, nodes, out = m
        first = min(nodes, key=lambda n: order[n.name])
        for n in nodes:
            if n is not first:
                lw.skip.add(n.name)

        def emit(x=x, out=out, name=first.name, approximate=approximate):
            xv = lw.get(x, want_float=True)
            o = lw.new(out, xv.nhwc)
            opts = ("GeluOptions", {"Approximate": approximate})
            lw.m.op(OP.GELU, [xv.index], [o.index], opts, 1, name)
            lw.bind(out, o)

        found[first.name] = emit
    for tr in (n for n in lw.graph.node if n.op_type == "Transpose"):
        m = _shuffle_at(lw, producers, tr)
        if m is None:
            continue
        x, nodes, out = m
        for n in nodes[1:]:
            lw.skip.add(n.name)
        found[nodes[0].name] = lambda x=x, nodes=nodes, out=out: _emit_shuffle(lw, x, nodes, out)
    return found


SHAPE_HANDLERS = {
    **{k: logic for k in LOGIC},
    "MaxPool": pool,
    "AveragePool": pool,
    "GlobalAveragePool": global_average_pool,
    "GlobalMaxPool": global_max_pool,
    "ReduceMax": reduce_extreme,
    "ReduceMin": reduce_extreme,
    "DepthToSpace": depth_to_space,
    "ReduceMean": reduce_mean,
    "ReduceSum": reduce_sum,
    "ReduceLogSumExp": reduce_log_sum_exp,
    "ReduceL2": reduce_sum,
    "Reshape": reshape,
    "Flatten": reshape,
    "Squeeze": reshape,
    "Unsqueeze": reshape,
    "Transpose": transpose,
    "Concat": concat,
    "Pad": pad,
    "Slice": slice_,
    "Split": split,
    "Gather": gather,
    "CumSum": cumsum,
    "GatherElements": gather_elements,
    "GatherND": gather_nd,
    "Resize": resize,
    "ArgMax": arg_max,
    "Expand": expand,
    "Tile": tile,
    "LayerNormalization": layer_norm,
    "InstanceNormalization": instance_norm,
    "BatchNormalization": batch_norm,
}
