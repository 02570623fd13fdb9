"""Test helper: writes small float32 .tflite files from a list of operators, with the flatbuffers
builder and the schema bindings of pip ``tflite``, so runtime tests can compare our runtime with
LiteRT on identical files before edgeprune's own TFLite writer exists.

Consumes: numpy weights and operator calls (conv2d, depthwise, fc, add, ...). Produces: the bytes
of a .tflite file (schema version 3), dense or with TFLite's sparse weight encoding + DENSIFY.
Not a product API: tests only.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
import tflite

_DTYPES = {np.float32: 0, np.float16: 1, np.int32: 2, np.int64: 4, np.bool_: 6, np.int8: 9}
_ACT = {None: 0, "relu": 1, "relu_n1_to_1": 2, "relu6": 3, "tanh": 4}
_OPTS = {  # builtin options union values (TFLite's schema)
    "conv": 1,
    "dw": 2,
    "pool": 5,
    "fc": 8,
    "softmax": 9,
    "concat": 10,
    "add": 11,
    "reshape": 17,
    "mul": 21,
    "reducer": 27,
    "sub": 28,
    "slice": 32,
    "gather": 23,
    "bmm": 101,
    "gelu": 116,
    "splitv": 79,
    "tconv": 49,
    "cumsum": 102,
    "argmax": 40,
    "leaky": 75,
    "mirror": 77,
}


# operators whose first TFLite version is not 1 (BROADCAST_TO starts at 2), or whose options
# used here need a later one
_VERSIONS = {130: 2, 67: 4}  # TRANSPOSE_CONV 4: a fused activation


def _out_dim(n, k, stride, dilation, padding):
    ek = (k - 1) * dilation + 1
    return -(-n // stride) if padding == "same" else -(-(n - ek + 1) // stride)


def sparse_encoding(w: np.ndarray, block: int = 1):
    """TFLite's sparsity parameters for a weight whose last dim is the sparse one: all leading dims
    DENSE, the last SPARSE_CSR; block=4 groups 4 rows of the first dim (4x1 blocks)."""
    w = np.asarray(w, np.float32)
    lead = w.reshape(-1, w.shape[-1]) if block == 1 else w.reshape(w.shape[0] // block, block, -1)
    segments, indices, values = [0], [], []
    if block == 1:
        for row in lead:
            nz = np.flatnonzero(row)
            indices += nz.tolist()
            values += row[nz].tolist()
            segments.append(len(indices))
        dims = [("dense", s) for s in w.shape[:-1]] + [("csr", segments, indices)]
        return {"order": list(range(w.ndim)), "block_map": None, "dims": dims, "values": values}
    assert w.ndim == 2, "4x1 blocks: 2-D weights"
    for rows in lead:  # rows [4, K]
        nz = np.flatnonzero(np.any(rows != 0, axis=0))
        indices += nz.tolist()
        values += rows[:, nz].T.reshape(-1).tolist()
        segments.append(len(indices))
    dims = [("dense", w.shape[0] // 4), ("csr", segments, indices), ("dense", 4)]
    return {"order": [0, 1, 2], "block_map": [0], "dims": dims, "values": values}


class Builder:
    """Collects tensors and operators of one subgraph; ``finish()`` returns the file bytes."""

    def __init__(self):
        self.tensors: list[dict] = []
        self.ops: list[tuple] = []
        self.codes: list[int] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    # ------------------------------------------------------------------ tensors
    def tensor(self, shape, dtype=np.float32, data=None, sparsity=None, name=None, quant=None) -> int:
        """quant: (scales, zero points, quantized dimension) written as the tensor's
        QuantizationParameters as given (tests of hostile files write inconsistent ones)."""
        self.tensors.append(
            {
                "shape": [int(s) for s in shape],
                "dtype": dtype,
                "data": None if data is None else np.ascontiguousarray(data, dtype).tobytes(),
                "sparsity": sparsity,
                "name": name or f"t{len(self.tensors)}",
                "quant": quant,
            }
        )
        return len(self.tensors) - 1

    def const(self, arr, dtype=np.float32) -> int:
        arr = np.asarray(arr, dtype)
        return self.tensor(arr.shape, dtype, arr)

    def input(self, shape, dtype=np.float32) -> int:
        t = self.tensor(shape, dtype)
        self.inputs.append(t)
        return t

    def shape(self, t):
        return self.tensors[t]["shape"]

    def op(self, code, inputs, out_shape, options=None, out_dtype=np.float32) -> int:
        out = self.tensor(out_shape, out_dtype)
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append((self.codes.index(code), list(inputs), out, options))
        return out

    def weight(self, w, sparse=None) -> int:
        """A float32 constant; sparse=1 or 4 stores it in TFLite's sparse encoding + DENSIFY."""
        if not sparse:
            return self.const(w)
        enc = sparse_encoding(w, sparse)
        t = self.tensor(w.shape, np.float32, np.asarray(enc["values"], np.float32), sparsity=enc)
        return self.op(124, [t], list(w.shape))

    # ------------------------------------------------------------------ operators
    def conv2d(self, x, w, b=None, stride=1, padding="same", act=None, dilation=1, sparse=None):
        n, h, wd, _ = self.shape(x)
        oh, ow = (_out_dim(s, k, stride, dilation, padding) for s, k in ((h, w.shape[1]), (wd, w.shape[2])))
        ins = [x, self.weight(w, sparse)] + ([self.const(b)] if b is not None else [-1])
        opt = ("conv", dict(padding=padding, stride=stride, act=act, dilation=dilation))
        return self.op(3, ins, [n, oh, ow, w.shape[0]], opt)

    def transpose_conv(self, x, w, b=None, stride=2, padding="valid", act=None, out_hw=None):
        """TRANSPOSE_CONV with weights w [O, KH, KW, I]. The output size defaults to the one the
        padding implies ((n - 1) * stride + k for VALID, n * stride for SAME)."""
        n, h, wd, _ = self.shape(x)
        if out_hw is None:
            out_hw = [
                (s - 1) * stride + k if padding == "valid" else s * stride
                for s, k in ((h, w.shape[1]), (wd, w.shape[2]))
            ]
        out = [n, *out_hw, w.shape[0]]
        ins = [self.const(out, np.int32), self.const(w), x] + ([self.const(b)] if b is not None else [])
        return self.op(67, ins, out, ("tconv", dict(padding=padding, stride=stride, act=act)))

    def depthwise(self, x, w, b=None, stride=1, padding="same", act=None, dilation=1):
        n, h, wd, c = self.shape(x)
        oh, ow = (_out_dim(s, k, stride, dilation, padding) for s, k in ((h, w.shape[1]), (wd, w.shape[2])))
        ins = [x, self.const(w)] + ([self.const(b)] if b is not None else [-1])
        opt = ("dw", dict(padding=padding, stride=stride, act=act, dilation=dilation, mult=w.shape[3] // c))
        return self.op(4, ins, [n, oh, ow, w.shape[3]], opt)

    def fc(self, x, w, b=None, act=None, sparse=None):
        rows = int(np.prod(self.shape(x))) // w.shape[1]
        ins = [x, self.weight(w, sparse)] + ([self.const(b)] if b is not None else [-1])
        return self.op(9, ins, [rows, w.shape[0]], ("fc", dict(act=act)))

    def binary(self, kind, a, b, act=None, dtype=np.float32):
        sa, sb = self.shape(a), self.shape(b)
        out = list(np.broadcast_shapes(tuple(sa), tuple(sb)))
        code = {"add": 0, "mul": 18, "sub": 41}[kind]
        return self.op(code, [a, b], out, (kind, dict(act=act)), dtype)

    def arg_max(self, x, axis, dtype=np.int64):
        s = self.shape(x)
        out = [d for i, d in enumerate(s) if i != axis % len(s)]
        ax = self.const([axis], np.int32)
        return self.op(56, [x, ax], out, ("argmax", dict(type=4 if dtype == np.int64 else 2)), dtype)

    def cumsum(self, x, axis, exclusive=False, reverse=False, dtype=np.float32):
        ax = self.const(axis, np.int32)
        return self.op(128, [x, ax], self.shape(x), ("cumsum", dict(exclusive=exclusive, reverse=reverse)), dtype)

    def unary(self, code, x):
        return self.op(code, [x], self.shape(x))

    # ------------------------------------------------------------ transformer / typed operators
    def elementwise(self, code, ins, out_dtype=np.float32):
        """An operator without options whose output is its inputs' broadcast shape (MAXIMUM,
        comparisons, LOGICAL_*, SELECT_V2)."""
        out = list(np.broadcast_shapes(*[tuple(self.shape(i)) for i in ins]))
        return self.op(code, ins, out, None, out_dtype)

    def batch_matmul(self, a, b, adj_x=False, adj_y=False):
        sa, sb = self.shape(a), self.shape(b)
        m = sa[-1] if adj_x else sa[-2]
        n = sb[-2] if adj_y else sb[-1]
        out = list(np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))) + [m, n]
        return self.op(126, [a, b], out, ("bmm", dict(adj_x=adj_x, adj_y=adj_y)))

    def gather(self, params, indices, axis=0, dtype=np.float32):
        sp, si = self.shape(params), self.shape(indices)
        axis %= len(sp)
        out = sp[:axis] + si + sp[axis + 1 :]
        return self.op(36, [params, indices], out, ("gather", dict(axis=axis)), dtype)

    def gelu(self, x, approximate=False):
        return self.op(150, [x], self.shape(x), ("gelu", dict(approximate=approximate)))

    def cast(self, x, dtype):
        return self.op(53, [x], self.shape(x), None, dtype)

    def split_v(self, x, sizes, axis):
        """SPLIT_V: one output per entry of ``sizes`` (one entry may be -1: the rest)."""
        shape = self.shape(x)
        ax = axis % len(shape)
        rest = shape[ax] - sum(s for s in sizes if s >= 0)
        outs = []
        for s in sizes:
            part = list(shape)
            part[ax] = rest if s < 0 else s
            outs.append(self.tensor(part))
        if 102 not in self.codes:
            self.codes.append(102)
        ins = [x, self.const(np.array(sizes), np.int32), self.const(np.array([axis]), np.int32)]
        self.ops.append((self.codes.index(102), ins, outs, ("splitv", dict(n=len(sizes)))))
        return outs

    def broadcast_to(self, x, shape, dtype=np.float32):
        return self.op(130, [x, self.const(shape, np.int32)], list(shape), None, dtype)

    def pool(self, x, size, stride, padding="valid", kind="avg", act=None):
        n, h, w, c = self.shape(x)
        oh, ow = _out_dim(h, size, stride, 1, padding), _out_dim(w, size, stride, 1, padding)
        opt = ("pool", dict(padding=padding, stride=stride, size=size, act=act))
        return self.op(1 if kind == "avg" else 17, [x], [n, oh, ow, c], opt)

    def mean(self, x, axes, keep_dims=True, code=40):
        s = self.shape(x)
        out = (
            [1 if i in axes else d for i, d in enumerate(s)]
            if keep_dims
            else [d for i, d in enumerate(s) if i not in axes]
        )
        return self.op(code, [x, self.const(np.array(axes), np.int32)], out, ("reducer", dict(keep=keep_dims)))

    def concat(self, xs, axis):
        out = list(self.shape(xs[0]))
        out[axis] = sum(self.shape(x)[axis] for x in xs)
        return self.op(2, xs, out, ("concat", dict(axis=axis)))

    def reshape(self, x, shape):
        return self.op(22, [x, self.const(np.array(shape), np.int32)], shape, ("reshape", dict(shape=shape)))

    def transpose(self, x, perm):
        out = [self.shape(x)[p] for p in perm]
        return self.op(39, [x, self.const(np.array(perm), np.int32)], out)

    def pad(self, x, pads):
        out = [d + a + b for d, (a, b) in zip(self.shape(x), pads)]
        return self.op(34, [x, self.const(np.array(pads), np.int32)], out)

    def mirror_pad(self, x, pads, mode="reflect"):
        out = [d + a + b for d, (a, b) in zip(self.shape(x), pads)]
        ins = [x, self.const(np.array(pads), np.int32)]
        return self.op(100, ins, out, ("mirror", dict(mode={"reflect": 0, "symmetric": 1}[mode])))

    def leaky_relu(self, x, alpha):
        return self.op(98, [x], self.shape(x), ("leaky", dict(alpha=alpha)))

    def strided_slice(self, x, begin, end, strides, begin_mask=0, end_mask=0, shrink_axis_mask=0):
        """numpy's view of the same slice gives the output shape (TFLite's rules match it)."""
        idx = []
        for i, (b, e, s) in enumerate(zip(begin, end, strides)):
            if (shrink_axis_mask >> i) & 1:
                idx.append(b)
            else:
                idx.append(slice(None if (begin_mask >> i) & 1 else b, None if (end_mask >> i) & 1 else e, s))
        out = list(np.empty(self.shape(x))[tuple(idx)].shape)
        ins = [x] + [self.const(np.array(v), np.int32) for v in (begin, end, strides)]
        opt = ("slice", dict(begin_mask=begin_mask, end_mask=end_mask, shrink=shrink_axis_mask))
        return self.op(45, ins, out, opt)

    def softmax(self, x, beta=1.0):
        return self.op(25, [x], self.shape(x), ("softmax", dict(beta=beta)))

    # ------------------------------------------------------------------ serialization
    def finish(self, outputs) -> bytes:
        self.outputs = list(outputs)
        b = flatbuffers.Builder(1024)
        buffers = [self._buffer(b, None)] + [self._buffer(b, t["data"]) for t in self.tensors]
        tensors = [self._tensor(b, i, t) for i, t in enumerate(self.tensors)]
        ops = [self._operator(b, *o) for o in self.ops]
        tv = _offsets(b, tensors)
        iv, ov = self._ints(b, self.inputs), self._ints(b, self.outputs)
        opv = _offsets(b, ops)
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tv)
        tflite.SubGraphAddInputs(b, iv)
        tflite.SubGraphAddOutputs(b, ov)
        tflite.SubGraphAddOperators(b, opv)
        sg = b.EndObject()
        codes = []
        for c in self.codes:
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(c, 127))
            tflite.OperatorCodeAddBuiltinCode(b, c)
            tflite.OperatorCodeAddVersion(b, _VERSIONS.get(c, 1))
            codes.append(tflite.OperatorCodeEnd(b))
        model_vecs = [_offsets(b, items) for items in (codes, [sg], buffers)]
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, model_vecs[0])
        tflite.ModelAddSubgraphs(b, model_vecs[1])
        tflite.ModelAddBuffers(b, model_vecs[2])
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    @staticmethod
    def _ints(b, values, dtype=np.int32):
        return b.CreateNumpyVector(np.asarray(values, dtype))

    @staticmethod
    def _buffer(b, data):
        vec = None
        if data:
            b.StartVector(1, len(data), 16)
            b.head = b.head - len(data)
            b.Bytes[b.head : b.head + len(data)] = data
            vec = b.EndVector()
        tflite.BufferStart(b)
        if vec is not None:
            tflite.BufferAddData(b, vec)
        return tflite.BufferEnd(b)

    def _index_vec(self, b, values):
        vec = self._ints(b, values)
        tflite.Int32VectorStart(b)
        tflite.Int32VectorAddValues(b, vec)
        return tflite.Int32VectorEnd(b)

    # written like _sparsity in edgeprune/export/tflite_schema.py on purpose: this builder shares no
    # code with edgeprune's writer, whose output the runtime tests check against these files
    def _sparsity(self, b, enc):
        dims = []
        for d in enc["dims"]:
            if d[0] == "dense":
                tflite.DimensionMetadataStart(b)
                tflite.DimensionMetadataAddFormat(b, 0)
                tflite.DimensionMetadataAddDenseSize(b, d[1])
            else:
                seg, idx = self._index_vec(b, d[1]), self._index_vec(b, d[2])
                tflite.DimensionMetadataStart(b)
                tflite.DimensionMetadataAddFormat(b, 1)
                tflite.DimensionMetadataAddArraySegmentsType(b, 1)
                tflite.DimensionMetadataAddArraySegments(b, seg)
                tflite.DimensionMetadataAddArrayIndicesType(b, 1)
                tflite.DimensionMetadataAddArrayIndices(b, idx)
            dims.append(tflite.DimensionMetadataEnd(b))
        dv = _offsets(b, dims)
        order = self._ints(b, enc["order"])
        bmap = self._ints(b, enc["block_map"]) if enc["block_map"] else None
        tflite.SparsityParametersStart(b)
        tflite.SparsityParametersAddTraversalOrder(b, order)
        if bmap is not None:
            tflite.SparsityParametersAddBlockMap(b, bmap)
        tflite.SparsityParametersAddDimMetadata(b, dv)
        return tflite.SparsityParametersEnd(b)

    def _tensor(self, b, i, t):
        name = b.CreateString(t["name"])
        shape = self._ints(b, t["shape"])
        sp = self._sparsity(b, t["sparsity"]) if t["sparsity"] else None
        q = self._quant(b, *t["quant"]) if t.get("quant") else None
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, _DTYPES[t["dtype"]])
        tflite.TensorAddBuffer(b, i + 1 if t["data"] else 0)
        tflite.TensorAddName(b, name)
        if sp is not None:
            tflite.TensorAddSparsity(b, sp)
        if q is not None:
            tflite.TensorAddQuantization(b, q)
        return tflite.TensorEnd(b)

    @staticmethod
    def _quant(b, scales, zero_points, dim=0):
        sv = b.CreateNumpyVector(np.asarray(scales, np.float32))
        zv = b.CreateNumpyVector(np.asarray(zero_points, np.int64))
        tflite.QuantizationParametersStart(b)
        tflite.QuantizationParametersAddScale(b, sv)
        tflite.QuantizationParametersAddZeroPoint(b, zv)
        tflite.QuantizationParametersAddQuantizedDimension(b, dim)
        return tflite.QuantizationParametersEnd(b)

    def _operator(self, b, code_index, inputs, out, options):
        iv, ov = self._ints(b, inputs), self._ints(b, out if isinstance(out, list) else [out])
        opt = _options(b, *options) if options else None
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, code_index)
        tflite.OperatorAddInputs(b, iv)
        tflite.OperatorAddOutputs(b, ov)
        if opt is not None:
            tflite.OperatorAddBuiltinOptionsType(b, _OPTS[options[0]])
            tflite.OperatorAddBuiltinOptions(b, opt)
        return tflite.OperatorEnd(b)


