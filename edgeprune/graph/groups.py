"""The Graph returned by ``edgeprune.trace`` and its channel groups.

Consumes: the analysis of ``trace.py`` (atoms, classes, slices). Produces: ``Graph`` with
``groups()`` -> ``[ChannelGroup]`` (stable ids: the name of the first producing layer of the
group), and ``keep_entries(keep)`` which turns a per-group keep decision into the per-layer
kept indices a ``PrunePlan`` stores.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from .atoms import FIXED


@dataclass
class ChannelGroup:
    """Channels of several layers that must be removed together.

    ``size`` prunable channels (classes); removing class ``i`` removes every position that holds
    one of its atoms, in every member layer. ``exact`` is False when a member normalizes over the
    channels (LayerNorm, GroupNorm, softmax, a channel mean), so removing a channel also changes
    the statistics seen by the others."""

    id: str
    sources: list
    members: list  # (kind, target, role) of every slice touching the group
    roots: np.ndarray
    exact: bool = True
    inexact_reasons: list = field(default_factory=list)
    kept_reasons: list = field(default_factory=list)
    fixed_channels: int = 0
    atoms_per_class: dict = field(default_factory=dict)  # source -> atoms of one class in it
    # True when a class is one channel of every conv group of a grouped (not depthwise)
    # convolution: the group's size is then one conv group's width
    spans_conv_groups: bool = False

    @property
    def size(self) -> int:
        return int(len(self.roots))

    @property
    def prunable(self) -> bool:
        return self.size >= 2

    def round_step(self, round_to: int, keep: int | None = None) -> int:
        """Number of classes to keep together so every source keeps a multiple of round_to.

        In a grouped convolution every conv group is its own matrix product, as wide as the
        classes kept: 12 channels per conv group waste vector lanes just as a 12-channel layer
        does, however wide the whole layer is. So when ``keep`` (the classes about to be kept)
        leaves every conv group at least round_to channels, each conv group keeps a multiple
        of round_to."""
        step = 1
        for m in self.atoms_per_class.values():
            need = round_to // math.gcd(round_to, max(1, m))
            step = step * need // math.gcd(step, need)
        if self.spans_conv_groups and keep is not None and keep >= round_to:
            step = step * round_to // math.gcd(step, round_to)
        return step

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "channels": self.size,
            "fixed_channels": self.fixed_channels,
            "sources": list(self.sources),
            "exact": self.exact,
            "members": [f"{t}:{r}" for _, t, r in self.members],
            "kept_because": list(self.kept_reasons),
        }


def model_signature(model: nn.Module) -> str:
    """Hash of parameter/buffer names and shapes: a plan only replays on this architecture."""
    h = hashlib.sha256()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(f"{name}:{tuple(t.shape)};".encode())
    return h.hexdigest()[:16]


class Graph:
    """Channel dependency graph of a model (see ``edgeprune.graph.trace``)."""

    def __init__(self, model: nn.Module, gm, analysis, example_inputs, attention: str, kwargs=None):
        self.model = model
        self.gm = gm  # the captured fx.Graph
        self.analysis = analysis
        self.attention = attention
        self.example_inputs = tuple(example_inputs)
        self.example_kwargs = dict(kwargs or {})
        self.warnings = list(analysis.warnings)
        self.signature = model_signature(model)
        self.slices = list(analysis.slices.values())
        self._roots = analysis.atoms.roots()
        self._build()

    # -- construction -------------------------------------------------------------------------
    def _build(self) -> None:
        an, roots = self.analysis, self._roots
        n_atoms = len(roots)
        sources = an.sources
        parent = list(range(len(sources)))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        owner_of_root: dict = {}
        src_roots = []
        for si, (_, _, ids) in enumerate(sources):
            r = np.unique(roots[ids])
            r = r[r != FIXED]
            src_roots.append(r)
            for root in r.tolist():
                other = owner_of_root.setdefault(root, si)
                if other != si:
                    a, b = find(si), find(other)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
        comps: dict = {}
        for si in range(len(sources)):
            comps.setdefault(find(si), []).append(si)
        self._root_group = np.full(n_atoms, -1, dtype=np.int64)
        self._root_class = np.full(n_atoms, -1, dtype=np.int64)
        atom_src = np.full(n_atoms, -1, dtype=np.int64)
        self._groups: list = []
        src_group = np.zeros(len(sources), dtype=np.int64)
        grouped = np.unique(roots[np.concatenate(an.conv_grouped)]) if an.conv_grouped else np.zeros(0, np.int64)
        for gi, members in enumerate(sorted(comps.values(), key=lambda m: m[0])):
            rs = np.unique(np.concatenate([src_roots[s] for s in members])) if members else np.zeros(0, np.int64)
            per = {}
            fixed = 0
            for s in members:
                name, _, ids = sources[s]
                atom_src[ids] = s
                src_group[s] = gi
                r = roots[ids]
                fixed += int((r == FIXED).sum())
                _, counts = np.unique(r[r != FIXED], return_counts=True)
                per[name] = int(counts.max()) if counts.size else 1
            g = ChannelGroup(
                id=sources[members[0]][0],
                sources=[sources[s][0] for s in members],
                members=[],
                roots=rs,
                fixed_channels=fixed,
                atoms_per_class=per,
                spans_conv_groups=bool(np.isin(rs, grouped).any()),
            )
            self._root_group[rs] = gi
            self._root_class[rs] = np.arange(len(rs))
            self._groups.append(g)
        self._member_slices: list = [[] for _ in self._groups]
        for si, s in enumerate(self.slices):
            gs = np.unique(self._root_group[roots[s.ids]])
            for gi in gs[gs >= 0].tolist():
                self._groups[gi].members.append((s.kind, s.target, s.role))
                self._member_slices[gi].append(si)
        for ids, reason in an.inexact:
            gs = np.unique(self._root_group[roots[ids]])
            for gi in gs[gs >= 0].tolist():
                g = self._groups[gi]
                g.exact = False
                if reason not in g.inexact_reasons and len(g.inexact_reasons) < 5:
                    g.inexact_reasons.append(reason)
        for ids, reason in an.fixed:
            srcs = np.unique(atom_src[ids[ids < n_atoms]])
            for si in srcs[srcs >= 0].tolist():
                g = self._groups[src_group[si]]
                if reason not in g.kept_reasons and len(g.kept_reasons) < 5:
                    g.kept_reasons.append(reason)
        self._by_id = {g.id: g for g in self._groups}

    # -- queries ------------------------------------------------------------------------------
    def groups(self) -> list:
        return list(self._groups)

    def group(self, gid: str) -> ChannelGroup:
        try:
            return self._by_id[gid]
        except KeyError:
            raise KeyError(f"no channel group {gid!r}; groups: {', '.join(list(self._by_id)[:6])}...") from None

    def class_of_positions(self, ids: np.ndarray):
        """(group index, class index) per position; -1 for channels that are never removed."""
        r = self._roots[ids]
        return self._root_group[r], self._root_class[r]

    def member_classes(self, gid: str) -> list:
        """For each member slice of group ``gid`` whose every position belongs to that group, the
        class of each position: what a keep mask over the group leaves of that layer's axis."""
        gi = self._groups.index(self.group(gid))
        out = []
        for si in self._member_slices[gi]:
            grp, cls = self.class_of_positions(np.ravel(self.slices[si].ids))
            if grp.size and (grp == gi).all():
                out.append(cls)
        return out

    def pinned(self) -> list:
        """Every group with channels that are never removed: group, layers, how many, and why."""
        out = []
        for g in self._groups:
            if not g.fixed_channels:
                continue
            reasons = g.kept_reasons or ["tied to channels kept elsewhere (a residual stream or a pinned layer)"]
            out.append(
                {
                    "group": g.id,
                    "layers": sorted({t for _, t, _ in g.members} | set(g.sources)),
                    "channels": g.fixed_channels,
                    "reason": "; ".join(reasons),
                }
            )
        return out

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name) if name else self.model

    # -- plans --------------------------------------------------------------------------------
    def keep_entries(self, keep: dict) -> tuple:
        """keep: group id -> bool array over its classes. Returns (modules, params, attrs, groups)."""
        root_keep = np.ones(len(self._roots), dtype=bool)
        summary = []
        for g in self._groups:
            k = keep.get(g.id)
            if k is None:
                summary.append({"id": g.id, "channels": g.size, "kept": g.size})
                continue
            k = np.asarray(k, dtype=bool)
            if k.shape != (g.size,):
                raise ValueError(f"group {g.id}: keep mask has {k.shape[0]} entries, group has {g.size} channels")
            if g.size and not k.any():
                raise ValueError(f"group {g.id}: cannot remove every channel")
            root_keep[g.roots[~k]] = False
            summary.append({"id": g.id, "channels": g.size, "kept": int(k.sum())})
        keep_atom = root_keep[self._roots]
        modules: dict = {}
        params: list = []
        for s in self.slices:
            k = keep_atom[s.ids]
            if k.all():
                continue
            kept = np.nonzero(k)[0].tolist()
            if s.kind == "module":
                modules.setdefault(s.target, {})[s.role] = kept
            else:
                params.append({"name": s.target, "axis": int(s.role[4:]), "keep": kept})
        fixes: dict = {}
        for af in self.analysis.attr_fixes:
            k = keep_atom[af.ids]
            others = tuple(a for a in range(k.ndim) if a != af.axis)
            value = int(np.any(k, axis=others).sum())
            prev = fixes.setdefault((af.module, af.attr), value)
            if prev != value:
                raise ValueError(
                    f"{af.module}.{af.attr} would need two values ({prev} and {value}); "
                    "its views disagree, so the plan cannot be made"
                )
        attrs = [{"module": m, "attr": a, "value": v} for (m, a), v in fixes.items() if v != getattr(self.module(m), a)]
        return modules, params, attrs, summary


def _spec(t: torch.Tensor, name: str | None = None) -> dict:
    d = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
    if name is not None:
        d["name"] = name
    return d


def input_specs(example_inputs, kwargs=None) -> list:
    """Shapes and dtypes of the tensor inputs; keyword inputs carry their name."""
    specs = [_spec(t) for t in example_inputs if isinstance(t, torch.Tensor)]
    return specs + [_spec(t, k) for k, t in (kwargs or {}).items() if isinstance(t, torch.Tensor)]


def inputs_from_specs(specs) -> tuple:
    """Positional inputs of zeros (ones for an integer mask: a zero mask hides every token)."""
    return inputs_and_kwargs_from_specs(specs)[0]


def inputs_and_kwargs_from_specs(specs) -> tuple:
    args, kwargs = [], {}
    for s in specs:
        dtype = getattr(torch, str(s.get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"input spec dtype {s.get('dtype')!r} is not a torch dtype")
        name = s.get("name")
        fill = torch.ones if name and "mask" in name and not dtype.is_floating_point else torch.zeros
        t = fill(s["shape"], dtype=dtype)
        if name:
            kwargs[name] = t
        else:
            args.append(t)
    return tuple(args), kwargs
