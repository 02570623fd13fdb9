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


def winograd_block(seed=0) -> bytes:
    """3x3 stride-1 convolutions, which the runtime computes in the Winograd form: SAME on odd
    sizes (a last row and column of half tiles) over two images, VALID, channel
    counts that are not whole vector registers, fused RELU and RELU_N1_TO_1, then a 3x3/2 conv
    (the im2col), and two outputs."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input([2, 41, 37, 12])
    y = b.conv2d(x, _w(rng, 20, 3, 3, 12), _w(rng, 20), act="relu")
    y = b.conv2d(y, _w(rng, 9, 3, 3, 20), _w(rng, 9), padding="valid", act="relu_n1_to_1")
    z = b.conv2d(y, _w(rng, 16, 3, 3, 9), _w(rng, 16), stride=2)
    return b.finish([y, z])


def more_ops_block(seed=0) -> bytes:
    """The activations, paddings and reductions beyond MobileNet's: a conv, LEAKY_RELU, MIRROR_PAD
    (REFLECT), a conv, PRELU with a slope per channel, ELU, MIRROR_PAD (SYMMETRIC), MAXIMUM of the
    result and EXP of its negation, LOG of that sum (positive), LOG_SOFTMAX, REDUCE_MAX and
    REDUCE_MIN, FLOOR, SIGN and ROUND, six outputs."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input([1, 9, 7, 6])
    y = b.leaky_relu(b.conv2d(x, _w(rng, 10, 3, 3, 6), _w(rng, 10)), 0.1)
    y = b.mirror_pad(y, [[0, 0], [2, 1], [1, 2], [0, 0]], "reflect")
    y = b.conv2d(y, _w(rng, 8, 3, 3, 10), _w(rng, 8), padding="valid")
    y = b.elementwise(54, [y, b.const(rng.uniform(-0.5, 0.5, (1, 1, 8)).astype(np.float32))])  # PRELU
    y = b.unary(111, y)  # ELU
    y = b.mirror_pad(y, [[0, 0], [1, 1], [0, 3], [0, 0]], "symmetric")
    e = b.unary(47, b.unary(59, y))  # EXP(NEG(y))
    z = b.unary(73, b.binary("add", b.elementwise(55, [y, e]), e))  # LOG(MAXIMUM(y, e) + e)
    s = b.unary(50, z)  # LOG_SOFTMAX over the channels
    r = b.op(82, [z, b.const([1, 2], np.int32)], [1, 1, 1, 8], ("reducer", dict(keep=True)))  # REDUCE_MAX
    m = b.op(89, [s, b.const([3], np.int32)], [1, 12, 11], ("reducer", dict(keep=False)))  # REDUCE_MIN
    # of the input itself, whose bits every path shares (an ulp apart, FLOOR could differ by 1):
    # FLOOR(x) + ROUND(3 x) + SIGN(x)
    x3 = b.binary("mul", x, b.const(np.full((1,), 3.0, np.float32)))
    f = b.binary("add", b.binary("add", b.unary(8, x), b.unary(116, x3)), b.unary(158, x))
    return b.finish([y, z, s, r, m, f])


def upsample_block(seed=0) -> bytes:
    """A decoder's upsampling: TRANSPOSE_CONV 2x2/2 VALID with bias, then 3x3/2 SAME with a fused
    RELU6 and no bias, then a 1x1 conv."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input([1, 6, 5, 8])
    y = b.transpose_conv(x, _w(rng, 12, 2, 2, 8), _w(rng, 12), stride=2, padding="valid")
    y = b.transpose_conv(y, _w(rng, 6, 3, 3, 12), None, stride=2, padding="same", act="relu6")
    return b.finish([b.conv2d(y, _w(rng, 4, 1, 1, 6), _w(rng, 4))])


def read_after_output() -> bytes:
    """Two outputs, TANH(x) and TANH(x) + x: the input is read again after the first output is
    written, so a runtime that wrote that output over the input's buffer would read it back wrong."""
    b = Builder()
    x = b.input([1, 6, 40])
    y = b.unary(28, x)
    return b.finish([y, b.binary("add", y, x)])


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


def _sparse_1x1(b, rng, x, cin, cout, block, act=None):
    """A 1x1 conv pruned as the sparse chains prune: block=1 90 % unstructured in TFLite's sparse
    encoding, 4: 4x1 blocks at 80 % stored dense."""
    w = _block_zeros(rng, _w(rng, cout, 1, 1, cin), 0.8) if block == 4 else _w(rng, cout, 1, 1, cin, zeros=0.9)
    return b.conv2d(x, w, _w(rng, cout), act=act, sparse=1 if block == 1 else None)


