"""Kernel benchmark: edgeprune's compiled kernels against numpy/OpenBLAS (and scipy CSR) measured
in the same run, single thread unless a row says otherwise.

Consumes: nothing (random matrices, fixed seed). Produces: a table on stderr and, with
``--json PATH``, a list of rows {kernel, isa, M, K, N, ms, gflops, baseline, baseline_ms, ratio}
(+ sparsity, block, threads, choice). ``gflops`` is dense-equivalent (2*M*K*N / time; int8 rows:
GOPS) so rows are comparable; ``ratio`` = baseline_ms / ms (above 1: faster than the baseline).
Every row is timed together with its own baseline, in alternating rounds (paired_ms); thread rows
(threads=2) compare against the same layer on 1 thread. ``--shape`` and ``--sparsity`` narrow a run
to some rows, with the same matrices as the full run.

Run it with the machine's OpenBLAS tuning variables unset for a fair baseline:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/kernels.py --json out.json
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

SHAPES = [(256, 256, 784), (3072, 768, 128)]  # (M, K, N): a 1x1 conv, a transformer MLP layer
SPARSITIES = [0.5, 0.7, 0.8, 0.9, 0.95]


def timed_runs(fn, min_time, min_runs=3, max_runs=1000) -> list[float]:
    """Seconds per call of `fn`, for at least min_time seconds and min_runs calls."""
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_time and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
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


def bench(isas, shapes, sparsities, s8_sparsities, threads_rows=True, min_time=0.05):
    rows = []
    best = isas[-1]
    # The benchmark table comes from kernels.inc: a path is measured for a kernel only when it
    # implements that kernel itself (an inherited entry would just repeat its parent's row).
    listed = {(name, isa) for name, isa, _ in kernels.kernel_listing()}

    def paths(kind):
        return [i for i in isas if (kind, i) in listed]

    try:
        import scipy.sparse as sps
    except ImportError:  # scipy is a test extra; without it the CSR rows are left out
        sps = None
    for m, k, n in shapes:
        # one generator per shape and per pruned weight: a run narrowed by --shape or --sparsity
        # measures the very matrices of the full run
        rng = np.random.default_rng([m, k, n])
        w = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        x_nk = rng.standard_normal((n, k)).astype(np.float32)
        x_kn = np.ascontiguousarray(x_nk.T)
        wt = np.ascontiguousarray(w.T)
        xq_nk = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        xq_kn = np.ascontiguousarray(xq_nk.T)

        # numpy baselines in each layout: x @ W^T (Linear) and W @ X (channel-major)
        def np_nk():
            return np.matmul(x_nk, wt)

        def np_kn():
            return np.matmul(w, x_kn)

        def add(kernel, isa, fn, baseline, base_fn, **extra):
            """A row for `fn` against `base_fn`, timed together (paired_ms)."""
            ms, base_ms = paired_ms(fn, base_fn, min_time=min_time)
            rows.append(row(kernel, isa, m, k, n, ms, baseline, base_ms, **extra))

        for isa in paths("dense_f32"):
            lin = kernels.Linear(w, b, isa=isa)
            add("dense_f32", isa, lambda: lin(x_nk), "numpy sgemm x@W.T", np_nk, threads=1)
        if threads_rows:
            lin1 = kernels.Linear(w, b, isa=best)
            lin2 = kernels.Linear(w, b, isa=best, threads=2)
            add("dense_f32", lin2.isa, lambda: lin2(x_nk), "edgeprune 1 thread", lambda: lin1(x_nk), threads=2)
        for isa in paths("gemm_s8"):
            q = kernels.QLinear(w, b, **QPARAMS, sparse="dense", isa=isa)
            add("gemm_s8", isa, lambda: q(xq_nk), "numpy sgemm x@W.T (fp32)", np_nk, threads=1)
        if threads_rows:
            q1 = kernels.QLinear(w, b, **QPARAMS, sparse="dense", isa=best)
            q2 = kernels.QLinear(w, b, **QPARAMS, sparse="dense", isa=best, threads=2)
            add("gemm_s8", q2.isa, lambda: q2(xq_nk), "edgeprune 1 thread", lambda: q1(xq_nk), threads=2)
        for s in sparsities:
            for block in (1, 4):
                ws = random_sparse(np.random.default_rng([m, k, n, round(s * 1000), block, 32]), m, k, s, block)
                if sps is not None and block == 1:
                    csr = sps.csr_matrix(ws)
                    add("scipy_csr", "scipy", lambda: csr @ x_kn, "numpy sgemm W@X", np_kn, sparsity=s, threads=1)
                for isa in paths(f"spmm_f32_b{block}"):
                    choice = "auto" if s <= 0.5 else "sparse"
                    sp = kernels.SparseLinear(ws, b, block=(block, 1), isa=isa, kernel=choice)
                    add(
                        f"spmm_f32_b{block}",
                        isa,
                        lambda: sp.spmm(x_kn),
                        "numpy sgemm W@X",
                        np_kn,
                        sparsity=s,
                        block=block,
                        choice=sp.kernel,
                        threads=1,
                    )
                if threads_rows and s == 0.9:
                    sp1 = kernels.SparseLinear(ws, b, block=(block, 1), isa=best, kernel="sparse")
                    sp2 = kernels.SparseLinear(ws, b, block=(block, 1), isa=best, kernel="sparse", threads=2)
                    add(
                        f"spmm_f32_b{block}",
                        sp2.isa,
                        lambda: sp2.spmm(x_kn),
                        "edgeprune 1 thread",
                        lambda: sp1.spmm(x_kn),
                        sparsity=s,
                        block=block,
                        choice="sparse",
                        threads=2,
                    )
        # sparse int8: 1x4-block pruned weights (the format's own pattern) and unstructured ones
        for s in s8_sparsities:
            for pattern in ("1x4", "1x1"):
                ws = random_sparse(
                    np.random.default_rng([m, k, n, round(s * 1000), int(pattern[-1]), 8]), m, k, s, pattern
                )
                for isa in paths("spmm_s8"):
                    q = kernels.QLinear(ws, b, **QPARAMS, sparse="sparse", isa=isa)
                    add(
                        "spmm_s8",
                        isa,
                        lambda: q.gemm_kn(xq_kn),
                        "numpy sgemm W@X (fp32)",
                        np_kn,
                        sparsity=s,
                        block=str(pattern),
                        choice=q.kernel,
                        threads=1,
                    )
                if threads_rows and s == 0.9 and pattern == "1x4":
                    q1 = kernels.QLinear(ws, b, **QPARAMS, sparse="sparse", isa=best)
                    q2 = kernels.QLinear(ws, b, **QPARAMS, sparse="sparse", isa=best, threads=2)
                    add(
                        "spmm_s8",
                        q2.isa,
                        lambda: q2.gemm_kn(xq_kn),
                        "edgeprune 1 thread",
                        lambda: q1.gemm_kn(xq_kn),
                        sparsity=s,
                        block="1x4",
                        choice="sparse",
                        threads=2,
                    )
    return rows


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
        t.add_row(
            r["kernel"],
            r["isa"],
            f"{r['M']}x{r['K']}x{r['N']}",
            str(r.get("sparsity", "")),
            str(r.get("block", "")),
            str(r["threads"]),
            f"{r['ms']:.3f}",
            f"{r['gflops']:.0f}",
            f"{r['baseline_ms']:.3f}",
            f"{r['ratio']:.2f}",
        )
    Console(stderr=True, width=150).print(t)


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH", help="write the rows as a JSON list")
    ap.add_argument(
        "--isa", action="append", help="kernel path(s) to measure (default: every supported one but reference)"
    )
    ap.add_argument("--quick", action="store_true", help="first shape only, fewer sparsities, no thread rows")
    defaults = " and ".join("x".join(map(str, s)) for s in SHAPES)
    ap.add_argument(
        "--shape",
        action="append",
        type=shape_arg,
        metavar="MxKxN",
        help=f"measure this shape only (repeatable; default {defaults})",
    )
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
    args = ap.parse_args(argv)
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
    shapes = args.shape or (SHAPES[:1] if args.quick else SHAPES)
    sparsities = args.sparsity or ([0.5, 0.9] if args.quick else SPARSITIES)
    s8_sparsities = args.sparsity or ([0.9] if args.quick else [0.7, 0.9, 0.95])
    rows = bench(isas, shapes, sparsities, s8_sparsities, threads_rows=not args.quick, min_time=args.min_time)
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
