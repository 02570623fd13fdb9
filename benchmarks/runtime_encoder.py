"""Transformer encoder benchmark: edgeprune's runtime against ONNX Runtime and LiteRT on a
BERT-style sentence encoder.

Consumes: nothing (a ``transformers`` BertConfig with random weights, no download: 6 layers, hidden
384, 12 heads, FFN 1536, vocabulary 30522, sequence 128 with the last 32 tokens padding, the
shape of all-MiniLM-L6-v2). Produces: JSON rows, one per (variant, runtime): median latency over
interleaved rounds (1 thread), the ratio of every baseline to ours measured in the same run, and
load time.

Variants:
- "bert6_h384": the encoder as ``edgeprune export`` writes it, ``model.tflite`` for ours and
  LiteRT, ``model.onnx`` for ONNX Runtime;
- "bert6_h384_pruned50": half of every layer's attention heads and feed-forward neurons removed by
  ``edgeprune.prune`` (ratio 0.5, the residual width kept), exported the same way. Its rows add
  ``onnxruntime_unpruned``: the unpruned ONNX file in ONNX Runtime, timed in the same rounds;
- "bert6_h384_int8": the encoder quantized by ``edgeprune.quantize`` (every Linear and attention's
  two matmuls int8, the embedding tables int8; layer norm, softmax and GELU float) on 64 random
  token sequences with the same padding,
  ``model.int8.tflite`` for ours and LiteRT, ``model.int8.onnx`` in ONNX Runtime, and the fp32
  ``model.onnx`` in ONNX Runtime (``onnxruntime_fp32``: the baseline the int8 file must beat by
  2x). Its rows add ``sentence_cosine``: the mean-pooled embedding of the unpadded tokens against
  the fp32 PyTorch model's.

Every runtime's output is checked against LiteRT's on the same input before anything is timed
(int8: cosine >= 0.999 to LiteRT, whose XNNPACK kernels round int8 products their own way and
whose float parts may put a value one int8 step away; the fp32 file is not compared with the int8
one).

Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/runtime_encoder.py
           [--json out.json] [--rounds 7] [--runs 5] [--variants bert6_h384 bert6_h384_pruned50 bert6_h384_int8]
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime import interleaved_ms, run_cli  # noqa: E402

SEQ, PAD = 128, 32


def encoder():
    """(model, ids, mask): the MiniLM-L6-shaped BERT with random weights; the last PAD tokens
    are padding."""
    from bert_encoder import bert_encoder

    shape = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    return bert_encoder(SEQ, PAD, input_seed=1, **shape)


def prune_half(model, example):
    import edgeprune.prune as epp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = epp.plan(
            model,
            example,
            ratio=0.5,
            round_to=None,
            global_ranking=False,
            ignore=[model.bert.get_input_embeddings()],
        )
        return epp.apply(model, plan)


def quantize_int8(model):
    """The encoder quantized on 64 random sequences of the benchmark's length and padding."""
    import torch

    import edgeprune as ep

    g = torch.Generator().manual_seed(3)
    mask = torch.ones(8, SEQ, dtype=torch.int64)
    mask[:, SEQ - PAD :] = 0
    vocab = model.bert.config.vocab_size
    calib = [(torch.randint(0, vocab, (8, SEQ), generator=g), mask) for _ in range(8)]
    return ep.quantize(model, calib, progress=False)


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def make_runner(runtime: str, path: Path):
    """(run(ids, mask) -> output, load seconds)."""
    t0 = time.perf_counter()
    if runtime == "edgeprune":
        import edgeprune as ep

        m = ep.runtime.load(path, threads=1)
        run = lambda ids, mask: m(ids, mask)[0]  # noqa: E731
    elif runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        ins, out = it.get_input_details(), it.get_output_details()[0]["index"]

        def run(ids, mask):
            for d, x in zip(ins, (ids, mask)):
                it.set_tensor(d["index"], x)
            it.invoke()
            return it.get_tensor(out)
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        run = lambda ids, mask: sess.run(None, dict(zip(names, (ids, mask))))[0]  # noqa: E731
    return run, time.perf_counter() - t0


