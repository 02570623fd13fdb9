"""Export capture: ``torch.export`` (non-strict) turned into the graph the channel analysis reads.

Consumes: an ``nn.Module`` and example inputs as positional args and keyword args. Produces: a
``Recording`` (see ``record.py``): an ``fx.Graph`` of ``call_module`` nodes for every layer with a
layer rule and torch-level calls for the rest, the constants it reads, and the flat input tensors.

Why: non-strict export runs the forward in Python with fake tensors and records ATen calls, so it
follows code symbolic fx cannot (mask code, ``**kwargs`` forwards, ``ModelOutput`` outputs), and
unlike the eager recording it sees every op, including those behind ``Tensor.__setitem__``.

How: every layer with a rule has its call signature preserved by the export; the ATen nodes run
under that call (found through their ``nn_module_stack`` metadata) collapse into one
``call_module`` node fed by the call's recorded inputs, and each recorded output becomes a
``getitem`` path into the module's real result. Lifted parameters and buffers become ``get_attr``
of their qualified names. ``aten.slice``/``select``/``index`` become ``getitem`` with the same
index, so the analysis reads them like Python indexing; other ATen ops keep their overload (they
run exactly as exported) and are read by their op name. Every node keeps its ``nn_module_stack``,
so plans and warnings name modules.
"""

from __future__ import annotations

import contextlib
import io
import logging
import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.utils._pytree as pytree

from .record import Recording
from .rules import rule_for

_DROP = {"_assert_tensor_metadata", "_assert_async", "_assert_scalar", "sym_constrain_range_for_size"}


def _leaf_modules(model: nn.Module) -> list:
    """Qualified names of the outermost modules with a layer rule (their insides are one op)."""
    out: list = []
    for name, m in model.named_modules():
        if name and rule_for(m) is not None and not any(name.startswith(p + ".") for p in out):
            out.append(name)
    return out


def _leaf_key(node: fx.Node, leaves: set):
    """The ``nn_module_stack`` key of the outermost leaf call this node runs under, or None."""
    for key, val in (node.meta.get("nn_module_stack") or {}).items():
        if (val[0] if isinstance(val, tuple) else key) in leaves:
            return key
    return None


def _paths(spec) -> list:
    """Index path (tuple of keys) of every leaf of a pytree spec, in flat order."""
    tree = pytree.tree_unflatten(list(range(spec.num_leaves)), spec)
    found: dict = {}

    def walk(v, path):
        if isinstance(v, int) and not isinstance(v, bool):
            found[v] = path
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, path + (k,))
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(x, path + (i,))

    walk(tree, ())
    return [found[i] for i in range(spec.num_leaves)]


def _tensor_names(args) -> list:
    return [a.name for a in args if isinstance(getattr(a, "name", None), str) and a.name]


def _arg_value(arg, env: dict, by_name: dict):
    name = getattr(arg, "name", None)
    if name is not None and name in by_name:
        return env[by_name[name]]
    if hasattr(arg, "value"):  # a constant argument of the call (None, an int, a flag)
        return arg.value
    raise ValueError(f"module call input {arg} is not a graph value")


