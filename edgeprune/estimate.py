"""Latency estimates for a device profile: a per-layer roofline, calibrated on published numbers.

Consumes: an ``nn.Module`` (with an ``input_shape`` attribute or an ``input_shape=`` argument)
or the path of an ONNX file (fp32, or int8 in QDQ / QLinear form), and a target profile
(``edgeprune.targets.TargetProfile`` or its name). Produces: an :class:`Estimate` with the
total in milliseconds and a per-layer breakdown; ``to_dict()`` always carries
``"estimate": true``, because a prediction is not a measurement (``edgeprune bench`` on the
device replaces it).

The model, per layer ``l`` (batch 1)::

    compute_l = 2 * MACs_l / (peak_per_core[precision] * eff[kind, precision] * speedup(threads))
    memory_l  = bytes_l / (bandwidth * BW_EFFICIENCY)      # weights + input + output activations
    time_l    = max(compute_l, memory_l) + LAYER_OVERHEAD(threads)
    total     = sum_l time_l

``peak_per_core`` and ``bandwidth`` are the profile's vendor figures (docs/targets.md).
``kind`` is one of dense ``conv`` (k x k), ``pointwise`` (1 x 1), ``depthwise``, ``fc``,
``act`` (a transcendental activation: an exponential or tanh per element, priced as
``ACT_MACS_PER_ELEM`` multiply-adds an element at its own efficiency), ``eltwise``/``pool``
(memory-bound, no MAC efficiency). BatchNorm and the piecewise-linear activations that follow
a conv/linear (ReLU, ReLU6, HardSwish, a squeeze-excite gate's sigmoid) are fused by every
deployment runtime (XNNPACK, ONNX Runtime, TensorRT) and cost nothing here; SiLU, GELU, tanh
and a sigmoid anywhere else are ``act`` ops, whose exponentials cost time even where a runtime
fuses them.

Calibration (the efficiencies below). Published points as quoted in docs/targets.md,
from the XNNPACK README's Raspberry Pi 4 table (multi-threaded, 4 threads),
https://github.com/google/XNNPACK (README, "Performance" / "Raspberry Pi"):

    MobileNetV2 1.0 224: fp32 41 ms, int8 17-20 ms
    MobileNetV1 1.0 224: fp32 72 ms, int8 24-29 ms

Peaks are the rpi4 profile's vendor figures (4x Cortex-A72 @ 1.5 GHz: 12 fp32 GFLOPS and
24 int8 GOPS per core, no dotprod); what the efficiencies absorb is everything between
those peaks and what XNNPACK reaches. They were fitted by least squares in log space to the
four points (int8 ranges taken at their midpoints) over a 0.01 grid, one GEMM efficiency per
precision, with the depthwise efficiency held at a third of it (depthwise 3x3 does 9 MACs
per loaded input value against hundreds for a 1x1 GEMM, so it is load-bound; the four
points alone cannot separate the two, the fit is flat along that direction). The fc
efficiency does not matter for these models (a batch-1 fc is a GEMV, memory-bound).
``tests/python/test_estimate.py`` checks all four points within +-35 %. A profile with its own
``[efficiency]`` table (``edgeprune targets calibrate``; the built-in x86 ones) uses that instead
(``efficiency_for``). The others reuse these efficiencies on their own peaks and bandwidth: an assumption (the fraction of peak
a microkernel reaches is mostly set by its loads per FLOP, which NEON and AVX2 designs
share); a device measurement replaces it.

Threads: the published points are 4-thread only, so the multi-thread speedup is an
assumption, not a fit: Amdahl with ``PARALLEL_FRACTION`` (XNNPACK splits each operator's
output tiles across a pthreadpool; the serial part is the per-operator set-up and the
barrier). Memory bandwidth is shared by all cores and does not scale with threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._callable import make_module_callable
from .errors import UserError, detail_line

# ----------------------------------------------------------------------------- calibration
# Fraction of the profile's per-core peak that the runtime's microkernels reach, per layer
# kind and precision; fitted to the XNNPACK Raspberry Pi 4 points cited in the module
# docstring (see ``calibration_points`` for the check).
EFFICIENCY: dict[str, dict[str, float]] = {
    # fitted: MobileNetV2 41.8 ms (published 41), MobileNetV1 70.2 ms (published 72)
    "fp32": {"conv": 0.42, "pointwise": 0.42, "depthwise": 0.14, "fc": 0.30, "act": 0.5},
    # fitted: MobileNetV2 17.3 ms (published 17-20), MobileNetV1 28.5 ms (published 24-29)
    "int8": {"conv": 0.52, "pointwise": 0.52, "depthwise": 0.173, "fc": 0.30, "act": 0.25},
    # no published fp16 point: the fp32 efficiencies on the fp16 peak (see _peak_per_core)
    "fp16": {"conv": 0.42, "pointwise": 0.42, "depthwise": 0.14, "fc": 0.30, "act": 0.5},
}
# "act" above is an assumption, not a fit: none of the published points has a transcendental
# activation. A vectorized exponential (range reduction, a short polynomial, a reciprocal for the
# sigmoid) is about ACT_MACS_PER_ELEM multiply-adds an element and runs near half the FMA peak;
# int8 runtimes compute it in float or through a table while their peak is the integer one.
# A calibrated profile fits it (x86: benchmarks/estimate.py, the test zoo's SiLU models).
ACT_MACS_PER_ELEM = 10
# Achievable fraction of the DRAM figure (STREAM-like streaming kernels reach 40-60 % of the
# LPDDR4 theoretical number on the Pi 4; 0.45 is the middle of that range).
BW_EFFICIENCY = 0.45
# Fraction of each operator's work that parallelises (Amdahl); an assumption, see docstring.
PARALLEL_FRACTION = 0.95
# Per-operator cost (set-up, pthreadpool barrier) in microseconds, single thread and per
# extra thread: tiny layers are dominated by this, not by their MACs.
LAYER_OVERHEAD_US = 8.0
LAYER_OVERHEAD_PER_THREAD_US = 4.0

# GPU (Jetson, TensorRT) figures. A GPU whose peak is its CUDA cores' fp16 rate (the Jetson Nano's
# Maxwell, no tensor cores) uses GPU_EFFICIENCY_CUDA_CORES: conv and 1x1 fitted to ONE published
# TensorRT point, torch2trt's Jetson Nano table (ResNet-50 fp16, 29.8 ms; docs/targets.md), where
# cuDNN's large implicit GEMMs reach about two thirds of the fp16 FMA rate. Depthwise and fc keep
# the assumptions. A tensor-core peak (Orin's int8/fp16 TOPS) is reached far less at batch 1, and no
# published per-model TensorRT figure for the Orin Nano was found: GPU_EFFICIENCY stays an
# assumption (small batch-1 convolutions reach a few tens of percent of tensor-core peak), reported
# with "calibrated": false; trtexec on the device is the number to trust.
GPU_EFFICIENCY = {"conv": 0.25, "pointwise": 0.25, "depthwise": 0.03, "fc": 0.05}
GPU_EFFICIENCY_CUDA_CORES = {"conv": 0.67, "pointwise": 0.67, "depthwise": 0.03, "fc": 0.05}
GPU_CALIBRATION_SOURCE = (
    "torch2trt docs/benchmarks/jetson_nano.md (Jetson Nano, TensorRT fp16, batch 1): ResNet-50 29.8 ms"
)
GPU_LAYER_OVERHEAD_US = 6.0
GPU_BW_EFFICIENCY = 0.6
# Occupancy: a layer fills the GPU only when it has enough output elements to give every CUDA
# core work; below that, a kernel's time stops shrinking with its MACs (it still takes one wave
# of thread blocks). Modelled as efficiency x min(1, out_elems / (cuda_cores x this)), so
# channel pruning speeds the narrow late layers of a CNN up far less than their MAC count says.
# An assumption from CUDA's execution model (docs/targets.md, "GPU estimates"), not a fit.
GPU_SATURATION_ELEMS_PER_CORE = 64

# Published reference points (ms) the constants above are checked against.
CALIBRATION_POINTS = {
    ("mobilenet_v2", "fp32"): (41.0, 41.0),
    ("mobilenet_v2", "int8"): (17.0, 20.0),
    ("mobilenet_v1", "fp32"): (72.0, 72.0),
    ("mobilenet_v1", "int8"): (24.0, 29.0),
}
CALIBRATION_SOURCE = (
    "XNNPACK README (Raspberry Pi 4, 4 threads): MobileNetV2 fp32 41 ms, int8 17-20 ms; "
    "MobileNetV1 fp32 72 ms, int8 24-29 ms"
)

_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
PRECISIONS = tuple(_BYTES)
# ops priced by their MACs at a per-kind efficiency; those with weights (WEIGHTED_KINDS) also
# pack them and tile, and pay the compute per-op overhead (an "act" pays the memory-bound ops' one)
COMPUTE_KINDS = ("conv", "pointwise", "depthwise", "fc", "act")
WEIGHTED_KINDS = ("conv", "pointwise", "depthwise", "fc")


# ----------------------------------------------------------------------------- results
@dataclasses.dataclass
class Op:
    """One operator as the estimator sees it (shape facts only)."""

    name: str
    kind: str  # conv | pointwise | depthwise | fc | act | eltwise | pool
    macs: int = 0
    weight_elems: int = 0
    in_elems: int = 0
    out_elems: int = 0
    # ONNX node and tensor names this op covers (its node, its outputs, fused followers): how a
    # runtime's per-node profile is matched back to it (edgeprune.calibrate)
    names: list[str] = dataclasses.field(default_factory=list)


def compute_macs(op: Op) -> float:
    """The multiply-adds an op is priced at: its MACs, or for an ``act`` op (which has none of
    its own, so model MAC counts leave it out) ``ACT_MACS_PER_ELEM`` per output element."""
    return float(op.out_elems) * ACT_MACS_PER_ELEM if op.kind == "act" else float(op.macs)


@dataclasses.dataclass
class LayerEstimate:
    name: str
    kind: str
    macs: int
    bytes: int
    compute_ms: float
    memory_ms: float
    overhead_ms: float
    ms: float
    bound: str  # "compute" | "memory"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def roofline(cls, op: Op, nbytes: float, compute_s: float, memory_s: float, overhead_ms: float) -> LayerEstimate:
        """One layer's row from its compute and memory times (seconds) and its fixed cost (ms)."""
        return cls(
            name=op.name,
            kind=op.kind,
            macs=int(op.macs),
            bytes=int(nbytes),
            compute_ms=compute_s * 1000.0,
            memory_ms=memory_s * 1000.0,
            overhead_ms=overhead_ms,
            ms=max(compute_s, memory_s) * 1000.0 + overhead_ms,
            bound="compute" if compute_s >= memory_s else "memory",
        )


