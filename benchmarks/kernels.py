"""Kernel benchmark: edgeprune's compiled kernels against numpy/OpenBLAS (and scipy CSR) measured
in the same run, single thread unless a row says otherwise.

Consumes: nothing (random matrices, fixed seed). Produces: a table on stderr and, with
``--json PATH``, a list of rows {kernel, isa, M, K, N, ms, gflops, baseline, baseline_ms, ratio}
(+ sparsity, block, threads, choice). ``gflops`` is dense-equivalent (2*M*K*N / time; int8 rows:
GOPS) so rows are comparable; ``ratio`` = baseline_ms / ms (above 1: faster than the baseline).
Every row is timed together with its own baseline, in alternating rounds (paired_ms); thread rows
(threads=2) compare against the same layer on 1 thread. ``--shape`` and ``--sparsity`` narrow a run
to some rows, with the same matrices as the full run.

Shapes: the two the kernels were tuned on, and every 1x1-conv and FC layer of MobileNetV2,
MobileNetV3-Large, EfficientNet-B0, ResNet-50 (224x224, batch 1) and a BERT-base layer (sequence
128), generated from each architecture's block table and deduplicated; such rows carry ``models``.
``--model`` and ``--kernel`` narrow a run; ``--smoke`` measures the smallest shape of each model.
Summary rows ({summary: "geomean", ratio, min_ratio, min_shape, shapes}) follow: the geometric
mean of a kernel's ratios over the run's shapes at each sparsity and its worst shape.

Run it with the machine's OpenBLAS tuning variables unset for a fair baseline:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/kernels.py --json out.json
    ... benchmarks/kernels.py --model mobilenet_v2 --kernel spmm_f32_b1 --isa avx512 --sparsity 0.9
"""

from __future__ import annotations

import os

# Single-thread baselines: must be set before numpy (OpenBLAS) is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from edgeprune import kernels  # noqa: E402

# (M, K, N): the two shapes the kernels were first tuned on (a 1x1 conv, a transformer MLP layer)
SHAPES = [(256, 256, 784), (3072, 768, 128)]
SPARSITIES = [0.5, 0.7, 0.8, 0.9, 0.95]
KERNELS = ("dense_f32", "gemm_s8", "spmm_f32_b1", "spmm_f32_b4", "spmm_s8", "scipy_csr", "auto_f32")


# --- Shapes of real models (batch 1, 224x224 input): every 1x1 conv and FC layer as (M, K, N) with
# Y[M, N] = W[M, K] X[K, N]; N = the layer's output pixels (112^2 ... 7^2) or 1 for an FC / SE layer.
# Derived from each architecture's block table, as torchvision builds it.


def _divisible(v, d=8):
    """torchvision's _make_divisible: channels rounded to a multiple of 8, never 10 % below v."""
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def _inverted_residuals(stem, stem_hw, blocks, head, classes_hidden):
    """Shapes of an inverted-residual net. blocks: (expanded, out, stride, se_squeeze or 0);
    a block whose expanded width equals its input has no expand conv; the SE squeeze/excite
    pair is two FC layers at N=1. classes_hidden: the FC layers of the classifier as (out, in)."""
    shapes, cin, hw = [], stem, stem_hw
    for exp, cout, stride, squeeze in blocks:
        if exp != cin:
            shapes.append((exp, cin, hw * hw))
        hw = (hw + stride - 1) // stride
        if squeeze:
            shapes += [(squeeze, exp, 1), (exp, squeeze, 1)]
        shapes.append((cout, exp, hw * hw))
        cin = cout
    shapes.append((head, cin, hw * hw))
    return shapes + [(o, i, 1) for o, i in classes_hidden]


def mobilenet_v2():
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    blocks, cin = [], 32
    for t, c, n, s in cfg:
        for i in range(n):
            blocks.append((cin * t, c, s if i == 0 else 1, 0))
            cin = c
    return _inverted_residuals(32, 112, blocks, 1280, [(1000, 1280)])


