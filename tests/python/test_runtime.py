"""The runtime (edgeprune.runtime) against LiteRT on identical .tflite files: dense and sparse
(unstructured and 4x1 blocks), every compiled x86 path, 1/2/4 threads with the same bits, and
hostile files (truncated, bit-flipped, inconsistent) that must fail with a message, never crash.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from runtime_models import conv_variants, encoder_block, inputs_for, litert_run, mobilenet_block, upsample_block

import edgeprune as ep
from edgeprune import kernels
from edgeprune.runtime import RuntimeModelError, UnsupportedModelError

ISAS = [i for i in ("reference", "avx2", "avx512", "neon", "neon-dotprod") if i in kernels.supported_isas()]
MODELS = {
    "dense": lambda: mobilenet_block(None),
    "sparse": lambda: mobilenet_block(1),
    "blocks4x1": lambda: mobilenet_block(4),
    "conv_variants": conv_variants,
    "encoder": encoder_block,
    "encoder_sparse": lambda: encoder_block(sparse=1),
    "upsample": upsample_block,
}


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _with_litert(data: bytes):
    """The file, the model loaded with defaults, its seeded inputs and LiteRT's outputs on them."""
    m = ep.runtime.load(data)
    x = inputs_for(m)
    return data, m, x, litert_run(data, x)


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    data = MODELS[request.param]()
    m = ep.runtime.load(data)
    x = inputs_for(m)
    return request.param, data, x, litert_run(data, x)


