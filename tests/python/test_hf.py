"""Hugging Face transformers models (tiny configs, random weights, no downloads) through plan/apply.

Consumes: BERT, DistilBERT, ViT, GPT-2 and a Llama-style decoder with grouped key/value heads,
built from configs in code. Produces: assertions that ratio 0 is exact, that removing 30 % of the
heads and feed-forward neurons leaves < 85 % of the parameters with the same output shapes, that
the ONNX export of the pruned model matches torch in ONNX Runtime, that the config round-trips
through save_pretrained/from_pretrained (and ep.save/ep.load without pickles), that tied
embeddings stay tied and that generate() runs on the pruned decoders.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

transformers = pytest.importorskip("transformers")

import edgeprune as ep  # noqa: E402
import edgeprune.prune as epp  # noqa: E402
from edgeprune.export.onnx import torch_to_onnx  # noqa: E402

V, T = 64, 8
# the size of the tiny BERT and ViT encoders: two layers of four 8-wide heads and a 64-neuron feed-forward
ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def _bert():
    cfg = transformers.BertConfig(vocab_size=V, max_position_embeddings=16, **ENCODER)
    return transformers.BertModel(cfg)


def _distilbert():
    cfg = transformers.DistilBertConfig(
        vocab_size=V, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=16
    )
    return transformers.DistilBertModel(cfg)


def _vit():
    cfg = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, **ENCODER)
    return transformers.ViTModel(cfg)


def _gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


def _llama():
    cfg = transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=4,
        intermediate_size=64,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg)


MODELS = {"bert": _bert, "distilbert": _distilbert, "vit": _vit, "gpt2": _gpt2, "llama": _llama}


def _inputs(name):
    g = torch.Generator().manual_seed(1)
    if name == "vit":
        return {"pixel_values": torch.randn(2, 3, 16, 16, generator=g)}
    ids = torch.randint(1, V, (2, T), generator=g)
    enc = {"input_ids": ids, "attention_mask": torch.ones(2, T, dtype=torch.long)}
    return transformers.BatchEncoding(enc) if name == "bert" else enc


def _build(name):
    torch.manual_seed(0)
    return MODELS[name]().eval()


def _main(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _plan(model, inputs, ratio):
    # the residual stream (embeddings) stays: heads and feed-forward neurons go; one count per
    # layer, so the config can state it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return epp.plan(
            model,
            inputs,
            ratio=ratio,
            round_to=None,
            global_ranking=False,
            ignore=[model.get_input_embeddings()],
        )


def _nparams(m):
    return sum(p.numel() for p in m.parameters())


@functools.cache
def _pruned(name):
    model, inputs = _build(name), _inputs(name)
    plan = _plan(model, inputs, 0.3)
    return name, model, inputs, epp.apply(model, plan), plan


@pytest.fixture(params=list(MODELS))
def pruned(request):
    return _pruned(request.param)


@pytest.mark.parametrize("name", list(MODELS))
def test_ratio_zero_is_exact(name):
    model, inputs = _build(name), _inputs(name)
    same = epp.apply(model, _plan(model, inputs, 0.0))
    with torch.no_grad():
        diff = (_main(same(**inputs)) - _main(model(**inputs))).abs().max().item()
    assert diff <= 1e-5


def test_heads_and_neurons_pruned_model_is_smaller_with_the_same_outputs(pruned):
    name, model, inputs, small, _ = pruned
    assert _nparams(small) < 0.85 * _nparams(model), name
    with torch.no_grad():
        a, b = _main(model(**inputs)), _main(small(**inputs))
    assert a.shape == b.shape and torch.isfinite(b).all()
    heads = [m for m in small.modules() if hasattr(m, "num_key_value_groups") or hasattr(m, "all_head_size")]
    for m in heads:  # module attributes follow the weights
        if hasattr(m, "all_head_size"):
            assert m.all_head_size == m.query.out_features == m.num_attention_heads * m.attention_head_size
    assert any(r for r in (small.config.to_dict().get(k) for k in ("intermediate_size", "n_inner", "hidden_dim")))


def test_config_round_trips_through_save_pretrained(pruned, tmp_path):
    name, _, inputs, small, _ = pruned
    ffn = {"bert": "intermediate_size", "distilbert": "hidden_dim", "vit": "intermediate_size", "gpt2": "n_inner"}
    if name == "llama":
        # head_dim is explicit in the config: heads and grouped key/value heads round-trip too
        # one of four key/value groups goes: 12 heads still divide hidden_size 48, as the config demands
        assert small.config.num_attention_heads == 12 and small.config.num_key_value_heads == 3
        assert small.config.intermediate_size == 45 and small.config.head_dim == 4
        assert not small.edgeprune_notes
        small.save_pretrained(tmp_path)
        back = type(small).from_pretrained(tmp_path).eval()
    elif name == "vit":
        # ViT's attention reads config.head_dim when it is there: 3 heads of 8 are stated that way
        assert small.config.num_attention_heads == 3 and small.config.head_dim == 8
        assert small.config.intermediate_size == 45 and not small.edgeprune_notes
        small.save_pretrained(tmp_path)
        back = type(small).from_pretrained(tmp_path).eval()
        q = [m.out_features for n, m in back.named_modules() if n.endswith("q_proj")]
        assert back.config.num_attention_heads == 3 and q and set(q) == {24}
    else:
        # BERT, DistilBERT and GPT-2 compute the head size as hidden_size / heads: no config states
        # 3 heads of 8 in a 32-wide model, so sync says so and keeps the head count
        assert small.config.to_dict()[{"distilbert": "n_heads", "gpt2": "n_head"}.get(name, "num_attention_heads")] == 4
        assert len(small.edgeprune_notes) == 1 and "cannot rebuild 3 heads of size 8" in small.edgeprune_notes[0]
        # these configs derive the head size from hidden_size, so only the feed-forward width can
        # be stated: reload a copy pruned in its feed-forward layers only
        ffn_only = _ffn_only(name)
        width = 128 if name == "gpt2" else 64  # GPT-2's default is 4 x n_embd
        assert getattr(ffn_only.config, ffn[name]) == width - int(0.3 * width)
        assert not ffn_only.edgeprune_notes
        ffn_only.save_pretrained(tmp_path)
        back, small = type(ffn_only).from_pretrained(tmp_path).eval(), ffn_only
    with torch.no_grad():
        assert torch.allclose(_main(back(**inputs)), _main(small(**inputs)), atol=1e-5)


def _ffn_only(name):
    model, inputs = _build(name), _inputs(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from edgeprune.graph import trace

        graph = trace(model, inputs, ignore=[model.get_input_embeddings()])
        ffn_ids = {g.id for g in graph.groups() if g.prunable and g.size > 8}
        plan = epp.plan(model, inputs, ratios={g: 0.3 for g in ffn_ids}, round_to=None, graph=graph)
    return epp.apply(model, plan)


def test_ep_save_and_load_rebuild_the_pruned_model_without_pickles(pruned, tmp_path):
    name, _, inputs, small, _ = pruned
    ep.save(small, tmp_path / "m")
    back = ep.load(tmp_path / "m")
    torch.load(tmp_path / "m" / "weights.pt", weights_only=True)  # tensors only
    with torch.no_grad():
        assert torch.allclose(_main(back(**inputs)), _main(small(**inputs)), atol=1e-6)


def test_onnx_export_matches_torch(pruned):
    name, _, inputs, small, _ = pruned
    import onnxruntime as ort

    key = "pixel_values" if name == "vit" else "input_ids"

    class Main(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return _main(self.m(**{key: x}))

    x = inputs[key]
    proto = torch_to_onnx(Main(small).eval(), (x,))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = Main(small)(x).numpy()
    assert np.abs(got - ref).max() <= 1e-3 * max(1.0, float(np.abs(ref).max()))


def test_tied_embeddings_stay_tied_when_the_residual_is_pruned():
    model, inputs = _build("gpt2"), _inputs("gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = epp.plan(model, inputs, ratio=0.25, round_to=None, global_ranking=False)
    small = epp.apply(model, plan)
    assert small.lm_head.weight is small.transformer.wte.weight
    assert small.transformer.wte.embedding_dim < 32
    with torch.no_grad():
        assert small(**inputs).logits.shape == (2, T, V)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_pruned_decoders_generate(name):
    _, _, inputs, small, _ = _pruned(name)
    out = small.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, T + 3)


def test_gqa_prunes_whole_key_value_groups():
    _, _, _, small, _ = _pruned("llama")
    for layer in small.model.layers:
        a = layer.self_attn
        # 4 key/value heads serving 4 query heads each: one whole group goes
        assert a.q_proj.out_features == 12 * 4 and a.k_proj.out_features == a.v_proj.out_features == 3 * 4
        assert a.num_key_value_groups == 4


def _qwen2():
    cfg = transformers.Qwen2Config(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(cfg).eval()


def test_default_plan_of_a_decoder_saves_and_reloads_with_from_pretrained(tmp_path):
    # no flags: a transformers decoder is cut by the same share in every layer, so its config can
    # state the result, the residual width and the head size (hidden / heads no longer) included
    model, inputs = _qwen2(), _inputs("gpt2")
    small = epp.apply(model, ep.plan(model, inputs, ratio=0.3))
    assert small.edgeprune_notes == []
    cfg = small.config
    assert cfg.hidden_size == 24 and cfg.intermediate_size == 48 and cfg.head_dim == 8
    assert small.model.embed_tokens.embedding_dim == 24
    small.save_pretrained(tmp_path)
    back = type(small).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(back(**inputs).logits, small(**inputs).logits)
    assert back.generate(**inputs, max_new_tokens=2, do_sample=False).shape == (2, T + 2)


def test_a_cut_the_config_cannot_state_warns_and_still_runs(tmp_path):
    # global ranking cuts the layers unevenly: a config holds one head count, so the pruned model
    # says it will not reload with from_pretrained (a warning, not an error) and ep.save/ep.load do
    model, inputs = _qwen2(), _inputs("gpt2")
    plan = ep.plan(model, inputs, ratio=0.3, global_ranking=True, round_to=None)
    with pytest.warns(UserWarning, match="reload with ep.load"):
        small = epp.apply(model, plan)
    assert small.edgeprune_notes
    ep.save(small, tmp_path / "m")
    back = ep.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(back(**inputs).logits, small(**inputs).logits)


def test_fused_projections_are_reported_when_the_config_cannot_state_them():
    # Phi-3 fuses gate and up projections: the width is stated, the head size (hidden / heads) is not
    cfg = transformers.Phi3Config(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=16, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model, inputs = transformers.Phi3ForCausalLM(cfg).eval(), _inputs("gpt2")
    with pytest.warns(UserWarning, match="from_pretrained cannot rebuild the pruned shapes from a Phi3Config"):
        small = epp.apply(model, ep.plan(model, inputs, ratio=0.3))
    assert small.config.intermediate_size == small.model.layers[0].mlp.gate_up_proj.out_features // 2 == 44
    with torch.no_grad():
        assert small(**inputs).logits.shape == (2, T, V)


def test_partial_rotary_models_prune():
    # GPT-NeoX rotates a quarter of each head: the untouched share of a 8-wide head is a slice the
    # tracer must not choke on when it is empty elsewhere
    cfg = transformers.GPTNeoXConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=0, rotary_pct=0.25,
    )  # fmt: skip
    torch.manual_seed(0)
    model, inputs = transformers.GPTNeoXForCausalLM(cfg).eval(), _inputs("gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = epp.apply(model, ep.plan(model, inputs, ratio=0.3))
    assert _nparams(small) < 0.8 * _nparams(model)
    assert small.generate(**inputs, max_new_tokens=2, do_sample=False).shape == (2, T + 2)


@pytest.mark.parametrize("name", ["gpt2", "bert_classifier"])
def test_configs_that_derive_the_head_size_reload_when_the_residual_follows_the_heads(name, tmp_path):
    # GPT-2 and BERT state only hidden_size and the head count (head size = hidden / heads): at the
    # defaults the residual stream is cut to kept heads x head size, so from_pretrained reloads it
    if name == "gpt2":
        model, inputs = _build("gpt2"), _inputs("gpt2")
    else:
        cfg = transformers.BertConfig(vocab_size=V, max_position_embeddings=16, num_labels=3, **ENCODER)
        torch.manual_seed(0)
        model, inputs = transformers.BertForSequenceClassification(cfg).eval(), _inputs("bert")
    small = epp.apply(model, ep.plan(model, inputs, ratio=0.5))
    cfg = small.config.to_dict()
    hidden, heads = (
        (cfg["n_embd"], cfg["n_head"]) if name == "gpt2" else (cfg["hidden_size"], cfg["num_attention_heads"])
    )
    assert heads == 2 and hidden == heads * 8 and not small.edgeprune_notes
    small.save_pretrained(tmp_path)
    back = type(small).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(back(**inputs).logits, small(**inputs).logits)


def test_a_base_encoder_keeps_its_residual_and_says_why_heads_do_not_reload():
    # BertModel's output is the residual stream itself, so its width stays; 2 heads of 8 in a
    # 32-wide BERT is a shape no BertConfig states: a note, and ep.save/ep.load rebuild it
    model, inputs = _build("bert"), _inputs("bert")
    with pytest.warns(UserWarning, match="cannot rebuild 2 heads of size 8 at hidden size 32"):
        small = epp.apply(model, ep.plan(model, inputs, ratio=0.5))
    assert small.config.hidden_size == 32
