"""An in-memory TFLite model (tensors, buffers, operators) and its flatbuffer serializer.

Consumes: tensors, constants and builtin operators added by the lowering
(``edgeprune.export.tflite_lower``). Produces: the bytes of a ``.tflite`` file (schema version 3,
file identifier ``TFL3``) built with the ``tflite`` package's generated builders.

Invariants the serializer keeps (what LiteRT, tflite-runtime and our C++ reader rely on):
- buffer 0 is the empty sentinel; every constant has its own buffer, 16-byte aligned;
- one OperatorCode per builtin op, carrying the highest version any of its uses needs, with both
  ``deprecated_builtin_code = min(code, 127)`` and ``builtin_code`` set;
- operator options are scalar-only tables (shapes travel as constant input tensors);
- metadata entries (``name -> bytes``) are stored as extra buffers (``edgeprune`` holds JSON).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

import flatbuffers
import numpy as np
from tflite.BuiltinOperator import BuiltinOperator as OP  # noqa: F401  (re-exported for the lowering)
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType

DTYPES = {
    np.dtype(np.float32): TensorType.FLOAT32,
    np.dtype(np.float16): TensorType.FLOAT16,
    np.dtype(np.int32): TensorType.INT32,
    np.dtype(np.uint8): TensorType.UINT8,
    np.dtype(np.int64): TensorType.INT64,
    np.dtype(np.bool_): TensorType.BOOL,
    np.dtype(np.int16): TensorType.INT16,
    np.dtype(np.int8): TensorType.INT8,
}
NP_DTYPES = {v: k for k, v in DTYPES.items()}
ALIGN = 16


@dataclass
class Quant:
    """Affine quantization: per tensor (one scale) or per channel along ``dim``."""

    scale: np.ndarray
    zero_point: np.ndarray
    dim: int = 0


@dataclass
class Tensor:
    name: str
    shape: list[int]
    dtype: int  # TensorType
    buffer: int = 0
    quant: Quant | None = None
    sparsity: dict | None = None  # {"traversal_order", "block_map", "dim_metadata": [...]}


@dataclass
class Operator:
    code: int  # BuiltinOperator
    inputs: list[int]
    outputs: list[int]
    options: tuple[str, dict] | None = None  # ("Conv2DOptions", {"Padding": 1, ...})
    version: int = 1
    name: str = ""  # the ONNX node it came from (diagnostics only; not stored)


@dataclass
class Model:
    tensors: list[Tensor] = field(default_factory=list)
    buffers: list[bytes] = field(default_factory=lambda: [b""])
    operators: list[Operator] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    metadata: dict[str, bytes] = field(default_factory=dict)
    description: str = "edgeprune"
    _buffer_of: dict = field(default_factory=dict, repr=False)  # bytes -> index of the buffer holding them

    def tensor(self, name: str, shape, dtype, quant: Quant | None = None) -> int:
        """A new activation tensor; returns its index."""
        dt = dtype if isinstance(dtype, int) else DTYPES[np.dtype(dtype)]
        self.tensors.append(Tensor(self._unique(name), [int(s) for s in shape], dt, 0, quant))
        return len(self.tensors) - 1

    def const(self, name: str, value: np.ndarray, quant: Quant | None = None) -> int:
        """A new constant tensor holding ``value``; returns its index. Constants of equal bytes share
        one buffer: a weight several operators use (ALBERT's layers, shared by every block; an
        ONNX initializer read twice) is stored once. A pass that rewrites one tensor's data gives
        it a buffer of its own first (``own_buffer``)."""
        value = np.ascontiguousarray(value).reshape(np.shape(value))  # keeps 0-d scalars 0-d
        data = value.tobytes()
        index = self._buffer_of.get(data) if data else None
        if index is None:
            self.buffers.append(data)
            index = len(self.buffers) - 1
            if data:
                self._buffer_of[data] = index
        t = Tensor(self._unique(name), list(value.shape), DTYPES[value.dtype], index, quant)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def merge_constants(self) -> None:
        """Operators that read equal constants (same buffer, shape, type and quantization) read the
        first of them: a pass that re-encodes a constant (sparse, fp16) then does it once for all
        its readers. The others leave the table."""
        first: dict = {}
        alias: dict[int, int] = {}
        io = set(self.inputs) | set(self.outputs)
        for i, t in enumerate(self.tensors):
            if t.buffer == 0 or t.sparsity is not None or i in io:
                continue
            q = t.quant
            qkey = None if q is None else (np.asarray(q.scale).tobytes(), np.asarray(q.zero_point).tobytes(), q.dim)
            j = first.setdefault((t.buffer, tuple(t.shape), t.dtype, qkey), i)
            if j != i:
                alias[i] = j
        if not alias:
            return
        keep = [i for i in range(len(self.tensors)) if i not in alias]
        new = {old: k for k, old in enumerate(keep)}
        index = {i: new[alias.get(i, i)] for i in range(len(self.tensors))}
        self.tensors = [self.tensors[i] for i in keep]
        for op in self.operators:
            op.inputs = [index[i] if i >= 0 else i for i in op.inputs]  # -1: an omitted optional input
            op.outputs = [index[i] for i in op.outputs]
        self.inputs = [index[i] for i in self.inputs]
        self.outputs = [index[i] for i in self.outputs]

    def own_buffer(self, index: int, data: bytes) -> None:
        """Tensor ``index`` now holds ``data`` in a buffer no other tensor reads (an empty ``data``
        leaves it without one); a buffer it shared keeps its bytes for the others."""
        t = self.tensors[index]
        shared = any(o is not t and o.buffer == t.buffer for o in self.tensors)
        if not shared:
            self._buffer_of.pop(self.buffers[t.buffer], None)
            self.buffers[t.buffer] = data
            if not data:
                t.buffer = 0
            return
        if not data:
            t.buffer = 0
            return
        self.buffers.append(data)
        t.buffer = len(self.buffers) - 1

    def value(self, index: int) -> np.ndarray | None:
        """The constant value of tensor ``index`` (dense tensors only), or None for an activation."""
        t = self.tensors[index]
        if t.buffer == 0 or t.sparsity is not None:
            return None
        return np.frombuffer(self.buffers[t.buffer], dtype=NP_DTYPES[t.dtype]).reshape(t.shape)

    def op(self, code: int, inputs, outputs, options=None, version: int = 1, name: str = "") -> None:
        self.operators.append(Operator(code, list(inputs), list(outputs), options, version, name))

    def _unique(self, name: str) -> str:
        # names are for people (inspect, LiteRT's tensor details); uniqueness keeps them unambiguous
        seen = getattr(self, "_names", None)
        if seen is None:
            seen = self._names = {}
        n = seen.get(name, 0)
        seen[name] = n + 1
        return name if n == 0 else f"{name}_{n}"


# ---- serialization ------------------------------------------------------------------------------
def _mod(name: str):
    return importlib.import_module(f"tflite.{name}")


def _ivec(b: flatbuffers.Builder, values, dtype=np.int32) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype=dtype).reshape(-1))


def _aligned_bytes(b: flatbuffers.Builder, data: bytes) -> int:
    b.StartVector(1, len(data), ALIGN)
    b.head -= len(data)
    b.Bytes[b.head : b.head + len(data)] = data
    b.vectorNumElems = len(data)
    return b.EndVector()


def _options(b: flatbuffers.Builder, options: tuple[str, dict]) -> tuple[int, int]:
    kind, fields = options
    m = _mod(kind)
    m.Start(b)
    for k, v in fields.items():
        getattr(m, f"Add{k}")(b, v)
    return getattr(BuiltinOptions, kind), m.End(b)


def _quant(b: flatbuffers.Builder, q: Quant) -> int:
    m = _mod("QuantizationParameters")
    scale = b.CreateNumpyVector(np.asarray(q.scale, dtype=np.float32).reshape(-1))
    zp = b.CreateNumpyVector(np.asarray(q.zero_point, dtype=np.int64).reshape(-1))
    m.Start(b)
    m.AddScale(b, scale)
    m.AddZeroPoint(b, zp)
    m.AddQuantizedDimension(b, int(q.dim))
    return m.End(b)


def _index_vector(b: flatbuffers.Builder, values) -> tuple[int, int]:
    m = _mod("Int32Vector")
    vec = _ivec(b, values)
    m.Start(b)
    m.AddValues(b, vec)
    return 1, m.End(b)  # SparseIndexVector.Int32Vector


# tests/python/tflite_builder.py writes the same tables with its own code on purpose: it builds the
# reference files the writer and the runtime are checked against, so it must not share this code.
def _sparsity(b: flatbuffers.Builder, sp: dict) -> int:
    dm = _mod("DimensionMetadata")
    dims = []
    for d in sp["dim_metadata"]:
        if d["format"] == "dense":
            dm.Start(b)
            dm.AddFormat(b, 0)
            dm.AddDenseSize(b, int(d["dense_size"]))
            dims.append(dm.End(b))
            continue
        seg_t, seg = _index_vector(b, d["segments"])
        idx_t, idx = _index_vector(b, d["indices"])
        dm.Start(b)
        dm.AddFormat(b, 1)  # SPARSE_CSR
        dm.AddArraySegmentsType(b, seg_t)
        dm.AddArraySegments(b, seg)
        dm.AddArrayIndicesType(b, idx_t)
        dm.AddArrayIndices(b, idx)
        dims.append(dm.End(b))
    sm = _mod("SparsityParameters")
    order = _ivec(b, sp["traversal_order"])
    block_map = _ivec(b, sp["block_map"]) if sp.get("block_map") else None
    sm.StartDimMetadataVector(b, len(dims))
    for d in reversed(dims):
        b.PrependUOffsetTRelative(d)
    dim_vec = b.EndVector()
    sm.Start(b)
    sm.AddTraversalOrder(b, order)
    if block_map is not None:
        sm.AddBlockMap(b, block_map)
    sm.AddDimMetadata(b, dim_vec)
    return sm.End(b)


def _offsets(b: flatbuffers.Builder, start, items: list[int]) -> int:
    start(b, len(items))
    for off in reversed(items):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _tensor(b: flatbuffers.Builder, t: Tensor) -> int:
    m = _mod("Tensor")
    name = b.CreateString(t.name)
    shape = _ivec(b, t.shape)
    quant = _quant(b, t.quant) if t.quant is not None else None
    sparsity = _sparsity(b, t.sparsity) if t.sparsity is not None else None
    m.Start(b)
    m.AddShape(b, shape)
    m.AddType(b, t.dtype)
    m.AddBuffer(b, t.buffer)
    m.AddName(b, name)
    if quant is not None:
        m.AddQuantization(b, quant)
    if sparsity is not None:
        m.AddSparsity(b, sparsity)
    return m.End(b)


def _operator(b: flatbuffers.Builder, op: Operator, code_index: int) -> int:
    m = _mod("Operator")
    ins = _ivec(b, op.inputs)
    outs = _ivec(b, op.outputs)
    opts = _options(b, op.options) if op.options else None
    m.Start(b)
    m.AddOpcodeIndex(b, code_index)
    m.AddInputs(b, ins)
    m.AddOutputs(b, outs)
    if opts is not None:
        m.AddBuiltinOptionsType(b, opts[0])
        m.AddBuiltinOptions(b, opts[1])
    return m.End(b)


def serialize(model: Model) -> bytes:
    """The ``.tflite`` bytes of ``model``."""
    size = sum(len(x) for x in model.buffers) + sum(len(v) for v in model.metadata.values())
    b = flatbuffers.Builder(size + 65536)
    codes: dict[int, int] = {}
    for op in model.operators:
        codes[op.code] = max(codes.get(op.code, 1), op.version)
    code_index = {c: i for i, c in enumerate(codes)}
    # buffers (data first: big vectors are written once, back to front); a buffer no tensor reads
    # any more (its tensor was rewritten or dropped by a pass) is not written
    used = sorted({t.buffer for t in model.tensors} | {0})
    remap = {old: new for new, old in enumerate(used)}
    buffers = [model.buffers[i] for i in used]
    meta_index = {}
    for k, v in model.metadata.items():
        buffers.append(v)
        meta_index[k] = len(buffers) - 1
    bm = _mod("Buffer")
    buf_offs = []
    for data in buffers:
        vec = _aligned_bytes(b, data) if data else None
        bm.Start(b)
        if vec is not None:
            bm.AddData(b, vec)
        buf_offs.append(bm.End(b))
    tensors = [_tensor(b, dataclasses.replace(t, buffer=remap[t.buffer])) for t in model.tensors]
    ops = [_operator(b, op, code_index[op.code]) for op in model.operators]
    sg = _mod("SubGraph")
    t_vec = _offsets(b, sg.StartTensorsVector, tensors)
    o_vec = _offsets(b, sg.StartOperatorsVector, ops)
    in_vec, out_vec = _ivec(b, model.inputs), _ivec(b, model.outputs)
    sg_name = b.CreateString("main")
    sg.Start(b)
    sg.AddTensors(b, t_vec)
    sg.AddInputs(b, in_vec)
    sg.AddOutputs(b, out_vec)
    sg.AddOperators(b, o_vec)
    sg.AddName(b, sg_name)
    subgraph = sg.End(b)
    oc = _mod("OperatorCode")
    code_offs = []
    for c, version in codes.items():
        oc.Start(b)
        oc.AddDeprecatedBuiltinCode(b, min(c, 127))
        oc.AddVersion(b, version)
        oc.AddBuiltinCode(b, c)
        code_offs.append(oc.End(b))
    md = _mod("Metadata")
    meta_offs = []
    for k, idx in meta_index.items():
        name = b.CreateString(k)
        md.Start(b)
        md.AddName(b, name)
        md.AddBuffer(b, idx)
        meta_offs.append(md.End(b))
    mm = _mod("Model")
    codes_vec = _offsets(b, mm.StartOperatorCodesVector, code_offs)
    sgs_vec = _offsets(b, mm.StartSubgraphsVector, [subgraph])
    bufs_vec = _offsets(b, mm.StartBuffersVector, buf_offs)
    meta_vec = _offsets(b, mm.StartMetadataVector, meta_offs) if meta_offs else None
    desc = b.CreateString(model.description)
    mm.Start(b)
    mm.AddVersion(b, 3)
    mm.AddOperatorCodes(b, codes_vec)
    mm.AddSubgraphs(b, sgs_vec)
    mm.AddDescription(b, desc)
    mm.AddBuffers(b, bufs_vec)
    if meta_vec is not None:
        mm.AddMetadata(b, meta_vec)
    root = mm.End(b)
    b.Finish(root, file_identifier=b"TFL3")
    return bytes(b.Output())
