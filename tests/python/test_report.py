"""Tests of edgeprune.report: files written, their contents, deterministic plots, the summary table.

Consumes: a hand-written report dict of the shape edgeprune.pipeline builds. Produces: pass/fail.
"""

from __future__ import annotations

import hashlib
import json

from rich.console import Console

from edgeprune import report as R
from edgeprune.cli._tables import summary_table


def _report(**over):
    rep = {
        "model": "edgeprune:demo-cnn",
        "target": {"name": "rpi4", "description": "Raspberry Pi 4"},
        "stages_ran": ["baseline", "prune", "int8"],
        "stages_skipped": {"recover": "no --data given"},
        "stages": [
            {
                "name": "baseline",
                "params": 120000,
                "macs": 4_500_000,
                "size_bytes": 480_000,
                "accuracy": {"metric": "top1", "value": 0.975, "delta_pts": 0.0},
                "host_latency": {
                    "runtime": "onnxruntime",
                    "runtime_version": "onnxruntime 1.2",
                    "threads": 1,
                    "init_ms": 5.0,
                    "first_ms": 1.0,
                    "mean_ms": 0.5,
                    "median_ms": 0.45,
                    "p90_ms": 0.6,
                    "p99_ms": 0.7,
                    "std_ms": 0.05,
                    "runs": 20,
                    "warnings": ["noisy"],
                },
                "estimate": {
                    "estimate": True,
                    "precision": "fp32",
                    "threads": 4,
                    "total_ms": 1.25,
                    "by_kind_ms": {"conv": 1.0, "fc": 0.25},
                },
            },
            {
                "name": "int8",
                "precision": "int8",
                "params": 60000,
                "macs": 2_000_000,
                "size_bytes": 70_000,
                "accuracy": {"metric": "top1", "value": 0.9611, "delta_pts": -1.39},
                "estimate": {"estimate": True, "precision": "int8", "threads": 4, "total_ms": 0.5},
            },
        ],
        "layers": [
            {"name": "features.0", "before": 32, "after": 16},
            {"name": "features.3", "before": 64, "after": 40},
        ],
        "gate": {"max_acc_drop": 1.0, "drop_pts": 1.39, "passed": False},
        "deploy": {
            "notes": ["copy model.int8.onnx"],
            "trtexec": "trtexec --onnx=model.int8.onnx --int8",
            "bench": ["edgeprune bench model.int8.onnx --threads 4"],
        },
        "artifacts": {"model.onnx": {"size_bytes": 2048}},
        "plots": ["plots/metric_vs_macs.png"],
    }
    rep.update(over)
    return rep


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_write_report_writes_json_md_and_three_plots(tmp_path):
    rep = _report()
    paths = R.write_report(rep, tmp_path)
    assert set(paths) == {
        "report.json",
        "report.md",
        "plots/metric_vs_macs.png",
        "plots/metric_vs_latency.png",
        "plots/channels.png",
    }
    assert json.loads((tmp_path / "report.json").read_text()) == rep
    assert R.load_report(tmp_path) == rep
    for name in ("metric_vs_macs.png", "metric_vs_latency.png", "channels.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no temp files left behind
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


def test_markdown_contents(tmp_path):
    md = R.render_markdown(_report())
    assert md.startswith("# edgeprune build report: edgeprune:demo-cnn for rpi4")
    assert "| baseline | 120k | 4.5M | 468.8 KB | 97.50% | +0.00 | 0.450 | 1.250 |" in md
    assert "| int8 | 60k | 2M | 68.4 KB | 96.11% | -1.39 | - | 0.500 |" in md
    assert "**estimates**" in md and "skipped **recover**: no --data given" in md
    assert "**FAILED**" in md and "trtexec --onnx=model.int8.onnx --int8" in md
    assert "| features.0 | 32 | 16 | 50% |" in md
    assert "- baseline: noisy" in md
    assert "| int8 | int8 | 4 | 0.500 |" in md


def test_headline_says_cost_and_gain():
    md = R.render_markdown(_report())
    assert (
        "**Result:** the shipped model (int8) has 44% of the MACs, 96.11% top-1 (-1.39 pts), "
        "an estimated 2.50x speed-up on rpi4 (1.250 → 0.500 ms)."
    ) in md
    assert R.headline_text({"stages": [{"name": "baseline"}]}) is None


def test_pruning_section_for_ratio_and_budget():
    md = R.render_markdown(_report(settings={"ratio": 0.5, "importance": "l2", "round_to": 8, "recover_epochs": 3}))
    assert "Goal: remove 50% of the channels" in md and "multiples of 8" in md
    rep = _report(
        settings={"search": "adaptive", "importance": "l2", "round_to": 16, "recover_epochs": 1},
        budget={"kind": "macs", "value": 1.5e6, "achieved": 1.2e6, "met": True, "reason": ""},
        search={
            "steps": [
                {
                    "step": 1,
                    "fraction": 0.5,
                    "cost": 2e6,
                    "val_pruned": 0.9,
                    "val_recovered": 0.98,
                    "drop_points": 0.5,
                    "accepted": True,
                },
                {"step": 2, "fraction": 1.0, "skipped": "nothing to remove"},
            ]
        },
    )
    md = R.render_markdown(rep)
    assert "Goal: macs budget 1.5e+06 MACs; achieved 1.2e+06: **met**." in md
    assert "Method: adaptive search" in md
    assert (
        "| 1 | 0.500 | 2e+06 | 90.00% | 98.00% | 0.50 | yes |" in md and "| 2 | 1.000 | - | - | - | - | skipped |" in md
    )


def test_slowest_layers_and_gpu_estimate_listed():
    layers = [
        {"name": f"l{i}", "kind": "conv", "macs": 1000 * i, "ms": 0.01 * i, "bound": "compute"} for i in range(10)
    ]
    md = R.render_markdown(
        _report(
            target_estimate={"precision": "int8", "threads": 4, "total_ms": 0.45, "layers": layers},
            target_estimate_gpu={"precision": "int8", "total_ms": 0.08},
        )
    )
    assert "(estimate, int8, 4 threads, total 0.450 ms)" in md
    rows = [line for line in md.splitlines() if line.startswith("| l") and not line.startswith("| layer")]
    assert [r.split(" | ")[0] for r in rows] == ["| l9", "| l8", "| l7", "| l6", "| l5", "| l4", "| l3", "| l2"]
    assert "| l9 | conv | 9k | 0.0900 | compute |" in md
    assert "GPU (int8, TensorRT-style roofline, **uncalibrated**): 0.080 ms." in md
    gpu = {"precision": "fp16", "total_ms": 0.08, "calibration": "published"}
    md = R.render_markdown(_report(target_estimate={"layers": []}, target_estimate_gpu=gpu))
    assert "GPU (fp16, TensorRT-style roofline, calibrated (published)): 0.080 ms." in md


def test_plots_are_byte_deterministic(tmp_path):
    a = R.write_plots(_report(), tmp_path / "a")
    b = R.write_plots(_report(), tmp_path / "b")
    assert [_sha(a[k]) for k in sorted(a)] == [_sha(b[k]) for k in sorted(b)]
    c = R.write_plots(_report(layers=[{"name": "x", "before": 8, "after": 1}]), tmp_path / "c")
    assert _sha(c["channels.png"]) != _sha(a["channels.png"])


def test_steps_drive_the_plots_when_present(tmp_path):
    steps = [
        {"step": 0, "macs": 4e6, "metric": 0.97, "estimate_ms": 1.2},
        {"step": 1, "macs": 3e6, "metric": 0.96, "estimate_ms": None},
    ]
    out = R.write_plots(_report(steps=steps, layers=[]), tmp_path)
    assert set(out) == {"metric_vs_macs.png", "metric_vs_latency.png"}
    assert R._points(_report(steps=steps))[1] == {"label": "1", "macs": 3e6, "metric": 0.96, "estimate_ms": None}


def test_no_data_no_plots(tmp_path):
    assert R.write_plots({"stages": [{"name": "baseline"}]}, tmp_path) == {}


def test_summary_table_renders_every_stage():
    console = Console(width=200, record=True)
    console.print(summary_table(_report()))
    text = console.export_text()
    assert "edgeprune:demo-cnn → rpi4" in text
    assert "baseline" in text and "int8" in text and "96.11%" in text and "-1.39" in text
