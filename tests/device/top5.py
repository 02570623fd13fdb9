"""Compare the C example app's top-5 on the emulated device with the host's native run.

Consumes: two ``classify`` outputs (``<model> on <isa>`` then ``k. class C  score S`` lines) and the device CPU
model. Produces: exit 0 and one line when the device ran on the ISA its CPU model has (``neon``, or
``neon-dotprod`` on neoverse-n1) and its top-5 classes equal the host's in order with scores within 1e-4
(fp32 sums in another order on another ISA); otherwise an AssertionError naming the difference.
"""

from __future__ import annotations

import re
import sys

LINE = re.compile(r"^(\d)\. class (\d+)\s+score (\S+)$")


def read(path: str) -> tuple[str, list[tuple[int, float]]]:
    lines = open(path).read().splitlines()
    isa = lines[0].rsplit(" on ", 1)[-1]
    top = [(int(m.group(2)), float(m.group(3))) for m in map(LINE.match, lines[1:]) if m]
    return isa, top


if __name__ == "__main__":
    host_path, dev_path, cpu = sys.argv[1:4]
    _, host = read(host_path)
    isa, dev = read(dev_path)
    want = "neon-dotprod" if cpu == "neoverse-n1" else "neon"
    assert isa == want, f"{cpu}: classify ran on {isa}, expected {want}"
    assert len(host) == 5 and [c for c, _ in dev] == [c for c, _ in host], f"{cpu}: top-5 {dev} != host {host}"
    err = max(abs(a - b) for (_, a), (_, b) in zip(dev, host))
    assert err <= 1e-4, f"{cpu}: top-5 scores differ from the host's by {err:.2e} > 1e-4"
    print(f"device-test: {cpu}: classify (C, aarch64) on {isa}: top-5 classes {[c for c, _ in dev]} = host's")
