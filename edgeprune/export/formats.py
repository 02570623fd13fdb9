"""The table of export formats and of the file families they belong to.

Consumes: nothing (constant tables). Produces: ``FORMATS`` / ``get(name)`` for
``edgeprune.export.export`` and the CLI's ``--format`` choices, and ``FAMILIES`` /
``family_of(path)`` for everything that handles a written file by kind (bench, inspect, the
build's accuracy check).

A new format is one ``Format`` row plus its writer ``writer(source, example_inputs, options)``
named "module:function" (imported only when that format is requested). A new file family is one
``Family`` row plus a module with these functions (imported on first use):

- ``finish(artifact, props) -> artifact``: stamp the metadata dict ``props`` and check it;
- ``save(artifact, path)``: write the file (the caller makes it atomic);
- ``inspect(path) -> dict``: ops, params, size, precision coverage (what ``edgeprune inspect`` shows);
- ``run(path, inputs) -> list[np.ndarray]``: run the file on numpy inputs in the model's own
  (PyTorch) layout and return its outputs in that layout (accuracy checks, tests).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Family:
    name: str  # onnx | tflite
    suffix: str  # file suffix, with the dot
    runtime: str  # the runtime `bench` uses for these files by default
    module: str  # implements finish / save / inspect / run

    def impl(self):
        return importlib.import_module(self.module)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("onnx", ".onnx", "onnxruntime", "edgeprune.export.onnx_family"),
        Family("tflite", ".tflite", "litert", "edgeprune.export.tflite_family"),
    )
}


def family_of(path: str | os.PathLike) -> Family | None:
    """The family of a file by its suffix (``model.int8.tflite`` -> tflite), or None."""
    suffix = Path(path).suffix.lower()
    return next((f for f in FAMILIES.values() if f.suffix == suffix), None)


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

    @property
    def suffix(self) -> str:
        return FAMILIES[self.family].suffix

    @property
    def impl(self):
        """The family module: ``finish``, ``save``, ``inspect``, ``run`` (see the module docstring)."""
        return FAMILIES[self.family].impl()


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
        Format(
            "tflite",
            "model.tflite",
            "fp32",
            False,
            "edgeprune.export.tflite_writers:write_fp32",
            "TFLite fp32, NHWC input, for LiteRT / tflite-runtime (XNNPACK) and the edgeprune runtime",
            family="tflite",
            runtime="litert",
        ),
        Format(
            "tflite-fp16",
            "model.fp16.tflite",
            "fp16",
            False,
            "edgeprune.export.tflite_writers:write_fp16",
            "TFLite with fp16 weights and fp32 compute (GPU delegates read the weights as fp16)",
            family="tflite",
            runtime="litert",
        ),
        Format(
            "tflite-int8",
            "model.int8.tflite",
            "int8",
            True,
            "edgeprune.export.tflite_writers:write_int8",
            "TFLite full integer with the QuantizedModel's scales (int8 per-channel weights, float I/O)",
            family="tflite",
            runtime="litert",
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