def sparse_chw_chain(seed=0, block=1) -> bytes:
    """A chain the runtime runs channel-major (NCHW) around sparse 1x1 convs (block=1: 90 %
    unstructured in TFLite's sparse encoding; 4: 4x1 blocks at 80 %, stored dense): depthwise
    3x3 and 5x5 at strides 1 and 2 (SAME and PAD + VALID, an odd-sized batch of 2), a dilated
    depthwise, residual ADD, standalone RELU6 and HARD_SWISH, a tensor read in both layouts (by
    the chain and by a broadcast MUL), MEAN, and an NHWC model output fed from the chain. The
    first depthwise layers have 23x22 outputs (the plane kernel), the later ones 12x11 (the
    channel-minor row kernel the runtime picks for small planes)."""
    rng = np.random.default_rng(seed)
    b = Builder()

    def sparse(x, cin, cout, act=None):
        return _sparse_1x1(b, rng, x, cin, cout, block, act)

    x = b.input([2, 45, 43, 3])
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


def expand_depthwise_chain(seed=0, block=1) -> bytes:
    """Inverted-residual pairs the runtime fuses: a sparse 1x1 expansion (block=1: 90 %
    unstructured in TFLite's sparse encoding; 4: 4x1 blocks at 80 %, stored dense) read only by
    a depthwise conv on planes of more than 400 outputs, both channel-major: 3x3/2 SAME with a
    fused RELU6 on both, 5x5/2 and 5x5/1 SAME without activations, PAD + dilated 3x3 VALID after a
    RELU_N1_TO_1 expansion, and 3x3/2 to an 11x11 plane (fused where a row of 11 outputs is at
    least one register). One expansion is also read by a MEAN (not fused), and the 7x7/3 depthwise
    layer's output plane is small (not fused: the row kernel). Pairs whose depthwise kernel
    computes bands of rows and whose output only a sparse 1x1 projection reads become one block
    with it (the 3x3/2 and 5x5/1 ones). Batch 2, odd widths."""
    rng = np.random.default_rng(seed)
    b = Builder()

    def sparse(x, cin, cout, act=None):
        return _sparse_1x1(b, rng, x, cin, cout, block, act)

    x = b.input([2, 44, 41, 8])
    y = b.depthwise(sparse(x, 8, 24, act="relu6"), _w(rng, 1, 3, 3, 24), _w(rng, 24), stride=2, act="relu6")
    p = sparse(y, 24, 16)  # 22x21
    p = b.binary("add", p, b.depthwise(sparse(x, 8, 16), _w(rng, 1, 5, 5, 16), _w(rng, 16), stride=2))
    y = b.depthwise(sparse(p, 16, 48), _w(rng, 1, 5, 5, 48), _w(rng, 48))
    r = b.binary("add", p, sparse(y, 48, 16))
    e = sparse(r, 16, 32, act="relu_n1_to_1")
    y = b.depthwise(
        b.pad(e, [[0, 0], [2, 2], [2, 2], [0, 0]]), _w(rng, 1, 3, 3, 32), _w(rng, 32), padding="valid", dilation=2
    )
    q = sparse(y, 32, 16)
    e = sparse(q, 16, 40, act="relu")
    gate = b.mean(e, [1, 2])  # e's second reader
    y = b.depthwise(e, _w(rng, 1, 7, 7, 40), _w(rng, 40), stride=3, act="relu")
    y = b.binary("mul", y, gate)
    head = b.fc(b.mean(sparse(y, 40, 24), [1, 2], keep_dims=False), _w(rng, 10, 24), _w(rng, 10))
    # a small stride-2 plane (11x11 outputs: the row kernel unfused, a padded plane fused)
    small = b.depthwise(sparse(q, 16, 24, act="relu6"), _w(rng, 1, 3, 3, 24), _w(rng, 24), stride=2)
    return b.finish([head, b.mean(small, [1, 2], keep_dims=False)])


