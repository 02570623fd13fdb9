"""Target names users type: aliases in any case, "did you mean", and ``host`` detection from a
faked /proc and /sys tree (a Raspberry Pi 5, a Jetson Orin Nano, an unknown arm64 board, an
AVX2 PC), plus the [cache] / [efficiency] / [residuals] profile tables.

Consumes: the built-in profiles and files written here. Produces: pass/fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import edgeprune as ep

T = ep.targets
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "typed, profile",
    [
        ("jetson", "jetson-orin-nano"),
        ("Jetson-Orin-Nano", "jetson-orin-nano"),
        ("ORIN", "jetson-orin-nano"),
        ("nano", "jetson-nano"),
        ("rpi", "rpi5"),
        ("raspberry-pi", "rpi5"),
        ("Raspberry Pi", "rpi5"),
        ("RPI4", "rpi4"),
        ("pi4", "rpi4"),
        ("x86_avx2", "x86-avx2"),
    ],
)
def test_aliases_and_case(typed, profile):
    assert T.load(typed) == T.load(profile)
    assert T.resolve(typed).name == profile


def test_alias_note_names_the_profile_and_the_older_board():
    note = T.resolve("jetson").note
    assert note.startswith("target 'jetson' is profile jetson-orin-nano;")
    assert "jetson-nano is the older board" in note
    assert T.resolve("rpi4").note == ""  # the canonical name needs no line


@pytest.mark.parametrize("typed, suggestion", [("jetsn", "'jetson'"), ("rpi6", "'rpi4'"), ("x86-avx", "'x86-avx2'")])
def test_did_you_mean(typed, suggestion):
    with pytest.raises(T.TargetError) as e:
        T.load(typed)
    msg = str(e.value)
    assert msg.startswith(f"unknown target {typed!r}; did you mean ") and suggestion in msg.split("?")[0]
    assert "\n" not in msg and "built-in targets: jetson-nano" in msg


def test_nothing_close_gives_no_suggestion():
    with pytest.raises(T.TargetError, match=r"^unknown target 'zzzzzz'; built-in targets: "):
        T.load("zzzzzz")


def _fake(tmp_path, cpuinfo: str, model: str | None = None, max_khz: str | None = None, caches=()):
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(cpuinfo)
    (root / "proc" / "meminfo").write_text("MemTotal:        8245360 kB\nMemFree:  100 kB\n")
    if model is not None:
        (root / "proc" / "device-tree").mkdir()
        (root / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\x00")
    cpu0 = root / "sys" / "devices" / "system" / "cpu" / "cpu0"
    if max_khz:
        (cpu0 / "cpufreq").mkdir(parents=True)
        (cpu0 / "cpufreq" / "cpuinfo_max_freq").write_text(max_khz + "\n")
    for i, (level, ctype, size) in enumerate(caches):
        d = cpu0 / "cache" / f"index{i}"
        d.mkdir(parents=True)
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{ctype}\n")
        (d / "size").write_text(f"{size}\n")
    return root


ARM_CPU = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
    f"asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n\n"
    for i in range(4)
)


def test_host_detects_a_raspberry_pi_5(tmp_path):
    root = _fake(tmp_path, ARM_CPU, model="Raspberry Pi 5 Model B Rev 1.0")
    prof = T.detect_host(root)
    rpi5 = T.load("rpi5")
    assert (prof.name, prof.cpu, prof.peak, prof.deploy) == ("rpi5", rpi5.cpu, rpi5.peak, rpi5.deploy)
    assert prof.description.endswith("Detected: Raspberry Pi 5 Model B Rev 1.0.")
    assert T.load("host", root=root).name == "rpi5" and T.load("AUTO", root=root).name == "rpi5"


@pytest.mark.parametrize(
    "model, profile",
    [
        ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "jetson-orin-nano"),
        ("NVIDIA Jetson Nano Developer Kit", "jetson-nano"),
        ("Raspberry Pi 4 Model B Rev 1.4", "rpi4"),
    ],
)
def test_host_detects_jetsons_and_a_pi4(tmp_path, model, profile):
    root = _fake(tmp_path, ARM_CPU, model=model)
    prof = T.detect_host(root)
    assert prof.name == profile and prof.gpu == T.load(profile).gpu


def test_host_builds_a_profile_for_an_unknown_arm_board(tmp_path):
    caches = [(1, "Data", "64K"), (1, "Instruction", "64K"), (2, "Unified", "512K"), (3, "Unified", "2048K")]
    root = _fake(tmp_path, ARM_CPU, model="Radxa ROCK 5B", max_khz="2400000", caches=caches)
    prof = T.detect_host(root)
    assert prof.name == "host" and prof.cpu.arch == "aarch64" and prof.cpu.uarch == "cortex-a76"
    assert prof.cpu.cores == 4 and prof.cpu.freq_ghz == 2.4
    assert prof.cpu.features == ("neon", "dotprod", "fp16")
    # A76: 16 fp32 flop/cycle; dotprod: int8 at 4x
    assert prof.peak.fp32_gflops_per_core == pytest.approx(38.4)
    assert prof.peak.int8_gops_per_core == pytest.approx(153.6)
    assert prof.cache == T.Cache(l1d_kb=64, l2_kb=512, l3_kb=2048)
    assert prof.memory.ram_gb == pytest.approx(7.9) and prof.memory.bandwidth_gbs == T.load("rpi5").memory.bandwidth_gbs
    assert "Radxa ROCK 5B" in prof.description and "rpi5" in prof.description


def test_host_builds_an_x86_profile_from_flags(tmp_path):
    cpu = "".join(
        f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz\n"
        f"cpu MHz\t\t: 1800.000\nflags\t\t: fpu sse sse2 avx fma avx2 bmi2\n\n"
        for i in range(8)
    )
    root = _fake(tmp_path, cpu, caches=[(1, "Data", "32K"), (2, "Unified", "256K"), (3, "Unified", "6144K")])
    prof = T.detect_host(root)
    assert (prof.cpu.arch, prof.cpu.uarch, prof.cpu.cores, prof.cpu.freq_ghz) == ("x86_64", "avx2-fma", 8, 1.8)
    assert prof.cpu.features == ("avx2", "fma")
    assert prof.peak.fp32_gflops_per_core == pytest.approx(32 * 1.8)
    assert prof.peak.int8_gops_per_core == pytest.approx(2 * 32 * 1.8)
    assert prof.cache == T.Cache(32, 256, 6144)
    assert prof.efficiency == T.load("x86-avx2").efficiency


def test_host_on_this_machine():
    prof = T.load("host")
    assert prof.cpu.cores >= 1 and prof.peak.fp32_gflops_per_core > 0
    assert prof.to_dict()["name"] in ("host", *T.names())


def test_cli_show_alias_prints_which_profile(run_cli):
    r = run_cli("targets", "show", "jetson", "--json")
    assert r.code == 0 and '"name": "jetson-orin-nano"' in r.out
    assert r.err.startswith("target 'jetson' is profile jetson-orin-nano; jetson-nano is the older board")
    r = run_cli("targets", "show", "jetsn")
    assert r.code == 2 and "did you mean 'jetson'" in r.err and r.err.count("\n") == 1
    listing = run_cli("targets", "list")
    assert listing.code == 0 and "raspberry-pi" in listing.out and "host / auto" in listing.out


EFFICIENCY_TOML = """
[efficiency]
source = "bench JSON of 3 models on my board"
layer_overhead_us = 6.5

