"""Whole-model int8 benchmark: edgeprune's runtime against LiteRT (XNNPACK) on the same
model.int8.tflite.

Consumes: nothing (the MobileNetV2 at 224x224 of benchmarks/runtime.py, seeded random weights,
quantized by ``ep.quantize`` on seeded random images and written by ``ep.export`` as
``model.int8.tflite``: int8 end to end, float I/O). Produces: JSON rows, one per (variant,
runtime), with the same fields as benchmarks/runtime.py: median latency over interleaved rounds
(1 thread), the ratio of every runtime to ours measured in the same run, load time and peak RSS.

Variants: "dense"; "sparse90_1x4" (every 1x1 conv, the last one too, pruned to 90 % in 1x4 blocks, 4 consecutive
input channels of one output channel, stored dense in the file). Rows ``litert`` run LiteRT's
default (XNNPACK) on the identical file, ``litert_dense`` (sparse variant) LiteRT on the dense
file; before timing, the script checks that our outputs equal LiteRT's builtin reference kernels
on that file: bit for bit, but for the final FULLY_CONNECTED's rounding, which TFLite leaves open
(at most one output step; ours says how many logits, ``logits_one_step_from_reference``). The dense variant also gives each runtime's 2-thread rows ("threads": 2,
"speedup_vs_1_thread", "ratio_vs_ours" against ours on 2 threads), each runtime timed alone in a
fresh process, 1 and 2 threads interleaved.

Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/runtime_int8.py [--json out.json]
           [--rounds 7] [--runs 5] [--variants dense sparse90_1x4]
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
# benchmarks/ off the path (python puts the script's folder first): its tflite.py would shadow the
# schema package the exporter imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "python"))
_spec = importlib.util.spec_from_file_location("runtime_bench", BENCH / "runtime.py")
fp32_bench = importlib.util.module_from_spec(_spec)  # benchmarks/runtime.py: the model, the runners
_spec.loader.exec_module(fp32_bench)


def relu6_model(spec):
    """benchmarks/runtime.py's MobileNetV2 with nn.ReLU6 modules (torchvision's form, which the
    quantizer fuses into the convolutions) instead of torch.clamp, the same weights."""
    import torch
    from torch import nn

    base = fp32_bench.torch_model(spec)
    convs = iter(base.convs)

    def unit(layer):
        conv = next(convs)
        act = {"relu6": nn.ReLU6, "relu": nn.ReLU}.get(layer["act"])
        return nn.Sequential(conv, act()) if act else conv

    class Block(nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.body, self.residual = nn.Sequential(*[unit(sub) for sub in layer["layers"]]), layer["residual"]

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*[unit(lay) if lay["op"] == "conv" else Block(lay) for lay in spec[:-1]])
            self.fc = base.fc

        def forward(self, x):
            return self.fc(self.features(x).mean((2, 3)))

    with torch.no_grad():
        net = Net().eval()
        x = torch.randn(1, 3, 224, 224)
        assert torch.allclose(net(x), base(x), atol=1e-4)  # the same function as the fp32 benchmark's
    return net


def int8_file(variant: str, tmp: Path) -> Path:
    """The MobileNetV2 of benchmarks/runtime.py quantized and exported as model.int8.tflite."""
    import torch

    import edgeprune as ep
    from edgeprune.export import export

    spec = fp32_bench.mobilenet_v2_spec(0, "dense")
    if variant == "sparse90_1x4":
        # every 1x1 conv, inside the blocks and the last one (320 -> 1280), as the fp32 benchmark's
        # sparse90 variant prunes them
        rng = np.random.default_rng(1)
        convs = [c for layer in spec if layer["op"] == "block" for c in layer["layers"]]
        convs += [layer for layer in spec if layer["op"] == "conv"]
        for conv in convs:
            w = conv["w"]
            if w.shape[2] == 1 and conv["groups"] == 1 and w.shape[1] % 4 == 0:
                keep = rng.random((w.shape[0], w.shape[1] // 4, 1)) >= 0.9
                conv["w"] = (w.reshape(w.shape[0], -1, 4) * keep).reshape(w.shape).astype(np.float32)
    model = relu6_model(spec)
    calib = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    qm = ep.quantize(model, calib, progress=False)
    out = export(qm, tmp / variant, formats=["tflite-int8"], example_inputs=(calib[:1],))
    return Path(out["tflite-int8"])


def measure(variant: str, rounds: int, runs: int, tmp: Path) -> list[dict]:
    from runtime_models import litert_reference_run

    path = int8_file(variant, tmp)
    files = {"edgeprune": path, "litert": path}
    if variant != "dense":  # the target: ours on the sparse file against LiteRT on the dense one
        files["litert_dense"] = int8_file("dense", tmp)
    runners, load_s = {}, {}
    for rt, f in files.items():
        runners[rt], load_s[rt] = fp32_bench.make_runner(rt.split("_")[0], f)

    x = np.random.default_rng(1).standard_normal((1, 224, 224, 3)).astype(np.float32)
    ref = litert_reference_run(path.read_bytes(), [x])[0]
    ours = runners["edgeprune"](x)
    # Every op up to the classifier gives the reference kernels' bits. The classifier is a
    # FULLY_CONNECTED, whose rounding TFLite leaves open (docs/runtime.md, int8 "Arithmetic"): about
    # one logit in a thousand may sit one output step away, never more.
    step = float(np.diff(np.unique(ref)).min())
    off = np.abs(ours - ref)
    assert float(off.max()) <= step * 1.001, f"{variant}: ours differs from LiteRT's reference kernels by {off.max()}"
    assert np.count_nonzero(off) <= max(3, ref.size // 100), f"{variant}: {np.count_nonzero(off)} logits one step off"
    assert runners["litert"](x).argmax() == ref.argmax(), f"{variant}: XNNPACK's top-1 differs"
    times = fp32_bench.interleaved_ms(runners, x, rounds, runs)
    med = {rt: statistics.median(v) for rt, v in times.items()}
    rows = [
        {
            "model": f"mobilenet_v2_int8_{variant}",
            "runtime": rt,
            "file": files[rt].parent.name + "/model.int8.tflite",
            "threads": 1,
            "median_ms": round(med[rt], 3),
            "rounds_ms": [round(v, 3) for v in times[rt]],
            "ratio_vs_ours": round(med[rt] / med["edgeprune"], 3),
            "load_ms": round(load_s[rt] * 1e3, 1),
            "peak_rss_mb": round(fp32_bench.child_rss(rt.split("_")[0], files[rt]), 1),
        }
        for rt in runners
    ]
    rows[0]["logits_one_step_from_reference"] = int(np.count_nonzero(off))  # ours (the first row)
    if variant == "dense":  # what a second core buys each runtime on the same file
        two = {rt: fp32_bench.thread_scaling(rt, path, rounds, runs) for rt in ("edgeprune", "litert")}
        for rt, (one_ms, two_ms, rounds_ms) in two.items():
            rows.append(
                {
                    "model": f"mobilenet_v2_int8_{variant}",
                    "runtime": rt,
                    "file": path.parent.name + "/model.int8.tflite",
                    "threads": 2,
                    "median_ms": round(two_ms, 3),
                    "rounds_ms": [round(v, 3) for v in rounds_ms],
                    "ratio_vs_ours": round(two_ms / two["edgeprune"][1], 3),  # ours on 2 threads
                    "one_thread_ms": round(one_ms, 3),
                    "speedup_vs_1_thread": round(one_ms / two_ms, 3),  # >= 1.6 is the target
                }
            )
    return rows


def main(argv=None) -> int:
    return fp32_bench.run_cli(argv, __doc__, measure, ["dense", "sparse90_1x4"], "ep-rt8-bench-")


if __name__ == "__main__":
    sys.exit(main())