def mobilenet_v3_large():
    # (expanded, out, stride, SE) per block, as torchvision's mobilenet_v3_large
    cfg = [
        (16, 16, 1, 0), (64, 24, 2, 0), (72, 24, 1, 0), (72, 40, 2, 1), (120, 40, 1, 1), (120, 40, 1, 1),
        (240, 80, 2, 0), (200, 80, 1, 0), (184, 80, 1, 0), (184, 80, 1, 0), (480, 112, 1, 1), (672, 112, 1, 1),
        (672, 160, 2, 1), (960, 160, 1, 1), (960, 160, 1, 1),
    ]  # fmt: skip
    blocks = [(e, c, s, _divisible(e // 4) if se else 0) for e, c, s, se in cfg]
    return _inverted_residuals(16, 112, blocks, 960, [(1280, 960), (1000, 1280)])


def efficientnet_b0():
    # (expand ratio, stride, out, layers) per stage; SE squeeze = block input channels // 4
    cfg = [(1, 1, 16, 1), (6, 2, 24, 2), (6, 2, 40, 2), (6, 2, 80, 3), (6, 1, 112, 3), (6, 2, 192, 4), (6, 1, 320, 1)]
    blocks, cin = [], 32
    for t, s, c, n in cfg:
        for i in range(n):
            blocks.append((cin * t, c, s if i == 0 else 1, max(1, cin // 4)))
            cin = c
    return _inverted_residuals(32, 112, blocks, 1280, [(1000, 1280)])


def resnet50():
    """The 1x1 convs of ResNet-50's bottlenecks (stride on the 3x3, as torchvision) and its FC."""
    shapes, cin, hw = [], 64, 56
    for planes, n, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(n):
            shapes.append((planes, cin, hw * hw))
            out_hw = hw // stride if i == 0 else hw
            shapes.append((planes * 4, planes, out_hw * out_hw))
            if i == 0:
                shapes.append((planes * 4, cin, out_hw * out_hw))  # downsample
            cin, hw = planes * 4, out_hw
    return shapes + [(1000, 2048, 1)]


def bert_base():
    """One BERT-base encoder layer at sequence 128: fused qkv, attention output, FFN up and down."""
    return [(2304, 768, 128), (768, 768, 128), (3072, 768, 128), (768, 3072, 128)]


MODELS = {
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3_large,
    "efficientnet_b0": efficientnet_b0,
    "resnet50": resnet50,
    "bert_base": bert_base,
}


def model_shapes(names):
    """{(M, K, N): [models having it]} for the given models, deduplicated, in first-seen order."""
    out: dict[tuple[int, int, int], list[str]] = {}
    for name in names:
        for shape in MODELS[name]():
            if name not in out.setdefault(shape, []):
                out[shape].append(name)
    return out


def timed_runs(fn, min_time, min_runs=3, max_runs=1000) -> list[float]:
    """Seconds per call of `fn`, for at least min_time seconds and min_runs samples. A sample is
    the mean of a batch of calls lasting about 20 us: a sub-microsecond call timed alone also
    counted the clock's and the loop's own ~0.1 us, the same on both sides of a ratio, which
    pulled every batch-1 ratio towards 1."""
    t0 = time.perf_counter()
    fn()
    batch = max(1, min(1000, int(2e-5 / max(time.perf_counter() - t0, 1e-9))))
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_time and len(times) < max_runs):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) / batch)
    return times


def paired_ms(fn, base, rounds=5, min_time=0.05) -> tuple[float, float]:
    """Median milliseconds of `fn` and of its baseline `base`, timed in alternating rounds so both
    see the same machine: its speed drifts by several percent within a run here, and a baseline
    timed once per shape turned that drift into noise in every ratio."""
    fn()  # warm-up: page faults, packing caches, a lazily made plan
    base()
    ours, theirs = [], []
    for _ in range(rounds):
        ours += timed_runs(fn, min_time)
        theirs += timed_runs(base, min_time)
    return statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3


def random_sparse(rng, m, k, sparsity, block):
    """A weight with `sparsity` of its entries pruned: unstructured (block 1), groups of 4 output
    channels (block 4, the fp32 block format) or 1x4 input blocks (block "1x4", the int8 one)."""
    w = rng.standard_normal((m, k)).astype(np.float32)
    if block in (1, "1x1"):
        mask = rng.random((m, k)) >= sparsity
    elif block == 4:
        mask = np.repeat(rng.random(((m + 3) // 4, k)) >= sparsity, 4, axis=0)[:m]
    else:
        mask = np.repeat(rng.random((m, (k + 3) // 4)) >= sparsity, 4, axis=1)[:, :k]
    return w * mask


def row(kernel, isa, m, k, n, ms, baseline, baseline_ms, **extra):
    return {
        "kernel": kernel,
        "isa": isa,
        "M": m,
        "K": k,
        "N": n,
        "ms": round(ms, 6),
        "gflops": round(2.0 * m * k * n / (ms * 1e6), 2),
        "baseline": baseline,
        "baseline_ms": round(baseline_ms, 6),
        "ratio": round(baseline_ms / ms, 3),
        **extra,
    }


QPARAMS = dict(input_scale=0.02, input_zero_point=3, output_scale=0.05, output_zero_point=-2)


def bench(isas, shapes, sparsities, s8_sparsities, threads_rows=True, min_time=0.05, kinds=KERNELS, models=None):
    """Rows for every shape and kernel kind in `kinds`; `models` maps a shape to the models that
    have it (the rows say so)."""
    rows = []
    # The benchmark table comes from kernels.inc: a path is measured for a kernel only when it
    # implements that kernel itself (an inherited entry would just repeat its parent's row).
    listed = {(name, isa) for name, isa, _ in kernels.kernel_listing()}

    def paths(kind, asked=None):
        return [i for i in isas if (kind, i) in listed] if (asked or kind) in kinds else []

    try:
        import scipy.sparse as sps
    except ImportError:  # scipy is a test extra; without it the CSR rows are left out
        sps = None
    for m, k, n in shapes:
        tag = {"models": models[(m, k, n)]} if models and (m, k, n) in models else {}
        case = _Case(m, k, n, min_time, rows, tag)
        _dense_rows(case, paths, isas[-1], threads_rows)
        _sparse_f32_rows(case, paths, isas[-1], sparsities, threads_rows, sps if "scipy_csr" in kinds else None)
        _sparse_s8_rows(case, paths, isas[-1], s8_sparsities, threads_rows)
    return rows


class _Case:
    """One shape's matrices (one generator per shape and per pruned weight, so a run narrowed by
    --shape or --sparsity measures the very matrices of the full run) and its numpy baselines."""

    def __init__(self, m, k, n, min_time, rows, tag):
        self.m, self.k, self.n, self.min_time, self.rows, self.tag = m, k, n, min_time, rows, tag
        rng = np.random.default_rng([m, k, n])
        self.w = rng.standard_normal((m, k)).astype(np.float32)
        self.b = rng.standard_normal(m).astype(np.float32)
        self.x_nk = rng.standard_normal((n, k)).astype(np.float32)
        self.x_kn = np.ascontiguousarray(self.x_nk.T)
        self.wt = np.ascontiguousarray(self.w.T)
        self.xq_nk = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        self.xq_kn = np.ascontiguousarray(self.xq_nk.T)

    # numpy baselines in each layout: x @ W^T (Linear) and W @ X (channel-major)
    def np_nk(self):
        return np.matmul(self.x_nk, self.wt)

    def np_kn(self):
        return np.matmul(self.w, self.x_kn)

    def sparse_weight(self, s, block, salt):
        seed = [self.m, self.k, self.n, round(s * 1000), int(str(block)[-1]), salt]
        return random_sparse(np.random.default_rng(seed), self.m, self.k, s, block)

    def add(self, kernel, isa, fn, baseline, base_fn, **extra):
        """A row for `fn` against `base_fn`, timed together (paired_ms)."""
        ms, base_ms = paired_ms(fn, base_fn, min_time=self.min_time)
        self.rows.append(row(kernel, isa, self.m, self.k, self.n, ms, baseline, base_ms, **extra, **self.tag))


def _dense_rows(c, paths, best, threads_rows):
    for isa in paths("dense_f32"):
        lin = kernels.Linear(c.w, c.b, isa=isa)
        c.add("dense_f32", isa, lambda: lin(c.x_nk), "numpy sgemm x@W.T", c.np_nk, threads=1)
    if threads_rows and paths("dense_f32"):
        lin1 = kernels.Linear(c.w, c.b, isa=best)
        lin2 = kernels.Linear(c.w, c.b, isa=best, threads=2)
        c.add("dense_f32", lin2.isa, lambda: lin2(c.x_nk), "edgeprune 1 thread", lambda: lin1(c.x_nk), threads=2)
    for isa in paths("gemm_s8"):
        q = kernels.QLinear(c.w, c.b, **QPARAMS, sparse="dense", isa=isa)
        c.add("gemm_s8", isa, lambda: q(c.xq_nk), "numpy sgemm x@W.T (fp32)", c.np_nk, threads=1)
    if threads_rows and paths("gemm_s8"):
        q1 = kernels.QLinear(c.w, c.b, **QPARAMS, sparse="dense", isa=best)
        q2 = kernels.QLinear(c.w, c.b, **QPARAMS, sparse="dense", isa=best, threads=2)
        c.add("gemm_s8", q2.isa, lambda: q2(c.xq_nk), "edgeprune 1 thread", lambda: q1(c.xq_nk), threads=2)


def _sparse_f32_rows(c, paths, best, sparsities, threads_rows, sps):
    for s in sparsities:
        for block in (1, 4):
            ws = c.sparse_weight(s, block, 32)
            if sps is not None and block == 1:
                csr = sps.csr_matrix(ws)
                c.add("scipy_csr", "scipy", lambda: csr @ c.x_kn, "numpy sgemm W@X", c.np_kn, sparsity=s, threads=1)
            extra = dict(sparsity=s, block=block, threads=1)
            if block == 1 and paths("spmm_f32_b1", "auto_f32"):
                # what a user gets with kernel="auto" (dense where sparse does not pay), best path
                sa = kernels.SparseLinear(ws, c.b, isa=best, kernel="auto")
                c.add("auto_f32", sa.isa, lambda: sa.spmm(c.x_kn), "numpy sgemm W@X", c.np_kn, **extra,
                      choice=sa.kernel)  # fmt: skip
            for isa in paths(f"spmm_f32_b{block}"):
                sp = kernels.SparseLinear(ws, c.b, block=(block, 1), isa=isa, kernel="sparse")
                c.add(f"spmm_f32_b{block}", isa, lambda: sp.spmm(c.x_kn), "numpy sgemm W@X", c.np_kn, **extra,
                      choice=sp.kernel)  # fmt: skip
            if threads_rows and s == 0.9 and paths(f"spmm_f32_b{block}"):
                sp1 = kernels.SparseLinear(ws, c.b, block=(block, 1), isa=best, kernel="sparse")
                sp2 = kernels.SparseLinear(ws, c.b, block=(block, 1), isa=best, kernel="sparse", threads=2)
                c.add(f"spmm_f32_b{block}", sp2.isa, lambda: sp2.spmm(c.x_kn), "edgeprune 1 thread",
                      lambda: sp1.spmm(c.x_kn), **{**extra, "threads": 2}, choice="sparse")  # fmt: skip


def _sparse_s8_rows(c, paths, best, s8_sparsities, threads_rows):
    # sparse int8: 1x4-block pruned weights (the format's own pattern) and unstructured ones
    for s in s8_sparsities:
        for pattern in ("1x4", "1x1"):
            ws = c.sparse_weight(s, pattern, 8)
            for isa in paths("spmm_s8"):
                q = kernels.QLinear(ws, c.b, **QPARAMS, sparse="sparse", isa=isa)
                c.add("spmm_s8", isa, lambda: q.gemm_kn(c.xq_kn), "numpy sgemm W@X (fp32)", c.np_kn, sparsity=s,
                      block=pattern, choice=q.kernel, threads=1)  # fmt: skip
            if threads_rows and s == 0.9 and pattern == "1x4" and paths("spmm_s8"):
                q1 = kernels.QLinear(ws, c.b, **QPARAMS, sparse="sparse", isa=best)
                q2 = kernels.QLinear(ws, c.b, **QPARAMS, sparse="sparse", isa=best, threads=2)
                c.add("spmm_s8", q2.isa, lambda: q2.gemm_kn(c.xq_kn), "edgeprune 1 thread",
                      lambda: q1.gemm_kn(c.xq_kn), sparsity=s, block="1x4", choice="sparse", threads=2)  # fmt: skip


def summaries(rows):
    """Per kernel, path, sparsity, block and thread count over two or more shapes: the geometric
    mean of the ratios and the worst shape."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["kernel"], r["isa"], r.get("sparsity"), r.get("block"), r["threads"], r["baseline"])
        groups.setdefault(key, []).append(r)
    out = []
    for (kernel, isa, s, block, threads, baseline), rs in groups.items():
        if len(rs) < 2:
            continue
        worst = min(rs, key=lambda r: r["ratio"])
        geo = float(np.exp(np.mean([np.log(r["ratio"]) for r in rs])))
        out.append({"summary": "geomean", "kernel": kernel, "isa": isa, "sparsity": s, "block": block,
                    "threads": threads, "baseline": baseline, "shapes": len(rs), "ratio": round(geo, 3),
                    "min_ratio": worst["ratio"], "min_shape": f"{worst['M']}x{worst['K']}x{worst['N']}"})  # fmt: skip
    return out


def print_table(rows):
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for r in rows:
            print(r, file=sys.stderr)
        return
    t = Table(title="edgeprune kernels vs baselines (ratio = baseline_ms / ms)")
    cols = ("kernel", "isa", "shape", "sparsity", "block", "thr", "ms", "gflops", "base_ms", "ratio")
    for col in cols:
        t.add_column(col, justify="left" if col in ("kernel", "isa", "shape") else "right")
    for r in rows:
        summary = "summary" in r
        t.add_row(
            r["kernel"],
            r["isa"],
            f"geomean of {r['shapes']} (min {r['min_shape']}: {r['min_ratio']:.2f})"
            if summary
            else f"{r['M']}x{r['K']}x{r['N']}",
            str(r.get("sparsity") if r.get("sparsity") is not None else ""),
            str(r.get("block") if r.get("block") is not None else ""),
            str(r["threads"]),
            "" if summary else f"{r['ms']:.3f}",
            "" if summary else f"{r['gflops']:.0f}",
            "" if summary else f"{r['baseline_ms']:.3f}",
            f"{r['ratio']:.2f}",
        )
    Console(stderr=True, width=170).print(t)


def shape_arg(text):
    try:
        m, k, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MxKxN (for example 256x256x784)") from None
    if min(m, k, n) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: M, K and N must be positive")
    return m, k, n


def sparsity_arg(text):
    try:
        s = float(text)
    except ValueError:
        s = -1.0
    if not 0.0 <= s < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a sparsity in [0, 1)")
    return s


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH", help="write the rows as a JSON list")
    ap.add_argument(
        "--isa", action="append", help="kernel path(s) to measure (default: every supported one but reference)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="fewer sparsities, no thread rows; the first tuned shape unless --model says",
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest shape of each selected model, sparsity 0.9, no thread rows (a check that it runs)",
    )
    defaults = " and ".join("x".join(map(str, s)) for s in SHAPES)
    ap.add_argument(
        "--shape",
        action="append",
        type=shape_arg,
        metavar="MxKxN",
        help=f"measure this shape only (repeatable; default {defaults} and every shape of every model)",
    )
    ap.add_argument(
        "--model",
        action="append",
        choices=["tuned", *MODELS],
        help="measure the 1x1-conv and FC shapes of this model only (repeatable; tuned: " + defaults + ")",
    )
    ap.add_argument("--kernel", action="append", choices=KERNELS, help="measure this kernel only (repeatable)")
    ap.add_argument(
        "--sparsity",
        action="append",
        type=sparsity_arg,
        metavar="S",
        help="measure the sparse rows at this sparsity only (repeatable)",
    )
    ap.add_argument(
        "--min-time",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="time per round of each row and of its baseline (5 rounds each; default 0.05)",
    )
    return ap.parse_args(argv)


def select_shapes(args):
    """The shapes a run measures, and the models each belongs to."""
    names = args.model or ["tuned", *MODELS]
    tagged = model_shapes([n for n in names if n != "tuned"])
    if args.smoke:
        smallest = {}
        for shape, owners in tagged.items():
            for name in owners:
                if name not in smallest or np.prod(shape) < np.prod(smallest[name]):
                    smallest[name] = shape
        return list(dict.fromkeys(smallest.values())), tagged
    if args.shape:
        return args.shape, tagged
    if args.quick and not args.model:
        return SHAPES[:1], tagged
    tuned = SHAPES if "tuned" in names else []
    return list(dict.fromkeys([*tuned, *tagged])), tagged


def main(argv=None) -> int:
    args = parse_args(argv)
    # the reference loops are the test oracle, 100x slower: measured only when asked for
    isas = args.isa or [i for i in kernels.supported_isas() if i != "reference"] or ["reference"]
    bad = [i for i in isas if i not in kernels.supported_isas()]
    if bad:
        print(
            f"error: --isa {bad[0]} is not supported here (supported: {', '.join(kernels.supported_isas())})",
            file=sys.stderr,
        )
        return 2
    if not args.min_time > 0:
        print(f"error: --min-time must be positive, not {args.min_time}", file=sys.stderr)
        return 2
    shapes, tagged = select_shapes(args)
    few = args.quick or args.smoke
    sparsities = args.sparsity or ([0.9] if args.smoke else [0.5, 0.9] if args.quick else SPARSITIES)
    s8_sparsities = args.sparsity or ([0.9] if few else [0.7, 0.9, 0.95])
    kinds = tuple(args.kernel or KERNELS)
    rows = bench(isas, shapes, sparsities, s8_sparsities, not few, args.min_time, kinds, tagged)
    rows += summaries(rows)
    print_table(rows)
    env = {v: os.environ.get(v) for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"selected isa: {kernels.selected_isa()}; OpenBLAS env: {env}", file=sys.stderr)
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
