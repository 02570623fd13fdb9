"""The import direction of docs/architecture.md, enforced, and a library free of CLI code.

Consumes: the source of every module under edgeprune/. Produces: a failure naming each import
that points upward (a lower layer importing a higher one, also through
``importlib.import_module("edgeprune....")`` strings), which is how cycles start, and each use of
argparse, rich, ``print`` or ``sys.exit`` outside edgeprune/cli/ (library code returns values
and raises; the CLI prints), and each function longer than the house limits (100 lines anywhere,
80 in pipeline.py, whose build is a chain of small stages).
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
    "modcopy": 0,
    "errors": 0,
    "limits": 0,
    "_core": 0,
    "kernels": 0,
    "runtime": 0,
    "targets": 0,
    "_bench_runner": 0,
    "progress": 0,
    "report": 0,
    "estimate": 1,
    "calibrate": 1,
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
    "remote": 7,
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


def _top(module: Path, package: Path = PACKAGE) -> str:
    rel = module.relative_to(package)
    return rel.parts[0].removesuffix(".py")


def _string_import(node: ast.AST) -> str | None:
    """The module named by ``importlib.import_module("...")`` / ``import_module("...")``, if literal."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    arg = node.args[0]
    if name == "import_module" and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _imported_tops(tree: ast.AST, module: Path, package: Path = PACKAGE) -> set[str]:
    tops = set()
    rel_parts = module.relative_to(package).parts
    for node in ast.walk(tree):
        target = _string_import(node)
        if target is not None:
            parts = target.split(".")
            if parts[0] == "edgeprune" and len(parts) > 1:
                tops.add(parts[1])
        elif isinstance(node, ast.Import):
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


def upward_imports(package: Path = PACKAGE) -> list[str]:
    bad = []
    for path in sorted(package.rglob("*.py")):
        me = _top(path, package)
        tree = ast.parse(path.read_text(), filename=str(path))
        for other in _imported_tops(tree, path, package):
            if other not in RANK or other == me or (me, other) in ALLOWED_UPWARD:
                continue
            if RANK[other] > RANK[me]:
                bad.append(f"{path.relative_to(package.parent)} imports edgeprune.{other}")
    return bad


def test_no_upward_imports():
    bad = upward_imports()
    assert not bad, "imports against the layer order of docs/architecture.md:\n" + "\n".join(bad)


# CLI code: these modules (top-level names) and calls belong to edgeprune/cli/ only.
CLI_MODULES = {"argparse", "rich"}

# Library files that still draw on the terminal, each with its reason. The list only shrinks:
# a file not named here fails on its first argparse / rich / print / sys.exit.
CLI_USE_ALLOWED = {
    # a process entry point: the isolated benchmark worker reports to its parent on stdout
    "edgeprune/bench.py": {"print", "sys.exit"},
    # the self-contained runner bench copies to a device and runs as a script (JSON on stdout, exit code)
    "edgeprune/_bench_runner.py": {"print", "sys.exit"},
    # a maintainer script (python -m edgeprune.data.make_digits) that regenerates the shipped data
    "edgeprune/data/make_digits.py": {"argparse", "print", "sys.exit"},
}


