"""The writers named in ``formats.FORMATS`` for the TFLite formats.

Consumes: the source (nn.Module or QuantizedModel), example inputs and options (``io``:
"float" or "int8", ``sparse``: bool). Produces: an in-memory ``tflite_schema.Model`` that
``edgeprune.export`` stamps with metadata and serializes (``tflite_family.finish``).

Route: the model is exported with our ONNX exporter (batch 1, static shapes, BN folded for int8;
shared with the ONNX writers of the same ``export`` call) and that graph is lowered op by op
(``tflite_lower``). For int8 the lowering reads the QDQ graph ``quantize_onnx`` writes from the
QuantizedModel, so both int8 formats carry the same scales.
"""

from __future__ import annotations

import numpy as np

from .onnx_writers import _model_of, captured
from .tflite_lower import lower
from .tflite_schema import OP, Model, Operator
from .tflite_sparse import sparsify


def _batch1(example_inputs):
    return tuple(x[:1] for x in example_inputs)


def _float_module(source, example_inputs):
    """The module whose fp32 graph a TFLite file holds. Models of named inputs (transformers) are
    recorded with torch.export on the batch-1 example, as the quantizer captures them: their mask
    code then runs on static shapes instead of exporting as gathers and scatters TFLite lacks. A
    QuantizedModel captured that way gives its folded float graph."""
    from ..quant import QuantizedModel
    from . import NamedInputs

    if isinstance(source, NamedInputs):
        try:
            return source.graph(example_inputs)
        except Exception:  # not recordable: the exporters trace the forward itself
            return source.module
    if isinstance(source, QuantizedModel) and source.folded.meta.get("edgeprune_capture") == "export":
        return source.folded
    return _model_of(source)


def write_fp32(source, example_inputs, options):
    x = _batch1(example_inputs)
    model = lower(captured(options, _float_module(source, x), x, False))
    if options.get("sparse") is not False:  # None: the weights at >= 70 % zeros; True: every candidate
        sparsify(model, force=bool(options.get("sparse")))
    return model


def write_fp16(source, example_inputs, options):
    x = _batch1(example_inputs)
    return to_fp16(lower(captured(options, _float_module(source, x), x, False)))


def write_int8(source, example_inputs, options):
    qdq = captured(options, source.export_module(), _batch1(example_inputs), False, qsource=source)
    model = lower(qdq, io_int8=options.get("io", "float") == "int8")
    if options.get("sparse") is not False:  # as write_fp32: int8 weights stored sparse the same way
        sparsify(model, force=bool(options.get("sparse")))
    return model


def to_fp16(model: Model) -> Model:
    """fp16 copies of the float32 weights, each behind a DEQUANTIZE to float32 (compute stays fp32).

    The form GPU delegates read as fp16 weights; CPU kernels dequantize once at load.
    """
    model.merge_constants()  # a weight several operators read gets one fp16 copy
    consumers = {i for op in model.operators for i in op.inputs}
    first = []
    for idx, t in enumerate(list(model.tensors)):
        if t.buffer == 0 or t.dtype != 0 or idx not in consumers:  # float32 constants only
            continue
        value = model.value(idx)
        if value.size < 16:
            continue  # scalars and small vectors (eps, axes-like constants) stay fp32
        half = model.const(f"{t.name}_fp16", value.astype(np.float16))
        model.own_buffer(idx, b"")
        first.append((half, idx))
    model.operators[:0] = [Operator(OP.DEQUANTIZE, [h], [i], None, 3) for h, i in first]
    return model
