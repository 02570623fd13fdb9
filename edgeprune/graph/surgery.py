"""Layer surgery: cut a layer down to kept channel indices, and view its weights per channel.

Consumes: a module and, per role ("out", "in", "channels", "dim", "embed"), the sorted indices
to keep along that axis. Produces: the same module object with smaller parameters and matching
attributes (out_channels, groups, num_features, normalized_shape, embed_dim, num_heads, ...).
``position_matrix`` gives, per position of a role, a row of every weight that touches it (used by
the importance scorers). Lives below the graph so prune can use it without a cycle.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _idx(keep) -> torch.Tensor:
    return torch.as_tensor(list(keep), dtype=torch.long)


def _set(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.detach().clone().contiguous(), requires_grad=old.requires_grad))
    else:
        module.register_buffer(
            name, value.detach().clone().contiguous(), persistent=name not in module._non_persistent_buffers_set
        )


def _take(module: nn.Module, name: str, axis: int, keep) -> None:
    t = getattr(module, name, None)
    if t is None:
        return
    _set(module, name, t.detach().index_select(axis, _idx(keep)))


def _check(keep, size: int, where: str) -> None:
    keep = list(keep)
    if not keep or keep != sorted(set(keep)) or keep[0] < 0 or keep[-1] >= size:
        raise ValueError(f"{where}: kept indices must be sorted, unique and within 0..{size - 1}")


def prune_module(module: nn.Module, roles: dict, where: str = "") -> None:
    """Cut ``module`` in place to the kept indices of each role (through its layer rule)."""
    from .rules import rule_for

    where = where or type(module).__name__
    rule = rule_for(module)
    known = rule.roles if rule is not None and rule.roles is not None else None
    if known is None and rule is None:
        known = ("channels",)  # the generic norm-like surgery below
    unknown = sorted(set(roles) - set(known)) if known is not None else []
    if unknown:
        raise ValueError(f"{where}: {type(module).__name__} has no role {unknown[0]!r} (its roles: {', '.join(known)})")
    if rule is not None and rule.prune is not None:
        rule.prune(module, roles, where)
    elif "channels" in roles:
        _channels(module, roles["channels"], where)
    else:
        raise ValueError(f"{where}: no surgery for {type(module).__name__} with roles {sorted(roles)}")


def _channels(module: nn.Module, keep, where: str) -> None:
    """Norm-like layers: every own parameter/buffer whose first axis is the channel axis."""
    old = None
    for attr in ("num_features", "num_channels", "num_parameters"):
        if isinstance(getattr(module, attr, None), int):
            old = getattr(module, attr)
    if old is None and hasattr(module, "normalized_shape"):
        old = tuple(module.normalized_shape)[-1]
    if old is None:
        raise ValueError(f"{where}: cannot tell the channel count of {type(module).__name__}")
    _check(keep, old, where)
    for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
        if t is not None and t.dim() >= 1 and t.shape[0] == old:
            _take(module, name, 0, keep)
    for attr in ("num_features", "num_channels", "num_parameters"):
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, len(keep))
    if hasattr(module, "normalized_shape"):
        module.normalized_shape = (len(keep),)


def _conv_roles(m: nn.modules.conv._ConvNd, roles: dict, where: str) -> None:
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    g, cin, cout = m.groups, m.in_channels, m.out_channels
    depthwise = g > 1 and g == cin
    if depthwise:
        keep_out = roles.get("out")
        if keep_out is None:
            return
        _check(keep_out, cout, where)
        mult = cout // cin
        keep_in = sorted({k // mult for k in keep_out})
        if len(keep_in) * mult != len(keep_out):
            raise ValueError(f"{where}: depthwise conv must keep whole channel multipliers")
        if transposed:  # weight [in, mult, k...]
            _take(m, "weight", 0, keep_in)
        else:  # weight [out, 1, k...]
            _take(m, "weight", 0, keep_out)
        _take(m, "bias", 0, keep_out)
        m.in_channels, m.out_channels, m.groups = len(keep_in), len(keep_out), len(keep_in)
        return
    out_axis, in_axis = (1, 0) if transposed else (0, 1)
    if "out" in roles:
        keep = roles["out"]
        _check(keep, cout, where)
        if g > 1:
            per = cout // g
            counts = [sum(1 for k in keep if k // per == gi) for gi in range(g)]
            if len(set(counts)) != 1:
                raise ValueError(f"{where}: grouped conv must keep the same count in every group")
        _take(m, "weight", out_axis, keep)
        _take(m, "bias", 0, keep)
        m.out_channels = len(keep)
    if "in" in roles:
        keep = roles["in"]
        _check(keep, cin, where)
        if g == 1:
            _take(m, "weight", in_axis, keep)
        else:
            per = cin // g
            cols = sorted({k % per for k in keep})
            if sorted(keep) != sorted(gi * per + c for gi in range(g) for c in cols):
                raise ValueError(f"{where}: grouped conv must keep the same in-group channels in every group")
            _take(m, "weight", in_axis, cols)
        m.in_channels = len(keep)


def _mha(m: nn.MultiheadAttention, keep, where: str) -> None:
    E, H = m.embed_dim, m.num_heads
    _check(keep, E, where)
    dh = E // H
    keep = list(keep)
    rows = sorted({k // dh for k in keep})
    cols = sorted({k % dh for k in keep})
    if len(keep) == len(rows) * dh:
        heads, head_dim = len(rows), dh
    elif len(keep) == H * len(cols):
        heads, head_dim = H, len(cols)
    else:
        raise ValueError(f"{where}: kept embedding channels are neither whole heads nor equal head dims")
    k = _idx(keep)
    qkv = torch.cat([k, k + E, k + 2 * E])
    m.in_proj_weight = nn.Parameter(m.in_proj_weight.detach()[qkv][:, k].clone())
    if m.in_proj_bias is not None:
        m.in_proj_bias = nn.Parameter(m.in_proj_bias.detach()[qkv].clone())
    prune_module(m.out_proj, {"out": keep, "in": keep}, where + ".out_proj")
    m.embed_dim = m.kdim = m.vdim = len(keep)
    m.num_heads, m.head_dim = heads, head_dim


def slice_param(model: nn.Module, name: str, axis: int, keep) -> None:
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    t = getattr(owner, attr)
    _check(keep, t.shape[axis], name)
    _take(owner, attr, axis, keep)


# ---------------------------------------------------------------------------------------------
# per-position weight views for importance scoring


def picked(p, pick):
    """``pick(p)`` as float, or None when the parameter (or what pick takes from it) is absent."""
    if p is None:
        return None
    t = pick(p)
    return None if t is None else t.float()


def position_matrix(module: nn.Module, role: str, pick=lambda p: p.detach()):
    """Rows = positions of ``role``; columns = every weight of ``module`` touching that position.

    ``pick`` maps a parameter to the tensor to view (the weights, or their gradients). Returns
    None when the role has no weights (e.g. a LayerNorm without affine parameters)."""
    from .rules import rule_for

    rule = rule_for(module)
    if rule is not None and rule.positions is not None:
        return rule.positions(module, role, pick)
    w = getattr(module, "weight", None)
    w = picked(w, pick) if isinstance(w, torch.Tensor) else None
    return None if w is None else w.reshape(w.shape[0], -1)


def _conv_positions(module: nn.modules.conv._ConvNd, role: str, pick):
    w = picked(module.weight, pick)
    if w is None:
        return None
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    g, cin, cout = module.groups, module.in_channels, module.out_channels
    if g > 1 and g == cin:  # depthwise: rows are out channels
        return w.reshape(cout, -1)
    if role == "out":
        return w.reshape(cout, -1) if not transposed else w.transpose(0, 1).reshape(cout, -1)
    if transposed:
        return w.reshape(cin, -1)
    if g == 1:
        return w.transpose(0, 1).reshape(cin, -1)
    per_in, per_out = cin // g, cout // g
    v = w.reshape(g, per_out, per_in, -1).permute(0, 2, 1, 3)
    return v.reshape(cin, -1)


def _mha_positions(module: nn.MultiheadAttention, role: str, pick):
    wi, wo = picked(module.in_proj_weight, pick), picked(module.out_proj.weight, pick)
    if wi is None or wo is None:
        return None
    E = module.embed_dim
    rows = wi.reshape(3, E, E).permute(1, 0, 2).reshape(E, 3 * E)
    return torch.cat([wi.t(), rows, wo, wo.t()], dim=1)


# ---------------------------------------------------------------------------------------------
# recurrent layers: every layer and direction keeps the same hidden units (nn.RNNBase has one
# hidden_size), and the gate blocks of a unit (i, f, g, o / r, z, n) go together


def rnn_gates(m: nn.modules.rnn.RNNBase) -> int:
    return {"LSTM": 4, "GRU": 3}.get(m.mode, 1)


def _rnn_weights(m: nn.modules.rnn.RNNBase):
    sfx = ["", "_reverse"][: 2 if m.bidirectional else 1]
    for layer in range(m.num_layers):
        for s in sfx:
            yield layer, s


def _rnn(m: nn.modules.rnn.RNNBase, roles: dict, where: str) -> None:
    H, G, dirs = m.hidden_size, rnn_gates(m), 2 if m.bidirectional else 1
    keep_h, keep_in = roles.get("hidden"), roles.get("in")
    if keep_h is not None:
        _check(keep_h, H, where)
    if keep_in is not None:
        _check(keep_in, m.input_size, where)
    rows = [g * H + k for g in range(G) for k in keep_h] if keep_h is not None else None
    cols = [d * H + k for d in range(dirs) for k in keep_h] if keep_h is not None else None
    for layer, s in _rnn_weights(m):
        if rows is not None:
            for name in (
                f"weight_ih_l{layer}{s}",
                f"weight_hh_l{layer}{s}",
                f"bias_ih_l{layer}{s}",
                f"bias_hh_l{layer}{s}",
            ):
                _take(m, name, 0, rows)
            _take(m, f"weight_hh_l{layer}{s}", 1, keep_h)
            if layer > 0:
                _take(m, f"weight_ih_l{layer}{s}", 1, cols)
        if layer == 0 and keep_in is not None:
            _take(m, f"weight_ih_l{layer}{s}", 1, keep_in)
    if keep_h is not None:
        m.hidden_size = len(keep_h)
    if keep_in is not None:
        m.input_size = len(keep_in)
    m._init_flat_weights()  # the cached list still points at the old parameters


def _rnn_positions(m: nn.modules.rnn.RNNBase, role: str, pick):
    H, G = m.hidden_size, rnn_gates(m)
    parts = []
    for layer, s in _rnn_weights(m):
        if role == "in":
            if layer == 0:
                w = picked(getattr(m, f"weight_ih_l0{s}"), pick)
                parts.append(None if w is None else w.t())
            continue
        for name in (f"weight_ih_l{layer}{s}", f"weight_hh_l{layer}{s}"):
            w = picked(getattr(m, name), pick)
            parts.append(None if w is None else w.reshape(G, H, -1).permute(1, 0, 2).reshape(H, -1))
        w = picked(getattr(m, f"weight_hh_l{layer}{s}"), pick)
        parts.append(None if w is None else w.t())
    parts = [p for p in parts if p is not None]
    return torch.cat(parts, dim=1) if parts else None


def param_matrix(t: torch.Tensor, axis: int) -> torch.Tensor:
    return t.float().movedim(axis, 0).reshape(t.shape[axis], -1)
