"""Whole-model benchmark of edgeprune's runtime against ONNX Runtime and LiteRT on the same model.

Consumes: nothing (MobileNetV2 at 224x224 with seeded random weights; BatchNorm folded, so each
conv has a bias, as in an exported model). Produces: JSON rows, one per (model variant, runtime):
median latency over interleaved rounds (1 thread), the ratio of every baseline to ours measured in
the same run, load time and peak RSS (each runtime loads the file in a fresh process for RSS).
For "dense" and "sparse90", rows with "threads": 2 time ours and LiteRT on 2 threads against 1
("speedup_vs_1_thread"), each runtime alone in a fresh process (thread_scaling); then again with
another process keeping one core busy ("busy_core": true), the loaded host a device often is: a
second thread must not make a model slower there either.

Variants: "dense"; "sparse90" (every 1x1 conv at 90 % unstructured sparsity, stored in TFLite's
sparse encoding + DENSIFY; ONNX Runtime gets the same weights dense with their zeros);
"blocks80" (1x1 convs pruned in 4x1 blocks to 80 %, stored dense: our loader finds the blocks);
"resnet18_half": ResNet-18 with every layer's channels halved (the shape a 50 % channel prune
leaves: 32-64-128-256), dense.
The .tflite file is written by tests/python/tflite_builder.py (the test writer) and the ONNX file
by torch.onnx.export of the identical torch model, so all three runtimes compute the same function;
the script checks that their outputs agree before timing.

Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/runtime.py [--json out.json]
           [--rounds 7] [--runs 5] [--variants dense sparse90 blocks80 resnet18_half]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/tflite.py would shadow the pip ``tflite`` schema package the test writer imports
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "python"))

CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2_spec(seed: int, variant: str) -> list[dict]:
    """Layers in order: conv (weights OIHW, bias, stride, groups, relu6) and 'add' markers."""
    rng = np.random.default_rng(seed)

    def conv(cin, cout, k, stride=1, groups=1, relu6=True):
        w = (rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / (cin // groups * k * k))).astype(
            np.float32
        )
        if k == 1 and groups == 1 and variant == "sparse90":
            w[rng.random(w.shape) < 0.9] = 0
        elif k == 1 and groups == 1 and variant == "blocks80" and cout % 4 == 0:
            keep = rng.random((cout // 4, 1, cin)) >= 0.8
            w = (w.reshape(cout // 4, 4, cin) * keep).reshape(w.shape)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        return {"op": "conv", "w": w, "b": b, "stride": stride, "groups": groups, "act": "relu6" if relu6 else None}

    layers, cin = [conv(3, 32, 3, 2)], 32
    for t, c, n, s in CFG:
        for i in range(n):
            stride, hid = (s if i == 0 else 1), cin * t
            block = ([conv(cin, hid, 1)] if t != 1 else []) + [
                conv(hid, hid, 3, stride, hid),
                conv(hid, c, 1, relu6=False),
            ]
            layers.append({"op": "block", "layers": block, "residual": stride == 1 and cin == c})
            cin = c
    layers.append(conv(cin, 1280, 1))
    fc_w = (rng.standard_normal((1000, 1280)) * 0.03).astype(np.float32)
    layers.append({"op": "fc", "w": fc_w, "b": np.zeros(1000, np.float32)})
    return layers


def resnet18_spec(seed: int, width: float = 0.5) -> list[dict]:
    """ResNet-18 (basic blocks; BatchNorm folded) with every layer's channels scaled by width."""
    rng = np.random.default_rng(seed)

    def conv(cin, cout, k, stride=1, act="relu"):
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        return {"op": "conv", "w": w, "b": b, "stride": stride, "groups": 1, "act": act}

    c0 = int(64 * width)
    layers, cin = [conv(3, c0, 7, 2), {"op": "maxpool"}], c0
    for i, c in enumerate(int(v * width) for v in (64, 128, 256, 512)):
        for j in range(2):
            stride = 2 if i > 0 and j == 0 else 1
            short = conv(cin, c, 1, stride, act=None) if stride > 1 or cin != c else None
            block = [conv(cin, c, 3, stride), conv(c, c, 3, 1, act=None)]
            layers.append({"op": "res", "layers": block, "short": short})
            cin = c
    fc_w = (rng.standard_normal((1000, cin)) * 0.03).astype(np.float32)
    layers.append({"op": "fc", "w": fc_w, "b": np.zeros(1000, np.float32)})
    return layers


def model_spec(variant: str) -> list[dict]:
    return resnet18_spec(0) if variant == "resnet18_half" else mobilenet_v2_spec(0, variant)


def _convs(spec):
    """Every conv layer in forward order (a residual block: its convs, then its shortcut)."""
    for layer in spec:
        if layer["op"] == "conv":
            yield layer
        elif layer["op"] in ("block", "res"):
            yield from layer["layers"]
            if layer.get("short"):
                yield layer["short"]


