"""Thin Python over the compiled core: fp32 dense and sparse linear layers, an int8 linear
layer (dense or sparse), and ISA queries.

Consumes: weights as numpy arrays or torch tensors (copied and packed once, at construction),
inputs as C-contiguous numpy arrays, float32 (int8 for QLinear), used in place without a copy.
Produces: new numpy arrays of the same dtype. The kernels run with the GIL released; ``threads=``
splits a call over a small persistent pool (it pays on calls of a millisecond or more).
The path (reference / avx2 / avx512 / neon / neon-dotprod) is chosen once per process from
the CPU, or forced with ``EDGEPRUNE_ISA``; ``selected_isa()`` reports it and raises
``RuntimeError`` when the override is impossible.

    lin = Linear(w, b, activation="relu")        # y = relu(x @ w.T + b), like torch.nn.Linear
    y = lin(x)                                   # x[N, K] float32 -> y[N, M]
    sp = SparseLinear(w_pruned, b, block=(4, 1)) # zeros in w are pruned
    y = sp(x); Y = sp.spmm(x_kn)                 # [N, K] -> [N, M]; channel-major [K, N] -> [M, N]
    q = QLinear(w, b, input_scale=0.02, input_zero_point=0, output_scale=0.05, output_zero_point=0)
    yq = q(xq)                                   # int8 [N, K] -> int8 [N, M], TFLite arithmetic
"""

from __future__ import annotations

import numpy as np

from edgeprune import _core

__all__ = [
    "Linear",
    "SparseLinear",
    "QLinear",
    "cpu_features",
    "l1d_bytes",
    "compiled_isas",
    "supported_isas",
    "selected_isa",
    "kernel_listing",
]

ACTIVATIONS = ("none", "relu", "relu6")


def cpu_features() -> list[str]:
    """CPU features relevant to the kernel paths, e.g. ``["avx2", "fma", ...]``."""
    return list(_core.cpu_features())


def l1d_bytes() -> int:
    """L1 data cache per core in bytes as the OS reports it, 0 if unknown (then sparse layers plan
    their K tiles for 32 KB)."""
    return int(_core.l1d_bytes())


def compiled_isas() -> list[str]:
    """Kernel paths built into this installation."""
    return list(_core.compiled_isas())


def supported_isas() -> list[str]:
    """Compiled paths this CPU can run."""
    return list(_core.supported_isas())


def selected_isa() -> str:
    """The path in use; ``RuntimeError`` if ``EDGEPRUNE_ISA`` names an impossible one."""
    return _core.selected_isa()


def kernel_listing() -> list[tuple[str, str, int]]:
    """Every ``(kernel, isa, tile)`` entry of kernels.inc in this build."""
    return [tuple(e) for e in _core.kernel_listing()]


def _weights(weight, bias):
    # torch tensors are accepted without importing torch here (kernels is a leaf module).
    if hasattr(weight, "detach"):
        weight = weight.detach().cpu().numpy()
    if bias is not None and hasattr(bias, "detach"):
        bias = bias.detach().cpu().numpy()
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features] (got {weight.ndim}-D)")
    if not np.issubdtype(weight.dtype, np.floating):
        raise ValueError(f"weight must be a floating-point array (got {weight.dtype})")
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    if bias is not None:
        bias = np.asarray(bias)
        if not np.issubdtype(bias.dtype, np.floating):
            raise ValueError(f"bias must be a floating-point array (got {bias.dtype})")
        bias = np.ascontiguousarray(bias, dtype=np.float32)
    # NaN/Inf would quantize to garbage (-127s) or poison every output: refuse them here
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None and not np.isfinite(a).all():
            raise ValueError(f"{name} must be finite (it contains NaN or infinite values)")
    return weight, bias


def _threads(threads: int) -> int:
    if not isinstance(threads, int) or not 1 <= threads <= 256:
        raise ValueError(f"threads must be an integer in 1..256 (got {threads!r})")
    return threads


def _activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} (got {activation!r})")
    return activation


class _Layer:
    """What the three layers share: the compiled ``_impl`` and the per-call ``threads`` override."""

    in_features = property(lambda self: self._impl.in_features)
    out_features = property(lambda self: self._impl.out_features)
    isa = property(lambda self: self._impl.isa, doc="the path this layer runs")

    def __call__(self, x: np.ndarray, threads: int | None = None) -> np.ndarray:
        # _core._call, not the pybind11 method, and the threads default inline (here and in the
        # channel-major calls): at batch 1 a layer call is a few hundred nanoseconds, and
        # pybind11's dispatch alone was half of them
        return _core._call(self._impl, x, self.threads if threads is None else threads, False)