@pytest.mark.parametrize("isa", ISAS)
def test_matches_litert_on_every_path(case, isa):
    name, data, x, want = case
    m = ep.runtime.load(data, isa=isa)
    assert m.isa == isa
    got = m(*x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert _rel(g, w) < 1e-4, (name, isa, _rel(g, w))


def test_sparse_layers_run_sparse_kernels(case):
    name, data, x, want = case
    labels = [lbl for _, lbl, _ in ep.runtime.load(data).profile(runs=1)]
    n_sparse = sum("sparse" in lbl for lbl in labels)
    if name in ("sparse", "blocks4x1", "encoder_sparse"):
        assert n_sparse >= 2, labels
    else:
        assert n_sparse == 0, labels
    dense = ep.runtime.load(data, sparse=False)
    assert not any("sparse" in lbl for _, lbl, _ in dense.profile(runs=1))
    assert _rel(dense(*x)[0], want[0]) < 1e-4


def test_same_bits_for_1_2_4_threads(case):
    _, data, x, _ = case
    outs = [ep.runtime.load(data, threads=t)(*x) for t in (1, 2, 4)]
    for o in outs[1:]:
        for a, b in zip(outs[0], o):
            assert np.array_equal(a, b)


def test_threads_tune_per_operator_in_the_first_calls_and_keep_the_bits(case):
    # with several threads a context first times every operator split and on one thread (nine
    # counted calls; a call meant to split in which the pool's helper hardly joined, as when
    # another process holds the second core, is taken again, at most 32 times), then runs each
    # as chosen; every call gives the one-thread bits
    _, data, x, _ = case
    want = ep.runtime.load(data)(*x)
    m = ep.runtime.load(data, threads=2)
    assert m.tuning and m.op_threads == [2] * len(m.operators)
    calls = 0
    while m.tuning:
        for a, b in zip(m(*x), want):
            assert np.array_equal(a, b), calls
        calls += 1
        assert calls <= 9 + 32, calls
    assert calls >= 9
    for a, b in zip(m(*x), want):
        assert np.array_equal(a, b)
    assert set(m.op_threads) <= {1, 2} and len(m.op_threads) == len(m.operators)
    prof = m.profile(runs=2)  # a tuned context: its profile counts the calls it was asked for
    assert len(prof) == len(m.operators) and all(ms > 0 for _, _, ms in prof)
    # the choice is made again 1024 calls after it: 3 calls since
    for _ in range(1024 - 3 - 1):
        m(*x)
    assert not m.tuning
    m(*x)
    assert m.tuning
    m.set_threads(2)  # the choice is made again
    assert m.tuning
    assert not ep.runtime.load(data, threads=1).tuning


def test_inputs_outputs_and_errors(tmp_path):
    data = conv_variants()
    p = tmp_path / "m.tflite"
    p.write_bytes(data)
    m = ep.runtime.load(p)
    assert [i["shape"] for i in m.inputs] == [(2, 13, 11, 8)]
    assert [o["shape"] for o in m.outputs] == [(2, 38), (2, 3, 3, 16)]
    assert m.arena_bytes > 0
    kinds = [k for k, _, _ in m.profile(runs=1)]
    assert kinds.count("PAD") == 1  # the two PADs before VALID convolutions are folded into them
    with pytest.raises(ep.errors.UserError, match=r"input 0 \('.*'\) must have shape \(2, 13, 11, 8\)"):
        m(np.zeros((1, 13, 11, 8), np.float32))
    with pytest.raises(ep.errors.UserError, match=r"the model takes 1 inputs \(got 2\)"):
        m(np.zeros((2, 13, 11, 8), np.float32), np.zeros((2, 13, 11, 8), np.float32))
    # Arrays that are not C-contiguous float32 (float64, a strided view, a nested list) are
    # converted first and give the bits of the float32 array; a wrong shape is named either way.
    x = np.random.default_rng(1).standard_normal((2, 13, 11, 8)).astype(np.float32)
    want = m(x)
    wide = np.zeros((2, 13, 11, 16), np.float32)
    wide[..., ::2] = x
    for other in (x.astype(np.float64), wide[..., ::2], x.tolist()):
        for a, b in zip(m(other), want):
            assert np.array_equal(a, b)
    with pytest.raises(ep.errors.UserError, match="must have shape"):
        m(np.zeros((2, 13, 11, 8), np.float64)[:1])
    assert m.inputs[0]["dtype"] == "float32"
    m.inputs[0]["shape"] = (1,)  # the caller's copy; the model's own stays as loaded
    assert m(x)[0].shape == want[0].shape
    with pytest.raises(RuntimeModelError, match="cannot read"):
        ep.runtime.load(tmp_path / "missing.tflite")


def test_unsupported_operator_is_named():
    from tflite_builder import Builder

    b = Builder()
    x = b.input([1, 4])
    y = b.op(16, [x], [1, 4])  # LSTM
    with pytest.raises(UnsupportedModelError, match=r"operator 0 \(BUILTIN_16\).*not supported"):
        ep.runtime.load(b.finish([y]))


@pytest.mark.parametrize("isa", ISAS)
def test_tanh_and_logistic_against_float64(isa):
    """TANH and LOGISTIC to a few float steps of the float64 functions over their whole range:
    the polynomial / exponential branches and their joins, tiny and huge inputs, +-inf and NaN."""
    from tflite_builder import Builder

    special = [0.0, -0.0, 1e-30, -1e-30, 1e-6, -1e-4, 0.6249, 0.625, 0.6251, -0.625, 8.99, 9.0, 9.01]
    special += [30.0, -30.0, 87.0, -87.0, 88.5, -88.5, 100.0, -100.0, np.inf, -np.inf]
    # (enough values that 2 and 3 threads split them, in parts that are not all equal)
    x = np.concatenate([np.linspace(-12, 12, 240001), special, [np.nan]]).astype(np.float32)
    b = Builder()
    xin = b.input([x.size])
    data = b.finish([b.op(28, [xin], [x.size]), b.op(14, [xin], [x.size])])  # TANH, LOGISTIC
    tanh, logistic = ep.runtime.load(data, isa=isa)(x)
    for threads in (2, 3):
        for a, b in zip(ep.runtime.load(data, isa=isa, threads=threads)(x), (tanh, logistic)):
            assert np.array_equal(a, b, equal_nan=True)
    ref = x[:-1].astype(np.float64)
    for got, want, tol in ((tanh, np.tanh(ref), 2e-7), (logistic, 1.0 / (1.0 + np.exp(-ref)), 4e-7)):
        assert np.isnan(got[-1])
        got = got[:-1].astype(np.float64)
        # relative where the result is a normal float; below (e^-100 is 4e-44), within 2^-126
        normal = np.abs(want) >= 2.0**-126
        err = np.abs(got - want) / np.where(normal, np.abs(want), 1.0)
        assert err[normal].max() < tol, (isa, float(x[:-1][normal][err[normal].argmax()]), float(err[normal].max()))
        assert err[~normal].max() <= 2.0**-126, (isa, float(err[~normal].max()))
    first = 240001  # the special values: tanh keeps zeros' signs and tiny inputs exactly
    assert np.array_equal(tanh[first : first + 4], x[first : first + 4]) and np.signbit(tanh[first + 1])
    for got, want in zip((tanh, logistic), litert_run(data, [x])):
        assert np.allclose(got, want, rtol=1e-6, atol=1e-38, equal_nan=True)


def test_silu_pairs_run_as_one_pass_with_the_same_bits():
    """MUL(x, LOGISTIC(x)) runs as one operator (either operand order); a gate that is read
    elsewhere, a MUL that broadcasts or clamps, or a LOGISTIC of another tensor stays two. Every
    variant gives the bits of the unfused pair and LiteRT's values."""
    from tflite_builder import Builder

    def model(variant):
        b = Builder()
        x = b.input([1, 6, 5, 32])
        s = b.input([1, 1, 1, 32])
        g = b.op(14, [x], [1, 6, 5, 32])  # LOGISTIC
        outs = []
        if variant == "x*g":
            outs.append(b.binary("mul", x, g))
        elif variant == "g*x":
            outs.append(b.binary("mul", g, x))
        elif variant == "gate read twice":
            outs += [b.binary("mul", x, g), g]
        elif variant == "relu6 on the mul":
            outs.append(b.binary("mul", x, g, act="relu6"))
        elif variant == "broadcast":  # a squeeze-excite gate: x * sigmoid(s)
            gs = b.op(14, [s], [1, 1, 1, 32])
            outs.append(b.binary("mul", x, gs))
            outs.append(b.binary("mul", x, g))
        return b.finish(outs)

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((1, 6, 5, 32)) * 5).astype(np.float32)
    s = rng.standard_normal((1, 1, 1, 32)).astype(np.float32)
    unfused = ep.runtime.load(model("gate read twice"))(x, s)[0]
    for variant, fused in (("x*g", 1), ("g*x", 1), ("gate read twice", 0), ("relu6 on the mul", 0), ("broadcast", 1)):
        data = model(variant)
        m = ep.runtime.load(data)
        labels = [lbl for _, lbl in m.operators]
        assert sum("(SiLU)" in lbl for lbl in labels) == fused, (variant, labels)
        assert sum(lbl.startswith("MUL") for lbl in labels) == {"broadcast": 1}.get(variant, 1 - fused), labels
        got = m(x, s)
        want = litert_run(data, [x, s])
        for g_, w_ in zip(got, want):
            np.testing.assert_allclose(g_, w_, rtol=1e-6, atol=1e-7)
        if variant == "relu6 on the mul":
            assert np.array_equal(got[0], np.minimum(np.maximum(unfused, 0), 6))
        else:
            assert np.array_equal(got[-1] if variant == "broadcast" else got[0], unfused), variant


