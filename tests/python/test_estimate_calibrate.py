"""`edgeprune targets calibrate`: per-op profiles of real ONNX Runtime runs -> a calibrated profile.

Consumes: two small CNNs exported to ONNX here, measured with `edgeprune bench --json` on this
machine. Produces: pass/fail: the written TOML loads back with calibrated = true, per-class
efficiencies and residuals; estimates from it say "measured" and reproduce the measured totals
they were fitted to; unusable bench files exit 2 with one line; every profile round-trips TOML.
"""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
import torch
from torch import nn

import edgeprune as ep
from edgeprune.cli.main import main

E = importlib.import_module("edgeprune.estimate")
C = importlib.import_module("edgeprune.calibrate")


def _cnn(width: int, act=nn.ReLU):
    torch.manual_seed(width)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1),
        act(),
        nn.Conv2d(width, width, 3, padding=1, groups=width),
        act(),
        nn.Conv2d(width, 2 * width, 1),
        act(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 10),
    ).eval()


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    d = tmp_path_factory.mktemp("cal")
    files = []
    # the third has SiLU activations, which ONNX Runtime runs as QuickGelu nodes: the "act" class
    for width, act in ((16, nn.ReLU), (32, nn.ReLU), (24, nn.SiLU)):
        onnx_path = d / f"cnn{width}.onnx"
        model = _cnn(width, act)
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(onnx_path), dynamo=False, opset_version=17)
        out = d / f"bench-cnn{width}.json"
        assert main(["bench", str(onnx_path), "--runs", "15", "--warmup", "2", "--json", str(out)]) == 0
        files.append(out)
    return d, files


