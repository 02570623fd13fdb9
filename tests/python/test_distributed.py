"""Data-parallel recovery in real processes: torchrun (gloo, CPU) against one process, SIGKILL and
--resume, a rank that dies, checkpoints killed mid-write, and the one-line errors of bad resumes.

Consumes: the cached trained demo CNN (tests/conftest.py), the shipped digits data, torchrun.
Produces: assertions on plans, accuracies, weights, files written and exit codes. Every process
is bounded by a timeout: a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgeprune import checkpoint, distributed

# A run whose plan does not depend on the world size: 2 ranks x 16 with the learning rate kept
# equals one process with batches of 32 up to float rounding (batch norm sees the global batch),
# and this small learning rate keeps the rounding from flipping near-tied channels.
RECIPE = ("--data", "digits", "--ratio", "0.5", "--round-to", "4", "--schedule", "agp", "--steps", "2")
RECIPE += ("--finetune-epochs", "2", "--lr", "0.01", "--lr-scaling", "none", "--json")
RUN_TIMEOUT = 240


def _env(tmp: Path) -> dict:
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _cli(*argv) -> list[str]:
    return [sys.executable, "-m", "edgeprune.cli.main", *argv]


def _torchrun(*argv) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] + _cli(*argv)[1:]


def _run(cmd, tmp: Path, timeout=RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(tmp))


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _kill_all(proc: subprocess.Popen) -> None:
    for pid in _descendants(proc.pid):  # torchrun starts workers in sessions of their own
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    _kill_all(proc)
    pytest.fail(f"timed out waiting for {what}")


def _checkpoint_metas(out: Path) -> list[dict]:
    metas = []
    for d in sorted((out / "checkpoints").glob("ckpt-*")):
        try:
            metas.append(json.loads((d / "meta.json").read_text()))
        except (OSError, ValueError):
            pass
    return metas


@pytest.fixture(scope="module")
def two_process_run(trained_demo_cnn_dir, tmp_path_factory):
    """The recipe under a real `torchrun --nproc-per-node 2` (gloo, CPU): out dir, result, stdout, temp dir."""
    tmp = tmp_path_factory.mktemp("ddp")
    scratch = tmp / "tmp"
    scratch.mkdir()
    out = tmp / "out"
    res = _run(
        _torchrun("prune", "--model", str(trained_demo_cnn_dir), *RECIPE, "--batch-size", "16", "--out", str(out)),
        scratch,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out, json.loads(res.stdout), res, scratch


def test_torchrun_two_processes_match_one_process(two_process_run, run_cli, trained_demo_cnn_dir, tmp_path):
    out2, r2, res2, scratch = two_process_run
    one = run_cli("prune", "--model", trained_demo_cnn_dir, *RECIPE, "--batch-size", "32", "--out", tmp_path / "one")
    assert one.code == 0, one.err
    r1 = json.loads(one.out)
    assert len(r1["plan_hashes"]) == 2
    assert r2["plan_hashes"] == r1["plan_hashes"]
    assert abs(r2["after"]["test_top1"] - r1["after"]["test_top1"]) <= 0.01
    assert r2["after"]["macs"] == r1["after"]["macs"]
    # rank 0 alone printed (one JSON document on stdout) and said how the batch scales
    assert "effective batch 32" in res2.stderr and res2.stderr.count("data-parallel: 2 processes") == 1
    # rank 0 alone wrote: the outputs a single process writes, and rank 1's scratch dir is gone
    names = {p.name for p in out2.iterdir()}
    assert names == {p.name for p in (tmp_path / "one").iterdir()}
    assert {"model", "plan.json", "plans.json", "result.json", "schedule.json", "checkpoints"} <= names
    assert list(scratch.glob("edgeprune-rank*")) == []  # torch keeps its own caches there
    saved = json.loads((out2 / "result.json").read_text())
    assert saved["plan_hashes"] == r2["plan_hashes"]


def test_sigkill_in_step_two_then_resume_gives_the_same_plan_and_weights(
    two_process_run, trained_demo_cnn_dir, tmp_path
):
    ref_out, ref, _, _ = two_process_run
    out = tmp_path / "out"
    argv = ("prune", "--model", str(trained_demo_cnn_dir), *RECIPE, "--batch-size", "16", "--out", str(out))
    proc = subprocess.Popen(
        _cli(*argv, "--nproc", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path)
    )
    try:
        _wait_for(
            lambda: any(m["step"] == 2 and m["phase"] == "epoch" for m in _checkpoint_metas(out)),
            proc,
            RUN_TIMEOUT,
            "a checkpoint inside step 2",
        )
    finally:
        _kill_all(proc)
    assert not (out / "result.json").exists()  # it really died before the end
    res = _run(_cli(*argv, "--nproc", "2", "--resume", str(out)), tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout)
    assert r["plan_hashes"] == ref["plan_hashes"]
    a = torch.load(out / "model" / "weights.pt", weights_only=True)
    b = torch.load(ref_out / "model" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_errors_name_the_sizes_and_files(two_process_run, run_cli, trained_demo_cnn_dir, tmp_path):
    ref_out = two_process_run[0]
    argv = ("prune", "--model", trained_demo_cnn_dir, *RECIPE, "--batch-size", "16")
    res = run_cli(*argv, "--resume", ref_out, "--out", tmp_path / "a")
    assert res.code == 2
    assert "2 process(es), this run has 1" in res.err and "--nproc 2" in res.err
    res = run_cli(*argv, "--resume", tmp_path / "nothing", "--out", tmp_path / "b")
    assert res.code == 2 and str(tmp_path / "nothing" / "checkpoints") in res.err
    # a damaged state file is named, not silently skipped
    broken = tmp_path / "broken"
    latest = sorted((ref_out / "checkpoints").glob("ckpt-*"))[-1]
    target = broken / "checkpoints" / latest.name
    target.mkdir(parents=True)
    for f in latest.iterdir():
        data = f.read_bytes()
        (target / f.name).write_bytes(data[:-10] + b"x" * 10 if f.name == "state.pt" else data)
    res = run_cli(*argv, "--resume", broken, "--out", tmp_path / "c")
    assert res.code == 2 and str(target / "state.pt") in res.err and "corrupt" in res.err
    res = run_cli(*argv, "--device", "cuda", "--out", tmp_path / "d")
    if not torch.cuda.is_available():
        assert res.code == 2 and "--device cuda" in res.err


def test_a_dead_rank_stops_the_other_within_60s(trained_demo_cnn_dir, tmp_path):
    """Ranks started by hand (no torchrun agent to clean up): SIGKILL rank 1, rank 0 must give up."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    argv = _cli("prune", "--model", str(trained_demo_cnn_dir), *RECIPE, "--batch-size", "16", "--out", str(out))
    procs = []
    for rank in (0, 1):
        env = dict(_env(tmp_path), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    try:
        _wait_for(lambda: _checkpoint_metas(out), procs[0], RUN_TIMEOUT, "the first checkpoint")
        procs[1].kill()
        t0 = time.monotonic()
        try:
            _, err = procs[0].communicate(timeout=90)
        except subprocess.TimeoutExpired:
            procs[0].kill()
            pytest.fail(f"rank 0 still running 90 s after rank 1 died: {procs[0].communicate()[1][-3000:]}")
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert waited < 60, waited
    assert procs[0].returncode == 2, err[-2000:]
    assert "rank 0 of 2" in err and "another rank stopped" in err and "--resume" in err


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    root = tmp_path / "ck"
    small = {"model": {"w": torch.arange(4.0)}}
    first = checkpoint.write(root, {"step": 1}, small, [torch.get_rng_state()], {"a": 1})
    code = (
        "import sys, torch\n"
        "from edgeprune import checkpoint\n"
        "big = {'model': {'w': torch.ones(48 * 2**20)}}\n"
        "checkpoint.write(sys.argv[1], {'step': 2}, big, [torch.get_rng_state()], {'a': 1})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: list(root.glob(".ckpt-*.tmp/state.pt")), proc, 120, "the checkpoint write to start")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not (root / "ckpt-000002").exists()
    ck = checkpoint.load_latest(root, world_size=1, run={"a": 1})
    assert ck.path == first and ck.meta == {"step": 1}
    assert torch.equal(ck.tensors["model"]["w"], torch.arange(4.0))
    # the next write gets the next number and clears the interrupted one
    checkpoint.write(root, {"step": 2}, small, [torch.get_rng_state()], {"a": 1})
    assert checkpoint.load_latest(root, 1).meta == {"step": 2} and not list(root.glob(".ckpt-*.tmp"))


def test_global_batches_are_the_same_samples_for_any_world_size():
    def batches(size):
        per_rank = []
        for rank in range(size):
            w = distributed.World(rank=rank, size=size)
            per_rank.append(list(distributed.GlobalBatchSampler(37, 8 // size, torch.Generator().manual_seed(3), w)))
        return [sorted(sum((r[i] for r in per_rank), [])) for i in range(len(per_rank[0]))]

    one, two, four = batches(1), batches(2), batches(4)
    assert len(one) == 5
    assert one[:4] == two[:4] == four[:4]  # full global batches: the same samples
    assert set(one[4]) <= set(two[4]) and set(one[4]) <= set(four[4])  # the short last one, padded by repeats
    assert len(two[4]) == 6 and len(four[4]) == 8


def test_device_and_launch_helpers():
    assert distributed.resolve_device("cpu") == "cpu"
    assert distributed.resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(distributed.UserError, match="--device gpu"):
        distributed.resolve_device("gpu")
    assert distributed.strip_flag(["prune", "--nproc", "2", "--out", "x", "--nproc=3"], "--nproc") == [
        "prune",
        "--out",
        "x",
    ]
    assert distributed.launch_if_requested(["prune"], 1) is None
    assert distributed.scaled_lr(0.05, "linear", distributed.World(size=4)) == pytest.approx(0.2)
    assert distributed.scaled_lr(0.05, "none", distributed.World(size=4)) == 0.05


def test_train_nproc_two_trains_data_parallel_and_saves_once(run_cli, tmp_path):
    out = tmp_path / "trained"
    res = _run(
        _cli(
            "train",
            "--model",
            "edgeprune:demo-cnn",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--nproc",
            "2",
            "--json",
        ),
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout)
    m = r["metrics"]
    assert m["world_size"] == 2 and m["effective_batch"] == 64 and m["lr"] == pytest.approx(2 * 3e-3)
    assert "effective batch 64" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "weights.pt"]
    import edgeprune as ep
    from edgeprune.recover import top1

    assert top1(ep.load(out), ep.data.load("digits").test) == pytest.approx(r["test_top1"])
    bad = run_cli(
        "train", "--model", "edgeprune:demo-cnn", "--data", "digits", "--device", "cuda", "--out", tmp_path / "x"
    )
    if not torch.cuda.is_available():
        assert bad.code == 2 and "--device cuda" in bad.err and not (tmp_path / "x").exists()


def _image_tree(root: Path, parts=("train", "val")) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for part in parts:
        for c, cls in enumerate(("a", "b", "c")):
            for i in range(6 if part == "train" else 3):
                px = (torch.rand(10, 12, generator=g) * 80 + 80 * c).to(torch.uint8).numpy()
                (root / part / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(px, mode="L").save(root / part / cls / f"{i}.png")


def test_big_image_folders_stream_from_disk_with_the_same_samples_and_training(tmp_path, monkeypatch):
    import edgeprune as ep
    import edgeprune.data as data_mod
    from edgeprune.recover import finetune

    for parts in (("train", "val"), ("train", "val", "test")):
        root = tmp_path / "-".join(parts)
        _image_tree(root, parts)
        memory = ep.data.load(str(root), image_size=8)
        monkeypatch.setattr(data_mod, "STREAM_MIN_IMAGES", 0)
        streamed = ep.data.load(str(root), image_size=8)
        monkeypatch.undo()
        assert isinstance(streamed.train, data_mod.ImageFiles) and streamed.info["streamed"]
        assert streamed.info.get("test_is_val") == memory.info.get("test_is_val")
        assert (streamed.num_classes, streamed.input_shape) == (memory.num_classes, memory.input_shape)
        for part in ("train", "val", "test"):
            a, b = getattr(memory, part), getattr(streamed, part)
            assert len(a) == len(b)
            for i in range(len(a)):
                assert torch.equal(a[i][0], b[i][0]) and int(a[i][1]) == int(b[i][1])
    # loader workers only read samples: the training is the same with 0 or 2 of them
    weights = []
    for workers in (0, 2):
        torch.manual_seed(0)
        m = ep.models.build("edgeprune:demo-cnn", width=8, num_classes=3)
        finetune(m, streamed, epochs=2, batch_size=4, workers=workers, restore_best=False, distill=False)
        weights.append(m.state_dict())
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


QAT_SCRIPT = """
import sys, torch
import edgeprune as ep
from edgeprune import distributed
from edgeprune.quant import qat

world = distributed.setup("cpu")
data = ep.data.load("digits")
qm = ep.quantize(ep.load(sys.argv[1]), data, method="minmax", calib_n=256, progress=False)
tuned = qat(qm, data.train, epochs=1, lr=1e-3, batch_size=32 // world.size, max_batches=4)
if world.main:
    sd = {t: tuned.folded.get_submodule(t).weight for t in tuned.layers}
    w0 = {t: qm.folded.get_submodule(t).weight for t in qm.layers}
    torch.save({"w": sd, "w0": w0, "loss": tuned.metadata["qat"]["history"]["train_loss"]}, sys.argv[2])
distributed.shutdown()
"""


def test_qat_under_torchrun_matches_one_process_with_the_same_global_batch(trained_demo_cnn_dir, tmp_path):
    script = tmp_path / "qat_run.py"
    script.write_text(QAT_SCRIPT)
    results = []
    for launcher in (
        [sys.executable],
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
    ):
        out = tmp_path / f"qat{len(launcher)}.pt"
        res = _run([*launcher, str(script), str(trained_demo_cnn_dir), str(out)], tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        results.append(torch.load(out, weights_only=True))
    one, two = results
    assert one["loss"] == pytest.approx(two["loss"], rel=1e-4)
    assert one["w"].keys() == two["w"].keys()
    for k in one["w"]:
        assert torch.allclose(one["w"][k], two["w"][k], atol=1e-5), k
    assert any(not torch.equal(two["w"][k], two["w0"][k]) for k in two["w"])  # it did train


STREAM_SPEC = """
import torch
from torch.utils.data import IterableDataset, TensorDataset


class Stream(IterableDataset):
    num_classes = 3

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for i in range(self.n):
            yield torch.randn(1, 8, 8, generator=g) + i % 3, torch.tensor(i % 3)


def make():
    g = torch.Generator().manual_seed(1)
    val = TensorDataset(torch.randn(9, 1, 8, 8, generator=g), torch.arange(9) % 3)
    return Stream(50), val
"""


def test_a_data_callable_may_return_a_stream(tmp_path):
    import edgeprune as ep
    from edgeprune.recover import finetune
    from edgeprune.recover.loop import RankStream

    (tmp_path / "stream_spec.py").write_text(STREAM_SPEC)
    data = ep.data.load(f"{tmp_path / 'stream_spec.py'}:make")
    assert data.num_classes == 3 and data.input_shape == (1, 8, 8)
    m = ep.models.build("edgeprune:demo-cnn", width=8, num_classes=3)
    with pytest.raises(ValueError, match="max_batches_per_epoch"):
        finetune(m, data, epochs=1)
    _, hist = finetune(m, data, epochs=2, batch_size=8, max_batches_per_epoch=4, distill=False, workers=2)
    assert len(hist["epochs"]) == 2 and all(r["loss"] > 0 for r in hist["epochs"])
    # ranks read disjoint shards of the stream and each takes the same number of samples; a shard
    # that runs out starts again
    labels = [[int(y) for _, y in RankStream(data.train, 30, distributed.World(rank=r, size=2))] for r in (0, 1)]
    assert len(labels[0]) == len(labels[1]) == 30
    items = [list(RankStream(data.train, 25, distributed.World(rank=r, size=2))) for r in (0, 1)]
    xs = [torch.stack([x for x, _ in part]) for part in items]
    assert not any(torch.equal(a, b) for a in xs[0] for b in xs[1])  # disjoint shards
    every = torch.stack([x for x, _ in data.train])
    assert sorted(map(tuple, torch.cat(xs).flatten(1).tolist())) == sorted(map(tuple, every.flatten(1).tolist()))


def test_l0_gates_train_under_torchrun_and_fold_into_plain_weights(trained_demo_cnn_dir, tmp_path):
    # L0 reparametrises every conv/linear weight with a gate whose log-alphas its own Adam steps:
    # under DDP the gates are added before the wrap (their gradients are averaged over ranks) and
    # folded at the end of every recovery, so the saved model has plain weights and exact zeros.
    out = tmp_path / "out"
    argv = ("prune", "--model", str(trained_demo_cnn_dir), "--data", "digits", "--ratio", "0.5", "--round-to", "4")
    argv += ("--schedule", "agp", "--steps", "2", "--finetune-epochs", "1", "--lr", "0.01", "--json")
    argv += ("--regularize", "l0", "--batch-size", "16", "--out", str(out))
    res = _run(_torchrun(*argv), tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout)  # rank 0 alone printed one JSON document
    assert len(r["plan_hashes"]) == 2 and r["after"]["macs"] < r["before"]["macs"]
    sched = json.loads((out / "schedule.json").read_text())
    assert sched["baseline"]["sparsity_training"]["regularizers"][0]["name"] == "l0"
    assert [[g["name"] for g in s["regularizers"]] for s in sched["steps"]] == [["l0"], []]  # the last is plain
    weights = torch.load(out / "model" / "weights.pt", weights_only=True)
    assert weights and not [k for k in weights if "parametrizations" in k or "log_alpha" in k]
    assert (out / "checkpoints").is_dir() and not list(tmp_path.glob("edgeprune-rank*"))
