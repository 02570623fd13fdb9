"""Device profiles: ``targets/*.toml`` -> frozen ``TargetProfile`` (docs/targets.md).

Consumes: a built-in profile name (``rpi4``, ``rpi5``, ``jetson-nano``, ``jetson-orin-nano``,
``x86-avx2``, ``x86-avx512-vnni``), an alias of one in any case (``jetson``, ``RPI``, ``pi4``:
see ``ALIASES``), ``host``/``auto`` (a profile for the machine this runs on, from
``/proc/cpuinfo``, ``/proc/device-tree/model``, ``/proc/meminfo`` and the sysfs cache sizes; a
recognised Raspberry Pi or Jetson maps to its built-in profile), or a path to a TOML file with
the same schema.
Produces: ``TargetProfile`` with ``.name``, ``.description``, ``.cpu``, ``.memory``, ``.peak``,
``.gpu`` (or None), ``.deploy``, the optional ``.cache`` and ``.efficiency`` (per-op-class
efficiencies fitted by ``edgeprune targets calibrate``, with ``.calibrated``) and
``.to_dict()``; ``names()`` lists the built-ins, ``resolve()`` says what a typed name means.

Validation is strict because a typo in a profile silently skews every latency estimate:
an unknown field, a missing field, a wrong type, a non-positive, infinite or out-of-range figure
(``_MAX``) raises TargetError (a UserError and ValueError)
naming the file and the dotted field, e.g. ``targets/x.toml: unknown field 'cpu.frq_ghz'``.

Built-in profiles are looked up in ``edgeprune/profiles/`` (where an installed wheel keeps
them) and else in the repository's ``targets/`` directory next to the package.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from .errors import UserError

__all__ = [
    "TargetProfile",
    "CPU",
    "Memory",
    "Peak",
    "GPU",
    "Deploy",
    "Cache",
    "Resolution",
    "load",
    "names",
    "resolve",
    "aliases",
    "detect_host",
    "to_toml",
    "profile_dirs",
    "PRECISIONS",
    "OP_CLASSES",
    "TargetError",
]

PRECISIONS = ("int8", "fp16", "fp32")
# The op classes an [efficiency] table may carry (edgeprune.estimate's layer kinds; "eltwise"
# is the fraction of the DRAM figure that memory-bound elementwise and pooling ops reach).
OP_CLASSES = ("conv", "pointwise", "depthwise", "fc", "act", "eltwise")


class TargetError(UserError):
    """An unknown target name or a bad profile file (one line: what, where, how to fix)."""


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
class Cache:
    """Per-core L1 data and L2 cache and the shared last-level cache, in KiB (0 = none)."""

    l1d_kb: int
    l2_kb: int
    l3_kb: int


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
    cache: Cache | None = None
    # {"source": str, "layer_overhead_us"?: float, precision: {"t<threads>": {op class: fraction}}}
    efficiency: dict[str, Any] | None = None
    # {precision: {"t<threads>": {op class or "total": relative RMS error of the fit}}}
    residuals: dict[str, Any] | None = None
    calibrated: bool = False  # efficiencies fitted to measurements on the device itself

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        for optional in ("cache", "efficiency", "residuals"):
            if d[optional] is None:
                d.pop(optional)
        if not d["calibrated"]:
            d.pop("calibrated")
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
    "": {"name": ("str", True), "description": ("str", True), "calibrated": ("bool", False)},
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
    "cache": {"l1d_kb": ("int0", True), "l2_kb": ("int0", True), "l3_kb": ("int0", True)},
}
_NESTED = ("efficiency", "residuals")  # precision -> "t<threads>" -> op class -> number
_SECTIONS_REQUIRED = {"cpu", "memory", "peak", "deploy"}
_KIND_TEXT = {
    "str": "a string",
    "int+": "a positive integer",
    "num+": "a positive number",
    "strlist": "a list of strings",
    "precision": f"one of {', '.join(PRECISIONS)}",
    "bool": "true or false",
    "int0": "a non-negative integer",
}


# Upper bounds of the figures: a value past them is a typo (GHz for MHz, an extra digit), not a device.
_MAX = {
    "cpu.cores": 1024,
    "cpu.freq_ghz": 10.0,
    "deploy.channel_multiple": 1024,
    "memory.ram_gb": 65536.0,
    "memory.bandwidth_gbs": 100000.0,
    "peak.fp32_gflops_per_core": 10000.0,
    "peak.int8_gops_per_core": 100000.0,
    "gpu.fp16_tflops": 10000.0,
    "gpu.int8_tops": 100000.0,
}
_MAX_KB = 1 << 30  # cache sizes
# Lower bound of every figure (GHz, GB, GB/s, GFLOPS, TOPS): no device is below it, and below it an
# estimate's arithmetic leaves the float range.
_MIN_FIGURE = 1e-3


def _check(value: Any, kind: str, where: str, field: str) -> Any:
    def bad(got: str = ""):
        got = got or f"{type(value).__name__} {value!r}"
        return TargetError(f"{where}: field '{field}' must be {_KIND_TEXT[kind]}, got {got}")

    if kind in ("str", "precision"):
        if not isinstance(value, str) or not value.strip():
            raise bad()
        if kind == "precision" and value not in PRECISIONS:
            raise bad()
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind == "int0":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad()
        if value > _MAX_KB:
            raise bad(f"{value!r} (out of range: at most {_MAX_KB})")
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
    if value < _MIN_FIGURE:  # (5e-324 GHz passed "> 0" and made every estimate inf)
        raise bad(f"{value!r} (out of range: at least {_MIN_FIGURE:g})")
    limit = _MAX.get(field, 1e9)
    if not value <= limit:  # also inf
        raise bad(f"{value!r} (out of range: at most {limit:g})")
    return float(value) if kind == "num+" else int(value)


def _validate(raw: dict[str, Any], where: str) -> TargetProfile:
    for key, value in raw.items():
        if key in _SCHEMA[""]:
            continue
        if key not in _SCHEMA and key not in _NESTED:
            known = ", ".join(sorted([*_SCHEMA[""], *(k for k in _SCHEMA if k), *_NESTED]))
            raise TargetError(f"{where}: unknown field '{key}' (fields and tables: {known})")
        if not isinstance(value, dict):
            raise TargetError(f"{where}: field '{key}' must be a table ([{key}]), got {type(value).__name__}")
    sections: dict[str, dict[str, Any]] = {}
    for section, fields in _SCHEMA.items():
        table = raw if section == "" else raw.get(section)
        if table is None:
            if section in _SECTIONS_REQUIRED:
                raise TargetError(f"{where}: missing field '{section}' (a [{section}] table)")
            continue
        prefix = f"{section}." if section else ""
        if section:
            unknown = [k for k in table if k not in fields]
            if unknown:
                raise TargetError(
                    f"{where}: unknown field '{prefix}{unknown[0]}' (fields of [{section}]: {', '.join(fields)})"
                )
        out: dict[str, Any] = {}
        for fname, (kind, required) in fields.items():
            if fname not in table:
                if required:
                    raise TargetError(f"{where}: missing field '{prefix}{fname}'")
                out[fname] = None
                continue
            out[fname] = _check(table[fname], kind, where, prefix + fname)
        sections[section] = out
    top = sections[""]
    efficiency = _validate_table(raw["efficiency"], where, "efficiency") if "efficiency" in raw else None
    residuals = _validate_table(raw["residuals"], where, "residuals") if "residuals" in raw else None
    if top["calibrated"] and efficiency is None:
        raise TargetError(
            f"{where}: 'calibrated = true' needs an [efficiency] table; run `edgeprune targets calibrate`"
        )
    return TargetProfile(
        name=top["name"],
        description=top["description"],
        cpu=CPU(**sections["cpu"]),
        memory=Memory(**sections["memory"]),
        peak=Peak(**sections["peak"]),
        gpu=GPU(**sections["gpu"]) if "gpu" in sections else None,
        deploy=Deploy(**sections["deploy"]),
        source=where,
        cache=Cache(**sections["cache"]) if "cache" in sections else None,
        efficiency=efficiency,
        residuals=residuals,
        calibrated=bool(top["calibrated"]),
    )


_THREADS_KEY = re.compile(r"t[1-9][0-9]{0,3}$")


def _validate_table(table: Any, where: str, section: str) -> dict[str, Any]:
    """``[efficiency]`` / ``[residuals]``: precision -> ``t<threads>`` -> op class -> a number
    (an efficiency > 0, a residual >= 0).

    ``[efficiency]`` also holds ``source`` (what the figures were fitted to) and may hold
    ``layer_overhead_us`` and ``eltwise_overhead_us`` (the fitted per-operator costs of compute and
    of memory-bound operators).
    """
    if not isinstance(table, dict):
        raise TargetError(f"{where}: field '{section}' must be a table ([{section}]), got {type(table).__name__}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        field = f"{section}.{key}"
        if section == "efficiency" and key == "source":
            out[key] = _check(value, "str", where, field)
        elif section == "efficiency" and key in ("layer_overhead_us", "eltwise_overhead_us"):
            out[key] = _check(value, "num+", where, field)
        elif key in PRECISIONS:
            if not isinstance(value, dict):
                raise TargetError(f"{where}: field '{field}' must be a table of t<threads> tables")
            out[key] = {}
            for tkey, classes in value.items():
                if not _THREADS_KEY.match(tkey) or not isinstance(classes, dict):
                    raise TargetError(f"{where}: field '{field}.{tkey}' must be a t<threads> table, e.g. [{field}.t1]")
                out[key][tkey] = {}
                for cls, number in classes.items():
                    cfield = f"{field}.{tkey}.{cls}"
                    if cls not in OP_CLASSES and not (section == "residuals" and cls == "total"):
                        raise TargetError(f"{where}: unknown field '{cfield}' (op classes: {', '.join(OP_CLASSES)})")
                    ok = isinstance(number, (int, float)) and not isinstance(number, bool)
                    if not ok or not (number > 0 if section == "efficiency" else number >= 0) or number > 1e6:
                        bound = "> 0" if section == "efficiency" else ">= 0"
                        raise TargetError(f"{where}: field '{cfield}' must be a number {bound}, got {number!r}")
                    out[key][tkey][cls] = float(number)
        else:
            raise TargetError(f"{where}: unknown field '{field}'")
    if section == "efficiency" and "source" not in out:
        raise TargetError(f"{where}: missing field 'efficiency.source' (what the efficiencies were fitted to)")
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def to_toml(profile: TargetProfile) -> str:
    """The profile as TOML text that ``load`` reads back to an equal profile."""
    d = profile.to_dict()
    lines = [f"name = {_toml_value(d['name'])}", f"description = {_toml_value(d['description'])}"]
    if profile.calibrated:
        lines.append("calibrated = true")
    for section in ("cpu", "memory", "peak", "gpu", "deploy", "cache"):
        values = d.get(section)
        if values is None:
            continue
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    for section in _NESTED:
        table = d.get(section)
        if not table:
            continue
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if scalars:
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
        for precision, per_threads in table.items():
            if isinstance(per_threads, dict):
                for tkey, classes in per_threads.items():
                    lines += ["", f"[{section}.{precision}.{tkey}]"]
                    lines += [f"{k} = {_toml_value(v)}" for k, v in classes.items()]
    return "\n".join(lines) + "\n"


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
        raise TargetError(f"{p}: file not found") from None
    except UnicodeDecodeError:
        raise TargetError(f"{p}: not UTF-8 text; a target profile is a TOML text file (docs/targets.md)") from None
    except OSError as e:
        raise TargetError(f"{p}: cannot read ({e.strerror or e})") from None
    if not text.strip():
        raise TargetError(
            f"{p}: empty file; a target profile needs name, description and [cpu], [memory], [peak], [deploy] "
            "tables (start from `edgeprune targets show rpi4`)"
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{p}: invalid TOML ({e})") from None
    except RecursionError:
        raise TargetError(f"{p}: invalid TOML (arrays or tables nested too deep)") from None
    return _validate(raw, str(p))


# Names users type -> built-in profile. Matching ignores case, and "_" or spaces count as "-".
ALIASES: dict[str, str] = {
    "jetson": "jetson-orin-nano",
    "orin": "jetson-orin-nano",
    "orin-nano": "jetson-orin-nano",
    "jetson-orin": "jetson-orin-nano",
    "nano": "jetson-nano",
    "jetson-nano-4gb": "jetson-nano",
    "rpi": "rpi5",
    "pi": "rpi5",
    "raspberry-pi": "rpi5",
    "raspberrypi": "rpi5",
    "pi5": "rpi5",
    "rpi-5": "rpi5",
    "raspberry-pi-5": "rpi5",
    "pi4": "rpi4",
    "rpi-4": "rpi4",
    "raspberry-pi-4": "rpi4",
    "x86": "x86-avx2",
    "avx2": "x86-avx2",
    "avx512": "x86-avx512-vnni",
    "x86-avx512": "x86-avx512-vnni",
    "vnni": "x86-avx512-vnni",
}
# Said whenever an alias picks one of several boards the user may have meant.
ALIAS_NOTES: dict[str, str] = {
    "jetson-orin-nano": "jetson-nano is the older board (Maxwell GPU, fp16 only): pass --target jetson-nano for it",
    "jetson-nano": "the Jetson Orin Nano is jetson-orin-nano",
    "rpi5": "the Raspberry Pi 4 is rpi4",
    "x86-avx2": "use x86-avx512-vnni for an AVX-512 server, or host for this machine",
}
HOST_NAMES = ("host", "auto")


@dataclass(frozen=True)
class Resolution:
    """What a typed target name means: the built-in profile (or "host"), and a line saying so."""

    typed: str
    name: str
    note: str  # "" when the user typed the canonical name


def _normal(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def aliases() -> dict[str, str]:
    """Alias -> built-in profile name (the table ``targets list`` prints)."""
    return dict(ALIASES)


def resolve(name: str) -> Resolution:
    """The built-in profile (or "host") a typed name means; TargetError, with a suggestion, if none."""
    key = _normal(str(name))
    builtins = names()
    if key in builtins:
        return Resolution(str(name), key, "" if key == str(name) else f"target {name!r} is profile {key}")
    if key in ALIASES:
        canon = ALIASES[key]
        extra = ALIAS_NOTES.get(canon)
        return Resolution(str(name), canon, f"target {name!r} is profile {canon}" + (f"; {extra}" if extra else ""))
    if key in HOST_NAMES:
        return Resolution(str(name), "host", f"target {name!r}: a profile detected from this machine")
    candidates = [*builtins, *ALIASES, *HOST_NAMES]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise TargetError(
        f"unknown target {name!r}; {hint}built-in targets: {', '.join(builtins) or 'none found'}, "
        "aliases in `edgeprune targets list`, host (this machine), or the path of a .toml profile"
    )


def load(name_or_path: str | os.PathLike | TargetProfile, root: str | os.PathLike = "/") -> TargetProfile:
    """A built-in profile by name or alias, ``host``/``auto`` (detected under ``root``), or a
    profile TOML file by path (TargetError, a ValueError, if none of those)."""
    if isinstance(name_or_path, TargetProfile):
        return name_or_path
    s = str(name_or_path)
    if s.endswith(".toml") or os.sep in s or Path(s).is_file():
        return load_file(s)
    canon = resolve(s).name
    if canon == "host":
        return detect_host(root)
    for d in profile_dirs():
        p = d / f"{canon}.toml"
        if p.is_file():
            return load_file(p)
    raise TargetError(f"target {canon!r} has no profile file in {', '.join(map(str, profile_dirs()))}")


# ----------------------------------------------------------------------------- this machine
# /proc/device-tree/model prefixes of the boards with a built-in profile (a Pi or a Jetson says
# what it is there; x86 machines have no device tree).
_BOARDS = (
    ("raspberry pi 5", "rpi5"),
    ("raspberry pi compute module 5", "rpi5"),
    ("raspberry pi 4", "rpi4"),
    ("raspberry pi compute module 4", "rpi4"),
    ("nvidia jetson orin nano", "jetson-orin-nano"),
    ("nvidia jetson nano", "jetson-nano"),
)
# Arm "CPU part" -> (uarch, fp32 flop/cycle/core, qemu cpu). A57/A72 issue two 64-bit-wide
# halves of a 128-bit FMA per cycle (8 flop); A76/A78/N1 have two full 128-bit FMA pipes (16).
_ARM_PARTS = {
    "0xd03": ("cortex-a53", 4, "cortex-a53"),
    "0xd07": ("cortex-a57", 8, "cortex-a57"),
    "0xd08": ("cortex-a72", 8, "cortex-a72"),
    "0xd0b": ("cortex-a76", 16, "cortex-a76"),
    "0xd0c": ("neoverse-n1", 16, "neoverse-n1"),
    "0xd41": ("cortex-a78", 16, "neoverse-n1"),
    "0xd42": ("cortex-a78ae", 16, "neoverse-n1"),
}
_X86_FEATURES = {"avx2": "avx2", "fma": "fma", "avx512f": "avx512f", "avx512_vnni": "avx512vnni", "avx_vnni": "avxvnni"}
_ARM_FEATURES = {"asimd": "neon", "asimddp": "dotprod", "asimdhp": "fp16", "i8mm": "i8mm", "sve": "sve"}


def _read(root: Path, rel: str) -> str:
    try:
        return (root / rel).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpuinfo(root: Path) -> tuple[int, dict[str, str]]:
    """Processor count and the first processor's fields of /proc/cpuinfo (lower-case keys)."""
    text = _read(root, "proc/cpuinfo")
    count = len(re.findall(r"^processor\s*:", text, flags=re.M))
    fields: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            fields.setdefault(k.strip().lower(), v.strip())
    return max(count, 1), fields


