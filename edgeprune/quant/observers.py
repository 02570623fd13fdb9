"""Calibration observers and the range -> (scale, zero point) rules.

Consumes: activation tensors, batch after batch (every calibration batch is observed), and the
calibration method. Produces: a clipping range per tensor and int8/uint8 quantization
parameters whose scales are exactly representable as float32 (the value written to ONNX is the
value stored in the QuantizedModel, bit for bit).

Calibration is two passes: pass 1 records min/max; pass 2 fills a fixed-range histogram (so no
re-binning is needed when a later batch widens the range). Methods:
- ``minmax``: the observed range.
- ``percentile``: the range that keeps ``percentile`` % of the values (both tails separately).
- ``entropy``: the |x| threshold minimising KL(P || Q) between the clipped distribution and its
  quantized version (TensorRT's calibrator, Migacz 2017).
- ``mse``: the range (a shrink factor of min/max) minimising the expected squared quantization
  error over the histogram.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def f32(x: float) -> float:
    """Round to the nearest float32, returned as a Python float (exact in JSON and in ONNX)."""
    return float(np.float32(x))


class Observer:
    """Collects min/max, then a signed histogram and an |x| histogram over fixed ranges."""

    def __init__(self, bins: int = 2048):
        self.bins = bins
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.hist: np.ndarray | None = None
        self.abs_hist: np.ndarray | None = None
        self.lo = self.hi = self.amax = 0.0

    def observe_minmax(self, x: torch.Tensor) -> None:
        x = x.detach()
        if x.numel() == 0:
            return
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.count += x.numel()

    def start_histogram(self) -> None:
        # The histogram range always contains 0: every int8 grid represents 0 exactly.
        self.lo = min(self.min, 0.0)
        self.hi = max(self.max, 0.0)
        self.amax = max(abs(self.lo), abs(self.hi))
        self.hist = np.zeros(self.bins, dtype=np.float64)
        self.abs_hist = np.zeros(self.bins, dtype=np.float64)

    def observe_histogram(self, x: torch.Tensor) -> None:
        if self.hist is None:
            self.start_histogram()
        x = x.detach().float().reshape(-1)
        if x.numel() == 0 or self.hi <= self.lo:
            return
        self.hist += torch.histc(x, self.bins, self.lo, self.hi).double().numpy()
        self.abs_hist += torch.histc(x.abs(), self.bins, 0.0, self.amax).double().numpy()

    # ---- ranges -------------------------------------------------------------------------------
    def range(self, method: str, symmetric: bool, levels: int, percentile: float = 99.99) -> tuple[float, float]:
        """The clipping range [lo, hi] (lo <= 0 <= hi) chosen by ``method``."""
        if self.count == 0:
            return 0.0, 0.0
        lo, hi = min(self.min, 0.0), max(self.max, 0.0)
        if method == "minmax" or self.hist is None or hi <= lo:
            pass
        elif method == "percentile":
            lo, hi = self._percentile_range(percentile)
        elif method == "entropy":
            t = self._entropy_threshold(levels)
            lo, hi = max(lo, -t), min(hi, t)
        elif method == "mse":
            lo, hi = self._mse_range(symmetric, levels)
        else:
            raise ValueError(f"unknown calibration method {method!r}")
        if symmetric:
            a = max(abs(lo), abs(hi))
            lo, hi = -a, a
        return lo, hi

    def _edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)

    def _percentile_range(self, p: float) -> tuple[float, float]:
        total = self.hist.sum()
        cdf = np.cumsum(self.hist) / total
        edges = self._edges()
        tail = (100.0 - p) / 100.0
        i_hi = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
        i_lo = int(np.searchsorted(cdf, tail, side="left"))
        hi = float(edges[min(i_hi + 1, self.bins)])
        lo = float(edges[i_lo])
        return min(lo, 0.0), max(hi, 0.0)

    def _entropy_threshold(self, levels: int) -> float:
        hist = self.abs_hist.copy()
        # Exact zeros (a ReLU's output is mostly zeros) cost nothing at any threshold, since 0 is
        # exactly representable; left in, their spike drowns the KL signal of the real values.
        hist[0] = 0.0
        bins = self.bins
        width = self.amax / bins
        if hist.sum() == 0 or width == 0:
            return self.amax
        best_i, best_kl = bins, math.inf
        # Stride 16 over 2048 bins: ~120 candidates, fine enough and fast on every batch size.
        for i in list(range(levels, bins, 16)) + [bins]:
            sliced = hist[:i]
            p = sliced.copy()
            p[i - 1] += hist[i:].sum()  # clipped mass goes to the last kept bin
            nz = p > 0
            # merge the i bins into `levels` quantized bins, spread each back over its non-empty bins
            idx = (np.arange(i) * levels) // i
            q_sum = np.bincount(idx, weights=sliced, minlength=levels)
            q_cnt = np.bincount(idx, weights=nz.astype(np.float64), minlength=levels)
            q = np.where(nz, q_sum[idx] / np.maximum(q_cnt[idx], 1), 0.0)
            pn, qn = p[nz] / p.sum(), q[nz] / max(q.sum(), 1e-30)
            qn = np.maximum(qn, 1e-12)  # smoothing: clipped mass where q is empty costs, but finitely
            kl = float(np.sum(pn * np.log(pn / qn)))
            if kl < best_kl:
                best_kl, best_i = kl, i
        return float(best_i * width)

    def _mse_range(self, symmetric: bool, levels: int) -> tuple[float, float]:
        edges = self._edges()
        centers = (edges[:-1] + edges[1:]) / 2
        counts = self.hist
        lo0, hi0 = self.lo, self.hi
        grid = np.linspace(0.02, 1.0, 50)

        def err(lo, hi):
            if symmetric:
                m = max(abs(lo), abs(hi))
                lo, hi = -m, m
            scale, zp, qmin, qmax = _asym(lo, hi, levels)
            q = np.clip(np.round(centers / scale) + zp, qmin, qmax)
            return float(np.sum(counts * (centers - (q - zp) * scale) ** 2))

        if symmetric:
            m = max(abs(lo0), abs(hi0))
            best = min(grid, key=lambda a: err(-m * a, m * a))
            return -m * best, m * best
        # coordinate descent: each tail has its own clip (a ReLU6 output and a logit differ)
        lo, hi = lo0, hi0
        for _ in range(2):
            hi = hi0 * min(grid, key=lambda a: err(lo, hi0 * a)) if hi0 > 0 else hi0
            lo = lo0 * min(grid, key=lambda a: err(lo0 * a, hi)) if lo0 < 0 else lo0
        return lo, hi


def _asym(lo: float, hi: float, levels: int):
    qmin, qmax = 0, levels - 1
    scale = (hi - lo) / (qmax - qmin) if hi > lo else 1.0
    zp = round(qmin - lo / scale)
    return scale, min(max(zp, qmin), qmax), qmin, qmax


# the smallest activation scale kept: times a weight scale (>= 1e-8 in practice) it stays a normal float32
_MIN_SCALE = 1e-30


def activation_qparams(lo: float, hi: float, dtype: str, symmetric: bool) -> tuple[float, int, int, int]:
    """(scale, zero_point, qmin, qmax) for a per-tensor activation range [lo, hi]."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    qmin, qmax = (0, 255) if dtype == "uint8" else (-128, 127)
    # a range so small its scale is under _MIN_SCALE (a tensor of denormals, zeros up to rounding)
    # is a constant zero to int8: scale 1 represents it exactly, where a tiny scale would make the
    # int32 bias scale s_in * s_w of the next layer underflow float32 to 0
    if symmetric:
        amax = max(abs(lo), abs(hi))
        scale = f32(amax / 127.0) if amax > 0 else 1.0
        return scale if scale >= _MIN_SCALE else 1.0, 0, qmin, qmax
    scale = f32((hi - lo) / (qmax - qmin)) if hi > lo else 0.0
    if not scale >= _MIN_SCALE:
        return 1.0, 0, qmin, qmax
    zp = int(round(qmin - lo / scale))
    return scale, min(max(zp, qmin), qmax), qmin, qmax


def weight_scales(weight: torch.Tensor, qmax: int, per_channel: bool, axis: int = 0) -> list[float]:
    """Symmetric weight scales (one per output channel along ``axis`` or one per tensor).

    A channel that is all zero (pruned or masked) gets the largest scale of the layer so its
    bias scale s_in*s_w stays sane; its weights still quantize to exactly 0.
    """
    w = weight.detach().float()
    if per_channel:
        dims = [d for d in range(w.dim()) if d != axis]
        amax = w.abs().amax(dim=dims) if dims else w.abs()
    else:
        amax = w.abs().max().reshape(1)
    fallback = float(amax.max()) if float(amax.max()) > 0 else float(qmax)
    amax = torch.where(amax > 0, amax, torch.full_like(amax, fallback))
    return [f32(float(a) / qmax) for a in amax]
