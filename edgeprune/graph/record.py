"""Eager capture: run the model once on its example inputs and record the torch calls as a graph.

Consumes: an ``nn.Module`` and example inputs as positional args and keyword args (tensors, or
containers of tensors, mixed with plain Python values). Produces: a ``Recording``: an ``fx.Graph``
of torch-level calls (``call_function`` for every torch function and tensor method the forward made
at the top level, ``call_module`` for every layer that has a layer rule), the constants it reads,
and the flat list of input tensors its placeholders stand for.

Why: symbolic tracing (``torch.fx``) cannot follow Python that looks at values (mask code, ``if
x.any()``, in-place index assignment into tensors, ``**kwargs`` forwards, dataclass outputs). Running
the forward for real follows every path the example inputs take; the graph holds the ops of that
run, which is all the channel analysis needs. Every node carries ``nn_module_stack`` metadata built
from the modules entered on the way, so plans and warnings still name modules.

How: a ``TorchFunctionMode`` sees every torch call; layers with a rule get their ``forward``
wrapped for the run, so their own ops stay inside one ``call_module`` node. A tensor the graph has
not seen is a parameter or buffer (``get_attr`` by name) or a constant. Calls that return no tensor
and only read metadata (shape, dtype, device) are left out; any other call on a recorded tensor is
kept, so an op we do not model pins its channels instead of silently disconnecting them.

Also the names exported files give a model's outputs (``flat_output_names``, ``spec_output_names``:
a ``ModelOutput``'s fields), shared by the quantizer's capture and the exporters.
"""

from __future__ import annotations

import builtins
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from .rules import rule_for

# calls that only read metadata: recording them would make the analysis see an unknown op
_META = {
    "dim",
    "ndimension",
    "numel",
    "stride",
    "is_contiguous",
    "is_floating_point",
    "is_complex",
    "element_size",
    "get_device",
    "data_ptr",
    "__len__",
    "__bool__",
    "__format__",
    "__repr__",
    "__hash__",
    "item",
    "tolist",
    "__index__",
    "__int__",
    "__float__",
}
_META_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout", "is_sparse", "is_quantized"}


class _SizeInt(int):
    """A size read from a recorded tensor's shape; it remembers the node it came from, so a
    ``view(B, N, C)`` built from it is recorded with the read, not with a bare number (the
    analysis ties such a view to the channels it was read from). Integer arithmetic on it is
    recorded too (``C // groups`` in a channel shuffle stays a computed size, not a literal)."""

    node: fx.Node


def _size_int(v: int, node: fx.Node) -> _SizeInt:
    i = _SizeInt(v)
    i.node = node
    return i


def _arith(op, swap: bool = False):
    def f(self, other):
        if type(other) is not int and not isinstance(other, _SizeInt):
            return NotImplemented
        a, b = (other, self) if swap else (self, other)
        value = op(int(a), int(b))
        args = tuple(x.node if isinstance(x, _SizeInt) else x for x in (a, b))
        node = self.node.graph.call_function(op, args)
        node.meta["nn_module_stack"] = dict(self.node.meta.get("nn_module_stack", {}))
        return _size_int(value, node)

    return f


for _name, _op in (
    ("add", operator.add),
    ("sub", operator.sub),
    ("mul", operator.mul),
    ("floordiv", operator.floordiv),
):
    setattr(_SizeInt, f"__{_name}__", _arith(_op))
    setattr(_SizeInt, f"__r{_name}__", _arith(_op, swap=True))


@dataclass
class Recording:
    graph: fx.Graph
    consts: dict = field(default_factory=dict)  # get_attr target -> tensor for non-parameters
    inputs: list = field(default_factory=list)  # flat input tensors, in placeholder order
    out_spec: object = None  # the pytree spec of the model's output (torch.export's), when known


class _Mode(TorchFunctionMode):
    def __init__(self, rec: _Recorder):
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.rec.depth == 0:
            return self.rec.on_call(func, args, kwargs, out)
        return out


