"""`edgeprune bench --device` against a real OpenSSH server on 127.0.0.1.

Consumes: Debian's sshd (openssh-server) started by the fixture on a free port with a host key,
a user key and an authorized_keys file generated here (its own config, TMPDIR pointing into the
test's directory so leftovers are visible), a tiny CNN exported to ONNX and to .tflite. Produces:
pass/fail: remote ONNX Runtime and LiteRT runs return the same JSON fields as local ones, and a
bad port, a refused key, a device Python without the runtime and an artifact bigger than the
device's disk each exit 2 with their one line, with nothing left in the remote temp dir.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune import _bench_runner, remote
from edgeprune.bench import bench

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


@pytest.fixture(autouse=True)
def _nothing_left(request):
    yield
    if "sshd" in request.fixturenames:
        server = request.getfixturevalue("sshd")
        # only what a run makes counts (a login shell's own files, such as a session id, may appear)
        left = [p.name for p in server.remote_tmp.iterdir() if p.name.startswith("edgeprune")]
        assert left == [], "the remote temp dir was not cleaned up"


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).eval()


def write_tiny_tflite(path: Path) -> Path:
    """A one-op LiteRT model (FULLY_CONNECTED 16 -> 4, fp32) built with LiteRT's own schema classes."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as S

    def buffer(arr=None):
        b = S.BufferT()
        if arr is not None:
            b.data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), np.uint8).tolist()
        return b

    def tensor(name, shape, index):
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), S.TensorType.FLOAT32, index
        return t

    rng = np.random.default_rng(0)
    model = S.ModelT()
    model.version, model.description = 3, "tiny fc"
    weights = rng.standard_normal((4, 16)).astype(np.float32)
    model.buffers = [buffer(), buffer(), buffer(weights), buffer(np.zeros(4, np.float32)), buffer()]
    code = S.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    model.operatorCodes = [code]
    graph = S.SubGraphT()
    graph.name = "main"
    graph.tensors = [tensor("x", (1, 16), 1), tensor("w", (4, 16), 2), tensor("b", (4,), 3), tensor("y", (1, 4), 4)]
    graph.inputs, graph.outputs = [0], [3]
    op = S.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = S.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = S.FullyConnectedOptionsT()
    graph.operators = [op]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("artifacts")
    onnx_path = d / "tiny.onnx"
    torch.onnx.export(_tiny(), (torch.zeros(1, 3, 16, 16),), str(onnx_path), dynamo=False, opset_version=17)
    return {"onnx": onnx_path, "tflite": write_tiny_tflite(d / "tiny.tflite")}


def _run_cli(args, capsys):
    from edgeprune.cli.main import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_remote_onnxruntime_matches_local_fields(sshd, artifacts, capsys):
    code, out, err = _run_cli(
        ["bench", artifacts["onnx"], "--runs", "5", "--warmup", "1", "--json", *sshd.cli_args()], capsys
    )
    assert code == 0, err
    got = json.loads(out)
    local = bench(artifacts["onnx"], runs=5, warmup=1).to_dict()
    assert set(got) == set(local)
    assert got["host"]["device"] == sshd.device and set(got["host"]) == set(local["host"]) | {"device"}
    assert got["runtime"] == "onnxruntime" and got["runtime_version"] == local["runtime_version"]
    assert got["runs"] == 5 and got["warmup"] == 1 and got["estimate"] is False
    assert got["min_ms"] <= got["median_ms"] <= got["p90_ms"] <= got["p99_ms"] <= got["max_ms"]
    assert got["peak_rss_mb"] > 10 and got["inputs"] == local["inputs"] == {"input.1": [1, 3, 16, 16]}
    assert {r["name"] for r in got["layers"]} == {r["name"] for r in local["layers"]}  # same per-op profile