class _Builder:
    def __init__(self, ep, leaves: list):
        self.ep = ep
        self.leaves = set(leaves)
        self.graph = fx.Graph()
        self.env: dict = {}
        self.consts: dict = {}
        self.by_name = {n.name: n for n in ep.graph.nodes}
        sig = ep.graph_signature
        self.params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        self.lifted = dict(sig.inputs_to_lifted_tensor_constants)
        self.calls = [e for e in ep.module_call_graph if e.fqn and e.signature is not None]
        self.done: set = set()

    def copy_meta(self, new: fx.Node, old: fx.Node) -> fx.Node:
        stack = old.meta.get("nn_module_stack") or {}
        new.meta["nn_module_stack"] = {k: v for k, v in stack.items()}
        return new

    def placeholder(self, n: fx.Node) -> None:
        if n.name in self.params:
            self.env[n] = self.graph.get_attr(self.params[n.name])
        elif n.name in self.lifted:
            target = f"_edgeprune_const_{len(self.consts)}"
            self.consts[target] = self.ep.constants[self.lifted[n.name]]
            self.env[n] = self.graph.get_attr(target)
        else:
            self.env[n] = self.graph.placeholder(n.name)

    def _entry(self, key: str, region: list):
        """The recorded call signature whose outputs lie in ``region``: the region's own module's
        first, since an identity module called on that output (SegFormer's ``drop_path``) records
        the same output name."""
        names = {n.name for n in region}
        path = region[0].meta["nn_module_stack"][key][0]
        found = [
            e
            for e in self.calls
            if id(e) not in self.done
            and _tensor_names(e.signature.outputs)
            and all(o in names for o in _tensor_names(e.signature.outputs))
        ]
        entry = next((e for e in found if e.fqn == path), found[0] if found else None)
        if entry is None:
            raise ValueError(f"no recorded call signature for module {key} ({region[0].format_node()})")
        return entry

    def ready(self, key: str, region: list) -> bool:
        """Whether every graph value the call reads is built: a region's first ATen node may come
        before an input of the call (a parameter read first, then the dropout whose output it takes)."""
        entry = self._entry(key, region)
        return all(self.by_name[n] in self.env for n in _tensor_names(entry.signature.inputs) if n in self.by_name)

    def module_call(self, key: str, region: list) -> None:
        """One ``call_module`` for the leaf call whose recorded outputs lie in ``region``."""
        entry = self._entry(key, region)
        self.done.add(id(entry))
        sig = entry.signature
        flat = [_arg_value(a, self.env, self.by_name) for a in sig.inputs]
        args, kwargs = pytree.tree_unflatten(flat, sig.in_spec)
        path = region[0].meta["nn_module_stack"][key][0]
        call = self.copy_meta(self.graph.call_module(path, tuple(args), dict(kwargs)), region[0])
        for out, steps in zip(sig.outputs, _paths(sig.out_spec)):
            if getattr(out, "name", None) not in self.by_name:
                continue  # a constant output (None weights of an attention call)
            node = call
            for s in steps:
                node = self.copy_meta(self.graph.call_function(operator.getitem, (node, s)), region[0])
            self.env[self.by_name[out.name]] = node

    def function(self, n: fx.Node) -> None:
        args, kwargs = fx.node.map_arg((n.args, n.kwargs), lambda x: self.env[x])
        target = n.target
        if isinstance(target, torch._ops.OpOverload):
            name = target._opname
            if name in _DROP or (not n.users and name.startswith("_assert")):
                return
            index = _as_index(name, args, kwargs, n)
            if index is not None:
                target, args, kwargs = operator.getitem, (args[0], index), {}
        self.env[n] = self.copy_meta(self.graph.call_function(target, tuple(args), dict(kwargs)), n)

    def build(self) -> fx.Graph:
        nodes = list(self.ep.graph.nodes)
        keys = {n: _leaf_key(n, self.leaves) for n in nodes if n.op == "call_function"}
        regions: dict = {}
        for n in nodes:
            if keys.get(n) is not None:
                regions.setdefault(keys[n], []).append(n)
        emitted: set = set()
        for n in nodes:
            if n.op == "placeholder":
                self.placeholder(n)
            elif n.op == "output":
                outs = fx.node.map_arg(n.args[0], lambda x: self.env[x])
                self.graph.output(tuple(outs) if isinstance(outs, (list, tuple)) else (outs,))
            elif keys.get(n) is not None:
                key = keys[n]
                if key not in emitted and (n is regions[key][-1] or self.ready(key, regions[key])):
                    emitted.add(key)
                    self.module_call(key, regions[key])
            elif n.op == "call_function":
                self.function(n)
            else:
                raise ValueError(f"unexpected exported node {n.format_node()}")
        return self.graph


def _as_index(name: str, args, kwargs, n: fx.Node):
    """The Python index an ATen slice/select/index call stands for, or None."""
    val = n.args[0].meta.get("val") if isinstance(n.args[0], fx.Node) else None
    rank = val.dim() if isinstance(val, torch.Tensor) else None
    if name in ("slice", "select") and rank is not None:
        full = {"slice": ("dim", "start", "end", "step"), "select": ("dim", "index")}[name]
        vals = dict(zip(full, args[1:]))
        vals.update(kwargs)
        dim = vals.get("dim", 0)
        dim = dim + rank if dim < 0 else dim
        if name == "slice":
            step = vals.get("step", 1)
            item = slice(vals.get("start"), vals.get("end"), None if step == 1 else step)
        else:
            item = vals["index"]
        return (slice(None),) * dim + (item,)
    if name == "index" and len(args) > 1 and not kwargs:
        return tuple(slice(None) if i is None else i for i in args[1])
    return None


# torch's loggers that print while a capture path tries a model: a data-dependent guard (Swin's
# window-size check) logs a warning followed by the whole graph, hundreds of lines, on the way to
# an error we handle or a capture that succeeds
_CHATTY_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch._dynamo", "torch._export", "torch.export")


@contextlib.contextmanager
def quiet_torch_logs():
    """torch's capture loggers at ERROR for the block, and its direct prints to stderr dropped
    (torch.export prints a failed export's partial graph there before raising); our one-line
    messages say what failed."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_graph(model: nn.Module, args: tuple, kwargs: dict) -> Recording:
    """Export ``model(*args, **kwargs)`` (non-strict; the caller sets eval mode and no grad)."""
    leaves = _leaf_modules(model)
    with quiet_torch_logs():
        ep = torch.export.export(
            model, tuple(args), dict(kwargs), strict=False, preserve_module_call_signature=tuple(leaves)
        )
    flat = pytree.tree_leaves((tuple(args), dict(kwargs)))
    users = [s for s in ep.graph_signature.input_specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    if len(users) != len(flat):
        flat = [v for v in flat if isinstance(v, torch.Tensor)]
    builder = _Builder(ep, leaves)
    return Recording(builder.build(), builder.consts, flat, ep.call_spec.out_spec)
