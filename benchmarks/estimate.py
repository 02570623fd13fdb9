"""Estimator accuracy: calibrate the x86 profiles on this host, check held-out models, check
published device figures.

Consumes: models built in code (tests/python/zoo.py's CNN test zoo at its 16x16 shapes, its
EfficientNet at 64x64 (ZOO_INPUT); the torchvision-shaped definitions of benchmarks/models.py;
tests/python/zoo_full.py's MobileNets),
exported here to fp32 ONNX and to int8 ONNX (edgeprune's quantizer, random calibration images:
latency does not depend on the scale values), measured with ``edgeprune.bench`` (ONNX Runtime,
1 thread, interleaved rounds, medians). Produces JSON rows (``--json FILE``, or stdout):

  section "calibration": one row per model and precision the x86 fit used:
      {"model", "precision", "threads", "measured_ms", "estimate_ms", "ratio" (estimate / measured),
       "timed_median_ms", "timed_min_ms"}; measured_ms is edgeprune.calibrate.reference_ms: the
      smaller of the timed median and the per-node profile sum (a shared machine stretches timed
      runs; the per-node medians skip preempted runs)
  section "held_out": MobileNetV3-Large, ResNet-18, EfficientNet-B0 (fp32 and int8), NOT in the
      fit: the same fields plus "within_20pct"
  section "published": device figures with their source; "use": "fit" for the points the ARM CPU
      and the CUDA-core GPU efficiencies were fitted to, "validation" for points kept out of the
      fit; fields {"target", "device" (cpu/gpu), "model", "precision", "threads", "published_ms"
      [lo, hi], "estimate_ms", "rel_error" (to the nearest end of the range), "within_25pct",
      "source"}. ``--published-only`` prints just this section (no host measurement).

``--write-profiles`` also rewrites the built-in x86 profile this host belongs to with the fitted
``[efficiency]`` tables: targets/x86-avx512-vnni.toml on a host with AVX-512, else
targets/x86-avx2.toml (that is how the built-in x86 efficiencies were made; see docs/targets.md).
The other profile keeps its own host's fit: a fit here against its nominal peak would describe
this machine, not the ones it names. The rows report both fits. Run with ``env -u
OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``.

    python benchmarks/estimate.py --json build/bench-estimate.json [--runs 20] [--rounds 3] [--write-profiles]
    python benchmarks/estimate.py --published-only --json build/bench-published.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import edgeprune as ep  # noqa: E402
from edgeprune.export import export  # noqa: E402

E = importlib.import_module("edgeprune.estimate")
C = importlib.import_module("edgeprune.calibrate")

# the CNN test zoo (16x16 inputs) plus three torchvision-shaped ImageNet models
CAL_ZOO = (
    "resnet_basic",
    "resnet_bottleneck",
    "mobilenet_v2",
    "mobilenet_v3",
    "efficientnet",
    "shufflenet_v2",
    "densenet",
    "resnext",
)
# the zoo's EfficientNet runs at 64x64: at 16x16 its SiLU nodes (ONNX Runtime's QuickGelu) take
# 3-13 us each, mostly the per-node cost, which leaves the "act" class (an exponential per
# element) nothing to fit; no other calibration model has a transcendental activation
ZOO_INPUT = {"efficientnet": (3, 64, 64)}
CAL_TV = ("mobilenet_v2", "resnet50", "shufflenet_v2_x1_0")
HELD_OUT = ("mobilenet_v3_large", "resnet18", "efficientnet_b0")
X86 = ("x86-avx512-vnni", "x86-avx2")

# Published device figures: docs/targets.md lists each with its source.
XNNPACK_2022 = (
    "XNNPACK README, Raspberry Pi table benchmarked Feb 8 2022 (end2end-bench, 4 threads; "
    "range = 32-bit Raspbian and ARM64 columns), https://github.com/google/XNNPACK"
)
# ncnn's benchncnn runs with Winograd 3x3 convolutions and, on ARMv8.2 cores (A76, A78AE), fp16
# arithmetic (src/option.cpp defaults; benchmark/benchncnn.cpp sets both): those rows are compared
# with the fp16 estimate there, fp32 on the A57.
NCNN = (
    "ncnn benchmark/README.md (commit 070dac9, Dec 12 2023), benchncnn 'avg' column, CPU (gpu_device -1), "
    "https://github.com/Tencent/ncnn/blob/master/benchmark/README.md, section "
)
NCNN_RPI5 = NCNN + "'Raspberry Pi 5 Broadcom BCM2712, Cortex-A76 (ARMv8) (2.4GHz x 4)'"
NCNN_ORIN = NCNN + "'NVIDIA Jetson Orin Nano'"
NCNN_NANO = NCNN + "'NVIDIA Jetson Nano'"
TORCH2TRT_NANO = (
    "torch2trt docs/benchmarks/jetson_nano.md, 'Latency (TensorRT)' column, fp16_mode, batch 1, "
    "https://github.com/NVIDIA-AI-IOT/torch2trt/blob/master/docs/benchmarks/jetson_nano.md"
)
PUBLISHED = [
    # (target, device, model, precision, threads, lo, hi, use, source)
    ("rpi4", "cpu", "mobilenet_v2", "fp32", 4, 41.0, 41.0, "fit", E.CALIBRATION_SOURCE),
    ("rpi4", "cpu", "mobilenet_v2", "int8", 4, 17.0, 20.0, "fit", E.CALIBRATION_SOURCE),
    ("rpi4", "cpu", "mobilenet_v1", "fp32", 4, 72.0, 72.0, "fit", E.CALIBRATION_SOURCE),
    ("rpi4", "cpu", "mobilenet_v1", "int8", 4, 24.0, 29.0, "fit", E.CALIBRATION_SOURCE),
    ("rpi4", "cpu", "mobilenet_v3_large", "fp32", 4, 38.0, 40.0, "validation", XNNPACK_2022),
    ("rpi5", "cpu", "mobilenet_v2", "fp16", 4, 10.52, 10.52, "validation", NCNN_RPI5),
    ("rpi5", "cpu", "mobilenet_v2", "fp16", 1, 16.38, 16.38, "validation", NCNN_RPI5),
    ("rpi5", "cpu", "resnet18", "fp16", 4, 19.96, 19.96, "validation", NCNN_RPI5),
    ("rpi5", "cpu", "resnet50", "fp16", 4, 46.21, 46.21, "validation", NCNN_RPI5),
    ("rpi5", "cpu", "resnet50", "fp16", 1, 89.43, 89.43, "validation", NCNN_RPI5),
    ("jetson-nano", "cpu", "mobilenet_v2", "fp32", 4, 33.83, 33.83, "validation", NCNN_NANO),
    ("jetson-nano", "cpu", "mobilenet_v2", "fp32", 1, 93.99, 93.99, "validation", NCNN_NANO),
    ("jetson-nano", "cpu", "resnet18", "fp32", 4, 83.44, 83.44, "validation", NCNN_NANO),
    ("jetson-nano", "cpu", "resnet50", "fp32", 4, 204.08, 204.08, "validation", NCNN_NANO),
    ("jetson-orin-nano", "cpu", "mobilenet_v2", "fp16", 6, 6.51, 6.51, "validation", NCNN_ORIN),
    ("jetson-orin-nano", "cpu", "mobilenet_v2", "fp16", 1, 19.37, 19.37, "validation", NCNN_ORIN),
    ("jetson-orin-nano", "cpu", "resnet18", "fp16", 6, 15.13, 15.13, "validation", NCNN_ORIN),
    ("jetson-orin-nano", "cpu", "resnet50", "fp16", 6, 39.26, 39.26, "validation", NCNN_ORIN),
    ("jetson-orin-nano", "cpu", "resnet50", "fp16", 1, 138.48, 138.48, "validation", NCNN_ORIN),
    ("jetson-nano", "gpu", "resnet50", "fp16", 1, 29.8, 29.8, "fit", TORCH2TRT_NANO),
    ("jetson-nano", "gpu", "resnet18", "fp16", 1, 11.4, 11.4, "validation", TORCH2TRT_NANO),
    ("jetson-nano", "gpu", "resnet34", "fp16", 1, 20.2, 20.2, "validation", TORCH2TRT_NANO),
    ("jetson-nano", "gpu", "densenet121", "fp16", 1, 24.8, 24.8, "validation", TORCH2TRT_NANO),
]


def _tv(name):
    import models  # benchmarks/models.py: torchvision-identical definitions

    torch.manual_seed(0)
    return models.LOCAL[name]().eval(), (3, 224, 224)


def _zoo(name):
    import zoo

    model, x = zoo.build(name)
    return model.eval(), tuple(x.shape[1:])


def _export(model, shape, out: Path, want_int8: bool) -> dict[str, Path]:
    """fp32 ONNX, and int8 ONNX from edgeprune's quantizer when ``want_int8``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    fp32 = out / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *shape),), str(fp32), dynamo=False, opset_version=17)
    paths["fp32"] = fp32
    if want_int8:
        calib = torch.rand(8, *shape, generator=torch.Generator().manual_seed(0))
        qm = ep.quantize(model, calib, method="percentile", target="x86-avx512-vnni", calib_n=8, progress=False)
        written = export(qm, out / "q", formats=["onnx-int8"], target="x86-avx512-vnni")
        paths["int8"] = Path(written["onnx-int8"])
    return paths


