"""`edgeprune build --device` against the real OpenSSH server of conftest_sshd.py.

Consumes: the cached trained demo CNN, the digits data, the sshd fixture (the "device" runs this
venv's Python over SSH on 127.0.0.1). Produces: pass/fail: every stage's artifact is measured on
the device, report.json carries a ``device_latency`` block (with the device's host info) beside
``host_latency`` and the estimate, report.md shows it, the command line is recorded, and a bad
device exits 2 with one line before anything is built.
"""

from __future__ import annotations

import json

from conftest_sshd import *  # noqa: F401,F403  (the sshd fixture)
from conftest_sshd import _free_port

TINY = ["--target", "rpi4", "--ratio", "0.5", "--data", "digits", "--epochs", "0", "--bench-runs", "2"]


def test_build_measures_every_stage_on_the_device(sshd, trained_demo_cnn_dir, tmp_out, run_cli):
    r = run_cli("build", "--model", trained_demo_cnn_dir, *TINY, "--out", tmp_out, "--json", *sshd.cli_args())
    assert r.code == 0, r.err
    rep = json.loads((tmp_out / "report.json").read_text())
    measured = [s for s in rep["stages"] if s.get("host_latency")]
    assert measured[0]["name"] == "baseline" and len(measured) >= 3
    for s in measured:
        dev, host = s["device_latency"], s["host_latency"]
        assert dev["host"]["device"] == str(sshd.device) and dev["host"]["cpus"] >= 1
        assert dev["artifact"] == host["artifact"] and dev["runtime"] == host["runtime"]
        assert dev["runs"] == 2 and dev["median_ms"] > 0 and s["estimate"]["total_ms"] > 0
    md = (tmp_out / "report.md").read_text()
    assert f"## Device latency (measured on {sshd.device}" in md
    assert "| host ms | device ms | target ms |" in md
    int8 = measured[-1]["device_latency"]["median_ms"]
    assert f"| int8 | {int8:.3f} |" in md or f"{int8:.3f}" in md.split("## Device latency")[1]
    manifest = json.loads((tmp_out / "manifest.json").read_text())
    assert "--device" in json.dumps(manifest) or "--device" in " ".join(rep.get("command_line") or [])
    assert not list(sshd.remote_tmp.glob("edgeprune*")), "the remote temp dir was not cleaned up"


def test_unreachable_device_exits_2_with_one_line(sshd, trained_demo_cnn_dir, tmp_out, run_cli):
    args = sshd.cli_args()
    args[1] = f"root@127.0.0.1:{_free_port()}"
    r = run_cli("build", "--model", trained_demo_cnn_dir, *TINY, "--out", tmp_out, *args)
    errors = [line for line in r.err.splitlines() if line.startswith("error: ")]  # the rest is stage progress
    assert r.code == 2 and len(errors) == 1 and r.err.splitlines()[-1] == errors[0]
    assert "unreachable" in errors[0] and f"{args[1]}" in errors[0]
    assert not tmp_out.exists()  # nothing under the final name


def test_malformed_device_fails_before_the_build(trained_demo_cnn_dir, tmp_out, run_cli):
    r = run_cli("build", "--model", trained_demo_cnn_dir, *TINY, "--out", tmp_out, "--device", "a@b@c")
    assert r.code == 2 and "--device 'a@b@c' is not [user@]host[:port]" in r.err and r.err.count("\n") == 1
