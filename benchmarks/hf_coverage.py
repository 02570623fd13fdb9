"""Hugging Face coverage: transformers architectures nobody wrote for edgeprune, from plan to both
runtimes.

Consumes: about 30 ``transformers`` model classes built from tiny configs in code (random weights,
no downloads; encoders, decoders with grouped key/value heads, vision transformers and CNNs; the
vision models re-initialised with torch's own layer init, since transformers' 0.02-std init makes a
deep random CNN output about 0). Token models run on 8 token ids and a mask, image models on one
random image. Produces: JSON rows, one per architecture:
  {"model", "status": "ok" | STAGE (the first stage that failed: build, plan, apply, export,
   runtime, quantize, export-int8, runtime-int8), "error" (one line),
   "macs_kept" (pruned MACs / original, ratio 0.3), "fp32_vs_torch" (our runtime on the pruned
   model's model.tflite against torch, max abs difference / max abs torch output),
   "int8_cosine" (our runtime on model.int8.tflite against the fp32 torch output),
   "int8_vs_litert" (the same file in LiteRT, max abs difference / max abs output),
   "int8_ops" ("int8 operators/all" in our runtime's plan)}
and a last row {"summary": {status: count}}.

    python benchmarks/hf_coverage.py --json build/hf-coverage.json [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/tflite.py is named like the `tflite` schema package the writer imports (see op_coverage)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))

from rows_json import status_counts, write_rows  # noqa: E402

V, L = 64, 8  # vocabulary and sequence length of the token models
ENC = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
DEC = dict(vocab_size=V, max_position_embeddings=32, bos_token_id=0, eos_token_id=0, pad_token_id=0)


def _reinit(model):
    torch.manual_seed(0)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and not isinstance(m, torch.nn.Embedding):
            m.reset_parameters()
    return model


def models() -> dict:
    """name -> (factory, kind, image size)."""
    import transformers as T

    def text(cls, cfg, **kw):
        return (lambda: cls(cfg(**kw)), "text", None)

    def image(cls, cfg, size, **kw):
        return (lambda: _reinit(cls(cfg(**kw))), "image", size)

    vit = dict(image_size=16, patch_size=4, num_channels=3, **ENC)
    return {
        "bert_mlm": text(T.BertForMaskedLM, T.BertConfig, vocab_size=V, max_position_embeddings=32, **ENC),
        "bert_tokens": text(
            T.BertForTokenClassification, T.BertConfig, vocab_size=V, max_position_embeddings=32, num_labels=5, **ENC
        ),
        "roberta": text(
            T.RobertaModel, T.RobertaConfig, vocab_size=V, max_position_embeddings=40, pad_token_id=1, **ENC
        ),
        "xlm_roberta_cls": text(
            T.XLMRobertaForSequenceClassification,
            T.XLMRobertaConfig,
            vocab_size=V,
            max_position_embeddings=40,
            pad_token_id=1,
            num_labels=3,
            **ENC,
        ),
        "albert": text(
            T.AlbertModel, T.AlbertConfig, vocab_size=V, embedding_size=16, max_position_embeddings=32, **ENC
        ),
        "electra": text(
            T.ElectraModel, T.ElectraConfig, vocab_size=V, embedding_size=16, max_position_embeddings=32, **ENC
        ),
        "deberta_v2": text(T.DebertaV2Model, T.DebertaV2Config, vocab_size=V, max_position_embeddings=32, **ENC),
        "mpnet": text(T.MPNetModel, T.MPNetConfig, vocab_size=V, max_position_embeddings=40, **ENC),
        "mobilebert": text(
            T.MobileBertModel,
            T.MobileBertConfig,
            vocab_size=V,
            hidden_size=32,
            embedding_size=16,
            intermediate_size=32,
            true_hidden_size=16,
            intra_bottleneck_size=16,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=32,
        ),
        "modernbert": text(
            T.ModernBertModel,
            T.ModernBertConfig,
            vocab_size=V,
            max_position_embeddings=32,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
            cls_token_id=0,
            sep_token_id=0,
            **ENC,
        ),
        "gpt_neo": text(
            T.GPTNeoForCausalLM,
            T.GPTNeoConfig,
            vocab_size=V,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            attention_types=[[["global", "local"], 1]],
            max_position_embeddings=32,
            window_size=4,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "opt": text(
            T.OPTForCausalLM,
            T.OPTConfig,
            vocab_size=V,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=64,
            max_position_embeddings=32,
            word_embed_proj_dim=32,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "mistral": text(T.MistralForCausalLM, T.MistralConfig, **ENC | {"num_key_value_heads": 2}, **DEC),
        "qwen2": text(T.Qwen2ForCausalLM, T.Qwen2Config, **ENC | {"num_key_value_heads": 2}, **DEC),
        "qwen3": text(T.Qwen3ForCausalLM, T.Qwen3Config, head_dim=8, **ENC | {"num_key_value_heads": 2}, **DEC),
        "gemma": text(T.GemmaForCausalLM, T.GemmaConfig, head_dim=8, **ENC | {"num_key_value_heads": 1}, **DEC),
        "phi": text(T.PhiForCausalLM, T.PhiConfig, **ENC, **DEC),
        "stablelm": text(T.StableLmForCausalLM, T.StableLmConfig, **ENC | {"num_key_value_heads": 4}, **DEC),
        "falcon": text(
            T.FalconForCausalLM,
            T.FalconConfig,
            vocab_size=V,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "bloom": text(
            T.BloomForCausalLM,
            T.BloomConfig,
            vocab_size=V,
            hidden_size=32,
            n_layer=2,
            n_head=4,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "deit": image(T.DeiTModel, T.DeiTConfig, 16, **vit),
        "vit_cls": image(T.ViTForImageClassification, T.ViTConfig, 16, num_labels=5, **vit),
        "dinov2": image(T.Dinov2Model, T.Dinov2Config, 16, **vit),
        "beit": image(T.BeitModel, T.BeitConfig, 16, **vit),
        "swin": image(
            T.SwinModel,
            T.SwinConfig,
            32,
            image_size=32,
            patch_size=4,
            num_channels=3,
            embed_dim=16,
            depths=[1, 1],
            num_heads=[2, 4],
            window_size=4,
        ),
        "convnext": image(
            T.ConvNextForImageClassification,
            T.ConvNextConfig,
            32,
            num_channels=3,
            num_stages=2,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            num_labels=5,
        ),
        "resnet": image(
            T.ResNetForImageClassification,
            T.ResNetConfig,
            32,
            num_channels=3,
            embedding_size=16,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            num_labels=5,
        ),
        "mobilevit": image(
            T.MobileViTForImageClassification,
            T.MobileViTConfig,
            32,
            image_size=32,
            num_channels=3,
            hidden_sizes=[16, 24, 32],
            neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
            num_labels=5,
        ),
        "mobilenet_v2": image(
            T.MobileNetV2ForImageClassification,
            T.MobileNetV2Config,
            32,
            image_size=32,
            num_channels=3,
            depth_multiplier=0.35,
            num_labels=5,
        ),
        "efficientnet": image(
            T.EfficientNetForImageClassification,
            T.EfficientNetConfig,
            32,
            image_size=32,
            num_channels=3,
            width_coefficient=1.0,
            depth_coefficient=1.0,
            hidden_dim=1280,
            num_labels=5,
        ),
        "segformer": image(
            T.SegformerForSemanticSegmentation,
            T.SegformerConfig,
            32,
            num_channels=3,
            num_encoder_blocks=2,
            depths=[1, 1],
            sr_ratios=[2, 1],
            hidden_sizes=[16, 32],
            num_attention_heads=[1, 2],
            decoder_hidden_size=32,
            num_labels=3,
        ),
        "levit": image(
            T.LevitForImageClassification,
            T.LevitConfig,
            32,
            image_size=32,
            num_channels=3,
            hidden_sizes=[16, 32, 48],
            num_attention_heads=[1, 2, 3],
            depths=[1, 1, 1],
            key_dim=[4, 4, 4],
            num_labels=5,
        ),
    }


def _inputs(kind, size, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "image":
        return {"pixel_values": torch.randn(1, 3, size, size, generator=g)}
    return {"input_ids": torch.randint(2, V, (1, L), generator=g), "attention_mask": torch.ones(1, L, dtype=torch.long)}


def _main_output(out):
    o = out[0] if isinstance(out, (tuple, list)) else out
    for attr in ("logits", "last_hidden_state"):
        if hasattr(o, attr):
            return getattr(o, attr)
    return o


def _feeds(x, kind):
    feeds = [v.numpy() for v in x.values()]
    return [feeds[0].transpose(0, 2, 3, 1)] if kind == "image" else feeds  # TFLite images are NHWC


def _like(ref, got):
    """``ref`` in the layout of our runtime's output (4-D outputs are NHWC in a .tflite)."""
    return ref.transpose(0, 2, 3, 1) if ref.ndim == 4 and got.shape != ref.shape else ref


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


