"""Graph capture and channel-dependency analysis.

Consumes: an ``nn.Module`` and example inputs. Produces: a ``Graph`` (see ``groups.py``) whose
channel groups say which channels of which layers must be removed together.

How: the model is captured with ``torch.fx`` (a real graph, not names of autograd nodes) and run
once node by node on the example inputs, so every op sees concrete shapes and arguments. Every
output channel of a producing layer (Conv, Linear, Embedding, ConvTranspose) is a fresh *atom*.
Each tensor carries an annotation: which of its dims hold channels and, per position, which atom
lives there. Ops move annotations (concat concatenates them, split slices them, view/permute
reshape them, flatten repeats them) and couple them (add/mul unify positions, attention matmuls
unify query/key head dims). Layers record *slices*: "positions of axis X of module M hold these
atoms". A union-find over atoms gives the classes; a class removed means every position holding
one of its atoms is cut from every slice. An op we do not understand pins its channels (atom
FIXED) with a warning naming the op, so the result is never a broken model.
"""

from __future__ import annotations

import difflib
import math
import operator
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import UserError
from .atoms import FIXED, Atoms
from .export import export_graph
from .record import record
from .rules import cuts_own_params, rule_for

# ---------------------------------------------------------------------------------------------
# annotations


@dataclass
class Ann:
    """Channel annotation of a tensor: ``ids`` has one axis per entry of ``dims`` (sorted)."""

    dims: tuple
    ids: np.ndarray
    split: int | None = None  # index into Analysis.splits when the channels were split in two dims


@dataclass
class ParamTag:
    """A value that is (a broadcast view of) a parameter/buffer: tensor dim -> parameter axis."""

    name: str
    axes: tuple


@dataclass
class SizeOf:
    """An int read from a tensor's shape along a channel dim (``C`` in ``B, N, C = x.shape``)."""

    ids: np.ndarray


@dataclass
class ShapeList:
    """A shape tuple (``x.shape``, ``x.size()[:-1] + (h, d)``): per entry a SizeOf or None."""

    entries: list


@dataclass
class Slice:
    kind: str  # "module" or "param"
    target: str  # module qualified name or parameter qualified name
    role: str  # module: out / in / channels / dim / embed; param: "axis<k>"
    ids: np.ndarray  # 1-D: atom per position along that axis
    op: str  # class name of the module, or "Parameter"


@dataclass
class Split:
    owner: str
    ids: np.ndarray  # 2-D, rows = outer dim (3-D for a fused q/k/v container)
    node: str
    attention: bool = False
    container: bool = False  # (parts, heads, head dim): resolved when the parts are taken apart
    taken: bool = False


@dataclass
class SizeReq:
    """A literal size in a view/split that changes when channels are removed."""

    owner: str
    size: int
    ids: np.ndarray  # 2-D
    axis: int
    role: str  # rows / cols / flat
    node: str


@dataclass
class AttrFix:
    module: str
    attr: str
    ids: np.ndarray  # 2-D; new value = number of indices along `axis` with a kept atom
    axis: int


@dataclass
class Analysis:
    atoms: Atoms = field(default_factory=Atoms)
    slices: dict = field(default_factory=dict)  # (kind, target, role) -> Slice
    sources: list = field(default_factory=list)  # (name, op, ids) in trace order
    splits: list = field(default_factory=list)
    reqs: list = field(default_factory=list)
    attr_fixes: list = field(default_factory=list)
    param_sizes: list = field(default_factory=list)  # (param, axis, ids, node): view of a param sized by ids
    fixed: list = field(default_factory=list)  # (ids, reason)
    inexact: list = field(default_factory=list)  # (ids, reason)
    wholes: list = field(default_factory=list)  # (ids, axis, reason): no class may cut along axis
    warnings: list = field(default_factory=list)
    conv_grouped: list = field(default_factory=list)  # ids split in conv groups by a grouped conv


_UNARY = {
    "relu",
    "relu6",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "leaky_relu",
    "elu",
    "selu",
    "celu",
    "softplus",
    "mish",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "feature_alpha_dropout",
    "contiguous",
    "clone",
    "float",
    "half",
    "double",
    "to",
    "type",
    "type_as",
    "abs",
    "neg",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "erf",
    "clamp",
    "clamp_min",
    "clamp_max",
    "clip",
    "detach",
    "sign",
    "reciprocal",
    "square",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "interpolate",
    "upsample",
    "cpu",
    "requires_grad",
    "logsigmoid",
    "softsign",
    "tanhshrink",
    "threshold",
    "stochastic_depth",
    "pad",
    "identity",
    "sin",
    "cos",
}
_BINARY = {
    "add",
    "sub",
    "mul",
    "truediv",
    "div",
    "floordiv",
    "true_divide",
    "multiply",
    "subtract",
    "maximum",
    "minimum",
    "pow",
    "rsub",
    "where",
    "lerp",
    "iadd",
    "isub",
    "imul",
    "itruediv",
    "addcmul",
    "addcdiv",
}
_RESHAPE = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_PERMUTE = {"permute", "transpose", "swapaxes", "swapdims", "t", "movedim"}
_EXPAND = {"expand", "expand_as", "broadcast_to", "repeat"}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod", "nansum"}
_SOFTMAX = {"softmax", "log_softmax"}
_INERT = {"getattr", "size", "dim", "numel", "_assert", "len", "ndimension", "is_contiguous", "eq", "ne", "int"}

_ROW_NAMES = ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads", "nheads", "groups", "num_groups")
_COL_NAMES = ("head_dim", "head_size", "attention_head_size", "d_head", "dim_head", "d_k", "head_dims")
_FLAT_NAMES = ("all_head_size", "inner_dim", "inner_size", "proj_dim", "hidden_dim", "embed_dim", "hidden_size", "dim")
_NAME_HINTS = ("head", "dim", "size", "channel", "group", "hidden", "embed", "inner", "feature", "width")


_UNKNOWN = object()  # a shape entry whose length is not known any more


def _op_name(node: fx.Node) -> str:
    t = node.target
    if isinstance(t, torch._ops.OpOverload):  # an exported ATen op: aten.add.Tensor reads as "add"
        t = t._opname
    name = t if isinstance(t, str) else getattr(t, "__name__", str(t))
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
    if name.endswith("_") and not name.startswith("_"):
        name = name[:-1]  # in-place variants behave like the out-of-place op here
    return {
        "iadd": "add",
        "isub": "sub",
        "imul": "mul",
        "itruediv": "truediv",
        "radd": "add",
        "rmul": "mul",
        "rtruediv": "truediv",
        "concat": "cat",
        "concatenate": "cat",
        "multiply": "mul",
        "subtract": "sub",
        "true_divide": "truediv",
        "div": "truediv",
        "swapaxes": "transpose",
        "swapdims": "transpose",
        "matmul": "matmul",
        "bmm": "matmul",
    }.get(name, name)


class _Tracer(fx.Tracer):
    # Every module type with a layer rule is a leaf: the rule models it as one op.
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return rule_for(m) is not None or super().is_leaf_module(m, qualname)


def capture(model: nn.Module) -> fx.GraphModule:
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:  # torch.fx cannot follow data-dependent Python control flow
        raise ValueError(
            f"cannot capture {type(model).__name__} with torch.fx ({type(e).__name__}: {e}); "
            "make the forward free of data-dependent branches or mark the submodule as a leaf"
        ) from e
    return fx.GraphModule(tracer.root, graph)


def _norm_dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def _orient(ann: Ann, first: int) -> np.ndarray:
    """2-D ids with the axis of tensor dim ``first`` in front."""
    k = ann.dims.index(first)
    return np.moveaxis(ann.ids, k, 0)


class CaptureError(UserError):
    """Neither symbolic fx nor the eager recording could capture the model."""


class IgnoreError(UserError):
    """An ``ignore=`` entry names nothing in the model."""


