"""edgeprune.targets: the six built-in profiles carry docs/targets.md's figures, and every kind
of bad profile is refused with the file and the dotted field named."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import edgeprune as ep

ROOT = Path(__file__).resolve().parents[2]

# docs/targets.md: (cores, uarch, GHz, fp32 GFLOPS/core, int8 GOPS/core, DRAM GB/s, qemu cpu)
VENDOR = {
    "rpi4": (4, "cortex-a72", 1.5, 12.0, 24.0, 12.8, "cortex-a72"),
    "rpi5": (4, "cortex-a76", 2.4, 38.4, 154.0, 17.1, "cortex-a76"),
    "jetson-nano": (4, "cortex-a57", 1.43, 11.4, 23.0, 25.6, "cortex-a57"),
    "jetson-orin-nano": (6, "cortex-a78ae", 1.5, 24.0, 96.0, 68.0, "neoverse-n1"),
}


def test_names():
    assert ep.targets.names() == sorted(
        ["rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "x86-avx2", "x86-avx512-vnni"]
    )


@pytest.mark.parametrize("name", sorted(VENDOR))
def test_arm_vendor_figures(name):
    t = ep.targets.load(name)
    cores, uarch, ghz, fp32, int8, bw, qemu = VENDOR[name]
    assert (t.name, t.cpu.arch, t.cpu.cores, t.cpu.uarch, t.cpu.freq_ghz) == (name, "aarch64", cores, uarch, ghz)
    assert (t.peak.fp32_gflops_per_core, t.peak.int8_gops_per_core, t.memory.bandwidth_gbs) == (fp32, int8, bw)
    assert t.cpu.qemu_cpu == qemu and "neon" in t.cpu.features
    # dotprod exactly on the A76 and the A78AE
    assert ("dotprod" in t.cpu.features) == (name in ("rpi5", "jetson-orin-nano"))


def test_x86_figures_follow_flop_per_cycle():
    avx2, avx512 = ep.targets.load("x86-avx2"), ep.targets.load("x86-avx512-vnni")
    assert avx2.peak.fp32_gflops_per_core == pytest.approx(32 * avx2.cpu.freq_ghz)
    assert avx512.peak.fp32_gflops_per_core == pytest.approx(64 * avx512.cpu.freq_ghz)
    assert avx2.peak.int8_gops_per_core == pytest.approx(2 * avx2.peak.fp32_gflops_per_core)
    assert avx512.peak.int8_gops_per_core == pytest.approx(4 * avx512.peak.fp32_gflops_per_core)
    assert avx2.cpu.qemu_cpu == avx512.cpu.qemu_cpu == "host"
    assert {"avx2", "fma"} <= set(avx2.cpu.features) and "avx512vnni" in avx512.cpu.features
    assert "nominal" in avx2.description.lower() and "nominal" in avx512.description.lower()


def test_jetson_gpus_and_deploy():
    nano, orin = ep.targets.load("jetson-nano"), ep.targets.load("jetson-orin-nano")
    assert nano.gpu.fp16_tflops == 0.472 and nano.gpu.int8_tops is None and nano.gpu.tensorrt == "8.2"
    assert (nano.deploy.precision, nano.deploy.channel_multiple) == ("fp16", 8)
    assert orin.gpu.int8_tops == 20.0 and orin.gpu.tensorrt == "10.3"
    assert (orin.deploy.precision, orin.deploy.channel_multiple) == ("int8", 16)
    assert ep.targets.load("rpi4").gpu is None


def test_profile_is_frozen_and_serialisable():
    t = ep.targets.load("jetson-orin-nano")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.cpu.cores = 8
    d = json.loads(json.dumps(t.to_dict()))
    assert set(d) == {"name", "description", "cpu", "memory", "peak", "gpu", "deploy"}
    assert set(d["cpu"]) == {"arch", "uarch", "cores", "freq_ghz", "features", "qemu_cpu"}
    assert set(d["gpu"]) == {"name", "fp16_tflops", "int8_tops", "tensorrt"}
    assert set(d["deploy"]) == {"formats", "precision", "channel_multiple", "runtimes"}
    assert d["cpu"]["features"] == ["neon", "dotprod", "fp16"]


def test_load_by_path_and_identity():
    p = ROOT / "targets" / "rpi4.toml"
    assert ep.targets.load(str(p)) == ep.targets.load("rpi4")
    t = ep.targets.load("rpi5")
    assert ep.targets.load(t) is t
    assert t.fp32_gflops == pytest.approx(4 * 38.4)


def test_unknown_name_lists_builtins():
    with pytest.raises(
        ValueError,
        match=r"unknown target 'rpi9'; did you mean 'rpi' or 'rpi5' or 'rpi4'\? built-in targets: jetson-nano, .*x86-avx512-vnni",
    ):
        ep.targets.load("rpi9")


def _mutated(tmp_path, old, new, name="x.toml"):
    text = (ROOT / "targets" / "jetson-orin-nano.toml").read_text()
    assert old in text
    p = tmp_path / name
    p.write_text(text.replace(old, new, 1))
    return p


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("freq_ghz = 1.5", "frq_ghz = 1.5", "unknown field 'cpu.frq_ghz'"),
        ("bandwidth_gbs = 68.0", "", "missing field 'memory.bandwidth_gbs'"),
        ("cores = 6", 'cores = "6"', "field 'cpu.cores' must be a positive integer, got str '6'"),
        ("cores = 6", "cores = 6.5", "field 'cpu.cores' must be a positive integer"),
        ("freq_ghz = 1.5", "freq_ghz = 0", "field 'cpu.freq_ghz' must be a positive number, got 0"),
        ("int8_tops = 20.0", "int8_tops = -1", "field 'gpu.int8_tops' must be a positive number, got -1"),
        ("ram_gb = 8", "ram_gb = true", "field 'memory.ram_gb' must be a positive number, got bool"),
        (
            'features = ["neon", "dotprod", "fp16"]',
            'features = "neon"',
            "field 'cpu.features' must be a list of strings",
        ),
        ('precision = "int8"', 'precision = "int4"', "field 'deploy.precision' must be one of int8, fp16, fp32"),
        ('name = "jetson-orin-nano"', 'name = "jetson-orin-nano"\nvendor = "nvidia"', "unknown field 'vendor'"),
        ('tensorrt = "10.3"', "", "missing field 'gpu.tensorrt'"),
        ("[peak]", "[peeks]", "unknown field 'peeks'"),
    ],
)
def test_validation_names_file_and_field(tmp_path, old, new, message):
    p = _mutated(tmp_path, old, new)
    with pytest.raises(ValueError) as e:
        ep.targets.load(str(p))
    assert str(e.value).startswith(f"{p}: ")
    assert message in str(e.value)


def test_missing_section_and_optional_gpu(tmp_path):
    text = (ROOT / "targets" / "rpi4.toml").read_text()
    cut = text.index("[deploy]")
    p = tmp_path / "nodeploy.toml"
    p.write_text(text[:cut])
    with pytest.raises(ValueError, match=r"nodeploy.toml: missing field 'deploy'"):
        ep.targets.load(str(p))
    # int8_tops may be absent (Maxwell), the rest of [gpu] may not
    p2 = _mutated(tmp_path, "int8_tops = 20.0", "", name="noint8.toml")
    assert ep.targets.load(str(p2)).gpu.int8_tops is None


def test_invalid_toml_and_missing_file(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("name = \n")
    with pytest.raises(ValueError, match=r"broken.toml: invalid TOML"):
        ep.targets.load(str(p))
    with pytest.raises(ValueError, match=r"nowhere.toml: file not found"):
        ep.targets.load(str(tmp_path / "nowhere.toml"))