@dataclasses.dataclass
class Estimate:
    """A predicted latency for one model on one target; never a measurement."""

    target: str
    precision: str
    threads: int
    total_ms: float
    macs: int
    weight_bytes: int
    layers: list[LayerEstimate]
    source: str  # "module" or the ONNX path
    assumptions: dict[str, Any]
    device: str = "cpu"
    # "measured": the profile's efficiencies were fitted to measurements on the device
    # (`edgeprune targets calibrate`); "published": fitted to published figures; "none": assumptions
    # (tensor-core GPU estimates)
    calibration: str = "published"

    @property
    def by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for layer in self.layers:
            out[layer.kind] = out.get(layer.kind, 0.0) + layer.ms
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate": True,
            "calibrated": self.calibration != "none",
            "calibration": self.calibration,
            "device": self.device,
            "target": self.target,
            "precision": self.precision,
            "threads": self.threads,
            "total_ms": round(self.total_ms, 4),
            "macs": self.macs,
            "weight_bytes": self.weight_bytes,
            "by_kind_ms": {k: round(v, 4) for k, v in sorted(self.by_kind.items())},
            "layers": [
                {
                    **layer.to_dict(),
                    "compute_ms": round(layer.compute_ms, 5),
                    "memory_ms": round(layer.memory_ms, 5),
                    "overhead_ms": round(layer.overhead_ms, 5),
                    "ms": round(layer.ms, 5),
                }
                for layer in self.layers
            ],
            "assumptions": self.assumptions,
        }