@pytest.mark.parametrize(
    "value,pads",
    [(None, [1, 1, 1, 1]), (-3.4028235e38, [1, 1, 1, 1]), (0.5, [0, 2, 1, 0]), (-np.inf, [2, 1, 0, 2])],
)
def test_pads_fold_into_max_pools_with_the_same_bits(value, pads):
    """A PAD (zeros) or PADV2 (any constant: PyTorch's padded max pool writes the lowest float)
    before a VALID MAX_POOL_2D is folded into the pool: no PAD runs, and every window that reaches
    the padding takes the constant into its max, as LiteRT's padded copy does, bit for bit (with
    -inf, NaN and values below the constant in the input)."""
    from tflite_builder import Builder

    t, bt, left, r = pads
    b = Builder()
    x = b.input([1, 9, 10, 20])
    shape = [1, 9 + t + bt, 10 + left + r, 20]
    pad_arr = b.const(np.array([[0, 0], [t, bt], [left, r], [0, 0]]), np.int32)
    if value is None:
        padded = b.op(34, [x, pad_arr], shape)  # PAD
    else:
        padded = b.op(60, [x, pad_arr, b.const(np.float32(value))], shape)  # PADV2
    data = b.finish([b.pool(padded, 3, 2, "valid", kind="max")])
    m = ep.runtime.load(data)
    assert [k for k, _ in m.operators] == ["MAX_POOL_2D"], m.operators
    xv = np.random.default_rng(5).standard_normal((1, 9, 10, 20)).astype(np.float32) - 1.0
    xv[0, :, :, 3] = -np.inf  # windows of only -inf: the lowest-float padding decides
    xv[0, :, 0, 4] = np.nan
    xv[0, -1, -1, 5] = np.inf
    got, want = m(xv)[0], litert_run(data, [xv])[0]
    assert np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "cin,cout,k,stride,dilation,padding,act,hw,batch",
    [
        (3, 32, 3, 2, 1, "same", "relu6", (37, 30), 1),  # MobileNet's stem
        (3, 64, 7, 2, 1, "same", "relu", (45, 41), 1),  # ResNet's
        (3, 24, 3, 1, 2, "valid", None, (20, 26), 2),  # dilated, a partial block of 16
        (1, 8, 5, 1, 1, "same", None, (11, 9), 1),  # grayscale, fewer outputs than a block
        (4, 40, 3, 3, 1, "valid", "relu", (16, 17), 1),  # RGBA, 32 + 8 outputs
        (2, 16, 1, 2, 1, "valid", None, (9, 9), 1),  # a strided 1x1
        (3, 48, 9, 1, 1, "same", None, (5, 6), 1),  # a kernel wider than the image: every pixel an edge
    ],
)
def test_convolutions_of_few_input_channels(isa, cin, cout, k, stride, dilation, padding, act, hw, batch):
    """CONV_2D on up to 4 input channels runs a direct loop (no im2col): LiteRT's values on every
    path for stems, dilation, partial channel blocks, edges and batches, and the same bits on 1, 2
    and 3 threads."""
    from tflite_builder import Builder

    rng = np.random.default_rng(cin * 100 + cout)
    b = Builder()
    x = b.input([batch, hw[0], hw[1], cin])
    w = rng.standard_normal((cout, k, k, cin)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    data = b.finish([b.conv2d(x, w, bias, stride=stride, padding=padding, act=act, dilation=dilation)])
    xv = rng.standard_normal((batch, hw[0], hw[1], cin)).astype(np.float32)
    m = ep.runtime.load(data, isa=isa)
    got = m(xv)[0]
    want = litert_run(data, [xv])[0]
    # the direct loop keeps no im2col buffer: the arena holds the input and the output alone
    assert m.arena_bytes <= xv.nbytes + got.nbytes + 2 * 64, m.arena_bytes
    assert got.shape == want.shape
    assert _rel(got, want) < 1e-5, _rel(got, want)
    for threads in (2, 3):
        assert np.array_equal(ep.runtime.load(data, isa=isa, threads=threads)(xv)[0], got)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "cin,cout,kh,kw,padding,act,hw,batch,stride",
    [
        (6, 24, 3, 3, "same", "relu", (30, 33), 2, 1),  # padded copy, a partial panel, two images
        (7, 32, 3, 3, "valid", None, (31, 40), 1, 1),  # read straight from the input: no copy
        (8, 16, 5, 5, "same", "relu6", (29, 28), 1, 1),  # 5x5: two rows and columns of padding
        (10, 8, 3, 1, "same", None, (28, 30), 1, 1),  # a filter one column wide
        (5, 12, 1, 7, "same", None, (6, 64), 1, 1),  # a filter one row high, three rows
        (16, 32, 3, 3, "same", "relu", (56, 57), 1, 2),  # stride 2 (AVX-512): 29 columns, padded
        (8, 24, 3, 3, "valid", None, (61, 60), 2, 2),  # stride 2 straight from the input
    ],
)
def test_convolutions_that_read_the_im2col_in_place(isa, cin, cout, kh, kw, padding, act, hw, batch, stride):
    """CONV_2D on output rows of at least 28 pixels, stride 1 (and 2 on AVX-512), reads each
    output row's im2col in place from the (zero-padded) input, with no column buffer: LiteRT's
    values on every path, the same bits on 1, 2 and 3 threads, and an arena of the input, the
    output and the padded copy alone."""
    from tflite_builder import Builder

    rng = np.random.default_rng(cin * 100 + cout + kh)
    b = Builder()
    x = b.input([batch, hw[0], hw[1], cin])
    w = rng.standard_normal((cout, kh, kw, cin)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    data = b.finish([b.conv2d(x, w, bias, stride=stride, padding=padding, act=act)])
    xv = rng.standard_normal((batch, hw[0], hw[1], cin)).astype(np.float32)
    m = ep.runtime.load(data, isa=isa)
    got = m(xv)[0]
    want = litert_run(data, [xv])[0]
    assert got.shape == want.shape
    assert _rel(got, want) < 1e-5, _rel(got, want)
    oh, ow = got.shape[1], got.shape[2]
    hp, wp = (oh - 1) * stride + kh, (ow - 1) * stride + kw  # the input rows and columns read
    copy = 0 if hp <= hw[0] and wp <= hw[1] and padding == "valid" else hp * wp * cin * 4
    if stride == 1 or isa == "avx512":
        assert m.arena_bytes <= xv.nbytes + got.nbytes + copy + 3 * 64, (m.arena_bytes, copy)
    for threads in (2, 3):
        assert np.array_equal(ep.runtime.load(data, isa=isa, threads=threads)(xv)[0], got)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "cin,cout,padding,act,hw,batch",
    [
        (8, 16, "same", None, (2, 2), 1),  # the fewest channels it takes, one tile
        (12, 20, "same", "relu", (9, 7), 2),  # half tiles in the last row and column, two images
        (13, 11, "valid", "relu_n1_to_1", (12, 17), 1),  # channel tails on every path
        (32, 32, "same", "relu6", (56, 56), 1),  # ResNet's first stage: tile rows in several tasks
        (64, 160, "same", None, (14, 14), 1),  # a filter past the task budget: one task
        (256, 24, "same", "relu", (7, 7), 1),  # a long sum over channels
    ],
)
def test_3x3_convolutions_in_the_winograd_form(isa, cin, cout, padding, act, hw, batch):
    """Stride-1 3x3 CONV_2D with 8 or more channels in and out (and 128 or more channel pairs)
    runs as Winograd F(2x2, 3x3), but for planes of at most 16 tiles (7x7) on AVX-512, which run
    direct: the profiler names the form, LiteRT's values within 1e-5 relative on every path, and
    the same bits on 1, 2 and 3 threads."""
    from tflite_builder import Builder

    rng = np.random.default_rng(cin * 100 + cout)
    b = Builder()
    x = b.input([batch, hw[0], hw[1], cin])
    w = rng.standard_normal((cout, 3, 3, cin)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    data = b.finish([b.conv2d(x, w, bias, stride=1, padding=padding, act=act)])
    xv = rng.standard_normal((batch, hw[0], hw[1], cin)).astype(np.float32)
    m = ep.runtime.load(data, isa=isa)
    oh, ow = hw[0] - 2 * (padding == "valid"), hw[1] - 2 * (padding == "valid")
    form = "" if isa == "avx512" and (oh + 1) // 2 * ((ow + 1) // 2) <= 16 else " winograd"
    assert [label for _, label, _ in m.profile(runs=1)] == [f"CONV_2D 3x3/1 {cin}->{cout} {oh}x{ow}{form}"]
    got = m(xv)[0]
    want = litert_run(data, [xv])[0]
    assert got.shape == want.shape
    assert _rel(got, want) < 1e-5, _rel(got, want)
    for threads in (2, 3):
        assert np.array_equal(ep.runtime.load(data, isa=isa, threads=threads)(xv)[0], got)


def test_outputs_that_repeat_or_pass_an_input_through():
    """Outputs go straight into the caller's arrays where they can: an output listed twice, an
    input that is also an output and consecutive calls on other data all give LiteRT's values."""
    from tflite_builder import Builder

    b = Builder()
    x = b.input([2, 3, 40])
    y = b.unary(28, x)  # TANH
    data = b.finish([y, x, y, b.binary("add", y, x)])
    m = ep.runtime.load(data)
    rng = np.random.default_rng(4)
    for _ in range(3):
        xv = rng.standard_normal((2, 3, 40)).astype(np.float32)
        got = m(xv)
        want = litert_run(data, [xv])
        assert np.array_equal(got[1], xv) and np.array_equal(got[0], got[2])
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


def test_fused_tanh_is_refused():
    from tflite_builder import Builder

    b = Builder()
    x = b.input([1, 4, 4, 2])
    y = b.conv2d(x, np.ones((2, 1, 1, 2), np.float32), np.zeros(2), act="tanh")
    with pytest.raises(UnsupportedModelError, match="fused TANH"):
        ep.runtime.load(b.finish([y]))


def test_inconsistent_files_are_refused_with_a_message():
    from tflite_builder import Builder

    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input([1, 8, 8, 4])
    y = b.conv2d(x, rng.standard_normal((6, 3, 3, 4)).astype(np.float32), np.zeros(6))
    b.tensors[y]["shape"] = [1, 8, 8, 7]  # the output shape the operator cannot produce
    with pytest.raises(RuntimeModelError, match=r"operator 0 \(CONV_2D\).*shape"):
        ep.runtime.load(b.finish([y]))
    b = Builder()
    x = b.input([1, 8])
    y = b.fc(x, np.ones((3, 8), np.float32), np.ones(3))
    b.tensors[y - 1]["data"] = b.tensors[y - 1]["data"][:-4]  # bias buffer one float short
    with pytest.raises(RuntimeModelError, match="buffer holds 8 bytes, shape and type need 12"):
        ep.runtime.load(b.finish([y]))
    with pytest.raises(RuntimeModelError, match="identifier"):
        ep.runtime.load(b"\x00" * 64)


def test_truncated_and_bit_flipped_files_never_crash():
    data = mobilenet_block(1, size=8)
    rng = np.random.default_rng(0)
    loaded = refused = 0
    cuts = sorted({int(c) for c in rng.integers(1, len(data), 60)})
    variants = [data[:c] for c in cuts]
    for _ in range(300):
        buf = bytearray(data)
        for pos in rng.integers(0, len(buf), rng.integers(1, 4)):
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        variants.append(bytes(buf))
    for v in variants:
        try:
            m = ep.runtime.load(v)
        except (RuntimeModelError, UnsupportedModelError) as e:
            assert str(e) and "\n" not in str(e)
            refused += 1
            continue
        loaded += 1
        m(*inputs_for(m))  # a file that loads must also run
    assert refused >= len(cuts)  # no truncated file passes the verifier
    assert loaded + refused == len(variants)


def test_bench_runs_the_edgeprune_runtime_with_its_profiler(tmp_path):
    p = tmp_path / "m.tflite"
    p.write_bytes(mobilenet_block(1, size=8))
    res = ep.bench(p, runtime="edgeprune", runs=3, warmup=1)
    assert res.runtime == "edgeprune" and res.runtime_version.startswith("edgeprune ")
    assert len(res.samples_ms) == 3 and min(res.samples_ms) > 0
    kinds = {row["op_type"] for row in res.layers}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= kinds
    assert [r["mean_ms"] for r in res.layers] == sorted((r["mean_ms"] for r in res.layers), reverse=True)
    assert any("sparse" in r["name"] for r in res.layers)
    # on several threads the tuning calls come before the timed ones, and the version says what
    # the tuning chose
    two = ep.bench(p, runtime="edgeprune", runs=3, warmup=1, threads=2)
    n_ops = len(ep.runtime.load(p).operators)
    assert re.fullmatch(rf"edgeprune \S+ \(\w[\w-]*, \d+ of {n_ops} operators split\)", two.runtime_version)


@pytest.mark.parametrize("block", [1, 4])
def test_sparse_chains_run_channel_major_and_match_litert(block):
    from runtime_models import sparse_chw_chain

    data, m, x, want = _with_litert(sparse_chw_chain(block=block))
    labels = [lbl for _, lbl, _ in m.profile(runs=1)]
    to_chw = [lbl for lbl in labels if lbl.startswith("layout NHWC->NCHW")]
    to_nhwc = [lbl for lbl in labels if lbl.startswith("layout NCHW->NHWC")]
    # into the chain: the stem conv, read only by the chain, writes its output as planes itself
    # (no layout operator); out: for the broadcast MUL and for the sparse conv that writes the
    # NHWC model output (an op feeding a model output stays NHWC)
    assert labels[0].startswith("CONV_2D 3x3/1 3->16") and labels[0].endswith(" ->nchw"), labels
    assert not to_chw and len(to_nhwc) >= 1, labels
    assert sum("sparse" in lbl for lbl in labels) >= 5, labels
    # the 3x3/2 depthwise conv alone reads the sparse 1x1 before it, and a sparse 1x1 alone reads
    # it: one operator (the expansion's planes never stored, nor on several threads the
    # depthwise output)
    fused = [lbl for lbl in labels if " + DEPTHWISE" in lbl]
    assert fused == [
        "CONV_2D 1x1/1 16->32 sparse 45x43 nchw + DEPTHWISE_CONV_2D 3x3/2 32 23x22 nchw"
        " + CONV_2D 1x1/1 32->24 sparse 23x22 nchw"
    ], labels
    # a depthwise conv the plane kernel runs straight from its input (stride 1, SAME), read only
    # by a sparse 1x1: one operator too, over bands of pixels, with the residual ADD that alone
    # reads the projection (as the ADD's second operand here)
    # (the plane kernel's narrowest vector rows: 8 floats on AVX-512 too, whose dw_plane hands
    # rows narrower than its 16 lanes to the AVX2 loop)
    lanes = {"avx512": 8, "avx2": 8}.get(m.isa, 4)
    assert [lbl for lbl in labels if lbl.startswith("DEPTHWISE") and " + " in lbl] == [
        "DEPTHWISE_CONV_2D 5x5/1 24 23x22 nchw + CONV_2D 1x1/1 24->24 sparse 23x22 nchw + ADD 2x23x22x24 nchw"
    ] + (
        ["DEPTHWISE_CONV_2D 3x3/1 40 12x11 nchw + CONV_2D 1x1/1 40->64 sparse 12x11 nchw"] if 11 >= lanes + 1 else []
    ), labels
    dw = [lbl.split(" + ")[0] for lbl in labels if lbl.startswith("DEPTHWISE")]
    assert [lbl.endswith(" 23x22 nchw") for lbl in dw] == [True, False, False, False], dw
    # small planes run channel-minor (transposes and the row kernel), except 3x3 / 5x5 at stride
    # 1 with SAME padding on rows of at least a vector and the filter's reach, which the plane
    # kernel runs straight from the input: the last 12x11 layer on paths of up to 8 lanes
    assert all(lbl.endswith(" 12x11 nchw (rows)") for lbl in dw[1:3]), dw
    assert dw[3].endswith(" 12x11 nchw" if 11 >= lanes + 1 else " 12x11 nchw (rows)"), dw
    for isa in ISAS:
        outs = [ep.runtime.load(data, isa=isa, threads=t)(*x) for t in (1, 2, 4)]
        for got in outs:
            for g, w in zip(got, want):
                assert g.shape == w.shape
                assert _rel(g, w) < 1e-4, (isa, _rel(g, w))
        for got in outs[1:]:
            assert all(np.array_equal(a, c) for a, c in zip(outs[0], got)), isa
    dense = ep.runtime.load(data, sparse=False)  # no sparse layer: everything stays NHWC
    assert not any(lbl.startswith("layout") or "nchw" in lbl for _, lbl, _ in dense.profile(runs=1))
    assert all(_rel(g, w) < 1e-4 for g, w in zip(dense(*x), want))


@pytest.mark.parametrize("block", [1, 4])
def test_expansions_and_their_depthwise_convs_run_as_one_operator(block):
    from runtime_models import expand_depthwise_chain

    data, m, x, want = _with_litert(expand_depthwise_chain(block=block))
    labels = [lbl for _, lbl in m.operators]
    # fused: every sparse 1x1 read only by a depthwise conv on planes of more than 400 outputs,
    # or at stride 2 on rows of at least one register; not: the expansion a MEAN also reads,
    # and the 7x7/3 conv (8x7 outputs: the row kernel). With them the projections that alone
    # read a pair whose depthwise kernel computes bands of rows (not the dilated one's), in
    # batches of 2: split, their tasks take bands of pixels of each image. The second block
    # takes in the residual ADD after it; the first does not, since the ADD's other operand is
    # written by an operator after the block.
    # (the plane kernel's narrowest vector rows: 8 floats on AVX-512 too, whose dw_plane hands
    # rows narrower than its 16 lanes to the AVX2 loop)
    lanes = {"avx512": 8, "avx2": 8}.get(m.isa, 4)
    small = "CONV_2D 1x1/1 16->24 sparse 22x21 nchw + DEPTHWISE_CONV_2D 3x3/2 24 11x11 nchw"
    assert [lbl for lbl in labels if " + " in lbl] == [
        "CONV_2D 1x1/1 8->24 sparse 44x41 nchw + DEPTHWISE_CONV_2D 3x3/2 24 22x21 nchw"
        " + CONV_2D 1x1/1 24->16 sparse 22x21 nchw",
        "CONV_2D 1x1/1 8->16 sparse 44x41 nchw + DEPTHWISE_CONV_2D 5x5/2 16 22x21 nchw",
        "CONV_2D 1x1/1 16->48 sparse 22x21 nchw + DEPTHWISE_CONV_2D 5x5/1 48 22x21 nchw"
        " + CONV_2D 1x1/1 48->16 sparse 22x21 nchw + ADD 2x22x21x16 nchw",
        "CONV_2D 1x1/1 16->32 sparse 22x21 nchw + DEPTHWISE_CONV_2D 3x3/1 32 22x21 nchw",
    ] + ([small] if 11 >= lanes else []), labels
    if 11 < lanes:
        assert "DEPTHWISE_CONV_2D 3x3/2 24 11x11 nchw (rows)" in labels
    assert "CONV_2D 1x1/1 16->40 sparse 22x21 nchw" in labels
    assert "DEPTHWISE_CONV_2D 7x7/3 40 8x7 nchw (rows)" in labels
    for isa in ISAS:
        outs = [ep.runtime.load(data, isa=isa, threads=t)(*x) for t in (1, 2, 4)]
        for g, w in zip(outs[0], want):
            assert _rel(g, w) < 1e-4, (isa, _rel(g, w))
        for got in outs[1:]:
            assert all(np.array_equal(g, w) for g, w in zip(got, outs[0])), isa
    # the same model unfused (sparse off: NHWC throughout) gives the same function
    assert all(_rel(g, w) < 1e-4 for g, w in zip(ep.runtime.load(data, sparse=False)(*x), want))


@pytest.mark.parametrize("k,pad", [(3, "same"), (5, "same"), (3, "valid")])
def test_fused_stride_2_pairs_on_large_planes_match_litert(k, pad):
    # MobileNet's first expansion size (112x110 inputs, 16 channels): SAME, and PyTorch's
    # padding 1 as the converters write it (PAD + VALID, folded into the depthwise conv)
    from runtime_models import Builder, _sparse_1x1, _w

    rng = np.random.default_rng(3)
    b = Builder()
    x = b.input([1, 112, 110, 16])
    e = _sparse_1x1(b, rng, x, 16, 20, block=1, act="relu6")
    if pad == "valid":
        e = b.pad(e, [[0, 0], [1, 1], [1, 1], [0, 0]])
    y = b.depthwise(e, _w(rng, 1, k, k, 20), _w(rng, 20), stride=2, padding=pad, act="relu6")
    # (a model output stays NHWC, so the depthwise conv's output goes on to a projection)
    data, m, xs, want = _with_litert(b.finish([_sparse_1x1(b, rng, y, 20, 8, block=1)]))
    fused = [lbl for _, lbl in m.operators if " + DEPTHWISE" in lbl]
    assert fused == [f"CONV_2D 1x1/1 16->20 sparse 112x110 nchw + DEPTHWISE_CONV_2D {k}x{k}/2 20 56x55 nchw"]
    for isa in ISAS:
        outs = [ep.runtime.load(data, isa=isa, threads=t)(*xs)[0] for t in (1, 2, 4)]
        assert _rel(outs[0], want[0]) < 1e-4, (isa, _rel(outs[0], want[0]))
        assert all(np.array_equal(o, outs[0]) for o in outs[1:]), isa


@pytest.mark.parametrize("block", [1, 4])
def test_inverted_residuals_run_as_one_operator_split_by_pixels(block):
    # MobileNetV2's 56x56 blocks: expansion, depthwise conv and sparse projection as one operator
    # (stride 1 with a residual ADD, then stride 2 to 28x28 and to 14x14); split, each thread
    # takes a band of pixels (bands that end inside a row on 3, 4 and 8 threads), and every thread
    # count gives the one-thread bits (bands cut at any even pixel instead of on the SpMM's
    # strips gave other bits on 2 and 3 threads)
    from runtime_models import Builder, _sparse_1x1, _w

    rng = np.random.default_rng(5)
    b = Builder()
    x = b.input([1, 56, 56, 24])
    y = _sparse_1x1(b, rng, x, 24, 24, block=block)  # (the chain starts at a sparse 1x1)
    e = _sparse_1x1(b, rng, y, 24, 144, block=block, act="relu6")
    d = b.depthwise(e, _w(rng, 1, 3, 3, 144), _w(rng, 144), act="relu6")
    y = b.binary("add", _sparse_1x1(b, rng, d, 144, 24, block=block), y)
    e = _sparse_1x1(b, rng, y, 24, 144, block=block, act="relu6")
    d = b.depthwise(e, _w(rng, 1, 3, 3, 144), _w(rng, 144), stride=2, act="relu6")
    y = _sparse_1x1(b, rng, d, 144, 32, block=block)
    e = _sparse_1x1(b, rng, y, 32, 32, block=block, act="relu6")
    d = b.depthwise(e, _w(rng, 1, 3, 3, 32), _w(rng, 32), stride=2, act="relu6")
    y = _sparse_1x1(b, rng, d, 32, 16, block=block)
    data, m, xs, want = _with_litert(b.finish([b.fc(b.mean(y, [1, 2], keep_dims=False), _w(rng, 10, 16), _w(rng, 10))]))
    # (the residual ADD too, which alone reads the first projection: its bands add the residual)
    fused = [
        "CONV_2D 1x1/1 24->144 sparse 56x56 nchw + DEPTHWISE_CONV_2D 3x3/1 144 56x56 nchw"
        " + CONV_2D 1x1/1 144->24 sparse 56x56 nchw + ADD 1x56x56x24 nchw",
        "CONV_2D 1x1/1 24->144 sparse 56x56 nchw + DEPTHWISE_CONV_2D 3x3/2 144 28x28 nchw"
        " + CONV_2D 1x1/1 144->32 sparse 28x28 nchw",
        "CONV_2D 1x1/1 32->32 sparse 28x28 nchw + DEPTHWISE_CONV_2D 3x3/2 32 14x14 nchw"
        " + CONV_2D 1x1/1 32->16 sparse 14x14 nchw",
    ]
    for isa in ISAS:
        labels = [lbl for _, lbl in ep.runtime.load(data, isa=isa).operators]
        blocks = [lbl for lbl in labels if lbl.count(" + ") >= 2]
        # (the last block's 14-wide rows, narrower than AVX-512's 16 lanes, too: that path hands
        # them to its 8-lane loop)
        assert blocks == fused, (isa, labels)
        outs = [ep.runtime.load(data, isa=isa, threads=t)(*xs)[0] for t in (1, 2, 3, 4, 8)]
        assert _rel(outs[0], want[0]) < 1e-4, (isa, _rel(outs[0], want[0]))
        assert all(np.array_equal(o, outs[0]) for o in outs[1:]), isa


@pytest.mark.parametrize("shape,cin,cout,block", [((1, 112, 112), 32, 16, 1), ((2, 61, 58), 24, 16, 4)])
def test_a_depthwise_conv_and_its_projection_run_as_one_operator_in_bands(shape, cin, cout, block):
    # MobileNetV2's first block (no expansion: the stem's planes into a 3x3 depthwise conv and a
    # sparse projection), and an odd plane in a batch of 2 whose rows are no whole number of the
    # SpMM's strips (its bands end inside rows, which two bands then both compute). A second such
    # pair adds a residual (the ADD's first operand, with a fused RELU: taken into the pair and
    # clamped there). Every thread count gives the one-thread bits, and LiteRT's values.
    from runtime_models import depthwise_project_chain

    n, h, w = shape
    data, m, xs, want = _with_litert(depthwise_project_chain(shape, cin, cout, block))
    oh, ow = (2 * h + 1) // 2, (2 * w + 1) // 2
    labels = [lbl for _, lbl in m.operators]
    pair = f"DEPTHWISE_CONV_2D 3x3/1 {cin} {oh}x{ow} nchw + CONV_2D 1x1/1 {cin}->{cout} sparse {oh}x{ow} nchw"
    with_add = (
        f"DEPTHWISE_CONV_2D 3x3/1 {cout} {oh}x{ow} nchw + CONV_2D 1x1/1 {cout}->{cout} sparse {oh}x{ow} nchw"
        f" + ADD {n}x{oh}x{ow}x{cout} nchw"
    )
    assert pair in labels and with_add in labels and not any(lbl.startswith("ADD") for lbl in labels), labels
    for isa in ISAS:
        outs = [ep.runtime.load(data, isa=isa, threads=t)(*xs)[0] for t in (1, 2, 3, 4, 8)]
        assert _rel(outs[0], want[0]) < 1e-4, (isa, _rel(outs[0], want[0]))
        assert all(np.array_equal(o, outs[0]) for o in outs[1:]), isa
    assert _rel(ep.runtime.load(data, sparse=False)(*xs)[0], want[0]) < 1e-4


def test_fused_pairs_of_models_run_in_turn_on_one_thread_keep_their_values():
    # The fused pairs' plane buffers are per thread and keep their zero padding between one op's
    # tasks: models whose stride-2 pairs have other geometries, run in turn on the same threads
    # and loaded again after others were freed, must each still match LiteRT and their own bits.
    from runtime_models import expand_depthwise_chain, sparse_chw_chain

    files = [expand_depthwise_chain(block=1), sparse_chw_chain(block=1), expand_depthwise_chain(block=4)]
    xs = [inputs_for(ep.runtime.load(f)) for f in files]
    wants = [litert_run(f, x) for f, x in zip(files, xs)]
    for threads in (1, 2):
        first = [ep.runtime.load(f, threads=threads)(*x) for f, x in zip(files, xs)]
        for got, want in zip(first, wants):
            assert all(_rel(g, w) < 1e-4 for g, w in zip(got, want))
        models = [ep.runtime.load(f, threads=threads) for f in files]
        for _ in range(2):
            for k in (0, 1, 2, 1, 0):
                got = models[k](*xs[k])
                assert all(np.array_equal(g, w) for g, w in zip(got, first[k])), (threads, k)
        del models


TCONV_CASES = [
    dict(k=2, stride=2, padding="valid", bias=True),  # the UNet upsampling form
    dict(k=3, stride=2, padding="same", bias=True, act="relu6"),
    dict(k=4, stride=2, padding="same", bias=False, act="relu"),
    dict(k=3, stride=1, padding="valid", bias=True),
    dict(k=5, stride=3, padding="valid", bias=False, shape=(2, 5, 4, 6)),  # batch 2, non-square
    dict(k=3, stride=2, padding="same", bias=True, out_hw=(9, 7)),  # odd output inside the stride
]


@pytest.mark.parametrize("case", TCONV_CASES)
def test_transpose_conv_matches_litert(case):
    from tflite_builder import Builder

    rng = np.random.default_rng(case["k"] * 10 + case["stride"])
    b = Builder()
    shape = case.get("shape", (1, 5, 4, 8))
    x = b.input(list(shape))
    w = rng.standard_normal((6, case["k"], case["k"], shape[3])).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32) if case["bias"] else None
    y = b.transpose_conv(x, w, bias, case["stride"], case["padding"], case.get("act"), case.get("out_hw"))
    data = b.finish([y])
    m = ep.runtime.load(data)
    assert [lbl.split(" ")[0] for _, lbl in m.operators] == ["TRANSPOSE_CONV"]
    xs = inputs_for(m)
    want = litert_run(data, xs)[0]
    if case.get("act"):
        assert want.min() >= 0 and np.any(want == 0)  # the fused activation clamps
    for isa in ISAS:
        outs = [ep.runtime.load(data, isa=isa, threads=t)(*xs)[0] for t in (1, 2, 4)]
        assert outs[0].shape == want.shape
        assert _rel(outs[0], want) < 1e-5, isa
        assert all(np.array_equal(outs[0], o) for o in outs[1:]), isa


