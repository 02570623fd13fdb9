"""Quantization settings and their per-target defaults.

Consumes: a method name, flags, and optionally a target (name, path or ``TargetProfile``).
Produces: a ``QuantConfig`` (frozen, JSON-serializable) that every later stage reads, so the
choice of activation dtype, symmetry, weight range and Q/DQ placement is made once.

Why per target (ONNX Runtime and TensorRT documentation):
- x86 without VNNI: the u8 x s8 multiply (vpmaddubsw) saturates int16 when both operands use
  their full range, so ONNX Runtime recommends 7-bit weights (``reduce_range``) and uint8
  activations there.
- x86 with AVX-512 VNNI: vpdpbusd accumulates u8 x s8 straight into int32: full-range weights,
  uint8 activations.
- ARM (NEON / dotprod): the TFLite int8 scheme: int8 activations, asymmetric per tensor.
- TensorRT (Jetson Orin): symmetric int8 activations (zero point 0) and Q/DQ only on the
  inputs of quantizable layers; TensorRT chooses output precision itself.
- Jetson Nano: the Maxwell GPU has no int8 path, so int8 is refused; fp16 ONNX instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UserError

METHODS = ("minmax", "percentile", "entropy", "mse")
PLACEMENTS = ("inputs_outputs", "inputs")
MAX_BINS = 1 << 20  # a histogram of this many float64 bins per observed tensor is 8 MB


class Int8UnsupportedError(UserError):
    """The target has no int8 execution path (e.g. Jetson Nano); the message names the alternative."""


@dataclass(frozen=True)
class QuantConfig:
    method: str = "percentile"
    per_channel: bool = True
    activation_dtype: str = "int8"  # "int8" or "uint8"
    symmetric_activations: bool = False
    reduce_range: bool = False  # 7-bit weights ([-63, 63]) for x86 without VNNI
    placement: str = "inputs_outputs"  # where activation Q/DQ go: see module docstring
    percentile: float = 99.99  # for method="percentile"
    bins: int = 2048  # histogram bins for percentile/entropy/mse
    target: str | None = None

    def __post_init__(self):
        # quant.json carries these fields back in, so each is checked for its type as well as its
        # value: a string "yes" must not pass as True, nor a float or a huge number as the bins
        for name in ("per_channel", "symmetric_activations", "reduce_range"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, not {getattr(self, name)!r:.40}")
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.activation_dtype not in ("int8", "uint8"):
            raise ValueError(f"activation_dtype must be 'int8' or 'uint8', not {self.activation_dtype!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {self.placement!r}")
        if self.symmetric_activations and self.activation_dtype != "int8":
            raise ValueError("symmetric activations need activation_dtype='int8' (zero point 0)")
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 50.0 < p <= 100.0:
            raise ValueError(f"percentile must be a number in (50, 100], not {p!r:.40}")
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or not 16 <= self.bins <= MAX_BINS:
            raise ValueError(f"bins must be an integer in [16, {MAX_BINS}], not {self.bins!r:.40}")
        if self.target is not None and not isinstance(self.target, str):
            raise ValueError(f"target must be a profile name or path, not {self.target!r:.40}")

    @property
    def weight_qmax(self) -> int:
        return 63 if self.reduce_range else 127

    @property
    def activation_range(self) -> tuple[int, int]:
        return (0, 255) if self.activation_dtype == "uint8" else (-128, 127)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _profile(target):
    """A TargetProfile from a name, a path or a profile (the loader belongs to edgeprune.targets)."""
    if target is None or not isinstance(target, (str, bytes)) and hasattr(target, "cpu"):
        return target
    from .. import targets  # a leaf module: allowed from any layer

    return targets.load(target)


def target_defaults(target) -> dict:
    """QuantConfig fields a target implies (empty for ``None``). Raises Int8UnsupportedError."""
    prof = _profile(target)
    if prof is None:
        return {}
    name = prof.name
    gpu = getattr(prof, "gpu", None)
    precision = str(getattr(prof.deploy, "precision", "int8"))
    if gpu is not None and getattr(gpu, "tensorrt", None):
        if getattr(gpu, "int8_tops", None) is None:
            raise Int8UnsupportedError(
                f"target {name} ({gpu.name}) has no int8 path; export fp16 instead "
                f"(--format onnx-fp16, formats=['onnx-fp16'])"
            )
        # TensorRT: symmetric activations, Q/DQ on layer inputs only.
        return {
            "activation_dtype": "int8",
            "symmetric_activations": True,
            "reduce_range": False,
            "placement": "inputs",
            "target": name,
        }
    formats = tuple(getattr(prof.deploy, "formats", ()) or ())
    if precision != "int8" and not any("int8" in f for f in formats):
        raise Int8UnsupportedError(
            f"target {name} deploys {precision} and lists no int8 format; export {precision} instead"
        )
    arch = str(prof.cpu.arch).lower()
    features = {str(f).lower() for f in (prof.cpu.features or ())}
    if arch in ("x86_64", "x86-64", "amd64", "x86"):
        vnni = any("vnni" in f for f in features)
        return {
            "activation_dtype": "uint8",
            "symmetric_activations": False,
            "reduce_range": not vnni,
            "placement": "inputs_outputs",
            "target": name,
        }
    # ARM and anything else: the TFLite int8 scheme.
    return {
        "activation_dtype": "int8",
        "symmetric_activations": False,
        "reduce_range": False,
        "placement": "inputs_outputs",
        "target": name,
    }


def make_config(method: str = "percentile", per_channel: bool = True, target=None, **overrides) -> QuantConfig:
    """Defaults < target defaults < explicit overrides."""
    fields = {"method": method, "per_channel": per_channel}
    fields.update(target_defaults(target))
    fields.update(overrides)
    return QuantConfig(**fields)
