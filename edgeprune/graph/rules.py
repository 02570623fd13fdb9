"""Layer rules: everything the graph knows about one module type, in one place.

Consumes: module types and ``LayerRule``s (built-in ones below, user ones through
``register_layer(type, rule)``). Produces: ``rule_for(module)``, the most specific rule of a module
(its class, then its base classes in MRO order), used by the three places that need layer
knowledge:

- ``trace(ctx, node, module, result)``: during the analysis run, turns the module call into channel
  annotations. ``ctx`` is the running ``Analyzer``: ``ctx.arg(node, i)`` is the annotation of an
  input, ``ctx.consume(node, ann, dim, role)`` records "axis ``role`` of this layer holds these
  channels", ``ctx.produce(node, n, dim, role)`` makes ``n`` fresh output channels on ``dim``,
  ``ctx.pin(ann, reason)`` keeps channels whole. Returns the output's annotation (``Ann`` or None).
- ``prune(module, roles, where)``: cuts the module in place to the kept indices of each role.
- ``positions(module, role, pick)``: per position of ``role``, a row of every weight touching it
  (the importance scorers rank channels by these rows); None when the role has no weights.

A module type with a rule is a leaf of the capture: its forward is not traced into. Invariant: the
roles a rule's ``trace`` records are exactly the roles its ``prune`` accepts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from . import surgery as S


@dataclass(frozen=True)
class LayerRule:
    """How one module type is traced, cut and scored. ``prune``/``positions`` may be None for
    layers that hold no channel-indexed weights (activations, pooling, reshapes)."""

    trace: Callable
    prune: Callable | None = None
    positions: Callable | None = None
    # the role names ``prune`` accepts; a plan naming any other role for this layer is refused
    # (None: the rule does not say, and ``prune`` sees every role the plan gives)
    roles: tuple | None = None


_RULES: dict = {}


def register_layer(module_type: type, rule: LayerRule) -> None:
    """Teach the graph a module type (overrides a built-in rule for that exact type)."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"register_layer: {module_type!r} is not an nn.Module subclass")
    if not isinstance(rule, LayerRule) or not callable(rule.trace):
        raise TypeError("register_layer: rule must be a LayerRule with a callable trace")
    _RULES[module_type] = rule


def unregister_layer(module_type: type) -> None:
    _RULES.pop(module_type, None)


def rule_for(module: nn.Module) -> LayerRule | None:
    if not _third_party_done and "transformers" in sys.modules:
        _third_party()
    for cls in type(module).__mro__:
        r = _RULES.get(cls)
        if r is not None:
            return r
        if cls is nn.Module:
            return None
    return None


def cuts_own_params(module: nn.Module) -> bool:
    """True when a rule's surgery already slices this module's parameters."""
    r = rule_for(module)
    return r is not None and r.prune is not None


# ---------------------------------------------------------------------------------------------
# built-in trace rules (ctx is the running Analyzer; see its "rule API" section)


def _trace_linear(ctx, n, m, result):
    rank = result.dim()
    ctx.consume(n, ctx.arg(n), rank - 1, "in")
    return ctx.produce(n, m.out_features, rank - 1)


def _trace_embedding(ctx, n, m, result):
    return ctx.produce(n, m.embedding_dim, result.dim() - 1, role="dim")


def _trace_channels_dim1(ctx, n, m, result):
    a = ctx.arg(n)
    return a if ctx.consume(n, a, 1, "channels") else None


def _trace_prelu(ctx, n, m, result):
    if m.num_parameters > 1:
        return _trace_channels_dim1(ctx, n, m, result)
    return ctx.same(ctx.arg(n), result, type(m).__name__)


def _trace_layer_norm(ctx, n, m, result):
    a, rank, k = ctx.arg(n), result.dim(), len(m.normalized_shape)
    x = ctx.value(n)
    if (
        type(m) is not nn.LayerNorm
        and isinstance(a, ctx.Ann)
        and a.dims == (1,)
        and k == 1
        and x.shape[1] == m.normalized_shape[0] != x.shape[-1]
    ):
        # a channels-first subclass (torchvision/timm LayerNorm2d) normalizes over dim 1
        ctx.consume(n, a, 1, "channels")
        ctx.inexact(a.ids, f"{n.target} (LayerNorm statistics)")
        return a
    if not isinstance(a, ctx.Ann) or all(d < rank - k for d in a.dims):
        return a
    if k == 1 and ctx.consume(n, a, rank - 1, "channels"):
        ctx.inexact(a.ids, f"{n.target} (LayerNorm statistics)")
        return a
    ctx.pin(a, f"{n.target}: LayerNorm over several dims")
    return None


def _trace_group_norm(ctx, n, m, result):
    a = ctx.arg(n)
    if isinstance(a, ctx.Ann) and a.dims == (1,) and len(a.ids) % m.num_groups == 0:
        ctx.an.atoms.union_cols(a.ids.reshape(m.num_groups, -1))
        ctx.consume(n, a, 1, "channels")
        ctx.inexact(a.ids, f"{n.target} (GroupNorm statistics)")
        return a
    ctx.pin(a, f"{n.target}: channels not on dim 1")
    return None


def _trace_softmax(ctx, n, m, result):
    return ctx._softmax(ctx.arg(n), m.dim, result, n.target)


def _trace_pixel_shuffle(ctx, n, m, result):
    return ctx._pixel_shuffle(ctx.arg(n), m.upscale_factor, True, n.target)