class Analyzer(fx.Interpreter):
    """Runs a captured graph node by node on the example inputs and annotates every value.

    ``root`` holds the modules and attributes the graph's nodes name (a GraphModule, or the model
    itself for an eager recording, whose extra constants come in ``consts``)."""

    def __init__(self, root: nn.Module, model: nn.Module, attention: str = "heads", graph=None, consts=None):
        super().__init__(root, graph=graph)
        self.consts = dict(consts or {})
        if attention not in ("heads", "head_dims"):
            raise ValueError(f"attention={attention!r}: use 'heads' or 'head_dims'")
        self.attention = attention
        self.an = Analysis()
        self.ann: dict = {}
        # the original model's modules: fx containers drop plain attributes such as num_heads
        self.mods = dict(model.named_modules())

    def fetch_attr(self, target: str):
        if target in self.consts:
            return self.consts[target]
        return super().fetch_attr(target)

    # -- bookkeeping --------------------------------------------------------------------------
    def warn(self, msg: str) -> None:
        if msg not in self.an.warnings:
            self.an.warnings.append(msg)

    def fix(self, ids, reason: str) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size:
            self.an.atoms.fix(ids)
            self.an.fixed.append((ids.copy(), reason))

    def fix_ann(self, a, reason: str) -> None:
        if isinstance(a, Ann):
            self.fix(a.ids, reason)
        elif isinstance(a, (list, tuple)):
            for x in a:
                self.fix_ann(x, reason)

    def whole_along(self, ids, axis: int, reason: str) -> None:
        """Positions along ``axis`` of ``ids`` may only go all together (checked in ``finish``,
        when the classes are known: attention heads removed whole satisfy it)."""
        self.an.wholes.append((np.array(ids), axis, reason))

    def inexact(self, ids, reason: str) -> None:
        self.an.inexact.append((np.asarray(ids, dtype=np.int64).ravel().copy(), reason))

    def record(self, kind: str, target: str, role: str, ids: np.ndarray, op: str) -> np.ndarray:
        """Register a slice; a module called twice shares weights, so its positions are unified."""
        key = (kind, target, role)
        ids = np.asarray(ids, dtype=np.int64).ravel()
        old = self.an.slices.get(key)
        if old is None:
            self.an.slices[key] = Slice(kind, target, role, ids.copy(), op)
            return ids
        if old.ids.shape != ids.shape:
            self.fix(old.ids, f"{target} used with different channel counts")
            self.fix(ids, f"{target} used with different channel counts")
        else:
            self.an.atoms.union(old.ids, ids)
        return old.ids

    def new_source(self, target: str, n: int, op: str, role: str = "out") -> np.ndarray:
        key = ("module", target, role)
        if key in self.an.slices:  # shared module: same weights, same output channels
            return self.an.slices[key].ids
        ids = self.an.atoms.new(n)
        self.an.slices[key] = Slice("module", target, role, ids.copy(), op)
        self.an.sources.append((target, op, ids))
        return ids

    def owner(self, node: fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        keys = list(stack.keys())
        if not keys:
            return ""
        last = keys[-1]
        val = stack[last]
        path = val[0] if isinstance(val, tuple) else last
        return path if path in self.mods else (last if last in self.mods else "")

    # -- interpreter hook ---------------------------------------------------------------------
    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        try:
            self.ann[n] = self.annotate(n, result)
        except Exception as e:  # an op we mis-model must not break the analysis: pin and go on
            self.warn(f"{n.format_node()}: analysis failed ({type(e).__name__}: {e}); its channels are kept")
            for a in self._arg_nodes(n):
                self.fix_ann(self.ann.get(a), f"analysis failed at {n.name}")
            self.ann[n] = None
        return result

    def _arg_nodes(self, n: fx.Node):
        out = []
        fx.node.map_arg((n.args, n.kwargs), lambda x: out.append(x) or x)
        return out

    def A(self, x):
        return self.ann.get(x) if isinstance(x, fx.Node) else None

    def V(self, x):
        return self.env[x] if isinstance(x, fx.Node) else x

    def annotate(self, n: fx.Node, result):
        if n.op == "placeholder":
            return None
        if n.op == "get_attr":
            return ParamTag(n.target, tuple(range(result.dim()))) if isinstance(result, torch.Tensor) else None
        if n.op == "output":
            for a in self._arg_nodes(n):
                self.fix_ann(self.ann.get(a), "model output")
            return None
        if n.op == "call_module":
            return self._module(n, self.mods[n.target], result)
        return self._function(n, _op_name(n), result)

    def _unknown(self, n: fx.Node, what: str):
        touched = False
        for a in self._arg_nodes(n):
            ann = self.ann.get(a)
            if isinstance(ann, (Ann, list, tuple)):
                touched = True
                self.fix_ann(ann, f"unsupported op {what}")
        if touched:
            self.warn(f"unsupported op {what} at {n.name}: channels through it are not pruned")
        return None

    # -- modules ------------------------------------------------------------------------------
    def _module(self, n: fx.Node, m: nn.Module, result):
        rule = rule_for(m)
        if rule is None:
            return self._unknown(n, f"{type(m).__name__} ({n.target})")
        return rule.trace(self, n, m, result)

    # -- rule API: what a LayerRule's trace may call ----------------------------------------------
    Ann = Ann

    def arg(self, n: fx.Node, i: int = 0):
        """Annotation of the i-th input of node ``n`` (None: no channels we follow)."""
        return self.A(n.args[i]) if i < len(n.args) else None

    def value(self, n: fx.Node, i: int = 0):
        return self.V(n.args[i]) if i < len(n.args) else None

    def consume(self, n: fx.Node, a, dim: int, role: str) -> bool:
        """Record that axis ``role`` of layer ``n`` holds the channels ``a`` carries on ``dim``.
        Channels anywhere else are pinned; returns whether they were recorded."""
        if isinstance(a, Ann) and a.dims == (dim,):
            self.record("module", n.target, role, a.ids, type(self.mods[n.target]).__name__)
            return True
        self.pin(a, f"{n.target}: channels not on dim {dim}")
        return False

    def produce(self, n: fx.Node, count: int, dim: int, role: str = "out") -> Ann:
        """``count`` fresh output channels of layer ``n`` on ``dim`` (shared if called twice)."""
        return Ann((dim,), self.new_source(n.target, count, type(self.mods[n.target]).__name__, role))

    def pin(self, a, reason: str) -> None:
        self.fix_ann(a, reason)

    def same(self, a, result, what: str):
        return self._same(a, result, what)

    def _conv(self, n, m, a, result):
        name, op = n.target, type(m).__name__
        transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
        g, cin, cout = m.groups, m.in_channels, m.out_channels
        ok = isinstance(a, Ann) and a.dims == (1,)
        if a is not None and not ok:
            self.fix_ann(a, f"{name}: channels not on dim 1")
        if g > 1 and g == cin:  # depthwise (with channel multiplier cout // cin)
            if not ok:
                ids = self.an.atoms.new(cin)
                self.fix(ids, f"{name}: depthwise input of unknown channels")
            else:
                ids = a.ids
            out = np.repeat(ids, cout // cin)
            return Ann((1,), self.record("module", name, "out", out, op))
        if g > 1 and transposed:
            if ok:
                self.fix_ann(a, f"{name}: grouped transposed conv")
            ids = self.new_source(name, cout, op)
            self.fix(ids, f"{name}: grouped transposed conv")
            self.warn(f"grouped ConvTranspose {name} is kept whole")
            return Ann((1,), ids)
        if ok:
            if g > 1:  # same in-group index kept in every group, so groups stay equal
                self.an.atoms.union_cols(a.ids.reshape(g, -1))
                self.an.conv_grouped.append(a.ids)
            self.record("module", name, "in", a.ids, op)
        out = self.new_source(name, cout, op)
        if g > 1:
            self.an.atoms.union_cols(out.reshape(g, -1))
            self.an.conv_grouped.append(out)
        return Ann((1,), out)

    def _mha(self, n, m: nn.MultiheadAttention, result):
        name = n.target
        names = ["query", "key", "value"]
        vals = [n.args[i] if i < len(n.args) else n.kwargs.get(k) for i, k in enumerate(names)]
        anns = [self.A(v) for v in vals]
        rank = self.V(vals[0]).dim()
        good = (
            m._qkv_same_embed_dim
            and all(isinstance(a, Ann) and a.dims == (rank - 1,) for a in anns)
            and getattr(m, "bias_k", None) is None
        )
        if not good:
            for a in anns:
                self.fix_ann(a, f"{name}: MultiheadAttention layout not supported")
            self.warn(f"MultiheadAttention {name}: kept whole (separate q/k/v dims, bias_k, or unknown inputs)")
            out0 = None
        else:
            ids = anns[0].ids
            for a in anns[1:]:
                self.an.atoms.union(ids, a.ids)
            heads = ids.reshape(m.num_heads, -1)
            if self.attention == "heads":
                self.an.atoms.union_rows(heads)
            else:
                self.an.atoms.union_cols(heads)
                self.inexact(ids, f"{name}: head size changes the softmax scale")
            self.record("module", name, "embed", ids, type(m).__name__)
            out0 = Ann((rank - 1,), ids)
        if isinstance(result, tuple):
            return [out0] + [None] * (len(result) - 1)
        return out0

    def _rnn(self, n, m: nn.modules.rnn.RNNBase, result):
        """nn.RNN/GRU/LSTM: one set of hidden units shared by every layer and direction (the
        module has one hidden_size); the output concatenates the directions on the last dim."""
        name, op = n.target, type(m).__name__
        x, h0 = self.arg(n, 0), self.arg(n, 1)
        out, hn = (result[0], result[1]) if isinstance(result, tuple) else (result, None)
        if not isinstance(out, torch.Tensor) or getattr(m, "proj_size", 0) > 0:
            self.fix_ann(x, f"{name}: packed sequence or projection")
            self.warn(f"{op} {name} with a packed sequence or proj_size is kept whole")
            return [None, None]
        self.consume(n, x, self.V(n.args[0]).dim() - 1, "in")
        ids = self.new_source(name, m.hidden_size, op, role="hidden")
        if len(n.args) > 1 or n.kwargs.get("hx") is not None:
            # a caller-built initial state has the old hidden size: the units must stay
            self.fix(ids, f"{name}: initial hidden state passed in")
            self.fix_ann(h0, f"{name}: initial hidden state passed in")
        dirs = 2 if m.bidirectional else 1
        out_ann = Ann((out.dim() - 1,), np.tile(ids, dirs))
        state = Ann((2,), ids)
        return [out_ann, [state, state] if isinstance(hn, tuple) else state]

    # -- functions / methods ------------------------------------------------------------------
    def _function(self, n: fx.Node, name: str, result):
        args = n.args
        x = args[0] if args else None
        a = self.A(x)
        if name in ("getattr", "size") and isinstance(self.V(x), torch.Tensor):
            return self._shape_of(n, name, a, result)
        if name in _INERT:
            return None
        if name == "getitem":
            return self._getitem(n, result)
        if name == "setitem":
            return self._setitem(n)
        if name == "add" and isinstance(result, tuple):  # shape tuples concatenated
            entries = []
            for v in n.args:
                av = self.A(v)
                if isinstance(av, ShapeList):
                    entries += av.entries
                else:
                    entries += [None] * len(self.V(v))
            return ShapeList(entries)
        if name in ("max", "min") and len(args) > 1 and isinstance(self.V(args[1]), torch.Tensor):
            name = "maximum"
        if name in _BINARY or name in ("maximum", "minimum"):
            return self._binary(n, name, result)
        if name in _UNARY:
            if (
                isinstance(a, ParamTag)
                and isinstance(result, torch.Tensor)
                and tuple(result.shape) == tuple(self.V(x).shape)
            ):
                return a
            for other in self._arg_nodes(n)[1:]:
                if isinstance(self.A(other), Ann):
                    self.fix_ann(self.A(other), f"{name} with a channel tensor argument")
            return self._same(a, result, name)
        if name in _SOFTMAX:
            dim = args[1] if len(args) > 1 else n.kwargs.get("dim")
            return self._softmax(a, dim, result, name)
        if name == "normalize":  # F.normalize: divides by a norm over `dim` (default 1)
            dim = args[2] if len(args) > 2 else n.kwargs.get("dim", 1)
            return self._softmax(a, dim, result, name)
        if name in ("pixel_shuffle", "pixel_unshuffle"):
            factor = args[1] if len(args) > 1 else n.kwargs.get("upscale_factor", n.kwargs.get("downscale_factor"))
            return self._pixel_shuffle(a, int(factor), name == "pixel_shuffle", f"{name} at {n.name}")
        if name in _RESHAPE:
            # only view/reshape/unflatten take sizes; flatten/squeeze/unsqueeze take dim indices
            lit = ()
            if name in ("view", "reshape", "unflatten"):
                lit = self._literal_positions(n, result.dim()) if name != "unflatten" else None
                lit = self._literal_ints(n) if lit is None else lit
            xs = self.V(x).shape
            if isinstance(a, ParamTag):
                out = self._reshape_tag(a, xs, result.shape)
            else:
                out = self._reshape(n, a, xs, result.shape, lit)
            if name in ("view", "reshape"):
                self._tie_sizes(n, out, result)
            return out
        if name in _PERMUTE:
            return self._permute(n, name, a, result)
        if name in _EXPAND:
            return self._expand(n, name, a, result)
        if name in _REDUCE:
            return self._reduce(n, name, a, result)
        if name == "cat":
            return self._cat(n, result)
        if name == "stack":
            return self._stack(n, result)
        if name in ("split", "chunk", "tensor_split", "unbind"):
            return self._split(n, name, a, result)
        if name == "matmul":
            return self._matmul(n, result)
        if name == "scaled_dot_product_attention":
            return self._sdpa(n, result)
        if name == "layer_norm":
            return self._layer_norm(n, a, result)
        if name == "linear" and isinstance(a, Ann):
            self.fix_ann(a, "functional linear")
            self.warn(f"functional linear at {n.name}: its input channels are kept")
            return None
        if not any(isinstance(self.A(v), (Ann, list, tuple)) for v in self._arg_nodes(n)):
            return None
        return self._unknown(n, name)

    def _same(self, a, result, what):
        if not isinstance(a, Ann):
            return None
        if not isinstance(result, torch.Tensor) or any(
            d >= result.dim() or result.shape[d] != a.ids.shape[k] for k, d in enumerate(a.dims)
        ):
            self.fix_ann(a, f"{what} changes the channel dim")
            self.warn(f"{what} changes the channel dim: kept whole")
            return None
        return a

    def _softmax(self, a, dim, result, what):
        if isinstance(a, Ann) and dim is not None and _norm_dim(dim, result.dim()) in a.dims:
            self.inexact(a.ids, f"{what} over channels")
        return self._same(a, result, what)

    def _pixel_shuffle(self, a, r: int, shuffle: bool, what: str):
        if not isinstance(a, Ann):
            return None
        if a.dims != (1,):
            self.fix_ann(a, f"{what}: channels not on dim 1")
            return None
        if shuffle:  # output channel c gathers input channels c*r*r .. c*r*r + r*r - 1
            rows = a.ids.reshape(-1, r * r)
            self.an.atoms.union_rows(rows)
            return Ann((1,), rows[:, 0].copy())
        return Ann((1,), np.repeat(a.ids, r * r))  # unshuffle spreads each channel over r*r

    def _literal_positions(self, n: fx.Node, rank: int):
        """{output dim: literal size} when the requested shape lines up with the output dims (so
        a literal 4 for the head size is not mistaken for a head count that is also 4), else None."""
        items: list = []

        def walk(v):
            if isinstance(v, (list, tuple)):
                for e in v:
                    walk(e)
            elif isinstance(v, fx.Node) and v.op == "call_function" and v.target is operator.add:
                for e in v.args:  # x.size()[:-1] + (heads, head_size)
                    walk(e)
            elif isinstance(v, fx.Node):
                val = self.env.get(v)  # values of earlier nodes may be freed already
                if val is None and v not in self.env:
                    items.append(_UNKNOWN)
                else:
                    items.extend([None] * len(val) if isinstance(val, (tuple, list, torch.Size)) else [None])
            else:
                items.append(v if isinstance(v, int) and not isinstance(v, bool) else None)

        for v in n.args[1:]:
            walk(v)
        if "shape" in n.kwargs:
            walk(n.kwargs["shape"])
        if len(items) != rank or _UNKNOWN in items:
            return None
        return {d: v for d, v in enumerate(items) if v is not None}

    def _literal_ints(self, n: fx.Node) -> set:
        out: set = set()

        def walk(v, depth=0):
            if isinstance(v, bool):
                return
            if isinstance(v, int):
                out.add(v)
            elif isinstance(v, (list, tuple)):
                for e in v:
                    walk(e, depth)
            elif isinstance(v, fx.Node) and depth < 4 and v.op == "call_function" and v.target is operator.add:
                for e in v.args:
                    walk(e, depth + 1)

        for v in n.args[1:]:
            walk(v)
        for v in n.kwargs.values():
            walk(v)
        return out

    def _couple(self, n, items, out_rank: int, what: str):
        """Unify channel positions of operands that are combined elementwise.

        items: (annotation-or-ParamTag-or-None, shape, offset into output dims)."""
        anns = [(a, s, o) for a, s, o in items if isinstance(a, Ann)]
        if not anns:
            return None
        dims = None
        for a, _s, o in anns:
            d = tuple(x + o for x in a.dims)
            if dims is None:
                dims = d
            elif d != dims:
                for b, _, _ in anns:
                    self.fix_ann(b, f"{what} of tensors with channels on different dims")
                self.warn(f"{what} at {n.name} mixes channel dims: kept whole")
                return None
        base = anns[0][0]
        for a, _s, _o in anns[1:]:
            if a.ids.shape != base.ids.shape:
                self.fix_ann(a, what)
                self.fix_ann(base, what)
                return None
            self.an.atoms.union(base.ids, a.ids)
        for a, s, o in items:
            if isinstance(a, Ann):
                continue
            if s is None:
                continue
            sizes = [(s[d - o] if 0 <= d - o < len(s) else 1) for d in dims]
            if all(z == 1 for z in sizes):
                continue  # broadcast along the channels: no coupling
            if isinstance(a, ParamTag) and len(dims) == 1:
                axis = a.axes[dims[0] - o]
                owner = self.mods.get(a.name.rpartition(".")[0])
                if owner is not None and cuts_own_params(owner):
                    axis = None  # layer surgery already cuts it: slicing it again would cut twice
                if axis is not None:
                    self.record("param", a.name, f"axis{axis}", base.ids, "Parameter")
                    continue
            if base.ids.ndim > 1:  # e.g. rotary cos/sin over (heads, head dim): heads may still go
                for k in range(len(dims)):
                    if sizes[k] > 1:
                        self.whole_along(base.ids, k, f"{what} at {n.name} with a tensor of unknown channels")
                continue
            self.fix_ann(base, f"{what} with a tensor of unknown channels")
            self.warn(f"{what} at {n.name} combines channels with a tensor of unknown origin: kept whole")
        return Ann(dims, base.ids, base.split)

    def _binary(self, n, name, result):
        if not isinstance(result, torch.Tensor):
            return None
        items = []
        for v in self._arg_nodes(n):
            val = self.V(v)
            if isinstance(val, torch.Tensor):
                items.append((self.A(v), tuple(val.shape), result.dim() - val.dim()))
        tags = [a for a, _, _ in items if isinstance(a, ParamTag)]
        if not any(isinstance(a, Ann) for a, _, _ in items):
            if len(tags) == 1 and len(items) == 1 and tuple(result.shape) == items[0][1]:
                return tags[0]  # parameter scaled by a Python number stays a parameter view
            return None
        return self._couple(n, items, result.dim(), name)

    def _shape_of(self, n, name, a, result):
        rank = self.V(n.args[0]).dim()
        entries = [None] * rank
        if isinstance(a, Ann) and a.ids.ndim == 1:
            entries[a.dims[0]] = SizeOf(a.ids)
        if name == "getattr":
            return ShapeList(entries) if n.args[1] == "shape" else None
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        if dim is None:
            return ShapeList(entries)
        return entries[_norm_dim(dim, rank)] if isinstance(dim, int) else None

    def _shape_entries(self, n) -> list:
        """The requested shape of a view/reshape, entry by entry (SizeOf where it came from one)."""
        out = []

        def walk(v):
            av = self.A(v) if isinstance(v, fx.Node) else None
            if isinstance(av, ShapeList):
                out.extend(av.entries)
            elif isinstance(av, SizeOf):
                out.append(av)
            elif isinstance(v, (list, tuple)):
                for e in v:
                    walk(e)
            elif isinstance(v, fx.Node) and isinstance(self.V(v), (tuple, list, torch.Size)):
                out.extend([None] * len(self.V(v)))
            else:
                out.append(None)

        for v in n.args[1:]:
            walk(v)
        if "shape" in n.kwargs:
            walk(n.kwargs["shape"])
        return out

    def _setitem(self, n):
        """``x[idx] = v`` in place: harmless while idx takes every channel and v brings none."""
        x, idx, val = (list(n.args) + [None, None])[:3]
        a, xv = self.A(x), self.V(x)
        va = self.A(val)
        if not isinstance(a, Ann):
            self.fix_ann(va, f"written into a tensor without channels at {n.name}")
            return None
        items = list(idx) if isinstance(idx, tuple) else [idx]
        widths = []
        for i in items:
            v = self.V(i)
            if i is None:
                widths.append(0)
            elif i is Ellipsis:
                widths.append(-1)
            elif isinstance(v, torch.Tensor) and v.dtype == torch.bool:
                widths.append(v.dim())
            else:
                widths.append(1)
        rest = xv.dim() - sum(w for w in widths if w > 0)
        dim, ok = 0, True
        for i, w in zip(items, widths):
            w = rest if w == -1 else w
            span = range(dim, dim + w)
            if any(d in a.dims for d in span):
                v = self.V(i)
                full = isinstance(v, slice) and v.indices(xv.shape[dim]) == (0, xv.shape[dim], 1)
                ok = ok and full
            dim += w
        vv = self.V(val)
        if isinstance(va, Ann) or (isinstance(vv, torch.Tensor) and vv.numel() > 1 and vv.dim() >= 1):
            # a written tensor must carry exactly these channels; we do not line them up
            ok = ok and not isinstance(va, Ann) and all(vv.shape[k] == 1 for k in range(vv.dim()))
        if not ok:
            self.fix_ann(a, f"in-place write into channels at {n.name}")
            self.fix_ann(va, f"in-place write into channels at {n.name}")
            self.warn(f"in-place write at {n.name} touches single channels: kept whole")
        return None

    def _getitem(self, n, result):
        src, idx = n.args[0], n.args[1]
        a = self.A(src)
        sv = self.V(src)
        if isinstance(a, ShapeList):
            if isinstance(idx, int):
                return a.entries[idx] if -len(a.entries) <= idx < len(a.entries) else None
            if isinstance(idx, slice):
                return ShapeList(a.entries[idx])
            return None
        if isinstance(a, (list, tuple)):
            return a[idx] if isinstance(idx, int) and idx < len(a) else None
        if not isinstance(sv, torch.Tensor) or a is None:
            return None
        if not isinstance(idx, tuple):
            idx = (idx,)
        # slice bounds computed from sizes (x[..., : x.shape[-1] // 2]) are plain ints by now
        idx = tuple(slice(self.V(i.start), self.V(i.stop), self.V(i.step)) if isinstance(i, slice) else i for i in idx)
        if any(isinstance(i, (torch.Tensor, list, fx.Node)) for i in idx):
            self.fix_ann(a, "advanced indexing") if isinstance(a, Ann) else None
            return None
        rank = sv.dim()
        consumed = sum(1 for i in idx if i is not None and i is not Ellipsis)
        full = []
        for i in idx:
            if i is Ellipsis:
                full += [slice(None)] * (rank - consumed)
            else:
                full.append(i)
        full += [slice(None)] * (rank - sum(1 for i in full if i is not None))
        mapping, index, in_d, out_d = {}, {}, 0, 0
        for i in full:
            if i is None:
                out_d += 1
                continue
            index[in_d] = i
            if not isinstance(i, int):
                mapping[in_d] = out_d
                out_d += 1
            in_d += 1
        if isinstance(a, ParamTag):
            axes = [None] * result.dim()
            for d, od in mapping.items():
                if isinstance(index[d], slice) and index[d].indices(sv.shape[d]) != (0, sv.shape[d], 1):
                    return None
                axes[od] = a.axes[d]
            if any(isinstance(index[d], int) for d in index if sv.shape[d] > 1):
                return None
            return ParamTag(a.name, tuple(axes))
        ints = [d for d in a.dims if isinstance(index[d], int)]
        if (
            len(ints) == 1
            and self._is_container(a)
            and all(
                isinstance(index[d], slice) and index[d].indices(sv.shape[d]) == (0, sv.shape[d], 1)
                for d in a.dims
                if d != ints[0]
            )
        ):
            part = self._take_part(n, a, ints[0], index[ints[0]])
            return Ann(tuple(mapping[d] for d in part.dims), part.ids, part.split)
        ids = a.ids
        new_dims = []
        for k, d in enumerate(a.dims):
            i = index[d]
            if isinstance(i, int):
                self.fix_ann(a, f"indexing one channel at {n.name}")
                return None
            if i.indices(sv.shape[d]) != (0, sv.shape[d], 1):
                if ids.ndim > 1:  # e.g. half of every head (rotary): fine while heads go whole
                    self.whole_along(ids, k, f"slicing channels with fixed bounds at {n.name}")
                else:
                    self.fix_ann(a, f"slicing channels with fixed bounds at {n.name}")
                ids = np.take(ids, np.arange(*i.indices(sv.shape[d])), axis=k)
            new_dims.append(mapping[d])
        return Ann(tuple(new_dims), ids, a.split)

    def _full(self, a: Ann, shape) -> np.ndarray:
        view = [1] * len(shape)
        for k, d in enumerate(a.dims):
            view[d] = a.ids.shape[k]
        order = np.argsort(a.dims)
        ids = np.transpose(a.ids, order) if a.ids.ndim > 1 else a.ids
        return np.broadcast_to(ids.reshape(view), tuple(shape))

    def _reshape(self, n, a, in_shape, out_shape, literal):
        if not isinstance(a, Ann):
            return None
        if math.prod(in_shape) > 30_000_000:
            self.fix_ann(a, "reshape too large to analyse")
            return None
        full = self._full(a, in_shape)
        G = np.reshape(full, tuple(out_shape))
        var = []
        for d in range(G.ndim):
            if G.shape[d] > 1 and not (G == np.take(G, [0], axis=d)).all():
                var.append(d)
        if not var or len(var) > 3 or (len(var) == 3 and a.ids.ndim != 1):
            self.fix_ann(a, f"reshape at {n.name} mixes channels with other dims")
            self.warn(f"reshape at {n.name} cannot be followed: its channels are kept")
            return None
        E = G[tuple(slice(None) if d in var else 0 for d in range(G.ndim))]
        split = a.split
        if len(var) >= 2 and a.ids.ndim == 1:
            split = len(self.an.splits)
            # three dims: a fused projection split into (q/k/v, heads, head dim)
            self.an.splits.append(Split(self.owner(n), np.array(E), n.name, container=len(var) == 3))
        elif len(var) == 1:
            split = None
        roles = {1: ("flat",), 2: ("rows", "cols"), 3: ("parts", "rows", "cols")}[len(var)]
        for k, d in enumerate(var):
            size = out_shape[d]
            hit = literal.get(d) == size if isinstance(literal, dict) else size in literal
            if hit and size > 1:
                role = roles[k]
                ids2 = E.reshape(1, -1) if len(var) == 1 else np.array(E)
                axis = 1 if len(var) == 1 else k
                self.an.reqs.append(SizeReq(self.owner(n), int(size), ids2, axis, role, n.name))
        return Ann(tuple(var), np.array(E), split)

    def _tie_sizes(self, n, out, result) -> None:
        """A view whose size is read from another tensor's channels (``reshape(B, N, C)``) keeps
        working only while both counts stay equal: tie the two channel sets position by position.

        When the viewed tensor does not carry channels on that dim (its channels are unknown or
        pinned, e.g. they came out of an op we do not model, or they sit on another dim), its size
        there never changes, so the channels the size was read from must not change either."""
        entries = self._shape_entries(n)
        if not any(isinstance(e, SizeOf) for e in entries):
            return
        placed = len(entries) == result.dim()
        for d, e in enumerate(entries):
            if not isinstance(e, SizeOf):
                continue
            if placed and len(e.ids) == result.shape[d]:
                if isinstance(out, Ann) and d in out.dims:
                    if out.ids.ndim == 1:
                        self.an.atoms.union(out.ids, e.ids)
                    else:
                        self.fix_ann(out, f"{n.name}: view sized by another tensor's channels")
                        self.fix(e.ids, f"{n.name}: view sized by another tensor's channels")
                    continue
                if isinstance(out, ParamTag) and out.axes[d] is not None:
                    # a parameter viewed with a channel count: fine only if the parameter is
                    # sliced along that axis by the same channels (checked in finish)
                    self.an.param_sizes.append((out.name, out.axes[d], e.ids, n.name))
                    continue
            if (self.an.atoms.find(e.ids) == FIXED).all():
                continue
            self.fix(e.ids, f"{n.target} at {n.name}: sized by channels its input does not carry")
            self.warn(
                f"{n.target} at {n.name} is sized by a channel count read from a tensor's shape, on a dim "
                "whose channels cannot be followed: those channels are kept"
            )

    def _reshape_tag(self, a: ParamTag, in_shape, out_shape):
        # only size-1 insertions/removals keep the axis correspondence
        big_in = [(d, s) for d, s in enumerate(in_shape) if s != 1]
        big_out = [(d, s) for d, s in enumerate(out_shape) if s != 1]
        if [s for _, s in big_in] != [s for _, s in big_out]:
            return None
        axes = [None] * len(out_shape)
        for (di, _), (do, _) in zip(big_in, big_out):
            axes[do] = a.axes[di]
        return ParamTag(a.name, tuple(axes))

    def _permute(self, n, name, a, result):
        rank = result.dim()
        args = [self.V(v) for v in n.args[1:]]
        if name == "permute":
            perm = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
            perm = n.kwargs.get("dims", perm)
            perm = [_norm_dim(int(p), rank) for p in perm]
        elif name == "t":
            perm = [1, 0] if rank == 2 else list(range(rank))
        elif name == "movedim":
            src, dst = _norm_dim(args[0], rank), _norm_dim(args[1], rank)
            perm = [d for d in range(rank) if d != src]
            perm.insert(dst, src)
        else:
            d0 = _norm_dim(args[0] if args else n.kwargs["dim0"], rank)
            d1 = _norm_dim(args[1] if len(args) > 1 else n.kwargs["dim1"], rank)
            perm = list(range(rank))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        inv = {src: dst for dst, src in enumerate(perm)}
        if isinstance(a, ParamTag):
            return ParamTag(a.name, tuple(a.axes[perm[d]] for d in range(rank)))
        if not isinstance(a, Ann):
            return None
        new = [inv[d] for d in a.dims]
        order = np.argsort(new)
        ids = np.transpose(a.ids, order) if a.ids.ndim > 1 else a.ids
        return Ann(tuple(sorted(new)), ids, a.split)

    def _expand(self, n, name, a, result):
        xs = tuple(self.V(n.args[0]).shape)
        off = result.dim() - len(xs)
        if isinstance(a, ParamTag):
            if name == "repeat":
                return None
            return ParamTag(a.name, (None,) * off + tuple(a.axes))
        if not isinstance(a, Ann):
            return None
        dims = tuple(d + off for d in a.dims)
        if any(result.shape[d] != a.ids.shape[k] for k, d in enumerate(dims)):
            self.fix_ann(a, f"{name} repeats channels")
            return None
        lit = self._literal_ints(n) if name in ("expand", "broadcast_to") else set()
        for _k, d in enumerate(dims):
            if a.ids.ndim == 1 and result.shape[d] in lit and result.shape[d] > 1:
                self.an.reqs.append(
                    SizeReq(self.owner(n), int(result.shape[d]), a.ids.reshape(1, -1), 1, "flat", n.name)
                )
        return Ann(dims, a.ids, a.split)

    def _reduce(self, n, name, a, result):
        x = self.V(n.args[0])
        rank = x.dim()
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        if name == "norm":
            dim = n.kwargs.get("dim", n.args[2] if len(n.args) > 2 else None)
        keep = n.kwargs.get("keepdim", n.args[2] if len(n.args) > 2 and name != "norm" else False)
        if dim is None:
            dims = set(range(rank))
        elif isinstance(dim, (list, tuple)):
            dims = {_norm_dim(d, rank) for d in dim}
        else:
            dims = {_norm_dim(dim, rank)}
        if isinstance(result, tuple):  # (values, indices)
            out = self._reduce_ann(a, dims, keep, f"{name} at {n.name}")
            return [out, None]
        return self._reduce_ann(a, dims, keep, f"{name} at {n.name}")

    def _reduce_ann(self, a, dims, keep, what):
        if not isinstance(a, Ann):
            return None
        if any(d in dims for d in a.dims):
            self.inexact(a.ids, f"{what} over channels")
            return None
        new = tuple(d if keep else d - sum(1 for r in dims if r < d) for d in a.dims)
        return Ann(new, a.ids, a.split)

    def _cat(self, n, result):
        tensors = n.args[0]
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
        rank = result.dim()
        dim = _norm_dim(dim, rank)
        anns = [self.A(t) for t in tensors]
        vals = [self.V(t) for t in tensors]
        multi = [a for a in anns if isinstance(a, Ann) and a.ids.ndim > 1 and dim in a.dims]
        if multi and len(multi) == len(anns) and all(a.dims == multi[0].dims for a in multi):
            k = multi[0].dims.index(dim)  # e.g. the two rotated halves of every head
            try:
                return Ann(multi[0].dims, np.concatenate([a.ids for a in multi], axis=k))
            except ValueError:
                pass
        if any(isinstance(a, Ann) and dim in a.dims for a in anns):
            parts = []
            for a, v in zip(anns, vals):
                if isinstance(a, Ann) and a.dims == (dim,):
                    parts.append(a.ids)
                elif isinstance(a, Ann):
                    for b in anns:
                        self.fix_ann(b, f"cat at {n.name} of mixed layouts")
                    return None
                else:
                    parts.append(np.zeros(v.shape[dim], dtype=np.int64))  # unknown: FIXED atoms
            return Ann((dim,), np.concatenate(parts))
        return self._couple(n, [(a, tuple(v.shape), 0) for a, v in zip(anns, vals)], rank, "cat")

    def _stack(self, n, result):
        tensors = n.args[0]
        dim = _norm_dim(n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0), result.dim())
        items = []
        for t in tensors:
            a, v = self.A(t), self.V(t)
            shape = list(v.shape)
            shape.insert(dim, 1)
            if isinstance(a, Ann):
                a = Ann(tuple(d + (d >= dim) for d in a.dims), a.ids, a.split)
            elif isinstance(a, ParamTag):
                axes = list(a.axes)
                axes.insert(dim, None)
                a = ParamTag(a.name, tuple(axes))
            items.append((a, tuple(shape), 0))
        return self._couple(n, items, result.dim(), "stack")

    def _split(self, n, name, a, result):
        x = self.V(n.args[0])
        rank = x.dim()
        pos = 1 if name == "unbind" else 2  # unbind(x, dim); split/chunk/tensor_split(x, sizes, dim)
        dim = n.args[pos] if len(n.args) > pos else n.kwargs.get("dim", 0)
        dim = _norm_dim(dim, rank)
        k = len(result)
        if not isinstance(a, Ann):
            return [None] * k
        if dim not in a.dims:
            if name == "unbind":
                return [Ann(tuple(d - (d > dim) for d in a.dims), a.ids, a.split)] * k
            return [a] * k
        if name == "unbind" and self._is_container(a):
            out = []
            for i in range(k):
                part = self._take_part(n, a, dim, i)
                out.append(Ann(tuple(d - (d > dim) for d in part.dims), part.ids, part.split))
            return out
        if name == "unbind" and a.ids.ndim == 2:  # reshape(B, 3, -1).unbind(1): one part per row
            k_ax = a.dims.index(dim)
            rest = tuple(d - (d > dim) for d in a.dims if d != dim)
            return [Ann(rest, np.take(a.ids, i, axis=k_ax)) for i in range(k)]
        sizes = [r.shape[dim] for r in result]
        arg = n.args[1] if len(n.args) > 1 else n.kwargs.get("split_size_or_sections", n.kwargs.get("split_size"))
        literal_list = name in ("split", "tensor_split") and not isinstance(arg, int)
        if a.dims != (dim,) or name == "unbind" or (name == "tensor_split" and literal_list):
            self.fix_ann(a, f"{name} at {n.name} into single channels or along a split dim")
            self.warn(f"{name} at {n.name} takes channels apart one by one or along a split dim: kept whole")
            return [Ann((dim,), a.ids[sum(sizes[:i]) : sum(sizes[: i + 1])]) for i in range(k)]
        if len(set(sizes)) != 1:
            # unequal parts: each part keeps its own channels; a literal size must be an attribute
            parts = [a.ids[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(k)]
            if literal_list:
                for i, p in enumerate(parts):
                    if sizes[i] > 1:
                        self.an.reqs.append(SizeReq(self.owner(n), sizes[i], p.reshape(1, -1), 1, "split", n.name))
            elif name == "split" and isinstance(arg, int):  # a remainder part: the sizes are fixed
                self.fix_ann(a, f"{name} at {n.name} into unequal parts of a fixed size")
                self.warn(f"{name} at {n.name} splits channels into unequal parts of size {arg}: kept whole")
            return [Ann((dim,), p) for p in parts]
        ids2 = a.ids.reshape(k, -1)
        self.an.splits.append(Split(self.owner(n), ids2, n.name))
        if name == "split" and literal_list and sizes[0] > 1:
            self.an.reqs.append(SizeReq(self.owner(n), int(sizes[0]), ids2, 1, "split", n.name))
        elif name == "split" and isinstance(arg, int) and arg > 1:
            self.an.reqs.append(SizeReq(self.owner(n), int(arg), ids2, 1, "cols", n.name))
        return [Ann((dim,), ids2[i]) for i in range(k)]

    def _is_container(self, a) -> bool:
        return isinstance(a, Ann) and a.ids.ndim == 3 and a.split is not None and self.an.splits[a.split].container

    def _take_part(self, n, a: Ann, dim: int, i: int) -> Ann:
        """One of q / k / v out of a fused (parts, heads, head dim) annotation."""
        k = a.dims.index(dim)
        ids = np.take(a.ids, i, axis=k)
        self.an.splits[a.split].taken = True
        split = len(self.an.splits)
        self.an.splits.append(Split(self.owner(n), np.array(ids), n.name))
        return Ann(tuple(d for d in a.dims if d != dim), ids, split)

    def _layer_norm(self, n, a, result):
        rank = result.dim()
        shape = n.args[1] if len(n.args) > 1 else n.kwargs.get("normalized_shape")
        k = len(shape) if isinstance(shape, (list, tuple)) else 1
        if not isinstance(a, Ann) or all(d < rank - k for d in a.dims):
            return a if isinstance(a, Ann) else None
        owner = self.owner(n)
        m = self.mods.get(owner)
        if k == 1 and a.dims == (rank - 1,) and m is not None and hasattr(m, "normalized_shape"):
            self.record("module", owner, "channels", a.ids, type(m).__name__)
            self.inexact(a.ids, f"{owner} (LayerNorm statistics)")
            return a
        self.fix_ann(a, f"layer_norm at {n.name}")
        self.warn(f"functional layer_norm at {n.name} outside a LayerNorm module: kept whole")
        return None

    def _matmul(self, n, result):
        an, bn = n.args[0], n.args[1]
        A, B = self.A(an), self.A(bn)
        va, vb = self.V(an), self.V(bn)
        A = A if isinstance(A, Ann) else None
        B = B if isinstance(B, Ann) else None
        if A is None and B is None:
            return None
        ra, rb, ro = va.dim(), vb.dim(), result.dim()
        if ra < 2 or rb < 2:
            self.fix_ann(A, "matmul with a vector")
            self.fix_ann(B, "matmul with a vector")
            return None
        oa, ob = ro - ra, ro - rb
        ca, cb = ra - 1, rb - 2
        a_k = A is not None and ca in A.dims
        b_k = B is not None and cb in B.dims
        atoms = self.an.atoms
        if a_k and b_k:
            if (
                A.ids.ndim == 1
                and B.ids.ndim == 1
                and A.dims == (ca,)
                and B.dims == (cb,)
                and A.ids.shape == B.ids.shape
            ):
                atoms.union(A.ids, B.ids)  # single head: query and key dims pair up
                return None
            if A.ids.ndim == 2 and B.ids.ndim == 2:
                ha = [d for d in A.dims if d != ca]
                hb = [d for d in B.dims if d != cb]
                if ha[0] < ra - 2 and hb[0] < rb - 2 and ha[0] + oa == hb[0] + ob:
                    ia, ib = _orient(A, ha[0]), _orient(B, hb[0])
                    if ia.shape == ib.shape:
                        for s in (A.split, B.split):
                            if s is not None:
                                self.an.splits[s].attention = True
                        if self.attention == "heads":
                            atoms.union_rows(ia)
                            atoms.union_rows(ib)
                            atoms.union(ia, ib)
                            return Ann((ha[0] + oa,), ia[:, 0].copy())
                        atoms.union_cols(ia)
                        atoms.union_cols(ib)
                        atoms.union(ia, ib)
                        self.inexact(ia, "attention head size changes the softmax scale")
                        return None
            self.fix_ann(A, f"matmul at {n.name}")
            self.fix_ann(B, f"matmul at {n.name}")
            self.warn(f"matmul at {n.name}: contraction pattern not understood, kept whole")
            return None
        if a_k or b_k:
            self.fix_ann(A, f"matmul at {n.name} with a constant operand")
            self.fix_ann(B, f"matmul at {n.name} with a constant operand")
            if a_k and not b_k and not isinstance(self.A(bn), ParamTag) and B is None:
                self.warn(f"matmul at {n.name} contracts channels with a tensor of unknown origin: kept whole")
            return None

        # no channels contracted: they pass to the output (batch dims shift by the rank difference)
        def to_out(ann, off):
            return [d + off for d in ann.dims]

        if A is not None and B is not None:
            da, db = to_out(A, oa), to_out(B, ob)
            # attention output: probs (heads) @ values (heads, head dim)
            if len(da) == 1 and B.ids.ndim == 2 and da[0] in db and da[0] < ro - 2:
                ib = _orient(B, da[0] - ob)
                if B.split is not None:
                    self.an.splits[B.split].attention = True
                if self.attention == "heads":
                    atoms.union_rows(ib)
                    atoms.union(A.ids, ib[:, 0])
                else:
                    atoms.union_cols(ib)
                return Ann(tuple(db), B.ids, B.split)
            if da == db and A.ids.shape == B.ids.shape:
                atoms.union(A.ids, B.ids)
                return Ann(tuple(da), A.ids, A.split)
            self.fix_ann(A, f"matmul at {n.name}")
            self.fix_ann(B, f"matmul at {n.name}")
            return None
        if B is not None:
            if B.ids.ndim == 2 and B.split is not None:
                self.an.splits[B.split].attention = True
                if self.attention == "heads":
                    self.fix_ann(B, f"matmul at {n.name}: value heads not tied to query heads")
                else:
                    atoms.union_cols(_orient(B, B.dims[0]))
            return Ann(tuple(to_out(B, ob)), B.ids, B.split)
        return Ann(tuple(to_out(A, oa)), A.ids, A.split)

    def _sdpa(self, n, result):
        """F.scaled_dot_product_attention(q, k, v): (B, H, L, D) heads on dim -3, head dims last."""
        names = ("query", "key", "value")
        vals = [n.args[i] if i < len(n.args) else n.kwargs.get(k) for i, k in enumerate(names)]
        anns = [self.A(v) for v in vals]
        rank = result.dim()
        hd, cd = rank - 3, rank - 1
        if all(a is None for a in anns):
            return None
        ok = all(isinstance(a, Ann) and a.dims == (hd, cd) for a in anns)
        if ok and n.kwargs.get("enable_gqa") and anns[1].ids.shape[0] != anns[0].ids.shape[0]:
            # grouped key/value heads: each serves a run of query heads, so a class is a kv group
            rep = anns[0].ids.shape[0] // max(1, anns[1].ids.shape[0])
            anns = [anns[0]] + [Ann(a.dims, np.repeat(a.ids, rep, axis=0), a.split) for a in anns[1:]]
        ok = ok and anns[0].ids.shape == anns[1].ids.shape and anns[0].ids.shape[0] == anns[2].ids.shape[0]
        if not ok:
            for a in anns:
                self.fix_ann(a, f"scaled_dot_product_attention at {n.name}")
            self.warn(
                f"scaled_dot_product_attention at {n.name}: q/k/v are not (batch, heads, tokens, head dim) "
                "views of layer outputs; kept whole"
            )
            return None
        q, k, v = anns
        for a in anns:
            if a.split is not None:
                self.an.splits[a.split].attention = True
        atoms = self.an.atoms
        if self.attention == "heads":
            for a in anns:
                atoms.union_rows(a.ids)
            atoms.union(q.ids, k.ids)
            atoms.union(q.ids[:, 0], v.ids[:, 0])
        else:
            for a in anns:
                atoms.union_cols(a.ids)
            atoms.union(q.ids, k.ids)
            if n.kwargs.get("scale") is None:
                self.inexact(q.ids, "attention head size changes the softmax scale")
        return Ann(v.dims, v.ids, v.split)

    # -- after the run ------------------------------------------------------------------------
    def finish(self) -> Analysis:
        atoms = self.an.atoms
        first_by_owner: dict = {}
        for s in self.an.splits:
            if s.container:
                if not s.taken:
                    self.fix(s.ids, f"{s.node}: channels split in three dims")
                    self.warn(f"{s.node} splits channels in three dims that are never taken apart: kept whole")
                continue
            if not s.attention:
                atoms.union_cols(s.ids)
                continue
            # q, k and v of one attention module share its head attributes, so they must keep
            # the same heads / head dims: tie their splits position by position
            key = (s.owner, s.ids.shape)
            first = first_by_owner.setdefault(key, s)
            if first is not s:
                atoms.union(first.ids, s.ids)
        for name, axis, ids, node in self.an.param_sizes:
            s = self.an.slices.get(("param", name, f"axis{axis}"))
            if s is not None and s.ids.shape == ids.shape:
                atoms.union(s.ids, ids)
            else:
                self.fix(ids, f"{node}: parameter {name} viewed with a channel count")
                self.warn(
                    f"{node} views parameter {name} with a size read from a tensor's channels, "
                    "but the parameter is not cut with them: those channels are kept"
                )
        for r in self.an.reqs:
            self._resolve(r)
        for ids, axis, reason in self.an.wholes:
            roots = atoms.find(ids)
            if roots.size == 0:  # an empty slice (a rotary share of 0 head dims) has nothing to cut
                continue
            if not (roots == np.take(roots, [0], axis=axis)).all():
                self.fix(ids, reason)
                self.warn(f"{reason}: those channels would be cut unevenly, kept whole")
        return self.an

    def _resolve(self, r: SizeReq) -> None:
        atoms = self.an.atoms
        roots = atoms.find(r.ids)
        if r.role in ("flat", "split"):
            if (roots == FIXED).all():
                return
        else:
            per = [frozenset(np.take(roots, i, axis=r.axis).ravel().tolist()) for i in range(roots.shape[r.axis])]
            if len(set(per)) == 1:
                return  # every class spans every index of this axis: its size never changes
        m = self.mods.get(r.owner)
        names = {"rows": _ROW_NAMES, "cols": _COL_NAMES, "flat": _FLAT_NAMES, "parts": (), "split": ()}[r.role]
        cands = []
        if m is not None:
            for k, v in vars(m).items():
                if k.startswith("_") or k == "training" or type(v) is not int or v != r.size:
                    continue
                if k in names:
                    cands.append((0, names.index(k), k))
                elif any(h in k.lower() for h in _NAME_HINTS):
                    cands.append((1, 0, k))
                elif r.role == "split":  # split sizes are often short names: x.split((self.c, self.c), 1)
                    cands.append((2, 0, k))
        cands.sort()
        if cands and cands[0][0] == 2 and len(cands) > 1 and r.ids.shape[0] > 1:
            # equal parts kept equal (x.split((self.c1, self.c2), 1) with c1 == c2): all sizes follow
            for _, _, attr in cands:
                self.an.attr_fixes.append(AttrFix(r.owner, attr, r.ids, r.axis))
            return
        if cands and not (cands[0][0] == 2 and len(cands) > 1):  # two bare names: which one is it?
            attr = cands[0][2]
            self.an.attr_fixes.append(AttrFix(r.owner, attr, r.ids, r.axis))
            return
        self.fix(r.ids, f"{r.node} hard-codes size {r.size}")
        where = r.owner or "the model"
        self.warn(f"{r.node} in {where} hard-codes size {r.size} and no attribute holds it: kept whole")


def _where(e: BaseException) -> str:
    """file:line of the innermost frame of ``e`` outside torch and edgeprune: the user's line."""
    tb, last = e.__traceback__, ""
    while tb is not None:
        f = tb.tb_frame.f_code.co_filename
        if "/torch/" not in f and "/edgeprune/graph/" not in f:
            last = f"{f}:{tb.tb_lineno}"
        tb = tb.tb_next
    return last or "?"


def _run(model: nn.Module, fn):
    """``fn()`` with the model in eval mode and no grad; each module's own flag restored after
    (users mix modes, e.g. a frozen BatchNorm in a model being fine-tuned)."""
    modes = {m: m.training for m in model.modules()}
    cfg = getattr(model, "config", None)
    cache = getattr(cfg, "use_cache", None)
    model.eval()
    try:
        if cache:  # a fresh key/value cache only adds constants to the graph
            cfg.use_cache = False
        with torch.no_grad():
            return fn()
    finally:
        if cache:
            cfg.use_cache = cache
        for m, mode in modes.items():
            m.training = mode


def _analyze_fx(model, args, attention):
    gm = capture(model)
    run = Analyzer(gm, model, attention=attention)
    _run(model, lambda: run.run(*args))
    return gm.graph, run


def _analyze_recording(model, rec, attention):
    run = Analyzer(model, model, attention=attention, graph=rec.graph, consts=rec.consts)
    _run(model, lambda: run.run(*rec.inputs))
    return rec.graph, run


def _analyze_export(model, args, kwargs, attention):
    return _analyze_recording(model, _run(model, lambda: export_graph(model, args, kwargs)), attention)


def _analyze_eager(model, args, kwargs, attention):
    rec = _run(model, lambda: record(model, args, kwargs))
    run = Analyzer(model, model, attention=attention, graph=rec.graph, consts=rec.consts)
    _run(model, lambda: run.run(*rec.inputs))
    return rec.graph, run


# Capture paths tried by capture="auto", in order: the order with the most coverage measured on
# the zoo, transformers and peer test models (docs/capture.md has the table).
AUTO_ORDER = ("fx", "eager", "export")
_PATHS = {"fx": "torch.fx", "export": "torch.export", "eager": "the eager recording"}


def _capture_path(path: str, model, args, kwargs, attention):
    if path == "fx":
        if kwargs:
            raise UserError("symbolic torch.fx takes positional example inputs only")
        return _analyze_fx(model, args, attention)
    if path == "export":
        return _analyze_export(model, args, kwargs, attention)
    return _analyze_eager(model, args, kwargs, attention)


def _stop(path: str, e: BaseException) -> str:
    e = e.__cause__ or e  # the error the tracer hit, not our wrapper of it
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return f"{_PATHS[path]} stopped at {_where(e)} with {type(e).__name__}: {first}"


def analyze(
    model: nn.Module, example_inputs, attention: str = "heads", ignore=(), kwargs=None, capture: str = "auto"
) -> tuple:
    """Capture ``model`` and analyse its channels. Returns (fx.Graph, Analysis).

    Capture ("auto" tries ``AUTO_ORDER``, first success wins): symbolic ``torch.fx`` (it also
    follows sizes read from shapes), non-strict ``torch.export`` (``export.py``), or an eager
    recording of one run (``record.py``); symbolic fx is skipped for keyword inputs. When every
    path fails the error names where each stopped and how to make the layer a leaf."""
    if capture not in ("auto", *_PATHS):
        raise UserError(f"capture={capture!r}: use 'auto', 'fx', 'export' or 'eager'")
    kwargs = dict(kwargs or {})
    if capture == "fx" and kwargs:
        raise UserError("capture='fx' takes positional example inputs only; use capture='auto' for keyword inputs")
    order = [capture] if capture != "auto" else [p for p in AUTO_ORDER if not (p == "fx" and kwargs)]
    stops, run = [], None
    for path in order:
        try:
            graph, run = _capture_path(path, model, example_inputs, kwargs, attention)
            break
        except Exception as e:  # this path cannot follow the forward: try the next one
            stops.append(_stop(path, e))
            last = e
    if run is None:
        raise CaptureError(
            f"cannot capture {type(model).__name__}: {'; '.join(stops)}; make that code a leaf with "
            "edgeprune.graph.register_layer(TheModuleType, LayerRule(trace=...)), or fix the example inputs"
        ) from last
    an = run.finish()
    _apply_ignore(model, an, ignore)
    for w in an.warnings:
        warnings.warn(f"edgeprune.trace: {w}", stacklevel=3)
    return graph, an


def _ignore_targets(model: nn.Module, entry) -> tuple:
    """(names the entry stands for, label for messages) for a name, a module object or a type."""
    if isinstance(entry, str):
        return (entry,), repr(entry)
    if isinstance(entry, type) and issubclass(entry, nn.Module):
        return tuple(n for n, m in model.named_modules() if isinstance(m, entry)), entry.__name__
    if isinstance(entry, nn.Module):
        names = tuple(n for n, m in model.named_modules() if m is entry)
        if not names:
            raise IgnoreError(f"ignore=[{type(entry).__name__}(...)]: that module is not part of the model")
        return names, f"{type(entry).__name__} {names[0]!r}"
    raise IgnoreError(f"ignore entry {entry!r}: pass layer names, module objects or module types")


def ignore_entries(ignore) -> tuple:
    """``ignore=`` as a tuple of entries: None is none, one name, module or type is one entry
    (Torch-Pruning's ``ignored_layers`` defaults to None, and users pass a single layer)."""
    if ignore is None:
        return ()
    if isinstance(ignore, (str, nn.Module, type)):
        return (ignore,)
    try:
        return tuple(ignore)
    except TypeError:
        raise IgnoreError(f"ignore={ignore!r}: pass layer names, module objects or module types") from None


def _apply_ignore(model: nn.Module, an: Analysis, ignore) -> None:
    modules = [n for n, _ in model.named_modules() if n]
    for entry in ignore_entries(ignore):
        names, label = _ignore_targets(model, entry)
        hit = False
        for s in an.slices.values():
            if s.kind == "module" and any(s.target == p or s.target.startswith(p + ".") for p in names):
                an.atoms.fix(s.ids)
                an.fixed.append((s.ids.copy(), f"{s.target} ignored by the user"))
                hit = True
        if hit:
            continue
        exists = [n for n in modules if any(n == p or n.startswith(p + ".") for p in names)]
        if exists:
            an.warnings.append(f"ignore={label}: {exists[0]} is never reached by the traced forward; nothing to keep")
            continue
        close = (
            difflib.get_close_matches(str(entry), modules, n=4, cutoff=0.5)
            or sorted({s.target for s in an.slices.values()})[:4]
        )
        raise IgnoreError(f"ignore={label} matches no prunable layer; close names: {', '.join(close)}")