def depthwise_project_chain(shape=(2, 61, 58), cin=24, cout=16, block=4, seed=11) -> bytes:
    """MobileNetV2's first block without its expansion: a 3x3/2 RGB stem into a stride-1 3x3
    depthwise conv and a sparse 1x1 projection (block=1: 90 % unstructured in TFLite's sparse
    encoding; 4: 4x1 blocks at 80 %, stored dense), then a second such pair whose projection a
    residual ADD with a fused RELU reads as its first operand, a sparse 1x1, MEAN and a classifier.
    Input [N, 2H, 2W, 3]; the planes are H x W (the default's rows of 58 are no whole number of the
    SpMM's strips)."""
    rng = np.random.default_rng(seed)
    b = Builder()
    n, h, w = shape
    x = b.input([n, 2 * h, 2 * w, 3])
    y = b.conv2d(x, _w(rng, cin, 3, 3, 3), _w(rng, cin), stride=2, act="relu6")
    d = b.depthwise(y, _w(rng, 1, 3, 3, cin), _w(rng, cin), act="relu6")
    p = _sparse_1x1(b, rng, d, cin, cout, block=block)
    d2 = b.depthwise(p, _w(rng, 1, 3, 3, cout), _w(rng, cout), act="relu6")
    p2 = b.binary("add", _sparse_1x1(b, rng, d2, cout, cout, block=block), p, act="relu")
    head = _sparse_1x1(b, rng, p2, cout, 64, block=block, act="relu6")
    return b.finish([b.fc(b.mean(head, [1, 2], keep_dims=False), _w(rng, 10, 64), _w(rng, 10))])


def int8_cnn(sparse=False, seed=0) -> bytes:
    """A model.int8.tflite from edgeprune's own quantizer and exporter (float I/O, QUANTIZE and
    DEQUANTIZE at the edges): stem conv 3x3/2 + ReLU6, depthwise + ReLU, 1x1 convs (sparse: 90 %
    of the 1x1 weights zero), HARD_SWISH, squeeze-excite (MEAN, LOGISTIC, MUL), residual ADD, max
    and average pools, CONCATENATION of differently scaled branches and the FC head."""
    import tempfile
    from pathlib import Path

    import torch
    from torch import nn

    import edgeprune as ep
    from edgeprune.export import export

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU6())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.ReLU())
            self.pw = nn.Conv2d(16, 24, 1)
            self.pw2 = nn.Conv2d(24, 24, 1)
            self.act = nn.Hardswish()
            self.se1, self.se2 = nn.Conv2d(24, 8, 1), nn.Conv2d(8, 24, 1)
            self.fc = nn.Linear(48, 10)

        def forward(self, x):
            y = self.pw(self.dw(self.stem(x)))
            y = self.act(y + self.pw2(y))
            s = torch.sigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
            y = y * s
            a = nn.functional.max_pool2d(y, 2)
            b = nn.functional.avg_pool2d(y, 3, 2, 1) * 2.0
            y = torch.cat([a, b], 1).mean((2, 3))
            return self.fc(y)

    torch.manual_seed(seed)
    model = Net().eval()
    if sparse:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in (model.pw, model.pw2):
                conv.weight[torch.rand(conv.weight.shape, generator=g) < 0.9] = 0
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(seed + 1))
    qm = ep.quantize(model, x, progress=False)
    with tempfile.TemporaryDirectory() as d:
        path = export(qm, d, formats=["tflite-int8"], example_inputs=(x[:1],))["tflite-int8"]
        return Path(path).read_bytes()


def int8_sparse_wide(seed=0) -> bytes:
    """A model.int8.tflite whose two 1x1 convs (128 -> 128) are pruned in 1x4 blocks (4
    consecutive input channels of one output channel) to 90 %: wide enough that the sparse int8
    kernels of every path beat their dense ones, so the runtime picks them (narrow layers, or 90 %
    unstructured zeros that leave a third of the 1x4 blocks nonzero, run dense on AVX-512 VNNI)."""
    import tempfile
    from pathlib import Path

    import torch
    from torch import nn

    import edgeprune as ep
    from edgeprune.export import export

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 128, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(128, 128, 1),
        nn.ReLU6(),
        nn.Conv2d(128, 128, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    ).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in (model[2], model[4]):
            keep = torch.rand(128, 32, generator=g) >= 0.9
            conv.weight *= keep.repeat_interleave(4, 1)[:, :, None, None]
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(seed + 1))
    qm = ep.quantize(model, x, progress=False)
    with tempfile.TemporaryDirectory() as d:
        path = export(qm, d, formats=["tflite-int8"], example_inputs=(x[:1],))["tflite-int8"]
        return Path(path).read_bytes()