# The same loop as _offsets in edgeprune/export/tflite_schema.py on purpose: this builder writes the
# reference files that edgeprune's TFLite reader and runtime are checked against, so it shares no
# code with edgeprune's own writer.
def _offsets(b, items):
    """A vector of the table offsets ``items`` (every such vector in the schema: 4-byte elements,
    4-byte aligned, written back to front)."""
    b.StartVector(4, len(items), 4)
    for it in reversed(items):
        b.PrependUOffsetTRelative(it)
    return b.EndVector()


def _table(b, name, **fields):
    """One options table of the ``tflite`` bindings: ``{name}Start``, then ``{name}Add{field}`` for
    each field in the order given, then ``{name}End`` (its offset)."""
    getattr(tflite, f"{name}Start")(b)
    for field, value in fields.items():
        getattr(tflite, f"{name}Add{field}")(b, value)
    return getattr(tflite, f"{name}End")(b)


def _options(b, kind, o):
    pad = {"same": 0, "valid": 1}
    act = {"FusedActivationFunction": _ACT[o["act"]]} if "act" in o else {}
    if kind == "reshape":
        return _table(b, "ReshapeOptions", NewShape=b.CreateNumpyVector(np.asarray(o["shape"], np.int32)))
    if kind in ("conv", "dw", "pool"):
        geometry = {"Padding": pad[o["padding"]], "StrideW": o["stride"], "StrideH": o["stride"]}
        if kind == "pool":
            return _table(b, "Pool2DOptions", **geometry, FilterWidth=o["size"], FilterHeight=o["size"], **act)
        dilation = {"DilationWFactor": o["dilation"], "DilationHFactor": o["dilation"]}
        if kind == "conv":
            return _table(b, "Conv2DOptions", **geometry, **dilation, **act)
        return _table(b, "DepthwiseConv2DOptions", **geometry, DepthMultiplier=o["mult"], **dilation, **act)
    if kind == "tconv":
        geometry = {"Padding": pad[o["padding"]], "StrideW": o["stride"], "StrideH": o["stride"]}
        return _table(b, "TransposeConvOptions", **geometry, **act)
    if kind == "softmax":
        return _table(b, "SoftmaxOptions", Beta=o["beta"])
    if kind == "concat":
        return _table(b, "ConcatenationOptions", Axis=o["axis"])
    if kind == "slice":
        masks = {"BeginMask": o["begin_mask"], "EndMask": o["end_mask"], "ShrinkAxisMask": o["shrink"]}
        return _table(b, "StridedSliceOptions", **masks)
    if kind == "reducer":
        return _table(b, "ReducerOptions", KeepDims=o["keep"])
    if kind == "gather":
        return _table(b, "GatherOptions", Axis=o["axis"])
    if kind == "bmm":
        return _table(b, "BatchMatMulOptions", AdjX=o["adj_x"], AdjY=o["adj_y"])
    if kind == "splitv":
        return _table(b, "SplitVOptions", NumSplits=o["n"])
    if kind == "gelu":
        return _table(b, "GeluOptions", Approximate=o["approximate"])
    if kind == "argmax":
        return _table(b, "ArgMaxOptions", OutputType=o["type"])
    if kind == "leaky":
        return _table(b, "LeakyReluOptions", Alpha=o["alpha"])
    if kind == "mirror":
        return _table(b, "MirrorPadOptions", Mode=o["mode"])
    if kind == "cumsum":
        return _table(b, "CumsumOptions", Exclusive=o["exclusive"], Reverse=o["reverse"])
    name = {"fc": "FullyConnectedOptions", "add": "AddOptions", "mul": "MulOptions", "sub": "SubOptions"}[kind]
    return _table(b, name, **act)