# ----------------------------------------------------------------------------- entry point
def estimate(
    model_or_onnx_path,
    target,
    precision: str | None = "fp32",
    threads: int | None = None,
    input_shape: Iterable[int] | None = None,
    device: str = "cpu",
    example_inputs=None,
) -> Estimate:
    """Estimate batch-1 latency of a model on ``target``'s CPU (or its GPU with ``device="gpu"``).

    ``precision``: ``"fp32"``, ``"int8"`` or ``"fp16"``; ``None`` means "what the model is"
    (int8 for a quantized ONNX file, fp16 for one with fp16 weights, fp32 otherwise).
    ``threads``: default all cores of the target; more than the target has is an error.
    ``input_shape``: (C, H, W) for a module without an ``input_shape`` attribute, or to
    override an ONNX file's dynamic dims. ``example_inputs``: a dict of keyword inputs (token ids
    and a mask) for a module that takes those instead of one image.
    ``device="gpu"``: a TensorRT-style roofline on the profile's GPU (Jetson): fitted to a published
    point for a CUDA-core GPU (``"calibration": "published"``), assumed for a tensor-core one
    (``"calibrated": false``).
    """
    profile = _resolve_target(target)
    if device not in ("cpu", "gpu"):
        raise ValueError(f"estimate: device {device!r} is not 'cpu' or 'gpu'")
    if isinstance(model_or_onnx_path, (str, os.PathLike)):
        path = Path(model_or_onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"estimate: no ONNX file at {path}")
        ops, file_precision = ops_from_onnx(path, input_shape)
        source = str(path)
    else:
        ops = ops_from_module(model_or_onnx_path, input_shape, example_inputs)
        file_precision = "fp32"
        source = "module"
    if precision is None:
        precision = file_precision
    if precision not in _BYTES:
        raise ValueError(f"estimate: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if device == "gpu":
        return estimate_gpu_ops(ops, profile, precision, source=source)
    return estimate_ops(ops, profile, precision, threads, source=source)


def estimate_gpu_ops(ops: list[Op], profile, precision: str, source: str = "ops") -> Estimate:
    """The same roofline on the profile's GPU (TensorRT on a Jetson); see GPU_EFFICIENCY_CUDA_CORES."""
    gpu = getattr(profile, "gpu", None)
    if gpu is None:
        raise ValueError(f"estimate: target {profile.name} has no GPU; use device='cpu'")
    fp16 = float(gpu.fp16_tflops) * 1e12
    if precision == "int8":
        if not getattr(gpu, "int8_tops", None):
            raise ValueError(f"estimate: the GPU of {profile.name} has no int8 path; use precision='fp16'")
        peak = float(gpu.int8_tops) * 1e12
    else:
        # TensorRT runs fp32 networks at roughly half the fp16 rate (no tensor-core fp32)
        peak = fp16 if precision == "fp16" else fp16 / 2.0
    bandwidth = getattr(profile.memory, "bandwidth_gbs", None)
    b = _BYTES[precision]
    overhead_ms = GPU_LAYER_OVERHEAD_US / 1000.0
    saturation = gpu_cuda_cores(gpu) * GPU_SATURATION_ELEMS_PER_CORE
    fitted = not gpu_tensor_cores(gpu)
    efficiency = GPU_EFFICIENCY_CUDA_CORES if fitted else GPU_EFFICIENCY
    layers = []
    for op in ops:
        nbytes = op.weight_elems * b + (op.in_elems + op.out_elems) * b
        compute_s = 0.0
        if op.kind in efficiency and op.macs:
            occupancy = min(1.0, max(op.out_elems, 1) / saturation)
            compute_s = 2.0 * op.macs / (peak * efficiency[op.kind] * occupancy)
        memory_s = nbytes / (bandwidth * 1e9 * GPU_BW_EFFICIENCY) if bandwidth else 0.0
        layers.append(LayerEstimate.roofline(op, nbytes, compute_s, memory_s, overhead_ms))
    assumptions = {
        "model": "per-layer roofline on the GPU peak (TensorRT-style), plus a kernel launch per layer",
        "calibration": GPU_CALIBRATION_SOURCE
        if fitted
        else "none: tensor-core GPU efficiencies are assumptions; measure with trtexec on the device",
        "peak_tops": peak / 1e12,
        "bandwidth_gbs": bandwidth,
        "efficiency": dict(efficiency),
        "layer_overhead_us": GPU_LAYER_OVERHEAD_US,
        "occupancy": f"efficiency x min(1, output elements / {saturation}) (CUDA cores x "
        f"{GPU_SATURATION_ELEMS_PER_CORE})",
        "batch": 1,
    }
    return Estimate(
        target=profile.name,
        precision=precision,
        threads=1,
        total_ms=sum(layer.ms for layer in layers),
        macs=int(sum(op.macs for op in ops)),
        weight_bytes=int(sum(op.weight_elems for op in ops) * b),
        layers=layers,
        source=source,
        assumptions=assumptions,
        device="gpu",
        calibration="published" if fitted else "none",
    )


def gpu_tensor_cores(gpu) -> int:
    """Tensor cores from the profile's GPU name ("..., 32 tensor cores"); 0 when it names none."""
    m = re.search(r"(\d+)\s*tensor cores", str(getattr(gpu, "name", "")), re.IGNORECASE)
    return int(m.group(1)) if m else 0


def gpu_cuda_cores(gpu) -> int:
    """CUDA cores from the profile's GPU name ("Ampere, 1024 CUDA cores, ..."); 128 if unnamed."""
    m = re.search(r"(\d+)\s*CUDA cores", str(getattr(gpu, "name", "")))
    return int(m.group(1)) if m else 128


def estimate_ops(ops: list[Op], profile, precision: str, threads: int | None = None, source: str = "ops") -> Estimate:
    """The roofline itself, over a list of :class:`Op` (shared by the module and ONNX paths)."""
    cores = int(profile.cpu.cores)
    if threads is None:
        threads = cores
    threads = int(threads)
    if threads < 1 or threads > cores:
        raise ValueError(f"estimate: threads={threads} but target {profile.name} has {cores} cores; use 1..{cores}")
    peak_core_gops = _peak_per_core(profile, precision)
    bandwidth = getattr(profile.memory, "bandwidth_gbs", None)
    speedup = threads / (1.0 + (1.0 - PARALLEL_FRACTION) * (threads - 1))
    fitted = efficiency_for(profile, precision, threads)
    eff = fitted["efficiency"]
    bw_eff = fitted["bandwidth_efficiency"]
    per_thread_us = LAYER_OVERHEAD_PER_THREAD_US * (threads - 1)
    overhead_ms = (fitted["layer_overhead_us"] + per_thread_us) / 1000.0
    # a memory-bound node (element-wise, pooling, an unfolded Q/DQ) packs no weights and tiles no
    # GEMM: its fixed cost is fitted separately where a profile has it
    eltwise_overhead_ms = (fitted["eltwise_overhead_us"] + per_thread_us) / 1000.0
    act_bytes = _BYTES[precision]
    # int8 models keep fp32 bias and per-channel scales; small, ignored. fp16 weights are 2 bytes.
    w_bytes = _BYTES[precision]

    layers = []
    for op in ops:
        nbytes = op.weight_elems * w_bytes + (op.in_elems + op.out_elems) * act_bytes
        work = compute_macs(op)
        if op.kind in eff and work:
            compute_s = 2.0 * work / (peak_core_gops * 1e9 * eff[op.kind] * speedup)
        else:
            compute_s = 0.0
        memory_s = nbytes / (bandwidth * 1e9 * bw_eff) if bandwidth else 0.0
        op_overhead_ms = overhead_ms if op.kind in WEIGHTED_KINDS else eltwise_overhead_ms
        layers.append(LayerEstimate.roofline(op, nbytes, compute_s, memory_s, op_overhead_ms))
    total = sum(layer.ms for layer in layers)
    assumptions = {
        "model": (
            "per-layer roofline: max(compute at peak x efficiency, bytes at bandwidth x efficiency)"
            " + per-layer overhead"
        ),
        "calibration": fitted["source"],
        "calibrated_threads": fitted["threads"],
        "peak_gops_per_core": peak_core_gops,
        "bandwidth_gbs": bandwidth,
        "bandwidth_efficiency": bw_eff if bandwidth else None,
        "efficiency": dict(eff),
        "thread_speedup": round(speedup, 4),
        "parallel_fraction": PARALLEL_FRACTION,
        "layer_overhead_us": round(overhead_ms * 1000.0, 3),
        "eltwise_overhead_us": round(eltwise_overhead_ms * 1000.0, 3),
        "batch": 1,
        "fused": (
            "BatchNorm and piecewise-linear activations after conv/linear are fused (cost 0);"
            f" SiLU, GELU, tanh and other sigmoids are act ops ({ACT_MACS_PER_ELEM} MACs an element)"
        ),
    }
    if not bandwidth:
        assumptions["note"] = "target has no memory bandwidth figure: memory time is not modelled"
    return Estimate(
        target=profile.name,
        precision=precision,
        threads=threads,
        total_ms=total,
        macs=int(sum(op.macs for op in ops)),
        weight_bytes=int(sum(op.weight_elems for op in ops) * w_bytes),
        layers=layers,
        source=source,
        assumptions=assumptions,
        calibration="measured" if fitted["measured"] else "published",
    )


def efficiency_for(profile, precision: str, threads: int) -> dict[str, Any]:
    """The efficiencies an estimate uses: the profile's own ``[efficiency]`` table when it has
    one for ``precision`` (the fitted thread count nearest below ``threads``, else the smallest;
    the Amdahl speedup covers the rest), otherwise the module's Raspberry Pi 4 fit.

    Returns {"efficiency": {kind: fraction of peak}, "bandwidth_efficiency", "layer_overhead_us",
    "eltwise_overhead_us" (memory-bound ops; the profile's, else its layer_overhead_us),
    "source", "threads" (the fitted thread count used, None for the module fit), "measured"}.
    """
    table = getattr(profile, "efficiency", None) or {}
    per_threads = table.get(precision) or {}
    if per_threads:
        counts = sorted(int(k[1:]) for k in per_threads)
        pick = max((c for c in counts if c <= threads), default=counts[0])
        fitted = per_threads[f"t{pick}"]
        # a table fitted before the "act" class existed has no act entry: the time of its
        # activations went into the other classes, so its act ops stay memory-priced (no compute)
        eff = {k: fitted.get(k, EFFICIENCY[precision][k]) for k in COMPUTE_KINDS if k != "act" or k in fitted}
        return {
            "efficiency": eff,
            "bandwidth_efficiency": fitted.get("eltwise", BW_EFFICIENCY),
            "layer_overhead_us": table.get("layer_overhead_us", LAYER_OVERHEAD_US),
            "eltwise_overhead_us": table.get("eltwise_overhead_us", table.get("layer_overhead_us", LAYER_OVERHEAD_US)),
            "source": table["source"],
            "threads": pick,
            "measured": bool(getattr(profile, "calibrated", False)),
        }
    return {
        "efficiency": dict(EFFICIENCY[precision]),
        "bandwidth_efficiency": BW_EFFICIENCY,
        "layer_overhead_us": LAYER_OVERHEAD_US,
        "eltwise_overhead_us": LAYER_OVERHEAD_US,
        "source": CALIBRATION_SOURCE,
        "threads": None,
        "measured": False,
    }


def _resolve_target(target):
    if isinstance(target, (str, os.PathLike)):
        from edgeprune import targets as _targets  # a leaf; imported late to keep this module light

        return _targets.load(target)
    return target


def _peak_per_core(profile, precision: str) -> float:
    fp32 = float(profile.peak.fp32_gflops_per_core)
    if precision == "int8":
        int8 = getattr(profile.peak, "int8_gops_per_core", None)
        return float(int8) if int8 else 2.0 * fp32
    if precision == "fp16":
        # ARMv8.2 FP16 arithmetic (A76, A78AE, x86 without AVX512-FP16 converts): XNNPACK runs
        # fp16 at 2x fp32 only where the CPU has "fphp"/"asimdhp"; otherwise at fp32 speed.
        features = {str(f).lower() for f in (getattr(profile.cpu, "features", None) or ())}
        return 2.0 * fp32 if features & {"fp16", "fphp", "asimdhp"} else fp32
    return fp32


# ----------------------------------------------------------------------------- nn.Module
_ACTIVATIONS = {
    "relu",
    "relu_",
    "relu6",
    "hardtanh",
    "hardtanh_",
    "hardswish",
    "hardswish_",
    "hardsigmoid",
    "leaky_relu",
    "leaky_relu_",
    "clamp",
    "clamp_",
    "clip",
    "batch_norm",
    "dropout",
    "dropout_",
}
# an exponential or tanh per element: "act" ops wherever they are (a sigmoid straight after a
# conv/linear is a squeeze-excite gate, fused like the activations above)
_TRANSCENDENTAL = {
    "silu",
    "silu_",
    "sigmoid",
    "sigmoid_",
    "gelu",
    "elu",
    "elu_",
    "selu",
    "celu",
    "tanh",
    "tanh_",
    "softplus",
    "mish",
}
_ELTWISE = {
    "add",
    "add_",
    "__add__",
    "__iadd__",
    "__radd__",
    "mul",
    "mul_",
    "__mul__",
    "__imul__",
    "__rmul__",
    "sub",
    "__sub__",
    "cat",
    "concat",
    "softmax",
    "log_softmax",
    "layer_norm",
    "group_norm",
    "instance_norm",
    "embedding",
    "div",
    "__truediv__",
}
_POOLS = {
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "max_pool2d",
    "max_pool2d_with_indices",
    "_max_pool2d",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_with_indices",
    "adaptive_avg_pool1d",
    "avg_pool1d",
    "max_pool1d",
    "mean",
}


def _sdpa_cpu_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    # (B, H, Lq, D) x (B, H, Lk, D) -> scores, then x (B, H, Lk, Dv): two matmuls, 2 flops per MAC
    b, h, lq, d = q
    lk, dv = k[-2], v[-1]
    return 2 * b * h * lq * lk * (d + dv)


def _mkldnn_lstm_flops(x, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    # one direction of one LSTM layer, oneDNN's fused kernel (nn.LSTM on CPU): every step's
    # [4H, I] and [4H, H] products; GRU and RNN decompose into addmm, which the counter sees
    steps = math.prod(x) // x[-1]
    return 2 * steps * w_ih[0] * (w_ih[1] + w_hh[1])


def _flop_mapping() -> dict:
    import torch

    ops = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        ops[op] = _sdpa_cpu_flops
    op = getattr(torch.ops.aten, "mkldnn_rnn_layer", None)
    if op is not None:
        ops[op] = _mkldnn_lstm_flops
    return ops


@contextlib.contextmanager
def counting_macs():
    """Count the MACs of everything run inside (``with counting_macs() as macs: ...; macs()``).

    The one MAC counter: ``torch.utils.flop_counter`` at the aten level (every conv, matmul and
    attention op, hand-written attention included), halved from FLOPs. ``count_macs_params``
    (both budget searches) and ``ops_from_module`` (for operators it has no closed form for)
    count with it.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    # the fused MultiheadAttention fast path is one opaque kernel the counter cannot see into
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
            yield lambda: int(counter.get_total_flops()) // 2
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


# Functions whose MACs ops_from_module takes from counting_macs (no closed form here), and the
# operator kind they become.
_COUNTED = {
    "conv_transpose1d": "conv",
    "conv_transpose2d": "conv",
    "conv_transpose3d": "conv",
    "einsum": "fc",
    "multi_head_attention_forward": "fc",
    # recurrent layers: a product per step of small matrices, as FULLY_CONNECTED runs them
    "lstm": "fc",
    "gru": "fc",
    "rnn_tanh": "fc",
    "rnn_relu": "fc",
}


def _numel(x) -> int:
    import torch

    return int(x.numel()) if isinstance(x, torch.Tensor) else 0


class _OpTrace:
    """What ``ops_from_module`` records while the model runs: one ``Op`` per operator, named
    after the module it runs in."""

    def __init__(self):
        self.stack: list[str] = []  # names of the modules being run, innermost last
        self.ops: list[Op] = []
        self.fusable: set[int] = set()  # ids of tensors produced by conv/linear (or an op fused onto one)
        self.keep: list = []  # keep outputs alive so their ids stay unique during the trace
        self.counts: dict[str, int] = {}

    def name(self, kind: str) -> str:
        base = self.stack[-1] if self.stack and self.stack[-1] else "model"
        key = f"{base}:{kind}"
        self.counts[key] = self.counts.get(key, 0) + 1
        return base if self.counts[key] == 1 and kind in WEIGHTED_KINDS else f"{base}.{kind}{self.counts[key]}"

    def add(self, kind: str, out, fused_onto: bool = False, **fields) -> None:
        self.ops.append(Op(self.name(kind), kind, out_elems=_numel(out), **fields))
        if fused_onto:
            self.fusable.add(id(out))

    def call(self, func, args, kwargs):
        """Run ``func`` and record it (the body of the TorchFunctionMode)."""
        import torch

        fname = getattr(func, "__name__", "")
        if fname in _COUNTED:
            return self.counted(fname, func, args, kwargs)
        out = func(*args, **kwargs)
        first = args[0] if args else None
        if fname in ("conv1d", "conv2d", "conv3d"):
            self.conv(args, kwargs, out)
        elif fname in ("linear", "matmul", "__matmul__", "mm", "bmm", "addmm"):
            x, w = (args[1], args[2]) if fname == "addmm" else (args[0], args[1])
            # a weight is read from memory as weights; an activation operand (attention's
            # Q @ K^T) is one more input tensor
            is_weight = isinstance(w, torch.nn.Parameter)
            in_elems = _numel(x) + (0 if is_weight else _numel(w))
            weight_elems = _numel(w) if is_weight else 0
            macs = _numel(out) * int(x.shape[-1])
            self.add("fc", out, True, macs=macs, weight_elems=weight_elems, in_elems=in_elems)
        elif fname == "scaled_dot_product_attention":
            q, k, v = args[0], args[1], args[2]
            # Q @ K^T (L x S x E per head) and softmax(.) @ V (L x S x Ev per head)
            lq, s_len = int(q.shape[-2]), int(k.shape[-2])
            macs = int(math.prod(q.shape[:-2])) * lq * s_len * (int(q.shape[-1]) + int(v.shape[-1]))
            self.add("fc", out, macs=macs, in_elems=_numel(q) + _numel(k) + _numel(v))
        elif fname in _TRANSCENDENTAL and isinstance(out, torch.Tensor):
            if fname.startswith("sigmoid") and id(first) in self.fusable:
                self.fusable.add(id(out))
            else:
                self.add("act", out, in_elems=_numel(first))
        elif fname in _ACTIVATIONS:
            if id(first) in self.fusable:
                self.fusable.add(id(out))
            elif isinstance(out, torch.Tensor) and fname not in ("dropout", "dropout_"):
                self.add("eltwise", out, in_elems=_numel(first))
        elif fname in _ELTWISE and isinstance(out, torch.Tensor):
            ins = first if isinstance(first, (list, tuple)) else args
            self.add("eltwise", out, in_elems=sum(_numel(a) for a in ins))
        elif fname in _POOLS and isinstance(out, torch.Tensor):
            self.add("pool", out, in_elems=_numel(first))
        if isinstance(out, torch.Tensor):
            self.keep.append(out)
        return out

    def conv(self, args, kwargs, out) -> None:
        x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
        groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
        kernel = int(math.prod(w.shape[2:]))
        per_out = int(w.shape[1]) * kernel  # MACs per output element
        if groups > 1 and groups == x.shape[1] and int(w.shape[1]) == 1:
            kind = "depthwise"
        elif kernel == 1 and groups == 1:
            kind = "pointwise"
        else:
            kind = "conv"
        self.add(kind, out, True, macs=_numel(out) * per_out, weight_elems=_numel(w), in_elems=_numel(x))

    def counted(self, fname, func, args, kwargs):
        """An operator without a closed form here: its MACs from ``counting_macs``."""
        import torch

        with counting_macs() as counted:
            out = func(*args, **kwargs)
        out0 = out[0] if isinstance(out, tuple) else out
        flat = [b for a in args for b in (a if isinstance(a, (list, tuple)) else (a,))]
        weights = sum(_numel(a) for a in flat if isinstance(a, torch.nn.Parameter))
        in_elems = sum(_numel(a) for a in flat) - weights
        self.add(_COUNTED[fname], out0, True, macs=counted(), weight_elems=weights, in_elems=in_elems)
        self.keep.append(out0)
        return out


def ops_from_module(model, input_shape=None, example_inputs=None) -> list[Op]:
    """Run one batch-1 forward with zeros (or on ``example_inputs``, a dict of keyword inputs) and
    record every operator's shapes.

    A TorchFunctionMode sees functional ops too (the residual ``x + y`` of MobileNetV2 lives in
    a ``forward``, not in a module); forward pre-hooks give each op its module's name.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    shape = tuple(input_shape) if input_shape is not None else getattr(model, "input_shape", None)
    tokens = dict(example_inputs) if example_inputs is not None else None
    if shape is None and tokens is None:
        raise ValueError("estimate: the model has no input_shape attribute; pass input_shape=(C, H, W)")
    trace = _OpTrace()

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return trace.call(func, args, kwargs or {})

    def _enter(name):
        def hook(module, args):
            trace.stack.append(name)  # returns None: a hook's return value would replace the input

        return hook

    def _leave(module, args, output):
        trace.stack.pop()  # returns None: a value here would replace the module's output

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(_enter(name)))
        handles.append(module.register_forward_hook(_leave))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        with torch.no_grad(), Recorder():
            if tokens is not None:
                model(**tokens)
            else:
                model(torch.zeros((1, *shape), dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return trace.ops


# ----------------------------------------------------------------------------- ONNX
_ONNX_FUSED = {
    "Relu",
    "Clip",
    "BatchNormalization",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "LeakyRelu",
    "QuantizeLinear",
    "DequantizeLinear",
    "Identity",
    "Dropout",
}
_ONNX_ELTWISE = {
    "Add",
    "Mul",
    "Sub",
    "Div",
    "Sum",
    "Concat",
    "Softmax",
    "QLinearAdd",
    "QLinearMul",
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "Gather",
    "QLinearConcat",
    "Relu",
    "Clip",
    "HardSwish",
}
# an exponential or tanh per element: "act" ops (a Sigmoid straight after a conv/linear, a
# squeeze-excite gate, is fused into it above; x * sigmoid(x) is one act op, as ONNX Runtime
# fuses it into QuickGelu)
_ONNX_ACT = {
    "Sigmoid",
    "QLinearSigmoid",
    "Tanh",
    "Erf",
    "Gelu",
    "FastGelu",
    "QuickGelu",
    "Exp",
    "Softplus",
    "Elu",
    "Selu",
    "Celu",
    "Mish",
}
_ONNX_POOLS = {
    "GlobalAveragePool",
    "AveragePool",
    "MaxPool",
    "GlobalMaxPool",
    "QLinearGlobalAveragePool",
    "QLinearAveragePool",
    "ReduceMean",
}
_ONNX_QUANT = {
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
}


def onnx_precision(path) -> str:
    """What an ONNX file computes in: "int8" (Q/DQ or QLinear ops), "fp16" (fp16 weights), else "fp32"."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return _onnx_precision(model)


def _onnx_precision(model) -> str:
    import onnx

    if any(n.op_type in _ONNX_QUANT for n in model.graph.node):
        return "int8"
    weights = [t for t in model.graph.initializer if len(t.dims) >= 2]
    if weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights):
        return "fp16"
    return "fp32"


def _fix_input_dims(graph, input_shape) -> None:
    """Dynamic input dims become 1 (batch) or come from ``input_shape`` (C, H, W), in place."""
    init_names = {t.name for t in graph.initializer}
    for inp in graph.input:
        if inp.name in init_names:
            continue
        dims = inp.type.tensor_type.shape.dim
        want = [1, *input_shape] if input_shape is not None else None
        for i, d in enumerate(dims):
            if want is not None and i < len(want):
                d.ClearField("dim_param")
                d.dim_value = int(want[i])
            elif not d.dim_value:
                d.ClearField("dim_param")
                d.dim_value = 1


def _onnx_shapes(model) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape: ONNX shape inference, one run of the model where that falls short."""
    graph = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    for t in graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
    outputs = [o for n in graph.node for o in n.output if o]
    if any(o not in shapes or 0 in shapes[o] for o in outputs):
        # data-dependent shapes (Shape -> Slice chains, e.g. an exported attention) defeat static
        # inference; one run of the model gives the exact ones
        shapes.update(_runtime_shapes(model, outputs))
    return shapes


@dataclasses.dataclass
class _OnnxGraph:
    """What the per-node readers of :func:`ops_from_onnx` look up."""

    shapes: dict[str, tuple[int, ...]]
    consts: dict[str, Any]
    producer: dict[str, Any]
    consumers: dict[str, list]

    def weight_shape(self, name: str):
        """Where a weight passes through DequantizeLinear (QDQ), follow it back to the initializer."""
        node = self.producer.get(name)
        while node is not None and node.op_type in ("DequantizeLinear", "Identity", "Transpose", "Cast"):
            name = node.input[0]
            node = self.producer.get(name)
        return self.shapes.get(name), name in self.consts

    def elems(self, name: str) -> int:
        s = self.shapes.get(name)
        return int(math.prod(s)) if s else 0


def _conv_op(g: _OnnxGraph, node, name: str) -> Op | None:
    t = node.op_type
    x_name, w_name = (node.input[0], node.input[3]) if t == "QLinearConv" else (node.input[0], node.input[1])
    w_shape, _ = g.weight_shape(w_name)
    out = node.output[0]
    groups = next((a.i for a in node.attribute if a.name == "group"), 1)
    if not w_shape:
        return None
    kernel = int(math.prod(w_shape[2:]))
    cin = g.shapes.get(x_name, (0, 0))[1] if len(g.shapes.get(x_name, ())) > 1 else 0
    if groups > 1 and groups == cin and w_shape[1] == 1:
        kind = "depthwise"
    elif kernel == 1 and groups == 1:
        kind = "pointwise"
    else:
        kind = "conv"
    return Op(
        name,
        kind,
        macs=g.elems(out) * int(w_shape[1]) * kernel,
        weight_elems=int(math.prod(w_shape)),
        in_elems=g.elems(x_name),
        out_elems=g.elems(out),
    )


def _matmul_op(g: _OnnxGraph, node, name: str) -> Op | None:
    t = node.op_type
    a_name, b_name = (node.input[0], node.input[3]) if t == "QLinearMatMul" else (node.input[0], node.input[1])
    a_shape = g.shapes.get(a_name)
    b_shape, b_const = g.weight_shape(b_name)
    out = node.output[0]
    if not a_shape or not b_shape:
        return None
    trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
    k = int(a_shape[0] if (t == "Gemm" and trans_a) else a_shape[-1])
    b_elems = int(math.prod(b_shape))
    return Op(
        name,
        "fc",
        macs=g.elems(out) * k,
        weight_elems=b_elems if b_const else 0,
        in_elems=g.elems(a_name) + (0 if b_const else b_elems),
        out_elems=g.elems(out),
    )


def _recurrent_op(g: _OnnxGraph, node, name: str) -> Op | None:
    """ONNX LSTM / GRU / RNN: every step's products with W [D, G H, I] and R [D, G H, H]."""
    x_shape = g.shapes.get(node.input[0])
    w_shape, _ = g.weight_shape(node.input[1])
    r_shape, _ = g.weight_shape(node.input[2])
    if not x_shape or not w_shape or not r_shape or len(x_shape) != 3 or len(w_shape) != 3 or len(r_shape) != 3:
        return None  # (a hand-made file's odd shapes: the op is left out, as one without shapes)
    steps = int(x_shape[0]) * int(x_shape[1])
    d, gh, i = (int(v) for v in w_shape)
    h = int(r_shape[-1])
    return Op(
        name,
        "fc",
        macs=steps * d * gh * (i + h),
        weight_elems=int(math.prod(w_shape) + math.prod(r_shape)),
        in_elems=g.elems(node.input[0]),
        out_elems=steps * d * h,
    )


def ops_from_onnx(path, input_shape=None) -> tuple[list[Op], str]:
    """Read an ONNX file's operators and their shapes (via ONNX shape inference).

    Returns the ops and the precision the file computes in (see :func:`onnx_precision`).
    Dynamic input dims become 1 (batch) or come from ``input_shape`` (C, H, W).
    """
    import onnx
    from onnx import shape_inference

    try:
        model = onnx.load(str(path))
        _fix_input_dims(model.graph, input_shape)
        model = shape_inference.infer_shapes(model)
        shapes = _onnx_shapes(model)
    except Exception as e:  # a truncated or hand-made file: protobuf's, onnx's or ORT's own errors
        raise UserError(
            f"{path}: not an ONNX model the estimator can read ({detail_line(e)[:200]}); export it again"
        ) from None
    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    g = _OnnxGraph(
        shapes,
        {t.name: t for t in graph.initializer},
        {o: n for n in graph.node for o in n.output},
        consumers,
    )
    file_precision = _onnx_precision(model)
    silu = _silu_muls(graph, consumers)
    fusable: set[str] = set()
    ops: list[Op] = []
    owner: dict[str, Op] = {}  # tensor name -> the op that produces it (fused followers included)
    owner_of_mul: dict[str, Op] = {}  # a SiLU's Mul output -> the act op its Sigmoid began
    for i, node in enumerate(graph.node):
        n_before = len(ops)
        name = node.name or f"{node.op_type}_{i}"
        t = node.op_type
        if t in ("Conv", "QLinearConv", "ConvInteger", "Gemm", "MatMul", "QLinearMatMul", "MatMulInteger"):
            op = (_conv_op if "Conv" in t else _matmul_op)(g, node, name)
            if op is None:
                continue
            ops.append(op)
            fusable.add(node.output[0])
        elif t in ("LSTM", "GRU", "RNN"):
            op = _recurrent_op(g, node, name)
            if op is not None:
                ops.append(op)
        elif t == "Sigmoid" and node.output and node.output[0] in silu:
            mul = silu[node.output[0]]
            ops.append(Op(name, "act", in_elems=g.elems(node.input[0]), out_elems=g.elems(mul.output[0])))
        elif t == "Mul" and node.output and node.output[0] in owner_of_mul:
            op = owner_of_mul.pop(node.output[0])
            op.names += [name, *node.output]
            owner.update(dict.fromkeys(node.output, op))
        elif _materialized_qdq(node, g.producer, g.consumers, g.consts, fusable):
            ops.append(Op(name, "eltwise", in_elems=g.elems(node.input[0]), out_elems=g.elems(node.output[0])))
        elif t in _ONNX_FUSED and node.input and node.input[0] in fusable:
            fusable.update(node.output)
            if node.input[0] in owner:
                owner[node.input[0]].names += [name, *node.output]
                owner.update(dict.fromkeys(node.output, owner[node.input[0]]))
        elif t in _ONNX_ACT and node.input and node.output:
            ops.append(Op(name, "act", in_elems=g.elems(node.input[0]), out_elems=g.elems(node.output[0])))
        elif t in _ONNX_POOLS:
            ops.append(Op(name, "pool", in_elems=g.elems(node.input[0]), out_elems=g.elems(node.output[0])))
        elif t in _ONNX_ELTWISE:
            ins = [n for n in node.input if n and n not in g.consts]
            ops.append(Op(name, "eltwise", in_elems=sum(g.elems(n) for n in ins), out_elems=g.elems(node.output[0])))
        # Shape plumbing (Reshape, Flatten, Shape, Gather, Q/DQ of activations) is free here:
        # runtimes fold it or it moves no more bytes than the op that consumes it.
        if len(ops) > n_before:
            ops[-1].names = [name, *node.output]
            owner.update(dict.fromkeys(node.output, ops[-1]))
            if t == "Sigmoid" and node.output and node.output[0] in silu:
                owner_of_mul[silu[node.output[0]].output[0]] = ops[-1]
    return ops, file_precision


def _silu_muls(graph, consumers) -> dict[str, Any]:
    """Sigmoid output name -> the Mul computing x * sigmoid(x) with it (SiLU / swish)."""
    out = {}
    for node in graph.node:
        if node.op_type != "Sigmoid" or not node.input or not node.output:
            continue
        for mul in consumers.get(node.output[0], []):
            if mul.op_type == "Mul" and mul.output and sorted(mul.input) == sorted([node.input[0], node.output[0]]):
                out[node.output[0]] = mul
                break
    return out


# Ops whose Q/DQ neighbours ONNX Runtime folds into a QLinear kernel (QLinearConv, QGemm,
# QLinearAdd, QLinearConcat, the QLinear pools; an activation fused onto a conv goes with it); a
# Q/DQ next to anything else (Sigmoid, the Mul of a squeeze-excite block, HardSigmoid) stays a
# real pass over the tensor, int8 <-> fp32.
# Data movement (Flatten, Reshape, Transpose, ...) passes int8 through, so its Q/DQ vanish too.
_QDQ_FOLDED = {
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Add",
    "Concat",
    "AveragePool",
    "GlobalAveragePool",
    "MaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Relu",  # a Q after Relu / Clip clamps to the same range: ONNX Runtime drops the pair
    "Clip",
}


def _materialized_qdq(node, producer, consumers, consts, fusable) -> bool:
    """True for an activation Q or DQ the runtime cannot fold (it costs a memory pass).

    Quantizing the graph input is left out like other plumbing (one pass over the input), so an
    int8 file and its module estimate alike; a DQ with several users is fine (ONNX Runtime gives
    each user its own copy before fusing).
    """
    if node.op_type == "DequantizeLinear" and node.input[0] not in consts:
        return any(u.op_type not in _QDQ_FOLDED for u in consumers.get(node.output[0], []))
    if node.op_type == "QuantizeLinear" and node.input[0] not in consts:
        src = producer.get(node.input[0])
        return src is not None and src.op_type not in _QDQ_FOLDED and node.input[0] not in fusable
    return False


def _runtime_shapes(model, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of ``names`` from one ONNX Runtime run on zeros ({} when ORT is not installed)."""
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return {}
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    known = {vi.name: vi for vi in probe.graph.value_info}
    for name in names:
        if name not in have:
            probe.graph.output.append(known[name] if name in known else onnx.ValueInfoProto(name=name))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    # no graph rewrites: the requested intermediate tensors must survive
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception:  # ORT rejects some graphs it cannot type; keep the static shapes then
        return {}
    kinds = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(int8)": np.int8,
        "tensor(uint8)": np.uint8,
    }
    feeds = {
        i.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in i.shape], kinds.get(i.type, np.float32))
        for i in sess.get_inputs()
    }
    out_names = [o.name for o in sess.get_outputs()]
    values = sess.run(out_names, feeds)
    return {n: tuple(int(d) for d in np.shape(v)) for n, v in zip(out_names, values)}


def calibration_report(models: dict[str, Any], target="rpi4", threads: int = 4) -> list[dict[str, Any]]:
    """Estimate each calibration model and compare with the published point.

    ``models`` maps ``"mobilenet_v2"``/``"mobilenet_v1"`` to an ``nn.Module`` (or ONNX path).
    Returns one row per (model, precision): estimate, published range, relative error against
    the nearest end of the range (0 inside it).
    """
    rows = []
    for (model_name, precision), (lo, hi) in CALIBRATION_POINTS.items():
        if model_name not in models:
            continue
        est = estimate(models[model_name], target, precision=precision, threads=threads)
        ms = est.total_ms
        ref = min(max(ms, lo), hi)
        rows.append(
            {
                "model": model_name,
                "precision": precision,
                "estimate_ms": round(ms, 3),
                "published_ms": [lo, hi],
                "rel_error": round((ms - ref) / ref, 4),
                "estimate": True,
            }
        )
    return rows


make_module_callable(__name__, estimate)  # ep.estimate is this module and its function: see edgeprune/_callable.py
