"""Tests of edgeprune.pipeline's parts: format choice, trtexec line, budget search, API errors.

Consumes: target profiles, tiny fakes for the search, the cached demo CNN for the API call.
Produces: pass/fail. The end-to-end builds are in test_cli_build.py.
"""

from __future__ import annotations

import json

import pytest

import edgeprune as ep
from edgeprune import pipeline as P


def test_default_formats_follow_the_profile():
    avail = ["onnx", "onnx-fp16", "onnx-int8"]
    assert P.default_formats(ep.targets.load("rpi4"), avail) == (
        ["onnx", "onnx-int8"],
        ["tflite-int8", "tflite"],
    )
    assert P.default_formats(ep.targets.load("jetson-orin-nano"), avail) == (["onnx", "onnx-int8"], [])
    assert P.default_formats(ep.targets.load("jetson-nano"), avail) == (["onnx", "onnx-fp16"], [])
    want, missing = P.default_formats(ep.targets.load("rpi4"), ["onnx"])
    assert want == ["onnx"] and missing == ["tflite-int8", "tflite", "onnx-int8"]
    # the x86 hosts ship the .tflite too: the file our runtime (and LiteRT) runs
    assert P.default_formats(ep.targets.load("x86-avx2"), avail + ["tflite"]) == (["onnx", "onnx-int8", "tflite"], [])


def test_trtexec_command_only_for_tensorrt_targets():
    orin = ep.targets.load("jetson-orin-nano")
    assert P.trtexec_command(orin, "model.int8.onnx", "input", (3, 224, 224)) == (
        "trtexec --onnx=model.int8.onnx --int8 --fp16 --saveEngine=model.int8.engine "
        "--useSpinWait --warmUp=500 --iterations=200 --avgRuns=100"
    )
    assert P.trtexec_command(orin, "model.int8.onnx", "x", (3, 224, 224), dynamic_batch=True).startswith(
        "trtexec --onnx=model.int8.onnx --int8 --fp16 --shapes=x:1x3x224x224 --saveEngine=model.int8.engine"
    )
    nano = ep.targets.load("jetson-nano")
    assert P.trtexec_command(nano, "model.fp16.onnx", "input", (1, 32, 32)).startswith(
        "trtexec --onnx=model.fp16.onnx --fp16 --saveEngine=model.fp16.engine"
    )
    assert P.trtexec_command(ep.targets.load("rpi4"), "model.onnx", "input", (1, 32, 32)) is None


class _Fake:
    """A stand-in model whose cost is 100 * (1 - ratio)."""

    def __init__(self, r):
        self.r = r

    def eval(self):
        return self


def _make(r):
    return {"ratio": r}, _Fake(r)


def _cost(m):
    return 100.0 * (1.0 - m.r)


def test_search_ratio_finds_the_smallest_ratio_meeting_the_budget():
    r, plan, model, met, steps = P._search_ratio(_make, _cost, 40.0, _Fake(0.0), None, None, iters=10)
    assert met and _cost(model) <= 40.0 and plan == {"ratio": r}
    assert 0.6 <= r <= 0.6 + 0.9 / 2**10 + 1e-12
    assert steps[0] == {"ratio": 0.9, "cost": pytest.approx(10.0), "val_top1": None} and len(steps) == 11


def test_search_ratio_budget_already_met_and_unreachable():
    r, _, _, met, steps = P._search_ratio(_make, _cost, 150.0, _Fake(0.0), None, None)
    assert (r, met, len(steps)) == (0.0, True, 1)
    r, _, _, met, _ = P._search_ratio(_make, _cost, 5.0, _Fake(0.0), None, None)
    assert (r, met) == (0.9, False)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"ratio": 0.5, "budget_macs": 1e6}, "only one of"),
        ({"ratio": -0.1}, "outside"),
        ({"budget_macs": 0}, "budget_macs"),
        ({"max_acc_drop": -1, "data": "digits"}, "max_acc_drop"),
        ({"max_acc_drop": 1}, "needs data"),
        ({"formats": ["tflite-int9"]}, "not available"),
    ],
)
def test_build_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(P.BuildError, match=match):
        P.build("edgeprune:demo-cnn", "rpi4", tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_build_api_returns_result_and_stage_callback(trained_demo_cnn, tmp_out):
    seen = []
    res = P.build(
        trained_demo_cnn,
        "x86-avx2",
        tmp_out,
        data="digits",
        ratio=0.25,
        recover_epochs=0,
        bench_runs=2,
        max_acc_drop=100.0,
        on_stage=seen.append,
    )
    assert res.out_dir == tmp_out and res.gate_passed is True
    assert seen == res.report["stages_ran"] and seen[0] == "load" and seen[-1] == "report"
    assert json.loads((tmp_out / "report.json").read_text()) == json.loads(json.dumps(res.report))
    assert res.manifest["files"]["model.onnx"]["timings"] is False
    assert res.report["target"]["name"] == "x86-avx2"
    assert P.summary(res)[0][0] == "baseline"


ERF_NET = """
import torch


class Erf(torch.nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        y = torch.erf(self.conv(x))  # Erf: no TFLite lowering
        return self.fc(y.mean((2, 3)))


def make():
    return Erf()
"""


def test_a_build_whose_model_tflite_cannot_express_still_writes_onnx(tmp_path):
    (tmp_path / "net.py").write_text(ERF_NET)
    spec = f"{tmp_path / 'net.py'}:make"
    res = P.build(spec, "rpi4", tmp_path / "out", ratio=0.25, formats=["tflite", "onnx"], bench_runs=0)
    assert (tmp_path / "out" / "model.onnx").is_file() and not (tmp_path / "out" / "model.tflite").exists()
    why = res.report["stages_skipped"]["export tflite"]
    assert why.startswith("ONNX op Erf at node") and "has no TFLite lowering" in why
    # nothing deployable at all: the build fails with the writer's message and leaves no directory
    from edgeprune.export.tflite_lower import TFLiteLoweringError

    with pytest.raises(TFLiteLoweringError, match=r"ONNX op Erf at node .* has no TFLite lowering"):
        P.build(spec, "rpi4", tmp_path / "out2", ratio=0.25, formats=["tflite"], bench_runs=0)
    assert not (tmp_path / "out2").exists()
