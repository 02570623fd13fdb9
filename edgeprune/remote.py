"""Benchmarks on a device over SSH: copy, run the same measurement there, bring the JSON back.

Consumes: an artifact on this machine (``.onnx``, ``.tflite``), a device ``[user@]host[:port]``
(or a ``Host`` alias of ``~/.ssh/config``), optionally an identity file, extra ``ssh -o``
options and the device's Python. Produces: the :class:`edgeprune.bench.BenchResult` of a run
on the device, with ``host`` describing the device (``host["device"]`` is what was passed).

How: the system ``ssh`` and ``scp`` (so ``~/.ssh/config``, agents and jump hosts work as the
user set them up), always in BatchMode (never a password prompt) with a connect timeout and a
bounded wait for every step. A temp dir is made on the device, the artifact and
``edgeprune/_bench_runner.py`` (stdlib + numpy + the runtime, no edgeprune install needed) are
copied there, the runner prints its JSON, and the dir is removed whatever happened.

Every failure a user can fix is a :class:`RemoteError` (a UserError: the CLI prints one line
and exits 2): host unreachable, authentication refused, host key not trusted, the runtime or
numpy missing on the device (with the ``pip install`` to run there), the artifact too big for
the device's free disk, a run that timed out.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

from . import _bench_runner as runner
from .bench import BenchResult, default_runtime
from .errors import UserError

RUNNER = Path(runner.__file__)
CONNECT_TIMEOUT_S = 10
STEP_TIMEOUT_S = 120.0  # mkdir, copy, cleanup; the measurement itself gets run_timeout
# room on the device's disk beyond the two files (ORT's profile file, Python's bytecode)
DISK_MARGIN_BYTES = 4 * 1024 * 1024

__all__ = ["Device", "RemoteError", "parse_device", "bench_remote", "ssh_base"]


class RemoteError(UserError):
    """A remote benchmark failed for a reason the user can fix (one line)."""


@dataclasses.dataclass(frozen=True)
class Device:
    """Where to run: ``destination`` is what ssh gets (``user@host`` or a config alias)."""

    destination: str
    port: int | None = None

    def __str__(self) -> str:
        return self.destination + (f":{self.port}" if self.port else "")


def parse_device(text: str) -> Device:
    """``user@host``, ``user@host:2222``, ``host``, ``[::1]:2222`` -> Device (RemoteError if malformed)."""
    m = re.fullmatch(r"(?:(?P<user>[^@\s:/]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^@\s:/\[\]]+)(?::(?P<port>\d+))?", text)
    if not m:
        raise RemoteError(f"--device {text!r} is not [user@]host[:port]; e.g. --device pi@raspberrypi.local:22")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise RemoteError(f"--device {text!r}: port {port} is not in 1..65535")
    host = m["host"].strip("[]")
    return Device(f"{m['user']}@{host}" if m["user"] else host, port)


def ssh_base(device: Device, identity=None, options=(), program: str = "ssh") -> list[str]:
    """The ``ssh``/``scp`` command prefix: BatchMode, a connect timeout, the port and identity."""
    cmd = [program, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
    if program == "scp":
        cmd.append("-q")
    if device.port:
        cmd += ["-P" if program == "scp" else "-p", str(device.port)]
    if identity:
        cmd += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    for opt in options:
        cmd += ["-o", opt]
    return cmd


def _classify(device: Device, stderr: str) -> RemoteError:
    """A one-line RemoteError from ssh's exit-255 stderr."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else "no message"
    if "Permission denied" in text or "Too many authentication failures" in text:
        return RemoteError(
            f"device {device}: authentication refused ({last}); pass the right key with --identity KEY "
            f"or add yours with ssh-copy-id {device.destination}"
        )
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return RemoteError(
            f"device {device}: host key not trusted; connect once with `ssh {device.destination}` to check and "
            "accept it (or fix ~/.ssh/known_hosts)"
        )
    return RemoteError(f"device {device}: host unreachable ({last}); check the address, the port and that sshd runs")


class _Session:
    """ssh/scp calls to one device with the same options; every call bounded in time."""

    def __init__(self, device: Device, identity, options):
        self.device, self.identity, self.options = device, identity, tuple(options)

    def run(self, command: str, timeout: float = STEP_TIMEOUT_S, what: str = "ssh") -> subprocess.CompletedProcess:
        cmd = [*ssh_base(self.device, self.identity, self.options), self.device.destination, command]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"device {self.device}: {what} did not finish within {timeout:g} s") from None
        except FileNotFoundError:
            raise RemoteError(
                "ssh is not installed here; install the OpenSSH client (apt install openssh-client)"
            ) from None
        if proc.returncode == 255:
            raise _classify(self.device, proc.stderr)
        return proc

    def copy(self, files: list[Path], remote_dir: str, timeout: float = STEP_TIMEOUT_S) -> None:
        cmd = [*ssh_base(self.device, self.identity, self.options, "scp"), *map(str, files)]
        cmd.append(f"{self.device.destination}:{remote_dir}/")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteError(
                f"device {self.device}: copying the artifact did not finish within {timeout:g} s"
            ) from None
        if proc.returncode != 0:
            err = proc.stderr.strip()
            if "Permission denied" in err or "Connection" in err or "Host key" in err:
                raise _classify(self.device, err)
            if "No space left" in err:
                raise RemoteError(f"device {self.device}: the artifact does not fit on the device's disk ({err})")
            raise RemoteError(f"device {self.device}: scp failed ({err.splitlines()[-1] if err else 'no message'})")


