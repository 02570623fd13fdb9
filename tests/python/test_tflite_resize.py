"""Upsampling through the TFLite writer and our runtime: nn.Upsample / F.interpolate (nearest,
nearest-exact, bilinear with and without align_corners, up and down) as RESIZE_NEAREST_NEIGHBOR /
RESIZE_BILINEAR.

Consumes: small conv nets written here (a segmentation head's or a YOLO neck's upsampling between
convolutions), LiteRT, our runtime. Produces: assertions that fp32 files match torch within 1e-4
relative in LiteRT (XNNPACK and builtin) and on our runtime, that an int8 file runs on our runtime
equal to LiteRT's reference kernels, and that a mode TFLite lacks is refused by name.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import edgeprune as ep
from edgeprune.export import export
from edgeprune.export.tflite_family import run
from edgeprune.export.tflite_lower import TFLiteLoweringError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_models import litert_reference  # noqa: E402


class _Up(nn.Module):
    def __init__(self, **interp):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 3, padding=1)
        self.interp = interp

    def forward(self, x):
        return self.b(F.interpolate(torch.relu(self.a(x)), **self.interp))


CASES = {
    "nearest_x2": dict(scale_factor=2, mode="nearest"),
    "nearest_size": dict(size=(7, 13), mode="nearest"),
    "nearest_exact": dict(scale_factor=2, mode="nearest-exact"),
    "bilinear_x2": dict(scale_factor=2, mode="bilinear", align_corners=False),
    "bilinear_corners": dict(size=(11, 17), mode="bilinear", align_corners=True),
    "bilinear_down": dict(size=(5, 6), mode="bilinear", align_corners=False),
}


def _rel(got, ref):
    return float(np.abs(got - ref).max() / max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("case", list(CASES))
def test_fp32_resize_matches_torch_in_litert_and_our_runtime(case, tmp_path):
    torch.manual_seed(0)
    model = _Up(**CASES[case]).eval()
    x = torch.randn(1, 3, 8, 10, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    with torch.no_grad():
        ref = model(x).numpy()
    for builtin in (False, True):
        assert _rel(run(path, [x.numpy()], builtin=builtin)[0], ref) < 1e-4, builtin
    m = ep.runtime.load(path)
    if case != "nearest_exact":  # TorchScript writes nearest-exact as gathers at constant positions
        code = "RESIZE_BILINEAR" if "bilinear" in case else "RESIZE_NEAREST_NEIGHBOR"
        assert code in {k for k, _ in m.operators}
    got = m(x.numpy().transpose(0, 2, 3, 1))[0].transpose(0, 3, 1, 2)
    assert _rel(got, ref) < 1e-4


@pytest.mark.parametrize("case", ["nearest_x2", "bilinear_x2"])
def test_int8_file_with_upsampling_equals_litert_reference(case, tmp_path):
    torch.manual_seed(0)
    model = _Up(**CASES[case]).eval()
    calib = torch.randn(8, 3, 8, 10, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = ep.quantize(model, calib, progress=False)
        data = export(q, tmp_path, formats=["tflite-int8"], example_inputs=(calib[:1],))["tflite-int8"].read_bytes()
    m = ep.runtime.load(data)
    assert any(k.startswith("RESIZE_") for k, _ in m.operators)
    x = calib[3:4].numpy().transpose(0, 2, 3, 1).copy()
    np.testing.assert_array_equal(m(x)[0], litert_reference(data)([x])[0])
    with torch.no_grad():
        ref = model(calib[3:4]).numpy().transpose(0, 2, 3, 1)
    got = m(x)[0]
    cos = float((got.ravel() @ ref.ravel()) / (np.linalg.norm(got) * np.linalg.norm(ref)))
    assert cos > 0.99, cos


def test_a_resize_mode_tflite_lacks_is_refused_by_name(tmp_path):
    model = _Up(scale_factor=2, mode="bicubic", align_corners=False).eval()
    with pytest.raises(TFLiteLoweringError, match=r"ONNX op Resize \(mode cubic"):
        export(model, tmp_path, formats=["tflite"], example_inputs=(torch.randn(1, 3, 8, 10),))
    assert not (tmp_path / "model.tflite").exists()


@pytest.mark.parametrize(
    "mode, coord, rounding",
    [
        ("nearest", "asymmetric", "floor"),
        ("nearest", "half_pixel", "round_prefer_ceil"),
        ("nearest", "pytorch_half_pixel", "round_prefer_ceil"),
        ("nearest", "align_corners", "round_prefer_ceil"),
        ("linear", "half_pixel", "round_prefer_floor"),
        ("linear", "pytorch_half_pixel", "round_prefer_floor"),
        ("linear", "align_corners", "round_prefer_floor"),
        ("linear", "asymmetric", "round_prefer_floor"),
    ],
)
def test_every_onnx_resize_form_we_map_matches_onnxruntime(mode, coord, rounding, tmp_path):
    # each (coordinate mode, rounding) pair we lower computes ONNX's own source pixel: checked
    # against ONNX Runtime on up- and down-sizing at once (5x7 -> 9x4)
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgeprune.export.tflite_lower import lower
    from edgeprune.export.tflite_schema import serialize

    node = helper.make_node(
        "Resize", ["x", "", "", "sizes"], ["y"], name="r", mode=mode, coordinate_transformation_mode=coord,
        nearest_mode=rounding,
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 9, 4])],
        [helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 2, 9, 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 7)).astype(np.float32)
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    path = tmp_path / "r.tflite"
    path.write_bytes(serialize(lower(proto)))
    for builtin in (False, True):
        assert _rel(run(path, [x], builtin=builtin)[0], ref) < 1e-5, builtin
    got = ep.runtime.load(path)(x.transpose(0, 2, 3, 1))[0].transpose(0, 3, 1, 2)
    assert _rel(got, ref) < 1e-5
