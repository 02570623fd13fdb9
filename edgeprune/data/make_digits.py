"""Regenerate and verify the shipped copy of scikit-learn's handwritten digits.

Consumes: ``sklearn.datasets.load_digits`` (scikit-learn is a test/dev dependency only).
Produces: ``edgeprune/data/digits.npz`` with ``images`` (uint8, 1797x8x8, values 0..16) and
``target`` (uint8, 1797), or, with ``--check``, exit 0 if the shipped file equals sklearn's copy.

Run once: ``python -m edgeprune.data.make_digits`` (write) / ``... --check`` (verify).
The data is shipped so that ``ep.data.load("digits")`` never needs a download or scikit-learn.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

DIGITS_PATH = Path(__file__).with_name("digits.npz")


def sklearn_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    # values are integers 0..16 stored as float64 by sklearn; uint8 is exact and 8x smaller.
    images = d.images.astype(np.uint8)
    if not np.array_equal(images.astype(d.images.dtype), d.images):
        raise RuntimeError("sklearn digits are not integer-valued; refusing a lossy copy")
    return images, d.target.astype(np.uint8)


def write(path: Path = DIGITS_PATH) -> Path:
    from edgeprune.fsutil import write_bytes

    images, target = sklearn_arrays()
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, target=target)
    return write_bytes(path, buf.getvalue())


def check(path: Path = DIGITS_PATH) -> bool:
    images, target = sklearn_arrays()
    with np.load(path) as f:
        return np.array_equal(f["images"], images) and np.array_equal(f["target"], target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the shipped file instead of writing it")
    args = parser.parse_args(argv)
    if args.check:
        ok = check()
        print(f"{DIGITS_PATH}: {'equals' if ok else 'DIFFERS FROM'} sklearn.datasets.load_digits()")
        return 0 if ok else 1
    print(f"wrote {write()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