def litert_reference(data: bytes):
    """A callable running LiteRT's builtin reference kernels (no XNNPACK) on ``data``, one
    interpreter for every call: the oracle of int8 bit parity."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        for d, x in zip(it.get_input_details(), inputs):
            it.set_tensor(d["index"], x)
        it.invoke()
        return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]

    return run


def litert_reference_run(data: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """LiteRT's builtin reference kernels on ``data`` for one call."""
    return litert_reference(data)(inputs)


def int8_fc(x_quant=None, w_quant=None, seed=0, shape=(2, 8, 4), block_sparsity=0.0, out_scale=0.1) -> bytes:
    """Hand-made QUANTIZE -> int8 FULLY_CONNECTED (per-channel weights, int32 bias, fused ReLU)
    -> DEQUANTIZE. x_quant / w_quant replace the (scales, zero points, dimension) of the int8
    input / the weights, so tests can write inconsistent ones. shape = (rows, K, M);
    block_sparsity zeroes that share of the weight's 1x4 blocks (4 consecutive inputs of one
    output channel)."""
    rng = np.random.default_rng(seed)
    n, k, m = shape
    b = Builder()
    x = b.input([n, k])
    sx, zx = 0.05, 3
    sw = (rng.uniform(0.005, 0.02, m)).astype(np.float32)
    q = b.op(114, [x], [n, k], out_dtype=np.int8)
    b.tensors[q]["quant"] = x_quant or ([sx], [zx], 0)
    wv = rng.integers(-127, 128, (m, k))
    if block_sparsity:
        keep = rng.random((m, (k + 3) // 4)) >= block_sparsity
        wv = wv * np.repeat(keep, 4, axis=1)[:, :k]
    w = b.tensor([m, k], np.int8, wv, name="fc_weight")
    b.tensors[w]["quant"] = w_quant or (sw, [0] * m, 0)
    bias = b.tensor([m], np.int32, rng.integers(-500, 500, m), name="fc_bias")
    b.tensors[bias]["quant"] = ((np.float32(sx) * sw).astype(np.float32), [0] * m, 0)
    y = b.op(9, [q, w, bias], [n, m], ("fc", dict(act="relu")), out_dtype=np.int8)
    b.tensors[y]["quant"] = ([out_scale], [-2], 0)
    return b.finish([b.op(6, [y], [n, m])])


BMM_IN_SCALES = (0.05, 0.04)


def bmm_out_scale(k: int) -> float:
    """int8_batch_matmul's default output scale for inner dimension k."""
    return 24 * float(np.sqrt(k)) / 255


def int8_batch_matmul(sa, sb, adj_x=False, adj_y=False, zps=(3, -5, 7), out_scale=None) -> bytes:
    """QUANTIZE both float inputs -> int8 BATCH_MATMUL (per-tensor scales, zero points ``zps`` of
    A, B and the output) -> DEQUANTIZE. The output scale covers about 3 sigma of products of
    inputs of standard deviation 2 unless ``out_scale`` says."""
    b = Builder()
    qs = []
    for shape, scale, z in ((sa, BMM_IN_SCALES[0], zps[0]), (sb, BMM_IN_SCALES[1], zps[1])):
        q = b.op(114, [b.input(list(shape))], list(shape), out_dtype=np.int8)
        b.tensors[q]["quant"] = ([scale], [z], 0)
        qs.append(q)
    m = sa[-1] if adj_x else sa[-2]
    k = sa[-2] if adj_x else sa[-1]
    n = sb[-2] if adj_y else sb[-1]
    out = list(np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))) + [m, n]
    y = b.op(126, qs, out, ("bmm", dict(adj_x=adj_x, adj_y=adj_y)), out_dtype=np.int8)
    b.tensors[y]["quant"] = ([out_scale or bmm_out_scale(k)], [zps[2]], 0)
    return b.finish([b.op(6, [y], out)])


