"""Hugging Face model directories (``save_pretrained`` output) as model specs.

Consumes: a directory holding ``config.json`` and weights (``model.safetensors``, its sharded
index, or ``pytorch_model.bin``), as ``save_pretrained`` writes it or a hub download leaves it on
disk. Produces: the model in eval mode, tagged with the ``transformers_class:NAME`` spec and its
config (so ``ep.save`` of it, pruned or not, reloads without ``--trust-code``), and
``example_inputs`` for it (token ids and a mask, or an image of the config's size).

Trust: ``config.json`` is data. Its ``architectures`` must name a ``transformers`` model class;
a config with ``auto_map`` names Python files of the directory (``trust_remote_code``), which run
only with ``trust_code=True``. Weights load through ``transformers`` without network access
(``local_files_only``) and with ``weights_only`` unpickling for ``.bin`` files.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from .spec import SpecError, _json_object, _need

CONFIG = "config.json"
# a config is a few KB; a file far larger is not one
_MAX_CONFIG_BYTES = 4 << 20
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# the deepest published transformers have about 130 layers; a config far beyond is not a model
MAX_LAYERS = 1024
_DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers", "decoder_layers")
# token sequence of the example inputs when the caller names none (capped by the model's position
# table): the length sentence embedders and classifiers are usually deployed at; exported files
# take it as their static shape
DEFAULT_SEQ_LEN = 128


def is_hf_dir(path: Path) -> bool:
    """A directory with ``config.json`` and no ``model.json`` (``ep.save`` writes that one)."""
    return path.is_dir() and (path / CONFIG).is_file() and not (path / "model.json").exists()


def read_config(path: Path) -> dict:
    """``config.json`` as a dict of JSON values, or a SpecError naming the file and what is wrong."""
    f = path / CONFIG
    if f.stat().st_size > _MAX_CONFIG_BYTES:
        raise SpecError(f"{f}: {f.stat().st_size} bytes is not a model config (at most {_MAX_CONFIG_BYTES})")
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpecError(f"{f}: not JSON ({e}); is this a Hugging Face model directory?") from None
    if not isinstance(cfg, dict) or not _json_object(cfg):
        raise SpecError(f"{f}: not a JSON object of plain values")
    if not isinstance(cfg.get("model_type"), str):
        raise SpecError(f"{f}: no 'model_type'; save the model with save_pretrained")
    return cfg


def load_hf_dir(path: str | Path, trust_code: bool = False) -> nn.Module:
    """The model of a ``save_pretrained`` directory; see the module docstring."""
    path = Path(path)
    cfg = read_config(path)
    where = path / CONFIG
    if not any((path / w).is_file() for w in _WEIGHT_FILES):
        raise SpecError(f"{path}: no weights ({', '.join(_WEIGHT_FILES)}); save the model with save_pretrained")
    tf = _need("transformers", str(path))
    remote = cfg.get("auto_map")
    if remote is not None:
        if not trust_code:
            raise SpecError(
                f"{where}: 'auto_map' names Python code in the directory (trust_remote_code); refused, nothing "
                "was imported; pass --trust-code (trust_code=True) if you trust whoever wrote it"
            )
        auto = next((k for k in remote if isinstance(k, str) and k.startswith("AutoModel")), None)
        if auto is None or not hasattr(tf, auto):
            raise SpecError(f"{where}: 'auto_map' names no transformers AutoModel class")
        model = _with_input_shape(_loaded(getattr(tf, auto), path, trust_remote_code=True))
        # rebuilt by this function from the same directory: a spec outside the registry, so
        # ep.load of a saved copy needs trust_code too, and the directory must still be there
        model.edgeprune_spec = "edgeprune.models.hf_dir:load_hf_dir"
        model.edgeprune_build_kwargs = {"path": str(path.resolve()), "trust_code": True}
        return model
    arch = cfg.get("architectures") or []
    name = arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else None
    cls = getattr(tf, name, None) if name else tf.AutoModel
    if not (isinstance(cls, type) and (cls is tf.AutoModel or issubclass(cls, tf.PreTrainedModel))):
        raise SpecError(
            f"{where}: architectures names {name!r}, which is not a class of transformers "
            f"{tf.__version__}; upgrade transformers or fix the config"
        )
    for key in _DEPTH_KEYS:  # before any build: even on the meta device each layer costs time
        depth = cfg.get(key)
        if isinstance(depth, int) and not 0 <= depth <= MAX_LAYERS:
            raise SpecError(f"{where}: {key}={depth} is not a model depth (at most {MAX_LAYERS}); fix the config")
    if cls is not tf.AutoModel:
        _check_size(cls, path)
    model = _with_input_shape(_loaded(cls, path))
    model.edgeprune_spec = f"transformers_class:{type(model).__name__}"
    model.edgeprune_build_kwargs = {"config": model.config.to_dict()}
    if hasattr(model, "pooler") and model.pooler is None:  # built with add_pooling_layer=False
        model.edgeprune_build_kwargs["add_pooling_layer"] = False
    return model


def _with_input_shape(model: nn.Module) -> nn.Module:
    inputs = example_inputs(model)
    if inputs is not None and "pixel_values" in inputs:  # image models run on one positional tensor
        model.input_shape = tuple(inputs["pixel_values"].shape[1:])
    return model


def _check_size(cls, path: Path) -> None:
    """Refuse a config that describes a model far larger than the weights beside it: transformers
    would fill the missing weights at random, and a hostile ``num_hidden_layers`` could take all
    memory. The model is built on the meta device, which allocates nothing."""
    weights = sum(f.stat().st_size for f in path.iterdir() if f.is_file() and f.suffix in (".safetensors", ".bin"))
    try:
        config = cls.config_class.from_pretrained(str(path), local_files_only=True)
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = cls(config)
        values = sum(t.numel() for t in probe.state_dict().values())
    except Exception:  # a config the class cannot build: the real load reports why
        return
    # a value takes at least half a byte (4-bit checkpoints), and shared tables count twice
    if values > 4 * weights + 10**7:
        raise SpecError(
            f"{path / CONFIG}: describes a model of {values:,} values, but its weights files hold "
            f"{weights:,} bytes; fix the config or add the missing weights"
        )


def _loaded(cls, path: Path, **kw) -> nn.Module:
    from transformers.utils import logging as tf_logging

    bar = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()  # its per-tensor loading bar is noise in a CLI run
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls.from_pretrained(str(path), local_files_only=True, weights_only=True, **kw)
    except Exception as e:  # every failure here is the directory's: a truncated safetensors file
        # (SafetensorError), a pickle that weights_only refuses, sizes the config does not state
        first = (str(e).strip().splitlines() or [""])[0][:300]
        if isinstance(e, pickle.UnpicklingError):  # torch's text goes on to suggest weights_only=False
            first = "a .bin that is not a plain state_dict (weights_only unpickling refused it)"
        raise SpecError(f"{path}: transformers cannot load it ({type(e).__name__}: {first})") from None
    finally:
        if bar:
            tf_logging.enable_progress_bar()
    if not isinstance(model, nn.Module):
        raise SpecError(f"{path}: loading gave a {type(model).__name__}, not a model")
    return model.eval()


def example_inputs(model: nn.Module, seq_len: int | None = None):
    """Inputs a ``transformers`` model runs on, from its config: ``{"input_ids", "attention_mask"}``
    of ``seq_len`` tokens (default ``DEFAULT_SEQ_LEN``, at most the position table less 2) for token
    models, ``{"pixel_values"}`` of the config's image size for image models; None for others."""
    cfg = getattr(model, "config", None)
    main = getattr(model, "main_input_name", None)
    g = torch.Generator().manual_seed(0)
    if cfg is None:
        return None
    if main == "input_ids":
        vocab = int(getattr(cfg, "vocab_size", 0) or 0)
        limit = getattr(cfg, "max_position_embeddings", None)
        n = seq_len or DEFAULT_SEQ_LEN
        if isinstance(limit, int) and limit > 2:
            # RoBERTa-family position ids start after the padding index (pad_token_id + 1 = 2),
            # so their table serves max_position_embeddings - 2 tokens
            n = min(n, limit - 2)
        if vocab < 2:
            return None
        ids = torch.randint(1, vocab, (1, n), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones(1, n, dtype=torch.long)}
    if main == "pixel_values":
        size = getattr(cfg, "image_size", None)
        size = size if isinstance(size, int) else (size[0] if isinstance(size, (list, tuple)) and size else 224)
        ch = int(getattr(cfg, "num_channels", 3) or 3)
        return {"pixel_values": torch.randn(1, ch, size, size, generator=g)}
    return None


def token_inputs(model: nn.Module, seq_len: int | None = None):
    """``example_inputs`` of a token model (token ids and a mask), None for any other model."""
    inputs = example_inputs(model, seq_len)
    return inputs if inputs is not None and "input_ids" in inputs else None
