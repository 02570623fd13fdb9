"""The writers named in ``formats.FORMATS`` for the ONNX formats, and the capture they share.

Consumes: the source (nn.Module or QuantizedModel), example inputs and options
(``dynamic_batch``, ``opset``, ``input_names`` of a model of named inputs, ``captures``: a dict
``export`` passes to every writer of one call).
Produces: a checked ``onnx.ModelProto``; ``captured`` gives the fp32 or QDQ ONNX graph of a model,
traced once per export call however many formats (ONNX and TFLite) are written from it.
"""

from __future__ import annotations

import onnx

from .onnx import DEFAULT_OPSET, file_weight_dtype, quantize_onnx, to_fp16, torch_to_onnx, weights_as_uint8
from .onnx_align import align_channels
from .onnx_hardswish import split_hardswish


def _model_of(source):
    """The float module a source's files are traced from: a QuantizedModel's original, the
    positional wrapper of a model of named inputs (``export.NamedInputs``), or the model."""
    from ..quant import QuantizedModel
    from . import NamedInputs

    if isinstance(source, NamedInputs):
        return source.module
    return source.original if isinstance(source, QuantizedModel) else source


def captured(options, model, example_inputs, dynamic: bool, qsource=None) -> onnx.ModelProto:
    """A private copy of the ONNX graph of ``model`` (QDQ with ``qsource``'s scales when given)."""
    cache = options.get("captures")
    if cache is None:
        cache = {}
    names = options.get("input_names")
    key = (id(model), dynamic, id(qsource), tuple(tuple(x.shape) for x in example_inputs), tuple(names or ()))
    if key not in cache:
        proto = torch_to_onnx(model, example_inputs, dynamic, options.get("opset", DEFAULT_OPSET), names)
        cache[key] = quantize_onnx(proto, qsource) if qsource is not None else proto
    out = onnx.ModelProto()
    out.CopyFrom(cache[key])
    return out


def write_fp32(source, example_inputs, options):
    return captured(options, _model_of(source), example_inputs, options.get("dynamic_batch", False))


def write_fp16(source, example_inputs, options):
    return to_fp16(write_fp32(source, example_inputs, options))


def write_int8(source, example_inputs, options):
    proto = captured(
        options, source.export_module(), example_inputs, options.get("dynamic_batch", False), qsource=source
    )
    if for_ort_on_x86(source.config):
        proto = align_channels(proto)
    if source.gated_hardswish_nodes():  # the twin's HardSwish arithmetic, as int8 kernels ORT has
        proto = split_hardswish(proto)
    if file_weight_dtype(source) == "uint8":  # last: the padding above adds int8 zero channels
        proto = weights_as_uint8(proto)
    return proto


def for_ort_on_x86(config) -> bool:
    """Whether an int8 file is meant for ONNX Runtime on x86, whose int8 kernels want aligned widths
    (``onnx_align``): the ONNX Runtime placement, for no target (a file for any host is written in
    the form x86 wants, as ``onnx.file_activation_dtype`` does) or an x86 target. ARM64's kernels
    have other widths and were not measured here, so ARM files keep the model's own."""
    if config.placement != "inputs_outputs":
        return False
    if config.target is None:
        return True
    from .. import targets
    from ..errors import UserError

    try:
        return targets.load(config.target).cpu.arch == "x86_64"
    except UserError:  # a custom profile that is not on this machine: keep the model's widths
        return False