def int8_attention_softmax(
    shape=(1, 4, 9, 24), bias_shape=(1, 1, 9, 24), scale=0.125, beta=1.0, out_scale=0.0029, expose=False
):
    """int8 attention scores -> DEQUANTIZE -> MUL by ``scale`` -> ADD a constant bias (``bias_shape``,
    broadcast; None: no ADD) -> SOFTMAX -> QUANTIZE (``out_scale``, -128; a calibrated scale, not a
    power of two, so QUANTIZE's division rounds) -> DEQUANTIZE: the probabilities of an int8
    attention block. The float input is quantized first (scale 0.1, zero point 5).
    ``expose``: the SOFTMAX's output is a model output too, which keeps the chain unfused."""
    rng = np.random.default_rng(len(shape) + shape[-1])
    b = Builder()
    q = b.op(114, [b.input(list(shape))], list(shape), out_dtype=np.int8)
    b.tensors[q]["quant"] = ([0.1], [5], 0)
    t = b.op(6, [q], list(shape))
    if scale is not None:
        t = b.binary("mul", t, b.const(np.float32(scale)))
    if bias_shape is not None:
        bias = np.where(rng.random(bias_shape) < 0.3, np.finfo(np.float32).min, rng.standard_normal(bias_shape))
        t = b.binary("add", b.const(bias.astype(np.float32)), t)
    p = b.softmax(t, beta)
    y = b.op(114, [p], list(shape), out_dtype=np.int8)
    b.tensors[y]["quant"] = ([out_scale], [-128], 0)
    return b.finish([b.op(6, [y], list(shape))] + ([p] if expose else []))


def int8_max_pool(shape=(1, 9, 9, 70), size=3, stride=2, padding="same", act=None) -> bytes:
    """QUANTIZE -> int8 MAX_POOL_2D (input and output quantized alike) -> DEQUANTIZE."""
    b = Builder()
    q = b.op(114, [b.input(list(shape))], list(shape), out_dtype=np.int8)
    b.tensors[q]["quant"] = ([0.04], [-7], 0)
    y = b.pool(q, size, stride, padding, kind="max", act=act)
    b.tensors[y]["dtype"] = np.int8
    b.tensors[y]["quant"] = ([0.04], [-7], 0)
    return b.finish([b.op(6, [y], b.shape(y))])


def int8_moves(out_quant=None) -> bytes:
    """QUANTIZE [2, 6, 8] -> int8 SPLIT_V along the middle axis (2, 4) and BROADCAST_TO of the
    first part to [3, 2, 2, 8] -> DEQUANTIZE of the second part and of the repeats: the byte moves
    int8 attention uses (GPT-2's split projection, grouped-query repeats). The outputs carry the
    input's quantization, or ``out_quant`` (a file with mismatched scales)."""
    b = Builder()
    q = b.op(114, [b.input([2, 6, 8])], [2, 6, 8], out_dtype=np.int8)
    b.tensors[q]["quant"] = ([0.05], [3], 0)
    parts = b.split_v(q, [2, -1], 1)
    for t in parts:
        b.tensors[t]["dtype"] = np.int8
        b.tensors[t]["quant"] = out_quant or ([0.05], [3], 0)
    rep = b.broadcast_to(parts[0], [3, 2, 2, 8], dtype=np.int8)
    b.tensors[rep]["quant"] = out_quant or ([0.05], [3], 0)
    return b.finish([b.op(6, [parts[1]], [2, 4, 8]), b.op(6, [rep], [3, 2, 2, 8])])


def int8_transpose_conv(k=3, stride=2, padding="same", act=None, bias=True, shape=(1, 5, 4, 8), cout=6, out_hw=None):
    """QUANTIZE -> int8 TRANSPOSE_CONV (per-channel int8 weights [O, K, K, I], int32 bias at
    s_in * s_w, nonzero input and output zero points) -> DEQUANTIZE."""
    rng = np.random.default_rng(k * 10 + stride)
    b = Builder()
    x = b.input(list(shape))
    sx, zx = 0.05, 3
    q = b.op(114, [x], list(shape), out_dtype=np.int8)
    b.tensors[q]["quant"] = ([sx], [zx], 0)
    sw = rng.uniform(0.005, 0.02, cout).astype(np.float32)
    w = b.tensor([cout, k, k, shape[3]], np.int8, rng.integers(-127, 128, (cout, k, k, shape[3])), name="tc_weight")
    b.tensors[w]["quant"] = (sw, [0] * cout, 0)
    if out_hw is None:
        out_hw = [(s - 1) * stride + k if padding == "valid" else s * stride for s in shape[1:3]]
    out = [shape[0], *out_hw, cout]
    ins = [b.const(out, np.int32), w, q]
    if bias:
        bt = b.tensor([cout], np.int32, rng.integers(-500, 500, cout), name="tc_bias")
        b.tensors[bt]["quant"] = ((np.float32(sx) * sw).astype(np.float32), [0] * cout, 0)
        ins.append(bt)
    y = b.op(67, ins, out, ("tconv", dict(padding=padding, stride=stride, act=act)), out_dtype=np.int8)
    b.tensors[y]["quant"] = ([0.08], [-4], 0)
    return b.finish([b.op(6, [y], out)])


