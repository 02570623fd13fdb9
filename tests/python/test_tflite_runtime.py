"""The files we write load and give LiteRT's results in tflite-runtime 2.14.0 (the Pi package).

Consumes: ``build/tflite-runtime-venv`` (made by ``make``: tflite-runtime 2.14.0 needs numpy < 2,
so it lives in its own venv and runs in a subprocess), the test zoo, the demo CNN. Produces:
assertions that fp32, sparse, grouped-conv, transformer and int8 files give the same outputs in
tflite-runtime as in LiteRT (fp32 within 1e-5 relative, int8 within one output step).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest_quant import *  # noqa: E402,F403
from test_tflite import Padded, _prune_1x1_and_fc  # noqa: E402
from zoo import build  # noqa: E402

from edgeprune.export import export  # noqa: E402
from edgeprune.export.tflite_family import interpreter  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TFLRT = ROOT / "build" / "tflite-runtime-venv" / "bin" / "python"

RUNNER = """
import sys, numpy as np
from tflite_runtime.interpreter import Interpreter
path, n = sys.argv[1], int(sys.argv[2])
it = Interpreter(model_path=path, num_threads=1)
it.allocate_tensors()
for d, i in zip(it.get_input_details(), range(n)):
    it.set_tensor(d["index"], np.load(f"{path}.in{i}.npy"))
it.invoke()
for j, d in enumerate(it.get_output_details()):
    np.save(f"{path}.out{j}.npy", it.get_tensor(d["index"]))
"""

pytestmark = pytest.mark.skipif(
    not TFLRT.exists(), reason="no tflite-runtime venv (make build/tflite-runtime-venv/.deps; needs CPython <= 3.11)"
)


def _both(path, inputs):
    """(LiteRT outputs, tflite-runtime outputs) for raw inputs in the file's own layout and types."""
    it = interpreter(path)
    for i, (d, x) in enumerate(zip(it.get_input_details(), inputs)):
        x = np.ascontiguousarray(x.astype(d["dtype"]))
        it.set_tensor(d["index"], x)
        np.save(f"{path}.in{i}.npy", x)
    it.invoke()
    ref = [it.get_tensor(d["index"]) for d in it.get_output_details()]
    r = subprocess.run([str(TFLRT), "-c", RUNNER, str(path), str(len(inputs))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return ref, [np.load(f"{path}.out{j}.npy") for j in range(len(ref))]


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("name", ["mobilenet_v3", "resnext", "shufflenet_v2", "bert", "unet"])
def test_fp32_same_in_tflite_runtime(name, tmp_path):
    model, x = build(name)
    x = x[:1]
    path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    ref, got = _both(path, [_nhwc(x) if x.dim() == 4 else x.numpy()])
    assert np.abs(got[0] - ref[0]).max() <= 1e-5 * np.abs(ref[0]).max()


def test_sparse_and_int8_same_in_tflite_runtime(quantized, digits_xy, tmp_path):
    model, x = build("mobilenet_v2")
    model = _prune_1x1_and_fc(model, keep=0.2, block=4)
    path = export(model, tmp_path / "s", formats=["tflite"], example_inputs=(x[:1],))["tflite"]
    ref, got = _both(path, [_nhwc(x[:1])])
    assert np.abs(got[0] - ref[0]).max() <= 1e-5 * np.abs(ref[0]).max()
    qm = quantized("percentile")
    step = None
    for io in ("int8", "float"):
        path = export(qm, tmp_path / io, formats=["tflite-int8"], io=io)["tflite-int8"]
        xi = _nhwc(digits_xy[0][:1])
        if io == "int8":
            d = interpreter(path).get_input_details()[0]
            scale, zp = d["quantization"]
            xi = np.clip(np.round(xi / scale) + zp, -128, 127).astype(np.int8)
            step = interpreter(path).get_output_details()[0]["quantization"][0]
        ref, got = _both(path, [xi])
        # both XNNPACK builds requantize with their own rounding: at most one output step apart
        diff = np.abs(got[0].astype(np.float32) - ref[0].astype(np.float32)).max()
        assert diff <= (1 if io == "int8" else 1.001 * step), io
        assert got[0].argmax() == ref[0].argmax()
    # int8 1x1-conv weights stored sparse behind DENSIFY load and run in tflite-runtime 2.14 too
    import edgeprune as ep

    qs = ep.quantize(model, x, progress=False)
    path = export(qs, tmp_path / "s8", formats=["tflite-int8"], example_inputs=(x[:1],))["tflite-int8"]
    assert "DENSIFY" in {d["op_name"] for d in interpreter(path, builtin=True)._get_ops_details()}
    ref, got = _both(path, [_nhwc(x[:1])])
    # the two XNNPACK builds' own requantization rounding: a few output steps at most
    assert np.abs(got[0] - ref[0]).max() <= 0.02 * np.abs(ref[0]).max() and got[0].argmax() == ref[0].argmax()


def test_mirror_pad_fp32_and_int8_same_in_tflite_runtime(tmp_path):
    import edgeprune as ep

    torch.manual_seed(0)
    model = Padded("reflect").eval()
    x = torch.randn(1, 3, 8, 8)
    path = export(model, tmp_path / "f", formats=["tflite"], example_inputs=(x,))["tflite"]
    ref, got = _both(path, [_nhwc(x)])
    assert np.abs(got[0] - ref[0]).max() <= 1e-5 * np.abs(ref[0]).max()
    qm = ep.quantize(model, torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1)), progress=False)
    path = export(qm, tmp_path / "q", formats=["tflite-int8"], example_inputs=(x,))["tflite-int8"]
    step = qm.points[qm.layers["conv"]["output"]]["scale"]  # the conv's int8 output, dequantized at the end
    ref, got = _both(path, [_nhwc(x)])  # the quantizer's first point follows the pad: MIRROR_PAD runs in float
    assert np.abs(got[0] - ref[0]).max() <= 1.001 * step
