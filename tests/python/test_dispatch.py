"""ISA dispatch seen from Python: the reported paths, the EDGEPRUNE_ISA override and its errors,
and the EDGEPRUNE_LOG line. Overrides are tried in fresh interpreters (the choice is made once
per process).

Consumes: edgeprune._core / edgeprune.kernels. Produces: assertions only.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgeprune import kernels

ALL = {"reference", "avx2", "avx512", "neon", "neon-dotprod"}


def run_py(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("EDGEPRUNE_ISA", None)
    env.pop("EDGEPRUNE_LOG", None)
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_reported_paths_are_consistent():
    compiled, supported = kernels.compiled_isas(), kernels.supported_isas()
    assert "reference" in compiled and "reference" in supported
    assert set(supported) <= set(compiled) <= ALL
    assert kernels.selected_isa() in supported
    forced = os.environ.get("EDGEPRUNE_ISA")
    if forced:
        assert kernels.selected_isa() == forced
    else:  # auto picks the last (best) supported path
        assert kernels.selected_isa() == supported[-1]
    assert all(isinstance(f, str) and f == f.lower() for f in kernels.cpu_features())
    if "avx2" in supported:
        assert {"avx2", "fma", "os-avx-state"} <= set(kernels.cpu_features())


def test_l1d_size_is_what_the_os_reports():
    """Sparse tile plans are sized by it: the same number sysconf (else sysfs) gives, 0 if neither."""
    want = 0
    try:
        want = max(0, os.sysconf("SC_LEVEL1_DCACHE_SIZE"))
    except (ValueError, OSError):
        pass
    if want == 0:
        for index in range(4):
            base = f"/sys/devices/system/cpu/cpu0/cache/index{index}/"
            try:
                level, kind, size = (open(base + f).read().strip() for f in ("level", "type", "size"))
            except OSError:
                continue
            if level == "1" and kind in ("Data", "Unified"):
                want = int(size[:-1]) * {"K": 1024, "M": 1 << 20}[size[-1]] if size[-1] in "KM" else int(size)
                break
    assert kernels.l1d_bytes() == want


def test_kernel_listing_names_every_compiled_path():
    listing = kernels.kernel_listing()
    listed = {isa for _, isa, _ in listing}
    assert "reference" in listed and listed <= set(kernels.compiled_isas())
    kinds = {name for name, _, _ in listing}
    assert {"dense_f32", "spmm_f32_b1", "spmm_f32_b4"} <= kinds
    for name, isa, tile in listing:
        if isa == "reference":
            continue
        assert tile in (4, 8, 16, 32), (name, isa, tile)


@pytest.mark.parametrize("isa", ["reference", "avx2", "avx512", "neon", "neon-dotprod"])
def test_override_selects_or_explains(isa):
    code = (
        "import numpy as np; from edgeprune import kernels as k; print(k.selected_isa());"
        "print(k.Linear(np.ones((3, 2), np.float32)).isa)"
    )
    res = run_py(code, EDGEPRUNE_ISA=isa)
    if isa in kernels.supported_isas():
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == [isa, isa]
    elif isa not in kernels.compiled_isas():
        assert res.returncode != 0
        assert f"EDGEPRUNE_ISA={isa} is not compiled into this build" in res.stderr
        assert "RuntimeError" in res.stderr and "Segmentation" not in res.stderr
    else:
        assert f"EDGEPRUNE_ISA={isa} is not supported by this CPU" in res.stderr


def test_unknown_override_is_a_clear_error():
    res = run_py("from edgeprune import kernels as k; k.selected_isa()", EDGEPRUNE_ISA="sse9")
    assert res.returncode == 1
    assert "RuntimeError: EDGEPRUNE_ISA=sse9 is not a kernel path; use one of reference, avx2" in res.stderr


def test_bad_override_fails_every_call_not_just_the_first():
    code = (
        "from edgeprune import kernels as k\n"
        "for _ in range(2):\n"
        "    try:\n        k.selected_isa()\n    except RuntimeError as e:\n        print('err', e)\n"
    )
    res = run_py(code, EDGEPRUNE_ISA="bogus")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("err EDGEPRUNE_ISA=bogus") == 2


def test_choice_is_logged_only_when_asked():
    quiet = run_py("from edgeprune import kernels as k; print(k.selected_isa())")
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = run_py(
        "from edgeprune import kernels as k; print(k.selected_isa())", EDGEPRUNE_LOG="1", EDGEPRUNE_ISA="reference"
    )
    assert loud.returncode == 0
    assert "edgeprune: kernel path reference (forced by EDGEPRUNE_ISA" in loud.stderr
