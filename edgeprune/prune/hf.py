"""Hugging Face ``transformers`` models after pruning: attributes, config, save and reload.

Consumes: a pruned ``transformers`` ``PreTrainedModel`` (its layers already cut by ``apply``).
Produces: the same model with every attention module's head attributes (``num_attention_heads`` /
``num_heads`` / ``n_heads``, ``attention_head_size`` / ``head_dim``, ``all_head_size``,
``split_size``, ``num_key_value_groups``) and its ``config`` (``num_attention_heads``,
``num_key_value_heads``, ``intermediate_size`` or the model's name for it, and ``hidden_size`` or
its name when the residual stream was pruned) matching the weights,
so ``save_pretrained``/``from_pretrained`` round-trip wherever the config can state the shape.

Config limits: a head count is written to the config only when a model built from it has exactly
the pruned shapes (checked by building it on the meta device). Llama-style configs (explicit
``head_dim``) and ViT (whose attention reads ``config.head_dim`` when set) state pruned heads that way.
BERT, DistilBERT and GPT-2 compute the head size as ``hidden_size / heads``, so no config of theirs
states fewer heads of the same size, and pruning head dims instead changes the same quotient: for
those the config keeps its head count and ``sync`` returns a note. Their feed-forward width always
round-trips (prune only the feed-forward layers for a checkpoint ``from_pretrained`` reads);
``ep.save``/``ep.load`` (spec ``transformers_class:NAME``, a registered factory) rebuild any pruned
shape from the original config and the plan.
All per-layer values must agree (a config holds one number): ``plan`` ranks per layer by default
for these models (``global_ranking=False``) so they do.
Never imports ``transformers`` unless the model already comes from it.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

_Q = ("query", "q_proj", "q_lin", "c_attn", "q")
_K = ("key", "k_proj", "k_lin", "k")
_HEADS = ("num_attention_heads", "num_heads", "n_heads", "n_head")
_HEAD_DIM = ("attention_head_size", "head_dim", "head_size", "dim_per_head")
# first layer of the feed-forward block -> config names of its width
_FFN = (
    "intermediate.dense",
    "mlp.gate_proj",
    "mlp.c_fc",
    "ffn.lin1",
    "mlp.fc1",
    "mlp.up_proj",
    "mlp.dense_h_to_4h",
    "mlp.fc_in",
    "fc1",
)
# fused gate and up projections (Phi-3): twice the feed-forward width
_FFN_FUSED = ("mlp.gate_up_proj",)
_FFN_CONFIG = ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim")
# config names of the residual stream's width (the input embeddings' width)
_HIDDEN_CONFIG = ("hidden_size", "n_embd", "d_model", "dim")


def is_hf(model: nn.Module) -> bool:
    return type(model).__module__.startswith("transformers.") and hasattr(model, "config")


def one_shape_per_config(model: nn.Module) -> bool:
    """Whether ``model`` is a ``transformers`` model whose config states one head count and one
    feed-forward width for every layer (BERT, Llama, ViT, ...), so only equal cuts per layer can be
    written back to it. Staged models (Swin, MobileViT) and CNNs (ResNet, ConvNeXt) are not."""
    if not is_hf(model):
        return False
    heads = [getattr(model.config, a, None) for a in _HEADS]
    if any(isinstance(h, (list, tuple)) for h in heads):
        return False
    return any(isinstance(h, int) for h in heads) or bool(_attention_shapes(model))


def couple_residual(model: nn.Module, graph, scores: dict, keep: dict) -> dict:
    """For a config that derives the head size as ``hidden_size / heads`` (BERT, DistilBERT, GPT-2,
    RoBERTa, ...): cut the residual stream to exactly kept heads x head size, the only width whose
    config states the pruned heads, so ``from_pretrained`` reloads the model. Its channels go by
    their scores, as the planner's would. ``keep`` ({group id: keep mask}) is returned changed, or
    as it was when the model is not such a model, its residual stream is not prunable (ignored
    embeddings) or its layers keep different head counts."""
    if not one_shape_per_config(model):
        return keep
    cfg = model.config
    heads0 = next((getattr(cfg, a) for a in _HEADS if isinstance(getattr(cfg, a, None), int)), None)
    hidden0 = next((getattr(cfg, a) for a in _HIDDEN_CONFIG if isinstance(getattr(cfg, a, None), int)), None)
    if getattr(cfg, "head_dim", None) is not None or not heads0 or not hidden0 or hidden0 % heads0:
        return keep
    emb = _input_embeddings(model)
    names = {m: n for n, m in model.named_modules()}
    groups = [g for g in graph.groups() if g.prunable]
    residual = next((g for g in groups if emb in names and names[emb] in g.sources and g.size == hidden0), None)
    heads = [g for g in groups if g.size == heads0 and any(src.rsplit(".", 1)[-1] in _Q for src in g.sources)]
    if residual is None or not heads:
        return keep
    kept = {int(keep[g.id].sum()) if g.id in keep else g.size for g in heads}
    if len(kept) != 1:
        return keep
    want = kept.pop() * (hidden0 // heads0)
    out = dict(keep)
    out.pop(residual.id, None)
    if want < hidden0:
        order = np.argsort(np.asarray(scores[residual.id], dtype=np.float64), kind="stable")
        mask = np.ones(hidden0, dtype=bool)
        mask[order[: hidden0 - want]] = False
        out[residual.id] = mask
    return out


def _input_embeddings(model: nn.Module):
    get = getattr(model, "get_input_embeddings", None)
    try:
        return get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        return None


def _out(m: nn.Module) -> int | None:
    for attr in ("out_features", "nf"):
        v = getattr(m, attr, None)
        if isinstance(v, int):
            return v
    return None


def _child(m: nn.Module, names) -> nn.Module | None:
    for n in names:
        c = getattr(m, n, None)
        if isinstance(c, nn.Module) and _out(c) is not None:
            return c
    return None


def _attention_shapes(model: nn.Module) -> list:
    """(module, heads, kv heads, head dim, width of q) of every attention module we recognise."""
    out = []
    for _, m in model.named_modules():
        q = _child(m, _Q)
        hd = next((getattr(m, a) for a in _HEAD_DIM if isinstance(getattr(m, a, None), int)), None)
        if q is None or hd is None:  # Llama-style modules keep only head_dim; heads follow from q
            continue
        width = _out(q) // 3 if getattr(m, "c_attn", None) is q and not hasattr(m, "q_attn") else _out(q)
        k = _child(m, _K)
        kv = _out(k) // hd if k is not None else width // hd
        out.append((m, width // hd, kv, hd, width))
    return out


def _set_attention_attrs(m, heads, kv, width) -> None:
    for a in _HEADS:
        if isinstance(getattr(m, a, None), int):
            setattr(m, a, heads)
    if isinstance(getattr(m, "all_head_size", None), int):
        m.all_head_size = width
    if isinstance(getattr(m, "split_size", None), int):
        m.split_size = width
    if isinstance(getattr(m, "num_key_value_heads", None), int):
        m.num_key_value_heads = kv
    if isinstance(getattr(m, "num_key_value_groups", None), int) and kv:
        m.num_key_value_groups = heads // kv


def _one(values: set, what: str, notes: list):
    """The one value all layers share, or None with a note when they differ."""
    if len(values) > 1:
        notes.append(
            f"the pruned layers keep different {what} ({sorted(values)}), where the config holds one value: "
            "reload with ep.load, or plan with global_ranking=False so every layer keeps the same count"
        )
        return None
    return next(iter(values)) if values else None


def _reloads(model: nn.Module, cfg) -> bool:
    """Whether ``type(model)(cfg)`` (what from_pretrained builds) has exactly the model's tensor shapes.
    Built on the meta device: no memory, no init cost."""
    try:
        with torch.device("meta"):
            fresh = type(model)(cfg)
    except Exception:  # the config's own checks refuse it (hidden_size not a multiple of the heads)
        return False
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return {k: tuple(v.shape) for k, v in fresh.state_dict().items()} == want


def _sync_heads(model: nn.Module, heads: int, kv, head_dim: int) -> list:
    """State ``heads`` heads of ``head_dim`` in the config when a model built from it has the pruned
    shapes (configs that read ``head_dim``: Llama, Qwen, Mistral, ViT); otherwise keep the config and
    return a note."""
    cfg = model.config
    trial = copy.deepcopy(cfg)
    trial.num_attention_heads, trial.head_dim = heads, head_dim
    if kv is not None and isinstance(getattr(cfg, "num_key_value_heads", None), int):
        trial.num_key_value_heads = kv
    if _reloads(model, trial):
        cfg.num_attention_heads, cfg.head_dim = heads, head_dim
        return []
    hidden = _hidden(model)  # None for a model without token embeddings (ViT's patches)
    at = f" at hidden size {hidden}" if hidden is not None else ""
    return [
        f"{type(cfg).__name__} derives the head size from hidden_size / num_attention_heads, so from_pretrained "
        f"cannot rebuild {heads} heads of size {head_dim}{at}: reload with ep.load, "
        "or keep the embeddings and prune only heads of a config that states head_dim, or the feed-forward "
        "layers, for a checkpoint from_pretrained reads"
    ]


def _hidden(model: nn.Module) -> int | None:
    """The residual stream's width: the input embeddings' width, when the model has them."""
    emb = _input_embeddings(model)
    return getattr(emb, "embedding_dim", None) if isinstance(emb, nn.Embedding) else None


def sync(model: nn.Module) -> list:
    """Make module attributes and ``model.config`` match the pruned weights. Returns notes on
    what the config cannot state (empty when it round-trips through from_pretrained)."""
    notes: list = []
    cfg = model.config
    shapes = _attention_shapes(model)
    for m, heads, kv, _hd, width in shapes:
        _set_attention_attrs(m, heads, kv, width)
    if any(isinstance(getattr(cfg, a, None), (list, tuple)) for a in _HEADS):
        return [  # stages of different head counts from the start (Swin, MobileViT): a config list
            f"{type(cfg).__name__} gives its stages different head counts, which this module does not "
            "restate: reload with ep.load (ep.save writes the plan)"
        ]
    heads = _one({s[1] for s in shapes}, "head counts", notes)
    kv = _one({s[2] for s in shapes}, "key/value head counts", notes)
    head_dim = _one({s[3] for s in shapes}, "head sizes", notes)
    if kv is not None and isinstance(getattr(cfg, "num_key_value_heads", None), int):
        cfg.num_key_value_heads = kv
    widths = set()
    for name, m in model.named_modules():
        if any(name == f or name.endswith("." + f) for f in _FFN):
            widths.add(_out(m))
        elif any(name == f or name.endswith("." + f) for f in _FFN_FUSED) and _out(m) is not None:
            widths.add(_out(m) // 2)
    width = _one(widths, "feed-forward widths", notes)
    if width is not None:
        for attr in _FFN_CONFIG:
            if isinstance(getattr(cfg, attr, None), int) or (attr == "n_inner" and hasattr(cfg, "n_inner")):
                setattr(cfg, attr, width)
                break
    hidden = _hidden(model)
    if hidden is not None:
        for attr in _HIDDEN_CONFIG:
            if isinstance(getattr(cfg, attr, None), int):
                if getattr(cfg, attr) != hidden:
                    setattr(cfg, attr, hidden)
                break
    # after the widths: the trial build checks all shapes. A pruned residual stream also changes the
    # head size a config derives as hidden_size / heads, so the head_dim is stated then too.
    changed = heads is not None and heads != getattr(cfg, "num_attention_heads", heads)
    if heads is not None and (changed or not _reloads(model, cfg)):
        notes += _sync_heads(model, heads, kv, head_dim)
    if not notes and not _reloads(model, cfg):  # shapes this module does not know how to state
        notes.append(
            f"from_pretrained cannot rebuild the pruned shapes from a {type(cfg).__name__}: reload with ep.load "
            "(ep.save writes the plan), or ignore the layers whose widths the config cannot state"
        )
    return notes


def tag(model: nn.Module, source: nn.Module) -> None:
    """Give a pruned HF model the spec ``ep.save`` needs: rebuild ``source``'s config, then replay."""
    if getattr(model, "edgeprune_spec", None):
        return
    # a registered factory (edgeprune.models.spec), so the saved directory loads without --trust-code
    model.edgeprune_spec = f"transformers_class:{type(source).__name__}"
    model.edgeprune_build_kwargs = {"config": source.config.to_dict()}
    if hasattr(source, "pooler") and source.pooler is None:  # built with add_pooling_layer=False
        model.edgeprune_build_kwargs["add_pooling_layer"] = False
