"""Device profiles: ``targets/*.toml`` -> frozen ``TargetProfile`` (docs/targets.md).

Consumes: a built-in profile name (``rpi4``, ``rpi5``, ``jetson-nano``, ``jetson-orin-nano``,
``x86-avx2``, ``x86-avx512-vnni``) or a path to a TOML file with the same schema.
Produces: ``TargetProfile`` with ``.name``, ``.description``, ``.cpu``, ``.memory``, ``.peak``,
``.gpu`` (or None), ``.deploy`` and ``.to_dict()``; ``names()`` lists the built-ins.

Validation is strict because a typo in a profile silently skews every latency estimate:
an unknown field, a missing field, a wrong type or a non-positive figure raises ValueError
naming the file and the dotted field, e.g. ``targets/x.toml: unknown field 'cpu.frq_ghz'``.

Built-in profiles are looked up in ``edgeprune/profiles/`` (where an installed wheel keeps
them) and else in the repository's ``targets/`` directory next to the package.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = ["TargetProfile", "CPU", "Memory", "Peak", "GPU", "Deploy", "load", "names", "profile_dirs", "PRECISIONS"]

PRECISIONS = ("int8", "fp16", "fp32")


@dataclass(frozen=True)
class CPU:
    arch: str
    uarch: str
    cores: int
    freq_ghz: float
    features: tuple[str, ...]
    qemu_cpu: str


@dataclass(frozen=True)
class Memory:
    ram_gb: float
    bandwidth_gbs: float


@dataclass(frozen=True)
class Peak:
    fp32_gflops_per_core: float
    int8_gops_per_core: float


@dataclass(frozen=True)
class GPU:
    name: str
    fp16_tflops: float
    int8_tops: float | None
    tensorrt: str


@dataclass(frozen=True)
class Deploy:
    formats: tuple[str, ...]
    precision: str
    channel_multiple: int
    runtimes: tuple[str, ...]


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    cpu: CPU
    memory: Memory
    peak: Peak
    gpu: GPU | None
    deploy: Deploy
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        for section in d.values():
            if isinstance(section, dict):
                for k, v in section.items():
                    if isinstance(v, tuple):
                        section[k] = list(v)
        return d

    @property
    def fp32_gflops(self) -> float:
        """Whole-CPU theoretical fp32 peak (all cores)."""
        return self.peak.fp32_gflops_per_core * self.cpu.cores

    @property
    def int8_gops(self) -> float:
        """Whole-CPU theoretical int8 peak (all cores)."""
        return self.peak.int8_gops_per_core * self.cpu.cores


# Schema: field -> (kind, required). kinds: "str", "int+", "num+", "strlist", "precision".
_SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "": {"name": ("str", True), "description": ("str", True)},
    "cpu": {
        "arch": ("str", True),
        "uarch": ("str", True),
        "cores": ("int+", True),
        "freq_ghz": ("num+", True),
        "features": ("strlist", True),
        "qemu_cpu": ("str", True),
    },
    "memory": {"ram_gb": ("num+", True), "bandwidth_gbs": ("num+", True)},
    "peak": {"fp32_gflops_per_core": ("num+", True), "int8_gops_per_core": ("num+", True)},
    "gpu": {
        "name": ("str", True),
        "fp16_tflops": ("num+", True),
        "int8_tops": ("num+", False),
        "tensorrt": ("str", True),
    },
    "deploy": {
        "formats": ("strlist", True),
        "precision": ("precision", True),
        "channel_multiple": ("int+", True),
        "runtimes": ("strlist", True),
    },
}
_SECTIONS_REQUIRED = {"cpu", "memory", "peak", "deploy"}
_KIND_TEXT = {
    "str": "a string",
    "int+": "a positive integer",
    "num+": "a positive number",
    "strlist": "a list of strings",
    "precision": f"one of {', '.join(PRECISIONS)}",
}


def _check(value: Any, kind: str, where: str, field: str) -> Any:
    def bad(got: str = ""):
        got = got or f"{type(value).__name__} {value!r}"
        return ValueError(f"{where}: field '{field}' must be {_KIND_TEXT[kind]}, got {got}")

    if kind in ("str", "precision"):
        if not isinstance(value, str) or not value.strip():
            raise bad()
        if kind == "precision" and value not in PRECISIONS:
            raise bad()
        return value
    if kind == "strlist":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad()
        return tuple(value)
    # numbers; bool is an int subclass in Python and never a valid figure
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad()
    if kind == "int+" and not isinstance(value, int):
        raise bad()
    if not value > 0:
        raise bad(f"{value!r} (figures must be > 0)")
    return float(value) if kind == "num+" else int(value)


def _validate(raw: dict[str, Any], where: str) -> TargetProfile:
    for key, value in raw.items():
        if key in _SCHEMA[""]:
            continue
        if key not in _SCHEMA:
            raise ValueError(f"{where}: unknown field '{key}'")
        if not isinstance(value, dict):
            raise ValueError(f"{where}: field '{key}' must be a table ([{key}]), got {type(value).__name__}")
    sections: dict[str, dict[str, Any]] = {}
    for section, fields in _SCHEMA.items():
        table = raw if section == "" else raw.get(section)
        if table is None:
            if section in _SECTIONS_REQUIRED:
                raise ValueError(f"{where}: missing field '{section}' (a [{section}] table)")
            continue
        prefix = f"{section}." if section else ""
        if section:
            unknown = [k for k in table if k not in fields]
            if unknown:
                raise ValueError(f"{where}: unknown field '{prefix}{unknown[0]}'")
        out: dict[str, Any] = {}
        for fname, (kind, required) in fields.items():
            if fname not in table:
                if required:
                    raise ValueError(f"{where}: missing field '{prefix}{fname}'")
                out[fname] = None
                continue
            out[fname] = _check(table[fname], kind, where, prefix + fname)
        sections[section] = out
    top = sections[""]
    return TargetProfile(
        name=top["name"],
        description=top["description"],
        cpu=CPU(**sections["cpu"]),
        memory=Memory(**sections["memory"]),
        peak=Peak(**sections["peak"]),
        gpu=GPU(**sections["gpu"]) if "gpu" in sections else None,
        deploy=Deploy(**sections["deploy"]),
        source=where,
    )


def profile_dirs() -> list[Path]:
    """Directories searched for built-in profiles, in order."""
    pkg = Path(__file__).resolve().parent
    dirs = [pkg / "profiles", pkg.parent / "targets"]
    return [d for d in dirs if d.is_dir()]


def names() -> list[str]:
    """Names of the built-in profiles (first directory wins on duplicates)."""
    found: dict[str, None] = {}
    for d in profile_dirs():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, None)
    return sorted(found)


def load_file(path: str | os.PathLike) -> TargetProfile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: cannot read ({e})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{p}: invalid TOML ({e})") from None
    return _validate(raw, str(p))


def load(name_or_path: str | os.PathLike | TargetProfile) -> TargetProfile:
    """A built-in profile by name, or a profile TOML file by path (ValueError if neither)."""
    if isinstance(name_or_path, TargetProfile):
        return name_or_path
    s = str(name_or_path)
    if s.endswith(".toml") or os.sep in s or Path(s).is_file():
        return load_file(s)
    for d in profile_dirs():
        p = d / f"{s}.toml"
        if p.is_file():
            return load_file(p)
    raise ValueError(
        f"unknown target {s!r}; built-in targets: {', '.join(names()) or 'none found'} "
        "(or pass the path of a .toml profile)"
    )
