"""Scale-out benchmark: recovery throughput (images/s) of 1 process against N data-parallel processes.

Consumes: nothing (the demo CNN at a width where convolutions dominate, on the shipped digits).
Produces: a table on stderr and, with ``--json PATH``, rows {model, width, batch_per_rank, world_size,
images_per_s, baseline, baseline_images_per_s, ratio, efficiency, rounds}: ``ratio`` is the N-process
throughput over the 1-process throughput measured in the same run (rounds alternate between the two,
medians), ``efficiency`` = ratio / N (1.0 = perfect scaling).

Each measurement is a real run of ``edgeprune.recover.finetune``: one process on its own, or N under
``torch.distributed.run`` (gloo on CPU, DDP, one intra-op thread per process). The first epoch warms
up; the second is timed (its loop only, no validation).

    .venv/bin/python benchmarks/scale.py --json build/bench-scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def worker(args) -> None:
    """One rank of a measured run: fine-tune for two epochs of ``--batches`` batches, report epoch 2."""
    import torch

    import edgeprune as ep
    from edgeprune import distributed
    from edgeprune.recover import finetune

    world = distributed.setup("cpu")
    data = ep.data.load("digits")
    torch.manual_seed(0)
    model = ep.models.build("edgeprune:demo-cnn", width=args.width)
    _, hist = finetune(
        model,
        (data.train, None),
        epochs=2,
        batch_size=args.batch,
        max_batches_per_epoch=args.batches,
        lr=0.01,
        distill=False,
        threads=1,
    )
    if world.main:
        seconds = hist["epochs"][1]["seconds"]
        images = args.batches * args.batch * world.size
        Path(args.result).write_text(json.dumps({"seconds": seconds, "images": images}))
    distributed.shutdown()


def measure(nproc: int, args) -> float:
    """Images per second of one run with ``nproc`` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "r.json"
        cmd = [
            __file__,
            "--worker",
            "--width",
            str(args.width),
            "--batch",
            str(args.batch),
            "--batches",
            str(args.batches),
            "--result",
            str(result),
        ]
        if nproc == 1:
            cmd = [sys.executable, *cmd]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *cmd]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("WORLD_SIZE", None)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark run with {nproc} process(es) failed:\n{proc.stderr[-3000:]}")
        r = json.loads(result.read_text())
    return r["images"] / r["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=2, help="processes of the data-parallel run (default 2)")
    p.add_argument("--width", type=int, default=64, help="demo CNN width (default 64: ~16x the MACs of 16)")
    p.add_argument("--batch", type=int, default=32, help="batch per process (default 32)")
    p.add_argument("--batches", type=int, default=12, help="timed batches per process (default 12)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of 1 and N processes (default 3)")
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    one, many = [], []
    for r in range(args.rounds):
        one.append(measure(1, args))
        many.append(measure(args.nproc, args))
        print(
            f"round {r + 1}: 1 process {one[-1]:.1f} img/s, {args.nproc} processes {many[-1]:.1f} img/s",
            file=sys.stderr,
        )
    base, ours = statistics.median(one), statistics.median(many)
    row = {
        "model": "edgeprune:demo-cnn",
        "width": args.width,
        "batch_per_rank": args.batch,
        "world_size": args.nproc,
        "images_per_s": round(ours, 2),
        "baseline": "1 process",
        "baseline_images_per_s": round(base, 2),
        "ratio": round(ours / base, 3),
        "efficiency": round(ours / base / args.nproc, 3),
        "rounds": args.rounds,
    }
    print(json.dumps(row), file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([row], indent=2) + "\n")


if __name__ == "__main__":
    main()
