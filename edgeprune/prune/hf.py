"""Hugging Face ``transformers`` models after pruning: attributes, config, save and reload.

Consumes: a pruned ``transformers`` ``PreTrainedModel`` (its layers already cut by ``apply``).
Produces: the same model with every attention module's head attributes (``num_attention_heads`` /
``num_heads`` / ``n_heads``, ``attention_head_size`` / ``head_dim``, ``all_head_size``,
``split_size``, ``num_key_value_groups``) and its ``config`` (``num_attention_heads``,
``num_key_value_heads``, ``intermediate_size`` or the model's name for it) matching the weights,
so ``save_pretrained``/``from_pretrained`` round-trip wherever the config can state the shape.

Config limits: a config that derives the head size from ``hidden_size / num_attention_heads``
(BERT, DistilBERT, ViT, GPT-2) cannot state fewer heads of the same size, so for those the config
keeps its head count and ``sync`` returns a note; ``ep.save``/``ep.load`` (spec
``edgeprune.prune.hf:from_config``) rebuild any pruned shape from the original config and the plan.
All per-layer values must agree (a config holds one number): plan with ``global_ranking=False``.
Never imports ``transformers`` unless the model already comes from it.
"""

from __future__ import annotations

import torch.nn as nn

from ..errors import UserError

SPEC = "edgeprune.prune.hf:from_config"

_Q = ("query", "q_proj", "q_lin", "c_attn", "q")
_K = ("key", "k_proj", "k_lin", "k")
_HEADS = ("num_attention_heads", "num_heads", "n_heads", "n_head")
_HEAD_DIM = ("attention_head_size", "head_dim", "head_size", "dim_per_head")
# first layer of the feed-forward block -> config names of its width
_FFN = ("intermediate.dense", "mlp.gate_proj", "mlp.c_fc", "ffn.lin1", "mlp.fc1", "mlp.up_proj")
_FFN_CONFIG = ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim")


def is_hf(model: nn.Module) -> bool:
    return type(model).__module__.startswith("transformers.") and hasattr(model, "config")


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


def _one(values: set, what: str):
    if len(values) > 1:
        raise UserError(
            f"the pruned layers keep different {what} ({sorted(values)}); a transformers config holds one "
            "value: plan with global_ranking=False so every layer keeps the same count"
        )
    return next(iter(values)) if values else None


def _head_size_is_explicit(cfg) -> bool:
    return isinstance(getattr(cfg, "head_dim", None), int)


def sync(model: nn.Module) -> list:
    """Make module attributes and ``model.config`` match the pruned weights. Returns notes on
    what the config cannot state (empty when it round-trips through from_pretrained)."""
    notes: list = []
    cfg = model.config
    shapes = _attention_shapes(model)
    for m, heads, kv, _hd, width in shapes:
        _set_attention_attrs(m, heads, kv, width)
    heads = _one({s[1] for s in shapes}, "head counts")
    kv = _one({s[2] for s in shapes}, "key/value head counts")
    if heads is not None and heads != getattr(cfg, "num_attention_heads", heads):
        hidden = getattr(cfg, "hidden_size", None)
        if _head_size_is_explicit(cfg) and isinstance(hidden, int) and hidden % heads == 0:
            cfg.num_attention_heads = heads
        elif _head_size_is_explicit(cfg):
            notes.append(
                f"{type(cfg).__name__} requires hidden_size ({hidden}) to be a multiple of the head count, so it "
                f"cannot state {heads} heads: reload with ep.load, or prune to a head count that divides it"
            )
        else:
            notes.append(
                f"{type(cfg).__name__} derives the head size from hidden_size / num_attention_heads, so it "
                f"cannot state {heads} heads: reload with ep.load (the modules hold the pruned head count)"
            )
    if kv is not None and isinstance(getattr(cfg, "num_key_value_heads", None), int):
        cfg.num_key_value_heads = kv
    widths = set()
    for name, m in model.named_modules():
        if any(name == f or name.endswith("." + f) for f in _FFN):
            widths.add(_out(m))
    width = _one(widths, "feed-forward widths")
    if width is not None:
        for attr in _FFN_CONFIG:
            if isinstance(getattr(cfg, attr, None), int) or (attr == "n_inner" and hasattr(cfg, "n_inner")):
                setattr(cfg, attr, width)
                break
    return notes


def tag(model: nn.Module, source: nn.Module) -> None:
    """Give a pruned HF model the spec ``ep.save`` needs: rebuild ``source``'s config, then replay."""
    if getattr(model, "edgeprune_spec", None):
        return
    model.edgeprune_spec = SPEC
    model.edgeprune_build_kwargs = {"architecture": type(source).__name__, "config": source.config.to_dict()}


def from_config(architecture: str, config: dict) -> nn.Module:
    """Build a ``transformers`` model class by name from a config dict (random weights).

    The name must be a model class exported by ``transformers``; nothing else is looked up."""
    import transformers

    cls = getattr(transformers, str(architecture), None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise UserError(f"{architecture!r} is not a transformers model class; the saved model.json is damaged")
    if not isinstance(config, dict):
        raise UserError("the saved transformers config is not a JSON object; the saved model.json is damaged")
    cfg = cls.config_class.from_dict(dict(config))
    return cls(cfg).eval()
