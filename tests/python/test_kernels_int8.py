"""edgeprune.kernels.QLinear: TFLite int8 arithmetic checked bit for bit against a numpy model of
the spec on every path, sparse == dense, extremes, and input validation.

Consumes: edgeprune.kernels. Produces: assertions only (small shapes).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune import kernels

PATHS = kernels.supported_isas()


def numpy_qlinear(q: kernels.QLinear, x: np.ndarray) -> np.ndarray:
    """The spec: int32 acc of (x - zp_in) * w_q + b_q, then float32(acc) * float32 scale,
    clamp to the activation range, round half to even, add zp_out."""
    acc = (x.astype(np.int64) - q.input_zero_point) @ q.qweight.astype(np.int64).T + q.qbias
    # the layer holds its scales as float32; the multiplier is formed in double, then rounded
    s_in, s_out = np.float64(np.float32(q.input_scale)), np.float64(np.float32(q.output_scale))
    scale = s_in * q.weight_scales.astype(np.float64) / s_out
    f = acc.astype(np.int32).astype(np.float32) * scale.astype(np.float32)
    qmin, qmax = q.output_range
    f = np.clip(f, np.float32(qmin - q.output_zero_point), np.float32(qmax - q.output_zero_point))
    return (np.rint(f).astype(np.int32) + q.output_zero_point).astype(np.int8)


def block_sparse(rng, m, k, sparsity):
    w = rng.standard_normal((m, k)).astype(np.float32)
    keep = np.repeat(rng.random((m, (k + 3) // 4)) >= sparsity, 4, axis=1)[:, :k]
    return w * keep


def make(w, b=None, **kw):
    args = dict(input_scale=0.03, input_zero_point=-5, output_scale=0.1, output_zero_point=7)
    args.update(kw)
    return kernels.QLinear(w, b, **args)


def test_weight_quantization_is_symmetric_per_channel():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((9, 30)).astype(np.float32)
    w[4] = 0
    b = rng.standard_normal(9).astype(np.float32)
    q = make(w, b)
    amax = np.abs(w).max(axis=1)
    want_scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    np.testing.assert_array_equal(q.weight_scales, want_scale)
    want_q = np.clip(np.rint(w / want_scale[:, None]), -127, 127).astype(np.int8)
    np.testing.assert_array_equal(q.qweight, want_q)
    assert np.all(np.abs(q.qweight).max(axis=1) == np.where(amax > 0, 127, 0))
    s_in = np.float64(np.float32(0.03))  # the layer holds the input scale as float32
    np.testing.assert_array_equal(q.qbias, np.rint(b.astype(np.float64) / (s_in * want_scale.astype(np.float64))))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
def test_matches_numpy_spec_bit_for_bit(isa, act):
    rng = np.random.default_rng(1)
    # K a multiple of 4 (activations read in place) and not; output channels filling half a
    # 32-column panel or less, one and a half, several; rows not a multiple of the 8-row tile
    shapes = [(1, 1, 1), (67, 66, 65), (16, 64, 6), (33, 9, 50), (5, 300, 13), (13, 8, 17), (40, 12, 9)]
    for m, k, n in shapes + [(16, 1024, 3), (48, 4, 130)]:
        w = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        x = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        q = make(w, b, activation=act, isa=isa, sparse="dense")
        assert q.isa == isa and q.kernel == "dense"
        want = numpy_qlinear(q, x)
        y = q(x)
        assert y.dtype == np.int8
        np.testing.assert_array_equal(y, want)
        np.testing.assert_array_equal(q.gemm_kn(np.ascontiguousarray(x.T)), want.T)
        if act != "none":
            assert y.min() >= q.output_zero_point


@pytest.mark.parametrize("isa", PATHS)
def test_sparse_equals_dense_across_sparsities(isa):
    rng = np.random.default_rng(2)
    m, k, n = 40, 70, 90
    for sparsity in (0.0, 0.5, 0.9, 0.99, 1.0):
        w = block_sparse(rng, m, k, sparsity)
        b = rng.standard_normal(m).astype(np.float32)
        x = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        dense = make(w, b, isa=isa, sparse="dense", activation="relu6")
        sparse = make(w, b, isa=isa, sparse="sparse", activation="relu6")
        assert sparse.kernel == "sparse"
        want = numpy_qlinear(dense, x)
        np.testing.assert_array_equal(dense(x), want)
        np.testing.assert_array_equal(sparse(x), want)
        np.testing.assert_array_equal(sparse(x, threads=2), want)
        np.testing.assert_array_equal(sparse.gemm_kn(np.ascontiguousarray(x.T)), want.T)


@pytest.mark.parametrize("isa", PATHS)
def test_sparse_on_narrow_inputs(isa):
    """N below one 64-column quad strip (FC layers at N = 1, a strip's remainder) is packed compact."""
    rng = np.random.default_rng(5)
    m, k = 37, 150
    w = block_sparse(rng, m, k, 0.9)
    b = rng.standard_normal(m).astype(np.float32)
    sparse = make(w, b, isa=isa, sparse="sparse", activation="relu")
    for n in (1, 2, 15, 63, 64 + 5):
        x = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        want = numpy_qlinear(sparse, x)
        np.testing.assert_array_equal(sparse(x), want)
        np.testing.assert_array_equal(sparse.gemm_kn(np.ascontiguousarray(x.T)), want.T)
        np.testing.assert_array_equal(sparse(x, threads=2), want)


@pytest.mark.parametrize("isa", PATHS)
def test_sparse_narrow_columns_with_long_rows(isa):
    """Narrow columns over rows of 0 to ~170 blocks (every gather width and its remainder, X
    packed with a column stride for N > 1) stay bit exact, on 1 and 2 threads."""
    rng = np.random.default_rng(9)
    m, k = 29, 690
    for sparsity in (0.0, 0.5, 0.9):
        w = block_sparse(rng, m, k, sparsity)
        w[2] = 0
        w[4, : k - 70] = 0  # at most 18 blocks: one 16-block gather and a remainder
        b = rng.standard_normal(m).astype(np.float32)
        sparse = make(w, b, isa=isa, sparse="sparse")
        for n in (1, 3, 17, 70):
            x = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
            want = numpy_qlinear(sparse, x)
            np.testing.assert_array_equal(sparse(x), want)
            np.testing.assert_array_equal(sparse.gemm_kn(np.ascontiguousarray(x.T)), want.T)
            np.testing.assert_array_equal(sparse(x, threads=2), want)


@pytest.mark.parametrize("isa", PATHS)
def test_one_column_through_channel_groups(isa):
    """N = 1 (an FC layer at batch 1): AVX-512 multiplies 16 channels at a time, X's quads in
    windows of 128 input channels. Channel counts off the group of 16, K off the window and off
    4, windows no channel uses, a channel dense in one window and empty in the rest, and channels
    with no blocks all stay bit exact."""
    rng = np.random.default_rng(11)
    for m, k in [(1, 4), (15, 128), (17, 129), (33, 130), (40, 383), (70, 512), (5, 1030)]:
        for sparsity in (0.5, 0.9, 0.97):
            w = block_sparse(rng, m, k, sparsity)
            w[0] = 0
            if m > 3:
                w[3] = 0
                w[3, : min(k, 128)] = rng.standard_normal(min(k, 128))  # dense in the first window
            if k > 260:
                w[:, 128:256] = 0  # a window no channel uses
            b = rng.standard_normal(m).astype(np.float32)
            q = make(w, b, isa=isa, sparse="sparse", activation="relu6")
            x = rng.integers(-128, 128, size=(1, k), dtype=np.int8)
            want = numpy_qlinear(q, x)
            np.testing.assert_array_equal(q(x), want)
            np.testing.assert_array_equal(q.gemm_kn(np.ascontiguousarray(x.T)), want.T)


@pytest.mark.parametrize("isa", PATHS)
def test_sparse_and_empty_channels_on_wide_inputs(isa):
    """Columns past the last whole 64-column strip in one masked pass (49, 196 and 63 of them), and
    channels with no blocks written as their requantized bias, match the spec."""
    rng = np.random.default_rng(12)
    for m, k, n in [(24, 16, 49), (19, 36, 196), (40, 200, 63), (8, 8, 130)]:
        w = block_sparse(rng, m, k, 0.8)
        w[1] = 0
        b = rng.standard_normal(m).astype(np.float32) * 3
        q = make(w, b, isa=isa, sparse="sparse", activation="relu")
        x = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        want = numpy_qlinear(q, x)
        np.testing.assert_array_equal(q.gemm_kn(np.ascontiguousarray(x.T)), want.T)
        np.testing.assert_array_equal(q(x), want)
        np.testing.assert_array_equal(q(x, threads=2), want)


def test_extremes_and_zero_points_at_the_ends():
    rng = np.random.default_rng(3)
    w = np.where(rng.random((24, 40)) < 0.5, 1.0, -1.0).astype(np.float32)  # quantizes to +-127
    x = np.where(rng.random((30, 40)) < 0.5, 127, -128).astype(np.int8)
    seen = set()
    for zp_in in (-128, 127):
        for zp_out in (-128, 127):
            for sparse in ("dense", "sparse"):
                q = make(w, None, input_zero_point=zp_in, output_zero_point=zp_out, output_scale=0.5, sparse=sparse)
                assert set(np.unique(q.qweight)) == {-127, 127}
                y = q(x)
                np.testing.assert_array_equal(y, numpy_qlinear(q, x))
                seen |= {int(y.min()), int(y.max())}
    # the scale makes outputs saturate: both ends of the int8 range must have been produced
    assert {-128, 127} <= seen


def test_auto_picks_sparse_only_when_blocks_are_sparse():
    rng = np.random.default_rng(4)
    assert make(block_sparse(rng, 32, 64, 0.9)).kernel == "sparse"
    assert make(block_sparse(rng, 32, 64, 0.2)).kernel == "dense"
    # unstructured: a 1x4 block is stored when any of its 4 weights survives, so 95 % sparse
    # weights still fill 1 - 0.95**4 = 19 % of the blocks (sparse pays), 50 % fill 94 % (it does not)
    for sparsity, kernel in ((0.95, "sparse"), (0.5, "dense")):
        w = rng.standard_normal((64, 64)).astype(np.float32) * (rng.random((64, 64)) >= sparsity)
        assert make(w).kernel == kernel, sparsity


def test_quantize_roundtrip_tracks_float_linear():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((20, 50)).astype(np.float32) * 0.1
    b = rng.standard_normal(20).astype(np.float32) * 0.1
    xf = rng.standard_normal((64, 50)).astype(np.float32)
    q = make(w, b, input_scale=4 / 127, input_zero_point=0, output_scale=0.05, output_zero_point=0)
    y = q.dequantize_output(q(q.quantize_input(xf)))
    ref = np.clip(xf, -4, 4) @ w.T + b
    assert np.max(np.abs(y - ref)) < 0.1, np.max(np.abs(y - ref))


def test_validation_errors():
    w = np.ones((8, 4), np.float32)
    q = make(w)
    with pytest.raises(ValueError, match=r"x must be an int8 array \(got float32\)"):
        q(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"x must be an int8 array \(got uint8\)"):
        q(np.ones((2, 4), np.uint8))
    with pytest.raises(ValueError, match=r"x must have 4 columns \(in_features\) \(got 3\)"):
        q(np.ones((2, 3), np.int8))
    with pytest.raises(ValueError, match=r"x must be 2-D"):
        q(np.ones(4, np.int8))
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        q(np.ones((4, 8), np.int8)[:, ::2])
    with pytest.raises(ValueError, match=r"x must have 4 rows \(in_features\)"):
        q.gemm_kn(np.ones((3, 5), np.int8))
    with pytest.raises(ValueError, match=r"input_zero_point must be an integer in \[-128, 127\]"):
        make(w, input_zero_point=128)
    with pytest.raises(ValueError, match=r"output_zero_point must be an integer in \[-128, 127\]"):
        make(w, output_zero_point=-129)
    with pytest.raises(ValueError, match="input_scale must be a positive finite number"):
        make(w, input_scale=0.0)
    with pytest.raises(ValueError, match="output_scale must be a positive finite number"):
        make(w, output_scale=float("nan"))
    with pytest.raises(ValueError, match="sparse must be one of auto, sparse, dense"):
        make(w, sparse="yes")
    with pytest.raises(ValueError, match=r"block must be \(1, 4\)"):
        make(w, block=(4, 1))
    with pytest.raises(ValueError, match="weight must be finite"):
        make(np.full((2, 2), np.inf, np.float32))


def test_auto_threshold_matches_the_documented_constant():
    # exactly at the documented block density -> sparse; one stored block more -> dense
    m, k = 50, 80  # 50 * 20 = 1000 blocks
    limit = int(kernels.QLinear.AUTO_MAX_BLOCK_DENSITY * 1000)
    for stored, kernel in ((limit, "sparse"), (limit + 1, "dense")):
        w = np.zeros((m, k), np.float32)
        for b in range(stored):
            w[b // 20, 4 * (b % 20)] = 1.0
        assert make(w).kernel == kernel, stored
