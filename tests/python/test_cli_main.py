"""The CLI dispatcher: one subcommand's imports only, one-line usage errors with exit 2."""

import subprocess
import sys

BLOCK_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _Block())
from edgeprune.cli.main import main
"""


def _python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_bench_and_targets_start_without_torch():
    # `edgeprune bench` is what users run on a Pi or a Jetson, where torch is often absent.
    r = _python(BLOCK_TORCH + "sys.exit(main(['bench', '--help']))")
    assert r.returncode == 0, r.stderr
    assert "usage: edgeprune bench" in r.stdout
    r = _python(BLOCK_TORCH + "rc = main(['targets', 'list', '--json']); print('torch' in sys.modules); sys.exit(rc)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("False")


def test_unknown_command_is_one_line_exit_2():
    r = subprocess.run(
        [sys.executable, "-m", "edgeprune.cli.main", "nosuch"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid choice: 'nosuch'" in lines[0] and "bench" in lines[0]


def test_version():
    r = subprocess.run(
        [sys.executable, "-m", "edgeprune.cli.main", "--version"], capture_output=True, text=True, timeout=120
    )
    from edgeprune import __version__

    assert r.returncode == 0 and r.stdout.strip() == f"edgeprune {__version__}"


def test_public_functions_survive_their_module_import():
    # edgeprune.export / .estimate / .bench are modules named like the public functions.
    code = (
        "import edgeprune as ep, edgeprune.export, edgeprune.estimate, edgeprune.bench; "
        "print(ep.export is ep.__dict__['export'], callable(ep.export), callable(ep.estimate), callable(ep.bench))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True", "True"]