class _Recorder:
    def __init__(self, model: nn.Module):
        self.model = model
        self.graph = fx.Graph()
        self.depth = 0
        self.stack: list = []  # (qualified name, class) of the modules being run
        self.nodes: dict = {}  # id(tensor) -> node
        self.alive: list = []  # keeps recorded tensors alive so their ids stay unique
        self.consts: dict = {}
        self.params = {}
        for name, t in list(model.named_parameters(remove_duplicate=False)) + list(
            model.named_buffers(remove_duplicate=False)
        ):
            self.params.setdefault(id(t), name)

    # -- tensors <-> nodes ----------------------------------------------------------------------
    def bind(self, t: torch.Tensor, node: fx.Node) -> None:
        self.nodes[id(t)] = node
        self.alive.append(t)

    def node_of(self, t: torch.Tensor) -> fx.Node:
        n = self.nodes.get(id(t))
        if n is not None:
            return n
        name = self.params.get(id(t))
        if name is None:
            name = f"_edgeprune_const_{len(self.consts)}"
            self.consts[name] = t
        n = self.graph.get_attr(name)
        self.bind(t, n)
        return n

    def to_arg(self, v):
        if isinstance(v, _SizeInt):
            return v.node
        if isinstance(v, torch.Tensor):
            return self.node_of(v)
        if isinstance(v, (list, tuple)) and not isinstance(v, torch.Size):
            mapped = [self.to_arg(x) for x in v]
            return type(v)(mapped) if type(v) in (list, tuple) else tuple(mapped)
        if isinstance(v, dict):
            return {k: self.to_arg(x) for k, x in v.items()}
        if isinstance(v, slice):
            return slice(self.to_arg(v.start), self.to_arg(v.stop), self.to_arg(v.step))
        if isinstance(v, torch.Size):
            return tuple(v)
        return v

    def _has_tensor(self, v) -> bool:
        if isinstance(v, torch.Tensor):
            return True
        if isinstance(v, (list, tuple)):
            return any(self._has_tensor(x) for x in v)
        return False

    def emit(self, op: str, target, args, kwargs, out) -> fx.Node:
        node = self.graph.create_node(op, target, self.to_arg(tuple(args)), self.to_arg(dict(kwargs)))
        node.meta["nn_module_stack"] = {p: (p, c) for p, c in self.stack}
        self.bind_out(node, out)
        return node

    def bind_out(self, node: fx.Node, out) -> None:
        if isinstance(out, torch.Tensor):
            self.bind(out, node)
        elif isinstance(out, (list, tuple)):
            for i, v in enumerate(out):
                if self._has_tensor(v):
                    item = self.graph.call_function(operator.getitem, (node, i))
                    item.meta["nn_module_stack"] = dict(node.meta["nn_module_stack"])
                    self.bind_out(item, v)

    def shape_read(self, node: fx.Node, out):
        """Sizes that remember their read: a torch.Size keeps int subclasses as they are."""
        if isinstance(out, int):
            return _size_int(out, node)
        items = []
        for i, v in enumerate(out):
            item = self.graph.call_function(operator.getitem, (node, i))
            item.meta["nn_module_stack"] = dict(node.meta["nn_module_stack"])
            items.append(_size_int(v, item))
        return torch.Size(items)

    # -- hooks --------------------------------------------------------------------------------
    def on_call(self, func, args, kwargs, out):
        """Record one top-level torch call; returns what the forward gets back (``out``, or
        sizes that remember their read)."""
        name = getattr(func, "__name__", "")
        recorded = bool(args) and isinstance(args[0], torch.Tensor) and id(args[0]) in self.nodes
        if name == "__get__":  # a tensor property such as x.shape or x.T
            attr = getattr(getattr(func, "__self__", None), "__name__", "")
            if attr == "shape" and recorded:
                return self.shape_read(self.emit("call_function", builtins.getattr, (args[0], attr), {}, out), out)
            if attr not in _META_ATTRS:
                self.emit("call_function", builtins.getattr, (args[0], attr), {}, out)
            return out
        if name == "size" and recorded and isinstance(out, (int, torch.Size)):
            return self.shape_read(self.emit("call_function", func, args, kwargs, out), out)
        if name in _META and not self._has_tensor(out):
            return out
        if not self._has_tensor(out) and not any(id(a) in self.nodes for a in args if isinstance(a, torch.Tensor)):
            return out
        self.emit("call_function", func, args, kwargs, out)
        return out

    def wrap(self, name: str, m: nn.Module, leaf: bool):
        orig = m.forward

        def forward(*args, **kwargs):
            if self.depth:
                return orig(*args, **kwargs)
            if not leaf:
                self.stack.append((name, type(m)))
                try:
                    return orig(*args, **kwargs)
                finally:
                    self.stack.pop()
            self.depth += 1
            try:
                out = orig(*args, **kwargs)
            finally:
                self.depth -= 1
            self.emit("call_module", name, args, kwargs, out)
            return out

        return forward


