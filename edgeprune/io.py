"""Save and load models as directories, with no pickled classes (docs/architecture.md, Specs).

Consumes (save): an ``nn.Module`` built from a spec (it carries ``edgeprune_spec``), an optional
``PrunePlan`` (or list of plans, applied in order), optional masks ``{name: bool tensor}`` and
JSON metadata.
Produces: a directory, written atomically (``edgeprune.fsutil.atomic_dir``), holding
  ``model.json``  format, version, spec, build kwargs, input_shape, plan(s), metadata, files;
  ``weights.pt``  the state_dict (tensors only: loadable with ``torch.load(weights_only=True)``);
  ``masks.pt``    the masks, if any.
``load(path)`` rebuilds the spec, replays the stored plan(s) through ``edgeprune.prune.apply``
(imported inside the function: io sits below prune in the layer order), loads the weights, and
returns the module with ``edgeprune_masks`` / ``edgeprune_plan`` / ``edgeprune_metadata`` set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .fsutil import atomic_dir

FORMAT = "edgeprune-model"
FORMAT_VERSION = 1

__all__ = ["save", "load", "read_manifest", "FORMAT", "FORMAT_VERSION"]


def _plan_to_dict(plan) -> Any:
    if plan is None or isinstance(plan, dict):
        return plan
    if isinstance(plan, (list, tuple)):
        return [_plan_to_dict(p) for p in plan]
    if hasattr(plan, "to_dict"):
        return plan.to_dict()
    raise ValueError(f"plan must be a PrunePlan (with .to_dict()), a dict or a list of them, got {type(plan).__name__}")


def save(
    model: nn.Module,
    path: str | os.PathLike,
    plan=None,
    masks: Mapping[str, torch.Tensor] | None = None,
    metadata: Mapping[str, Any] | None = None,
    spec: str | None = None,
) -> Path:
    """Write ``model`` to the directory ``path`` (replaced atomically if it exists).

    ``spec`` defaults to ``model.edgeprune_spec``; ``plan`` to ``model.edgeprune_plan`` and
    ``masks`` to ``model.edgeprune_masks`` when the model came from ``load`` (so re-saving keeps
    them). A pruned model must be saved with the plan that made it, or its weights will not
    fit the rebuilt spec.
    """
    from .models.spec import normalize_spec  # io and models share a layer; models imports io lazily too

    spec = spec or getattr(model, "edgeprune_spec", None)
    if not spec:
        raise ValueError(
            f"ep.save needs a model built from a spec ({type(model).__name__} has no edgeprune_spec): build it with "
            "ep.models.build('package.module:factory' or 'file.py:factory') or pass spec='...'"
        )
    spec = normalize_spec(spec)
    if plan is None:
        plan = getattr(model, "edgeprune_plan", None)
    if masks is None:
        masks = getattr(model, "edgeprune_masks", None)
    plan_d = _plan_to_dict(plan)
    try:
        meta = json.loads(json.dumps(dict(metadata or {})))
    except TypeError as e:
        raise ValueError(f"metadata must be JSON-serializable: {e}") from None
    kwargs = dict(getattr(model, "edgeprune_build_kwargs", {}) or {})
    try:
        json.dumps(kwargs)
    except TypeError as e:
        raise ValueError(
            f"the model's build kwargs are not JSON-serializable ({e}); rebuild it with plain values"
        ) from None
    input_shape = getattr(model, "input_shape", None)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "edgeprune_version": __version__,
        "spec": spec,
        "build_kwargs": kwargs,
        "input_shape": list(input_shape) if input_shape is not None else None,
        "plan": plan_d,
        "metadata": meta,
        "num_params": int(sum(p.numel() for p in model.parameters())),
        "files": {"weights": "weights.pt", **({"masks": "masks.pt"} if masks else {})},
    }
    with atomic_dir(path) as tmp:
        torch.save(state, tmp / "weights.pt")
        if masks:
            torch.save({str(k): torch.as_tensor(v).detach().cpu().bool() for k, v in masks.items()}, tmp / "masks.pt")
        (tmp / "model.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return Path(path)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``model.json`` of a saved model directory (ValueError naming the problem)."""
    p = Path(path)
    mj = p / "model.json"
    if not p.is_dir():
        raise ValueError(f"{p}: not a directory written by ep.save")
    if not mj.is_file():
        raise ValueError(f"{p}: no model.json (not a directory written by ep.save)")
    try:
        m = json.loads(mj.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{mj}: invalid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ValueError(f"{mj}: not an edgeprune model manifest (format != {FORMAT!r})")
    if not isinstance(m.get("version"), int) or m["version"] > FORMAT_VERSION:
        raise ValueError(
            f"{mj}: format version {m.get('version')!r} is newer than this edgeprune supports "
            f"({FORMAT_VERSION}); upgrade edgeprune"
        )
    if not isinstance(m.get("spec"), str):
        raise ValueError(f"{mj}: missing field 'spec'")
    return m


def load(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved in ``path`` (see the module docstring); returns it in eval mode."""
    from .models.spec import build

    p = Path(path)
    m = read_manifest(p)
    model = build(m["spec"], **(m.get("build_kwargs") or {}))
    plans = m.get("plan")
    if plans is not None:
        from edgeprune.prune import PrunePlan, apply  # function-local: prune is a higher layer

        plan_objs = [PrunePlan.from_dict(d) for d in (plans if isinstance(plans, list) else [plans])]
        for plan_obj in plan_objs:
            model = apply(model, plan_obj)
        model.edgeprune_plan = plan_objs if isinstance(plans, list) else plan_objs[0]
    model.edgeprune_spec = m["spec"]
    model.edgeprune_build_kwargs = dict(m.get("build_kwargs") or {})
    if m.get("input_shape") is not None:
        model.input_shape = tuple(m["input_shape"])
    weights = p / m.get("files", {}).get("weights", "weights.pt")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{weights}: missing (the saved model directory is incomplete)") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        hint = " (was the model pruned and saved without its plan?)" if plans is None else ""
        raise ValueError(
            f"{weights}: does not fit the model built from {m['spec']!r}{hint}: {str(e).splitlines()[0]}"
        ) from None
    masks_file = m.get("files", {}).get("masks")
    if masks_file:
        model.edgeprune_masks = torch.load(p / masks_file, map_location="cpu", weights_only=True)
    model.edgeprune_metadata = m.get("metadata") or {}
    model.eval()
    return model