def test_bench_remote_library_call_returns_a_bench_result(sshd, artifacts):
    r = remote.bench_remote(
        artifacts["onnx"],
        sshd.device,
        identity=sshd.user_key,
        runs=3,
        warmup=0,
        threads=2,
        ssh_options=sshd.options,
        remote_python=sys.executable,
    )
    assert r.runs == 3 and len(r.samples_ms) == 3 and r.threads == 2 and r.artifact == str(artifacts["onnx"])
    assert r.host["device"] == sshd.device and r.layers


def test_remote_litert(sshd, artifacts, capsys, tmp_path):
    tflite = artifacts["tflite"]
    code, out, err = _run_cli(
        ["bench", tflite, "--runs", "4", "--warmup", "1", "--json", *sshd.cli_args()],
        capsys,
    )
    assert code == 0, err
    got = json.loads(out)
    local = bench(tflite, runtime="litert", runs=4, warmup=1).to_dict()
    assert set(got) == set(local) and got["runtime"] == "litert"
    assert got["runtime_version"] == local["runtime_version"] and got["inputs"] == local["inputs"] == {"x": [1, 16]}


def test_bad_port_is_unreachable(sshd, artifacts, capsys):
    args = sshd.cli_args()
    args[1] = f"root@127.0.0.1:{_free_port()}"
    code, out, err = _run_cli(["bench", artifacts["onnx"], "--runs", "1", *args], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "host unreachable" in err and "Connection refused" in err


def test_refused_key(sshd, artifacts, capsys):
    code, out, err = _run_cli(["bench", artifacts["onnx"], "--runs", "1", *sshd.cli_args(sshd.other_key)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"error: device {sshd.device}: authentication refused" in err and "--identity" in err


def test_runtime_missing_on_the_device_says_what_to_install(sshd, artifacts, capsys):
    if subprocess.run([BARE_PYTHON, "-c", "import numpy"], capture_output=True, timeout=60).returncode == 0:
        pytest.fail(f"{BARE_PYTHON} has numpy; the test needs a Python without the runtime")
    code, out, err = _run_cli(["bench", artifacts["onnx"], "--runs", "1", *sshd.cli_args(python=BARE_PYTHON)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err == (
        f"error: device {sshd.device}: runtime onnxruntime needs numpy onnxruntime for {BARE_PYTHON} "
        "(not importable there): pip install numpy onnxruntime\n"
    )


def test_artifact_too_big_for_the_device_disk(sshd, tmp_path, capsys):
    small = tmp_path / "small-disk"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], capture_output=True)
    assert mounted.returncode == 0, f"cannot mount a small tmpfs: {mounted.stderr}"
    try:
        big = tmp_path / "big.onnx"
        big.write_bytes(b"\0" * (12 * 2**20))
        code, out, err = _run_cli(["bench", big, "--runs", "1", "--remote-tmp", small, *sshd.cli_args()], capsys)
        assert code == 2 and err.count("\n") == 1
        assert "big.onnx (12.0 MiB) is too big for the device's disk" in err and "--remote-tmp" in err
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], timeout=30)


def test_parse_device():
    assert remote.parse_device("pi@raspberrypi.local") == remote.Device("pi@raspberrypi.local", None)
    assert remote.parse_device("pi@10.0.0.2:2222") == remote.Device("pi@10.0.0.2", 2222)
    assert remote.parse_device("myboard") == remote.Device("myboard", None)  # an ~/.ssh/config Host
    assert remote.parse_device("u@[::1]:22") == remote.Device("u@::1", 22)
    for bad in ("pi@", "pi@host:99999", "a b", "pi@host:port"):
        with pytest.raises(remote.RemoteError, match="--device"):
            remote.parse_device(bad)


def test_runner_imports_only_stdlib_numpy_and_runtimes():
    tree = ast.parse(Path(_bench_runner.__file__).read_text())
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "the runner must not import edgeprune (relative import)"
            tops.add((node.module or "").split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "ai_edge_litert"}
    assert tops <= allowed, tops - allowed