class Linear(_Layer):
    """Dense fp32 ``y = act(x @ weight.T + bias)``; ``x[N, K] -> y[N, M]`` like ``torch.nn.Linear``.

    ``threads`` splits each call over that many threads. ``isa`` forces a path for this layer
    (default: the process-wide choice).
    """

    def __init__(self, weight, bias=None, activation: str = "none", *, threads: int = 1, isa: str | None = None):
        weight, bias = _weights(weight, bias)
        self._impl = _core.Linear(weight, bias, _activation(activation), isa)
        self.activation = activation
        self.threads = _threads(threads)

    # like SparseLinear.spmm and QLinear.gemm_kn on purpose: each keeps its _core method's public name
    # (callers and docs use them), and each __repr__ shows that layer's own settings
    def forward_kn(self, x_kn: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Channel-major ``X[K, N] -> Y[M, N]`` (the 1x1-convolution layout)."""
        return _core._call(self._impl, x_kn, self.threads if threads is None else threads, True)

    def __repr__(self) -> str:
        return (
            f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"activation={self.activation!r}, isa={self.isa!r})"
        )


class SparseLinear(_Layer):
    """Sparse fp32 linear layer: zeros in ``weight[M, K]`` are pruned weights.

    ``block=(1, 1)`` packs single weights (unstructured); ``block=(4, 1)`` packs groups of 4
    output channels sharing one input-channel pattern (zeros inside a group are stored). The
    format is XNNPACK's: bias first, nonzero counts per output channel, input-channel deltas;
    the kernels vectorise over N. ``kernel="auto"`` runs the dense kernel when the stored weights
    exceed ``AUTO_MAX_DENSITY[block]`` of M*K (sparse does not pay there, as measured by
    benchmarks/kernels.py); an ``auto`` layer that runs sparse also keeps the dense kernel for
    inputs narrower than a vector (batch 1), unless its weight is large (2**18 or more) and at
    most 12 % stored: a GEMV reads dense weights faster than it gathers sparse ones. One column
    (N = 1) on AVX-512 and AVX2 runs sparse row groups instead where they pay (docs/kernels.md).
    ``"sparse"`` or ``"dense"`` force one. Calling maps
    ``x[N, K] -> y[N, M]``; ``.spmm(x_kn)`` maps the channel-major ``[K, N] -> [M, N]`` without
    the two transposes.
    """

    AUTO_MAX_DENSITY = {(1, 1): 0.35, (4, 1): 0.5}  # mirrors SparseLinear::kAutoMaxDensityB1/B4

    def __init__(
        self,
        weight,
        bias=None,
        *,
        block=(1, 1),
        activation: str = "none",
        threads: int = 1,
        kernel: str = "auto",
        isa: str | None = None,
    ):
        weight, bias = _weights(weight, bias)
        block = tuple(block) if not isinstance(block, int) else (block, 1)
        if block not in ((1, 1), (4, 1)):
            raise ValueError(f"block must be (1, 1) or (4, 1) output x input channels (got {block})")
        if kernel not in ("auto", "sparse", "dense"):
            raise ValueError(f"kernel must be one of auto, sparse, dense (got {kernel!r})")
        self._impl = _core.SparseLinear(weight, bias, block[0], _activation(activation), kernel, isa)
        self.block = block
        self.activation = activation
        self.threads = _threads(threads)

    nnz = property(lambda self: self._impl.nnz, doc="nonzero weights")
    density = property(lambda self: self._impl.nnz / (self.in_features * self.out_features))
    kernel = property(lambda self: self._impl.kernel, doc="'sparse' or 'dense': the kernel in use")

    # like Linear.forward_kn and QLinear.gemm_kn on purpose: each keeps its _core method's public name
    # (callers and docs use them), and each __repr__ shows that layer's own settings
    def spmm(self, x_kn: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Channel-major ``X[K, N] -> Y[M, N]``."""
        return _core._call(self._impl, x_kn, self.threads if threads is None else threads, True)

    def __repr__(self) -> str:
        return (
            f"SparseLinear(in_features={self.in_features}, out_features={self.out_features}, "
            f"density={self.density:.3f}, block={self.block}, kernel={self.kernel!r}, isa={self.isa!r})"
        )


class QLinear(_Layer):
    """int8 linear layer with TFLite arithmetic: int8 ``x[N, K] -> y[N, M]`` int8.

    The float ``weight[M, K]`` is quantized here, symmetric per output channel to [-127, 127]
    (``weight_scales``, ``qweight``); the bias to int32 with scale ``input_scale * weight_scale``
    (``qbias``). Activations are asymmetric per tensor (``input_scale``, ``input_zero_point``);
    outputs are requantized to (``output_scale``, ``output_zero_point``) with round-to-nearest-even,
    and ``activation`` clamps in the int8 domain. ``sparse="auto"`` runs the 1x4-block sparse
    kernel when at most ``AUTO_MAX_BLOCK_DENSITY`` of the blocks (4 consecutive input channels of
    one output channel) hold a nonzero weight, else the dense GEMM; off AVX-512 such a layer
    still runs one-column calls (batch 1) dense unless K >= 480 and at most 12 % of the blocks are
    stored, since the sparse dot products cost a fixed ~15 ns per output channel there.
    ``"sparse"``/``"dense"`` force one. Both give the same bits. ``.gemm_kn(x_kn)`` maps
    channel-major ``[K, N] -> [M, N]``.
    """

    AUTO_MAX_BLOCK_DENSITY = 0.35  # mirrors QLinear::kAutoMaxBlockDensity

    def __init__(
        self,
        weight,
        bias=None,
        *,
        input_scale: float,
        input_zero_point: int,
        output_scale: float,
        output_zero_point: int,
        sparse: str = "auto",
        block=(1, 4),
        activation: str = "none",
        threads: int = 1,
        isa: str | None = None,
    ):
        weight, bias = _weights(weight, bias)
        block = tuple(block) if not isinstance(block, int) else (1, block)
        if block not in ((1, 4), (1, 1)):
            raise ValueError(
                f"block must be (1, 4) input channels (got {block}); the int8 sparse format "
                "stores 1x4 blocks, (1, 1) is accepted as its alias for unstructured weights"
            )
        if sparse not in ("auto", "sparse", "dense"):
            raise ValueError(f"sparse must be one of auto, sparse, dense (got {sparse!r})")
        for name, zp in (("input_zero_point", input_zero_point), ("output_zero_point", output_zero_point)):
            if int(zp) != zp or not -128 <= zp <= 127:
                raise ValueError(f"{name} must be an integer in [-128, 127] (got {zp!r})")
        for name, sc in (("input_scale", input_scale), ("output_scale", output_scale)):
            if not (np.isfinite(sc) and sc > 0):
                raise ValueError(f"{name} must be a positive finite number (got {sc!r})")
        self._impl = _core.QLinear(
            weight,
            bias,
            float(input_scale),
            int(input_zero_point),
            float(output_scale),
            int(output_zero_point),
            _activation(activation),
            sparse,
            isa,
        )
        self.input_scale, self.input_zero_point = float(input_scale), int(input_zero_point)
        self.output_scale, self.output_zero_point = float(output_scale), int(output_zero_point)
        self.activation = activation
        self.threads = _threads(threads)

    qweight = property(lambda self: self._impl.qweight, doc="int8 [M, K] quantized weight")
    weight_scales = property(lambda self: self._impl.weight_scales, doc="float32 [M] per-channel scales")
    qbias = property(lambda self: self._impl.qbias, doc="int32 [M] quantized bias")
    output_range = property(lambda self: self._impl.output_range, doc="(qmin, qmax) after the activation")
    kernel = property(lambda self: self._impl.kernel, doc="'sparse' or 'dense': the kernel in use")
    nnz = property(lambda self: self._impl.nnz, doc="nonzero quantized weights")
    density = property(lambda self: self._impl.nnz / (self.in_features * self.out_features))

    def gemm_kn(self, x_kn: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Channel-major int8 ``X[K, N] -> Y[M, N]``."""
        return _core._call(self._impl, x_kn, self.threads if threads is None else threads, True)

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """float -> int8 with this layer's input scale and zero point (round half to even)."""
        q = np.rint(np.asarray(x, dtype=np.float64) / self.input_scale) + self.input_zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        return ((y.astype(np.float32) - self.output_zero_point) * self.output_scale).astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"QLinear(in_features={self.in_features}, out_features={self.out_features}, "
            f"kernel={self.kernel!r}, activation={self.activation!r}, isa={self.isa!r})"
        )