def test_transpose_conv_with_a_mismatched_output_shape_is_refused():
    from tflite_builder import Builder

    b = Builder()
    x = b.input([1, 4, 4, 8])
    w = np.ones((6, 2, 2, 8), np.float32)
    b.transpose_conv(x, w, out_hw=(8, 8))
    b.tensors[1]["data"] = np.array([1, 8, 8, 5], np.int32).tobytes()  # output_shape says 5 channels
    with pytest.raises(
        RuntimeModelError, match=r"operator 0 \(TRANSPOSE_CONV\): output_shape disagrees with the input and filter"
    ) as e:
        ep.runtime.load(b.finish([b.ops[-1][2]]))
    assert "\n" not in str(e.value)


def test_transpose_conv_of_an_input_with_no_bytes_is_refused_at_once():
    """A TRANSPOSE_CONV input of 10^9 rows of zero width (a file the loader fuzzer made, now one
    of its seeds) is refused when the model loads, in one line, instead of walking its empty rows
    on every run."""
    from pathlib import Path

    data = (Path(__file__).parents[1] / "data" / "fuzz" / "transpose-conv-empty-rows.tflite").read_bytes()
    with pytest.raises(
        RuntimeModelError, match=r"operator 0 \(TRANSPOSE_CONV\): input and filter dimensions must be positive"
    ) as e:
        ep.runtime.load(data)
    assert "\n" not in str(e.value)


