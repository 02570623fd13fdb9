"""Save and load models as directories, with no pickled classes (docs/architecture.md, Specs).

Consumes (save): an ``nn.Module`` built from a spec (it carries ``edgeprune_spec``), an optional
``PrunePlan`` (or list of plans, applied in order), optional masks ``{name: bool tensor}`` and
JSON metadata.
Produces: a directory, written atomically (``edgeprune.fsutil.atomic_dir``), holding
  ``model.json``  format, version, spec, build kwargs, input_shape, plan(s), metadata, files,
                  and ``code``: {relative path: sha256} of the copied factory file, if any;
  ``weights.pt``  the state_dict (tensors only: loadable with ``torch.load(weights_only=True)``);
  ``masks.pt``    the masks, if any;
  ``code/F.py``   a copy of the factory file of a ``path/F.py:fn`` spec (the spec then names
                  ``code/F.py:fn``, so the directory can be moved or shared).
``load(path, trust_code=False)`` checks the spec before importing anything (only registered
factories run without ``trust_code``; see ``edgeprune.models.spec``), checks that every file the
manifest names lies inside the directory (no ``..``, no absolute path, no symlink) and that a
copied factory file still has its sha256, rebuilds the spec, replays the stored plan(s) through
``edgeprune.prune.apply`` (imported inside the function: io sits below prune in the layer
order), loads the weights (``weights_only=True``, no NaN/Inf), and returns the module with
``edgeprune_masks`` / ``edgeprune_plan`` / ``edgeprune_metadata`` set. Every problem with the
directory raises ``UserError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .errors import UserError, detail_line
from .fsutil import atomic_dir
from .limits import MAX_INPUT_ELEMENTS, input_shape_ok

FORMAT = "edgeprune-model"
FORMAT_VERSION = 1

__all__ = ["save", "load", "read_manifest", "FORMAT", "FORMAT_VERSION", "CODE_DIR"]

CODE_DIR = "code"


def _plan_to_dict(plan) -> Any:
    if plan is None or isinstance(plan, dict):
        return plan
    if isinstance(plan, (list, tuple)):
        return [_plan_to_dict(p) for p in plan]
    if hasattr(plan, "to_dict"):
        return plan.to_dict()
    raise ValueError(f"plan must be a PrunePlan (with .to_dict()), a dict or a list of them, got {type(plan).__name__}")


def _copy_code(spec: str, tmp: Path) -> tuple[str, dict[str, str]]:
    """For a ``path/F.py:fn`` spec: copy F.py into ``tmp/code`` and return (``code/F.py:fn``, {path: sha256})."""
    target, sep, name = spec.rpartition(":")
    if not (sep and target.endswith(".py")):
        return spec, {}
    src = Path(target)
    try:
        data = src.read_bytes()
    except OSError as e:
        raise UserError(f"model spec {spec!r}: cannot read the factory file ({e.strerror or e})") from None
    rel = f"{CODE_DIR}/{src.name}"
    (tmp / CODE_DIR).mkdir()
    (tmp / rel).write_bytes(data)
    return f"{rel}:{name}", {rel: hashlib.sha256(data).hexdigest()}


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
    fit the rebuilt spec. A ``file.py:fn`` factory is copied into the directory (``code/``).
    """
    from .models.spec import normalize_spec  # io and models share a layer; models imports io lazily too

    spec = spec or getattr(model, "edgeprune_spec", None)
    if not spec:
        raise UserError(
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
        raise UserError(f"metadata must be JSON-serializable: {e}") from None
    kwargs = dict(getattr(model, "edgeprune_build_kwargs", {}) or {})
    try:
        json.dumps(kwargs)
    except TypeError as e:
        raise UserError(
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
        manifest["spec"], code = _copy_code(spec, tmp)
        if code:
            manifest["code"] = code
        torch.save(state, tmp / "weights.pt")
        if masks:
            torch.save({str(k): torch.as_tensor(v).detach().cpu().bool() for k, v in masks.items()}, tmp / "masks.pt")
        (tmp / "model.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return Path(path)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``model.json`` of a saved model directory (UserError naming the problem)."""
    p = Path(path)
    mj = p / "model.json"
    if not p.is_dir():
        raise UserError(f"{p}: not a directory written by ep.save")
    if not mj.is_file():
        hint = ""
        if (p / "model" / "model.json").is_file():
            hint = f"; it holds a saved model in {p / 'model'}: pass that"
        raise UserError(f"{p}: no model.json (not a directory written by ep.save){hint}")
    if mj.is_symlink():
        raise UserError(f"{mj}: is a symlink; refused (a saved model's files must be inside its directory)")
    try:
        m = json.loads(mj.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # (ValueError: also a 5000-digit number)
        raise UserError(f"{mj}: invalid JSON ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    except OSError as e:
        raise UserError(f"{mj}: cannot read it ({e.strerror or e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise UserError(f"{mj}: not an edgeprune model manifest (format != {FORMAT!r})")
    version = m.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{mj}: format version {version!r} must be an integer >= 1; save the model again")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{mj}: format version {version!r} is newer than this edgeprune supports ({FORMAT_VERSION}); upgrade edgeprune"
        )
    if not isinstance(m.get("spec"), str):
        raise UserError(f"{mj}: missing field 'spec'")
    for key, kind in (("files", dict), ("code", dict), ("metadata", dict), ("input_shape", list)):
        if m.get(key) is not None and not isinstance(m[key], kind):
            raise UserError(f"{mj}: field {key!r} must be a JSON {'object' if kind is dict else 'array'}")
    shape = m.get("input_shape")
    if shape is not None and not input_shape_ok(shape):
        raise UserError(
            f"{mj}: input_shape {shape!r:.80} must list positive integers, {MAX_INPUT_ELEMENTS} elements at most"
        )
    return m


def inside(root: Path, rel: Any, where: Path, what: str) -> Path:
    """``root/rel`` if ``rel`` is a relative path that stays inside ``root`` through no symlink."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
        raise UserError(f"{where}: {what} {rel!r} is not a relative file name")
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts:
        raise UserError(f"{where}: {what} {rel!r} points outside the model directory; refused")
    cur = root
    for part in parts:
        cur = cur / part
        if cur.is_symlink():
            raise UserError(f"{where}: {what} {rel!r} is a symlink; refused (files must be inside the directory)")
    return cur


def _factory_from_dir(root: Path, m: dict, mj: Path, trust_code: bool):
    """The factory of a directory's spec, or None for registered specs; nothing runs before every check passed."""
    from .models.spec import check_kwargs, check_spec, resolve_factory

    spec = check_spec(m["spec"], trust_code, where=str(mj))
    kwargs = check_kwargs(spec, m.get("build_kwargs"), None, where=str(mj))  # before any import
    factory = resolve_factory(spec)
    if factory is not None:
        return spec, factory, check_kwargs(spec, kwargs, factory, where=str(mj))
    target, _, name = spec.rpartition(":")
    if not target.endswith(".py"):
        from .data import resolve_callable  # package.module:fn, trusted by the caller

        try:
            return spec, resolve_callable(spec, "model spec"), kwargs
        except ValueError as e:
            raise UserError(f"{mj}: {str(e).splitlines()[0]}") from None
    file = inside(root, target, mj, "spec file")
    want = (m.get("code") or {}).get(target)
    if not isinstance(want, str):
        raise UserError(f"{mj}: spec file {target!r} has no sha256 under 'code'; re-save the model with ep.save")
    try:
        source = file.read_bytes()
    except OSError as e:
        raise UserError(f"{file}: cannot read the model's factory file ({e.strerror or e})") from None
    if hashlib.sha256(source).hexdigest() != want:
        raise UserError(f"{file}: sha256 differs from model.json (the file changed after saving); refused")
    from .data import exec_file

    fn = getattr(exec_file(file.resolve(), source), name, None)
    if not callable(fn):
        raise UserError(f"{mj}: {target} has no callable {name!r}")
    return f"{file.resolve()}:{name}", fn, kwargs


def _replay_plans(model: nn.Module, plans, mj: Path) -> nn.Module:
    from edgeprune.prune import PrunePlan, apply  # function-local: prune is a higher layer

    try:
        plan_objs = [PrunePlan.from_dict(d) for d in (plans if isinstance(plans, list) else [plans])]
        for plan_obj in plan_objs:
            model = apply(model, plan_obj)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        raise UserError(f"{mj}: the stored plan does not apply to the model ({type(e).__name__}: {e})") from None
    model.edgeprune_plan = plan_objs if isinstance(plans, list) else plan_objs[0]
    return model


def load(path: str | os.PathLike, trust_code: bool = False) -> nn.Module:
    """Rebuild the model saved in ``path`` (see the module docstring); returns it in eval mode."""
    from .models.spec import _call, _tag, check_finite, check_size, is_trusted, torch_load

    p = Path(path)
    m = read_manifest(p)
    mj = p / "model.json"
    files = m.get("files") or {}
    weights = inside(p, files.get("weights", "weights.pt"), mj, "weights file")
    masks_file = files.get("masks")
    masks_path = inside(p, masks_file, mj, "masks file") if masks_file else None
    spec, factory, kwargs = _factory_from_dir(p, m, mj, trust_code)
    if not weights.is_file():
        raise UserError(f"{weights}: missing (the saved model directory is incomplete)")
    state = torch_load(weights)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{weights}: not a state_dict (a dict of tensors)")
    # a pruned model's weights are smaller than the model its spec builds, but not 1000x
    check_size(factory, m["spec"], kwargs, 1000 * sum(v.numel() for v in state.values()) + 10**7, mj)
    model = _tag(_call(factory, m["spec"], kwargs, registered=is_trusted(m["spec"])), spec, kwargs)
    plans = m.get("plan")
    if plans is not None:
        model = _replay_plans(model, plans, mj)
    if m.get("input_shape") is not None:
        model.input_shape = tuple(m["input_shape"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        hint = " (was the model pruned and saved without its plan?)" if plans is None else ""
        raise UserError(f"{weights}: does not fit the model built from {m['spec']!r}{hint}: {detail_line(e)}") from None
    check_finite(state, weights)
    if masks_path is not None:
        model.edgeprune_masks = torch_load(masks_path)
    model.edgeprune_metadata = m.get("metadata") or {}
    model.eval()
    return model