def _cache_kb(root: Path) -> Cache | None:
    """L1d, L2 and last-level cache sizes of cpu0 from sysfs (None when sysfs has none)."""
    base = "sys/devices/system/cpu/cpu0/cache"
    sizes = {"l1d": 0, "l2": 0, "l3": 0}
    found = False
    for i in range(8):
        level, ctype, size = (_read(root, f"{base}/index{i}/{f}").strip() for f in ("level", "type", "size"))
        m = re.match(r"(\d+)([KM]?)", size)
        if not (level and m):
            continue
        kb = int(m.group(1)) * (1024 if m.group(2) == "M" else 1)
        if level == "1" and ctype in ("Data", "Unified"):
            sizes["l1d"], found = kb, True
        elif level in ("2", "3"):
            sizes[f"l{level}"], found = kb, True
    return Cache(sizes["l1d"], sizes["l2"], sizes["l3"]) if found else None


def board_of(root: str | os.PathLike = "/") -> tuple[str, str]:
    """(device-tree model text, built-in profile name or "") of the machine under ``root``."""
    model = _read(Path(root), "proc/device-tree/model").replace("\x00", "").strip()
    low = model.lower()
    return model, next((prof for prefix, prof in _BOARDS if low.startswith(prefix)), "")


def detect_host(root: str | os.PathLike = "/") -> TargetProfile:
    """A profile for the machine whose /proc and /sys are under ``root`` (tests pass a fake tree).

    A Raspberry Pi or Jetson with a built-in profile gets that profile (its figures and deploy
    formats are better than what /proc can tell). Anything else gets a profile built from
    /proc/cpuinfo: flop/cycle from the vector features, the clock from cpufreq or cpuinfo, RAM
    from /proc/meminfo, caches from sysfs; the DRAM figure and the efficiencies are taken from
    the closest built-in profile, which the description names.
    """
    root = Path(root)
    model, board = board_of(root)
    if board:
        prof = load(board)
        return replace(prof, description=f"{prof.description} Detected: {model}.")
    cores, info = _cpuinfo(root)
    flags = set((info.get("flags") or info.get("features") or "").split())
    khz = _read(root, "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
    if "flags" in info or "vendor_id" in info:
        arch = "x86_64"
        features = tuple(ours for theirs, ours in _X86_FEATURES.items() if theirs in flags)
        wide = "avx512f" in features
        lanes = 64 if wide else (32 if {"avx2", "fma"} <= set(features) else 16)
        int8_x = 4 if "avx512vnni" in features or "avxvnni" in features else 2
        uarch = "avx512-vnni" if wide else ("avx2-fma" if lanes == 32 else "sse")
        closest, qemu = ("x86-avx512-vnni" if wide else "x86-avx2"), "host"
        mhz = float(khz) / 1000 if khz.isdigit() else _float(info.get("cpu mhz"), 0.0)
        if not mhz:
            m = re.search(r"@\s*([\d.]+)\s*GHz", info.get("model name", ""))
            mhz = float(m.group(1)) * 1000 if m else 3000.0
        cpu_name = info.get("model name", "x86-64")
    else:
        arch = "aarch64"
        features = tuple(ours for theirs, ours in _ARM_FEATURES.items() if theirs in flags)
        uarch, lanes, qemu = _ARM_PARTS.get(info.get("cpu part", "").lower(), ("arm64", 8, "max"))
        int8_x = 4 if "dotprod" in features else 2
        closest = "rpi5" if "dotprod" in features else "rpi4"
        mhz = float(khz) / 1000 if khz.isdigit() else 1500.0
        cpu_name = model or uarch
    ghz = round(mhz / 1000.0, 3)
    near = load(closest)
    mem_kb = re.search(r"MemTotal:\s*(\d+)", _read(root, "proc/meminfo"))
    ram_gb = round(int(mem_kb.group(1)) / 1024**2, 1) if mem_kb else near.memory.ram_gb
    fp32 = round(lanes * ghz, 2)
    return TargetProfile(
        name="host",
        description=(
            f"This machine, detected from /proc/cpuinfo: {cpu_name}, {cores} cores at {ghz:g} GHz, "
            f"{lanes} fp32 flop/cycle/core. DRAM figure and efficiencies from the closest built-in "
            f"profile, {closest}; `edgeprune targets calibrate` fits this machine's own."
        ),
        cpu=CPU(arch=arch, uarch=uarch, cores=cores, freq_ghz=ghz, features=features, qemu_cpu=qemu),
        memory=Memory(ram_gb=max(ram_gb, 0.1), bandwidth_gbs=near.memory.bandwidth_gbs),
        peak=Peak(fp32_gflops_per_core=fp32, int8_gops_per_core=round(fp32 * int8_x, 2)),
        gpu=None,
        deploy=near.deploy,
        source=f"detected from {root}",
        cache=_cache_kb(root),
        efficiency=near.efficiency,
        residuals=near.residuals,
        calibrated=False,
    )


def _float(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default