def _cli_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each argparse/rich import, ``print(...)`` and ``sys.exit(...)`` in ``tree``."""
    uses = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif _string_import(node) is not None:
            names = [_string_import(node)]
        for name in names:
            if name.split(".")[0] in CLI_MODULES:
                uses.append((node.lineno, name.split(".")[0]))
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id == "print":
                uses.append((node.lineno, "print"))
            elif isinstance(f, ast.Attribute) and f.attr == "exit" and getattr(f.value, "id", None) == "sys":
                uses.append((node.lineno, "sys.exit"))
    return uses


def cli_code_outside_cli(package: Path = PACKAGE, allowed=None) -> list[str]:
    allowed = CLI_USE_ALLOWED if allowed is None else allowed
    bad = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).as_posix()
        if _top(path, package) == "cli":
            continue
        for line, what in _cli_uses(ast.parse(path.read_text(), filename=str(path))):
            if what not in allowed.get(rel, ()):
                bad.append(f"{rel}:{line} uses {what}")
    return bad


def test_library_has_no_cli_code():
    bad = cli_code_outside_cli()
    assert not bad, "CLI code below edgeprune/cli/ (return values or raise UserError instead):\n" + "\n".join(bad)


def test_the_allowed_cli_uses_are_still_there():
    # an entry whose use is gone must leave the list, so the list cannot hide a new use later
    stale = []
    for rel, whats in CLI_USE_ALLOWED.items():
        path = PACKAGE.parent / rel
        found = {w for _, w in _cli_uses(ast.parse(path.read_text()))} if path.is_file() else set()
        stale += [f"{rel}: {w}" for w in sorted(whats - found)]
    assert not stale, f"remove from CLI_USE_ALLOWED: {stale}"


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "edgeprune"
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_the_checks_catch_cli_code_and_string_imports(tmp_path):
    pkg = _fake_package(
        tmp_path,
        {
            "prune/bad.py": '"""x"""\nimport argparse\n',
            "prune/noisy.py": '"""x"""\nimport sys\n\n\ndef f():\n    print("hi")\n    sys.exit(1)\n',
            "cli/ok.py": '"""x"""\nimport argparse\nprint("fine here")\n',
            "graph/up.py": '"""x"""\nimport importlib\nimportlib.import_module("edgeprune.pipeline")\n',
        },
    )
    assert cli_code_outside_cli(pkg, allowed={}) == [
        "edgeprune/prune/bad.py:2 uses argparse",
        "edgeprune/prune/noisy.py:6 uses print",
        "edgeprune/prune/noisy.py:7 uses sys.exit",
    ]
    assert upward_imports(pkg) == ["edgeprune/graph/up.py imports edgeprune.pipeline"]


def test_every_module_has_a_docstring():
    missing = [
        str(p.relative_to(PACKAGE.parent))
        for p in sorted(PACKAGE.rglob("*.py"))
        if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert not missing, f"modules without a docstring saying what they consume and produce: {missing}"


# Function length, counted from ``def`` to the last line of the body (docstring included).
MAX_FUNCTION_LINES = 100
MAX_PIPELINE_FUNCTION_LINES = 80


def long_functions(package: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES, only: str | None = None) -> list[str]:
    """``path:line name (N lines)`` for each function (or method) of ``package`` over ``limit`` lines;
    ``only``: just that file (relative to the package)."""
    paths = [package / only] if only else sorted(package.rglob("*.py"))
    bad = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    bad.append(f"{path.relative_to(package.parent).as_posix()}:{node.lineno} {node.name} ({n} lines)")
    return bad


def test_no_function_over_100_lines():
    bad = long_functions()
    assert not bad, f"split these into smaller functions (at most {MAX_FUNCTION_LINES} lines):\n" + "\n".join(bad)


def test_pipeline_functions_stay_small():
    bad = long_functions(limit=MAX_PIPELINE_FUNCTION_LINES, only="pipeline.py")
    assert not bad, f"pipeline.py stages are at most {MAX_PIPELINE_FUNCTION_LINES} lines:\n" + "\n".join(bad)


def _function_source(header: str, lines: int, indent: str = "") -> str:
    """``header`` (``def f():``) and a body making the function ``lines`` long."""
    return f"{indent}{header}\n" + "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 1))


def test_the_length_check_counts_every_function(tmp_path):
    pkg = _fake_package(
        tmp_path,
        {
            "fits.py": _function_source("def f():", 100),
            "long.py": "class C:\n" + _function_source("async def m(self):", 101, indent="    "),
        },
    )
    assert long_functions(pkg) == ["edgeprune/long.py:2 m (101 lines)"]
    assert long_functions(pkg, limit=99) == ["edgeprune/fits.py:1 f (100 lines)", "edgeprune/long.py:2 m (101 lines)"]