def _measure(artifacts: dict[str, Path], workdir: Path, runs: int, rounds: int) -> dict[str, Path]:
    """Bench every artifact in interleaved rounds; one JSON per artifact with the merged median."""
    samples: dict[str, list[float]] = {k: [] for k in artifacts}
    last: dict[str, dict] = {}
    for _ in range(rounds):
        for key, path in artifacts.items():
            res = ep.bench(str(path), runtime="onnxruntime", threads=1, warmup=3, runs=runs)
            samples[key] += res.samples_ms
            last[key] = res.to_dict()
    files = {}
    for key, d in last.items():
        d["median_ms"] = round(statistics.median(samples[key]), 4)
        d["runs"] = len(samples[key])
        files[key] = workdir / f"bench-{key}.json"
        files[key].write_text(json.dumps(d, indent=1))
    return files


def _published_models() -> dict:
    import models as tv
    import zoo_full

    out = {"mobilenet_v1": zoo_full.mobilenet_v1()}
    for name in ("mobilenet_v2", "mobilenet_v3_large", "resnet18", "resnet50", "densenet121"):
        out[name] = _tv(name)[0]
    out["resnet34"] = tv.ResNet(tv._Basic, [3, 4, 6, 3]).eval()
    # the XNNPACK fit points keep the MobileNetV2 they were fitted with (tests/python/zoo_full.py)
    out["mobilenet_v2_fit"] = zoo_full.mobilenet_v2()
    for m in out.values():
        m.input_shape = (3, 224, 224)
    return out


