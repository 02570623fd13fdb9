"""Test helper: the small float32 models the runtime tests run, written with tflite_builder, and
LiteRT's outputs on them (the oracle).

Consumes: a seed and a sparsity choice. Produces: .tflite bytes, inputs, LiteRT outputs.
"""

from __future__ import annotations

import numpy as np
from tflite_builder import Builder


def _w(rng, *shape, zeros=0.0):
    w = (rng.standard_normal(shape) * 0.3).astype(np.float32)
    if zeros:
        w[rng.random(shape) < zeros] = 0
    return w


def _block_zeros(rng, w, zeros):
    """Prunes 4x1 blocks (4 consecutive output channels) of a [M, ...] weight."""
    flat = w.reshape(w.shape[0] // 4, 4, -1)
    keep = rng.random((flat.shape[0], 1, flat.shape[2])) >= zeros
    return (flat * keep).reshape(w.shape)


def mobilenet_block(sparse=None, seed=0, size=16) -> bytes:
    """Stem conv 3x3/2, depthwise, 1x1 convs (sparse=1: unstructured 90 % in TFLite's sparse
    encoding; 4: 4x1 blocks 80 %, the FC in the block encoding, the 1x1 conv stored dense),
    residual ADD, HARD_SWISH, squeeze-excite (MEAN, 1x1, LOGISTIC, MUL), depthwise 5x5/2, PAD,
    pools, TRANSPOSE, CONCATENATION, FC and SOFTMAX."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input([1, size, size, 3])
    y = b.conv2d(x, _w(rng, 16, 3, 3, 3), _w(rng, 16), stride=2, act="relu6")
    y = b.depthwise(y, _w(rng, 1, 3, 3, 16), _w(rng, 16), act="relu6")
    w1 = _w(rng, 32, 1, 1, 16)
    w1 = _block_zeros(rng, w1, 0.8) if sparse == 4 else _w(rng, 32, 1, 1, 16, zeros=0.9) if sparse else w1
    y1 = b.conv2d(y, w1, _w(rng, 32), sparse=1 if sparse == 1 else None)
    y2 = b.conv2d(y1, _w(rng, 32, 1, 1, 32), _w(rng, 32))
    y = b.binary("add", y1, y2)
    y = b.unary(117, y)
    s = b.mean(y, [1, 2])
    s = b.conv2d(s, _w(rng, 8, 1, 1, 32), _w(rng, 8), act="relu")
    s = b.conv2d(s, _w(rng, 32, 1, 1, 8), _w(rng, 32))
    s = b.unary(14, s)
    y = b.binary("mul", y, s)
    y = b.depthwise(y, _w(rng, 1, 5, 5, 32), _w(rng, 32), stride=2)
    y = b.pad(y, [[0, 0], [1, 1], [1, 1], [0, 0]])
    a = b.pool(y, 3, 1, "same", "avg")
    m = b.pool(y, 2, 2, "valid", "max")
    m = b.conv2d(m, _w(rng, 32, 3, 3, 32), _w(rng, 32), padding="same", act="relu")
    m = b.mean(m, [1, 2], keep_dims=False)
    y = b.concat([a, b.transpose(b.transpose(a, [0, 2, 1, 3]), [0, 2, 1, 3])], 3)
    y = b.mean(y, [1, 2], keep_dims=False)
    y = b.concat([y, m], 1)
    fw = _w(rng, 12, 96)
    if sparse == 4:
        fw = _block_zeros(rng, fw, 0.8)
    elif sparse:
        fw[rng.random(fw.shape) < 0.9] = 0
    y = b.fc(y, fw, _w(rng, 12), sparse=sparse)
    y = b.softmax(y)
    return b.finish([y])


def conv_variants(seed=0) -> bytes:
    """Grouped, dilated, strided and VALID convolutions, depth multiplier 2, fused RELU_N1_TO_1,
    SUB, standalone RELU/RELU6/LOGISTIC/TANH, PAD folded into VALID convolutions and a PAD
    of channels, two outputs."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input([2, 13, 11, 8])
    g = b.conv2d(x, _w(rng, 12, 3, 3, 4), _w(rng, 12), stride=2, act="relu_n1_to_1")  # 2 groups
    d = b.conv2d(x, _w(rng, 6, 3, 3, 8), _w(rng, 6), dilation=2, padding="valid")
    d = b.unary(28, d)
    dw = b.depthwise(x, _w(rng, 1, 3, 3, 16), _w(rng, 16), stride=2, padding="valid")
    dw = b.unary(21, dw)
    s = b.conv2d(x, _w(rng, 5, 5, 5, 8), _w(rng, 5), stride=3, padding="same")
    s = b.binary("sub", s, b.const(_w(rng, 5)))
    s = b.unary(19, s)
    g = b.unary(14, g)
    # PAD + VALID conv / depthwise (folded into the convolution's padding), and a PAD of channels
    p = b.conv2d(b.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), _w(rng, 4, 3, 3, 8), _w(rng, 4), stride=2, padding="valid")
    q = b.pad(
        b.depthwise(b.pad(x, [[0, 0], [2, 1], [0, 1], [0, 0]]), _w(rng, 1, 3, 3, 8), _w(rng, 8), padding="valid"),
        [[0, 0], [0, 0], [0, 0], [1, 2]],
    )
    means = [b.mean(t, [1, 2]) for t in (g, d, s, p, q)]
    out1 = b.reshape(b.concat(means, 3), [2, 38])
    out2 = b.pool(dw, 3, 2, "same", "max")
    return b.finish([out1, out2])


