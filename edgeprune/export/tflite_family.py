"""The TFLite file family: stamp, check, save, inspect and run ``.tflite`` files.

Consumes: a ``tflite_schema.Model`` from a TFLite writer, or a path to a ``.tflite`` file.
Produces: the serialized, checked bytes with our metadata (``finish``), the file (``save``), the
``inspect_tflite`` dict (``inspect``) and LiteRT (or tflite-runtime) outputs (``run``).

Layout: our writer stores rank-4 inputs and outputs NHWC (metadata ``layout: "nhwc"``); ``run``
takes and returns arrays in the model's PyTorch layout (NCHW) and transposes at the boundary,
so accuracy checks feed the same data to every family. Integer I/O (``--io int8``) is quantized
and dequantized with the file's own input/output parameters.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import UserError

METADATA_KEY = "edgeprune"


class TFLiteFileError(UserError):
    """A file that is not a readable TFLite model."""


def finish(model, props: dict) -> bytes:
    props = {k: v for k, v in props.items() if v is not None}
    props["edgeprune_layout"] = "nhwc"
    model.metadata[METADATA_KEY] = json.dumps(props, sort_keys=True).encode()
    # the writer's schema (the `tflite` package) is needed only to write: a device reads without it
    from .tflite_schema import serialize

    data = serialize(model)
    check(data)
    return data


def save(data: bytes, path: str | os.PathLike) -> None:
    Path(path).write_bytes(data)


def check(data: bytes) -> None:
    """Load the bytes in our runtime's validating reader, then in LiteRT's builtin kernels (when
    installed), so a broken file is never written. Ours goes first: where LiteRT's Prepare meets
    scales it cannot requantize with (a model whose activations vanish, so one int8 ADD input has a
    scale 2^50 times the other's), it aborts the whole process instead of returning an error."""
    _check_with_our_reader(data)
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        read_model(data, "<written model>")
        return
    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()


def _check_with_our_reader(data: bytes) -> None:
    """A UserError naming what our runtime's reader refuses in the file (ops it does not run are
    LiteRT's to judge). Without the compiled core (a wheel for another machine) there is no check."""
    try:
        from ..runtime import RuntimeModelError, UnsupportedModelError, core_module, load

        core_module()
    except Exception:  # the core does not load here: LiteRT still checks
        return
    try:
        load(data)
    except UnsupportedModelError:
        return
    except RuntimeModelError as e:
        what = str(e).removeprefix("<bytes>: ")
        if "requantization multiplier" in what:  # the model's scales, not the writer
            raise UserError(
                f"the int8 TFLite file of this model would be invalid ({what}); nothing was written. Scales that "
                "far apart come from activations that vanish (an untrained or degenerate model): calibrate on "
                "real data, or export fp32"
            ) from None
        raise RuntimeError(f"edgeprune wrote a TFLite file its own reader refuses: {what}") from None


def schema_module():
    """The generated TFLite schema classes: the `tflite` package on a host, or the same classes that
    LiteRT ships (a device install has LiteRT and not the writer's package)."""
    try:
        import tflite
    except ImportError:
        from ai_edge_litert import schema_py_generated as tflite
    return tflite


def read_model(data: bytes, where: str):
    """The root ``tflite.Model`` of ``data`` after the checks a reader needs before trusting it."""
    tflite = schema_module()

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TFLiteFileError(f"{where}: not a TFLite file (no TFL3 identifier); pass a .tflite written by a converter")
    try:
        m = tflite.Model.GetRootAs(data, 0)
        n = m.SubgraphsLength()
        if n < 1 or m.BuffersLength() < 1:
            raise ValueError("no subgraphs or buffers")
        for i in range(m.BuffersLength()):
            b = m.Buffers(i)
            if b.DataLength() and b.DataLength() > len(data):
                raise ValueError(f"buffer {i} runs past the end of the file")
        g = m.Subgraphs(0)
        g.TensorsLength()
        g.OperatorsLength()
    except TFLiteFileError:
        raise
    except Exception as e:
        raise corrupt(where, e) from None
    return m


# what the flatbuffers reader raises on offsets and lengths that do not fit the bytes, and json on bad metadata
READ_ERRORS = (struct.error, TypeError, IndexError, ValueError, OverflowError, UnicodeDecodeError, MemoryError)


def corrupt(where: str, e: Exception) -> TFLiteFileError:
    """The one-line error for a file whose tables do not hold together (one already said so is
    kept as it is: TFLiteFileError is a ValueError, which READ_ERRORS catches)."""
    if isinstance(e, TFLiteFileError):
        return e
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return TFLiteFileError(f"{where}: truncated or corrupt TFLite file ({text[:120]}); re-export it")


def metadata(path: str | os.PathLike) -> dict:
    """Our metadata dict stored in the file ({} for files from other converters)."""
    data = Path(path).read_bytes()
    m = read_model(data, str(path))
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        if md.Name() and md.Name().decode() == METADATA_KEY:
            raw = m.Buffers(md.Buffer()).DataAsNumpy()
            return json.loads(bytes(raw).decode())
    return {}


def inspect(path: str | os.PathLike, runtime: bool = False) -> dict:
    """The file's contents, sparse tensors and XNNPACK coverage (``runtime``: no runtime is asked yet)."""
    from .inspect_tflite import inspect_tflite

    try:
        return inspect_tflite(path)
    except READ_ERRORS as e:  # read_model checked the root; a deeper table can still point outside the file
        raise corrupt(str(path), e) from None


def interpreter(path: str | os.PathLike, threads: int = 1, runtime: str = "litert", builtin: bool = False):
    """A LiteRT (or tflite-runtime) interpreter on ``path`` with tensors allocated."""
    if runtime == "tflite-runtime":
        from tflite_runtime.interpreter import Interpreter

        it = Interpreter(model_path=str(path), num_threads=threads)
    else:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kind = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else OpResolverType.AUTO
        it = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    return it


def invoke(it, inputs) -> list[np.ndarray]:
    """Run an allocated interpreter on PyTorch-layout inputs; outputs in PyTorch layout."""
    for d, x in zip(it.get_input_details(), inputs):
        x = np.asarray(x)
        if x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        dtype = np.dtype(d["dtype"])
        scale, zp = d["quantization"]
        if dtype in (np.int8, np.uint8) and scale:
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zp, info.min, info.max)
        if list(x.shape) != list(d["shape"]):
            it.resize_tensor_input(d["index"], list(x.shape))
            it.allocate_tensors()
        it.set_tensor(d["index"], np.ascontiguousarray(x.astype(dtype)))
    it.invoke()
    outs = []
    for d in it.get_output_details():
        y = it.get_tensor(d["index"])
        scale, zp = d["quantization"]
        if y.dtype in (np.int8, np.uint8) and scale:
            y = (y.astype(np.float32) - zp) * scale
        outs.append(y.transpose(0, 3, 1, 2) if y.ndim == 4 else y)
    return outs


def run(path: str | os.PathLike, inputs, threads: int = 1, runtime: str = "litert", builtin: bool = False):
    """Outputs of the file for ``inputs`` (PyTorch layout, one array per input, batch 1 each call)."""
    it = interpreter(path, threads, runtime, builtin)
    return invoke(it, inputs)


class _Runner:
    """Batches of first-input arrays (PyTorch layout) -> first output, one item per invoke."""

    batch = 1

    def __init__(self, path, threads: int = 1):
        self.it = interpreter(path, threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([invoke(self.it, [x[i : i + 1]])[0] for i in range(len(x))])


def runner(path: str | os.PathLike) -> _Runner:
    """A callable mapping a batch of inputs to the first output (LiteRT; ImportError without it)."""
    return _Runner(path)