def _trace_pixel_unshuffle(ctx, n, m, result):
    return ctx._pixel_shuffle(ctx.arg(n), m.downscale_factor, False, n.target)


def _trace_flatten(ctx, n, m, result):
    return ctx._reshape(n, ctx.arg(n), ctx.value(n).shape, result.shape, literal=())


def _trace_same(ctx, n, m, result):
    return ctx.same(ctx.arg(n), result, type(m).__name__)


def _trace_conv(ctx, n, m, result):
    return ctx._conv(n, m, ctx.arg(n), result)


def _trace_mha(ctx, n, m, result):
    return ctx._mha(n, m, result)


def _trace_rnn(ctx, n, m, result):
    return ctx._rnn(n, m, result)


# ---------------------------------------------------------------------------------------------
# built-in surgery and position views


def _dense(out_attr: str, in_attr: str, out_axis: int):
    """Surgery of a dense layer: ``out_attr``/``in_attr`` count its features, the weight holds
    outputs on ``out_axis`` and inputs on the other axis."""

    def prune(m, roles, where):
        if "out" in roles:
            S._check(roles["out"], getattr(m, out_attr), where)
            S._take(m, "weight", out_axis, roles["out"])
            S._take(m, "bias", 0, roles["out"])
            setattr(m, out_attr, len(roles["out"]))
        if "in" in roles:
            S._check(roles["in"], getattr(m, in_attr), where)
            S._take(m, "weight", 1 - out_axis, roles["in"])
            setattr(m, in_attr, len(roles["in"]))

    return prune


def _prune_embedding(m, roles, where):
    S._check(roles["dim"], m.embedding_dim, where)
    S._take(m, "weight", 1, roles["dim"])
    m.embedding_dim = len(roles["dim"])


def _prune_channels(m, roles, where):
    S._channels(m, roles["channels"], where)


def _prune_mha(m, roles, where):
    S._mha(m, roles["embed"], where)


def _pos_weight(attr):
    def positions(m, role, pick):
        w = S.picked(getattr(m, attr, None), pick)
        if w is None:
            return None
        return w if role == "out" else w.t()

    return positions


def _pos_embedding(m, role, pick):
    w = S.picked(m.weight, pick)
    return None if w is None else w.t()


def _pos_first_axis(m, role, pick):
    w = S.picked(getattr(m, "weight", None), pick)
    return None if w is None else w.reshape(w.shape[0], -1)


_PASS = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Softplus,
    nn.Mish,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Upsample,
    nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
    nn.ZeroPad2d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.LogSigmoid,
    nn.Softsign,
    nn.Tanhshrink,
)


def _builtins() -> None:
    norm = LayerRule(_trace_channels_dim1, _prune_channels, _pos_first_axis, ("channels",))
    for t in (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm):
        _RULES[t] = norm
    _RULES[nn.PReLU] = LayerRule(_trace_prelu, _prune_channels, _pos_first_axis, ("channels",))
    _RULES[nn.LayerNorm] = LayerRule(_trace_layer_norm, _prune_channels, _pos_first_axis, ("channels",))
    _RULES[nn.GroupNorm] = LayerRule(_trace_group_norm, _prune_channels, _pos_first_axis, ("channels",))
    _RULES[nn.modules.conv._ConvNd] = LayerRule(_trace_conv, S._conv_roles, S._conv_positions, ("out", "in"))
    _RULES[nn.Linear] = LayerRule(
        _trace_linear, _dense("out_features", "in_features", 0), _pos_weight("weight"), ("out", "in")
    )
    _RULES[nn.Embedding] = LayerRule(_trace_embedding, _prune_embedding, _pos_embedding, ("dim",))
    _RULES[nn.MultiheadAttention] = LayerRule(_trace_mha, _prune_mha, S._mha_positions, ("embed",))
    _RULES[nn.modules.rnn.RNNBase] = LayerRule(_trace_rnn, S._rnn, S._rnn_positions, ("hidden", "in"))
    _RULES[nn.Softmax] = LayerRule(_trace_softmax)
    _RULES[nn.PixelShuffle] = LayerRule(_trace_pixel_shuffle)
    _RULES[nn.PixelUnshuffle] = LayerRule(_trace_pixel_unshuffle)
    _RULES[nn.Flatten] = LayerRule(_trace_flatten)
    _RULES[nn.Unflatten] = LayerRule(_trace_flatten)
    for t in _PASS:
        _RULES[t] = LayerRule(_trace_same)


_builtins()


# transformers' Conv1D (GPT-2, GPT): a Linear with its weight stored [in, out]


def _trace_hf_conv1d(ctx, n, m, result):
    rank = result.dim()
    ctx.consume(n, ctx.arg(n), rank - 1, "in")
    return ctx.produce(n, m.nf, rank - 1)


def _pos_hf_conv1d(m, role, pick):
    w = S.picked(m.weight, pick)
    if w is None:
        return None
    return w.t() if role == "out" else w


_third_party_done = False


def _third_party() -> None:
    """Rules for layer types of libraries that are already imported (never imports them)."""
    global _third_party_done
    _third_party_done = True
    pu = sys.modules.get("transformers.pytorch_utils")
    if pu is None:
        import transformers.pytorch_utils as pu  # transformers is imported: its utils are cheap
    _RULES.setdefault(pu.Conv1D, LayerRule(_trace_hf_conv1d, _dense("nf", "nx", 1), _pos_hf_conv1d, ("out", "in")))


__all__ = ["LayerRule", "register_layer", "unregister_layer", "rule_for", "cuts_own_params"]
