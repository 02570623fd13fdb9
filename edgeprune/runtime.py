"""edgeprune's own model runtime from Python: load a float32 ``.tflite`` file, or a
``model.int8.tflite`` with float I/O (int8 inside, TFLite's integer arithmetic), and run it on the
compiled kernels (dense GEMM, and the sparse kernels for layers whose weights are mostly zeros).

Consumes: a ``.tflite`` path (or its bytes) and numpy inputs in the model's shapes and types (float32
data; int32/int64 token ids and bool masks for transformer encoders).
Produces: a callable ``RuntimeModel``; calling it returns a list of numpy arrays, one per model
output. A corrupt or inconsistent file raises ``RuntimeModelError`` (a ``UserError``) naming what is
wrong; a valid file using an operator or type the runtime does not run raises
``UnsupportedModelError`` (also a ``UserError``).

    m = edgeprune.runtime.load("model.tflite", threads=1)
    (logits,) = m(x)                      # x: numpy float32 in m.inputs[0]["shape"]
    m.profile(runs=10)                    # [(kind, label, ms per run)] per operator
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.errors import UserError

__all__ = ["RuntimeModel", "RuntimeModelError", "UnsupportedModelError", "load"]


class RuntimeModelError(UserError):
    """The file is not a valid .tflite model (the message names the tensor or operator)."""


class UnsupportedModelError(UserError):
    """A valid .tflite file that uses an operator or type this runtime does not run."""


class RuntimeModel:
    """One loaded model with one execution context (one per thread; see the README's C API notes)."""

    def __init__(self, core, source: str):
        self._core = core
        self.source = source
        # Read once: the compiled side builds new dicts on every read of ``inputs``, which cost
        # more than running a small model.
        self._inputs = list(core.inputs)
        self._dtypes = tuple(np.dtype(i["dtype"]) for i in self._inputs)

    @property
    def inputs(self) -> list[dict]:
        """Per input: name, shape, dtype, scale, zero_point."""
        return list(self._core.inputs)

    @property
    def outputs(self) -> list[dict]:
        return list(self._core.outputs)

    @property
    def isa(self) -> str:
        """The kernel path the operators run ("avx512", "neon", ...)."""
        return self._core.isa

    @property
    def operators(self) -> list[tuple[str, str]]:
        """(kind, label) per operator in execution order, as planned at load: the label says
        ``int8`` for the integer tier, ``sparse`` for sparse kernels, ``nchw`` for channel-major."""
        return [tuple(o) for o in self._core.operators]

    @property
    def arena_bytes(self) -> int:
        """Bytes of the activation arena one context holds (lifetime-planned)."""
        return int(self._core.arena_bytes)

    @property
    def op_threads(self) -> list[int]:
        """Per operator in execution order, the threads it runs with. With ``threads`` > 1 the
        first calls time every operator split and on one thread, and each keeps the faster (see
        ``tuning``): splitting does not pay for every operator, and threads must never make a
        model slower. Until then every entry is ``threads``."""
        return list(self._core.op_threads)

    @property
    def tuning(self) -> bool:
        """True while the first calls still time each operator both ways (``op_threads``)."""
        return bool(self._core.tuning)

    def set_threads(self, threads: int) -> None:
        """Change the thread count; the per-operator choice (``op_threads``) is made again."""
        self._core.set_threads(int(threads))

    def __call__(self, *inputs) -> list[np.ndarray]:
        # Arrays already in the model's types go to the compiled side as they are (it checks
        # their shapes); anything else is checked and converted here first.
        arrays = inputs
        if len(inputs) != len(self._dtypes):
            arrays = self._converted(inputs)
        else:
            for x, want in zip(inputs, self._dtypes):
                if type(x) is not np.ndarray or x.dtype != want or not x.flags.c_contiguous:
                    arrays = self._converted(inputs)
                    break
        try:
            return list(self._core.run(arrays))
        except ValueError as e:
            raise UserError(f"{self.source}: {e}") from None

    def _converted(self, inputs) -> list[np.ndarray]:
        """The inputs as C-contiguous arrays of the model's types, or a UserError saying what to fix."""
        if len(inputs) != len(self._inputs):
            raise UserError(f"{self.source}: the model takes {len(self._inputs)} inputs (got {len(inputs)})")
        for k, (x, i) in enumerate(zip(inputs, self._inputs)):
            if i["dtype"] == "int8" and np.issubdtype(np.asarray(x).dtype, np.floating):
                s, z = (i["scale"] or [1.0])[0], (i["zero_point"] or [0])[0]
                raise UserError(
                    f"{self.source}: input {k} ('{i['name']}') is int8 at scale {s:g}, zero point {z}; "
                    f"quantize the data first: clip(round(x / {s:g}) + {z}, -128, 127) as int8"
                )
        return [np.ascontiguousarray(x, dtype=d) for x, d in zip(inputs, self._dtypes)]

    def profile(self, runs: int = 10, inputs=None) -> list[tuple[str, str, float]]:
        """Runs the model ``runs`` times with per-operator timers; returns (kind, label, mean ms)
        per operator in execution order. ``inputs`` defaults to standard-normal arrays."""
        if inputs is None:
            rng = np.random.default_rng(0)
            inputs = [example_input(rng, i) for i in self.inputs]
        for _ in range(16):  # the tuning runs first (their operators alternate thread counts)
            if not self._core.tuning:
                break
            self(*inputs)
        self._core.set_profiling(True)
        try:
            for _ in range(max(1, int(runs))):
                self(*inputs)
            return [(k, lbl, float(ms)) for k, lbl, ms in self._core.profile()]
        finally:
            self._core.set_profiling(False)


def core_module():
    """The compiled core, or a UserError saying which wheel this machine needs (a wheel built for
    another architecture installs its module under a name this Python never imports)."""
    try:
        from edgeprune import _core
    except ImportError as e:
        import platform

        machine = platform.machine()
        raise UserError(
            f"edgeprune's compiled core does not load on this {machine} machine ({e}); install the wheel built "
            f"for it: pip install edgeprune-*-manylinux_2_35_{machine}.whl (make wheels), or build the sdist here"
        ) from None
    return _core


def load(path_or_bytes, threads: int = 1, isa: str | None = None, sparse: bool = True) -> RuntimeModel:
    """Load a .tflite file (path or bytes). ``isa`` forces a kernel path ("reference", "avx2",
    ...; default: the process choice), ``sparse=False`` runs every layer dense."""
    _core = core_module()

    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data, source = bytes(path_or_bytes), "<bytes>"
    else:
        p = Path(path_or_bytes)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise RuntimeModelError(f"cannot read {p}: {e.strerror}; pass the path of a .tflite file") from None
        source = str(p)
    try:
        core = _core.RuntimeModel(data, threads=int(threads), isa=isa or "", sparse=bool(sparse))
    except _core.InvalidModel as e:
        hint = "" if "re-export the model" in str(e) else "; re-export the model (edgeprune export)"
        raise RuntimeModelError(f"{source}: {e}{hint}") from None
    except _core.UnsupportedModel as e:
        raise UnsupportedModelError(f"{source}: {e}; run it with LiteRT instead (--runtime litert)") from None
    except ValueError as e:
        raise UserError(f"{source}: {e}") from None
    return RuntimeModel(core, source)


def example_input(rng, info: dict) -> np.ndarray:
    """An input for timing and profiling, for one entry of ``RuntimeModel.inputs``: standard normal
    floats (for an int8 input, quantized at its scale); ones for integer and bool inputs (token id
    1 exists in any vocabulary, and a mask of ones attends to every token)."""
    dtype = np.dtype(info["dtype"])
    if dtype == np.float32:
        return rng.standard_normal(info["shape"]).astype(np.float32)
    if dtype == np.int8 and info.get("scale"):
        x = rng.standard_normal(info["shape"]) / info["scale"][0] + info["zero_point"][0]
        return np.clip(np.round(x), -128, 127).astype(np.int8)
    return np.ones(info["shape"], dtype)
