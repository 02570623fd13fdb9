"""Check the wheels in a directory: each compiled module is built for the architecture its wheel tag names.

Consumes: a directory with edgeprune wheels and an sdist. Produces: one line per file; exit 1 when a wheel's
extension module is for another machine than its tag says (the mistake a cross build can make silently).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ELF_MACHINE = {62: "x86_64", 183: "aarch64"}  # e_machine values of the ELF header


def check(dist: Path) -> list[str]:
    problems = []
    wheels = sorted(dist.glob("*.whl"))
    if not list(dist.glob("*.tar.gz")):
        problems.append(f"{dist}: no sdist")
    for whl in wheels:
        platform = whl.name.rsplit("-", 1)[1].removesuffix(".whl")  # linux_aarch64, manylinux_2_35_x86_64
        arch = next((a for a in ELF_MACHINE.values() if platform.endswith(a)), platform)
        with zipfile.ZipFile(whl) as z:
            mods = [n for n in z.namelist() if n.endswith(".so")]
            if not mods:
                problems.append(f"{whl.name}: no compiled module")
            for name in mods:
                head = z.read(name)[:20]
                machine = ELF_MACHINE.get(int.from_bytes(head[18:20], "little"), "unknown")
                if machine != arch or arch not in name:
                    problems.append(f"{whl.name}: {name} is built for {machine}, the tag says {arch}")
        print(f"{whl.name}: ok" if not any(p.startswith(whl.name) for p in problems) else f"{whl.name}: BAD")
    return problems


if __name__ == "__main__":
    bad = check(Path(sys.argv[1]))
    for p in bad:
        print(p, file=sys.stderr)
    sys.exit(1 if bad else 0)