[efficiency.fp32.t1]
conv = 0.5
pointwise = 0.6
depthwise = 0.2
fc = 0.3
eltwise = 0.4

[residuals.fp32.t1]
conv = 0.08
"""


def test_efficiency_tables_are_validated(tmp_path):
    base = (ROOT / "targets" / "rpi4.toml").read_text()
    good = tmp_path / "cal.toml"
    good.write_text("calibrated = true\n" + base + EFFICIENCY_TOML)  # top-level keys first, tables after
    prof = T.load(good)
    assert prof.calibrated is True and prof.efficiency["fp32"]["t1"]["pointwise"] == 0.6
    assert prof.efficiency["layer_overhead_us"] == 6.5 and prof.residuals == {"fp32": {"t1": {"conv": 0.08}}}
    assert prof.to_dict()["calibrated"] is True
    for old, new, message in [
        ("conv = 0.5", "conv = 0", "field 'efficiency.fp32.t1.conv' must be a number > 0, got 0"),
        ("pointwise = 0.6", "winograd = 0.6", "unknown field 'efficiency.fp32.t1.winograd'"),
        ("[efficiency.fp32.t1]", "[efficiency.fp32.one]", "field 'efficiency.fp32.one' must be a t<threads> table"),
        ('source = "bench JSON of 3 models on my board"', "", "missing field 'efficiency.source'"),
        ("conv = 0.08", "conv = -0.1", "field 'residuals.fp32.t1.conv' must be a number >= 0"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(base + EFFICIENCY_TOML.replace(old, new))
        with pytest.raises(T.TargetError) as e:
            T.load(bad)
        assert str(e.value) == f"{bad}: {message}" or str(e.value).startswith(f"{bad}: {message}"), str(e.value)
    uncal = tmp_path / "uncal.toml"
    uncal.write_text("calibrated = true\n" + base)
    with pytest.raises(T.TargetError, match="'calibrated = true' needs an \\[efficiency\\] table"):
        T.load(uncal)


def test_build_with_target_jetson_says_which_profile(trained_demo_cnn_dir, tmp_out, run_cli):
    import json

    r = run_cli("build", "--model", trained_demo_cnn_dir, "--target", "jetson", "--bench-runs", "0", "--out", tmp_out)
    assert r.code == 0, r.err
    assert "target 'jetson' is profile jetson-orin-nano; jetson-nano is the older board" in r.err
    assert "estimates for jetson-orin-nano" in r.out
    assert json.loads((tmp_out / "report.json").read_text())["target"]["name"] == "jetson-orin-nano"