def _prepare(session: _Session, python: str, remote_tmp: str | None) -> tuple[str, int]:
    """Make the remote temp dir; return it and the free bytes there (python must exist)."""
    parent = shlex.quote(remote_tmp) if remote_tmp else '"${TMPDIR:-/tmp}"'
    script = (
        f'd=$(mktemp -d {parent}/edgeprune-bench.XXXXXX) || exit 3; echo "$d"; '
        "df -Pk \"$d\" | awk 'NR==2 {print $4}'; "
        f'command -v {shlex.quote(python)} >/dev/null || {{ rm -rf "$d"; exit 4; }}'
    )
    proc = session.run(script, what="making a temp dir")
    if proc.returncode == 4:
        raise RemoteError(
            f"device {session.device}: no {python} there; install Python 3 on the device or pass --remote-python PATH"
        )
    lines = proc.stdout.split()
    if proc.returncode != 0 or not lines:
        raise RemoteError(f"device {session.device}: cannot make a temp dir ({proc.stderr.strip() or 'no message'})")
    free = int(lines[1]) * 1024 if len(lines) > 1 and lines[1].isdigit() else -1
    return lines[0], free


# the knobs of bench.bench repeated on purpose: the device runs that function with them, so
# names and defaults match; the SSH ones are added here
def bench_remote(
    artifact,
    device: str | Device,
    identity=None,
    runtime: str | None = None,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    input_shape=None,
    layer_profile: bool = True,
    seed: int = 0,
    remote_python: str = "python3",
    ssh_options=(),
    remote_tmp: str | None = None,
    run_timeout: float = 1800.0,
) -> BenchResult:
    """Measure ``artifact`` on ``device`` with the same code as a local ``edgeprune.bench``.

    ``ssh_options``: extra ``ssh -o`` settings (``"UserKnownHostsFile=..."``); ``remote_python``:
    the device's interpreter (a venv's ``bin/python``); ``remote_tmp``: where on the device the
    temp dir goes (default ``$TMPDIR`` or ``/tmp``; a Pi's /tmp may be a small tmpfs). Returns a BenchResult whose ``artifact``
    is the local path and whose ``host`` describes the device, plus ``host["device"]``.
    """
    path = Path(artifact)
    if not path.is_file():
        raise RemoteError(f"no artifact at {path}; pass a file written by `edgeprune build` or `export`")
    runtime = runtime or default_runtime(path)
    if runtime not in runner.RUNNER_RUNTIMES:
        raise RemoteError(f"runtime {runtime!r} cannot run on a device; use one of {', '.join(runner.RUNNER_RUNTIMES)}")
    if threads < 1 or warmup < 0 or runs < 1:
        raise RemoteError(f"need threads >= 1, warmup >= 0, runs >= 1 (got {threads}, {warmup}, {runs})")
    dev = device if isinstance(device, Device) else parse_device(device)
    session = _Session(dev, identity, ssh_options)
    remote_dir, free = _prepare(session, remote_python, remote_tmp)
    try:
        need = path.stat().st_size + RUNNER.stat().st_size + DISK_MARGIN_BYTES
        if 0 <= free < need:
            raise RemoteError(
                f"device {dev}: {path.name} ({path.stat().st_size / 2**20:.1f} MiB) is too big for the device's "
                f"disk ({free / 2**20:.1f} MiB free in {remote_dir.rsplit('/', 1)[0]}); free space there or pass --remote-tmp DIR"
            )
        session.copy([path, RUNNER], remote_dir)
        request = runner.make_request(
            f"{remote_dir}/{path.name}", runtime, threads, warmup, runs, input_shape, layer_profile, seed
        )
        command = f"cd {shlex.quote(remote_dir)} && {shlex.quote(remote_python)} {RUNNER.name} " + shlex.quote(
            json.dumps(request)
        )
        proc = session.run(command, timeout=run_timeout, what="the benchmark")
        out = _result(dev, proc, remote_python)
    finally:
        _cleanup(session, remote_dir)
    out["host"] = {**out.get("host", {}), "device": str(dev)}
    return BenchResult.from_dict({**out, "artifact": str(path)})


def _result(dev: Device, proc: subprocess.CompletedProcess, python: str) -> dict[str, Any]:
    err = proc.stderr.strip()
    if proc.returncode == 2 and err:
        raise RemoteError(f"device {dev}: {err.splitlines()[-1]}")
    if proc.returncode == 127:
        raise RemoteError(f"device {dev}: {python} not found; pass --remote-python PATH")
    if proc.returncode != 0:
        raise RemoteError(f"device {dev}: the runner failed (exit {proc.returncode}): {err[-500:] or 'no message'}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise RemoteError(f"device {dev}: the runner printed no JSON ({proc.stdout[:200]!r})") from None


def _cleanup(session: _Session, remote_dir: str) -> None:
    # only ever a dir mktemp made for us
    if re.fullmatch(r"/[\w./-]*/edgeprune-bench\.\w+", remote_dir):
        try:
            session.run(f"rm -rf {shlex.quote(remote_dir)}", what="cleaning up")
        except RemoteError:
            pass  # the device went away; its temp dir is all that is left behind
