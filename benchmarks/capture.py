"""Capture coverage: which capture path (torch.fx, torch.export, eager recording) handles which model.

Consumes: the test zoo (tests/python/zoo.py), the peer-style op models (tests/python/test_graph_peer.py),
tiny random-weight transformers models (tests/python/test_hf.py), and torchvision's and timm's
classifiers where those import (the side environment of ``make zoo``). Produces: one JSON row per
(model, path): captured or the first line of the error, whether ratio 0 is exact (max diff <= 1e-5),
the parameter fraction kept at ratio 0.5 (round_to 1, per-layer ratio) and the capture + plan
seconds; then a per-path summary row. ``capture="auto"`` tries the paths in the order that covers most.

Usage: python benchmarks/capture.py [--json build/bench-capture.json] [--only zoo peer hf torchvision timm]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# this directory's kernels.py would shadow the `kernels` package transformers probes for
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "python"))

import edgeprune.graph as epg  # noqa: E402
import edgeprune.prune as epp  # noqa: E402

PATHS = ("fx", "export", "eager")
TORCHVISION = ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5", "densenet121")
TORCHVISION += ("convnext_tiny", "regnet_x_400mf", "squeezenet1_1", "mnasnet0_5", "googlenet", "vit_b_16", "swin_t")
TIMM = ("resnet18", "convnext_atto", "efficientnet_b0", "regnetx_002", "mobilevit_xxs", "deit_tiny_patch16_224")


def _zoo():
    from zoo import ZOO, build

    return {f"zoo/{n}": (lambda n=n: build(n)[0], ZOO[n][1]) for n in ZOO}


def _peer():
    from test_graph_peer import MODELS

    return {f"peer/{n}": (cls, make) for n, (cls, make, _) in MODELS.items()}


def _hf():
    try:
        from test_hf import MODELS, _build, _inputs
    except Exception:  # transformers missing
        return {}
    return {f"hf/{n}": (lambda n=n: _build(n), lambda n=n: _inputs(n)) for n in MODELS}


def _torchvision():
    try:
        import torchvision
    except Exception:
        return {}
    size = {"vit_b_16": 224, "swin_t": 224, "googlenet": 224}
    return {
        f"torchvision/{n}": (
            lambda n=n: torchvision.models.get_model(n, weights=None, num_classes=10),
            lambda n=n: torch.randn(1, 3, size.get(n, 64), size.get(n, 64)),
        )
        for n in TORCHVISION
    }


def _timm():
    try:
        import timm
    except Exception:
        return {}
    return {
        f"timm/{n}": (
            lambda n=n: timm.create_model(n, pretrained=False, num_classes=10),
            lambda n=n: torch.randn(1, 3, *(2 * (224 if "patch" in n else 64,))),  # ViTs fix their size
        )
        for n in TIMM
    }


SOURCES = {"zoo": _zoo, "peer": _peer, "hf": _hf, "torchvision": _torchvision, "timm": _timm}


def _outputs(out) -> list:
    flat: list = []
    if isinstance(out, torch.Tensor):
        flat.append(out)
    elif isinstance(out, dict):
        for v in out.values():
            flat += _outputs(v)
    elif isinstance(out, (list, tuple)):
        for v in out:
            flat += _outputs(v)
    return flat


def _call(model, x):
    args, kwargs = epg.split_inputs(x)
    with torch.no_grad():
        return _outputs(model(*args, **kwargs))


def one(model, x, path: str) -> dict:
    row = {"path": path}
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = epg.trace(model, x, capture=path)
            same = epp.apply(model, epp.plan(model, x, ratio=0.0, graph=graph))
            small = epp.apply(model, epp.plan(model, x, ratio=0.5, round_to=1, global_ranking=False, graph=graph))
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
        return row
    row["seconds"] = round(time.perf_counter() - t, 2)
    diff = max(float((a - b).abs().max()) for a, b in zip(_call(model, x), _call(same, x)))
    row["ratio0_exact"] = diff <= 1e-5
    n0 = sum(p.numel() for p in model.parameters())
    row["kept_params_at_0.5"] = round(sum(p.numel() for p in small.parameters()) / n0, 3)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--only", nargs="+", choices=sorted(SOURCES))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for source in args.only or list(SOURCES):
        for name, (factory, make) in SOURCES[source]().items():
            for path in PATHS:
                torch.manual_seed(0)
                model, x = factory().eval(), make()
                row = {"model": name, **one(model, x, path)}
                rows.append(row)
                status = row.get("error") or f"ok exact={row['ratio0_exact']} kept={row['kept_params_at_0.5']}"
                print(f"{name:>32} {path:>6}: {status}", file=sys.stderr)
    for path in PATHS:
        mine = [r for r in rows if r.get("path") == path]
        ok = [r for r in mine if "error" not in r]
        rows.append(
            {
                "summary": path,
                "captured": len(ok),
                "exact_at_0": sum(r["ratio0_exact"] for r in ok),
                "of": len(mine),
            }
        )
    models = sorted({r["model"] for r in rows if "model" in r})
    for order in (("fx", "export", "eager"), ("export", "fx", "eager"), ("export", "eager"), ("fx", "eager")):
        covered = sum(any(_ok(rows, m, p) for p in order) for m in models)
        rows.append({"summary_order": list(order), "covered": covered, "of": len(models)})
    if args.json:
        from edgeprune.fsutil import write_json

        write_json(args.json, rows)
    for r in rows:
        if "model" not in r:
            print(r, file=sys.stderr)
    return 0


def _ok(rows, model, path) -> bool:
    return any(r.get("model") == model and r.get("path") == path and r.get("ratio0_exact") for r in rows)


if __name__ == "__main__":
    sys.exit(main())
