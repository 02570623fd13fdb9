"""int8 quantization: ``quantize(model, calib_data, method, per_channel, target) -> QuantizedModel``.

Consumes: an nn.Module and calibration data. Produces: a QuantizedModel (BN folded, scales as
JSON, a fake-quant torch module) that ``edgeprune.export`` writes as QDQ ONNX. See quantize.py.
"""

from __future__ import annotations

from .config import METHODS, Int8UnsupportedError, QuantConfig, make_config, target_defaults
from .qat import qat
from .quantize import CalibrationError, QuantizedModel, QuantizeError, analyze, fold_bn, quantize

__all__ = [
    "METHODS",
    "CalibrationError",
    "Int8UnsupportedError",
    "QuantConfig",
    "QuantizeError",
    "QuantizedModel",
    "analyze",
    "fold_bn",
    "make_config",
    "qat",
    "quantize",
    "target_defaults",
]