def torch_model(spec):
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList()
            for layer in _convs(spec):
                w = torch.from_numpy(layer["w"])
                k, g = w.shape[2], layer["groups"]
                c = nn.Conv2d(w.shape[1] * g, w.shape[0], k, layer["stride"], k // 2, groups=g)
                c.weight.data, c.bias.data = w.clone(), torch.from_numpy(layer["b"]).clone()
                self.convs.append(c)
            fc = spec[-1]["w"]
            self.fc = nn.Linear(fc.shape[1], fc.shape[0])
            self.fc.weight.data, self.fc.bias.data = torch.from_numpy(fc), torch.from_numpy(spec[-1]["b"])

        def forward(self, x):
            it = iter(self.convs)

            def run(layer, x):
                y = next(it)(x)
                act = layer["act"]
                return torch.clamp(y, 0, 6) if act == "relu6" else torch.relu(y) if act == "relu" else y

            for layer in spec:
                if layer["op"] == "conv":
                    x = run(layer, x)
                elif layer["op"] == "maxpool":
                    x = torch.nn.functional.max_pool2d(x, 3, 2, 1)
                elif layer["op"] in ("block", "res"):
                    y = x
                    for sub in layer["layers"]:
                        y = run(sub, y)
                    if layer["op"] == "res":
                        x = torch.relu((run(layer["short"], x) if layer["short"] else x) + y)
                    else:
                        x = x + y if layer["residual"] else y
            return self.fc(x.mean((2, 3)))

    return Net().eval()


def tflite_bytes(spec, variant: str) -> bytes:
    from tflite_builder import Builder

    b = Builder()
    x = b.input([1, 224, 224, 3])

    def conv(layer, x):
        w, k, s, g = layer["w"], layer["w"].shape[2], layer["stride"], layer["groups"]
        if k > 1 and s > 1:  # torch pads k//2 on both sides; SAME would not: explicit PAD + VALID
            x, pad = b.pad(x, [[0, 0], [k // 2, k // 2], [k // 2, k // 2], [0, 0]]), "valid"
        else:
            pad = "same"
        if g > 1:
            return b.depthwise(x, w.transpose(1, 2, 3, 0), layer["b"], stride=s, padding=pad, act=layer["act"])
        sparse = 1 if variant == "sparse90" and k == 1 else None
        w = w.transpose(0, 2, 3, 1)
        return b.conv2d(x, w, layer["b"], stride=s, padding=pad, act=layer["act"], sparse=sparse)

    for layer in spec:
        if layer["op"] == "conv":
            x = conv(layer, x)
        elif layer["op"] == "maxpool":  # after a ReLU, zero padding equals torch's -inf padding
            x = b.pool(b.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 2, "valid", "max")
        elif layer["op"] in ("block", "res"):
            y = x
            for sub in layer["layers"]:
                y = conv(sub, y)
            if layer["op"] == "res":
                x = b.binary("add", conv(layer["short"], x) if layer["short"] else x, y, act="relu")
            else:
                x = b.binary("add", x, y) if layer["residual"] else y
        else:
            x = b.fc(b.mean(x, [1, 2], keep_dims=False), layer["w"], layer["b"])
    return b.finish([x])


# ------------------------------------------------------------------------------------ runtimes
def make_runner(runtime: str, path: Path, threads: int = 1):
    """(run(x) -> output, load seconds)."""
    t0 = time.perf_counter()
    if runtime == "edgeprune":
        import edgeprune as ep

        m = ep.runtime.load(path, threads=threads)
        zeros = np.zeros(m.inputs[0]["shape"], np.float32)
        while m.tuning:  # the first calls of a context of several threads choose each op's split
            m(zeros)
        run = lambda x: m(x)[0]  # noqa: E731
    elif runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
        i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

        def run(x):
            it.set_tensor(i, x)
            it.invoke()
            return it.get_tensor(o)
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        run = lambda x: sess.run(None, {name: x.transpose(0, 3, 1, 2).copy()})[0]  # noqa: E731
    return run, time.perf_counter() - t0


def child_rss(runtime: str, path: Path) -> float:
    """Peak RSS (MB, VmHWM: ru_maxrss would inherit this process's high-water mark across fork)
    of a fresh process that loads the model and runs it 3 times."""
    code = (
        "import sys, numpy as np; sys.path.append(sys.argv[3]); import runtime as r\n"
        "run, _ = r.make_runner(sys.argv[1], r.Path(sys.argv[2]))\n"
        "x = np.random.default_rng(0).standard_normal((1, 224, 224, 3)).astype(np.float32)\n"
        "[run(x) for _ in range(3)]\n"
        "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0] / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, runtime, str(path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def interleaved_ms(runners: dict, x: np.ndarray, rounds: int, runs: int) -> dict[str, list[float]]:
    """Per runtime, the median ms of ``runs`` timed calls (after one untimed) in each of ``rounds``
    rounds; also benchmarks/runtime_int8.py's timing."""
    times = {rt: [] for rt in runners}
    for _ in range(rounds):  # interleaved: every runtime sees the same machine state
        for rt, run in runners.items():
            run(x)
            t = []
            for _ in range(runs):
                t0 = time.perf_counter()
                run(x)
                t.append(time.perf_counter() - t0)
            times[rt].append(statistics.median(t) * 1e3)
    return times


def thread_scaling(runtime: str, path: Path, rounds: int, runs: int) -> tuple[float, float, list]:
    """(1-thread median ms, 2-thread median ms, 2-thread per-round ms) of one runtime, measured
    in a fresh process that holds that runtime only, 1 and 2 threads interleaved: on a 2-core host
    another runtime's worker threads, spinning after their last call, would take the second core."""
    code = (
        "import sys, json, numpy as np; sys.path.append(sys.argv[3]); import runtime as r\n"
        "runners = {t: r.make_runner(sys.argv[1], r.Path(sys.argv[2]), threads=t)[0] for t in (1, 2)}\n"
        "x = np.random.default_rng(1).standard_normal((1, 224, 224, 3)).astype(np.float32)\n"
        "print(json.dumps(r.interleaved_ms(runners, x, int(sys.argv[4]), int(sys.argv[5]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, runtime, str(path), str(Path(__file__).resolve().parent), str(rounds), str(runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    t = json.loads(out.stdout.strip().splitlines()[-1])
    return statistics.median(t["1"]), statistics.median(t["2"]), t["2"]


@contextlib.contextmanager
def busy_core(on: bool):
    """While active (and ``on``), a separate process spins on one core."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def measure(variant: str, rounds: int, runs: int, tmp: Path) -> list[dict]:
    import torch

    spec = model_spec(variant)
    name = variant if variant.startswith("resnet") else f"mobilenet_v2_{variant}"
    tfl = tmp / f"{name}.tflite"
    tfl.write_bytes(tflite_bytes(spec, variant))
    onx = tmp / f"{name}.onnx"
    torch.onnx.export(torch_model(spec), (torch.zeros(1, 3, 224, 224),), str(onx), dynamo=False, opset_version=17)
    files = {"edgeprune": tfl, "litert": tfl, "onnxruntime": onx}
    runners, load_s = {}, {}
    for rt, f in files.items():
        runners[rt], load_s[rt] = make_runner(rt, f)
    x = np.random.default_rng(1).standard_normal((1, 224, 224, 3)).astype(np.float32)
    ref = runners["litert"](x)
    for rt, run in runners.items():  # same function everywhere, or the timing means nothing
        err = float(np.abs(run(x) - ref).max() / np.abs(ref).max())
        assert err < 1e-3, f"{variant}: {rt} differs from LiteRT by {err:.2e}"
    times = interleaved_ms(runners, x, rounds, runs)
    med = {rt: statistics.median(v) for rt, v in times.items()}
    rows = []
    for rt in runners:
        rows.append(
            {
                "model": name,
                "runtime": rt,
                "file": files[rt].suffix[1:],
                "threads": 1,
                "median_ms": round(med[rt], 3),
                "rounds_ms": [round(v, 3) for v in times[rt]],
                "ratio_vs_ours": round(med[rt] / med["edgeprune"], 3),
                "load_ms": round(load_s[rt] * 1e3, 1),
                "peak_rss_mb": round(child_rss(rt, files[rt]), 1),
            }
        )
    # what a second core buys each runtime on the same file, on an idle host and on a busy one
    for busy in (False, True) if variant in ("dense", "sparse90") else ():
        with busy_core(busy):
            two = {rt: thread_scaling(rt, tfl, rounds, runs) for rt in ("edgeprune", "litert")}
        for rt, (one_ms, two_ms, rounds_ms) in two.items():
            rows.append(
                {
                    "model": name,
                    "runtime": rt,
                    "file": "tflite",
                    "threads": 2,
                    "busy_core": busy,
                    "median_ms": round(two_ms, 3),
                    "rounds_ms": [round(v, 3) for v in rounds_ms],
                    "ratio_vs_ours": round(two_ms / two["edgeprune"][1], 3),  # ours on 2 threads
                    "one_thread_ms": round(one_ms, 3),
                    "speedup_vs_1_thread": round(one_ms / two_ms, 3),
                }
            )
    return rows


def run_cli(
    argv, doc: str, measure, variants: list[str], tmp_prefix: str, option: str = "--variants", choices=None
) -> int:
    """The command line of this benchmark and of benchmarks/runtime_int8.py and runtime_zoo.py:
    ``measure(variant, rounds, runs, tmp)`` per variant (named by ``option``, limited to
    ``choices`` when given), one JSON line per row on stdout, all rows to ``--json``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(option, dest="variants", nargs="+", default=variants, choices=choices)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix=tmp_prefix) as tmp:
        for v in args.variants:
            for row in measure(v, args.rounds, args.runs, Path(tmp)):
                print(json.dumps({k: v for k, v in row.items() if k != "rounds_ms"}), flush=True)
                rows.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def main(argv=None) -> int:
    return run_cli(argv, __doc__, measure, ["dense", "sparse90", "blocks80", "resnet18_half"], "ep-rt-bench-")


if __name__ == "__main__":
    sys.exit(main())