def test_strided_slice_matches_litert():
    from tflite_builder import Builder

    b = Builder()
    x = b.input([2, 7, 6, 10])
    outs = [
        b.strided_slice(x, [0, 0, 0, 5], [2, 7, 6, 10], [1, 1, 1, 1]),  # a channel split
        b.strided_slice(x, [0, -2, 1, 0], [0, 0, 6, 9], [1, -1, 2, 3], begin_mask=1, end_mask=1),
        b.strided_slice(x, [1, 0, -1, 2], [2, 7, 0, 8], [1, 2, 1, 2], end_mask=2, shrink_axis_mask=5),
        b.strided_slice(x, [0, 9, 0, 0], [2, -9, 6, 10], [1, -2, 1, 1]),  # clamped to the ends
    ]
    data = b.finish(outs)
    m = ep.runtime.load(data)
    xs = inputs_for(m)
    want = litert_run(data, xs)
    got = m(*xs)
    assert [g.shape for g in got] == [w.shape for w in want]
    assert [g.shape for g in got] == [(2, 7, 6, 5), (2, 5, 3, 3), (4, 3), (2, 4, 6, 10)]
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    assert np.array_equal(got[1], xs[0][:, -2:0:-1, 1:6:2, 0:9:3])


@pytest.mark.parametrize("isa", ISAS)
def test_more_elementwise_ops_and_reductions_match_litert_and_float64(isa):
    from tflite_builder import Builder

    b = Builder()
    x = b.input([2, 5, 7, 6])
    slopes = np.linspace(-0.5, 0.75, 6, dtype=np.float32).reshape(1, 1, 6)
    e = b.unary(47, x)  # EXP, also LOG's (positive) input
    outs = [
        b.leaky_relu(x, 0.15),
        b.elementwise(54, [x, b.const(slopes)]),  # PRELU, a slope per channel
        b.unary(111, x),  # ELU
        e,
        b.unary(73, e),  # LOG
        b.unary(50, x),  # LOG_SOFTMAX over the channels
        b.op(82, [x, b.const([1, 3], np.int32)], [2, 1, 7, 1], ("reducer", dict(keep=True))),  # REDUCE_MAX
        b.op(89, [x, b.const([0, 2], np.int32)], [5, 6], ("reducer", dict(keep=False))),  # REDUCE_MIN
        *(b.unary(code, x) for code in (8, 104, 116, 158)),  # FLOOR, CEIL, ROUND, SIGN
    ]
    data = b.finish(outs)
    m = ep.runtime.load(data, isa=isa)
    xs = inputs_for(m)
    xs[0] *= 3
    got, want = m(*xs), litert_run(data, xs)
    v = xs[0].astype(np.float64)
    exact = [
        np.where(v >= 0, v, 0.15 * v),
        np.where(v >= 0, v, slopes * v),
        np.where(v < 0, np.expm1(v), v),
        np.exp(v),
        v,
        v - v.max(-1, keepdims=True) - np.log(np.exp(v - v.max(-1, keepdims=True)).sum(-1, keepdims=True)),
        v.max((1, 3), keepdims=True),
        v.min((0, 2)),
        np.floor(v),
        np.ceil(v),
        np.round(v),  # (half to even)
        np.sign(v),
    ]
    for g, w, ex in zip(got, want, exact):
        assert g.shape == w.shape == ex.shape
        assert _rel(g, w) < 1e-6 and _rel(g, ex) < 1e-6, (_rel(g, w), _rel(g, ex))
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("mode", ["reflect", "symmetric"])
def test_mirror_pad_matches_litert_and_numpy(mode):
    from tflite_builder import Builder

    pads = [[0, 0], [2, 1], [3, 0], [0, 1]] if mode == "reflect" else [[1, 0], [2, 3], [4, 0], [0, 3]]
    b = Builder()
    x = b.input([2, 5, 4, 3])
    data = b.finish([b.mirror_pad(x, pads, mode)])
    m = ep.runtime.load(data)
    xs = inputs_for(m)
    got, want = m(*xs)[0], litert_run(data, xs)[0]
    assert np.array_equal(got, want)
    assert np.array_equal(got, np.pad(xs[0], pads, mode=mode))