def int8_attention_scores(heads=2, seq=12, d=16, seed=0) -> bytes:
    """One float input [heads, seq, d] -> QUANTIZE -> int8 BATCH_MATMUL of the tensor with itself
    transposed (adj_y: the scores Q K^T of attention when Q = K) -> DEQUANTIZE: an int8 matmul of
    two activations in a single-input file (the C++ fixtures feed one input)."""
    del seed  # the file has no weights; the signature matches the other fixture builders
    b = Builder()
    q = b.op(114, [b.input([heads, seq, d])], [heads, seq, d], out_dtype=np.int8)
    b.tensors[q]["quant"] = ([BMM_IN_SCALES[0]], [-3], 0)
    y = b.op(126, [q, q], [heads, seq, seq], ("bmm", dict(adj_x=False, adj_y=True)), out_dtype=np.int8)
    b.tensors[y]["quant"] = ([bmm_out_scale(d) / 2], [5], 0)
    return b.finish([b.op(6, [y], [heads, seq, seq])])


def encoder_block(seed=0, seq=12, hidden=32, heads=4, ffn=64, sparse=None) -> bytes:
    """One transformer encoder layer on float hidden states [seq, hidden], as edgeprune's TFLite
    writer lowers one: position embeddings by GATHER of constant ids, q/k/v FULLY_CONNECTED,
    heads by RESHAPE + TRANSPOSE, scores by BATCH_MATMUL (adj_y), a padding mask built from a
    constant length (LESS, CAST, LOGICAL_AND, SELECT_V2), SOFTMAX, the NaN clean-up (NOT_EQUAL +
    SELECT_V2), P V, the output projection, residual ADD, decomposed layer norm (MEAN, SUB, MUL,
    RSQRT) and a GELU feed-forward (sparse=1: its weights 90 % zeros in TFLite's sparse encoding)."""
    rng = np.random.default_rng(seed)
    b = Builder()
    d = hidden // heads
    x = b.input([seq, hidden])
    pos = b.gather(b.const(rng.standard_normal((seq + 3, hidden)) * 0.1), b.const(np.arange(seq), np.int32))
    h = b.binary("add", x, pos)

    def lin(v, m, k, zeros=0.0):
        return b.fc(v, _w(rng, m, k, zeros=zeros) * np.float32(np.sqrt(2.0 / k)), rng.standard_normal(m) * 0.1)

    def split(v):  # [seq, hidden] -> [heads, seq, d]
        return b.transpose(b.reshape(v, [seq, heads, d]), [1, 0, 2])

    q, k, v = (split(lin(h, hidden, hidden)) for _ in range(3))
    scores = b.binary("mul", b.batch_matmul(q, k, adj_y=True), b.const(np.float32(d**-0.5)))
    valid = b.elementwise(58, [b.const(np.arange(seq), np.int32), b.const(np.int32(seq - 3), np.int32)], np.bool_)
    keep = b.elementwise(86, [valid, b.cast(b.const(np.ones(seq, np.int32)), np.bool_)], np.bool_)
    bias = b.elementwise(123, [keep, b.const(np.float32(0.0)), b.const(np.float32(-1e9))])
    p = b.softmax(b.binary("add", scores, bias))
    nan = b.elementwise(72, [p, p], np.bool_)
    p = b.elementwise(123, [nan, b.const(np.float32(0.0)), p])
    ctx = b.reshape(b.transpose(b.batch_matmul(p, v), [1, 0, 2]), [seq, hidden])
    h = b.binary("add", h, lin(ctx, hidden, hidden))

    def norm(v):
        mu = b.mean(v, [1])
        c = b.binary("sub", v, mu)
        var = b.binary("add", b.mean(b.binary("mul", c, c), [1]), b.const(np.float32(1e-12)))
        return b.binary("mul", b.binary("mul", c, b.unary(76, var)), b.const(1 + rng.standard_normal(hidden) * 0.1))

    h = norm(h)
    z = 0.9 if sparse else 0.0
    f = b.gelu(b.fc(h, _w(rng, ffn, hidden, zeros=z) * np.float32(0.3), None, sparse=sparse))
    out = norm(b.binary("add", h, b.fc(f, _w(rng, hidden, ffn, zeros=z) * np.float32(0.2), None, sparse=sparse)))
    return b.finish([out])
