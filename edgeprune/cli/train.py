"""`edgeprune train`: build a model from a spec, train it on a data spec, save it.

Consumes: ``--model SPEC`` (docs/architecture.md, Specs), ``--data SPEC``, optional ``--weights FILE``
(state_dict, ``--trust-pickle`` for pickled whole models), hyper-parameters and ``--seed``.
Produces: the trained model written with ``ep.save`` into ``--out DIR`` (model.json with the
training metrics as metadata, weights.pt), and the test top-1 printed (or JSON with ``--json``).
Bad specs exit 2 with one line naming the flag and the problem.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import _scale
from ._progress import renderer
from .common import (
    UsageError,
    add_trust_flags,
    check_model_fits_data,
    check_out,
    flag_error,
    input_paths,
    load_model,
    print_json,
    staged_out,
)

MAX_IMAGE_SIZE = 4096


# the add_parser shape of every command module on purpose: main.py registers each one, and each
# spells its own name, help, description and flags (a shared wrapper would only rename add_parser)
def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model on a dataset and save it",
        description="Train --model on --data and save it to --out with ep.save.",
    )
    # one add_argument per flag on purpose: each flag's name, type, default and help are its own
    p.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="edgeprune:demo-cnn, path/file.py:factory, package.module:factory, torchvision:NAME or a saved dir",
    )
    p.add_argument(
        "--data", required=True, metavar="SPEC", help="digits, file.npz, an image folder, or package.module:fn"
    )
    p.add_argument(
        "--image-size", type=int, default=32, metavar="PX", help="side length image folders are resized to (default 32)"
    )
    p.add_argument("--weights", metavar="FILE", help="initial weights: a state_dict file (loaded with weights_only)")
    add_trust_flags(p)
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed for init, split and shuffling (default 0)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate, cosine-decayed (default 3e-3)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="optimiser (default adamw)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads while training (default 1: identical results on every machine)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory for the saved model")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _scale.add_arguments(p, checkpoints=False, batch_size=False)
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    import edgeprune as ep

    for name, value, low in (
        ("--epochs", args.epochs, 0),
        ("--batch-size", args.batch_size, 1),
        ("--threads", args.threads, 1),
        ("--image-size", args.image_size, 1),
    ):
        if value < low:
            raise UsageError(f"{name} {value}: must be >= {low}")
    if not 0 < args.lr < float("inf"):  # (nan fails both)
        raise UsageError(f"--lr {args.lr}: must be a finite number > 0")
    if args.image_size > MAX_IMAGE_SIZE:  # (100000 px tried to allocate the whole folder at that size)
        raise UsageError(f"--image-size {args.image_size}: at most {MAX_IMAGE_SIZE} pixels a side")
    check_out(args.out, args.force, inputs=input_paths(args))
    relaunched = _scale.relaunch(args)  # --nproc N: the same command line (--trust-code too) on N processes
    if relaunched is not None:
        return relaunched
    try:
        data = ep.data.load(args.data, seed=args.seed, image_size=args.image_size)
    except ValueError as e:
        raise flag_error("--data", args.data, e) from None
    torch.manual_seed(args.seed)  # model init is part of the seeded run
    kwargs = {}
    if args.model.startswith("edgeprune:"):
        kwargs = {"num_classes": data.num_classes, "in_channels": data.input_shape[0]}
    model = load_model(args.model, args.weights, args.trust_pickle, args.trust_code, **kwargs)
    check_model_fits_data(model, data, f"--model {args.model}", f"--data {args.data}")
    if getattr(model, "input_shape", None) is None:
        model.input_shape = tuple(data.input_shape)
    world = _scale.setup(args)
    if world.distributed or world.device != "cpu":
        return _train_scaled(args, world, model, data)
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    with staged_out(args.out, args.force, inputs=input_paths(args)) as tmp:
        # alike in shape to _train_scaled's finetune call on purpose: one process trains with
        # ep.models.train, the scaled path needs the recovery loop's DDP and restore_best=False
        model, metrics = ep.models.train(
            model,
            data,
            epochs=args.epochs,
            seed=args.seed,
            lr=args.lr,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            progress=renderer(progress),
            threads=args.threads,
        )
        ep.save(model, tmp, metadata={"train": metrics, "data": args.data})
    return _report(args, data, model.edgeprune_spec, metrics)


def _train_scaled(args, world, model, data) -> int:
    """Train data-parallel (torchrun) or on a GPU with the recovery loop, which runs DDP on any device."""
    import time

    import edgeprune as ep

    from .. import distributed
    from ..recover import finetune, top1

    with _scale.scaled(args, print_json, batch_size=args.batch_size) as run:
        t0 = time.perf_counter()
        progress = not args.no_progress and not args.json and sys.stderr.isatty()
        # alike in shape to run's ep.models.train call on purpose: another loop (DDP, a GPU,
        # weight decay), fed the same flags
        model, hist = finetune(
            model,
            data,
            epochs=args.epochs,
            seed=args.seed,
            lr=run.lr,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            weight_decay=1e-4,
            workers=args.workers,
            restore_best=False,
            progress=renderer(progress),
            threads=args.threads,
        )
        model.eval()
        metrics = {
            "train_loss": [row["loss"] for row in hist["epochs"]],
            "val_history": [row.get("val") for row in hist["epochs"]],
            "val_top1": top1(model, data.val),
            "test_top1": top1(model, data.test),
            "epochs": args.epochs,
            "seed": args.seed,
            "lr": run.lr,
            "batch_size": args.batch_size,
            "effective_batch": distributed.effective_batch(args.batch_size, world),
            "world_size": world.size,
            "device": world.device,
            "optimizer": args.optimizer,
            "threads": args.threads,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        ep.save(model, run.out, metadata={"train": metrics, "data": args.data})  # rank 0: the staging dir
        return _report(args, data, model.edgeprune_spec, metrics, run.print_json)


def _report(args, data, spec, metrics, printer=print_json) -> int:
    """Print the result of a run saved to ``--out``."""
    out = Path(args.out)
    test_is_val = bool(data.info.get("test_is_val"))  # the data spec had no separate test split
    result = {
        "model": spec,
        "data": args.data,
        "out": str(out),
        "test_top1": metrics["test_top1"],
        "val_top1": metrics["val_top1"],
        "test_is_val": test_is_val,
        "metrics": metrics,
    }
    if args.json:
        printer(result)
    else:
        label = "test (= val split) top-1" if test_is_val else "test top-1"
        print(
            f"{label} {100 * metrics['test_top1']:.2f} % (val {100 * metrics['val_top1']:.2f} %), "
            f"{args.epochs} epochs, seed {args.seed}, {metrics['seconds']:.1f} s; saved to {out}"
        )
    return 0
