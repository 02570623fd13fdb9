"""Channel atoms and a vectorised union-find over them.

Consumes: requests for fresh atoms (one per output channel of a producing layer) and pairs of
atom-id arrays that must be removed together. Produces: equivalence classes (roots). The root of a
class is its smallest atom id, so atom 0 (FIXED) is the root of every channel that must never be
removed, and class order is deterministic across fresh instances of the same model.
"""

from __future__ import annotations

import numpy as np

FIXED = 0


class Atoms:
    def __init__(self) -> None:
        self.parent = np.arange(1024, dtype=np.int64)
        self.count = 1  # atom 0 is FIXED

    def new(self, n: int) -> np.ndarray:
        start = self.count
        need = start + n
        if need > len(self.parent):
            cap = max(need, 2 * len(self.parent))
            self.parent = np.concatenate([self.parent, np.arange(len(self.parent), cap, dtype=np.int64)])
        self.count = need
        return np.arange(start, need, dtype=np.int64)

    def find(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        p = self.parent
        r = p[x]
        while True:
            rr = p[r]
            if np.array_equal(rr, r):
                break
            r = rr
        p[x] = r  # path compression
        return r

    def union(self, a, b) -> None:
        a = np.asarray(a, dtype=np.int64).ravel()
        b = np.asarray(b, dtype=np.int64).ravel()
        if a.shape != b.shape:
            raise ValueError(f"union of arrays of different sizes {a.shape} vs {b.shape}")
        while a.size:
            ra, rb = self.find(a), self.find(b)
            m = ra != rb
            if not m.any():
                return
            ra, rb, a, b = ra[m], rb[m], a[m], b[m]
            lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
            # conflicting writes to one `hi` keep one of them; the loop merges the rest next round
            self.parent[hi] = lo

    def union_rows(self, ids2d: np.ndarray) -> None:
        """Every row becomes one class (e.g. an attention head)."""
        ids2d = np.asarray(ids2d)
        self.union(ids2d, np.repeat(ids2d[:, :1], ids2d.shape[1], axis=1))

    def union_cols(self, ids2d: np.ndarray) -> None:
        """Every column becomes one class (same index kept in every row / group)."""
        ids2d = np.asarray(ids2d)
        self.union(ids2d, np.repeat(ids2d[:1, :], ids2d.shape[0], axis=0))

    def fix(self, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        self.union(ids, np.zeros_like(ids))

    def roots(self) -> np.ndarray:
        return self.find(np.arange(self.count, dtype=np.int64))
