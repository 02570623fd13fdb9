"""The import direction of docs/architecture.md, enforced.

Consumes: the source of every module under edgeprune/. Produces: a failure naming each import
that points upward (a lower layer importing a higher one), which is how cycles start.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "edgeprune"

# Lower number = lower layer. A module may import its own layer or lower ones.
# Leaves (rank 0) import nothing of ours but other leaves.
RANK = {
    "_version": 0,
    "_callable": 0,
    "fsutil": 0,
    "errors": 0,
    "_core": 0,
    "kernels": 0,
    "runtime": 0,
    "targets": 0,
    "report": 0,
    "estimate": 1,
    "data": 1,
    "distributed": 1,
    "checkpoint": 1,
    "models": 2,
    "io": 2,
    "graph": 3,
    "recover": 3,
    "prune": 4,
    "quant": 5,
    "export": 6,
    "bench": 7,
    "pipeline": 8,
    "cli": 9,
    "__init__": 10,
}

# Deliberate exceptions, each with its reason.
ALLOWED_UPWARD = {
    # ep.load rebuilds a pruned shape by replaying the stored plan; the import is function-local.
    ("io", "prune"),
    # building a model from a directory spec means loading what ep.save wrote.
    ("models", "io"),
}


def _top(module: Path) -> str:
    rel = module.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported_tops(tree: ast.AST, module: Path) -> set[str]:
    tops = set()
    rel_parts = module.relative_to(PACKAGE).parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "edgeprune" and len(parts) > 1:
                    tops.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "edgeprune":
                    continue
                if len(parts) > 1:
                    tops.add(parts[1])
                else:
                    tops.update(a.name for a in node.names)
            else:
                # resolve a relative import against the module's package
                base = list(rel_parts[:-1])
                up = node.level - 1
                base = base[: len(base) - up] if up else base
                target = base + ((node.module or "").split(".") if node.module else [])
                if target:
                    tops.add(target[0].removesuffix(".py"))
                else:
                    tops.update(a.name for a in node.names)
    return tops


def test_every_top_level_module_has_a_layer():
    tops = {_top(p) for p in PACKAGE.rglob("*.py")}
    missing = sorted(t for t in tops if t not in RANK)
    assert not missing, f"add these to RANK in {__file__}: {missing}"


def test_no_upward_imports():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _top(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        for other in _imported_tops(tree, path):
            if other not in RANK or other == me or (me, other) in ALLOWED_UPWARD:
                continue
            if RANK[other] > RANK[me]:
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports edgeprune.{other}")
    assert not bad, "imports against the layer order of docs/architecture.md:\n" + "\n".join(bad)


def test_every_module_has_a_docstring():
    missing = [
        str(p.relative_to(PACKAGE.parent))
        for p in sorted(PACKAGE.rglob("*.py"))
        if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert not missing, f"modules without a docstring saying what they consume and produce: {missing}"