def litert_run(data: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]


def inputs_for(model, seed=1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(i["shape"]).astype(np.float32) for i in model.inputs]


def sparse_chw_chain(seed=0, block=1) -> bytes:
    """A chain the runtime runs channel-major (NCHW) around sparse 1x1 convs (block=1: 90 %
    unstructured in TFLite's sparse encoding; 4: 4x1 blocks at 80 %, stored dense): depthwise
    3x3 and 5x5 at strides 1 and 2 (SAME and PAD + VALID, an odd-sized batch of 2), a dilated
    depthwise, residual ADD, standalone RELU6 and HARD_SWISH, a tensor read in both layouts (by
    the chain and by a broadcast MUL), MEAN, and an NHWC model output fed from the chain."""
    rng = np.random.default_rng(seed)
    b = Builder()

    def sparse(x, cin, cout, act=None):
        w = _block_zeros(rng, _w(rng, cout, 1, 1, cin), 0.8) if block == 4 else _w(rng, cout, 1, 1, cin, zeros=0.9)
        return b.conv2d(x, w, _w(rng, cout), act=act, sparse=1 if block == 1 else None)

    x = b.input([2, 13, 11, 3])
    y = b.conv2d(x, _w(rng, 16, 3, 3, 3), _w(rng, 16), act="relu6")
    y = sparse(y, 16, 32, act="relu6")
    y = b.depthwise(y, _w(rng, 1, 3, 3, 32), _w(rng, 32), stride=2, act="relu6")
    y1 = sparse(y, 32, 24)
    y = b.depthwise(y1, _w(rng, 1, 5, 5, 24), _w(rng, 24), act="relu")
    y = b.binary("add", y1, sparse(y, 24, 24))
    y = b.unary(21, y)  # RELU6
    p = b.depthwise(
        b.pad(y, [[0, 0], [2, 2], [2, 2], [0, 0]]), _w(rng, 1, 5, 5, 24), _w(rng, 24), stride=2, padding="valid"
    )
    p = b.depthwise(p, _w(rng, 1, 3, 3, 24), _w(rng, 24), dilation=2)
    p = b.unary(117, sparse(p, 24, 40))  # HARD_SWISH
    gate = b.unary(14, b.mean(p, [1, 2]))  # LOGISTIC
    q = sparse(b.binary("mul", p, gate), 40, 16)  # the broadcast MUL reads p in NHWC
    r = b.depthwise(p, _w(rng, 1, 3, 3, 40), _w(rng, 40))  # the chain reads p in NCHW
    head = b.fc(b.mean(sparse(r, 40, 64), [1, 2], keep_dims=False), _w(rng, 10, 64), _w(rng, 10))
    return b.finish([head, q])
