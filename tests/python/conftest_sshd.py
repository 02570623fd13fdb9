"""A real OpenSSH server on 127.0.0.1 for the remote-benchmark tests (`bench --device`, `build --device`).

Consumes: Debian's sshd (openssh-server), ssh-keygen. Produces: the ``Sshd`` class (a free port, a
host key, a user key in authorized_keys, a key the server does not know, its own known_hosts and
config, TMPDIR on the device pointing into the test's directory so leftovers are visible) and the
module-scoped ``sshd`` fixture that starts and stops one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# a Python without numpy or onnxruntime: Debian's own (the venv's has both)
BARE_PYTHON = "/usr/bin/python3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on port {port} within {seconds} s")


class Sshd:
    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.user_key = root / "id_user"
        self.other_key = root / "id_other"
        self.remote_tmp = root / "remote-tmp"
        self.remote_tmp.mkdir()
        host_pub = _keygen(root / "host_key")
        (root / "authorized_keys").write_text(_keygen(self.user_key) + "\n")
        _keygen(self.other_key)  # a key the server does not know
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        self.config = root / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"HostKey {root / 'host_key'}",
                    f"PidFile {root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {root / 'authorized_keys'}",
                    "StrictModes no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    f"SetEnv TMPDIR={self.remote_tmp}",
                    "Subsystem sftp /usr/lib/openssh/sftp-server",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        self.device = f"{os.environ.get('USER') or 'root'}@127.0.0.1:{self.port}"
        # trust exactly this host key; never read or write the user's known_hosts
        self.options = [f"UserKnownHostsFile={root / 'known_hosts'}", "StrictHostKeyChecking=yes"]

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation dir
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config), "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def cli_args(self, key: Path | None = None, python: str = sys.executable) -> list[str]:
        """The "device" runs this venv's Python, which has numpy, onnxruntime and ai-edge-litert."""
        args = ["--device", self.device, "--identity", str(key or self.user_key), "--remote-python", python]
        for opt in self.options:
            args += ["--ssh-option", opt]
        return args


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the sshd fixture runs sshd as root (as `make test` does); run the tests as root")
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()