def check(name, factory, kind, size) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    import edgeprune as ep
    import edgeprune.prune as epp

    row: dict = {"model": name}
    stage = "build"
    try:
        torch.manual_seed(0)
        model = factory().eval()
        x = _inputs(kind, size, 1)
        with torch.no_grad():
            ref = _main_output(model(**x)).numpy()
        stage = "plan"
        plan = epp.plan(model, x, ratio=0.3, ignore=[model.get_input_embeddings()] if kind == "text" else None)
        stage = "apply"
        pruned = epp.apply(model, plan)
        with torch.no_grad():
            want = _main_output(pruned(**x)).numpy()
        row["macs_kept"] = round(epp.count_macs_params(pruned, x)[0] / epp.count_macs_params(model, x)[0], 3)
        tmp = tempfile.mkdtemp()
        stage = "export"
        path = ep.export(pruned, tmp, formats=["onnx", "tflite"], example_inputs=x)["tflite"]
        stage = "runtime"
        got = ep.runtime.load(path)(*_feeds(x, kind))[0]
        row["fp32_vs_torch"] = _rel(got, _like(want, got))
        stage = "quantize"
        q = ep.quantize(model, [_inputs(kind, size, s) for s in range(2, 10)], progress=False)
        stage = "export-int8"
        qpath = ep.export(q, tmp, formats=["tflite-int8"], example_inputs=x)["tflite-int8"]
        stage = "runtime-int8"
        rt = ep.runtime.load(qpath)
        got = rt(*_feeds(x, kind))[0]
        r = _like(ref, got).ravel().astype(np.float64)
        row["int8_cosine"] = round(float(got.ravel() @ r / (np.linalg.norm(got) * np.linalg.norm(r) + 1e-12)), 5)
        it = Interpreter(model_path=str(qpath))
        it.allocate_tensors()
        for d, f in zip(it.get_input_details(), _feeds(x, kind)):
            it.set_tensor(d["index"], f.astype(d["dtype"]))
        it.invoke()
        row["int8_vs_litert"] = _rel(got, it.get_tensor(it.get_output_details()[0]["index"]))
        ops = rt.operators
        row["int8_ops"] = f"{sum(1 for _, label in ops if ' int8' in f' {label}')}/{len(ops)}"
        row["status"] = "ok"
    except Exception as e:  # the report names the stage and the one-line reason
        row["status"] = stage
        row["error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default="-", help="output file, or - for stdout")
    ap.add_argument("--only", nargs="*", default=[], help="model names to run")
    args = ap.parse_args(argv)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (factory, kind, size) in models().items():
            if args.only and name not in args.only:
                continue
            row = check(name, factory, kind, size)
            print(f"{name:18s} {row['status']:12s} {row.get('error', '')}", file=sys.stderr)
            rows.append(row)
    summary = status_counts(rows)
    rows.append({"summary": summary})
    write_rows(rows, args.json, indent=1)
    return 0 if set(summary) <= {"ok"} else 1


if __name__ == "__main__":
    sys.exit(main())