def test_mirror_pad_past_its_limit_is_refused():
    from tflite_builder import Builder

    b = Builder()
    x = b.input([1, 4, 4, 2])
    data = b.finish([b.mirror_pad(x, [[0, 0], [4, 0], [0, 0], [0, 0]], "reflect")])  # REFLECT: at most 3
    with pytest.raises(RuntimeModelError, match=r"MIRROR_PAD.*padding 4 on dimension 1 is more than REFLECT allows"):
        ep.runtime.load(data)


@pytest.mark.parametrize(
    "k,stride,padding,dilation,hw",
    [
        (3, 2, "same", 1, (31, 29)),
        (3, 2, "valid", 1, (30, 33)),
        (5, 2, "same", 1, (27, 26)),
        (3, 1, "same", 2, (17, 19)),
    ],
)
def test_stems_that_write_planes_match_litert(k, stride, padding, dilation, hw):
    """A stem conv whose only reader is a sparse 1x1 conv writes its output as planes itself (RGB:
    the direct rows, each transposed; 8 input channels: the transposed im2col): strides, SAME and
    VALID edges, a 5x5 and a dilated filter, odd sizes."""
    for cin in (3, 8):
        _stem_writing_planes_matches_litert(k, stride, padding, dilation, hw, cin)


def _stem_writing_planes_matches_litert(k, stride, padding, dilation, hw, cin):
    from tflite_builder import Builder

    rng = np.random.default_rng(k * 10 + stride)
    b = Builder()
    x = b.input([2, *hw, cin])
    y = b.conv2d(
        x,
        rng.standard_normal((16, k, k, cin)).astype(np.float32),
        rng.standard_normal(16).astype(np.float32),
        stride=stride,
        padding=padding,
        dilation=dilation,
        act="relu6",
    )
    w = rng.standard_normal((24, 1, 1, 16)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0
    y = b.conv2d(y, w, np.zeros(24, np.float32), sparse=1)
    data = b.finish([b.mean(y, [1, 2], keep_dims=False)])
    m = ep.runtime.load(data)
    labels = [lbl for _, lbl, _ in m.profile(runs=1)]
    assert labels[0].endswith(" ->nchw") and "layout" not in " ".join(labels), labels
    xs = inputs_for(m)
    want = litert_run(data, xs)[0]
    for isa in ISAS:
        assert _rel(ep.runtime.load(data, isa=isa)(*xs)[0], want) < 1e-4, (isa, cin)
