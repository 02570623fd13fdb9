"""``export(model_or_quantized, out_dir, formats) -> {format: path}``, ``inspect_file(path)``,
``evaluate_file(path, dataset)``.

Consumes: an ``nn.Module``, a ``QuantizedModel``, or a directory written by ``ep.save`` /
``QuantizedModel.save``; the formats of ``formats.FORMATS``; optional example inputs, target,
dynamic batch, TFLite I/O precision and sparse weights. Produces: one checked file per format in
``out_dir`` (written atomically), each with its family's metadata (ONNX ``metadata_props``, a
TFLite ``edgeprune`` metadata entry): edgeprune version, format, precision, target, plan hash,
input spec, for int8 the quantization method and a hash of the scales, and with a target the
layers whose channel counts miss the target's SIMD multiple. Files are handled by family
(``formats.FAMILIES``), never by format name.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path

from .. import fsutil
from .._callable import make_module_callable
from .._version import __version__
from . import formats as _formats

# torch, the quantizer and onnx load on first use: `edgeprune bench model.tflite` on a device
# without torch reads the format table and the TFLite family only.
_LAZY = {"Int8UnsupportedError": ("..quant", "Int8UnsupportedError"), "inspect_onnx": (".inspect", "inspect_onnx")}


def __getattr__(name):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod, __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Int8UnsupportedError",
    "channel_alignment",
    "evaluate_file",
    "export",
    "inspect_file",
    "inspect_onnx",
    "load_source",
    "plan_hash",
]


def plan_hash(model) -> str | None:
    """The hash of the PrunePlan a model came from (attribute, saved metadata, or the plan itself)."""
    h = getattr(model, "edgeprune_plan_hash", None)
    if h:
        return str(h)
    meta = getattr(model, "edgeprune_metadata", None) or {}
    if meta.get("plan_hash"):
        return str(meta["plan_hash"])
    plan = getattr(model, "edgeprune_plan", None)
    if plan is None:
        return None
    plans = plan if isinstance(plan, (list, tuple)) else [plan]
    d = [p.to_dict() if hasattr(p, "to_dict") else p for p in plans]
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def channel_alignment(model, target) -> dict | None:
    """Layers whose output channels are not a multiple of the target's ``deploy.channel_multiple``.

    SIMD and tensor-core kernels (TensorRT int8 wants 16, NEON/AVX2 8) pad misaligned channels,
    so they cost as much as the next multiple. The model's last layer (its outputs are the
    classes) is exempt.
    """
    if target is None:
        return None
    import torch

    from .. import targets

    prof = targets.load(target) if isinstance(target, (str, os.PathLike)) else target
    mult = int(getattr(prof.deploy, "channel_multiple", 1) or 1)
    layers = [
        (n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))
    ]
    misaligned = []
    for name, m in layers[:-1]:
        c = m.out_features if isinstance(m, torch.nn.Linear) else m.out_channels
        if c % mult:
            misaligned.append({"layer": name, "channels": int(c)})
    return {"multiple": mult, "misaligned": misaligned}


def load_source(path, trust_code: bool = False):
    """A QuantizedModel (directory with quant.json) or a model (directory written by ep.save or by
    ``save_pretrained``).

    ``trust_code`` as in ``ep.load``: a directory naming a factory outside the registry is refused without it.
    """
    from ..quant import QuantizedModel

    p = Path(path)
    if (p / "quant.json").is_file():
        return QuantizedModel.load(p, trust_code=trust_code)
    from ..models.hf_dir import is_hf_dir, load_hf_dir

    if is_hf_dir(p):  # save_pretrained output
        return load_hf_dir(p, trust_code=trust_code)
    from ..io import load

    return load(p, trust_code=trust_code)


def _example_inputs(source, example_inputs) -> tuple[tuple, list | None]:
    """(the example tensors in the order the files take them, their names or None). Names come from
    a QuantizedModel of named inputs, or from a dict / ``BatchEncoding`` given for a plain model
    (ordered as its ``forward`` declares them)."""
    names = getattr(source, "input_names", None)
    if names:  # a quantized model of named inputs: its forward order, or the calibration sample
        if example_inputs is None:
            return source.example_inputs(), names
        from ..quant.inputs import bind

        args = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        return bind(names, tuple(args), {}, "example_inputs"), names
    if example_inputs is not None and hasattr(example_inputs, "keys") and hasattr(example_inputs, "items"):
        return _named_example(source, example_inputs)
    if example_inputs is not None:
        inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        return inputs, None
    shape = getattr(source, "input_shape", None) or getattr(getattr(source, "original", None), "input_shape", None)
    if not shape:
        recorded = _plan_example(getattr(source, "original", source))
        if recorded is not None:
            return recorded
        from ..models.hf_dir import example_inputs as hf_example

        tokens = hf_example(source) if hasattr(source, "config") else None
        if tokens is not None:  # a transformers token model: ids and a mask from its config
            return _named_example(source, tokens)
        raise ValueError(
            "the model records no input shape (no input_shape attribute, no prune plan): pass example_inputs "
            "to ep.export, or save the model with ep.save after pruning it with a plan (which records its inputs)"
        )
    import torch

    gen = torch.Generator().manual_seed(0)
    return (torch.randn(1, *shape, generator=gen),), None


def _plan_example(model):
    """Example inputs rebuilt from the input specs a pruned model's last plan recorded (shapes,
    dtypes and names of the inputs it was traced with; batch 1): a model directory of ``ep.save``
    exports with no example. None when the model carries no plan or the plan no inputs."""
    import torch.nn as nn

    from ..graph.groups import inputs_and_kwargs_from_specs

    plans = getattr(model, "edgeprune_plan", None) if isinstance(model, nn.Module) else None
    plan = plans[-1] if isinstance(plans, (list, tuple)) and plans else plans
    specs = getattr(plan, "inputs", None)
    if not specs:
        return None
    args, kwargs = inputs_and_kwargs_from_specs(specs)
    if args and kwargs:
        return None
    if kwargs:
        return _named_example(model, {k: v[:1] for k, v in kwargs.items()})
    return tuple(a[:1] for a in args), None


def _named_example(model, example: dict) -> tuple[tuple, list]:
    """A dict of example tensors for a plain model: its tensors in ``forward``'s parameter order
    (names it does not declare, taken by ``**kwargs``, after them in the dict's order)."""
    import torch

    from ..prune.hf import is_hf
    from ..quant.inputs import _takes_kwargs, parameter_names

    items = {k: v for k, v in example.items() if v is not None}
    bad = [k for k, v in items.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"example_inputs[{bad[0]!r}] is a {type(items[bad[0]]).__name__}; pass tensors")
    params = parameter_names(model)
    unknown = [k for k in items if k not in params]
    # transformers' **kwargs carry flags, never tensors: a tensor by another name is a typo there
    if unknown and (is_hf(model) or not _takes_kwargs(model)):
        raise ValueError(
            f"example_inputs[{unknown[0]!r}]: {type(model).__name__}.forward takes no such input; "
            f"its inputs are {', '.join(params)}"
        )
    names = [p for p in params if p in items] + [k for k in items if k not in params]
    return tuple(items[n] for n in names), names


class NamedInputs:
    """Marks a plain model whose files take named inputs: ``model(**dict(zip(names, xs)))`` as a
    module of positional tensors (``module``), what the exporters trace. ``model`` is the user's."""

    def __init__(self, model, names: list):
        import torch.nn as nn

        from ..quant.inputs import fixed_flags

        self.model, self.names = model, list(names)
        fixed = fixed_flags(model)

        class _Positional(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, *xs):
                return self.inner(**dict(zip(names, xs)), **fixed)

        self.module = _Positional(model)
        # the wrapper's own flag follows the model: exporters restore the mode they found, and a
        # new module is in training mode, which would put the user's model in it
        self.module.training = model.training
        self._graphs: dict = {}

    def graph(self, example: tuple):
        """The model recorded on ``example`` (torch.export, mask code run on the example's shapes) as a
        GraphModule of positional inputs, once per shape: the fp32 graph TFLite files hold."""
        from ..quant.quantize import _export_capture

        key = tuple(tuple(x.shape) for x in example)
        if key not in self._graphs:
            self._graphs[key] = _export_capture(self.model, example, self.names)
        return self._graphs[key]


def _target_name(target, source):
    if target is None:
        cfg = getattr(source, "config", None)
        return getattr(cfg, "target", None)
    return target if isinstance(target, str) else getattr(target, "name", str(target))


def export(
    model_or_quantized,
    out_dir,
    formats=("onnx", "onnx-int8"),
    example_inputs=None,
    target=None,
    dynamic_batch: bool = False,
    opset: int = 17,
    io: str = "float",
    sparse: bool | None = None,
) -> dict[str, Path]:
    """Write one file per format; returns {format: path}.

    ``io`` ("float" or "int8") is the I/O precision of the int8 TFLite file (float: a QUANTIZE
    and DEQUANTIZE at the ends). ``sparse``: store the fp32 weights of 1x1 convs and FC layers of
    TFLite files in TFLite's sparse encoding behind DENSIFY; None (default) does so for the
    tensors at >= 70 % zeros (pruning masks), False never.
    """
    from ..quant import QuantizedModel

    source = model_or_quantized
    if isinstance(source, (str, os.PathLike)):
        source = load_source(source)
    if isinstance(formats, str):
        formats = [formats]
    fmts = [_formats.get(f) for f in formats]
    quantized = isinstance(source, QuantizedModel)
    _check_request(source, fmts, quantized, target, opset, io, dynamic_batch)
    inputs, names = _example_inputs(source, example_inputs)
    model = source.original if quantized else source
    input_spec = _input_spec(inputs, dynamic_batch, names)
    writer_source = NamedInputs(source, names) if names and not quantized else source
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    captures: dict = {}  # one ONNX capture per model for every format of this call
    for f in fmts:
        mod_name, fn_name = f.writer.split(":")
        writer = getattr(importlib.import_module(mod_name), fn_name)
        options = {
            "dynamic_batch": dynamic_batch,
            "opset": opset,
            "io": io,
            "sparse": sparse,
            "captures": captures,
            "input_names": names,
        }
        artifact = writer(writer_source, inputs, options)
        props = _file_props(f, source, model, target, _target_name(target, source), input_spec)
        family = f.impl
        artifact = family.finish(artifact, props)
        path = out / f.filename
        with fsutil.atomic_path(path) as tmp:
            family.save(artifact, tmp)
        paths[f.name] = path
    return paths


# the opsets the exporters are tested with (the int8 graphs' QDQ patterns change past 23)
MIN_OPSET, MAX_OPSET = 17, 23


def _check_request(source, fmts, quantized: bool, target, opset: int, io: str, dynamic_batch: bool = False) -> None:
    """Raise before writing anything when a format, the target, the opset or ``io`` cannot be honoured."""
    from ..quant import target_defaults

    for f in fmts:
        if f.needs_quantized and not quantized:
            raise ValueError(
                f"format {f.name} needs a QuantizedModel (its scales): run ep.quantize(model, "
                "calib_data) / `edgeprune quantize` first and export that"
            )
        if f.precision == "int8" and target is not None:
            target_defaults(target)  # raises Int8UnsupportedError for fp16-only targets (Jetson Nano)
    if quantized and target is not None and source.config.target not in (None, _target_name(target, None)):
        raise ValueError(
            f"the QuantizedModel was calibrated for target {source.config.target}, not "
            f"{_target_name(target, None)}; quantize again with --target {_target_name(target, None)}"
        )
    if quantized and source.folded.meta.get("edgeprune_capture") == "export" and dynamic_batch:
        raise ValueError(
            "dynamic_batch: this QuantizedModel's graph was captured by torch.export at batch 1 "
            "(its forward is not fx-traceable), so its int8 files have batch 1; export without dynamic_batch"
        )
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset {opset}: edgeprune writes opsets {MIN_OPSET} to {MAX_OPSET}")
    if io not in ("float", "int8"):
        raise ValueError(f"io {io!r}: choose float or int8")


def _input_spec(inputs, dynamic_batch: bool, names: list | None = None) -> list[dict]:
    """Name, shape (a symbolic ``batch`` when dynamic) and dtype of each input, as the files record them."""
    return [
        {
            "name": names[i] if names else "input" if len(inputs) == 1 else f"input_{i}",
            "shape": (["batch"] if dynamic_batch else [int(x.shape[0])]) + [int(s) for s in x.shape[1:]],
            "dtype": str(x.dtype).replace("torch.", ""),
        }
        for i, x in enumerate(inputs)
    ]


def _file_props(f, source, model, target, target_name, input_spec) -> dict:
    """The ``edgeprune_*`` metadata written into a file of format ``f``."""
    props = {
        "edgeprune_version": __version__,
        "edgeprune_format": f.name,
        "edgeprune_precision": f.precision,
        "edgeprune_target": target_name,
        "edgeprune_plan_hash": plan_hash(model),
        "edgeprune_spec": getattr(model, "edgeprune_spec", None),
        "edgeprune_input": input_spec,
    }
    align = channel_alignment(model, target)
    if align is not None:
        props["edgeprune_channel_alignment"] = align
    if f.precision == "int8":
        from .onnx import file_activation_dtype, file_weight_dtype

        props["edgeprune_quant"] = {
            "method": source.config.method,
            "scales_hash": source.scales_hash(),
            # ONNX files without a target carry uint8 activations (what ONNX Runtime fuses on x86);
            # TFLite's full-integer files are int8 throughout
            "activation_dtype": file_activation_dtype(source) if f.family == "onnx" else "int8",
            # and, without a target, uint8 weights at zero point 128 (exact in ONNX Runtime without VNNI)
            "weight_dtype": file_weight_dtype(source) if f.family == "onnx" else "int8",
            "symmetric_activations": source.config.symmetric_activations,
            "placement": source.config.placement,
        }
    return props


def inspect_file(path, runtime: bool = False) -> dict:
    """What is in an exported file (ops, params, size, int8 coverage), by its family; ``runtime``
    also asks the family's runtime what it really runs (ONNX Runtime's kernels)."""
    family = _formats.family_of(path)
    if family is None:
        names = ", ".join(f.suffix for f in _formats.FAMILIES.values())
        raise ValueError(f"{path}: unknown file kind; pass one of {names}")
    return family.impl().inspect(path, runtime=runtime)


def evaluate_file(path, dataset, limit: int = 2000) -> float | None:
    """Top-1 accuracy of an exported file on ``dataset`` (items ``(x, label)``) in its family's runtime.

    None when there is no dataset or the family's runtime is not installed. ONNX files run in
    batches of their batch size; TFLite files (batch 1, NHWC) one item at a time.
    """
    if dataset is None:
        return None
    import numpy as np

    family = _formats.family_of(path)
    if family is None:
        raise ValueError(f"{path}: unknown file kind; cannot evaluate it")
    impl = family.impl()
    try:
        runner = impl.runner(path)
    except ImportError:
        return None
    n = min(len(dataset), limit)
    correct = 0
    for start in range(0, n, runner.batch):
        items = [dataset[i] for i in range(start, min(start + runner.batch, n))]
        x = np.stack([np.asarray(it[0], dtype=np.float32) for it in items])
        y = np.array([int(it[1]) for it in items])
        correct += int((runner(x).argmax(1) == y).sum())
    return correct / max(n, 1)


make_module_callable(__name__, export)  # ep.export is this package and its function: see edgeprune/_callable.py
