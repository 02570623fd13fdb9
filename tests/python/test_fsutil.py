"""fsutil: atomic writes leave either the whole file or nothing, with normal permissions."""

import os
import stat

import pytest

from edgeprune import fsutil


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_write_json_round_trip_and_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        p = fsutil.write_json(tmp_path / "a" / "x.json", {"b": 1, "a": [1, 2]})
    finally:
        os.umask(old)
    assert p.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert _mode(p) == 0o644
    assert [q.name for q in p.parent.iterdir()] == ["x.json"]


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with fsutil.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["model.onnx"]


def test_atomic_dir_replaces_whole_directory(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "stale.txt").write_text("stale")
    old = os.umask(0o022)
    try:
        with fsutil.atomic_dir(final) as tmp:
            (tmp / "new.txt").write_text("new")
    finally:
        os.umask(old)
    assert sorted(q.name for q in final.iterdir()) == ["new.txt"]
    assert _mode(final) == 0o755
    with pytest.raises(RuntimeError):
        with fsutil.atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(q.name for q in final.iterdir()) == ["new.txt"]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out"]


def test_staged_dir_refuses_before_work_and_replaces_only_on_success(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(fsutil.OutputError, match=r"out: is not empty; pass --force"):
        with fsutil.staged_dir(final, force=False):
            raise AssertionError("the block must not run")
    with pytest.raises(KeyboardInterrupt):
        with fsutil.staged_dir(final, force=True) as tmp:
            assert tmp.parent == tmp_path and tmp != final and not any(tmp.iterdir())
            (tmp / "new.txt").write_text("half")
            raise KeyboardInterrupt
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out"]
    assert (final / "old.txt").read_text() == "old" and sorted(q.name for q in final.iterdir()) == ["old.txt"]
    with fsutil.staged_dir(final, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (final / "old.txt").exists()  # the old output stays until the block succeeds
    assert sorted(q.name for q in final.iterdir()) == ["new.txt"]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(fsutil.OutputError, match="exists and is not a directory"):
        with fsutil.staged_dir(tmp_path / "file", force=True):
            pass
    with pytest.raises(fsutil.OutputError, match="a parent of it is a file"):
        with fsutil.staged_dir(tmp_path / "file" / "sub", force=False):
            pass
    with fsutil.staged_dir(tmp_path / "new" / "deep", force=False) as tmp:  # parents are created
        (tmp / "a").write_text("a")
    assert (tmp_path / "new" / "deep" / "a").read_text() == "a"
