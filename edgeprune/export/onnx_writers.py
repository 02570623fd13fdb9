"""The writers named in ``formats.FORMATS`` for the ONNX formats.

Consumes: the source (nn.Module or QuantizedModel), example inputs and options
(``dynamic_batch``, ``opset``). Produces: a checked ``onnx.ModelProto``.
"""

from __future__ import annotations

from .onnx import DEFAULT_OPSET, quantize_onnx, to_fp16, torch_to_onnx


def _model_of(source):
    return getattr(source, "original", source)


def write_fp32(source, example_inputs, options):
    return torch_to_onnx(
        _model_of(source), example_inputs, options.get("dynamic_batch", False), options.get("opset", DEFAULT_OPSET)
    )


def write_fp16(source, example_inputs, options):
    return to_fp16(write_fp32(source, example_inputs, options))


def write_int8(source, example_inputs, options):
    fp32 = torch_to_onnx(
        source.folded, example_inputs, options.get("dynamic_batch", False), options.get("opset", DEFAULT_OPSET)
    )
    return quantize_onnx(fp32, source)