def _published_rows() -> list[dict]:
    models = _published_models()
    rows = []
    for target, device, name, precision, threads, lo, hi, use, source in PUBLISHED:
        model = models["mobilenet_v2_fit" if use == "fit" and name == "mobilenet_v2" else name]
        ms = E.estimate(model, target, precision=precision, threads=threads, device=device).total_ms
        ref = min(max(ms, lo), hi)
        err = (ms - ref) / ref
        rows.append(
            {
                "section": "published",
                "use": use,
                "target": target,
                "device": device,
                "model": name,
                "precision": precision,
                "threads": threads,
                "published_ms": [lo, hi],
                "estimate_ms": round(ms, 3),
                "rel_error": round(err, 4),
                "within_25pct": abs(err) <= 0.25,
                "source": source,
            }
        )
    return rows


def _row(section: str, key: str, bench_file: Path, profile, extra=None) -> dict:
    d = json.loads(bench_file.read_text())
    est = E.estimate(d["artifact"], profile, None, threads=1)
    row = {
        "section": section,
        "model": key.rsplit("-", 1)[0],
        "precision": est.precision,
        "threads": 1,
        "target": profile.name,
        "measured_ms": round(C.reference_ms(d), 4),
        "timed_median_ms": d["median_ms"],
        "timed_min_ms": d["min_ms"],
        "estimate_ms": round(est.total_ms, 4),
        "ratio": round(est.total_ms / C.reference_ms(d), 4),
        "calibration": est.to_dict()["calibration"],
    }
    row.update(extra or {})
    return row


