"""Store the constant weights of 1x1 convs and FC layers in TFLite's sparse encoding, behind DENSIFY.

Consumes: a lowered ``tflite_schema.Model`` (fp32 weights, or int8 weights with their per-channel
quantization) and a policy (``force``: every candidate, or only those with >= ``MIN_ZEROS``
zeros). Produces: the same model where each chosen constant weight became a sparse tensor
(``SparsityParameters``: CSR over the input dimension, or 1x4 blocks along it when that is
smaller) feeding a DENSIFY op whose dense output (same type and quantization) the conv/FC reads.

Runtimes: LiteRT's XNNPACK delegate densifies static sparse weights at load, fp32 and int8 conv
weights alike (and on ARM can run its sparse NCHW path for fp32); the builtin kernels run DENSIFY once; our
runtime reads the encoding and packs it into its own sparse formats. Values are stored exactly,
so outputs equal the dense file's.
"""

from __future__ import annotations

import numpy as np

from .tflite_schema import OP, Model, Operator

MIN_ZEROS = 0.70
BLOCK = 4


def _encode(w2: np.ndarray, block: int) -> tuple[np.ndarray, list[int], list[int]]:
    """(values, row segments, column (or block-column) indices) of a [rows, cols] matrix."""
    rows, cols = w2.shape
    if block > 1:
        blocks = w2.reshape(rows, cols // block, block)
        nz = np.any(blocks != 0, axis=2)
        values = blocks[nz].reshape(-1)
    else:
        nz = w2 != 0
        values = w2[nz]
    counts = nz.sum(axis=1)
    segments = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.nonzero(nz)[1]
    return values.astype(w2.dtype), segments.tolist(), indices.tolist()


def _sparsity_params(shape: list[int], segments, indices, block: int) -> dict:
    dense_dims = [{"format": "dense", "dense_size": int(d)} for d in shape[:-1]]
    csr = {"format": "csr", "segments": segments, "indices": indices}
    n = len(shape)
    if block == 1:
        return {"traversal_order": list(range(n)), "block_map": [], "dim_metadata": dense_dims + [csr]}
    return {
        "traversal_order": list(range(n + 1)),
        "block_map": [n - 1],
        "dim_metadata": dense_dims + [csr, {"format": "dense", "dense_size": block}],
    }


_FLOAT32, _INT8 = 0, 9  # TFLite tensor types


def _candidates(model: Model) -> dict[int, list[int]]:
    """{weight tensor: [ops reading it]} for the constant weights of FC and 1x1 CONV_2D: float32
    ones, and int8 ones of CONV_2D quantized per tensor or per output channel (dimension 0, which
    the encoding keeps dense). int8 FULLY_CONNECTED weights stay dense: LiteRT 2.3's XNNPACK
    delegate fails to prepare an int8 FULLY_CONNECTED whose weights come from DENSIFY (the whole
    interpreter then refuses the file), in CSR and in blocks alike."""
    found: dict[int, list[int]] = {}
    for j, op in enumerate(model.operators):
        if op.code not in (OP.FULLY_CONNECTED, OP.CONV_2D) or len(op.inputs) < 2:
            continue
        t = model.tensors[op.inputs[1]]
        if t.buffer == 0 or t.sparsity is not None:
            continue
        if not (t.dtype == _FLOAT32 and t.quant is None) and not (
            t.dtype == _INT8 and t.quant is not None and t.quant.dim == 0 and op.code == OP.CONV_2D
        ):
            continue
        if op.code == OP.CONV_2D and t.shape[1:3] != [1, 1]:
            continue
        found.setdefault(op.inputs[1], []).append(j)
    return found


def sparsify(model: Model, force: bool = False) -> list[str]:
    """Encode the chosen weights in place; returns the names of the tensors stored sparse."""
    done, densify = [], []
    model.merge_constants()  # a weight several operators read is encoded once, for all of them
    for idx, users in _candidates(model).items():
        t = model.tensors[idx]
        w = model.value(idx)
        zeros = float((w == 0).mean())
        if not force and zeros < MIN_ZEROS:
            continue
        w2 = w.reshape(-1, w.shape[-1])
        best = None
        for block in (1, BLOCK) if w2.shape[1] % BLOCK == 0 else (1,):
            values, seg, ind = _encode(w2, block)
            size = values.nbytes + 4 * (len(seg) + len(ind))
            if best is None or size < best[0]:
                best = (size, values, seg, ind, block)
        size, values, seg, ind, block = best
        if not values.size:  # an all-zero weight would get an empty buffer, which TFLite reads as
            continue  # "not a constant" (DENSIFY then fails to prepare): it stays dense
        if size >= w.nbytes and not force:
            continue
        dense = model.tensor(f"{t.name}_densified", t.shape, t.dtype, t.quant)
        model.own_buffer(idx, values.tobytes())
        t.sparsity = _sparsity_params(t.shape, seg, ind, block)
        for j in users:
            model.operators[j].inputs[1] = dense
        densify.append(Operator(OP.DENSIFY, [idx], [dense], None, 1, t.name))
        done.append(t.name)
    model.operators[:0] = densify
    return done
