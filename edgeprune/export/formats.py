"""The table of export formats: name -> file name, precision, what it needs, who writes it.

Consumes: nothing (a constant table). Produces: ``FORMATS`` and ``get(name)`` for
``edgeprune.export.export`` and the CLI's ``--format`` choices. A new format is one row here
plus its writer function ``writer(source, example_inputs, options) -> onnx.ModelProto | bytes``
named as "module:function" (imported only when that format is requested).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str
    filename: str
    precision: str  # fp32 | fp16 | int8
    needs_quantized: bool  # requires a QuantizedModel (its scales)
    writer: str  # "module:function"
    description: str
    family: str = "onnx"  # the file format: onnx | tflite (what reads, checks and inspects the file)
    runtime: str = "onnxruntime"  # the runtime `bench` and the build's accuracy check run it with


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "onnx",
            "model.onnx",
            "fp32",
            False,
            "edgeprune.export.onnx_writers:write_fp32",
            "ONNX fp32, opset 17, for ONNX Runtime and TensorRT",
        ),
        Format(
            "onnx-fp16",
            "model.fp16.onnx",
            "fp16",
            False,
            "edgeprune.export.onnx_writers:write_fp16",
            "ONNX with fp16 weights and compute, fp32 I/O (TensorRT on fp16-only GPUs, e.g. Jetson Nano)",
        ),
        Format(
            "onnx-int8",
            "model.int8.onnx",
            "int8",
            True,
            "edgeprune.export.onnx_writers:write_int8",
            "ONNX int8 in QDQ form with the QuantizedModel's scales (ONNX Runtime, TensorRT)",
        ),
    )
}


def get(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown export format {name!r}; choose from {', '.join(FORMATS)}") from None


def names() -> list[str]:
    return list(FORMATS)


def of_family(family: str) -> list[str]:
    """The names of the formats whose files are of ``family`` (``onnx`` or ``tflite``)."""
    return [f.name for f in FORMATS.values() if f.family == family]