def _flatten(v, out: list) -> None:
    """Tensors of a (nested) value in order: tuples, lists, dicts, dataclasses such as ModelOutput."""
    if isinstance(v, torch.Tensor):
        out.append(v)
    elif isinstance(v, dict):
        for x in v.values():
            _flatten(x, out)
    elif isinstance(v, (list, tuple)):
        for x in v:
            _flatten(x, out)
    elif hasattr(v, "__dataclass_fields__"):
        for k in v.__dataclass_fields__:
            _flatten(getattr(v, k, None), out)


def record(model: nn.Module, args: tuple, kwargs: dict) -> Recording:
    """Run ``model(*args, **kwargs)`` once (no grad; the caller sets the mode) and record it."""
    rec = _Recorder(model)
    flat: list = []
    _flatten((args, kwargs), flat)
    for i, t in enumerate(flat):
        rec.bind(t, rec.graph.placeholder(f"input_{i}"))
    patched = []
    for name, m in model.named_modules():
        if name and not isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            patched.append((m, m.__dict__.get("forward")))
            m.forward = rec.wrap(name, m, rule_for(m) is not None)
    try:
        with _Mode(rec):
            out = model(*args, **kwargs)
    finally:
        for m, own in patched:
            del m.forward  # the wrapper is an instance attribute: the class method shows again
            if own is not None:
                m.forward = own
    results: list = []
    _flatten(out, results)
    rec.graph.output(tuple(rec.node_of(t) for t in results))
    return Recording(rec.graph, rec.consts, flat)


def flat_output_names(out, prefix: str = "") -> list:
    """Names for the tensors of one model output, in the order exporters flatten them: the fields
    of a ``ModelOutput`` or dict (``last_hidden_state``, ``pooler_output``; a tuple field as
    ``name_0``, ``name_1``, ...), else 'output', 'output_1', ... (the names files give them)."""
    if isinstance(out, torch.Tensor):
        return [prefix or "output"]
    if hasattr(out, "items"):
        names = []
        for k, v in out.items():
            if v is not None:
                names += flat_output_names(v, f"{prefix}_{k}" if prefix else str(k))
        return names
    if isinstance(out, (tuple, list)):
        names = []
        for i, v in enumerate(out):
            base = f"{prefix}_{i}" if prefix else ("output" if i == 0 else f"output_{i}")
            names += flat_output_names(v, base)
        return names
    return []


def spec_output_names(out_spec) -> list:
    """``flat_output_names`` of the output a pytree spec describes (torch.export's ``out_spec``),
    or [] when torch cannot rebuild the container or the names do not cover its leaves."""
    if out_spec is None:
        return []
    from torch.utils import _pytree as pytree

    try:
        dummy = pytree.tree_unflatten([torch.empty(0)] * out_spec.num_leaves, out_spec)
    except Exception:  # a container torch cannot rebuild: the file keeps generic names
        return []
    names = flat_output_names(dummy)
    return names if len(names) == out_spec.num_leaves else []