def host_profile() -> tuple[str, str]:
    """The built-in x86 profile this host's measurements may be written into, and a description
    of the host for the profile's source line."""
    host = ep.targets.detect_host()
    wide = "avx512f" in host.cpu.features
    isa = "AVX-512" + (" + VNNI" if "avx512vnni" in host.cpu.features else "") if wide else "AVX2, no AVX-512"
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    name = names[0] if names else "x86-64"
    return ("x86-avx512-vnni" if wide else "x86-avx2"), f"{host.cpu.cores}-core x86 host ({name}, {isa})"


def run(runs: int, rounds: int, write_profiles: bool, workdir: Path) -> list[dict]:
    cal_art: dict[str, Path] = {}
    held_art: dict[str, Path] = {}
    for name in CAL_ZOO:
        model, shape = _zoo(name)
        shape = ZOO_INPUT.get(name, shape)
        for prec, p in _export(model, shape, workdir / f"zoo_{name}", want_int8=True).items():
            cal_art[f"zoo_{name}-{prec}"] = p
    for name in CAL_TV:
        model, shape = _tv(name)
        for prec, p in _export(model, shape, workdir / name, want_int8=True).items():
            cal_art[f"{name}-{prec}"] = p
    for name in HELD_OUT:
        model, shape = _tv(name)
        for prec, p in _export(model, shape, workdir / name, want_int8=True).items():
            held_art[f"{name}-{prec}"] = p
    files = _measure({**cal_art, **held_art}, workdir, runs, rounds)
    cal_files = [files[k] for k in cal_art]
    rows = []
    mine, cpu = host_profile()
    source = (
        f"measured on this project's {cpu}, ONNX Runtime {__import__('onnxruntime').__version__}, 1 thread: "
        f"the test zoo + {', '.join(CAL_TV)}, fp32 and int8 (benchmarks/estimate.py)"
    )
    for base in X86:
        prof, _ = C.fit(base, cal_files, source=source, name=base)
        prof = dataclasses.replace(prof, description=ep.targets.load(base).description)
        if write_profiles and base == mine:
            (ROOT / "targets" / f"{base}.toml").write_text(ep.targets.to_toml(prof))
        for key in cal_art:
            rows.append(_row("calibration", key, files[key], prof))
        for key in held_art:
            r = _row("held_out", key, files[key], prof)
            r["within_20pct"] = abs(r["ratio"] - 1.0) <= 0.20
            rows.append(r)
    return rows + _published_rows()


def main(argv=None) -> int:
    logging.getLogger().setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the rows here (default: stdout)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--write-profiles", action="store_true", help="rewrite targets/x86-*.toml with the fit")
    p.add_argument("--workdir", default=None, help="keep the models and bench JSON here (default: a temp dir)")
    p.add_argument("--published-only", action="store_true", help="only the published-figures section")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeprune-estimate-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.published_only:
            rows = _published_rows()
        else:
            rows = run(args.runs, args.rounds, args.write_profiles, workdir)
    text = json.dumps(rows, indent=1)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    for r in rows:
        if r["section"] == "held_out":
            flag = "ok" if r["within_20pct"] else "OUT OF +-20%"
            print(
                f"held-out {r['target']:16s} {r['model']:20s} {r['precision']}: measured {r['measured_ms']:.2f} ms, "
                f"estimate {r['estimate_ms']:.2f} ms ({r['ratio']:.2f}x) {flag}",
                file=sys.stderr,
            )
        elif r["section"] == "published":
            print(
                f"published [{r['use']}] {r['target']} {r['device']} {r['model']} {r['precision']} "
                f"t{r['threads']}: {r['published_ms']} ms, "
                f"estimate {r['estimate_ms']:.1f} ms ({100 * r['rel_error']:+.1f}%)",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
