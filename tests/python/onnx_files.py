"""Test helper: small ONNX files written without edgeprune's exporter, as a third party would write them.

Consumes: a torch module with an example input, or an fp32 ONNX file with calibration feeds.
Produces: ``torch_onnx`` (torch's own ONNX export, opset 17, input named ``x``) and
``ort_int8_qdq`` (ONNX Runtime's own static int8 quantization of a file: QDQ, per-channel int8
weights). Not a product API: tests only.
"""

from __future__ import annotations

from pathlib import Path

import torch


def torch_onnx(model, x: torch.Tensor, path: Path, dynamic_batch: bool = False) -> Path:
    """``torch.onnx.export`` of ``model`` on ``x`` (TorchScript exporter, opset 17) to ``path``;
    the input is named ``x`` and, with ``dynamic_batch``, its first dim is a free ``batch``."""
    dynamic_axes = {"x": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"], dynamic_axes=dynamic_axes
    )
    return path


# The same quantize_static call as _ort_quantize_static in benchmarks/int8.py on purpose: that one
# makes the benchmark's ORT baseline (pre-processed graph, its own calibration data) and tests do not
# import benchmarks/, so each keeps its own.
def ort_int8_qdq(fp32: Path, out: Path, feeds: list[dict], activation_type) -> Path:
    """ONNX Runtime's ``quantize_static`` of ``fp32`` into ``out`` (QDQ, per-channel int8 weights,
    activations of ``activation_type``), calibrated on ``feeds`` (input name -> array) in order."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=activation_type,
    )
    return out
