"""Replay a ``PrunePlan`` on a model.

Consumes: an ``nn.Module`` of the architecture the plan was made for and the plan. Produces: a
new, physically smaller module (the input is left untouched) carrying the input's
``edgeprune_spec`` / ``edgeprune_build_kwargs`` / ``input_shape`` attributes, ``edgeprune_plan_hash``
and ``edgeprune_plan`` (the chain of plans from the spec to this shape, which ``ep.save`` stores by
default). Tied parameters stay tied. A ``transformers`` model also gets its head attributes and
config synced (``hf.py``; notes on what its config cannot state in ``edgeprune_notes``).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from ..graph import model_signature
from ..graph.groups import inputs_and_kwargs_from_specs
from ..graph.surgery import prune_module, slice_param
from ..modcopy import copy_model
from . import hf
from .plan import PlanError, as_plan_list


def _retie(model: nn.Module, new: nn.Module) -> None:
    """Parameters shared in ``model`` (tied embeddings) stay one parameter in ``new``: surgery
    replaces a parameter per module, so every other owner gets the first owner's cut tensor."""
    owners: dict = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(name)
    for names in owners.values():
        if len(names) < 2:
            continue
        first = new.get_parameter(names[0])
        for name in names[1:]:
            mod_name, _, attr = name.rpartition(".")
            mod = new.get_submodule(mod_name) if mod_name else new
            if getattr(mod, attr) is not first and getattr(mod, attr).shape == first.shape:
                setattr(mod, attr, first)


def _plan_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name) if name else model
    except AttributeError:
        raise PlanError(f"prune plan names layer {name!r}, which this model does not have") from None


def _check_param_entry(model: nn.Module, p: dict) -> None:
    """A plan's ``params`` entry names a tensor of the model and an axis it has."""
    owner_name, _, attr = p["name"].rpartition(".")
    t = getattr(_plan_module(model, owner_name), attr, None) if attr.isidentifier() else None
    if not isinstance(t, torch.Tensor):
        raise PlanError(f"prune plan slices {p['name']!r}, which is not a parameter or buffer of this model")
    if not 0 <= int(p["axis"]) < t.dim():
        raise PlanError(f"prune plan slices {p['name']!r} on axis {p['axis']}, but it has {t.dim()} axes")


def apply(model: nn.Module, plan, verify: bool = True) -> nn.Module:
    from .plan import PrunePlan

    if isinstance(plan, dict):
        plan = PrunePlan.from_dict(plan)
    sig = model_signature(model)
    if plan.signature != sig:
        raise ValueError(
            f"prune plan {plan.hash} was made for another model (signature {plan.signature}, "
            f"this model {sig}); use the plan with the model it was made for"
        )
    new = copy_model(model)
    for name, roles in plan.modules.items():
        try:
            module = new.get_submodule(name) if name else new
        except AttributeError:
            raise ValueError(f"prune plan names layer {name!r}, which this model does not have") from None
        prune_module(module, roles, where=name)
    for p in plan.params:
        _check_param_entry(new, p)
        slice_param(new, p["name"], int(p["axis"]), p["keep"])
    for a in plan.attrs:
        module = _plan_module(new, a["module"])
        # a plan sets the integer sizes layers keep (out_channels, num_heads, ...): nothing else,
        # so a plan file cannot rebind methods, dunders or sub-modules
        current = getattr(module, a["attr"], None) if a["attr"].isidentifier() else None
        if a["attr"].startswith("_") or not isinstance(current, int) or isinstance(current, bool):
            raise PlanError(
                f"prune plan sets {a['module']}.{a['attr']}, which is not an integer size of that layer; "
                "write the plan again with `edgeprune prune`"
            )
        setattr(module, a["attr"], int(a["value"]))
    _retie(model, new)
    for attr in ("edgeprune_spec", "edgeprune_build_kwargs", "input_shape"):
        if hasattr(model, attr):
            setattr(new, attr, getattr(model, attr))
    if hf.is_hf(new):
        new.edgeprune_notes = hf.sync(new)
        for note in new.edgeprune_notes:  # a save_pretrained checkpoint of this model will not reload
            warnings.warn(note, stacklevel=2)
        hf.tag(new, model)
    new.edgeprune_plan_hash = plan.hash
    # the chain of plans that rebuilds this shape from the spec, so ep.save(new) needs no plan=
    prev = getattr(model, "edgeprune_plan", None)
    chain = as_plan_list(prev)
    new.edgeprune_plan = [*chain, plan] if chain else plan
    if verify and plan.inputs and not plan.empty:
        was = new.training
        new.eval()
        try:
            args, kwargs = inputs_and_kwargs_from_specs(plan.inputs)
            with torch.no_grad():
                new(*args, **kwargs)
        except Exception as e:
            raise ValueError(
                f"the pruned model fails on its example input ({type(e).__name__}: {e}); "
                "if the plan file was edited, write it again with `edgeprune prune`, else report this "
                "with the model definition"
            ) from e
        finally:
            new.train(was)
    return new