def measure(variant: str, rounds: int, runs: int, tmp: Path) -> list[dict]:
    import torch

    from edgeprune.export import export

    model, ids, mask = encoder()
    base = export(model, tmp / "base", formats=["tflite", "onnx"], example_inputs=(ids, mask))
    files = {"edgeprune": base["tflite"], "litert": base["tflite"], "onnxruntime": base["onnx"]}
    params = sum(p.numel() for p in model.parameters())
    if variant.endswith("pruned50"):
        small = prune_half(model, (ids, mask))
        params = sum(p.numel() for p in small.parameters())
        with torch.no_grad():
            assert small(ids, mask).shape == model(ids, mask).shape
        pruned = export(small, tmp / "pruned", formats=["tflite", "onnx"], example_inputs=(ids, mask))
        files = {
            "edgeprune": pruned["tflite"],
            "litert": pruned["tflite"],
            "onnxruntime": pruned["onnx"],
            "onnxruntime_unpruned": base["onnx"],
        }
    extra: dict = {}
    if variant.endswith("int8"):
        q = quantize_int8(model)
        int8 = export(q, tmp / "int8", formats=["tflite-int8", "onnx-int8"], example_inputs=(ids, mask))
        files = {
            "edgeprune": int8["tflite-int8"],
            "litert": int8["tflite-int8"],
            "onnxruntime_int8": int8["onnx-int8"],
            "onnxruntime_fp32": base["onnx"],
        }
    counts = {rt: params for rt in files}
    counts["onnxruntime_unpruned"] = sum(p.numel() for p in model.parameters())
    x = (ids.numpy(), mask.numpy())
    runners, load_s = {}, {}
    for rt, f in files.items():
        runners[rt], load_s[rt] = make_runner(rt.split("_")[0], f)
    ref = runners["litert"](*x)
    for rt, run in runners.items():  # same function everywhere, or the timing means nothing
        if rt.endswith("unpruned") or rt.endswith("fp32"):
            continue
        if variant.endswith("int8"):
            cos = _cos(run(*x), ref)
            assert cos > 0.999, f"{variant}: {rt} cosine to LiteRT {cos:.6f}"
            continue
        err = float(np.abs(run(*x) - ref).max() / np.abs(ref).max())
        assert err < 1e-3, f"{variant}: {rt} differs from LiteRT by {err:.2e}"
    if variant.endswith("int8"):
        with torch.no_grad():
            fp32 = model(ids, mask).numpy()[0, : SEQ - PAD].mean(0)
        extra = {
            rt: {"sentence_cosine": round(_cos(run(*x)[0, : SEQ - PAD].mean(0), fp32), 5)}
            for rt, run in runners.items()
        }
    times = interleaved_ms({rt: (lambda xs, r=run: r(*xs)) for rt, run in runners.items()}, x, rounds, runs)
    med = {rt: statistics.median(v) for rt, v in times.items()}
    return [
        {
            "model": variant,
            "runtime": rt,
            "file": files[rt].name,
            "file_mb": round(files[rt].stat().st_size / 2**20, 1),
            "threads": 1,
            "params": counts[rt],
            "median_ms": round(med[rt], 3),
            "rounds_ms": [round(v, 3) for v in times[rt]],
            "ratio_vs_ours": round(med[rt] / med["edgeprune"], 3),
            "load_ms": round(load_s[rt] * 1e3, 1),
            **extra.get(rt, {}),
        }
        for rt in runners
    ]


def main(argv=None) -> int:
    return run_cli(argv, __doc__, measure, ["bert6_h384", "bert6_h384_pruned50", "bert6_h384_int8"], "ep-enc-bench-")


if __name__ == "__main__":
    sys.exit(main())
