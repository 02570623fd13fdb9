"""edgeprune.kernels Linear / SparseLinear against numpy on every path this machine runs, and
every input validation error.

Consumes: edgeprune.kernels. Produces: assertions only. Shapes are small (fast on 2 cores);
tails of every tile (1..67) are covered. Passes with EDGEPRUNE_ISA unset, =reference, =avx2.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgeprune import kernels

PATHS = kernels.supported_isas()
ACTS = {"none": lambda v: v, "relu": lambda v: np.maximum(v, 0), "relu6": lambda v: np.clip(v, 0, 6)}


def ref_linear(x, w, b, act):
    y = x.astype(np.float64) @ w.astype(np.float64).T
    if b is not None:
        y += b
    return ACTS[act](y)


def bound(x, w, b):
    """Per-output magnitude sum |x||w| + |b|: the scale of a dot product's rounding error."""
    mag = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T
    return mag + (np.abs(b) if b is not None else 0)


def assert_close(y, ref, mag, rtol=1e-5):
    assert y.dtype == np.float32 and y.shape == ref.shape
    err = np.abs(y - ref)
    assert np.all(err <= rtol * mag + 1e-30), f"max excess {np.max(err - rtol * mag)}"


def sparse_weight(rng, m, k, sparsity, block=1):
    w = rng.standard_normal((m, k)).astype(np.float32)
    if block == 1:
        mask = rng.random((m, k)) >= sparsity
    else:
        mask = np.repeat(rng.random(((m + 3) // 4, k)) >= sparsity, 4, axis=0)[:m]
    if sparsity >= 1.0:
        mask[:] = False
    return w * mask


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
def test_linear_matches_numpy_on_tails(isa, act):
    rng = np.random.default_rng(1)
    for m, k, n in [(1, 1, 1), (17, 3, 5), (67, 66, 65), (16, 64, 6), (33, 9, 50), (5, 700, 13)]:
        w = rng.standard_normal((m, k)).astype(np.float32) * 3
        b = rng.standard_normal(m).astype(np.float32)
        x = rng.standard_normal((n, k)).astype(np.float32)
        lin = kernels.Linear(w, b, activation=act, isa=isa)
        assert lin.isa == isa and (lin.in_features, lin.out_features) == (k, m)
        assert_close(lin(x), ref_linear(x, w, b, act), bound(x, w, b))
        # channel-major layout: X[K, N] -> Y[M, N]
        y_kn = lin.forward_kn(np.ascontiguousarray(x.T))
        assert_close(y_kn, ref_linear(x, w, b, act).T, bound(x, w, b).T)


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("m, k, n", [(160, 96, 49), (64, 1024, 17), (40, 30, 9), (64, 384, 196), (96, 576, 203)])
def test_channel_major_few_columns_gives_the_linear_layouts_bits(isa, m, k, n):
    # 49 columns fill the panels badly and M well, and reduction-heavy layers with up to 256
    # columns (K >= 2M): forward_kn runs the Linear layout on X^T (K a multiple of 1024 with its
    # rows padded apart; the path's register-tile transposes, ragged edges included); the same
    # products in the same order, so the same bits as lin(x) transposed, on every thread count
    rng = np.random.default_rng(3)
    w = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    x = rng.standard_normal((n, k)).astype(np.float32)
    lin = kernels.Linear(w, b, activation="relu", isa=isa)
    want = lin(x).T
    for threads in (1, 2):
        assert np.array_equal(lin.forward_kn(np.ascontiguousarray(x.T), threads=threads), want)
    assert_close(want.T, ref_linear(x, w, b, "relu"), bound(x, w, b))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("m, k, n", [(1280, 320, 49), (512, 256, 25), (960, 160, 9), (96, 576, 196)])
def test_linear_few_rows_split_by_channels_keeps_the_bits(isa, m, k, n):
    """Row chunks start at multiples of 8, so few rows (a 7x7 layer's 49: 32 and 17) split over
    threads by output channels instead, where there are panels enough: the same bits on 1, 2 and
    4 threads (the first three shapes split by channels, the last by rows), and the values."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    x = rng.standard_normal((n, k)).astype(np.float32)
    lin = kernels.Linear(w, b, activation="relu6", isa=isa)
    one = lin(x, threads=1)
    for threads in (2, 4):
        assert np.array_equal(lin(x, threads=threads), one), f"{threads} threads changed bits"
    assert_close(one, ref_linear(x, w, b, "relu6"), bound(x, w, b))


def test_linear_default_path_threads_and_no_bias():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((40, 30)).astype(np.float32)
    x = rng.standard_normal((101, 30)).astype(np.float32)
    lin = kernels.Linear(w)
    assert lin.isa == kernels.selected_isa()
    y1 = lin(x)
    assert np.array_equal(y1, lin(x, threads=2)), "threads must not change any bit"
    assert_close(y1, ref_linear(x, w, None, "none"), bound(x, w, None))
    assert lin(np.zeros((0, 30), np.float32)).shape == (0, 40)


def test_linear_accepts_torch_tensors_like_nn_linear():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 10)
    x = torch.randn(7, 24)
    lin = kernels.Linear(layer.weight, layer.bias)
    y = lin(x.numpy())
    np.testing.assert_allclose(y, layer(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_linear_concurrent_calls_from_threads():
    # the kernels run with the GIL released; concurrent callers must each get their own result
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    lin = kernels.Linear(w)
    xs = [rng.standard_normal((50, 64)).astype(np.float32) for _ in range(4)]
    want = [lin(x) for x in xs]
    got = [None] * 4

    def work(i):
        for _ in range(20):
            got[i] = lin(xs[i], threads=2)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(np.array_equal(g, w_) for g, w_ in zip(got, want))


@pytest.mark.parametrize("layer", ["dense", "sparse"])
def test_validation_errors_name_the_argument(layer):
    w = np.ones((8, 4), np.float32)
    make = (
        (lambda *a, **k: kernels.Linear(*a, **k))
        if layer == "dense"
        else (lambda *a, **k: kernels.SparseLinear(*a, **k))
    )
    lin = make(w)
    good = np.ones((3, 4), np.float32)
    cases = [
        (good.astype(np.float64), "x must be a float32 array (got float64)"),
        (good.astype(np.int8), "x must be a float32 array (got int8)"),
        (np.ones((2, 3, 4), np.float32), "x must be 2-D [N, in_features] (got 3-D)"),
        (np.ones(4, np.float32), "x must be 2-D [N, in_features] (got 1-D)"),
        (np.ones((3, 5), np.float32), "x must have 4 columns (in_features) (got 5)"),
        (np.ones((4, 6), np.float32)[:, ::2].copy(order="F")[:3, :], "x must be C-contiguous"),
        (np.ones((3, 8), np.float32)[:, ::2], "x must be C-contiguous"),
    ]
    for x, msg in cases:
        with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            lin(x)
    kn = lin.forward_kn if layer == "dense" else lin.spmm
    with pytest.raises(ValueError, match=r"x must have 4 rows \(in_features\) \(got 3\)"):
        kn(good)
    with pytest.raises(ValueError, match=r"threads must be in 1..256 \(got 0\)"):
        lin(good, threads=0)
    with pytest.raises(ValueError, match=r"threads must be in 1..256 \(got 100000000000\)"):
        lin(good, threads=10**11)
    with pytest.raises(TypeError, match=r"x must be a numpy array \(got list\)"):
        lin(good.tolist())
    with pytest.raises(ValueError, match="weight must be 2-D"):
        make(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="weight must be a floating-point array"):
        make(np.ones((2, 2), np.int32))
    with pytest.raises(ValueError, match="weight must not be empty"):
        make(np.ones((0, 2), np.float32))
    with pytest.raises(ValueError, match=r"bias must be 1-D with 8 entries \(out_features\)"):
        make(w, np.ones(7, np.float32))
    with pytest.raises(ValueError, match="activation must be one of none, relu, relu6"):
        make(w, activation="gelu")
    with pytest.raises(ValueError, match="isa must be one of reference"):
        make(w, isa="mmx")


def test_weight_is_copied_at_construction():
    w = np.ones((4, 4), np.float32)
    lin = kernels.Linear(w)
    w[:] = 5
    assert np.array_equal(lin(np.ones((1, 4), np.float32)), np.full((1, 4), 4, np.float32))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("block", [1, 4])
def test_sparse_matches_numpy(isa, block):
    rng = np.random.default_rng(4)
    for sparsity in (0.0, 0.5, 0.9, 0.99, 1.0):
        for m, k, n in [(1, 1, 1), (67, 45, 70), (9, 130, 131), (64, 64, 200)]:
            w = sparse_weight(rng, m, k, sparsity, block)
            w[min(1, m - 1)] = 0  # an empty output channel
            b = rng.standard_normal(m).astype(np.float32)
            x = rng.standard_normal((n, k)).astype(np.float32)
            sp = kernels.SparseLinear(w, b, block=(block, 1), activation="relu6", kernel="sparse", isa=isa)
            assert sp.kernel == "sparse" and sp.isa == isa
            assert sp.nnz == int(np.count_nonzero(w))
            assert sp.density == pytest.approx(np.count_nonzero(w) / w.size)
            ref = ref_linear(x, w, b, "relu6")
            assert_close(sp(x), ref, bound(x, w, b))
            assert_close(sp.spmm(np.ascontiguousarray(x.T)), ref.T, bound(x, w, b).T)


@pytest.mark.parametrize("isa", PATHS)
def test_sparse_wide_layer_in_k_tiles_matches_numpy(isa):
    """A layer with K = 1100 runs its full N strips in K tiles on every vector path (plan made at
    construction); the result still matches numpy, and 1 and 2 threads agree bit for bit."""
    rng = np.random.default_rng(6)
    for sparsity in (0.6, 0.9):
        w = sparse_weight(rng, 320, 1100, sparsity)
        b = rng.standard_normal(320).astype(np.float32)
        x = rng.standard_normal((150, 1100)).astype(np.float32)
        sp = kernels.SparseLinear(w, b, activation="relu", kernel="sparse", isa=isa)
        ref = ref_linear(x, w, b, "relu")
        x_kn = np.ascontiguousarray(x.T)
        y_kn = sp.spmm(x_kn)
        assert_close(y_kn, ref.T, bound(x, w, b).T)
        assert np.array_equal(y_kn, sp.spmm(x_kn, threads=2))


@pytest.mark.parametrize("isa", PATHS)
def test_sparse_narrow_columns_from_the_channel_table_match_numpy(isa):
    """Columns narrower than a vector (all of them at N = 1) are dot products over X gathered at
    each row's channels: rows of 0 to ~700 entries (every gather width and remainder), X with a
    column stride (N = 2..5) and a strip's remainder; 1 and 2 threads agree bit for bit."""
    rng = np.random.default_rng(11)
    for sparsity in (0.0, 0.5, 0.9, 0.97):
        m, k = 41, 703
        w = sparse_weight(rng, m, k, sparsity)
        w[3] = 0
        w[5, : k - 17] = 0  # a row of at most 17 entries: one vector and a remainder
        b = rng.standard_normal(m).astype(np.float32)
        sp = kernels.SparseLinear(w, b, activation="relu6", kernel="sparse", isa=isa)
        for n in (1, 2, 5, 19, 70):
            x = rng.standard_normal((n, k)).astype(np.float32)
            ref = ref_linear(x, w, b, "relu6")
            x_kn = np.ascontiguousarray(x.T)
            y_kn = sp.spmm(x_kn)
            assert_close(y_kn, ref.T, bound(x, w, b).T)
            assert_close(sp(x), ref, bound(x, w, b))
            assert np.array_equal(y_kn, sp.spmm(x_kn, threads=2))


@pytest.mark.parametrize("isa", PATHS)
def test_sparse_one_column_through_row_groups_matches_numpy(isa):
    """N = 1 on AVX-512 runs 16 rows per step, inputs in windows of 32 picked from registers: row
    counts off 16, K off the window, a window no row uses, a row with no weights, a row dense in
    one window, and `auto` (which no longer hands such calls to a dense copy) all match numpy."""
    rng = np.random.default_rng(13)
    for m, k in [(1, 1), (15, 32), (17, 33), (40, 100), (70, 300), (5, 1030)]:
        for sparsity in (0.5, 0.9, 0.98):
            w = sparse_weight(rng, m, k, sparsity)
            w[0] = 0
            if m > 3:
                w[3] = 0
                w[3, : min(k, 32)] = rng.standard_normal(min(k, 32))
            if k > 100:
                w[:, 32:64] = 0
            b = rng.standard_normal(m).astype(np.float32)
            x = rng.standard_normal((1, k)).astype(np.float32)
            ref, mag = ref_linear(x, w, b, "relu6"), bound(x, w, b)
            for kernel in ("sparse", "auto"):
                sp = kernels.SparseLinear(w, b, activation="relu6", kernel=kernel, isa=isa)
                assert_close(sp.spmm(np.ascontiguousarray(x.T)), ref.T, mag.T)
                assert_close(sp(x), ref, mag)


@pytest.mark.parametrize("isa", PATHS)
def test_dense_single_column_matches_numpy(isa):
    """A dense layer called channel-major on one column (an FC layer at batch 1) runs as x[1, K]."""
    rng = np.random.default_rng(12)
    for m, k in [(1, 1), (67, 45), (1000, 300)]:
        w = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        x = rng.standard_normal((1, k)).astype(np.float32)
        sp = kernels.SparseLinear(w, b, activation="relu", kernel="dense", isa=isa)
        assert_close(sp.spmm(np.ascontiguousarray(x.T)), ref_linear(x, w, b, "relu").T, bound(x, w, b).T)


def test_outputs_are_owned_writable_and_64_byte_aligned():
    """Every layer returns a fresh C-contiguous array whose data starts on a 64-byte boundary
    (threads splitting its rows at 64-byte columns never share a cache line); these calls are
    above the 64 K multiply-adds under which a call returns numpy's own array."""
    rng = np.random.default_rng(8)
    w = sparse_weight(rng, 50, 40, 0.9)
    x = rng.standard_normal((33, 40)).astype(np.float32)
    q = kernels.QLinear(w, input_scale=0.05, input_zero_point=0, output_scale=0.1, output_zero_point=0, sparse="sparse")
    xq = rng.integers(-128, 128, size=(33, 40), dtype=np.int8)
    outs = [
        kernels.Linear(w)(x),
        kernels.SparseLinear(w, kernel="sparse")(x),
        kernels.SparseLinear(w, kernel="sparse").spmm(np.ascontiguousarray(x.T)),
        q(xq),
        q.gemm_kn(np.ascontiguousarray(xq.T)),
    ]
    for y in outs:
        assert y.ctypes.data % 64 == 0
        assert y.flags.c_contiguous and y.flags.writeable
        y[0, 0] = 1  # ours to write
    assert outs[0].shape == (33, 50) and outs[2].shape == (50, 33) and outs[4].dtype == np.int8


def test_sparse_auto_choice_and_threads():
    rng = np.random.default_rng(5)
    dense_ish = sparse_weight(rng, 32, 32, 0.3)
    sparse_ish = sparse_weight(rng, 32, 32, 0.9)
    assert kernels.SparseLinear(dense_ish).kernel == "dense"
    assert kernels.SparseLinear(sparse_ish).kernel == "sparse"
    assert kernels.SparseLinear(sparse_ish, kernel="dense").kernel == "dense"
    x = rng.standard_normal((300, 32)).astype(np.float32)
    sp = kernels.SparseLinear(sparse_ish, kernel="sparse")
    x_kn = np.ascontiguousarray(x.T)
    assert np.array_equal(sp.spmm(x_kn), sp.spmm(x_kn, threads=2))
    assert_close(kernels.SparseLinear(dense_ish)(x), ref_linear(x, dense_ish, None, "none"), bound(x, dense_ish, None))
    # a batch-1 call of an auto layer (small: the dense kernel serves it) still matches numpy
    x1 = x[:1]
    auto = kernels.SparseLinear(sparse_ish)
    assert_close(auto(x1), ref_linear(x1, sparse_ish, None, "none"), bound(x1, sparse_ish, None))
    assert_close(auto.spmm(x1.T.copy()), ref_linear(x1, sparse_ish, None, "none").T, bound(x1, sparse_ish, None).T)


def test_sparse_argument_errors():
    w = np.ones((8, 4), np.float32)
    with pytest.raises(ValueError, match=r"block must be \(1, 1\) or \(4, 1\)"):
        kernels.SparseLinear(w, block=(2, 1))
    with pytest.raises(ValueError, match="kernel must be one of auto, sparse, dense"):
        kernels.SparseLinear(w, kernel="fast")


@pytest.mark.parametrize("threads", [0, 257, 1.5])
def test_threads_are_validated_at_construction(threads):
    w = np.ones((4, 4), np.float32)
    for make in (
        lambda: kernels.Linear(w, threads=threads),
        lambda: kernels.SparseLinear(w, threads=threads),
        lambda: kernels.QLinear(
            w, input_scale=1.0, input_zero_point=0, output_scale=1.0, output_zero_point=0, threads=threads
        ),
    ):
        with pytest.raises(ValueError, match="threads must be an integer in 1..256"):
            make()


@pytest.mark.parametrize("block", [(1, 1), (4, 1)])
def test_sparse_auto_threshold_matches_the_documented_constant(block):
    m, k = 40, 50  # 2000 weights
    limit = int(kernels.SparseLinear.AUTO_MAX_DENSITY[block] * 2000)
    for stored, kernel in ((limit, "sparse"), (limit + block[0], "dense")):
        w = np.zeros((m, k), np.float32)
        flat = w.reshape(-1) if block == (1, 1) else None
        if flat is not None:
            flat[:stored] = 1.0
        else:  # whole 4-row groups share each stored column
            for i in range(stored // 4):
                g, c = divmod(i, k)
                w[4 * g : 4 * g + 4, c] = 1.0
        assert kernels.SparseLinear(w, block=block).kernel == kernel, stored