def test_calibrate_writes_a_measured_profile(measured, capsys):
    d, files = measured
    out = d / "my-board.toml"
    assert main(["targets", "calibrate", "x86-avx2", *map(str, files), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    prof = ep.targets.load(out)
    assert prof.name == "my-board" and prof.calibrated is True
    fitted = prof.efficiency["fp32"]["t1"]
    assert set(fitted) == {"conv", "pointwise", "depthwise", "fc", "act", "eltwise"} and all(
        v > 0 for v in fitted.values()
    )
    assert fitted["act"] != E.EFFICIENCY["fp32"]["act"]  # fitted, not the default carried over
    assert set(prof.residuals["fp32"]["t1"]) >= {"act"}
    assert set(prof.residuals["fp32"]["t1"]) >= {"conv", "pointwise", "depthwise", "total"}
    assert prof.cpu == ep.targets.load("x86-avx2").cpu  # only the efficiencies change
    # two fitted per-op overheads from the grid: compute ops and memory-bound ops
    assert {prof.efficiency["layer_overhead_us"], prof.efficiency["eltwise_overhead_us"]} <= set(C.OVERHEAD_GRID_US)
    rows = report["rows"]
    assert [r["precision"] for r in rows] == ["fp32"] * 3 and all(r["profile_matched"] > 0.7 for r in rows)
    # ONNX Runtime's "<Mul>/QuickGeluFusion/" rows are matched back to the SiLU's act op
    silu = json.loads(files[2].read_text())
    assert any(r["name"].endswith("/QuickGeluFusion/") for r in silu["layers"])
    assert rows[2]["profile_matched"] > 0.9
    for r, f in zip(rows, files):
        # the model's own time (a busy host stretches timed runs; the fit uses the same reference)
        measured_ms = C.reference_ms(json.loads(f.read_text()))
        est = E.estimate(str(f).replace("bench-", "").replace(".json", ".onnx"), prof, None, threads=1)
        assert est.to_dict()["calibration"] == "measured" and est.assumptions["calibrated_threads"] == 1
        assert est.total_ms == pytest.approx(r["estimate_ms"], abs=1e-4)
        # three models, six classes: the fit reproduces what it was fitted to
        assert abs(est.total_ms - measured_ms) / measured_ms < 0.25, (est.total_ms, measured_ms)
    # a profile fitted to published figures keeps saying so; the built-in x86 ones were measured
    onnx_path = str(files[0]).replace("bench-", "").replace(".json", ".onnx")
    assert E.estimate(onnx_path, "rpi4", None, threads=1).to_dict()["calibration"] == "published"
    assert E.estimate(onnx_path, "x86-avx2", None, threads=1).to_dict()["calibration"] == "measured"


def test_unusable_bench_files_exit_2(measured, tmp_path, capsys):
    d, files = measured
    bench = json.loads(files[0].read_text())
    cases = {
        "nolayers.json": ({**bench, "layers": []}, "no per-op profile ('layers' is empty)"),
        "elsewhere.json": ({**bench, "artifact": "/nowhere/gone.onnx"}, "is not an .onnx file here or next to"),
        "estimate.json": ({**bench, "estimate": True}, "not an `edgeprune bench --json` measurement"),
    }
    for name, (content, message) in cases.items():
        p = tmp_path / name
        p.write_text(json.dumps(content))
        assert main(["targets", "calibrate", "x86-avx2", str(p), "--out", str(tmp_path / "x.toml")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and str(p) in err
    assert not (tmp_path / "x.toml").exists()


def test_a_hostile_artifact_exits_2_naming_it(measured, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    d, files = measured
    bench = json.loads(files[0].read_text())
    real = (d / "cnn16.onnx").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(real[: len(real) // 3])
    # a node without its input passes the protobuf parse; shape inference stops at it
    nodes = [helper.make_node("Sigmoid", [], ["s"], name="s0"), helper.make_node("Mul", ["x", "s"], ["m"], name="m0")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    handmade = tmp_path / "handmade.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(handmade))
    for art in (truncated, handmade):
        p = tmp_path / f"bench-{art.stem}.json"
        p.write_text(json.dumps({**bench, "artifact": str(art)}))
        assert main(["targets", "calibrate", "x86-avx2", str(p), "--out", str(tmp_path / "x.toml")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{art}: not an ONNX model the estimator can read" in err
    assert not (tmp_path / "x.toml").exists()


def test_more_threads_than_the_profile_has_cores(measured, tmp_path):
    d, files = measured
    bench = json.loads(files[0].read_text())
    p = d / "t64.json"
    p.write_text(json.dumps({**bench, "threads": 64}))
    with pytest.raises(C.CalibrationError, match="64 threads but x86-avx2 has 4 cores"):
        C.fit("x86-avx2", [p])


@pytest.mark.parametrize("name", ep.targets.names())
def test_every_profile_round_trips_through_toml(name, tmp_path):
    prof = ep.targets.load(name)
    p = tmp_path / f"{name}.toml"
    p.write_text(ep.targets.to_toml(prof))
    assert dataclasses.replace(ep.targets.load(p), source=prof.source) == prof


def test_memory_bound_ops_pay_their_own_overhead():
    ops = [
        E.Op("c", "conv", macs=10**6, weight_elems=100, out_elems=1000),
        E.Op("a", "eltwise", in_elems=10, out_elems=10),
    ]
    base = ep.targets.load("x86-avx2")
    eff = dict(base.efficiency)
    eff["layer_overhead_us"], eff["eltwise_overhead_us"] = 12.0, 2.0
    est = E.estimate_ops(ops, dataclasses.replace(base, efficiency=eff), "fp32", 1)
    assert [round(layer.overhead_ms * 1000, 6) for layer in est.layers] == [12.0, 2.0]
    assert est.assumptions["eltwise_overhead_us"] == 2.0
    # a profile without the field charges memory-bound ops the compute overhead, as before the split
    del eff["eltwise_overhead_us"]
    est = E.estimate_ops(ops, dataclasses.replace(base, efficiency=eff), "fp32", 1)
    assert [round(layer.overhead_ms * 1000, 6) for layer in est.layers] == [12.0, 12.0]
