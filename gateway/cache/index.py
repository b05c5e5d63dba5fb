"""A bounded vector index for the semantic cache: inner product over unit vectors (= cosine).

faiss-cpu when it is installed (a flat index stored as float16: half the memory and about half
the search time of float32 at 100k entries), else numpy brute force. Not thread-safe: the semantic
cache calls it from its one worker thread only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # optional: part of the `semantic` extra
    import faiss
except ImportError:  # pragma: no cover - exercised only without the extra
    faiss = None  # type: ignore[assignment]


def single_threaded() -> None:
    """Run in the thread that searches: OpenMP's thread count is per calling thread, and extra
    OpenMP threads for one query only fight torch and the event loop for the cores."""
    if faiss is not None:
        faiss.omp_set_num_threads(1)


class VectorIndex:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._faiss: Any = None
        if faiss is not None:
            base = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
            self._faiss = faiss.IndexIDMap2(base)
        self._vecs = np.empty((0, dim), dtype=np.float32)  # numpy fallback
        self._ids = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._faiss.ntotal) if self._faiss is not None else len(self._ids)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        vecs = np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1, self.dim)
        ids = np.asarray(ids, dtype=np.int64)
        if self._faiss is not None:
            self._faiss.add_with_ids(vecs, ids)
        else:
            self._vecs = np.concatenate([self._vecs, vecs])
            self._ids = np.concatenate([self._ids, ids])

    def remove(self, ids: list[int]) -> None:
        if not ids:
            return
        doomed = np.asarray(ids, dtype=np.int64)
        if self._faiss is not None:
            self._faiss.remove_ids(doomed)
        else:
            keep = ~np.isin(self._ids, doomed)
            self._vecs, self._ids = self._vecs[keep], self._ids[keep]

    def search(self, vec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k nearest (id, similarity), best first."""
        n = len(self)
        if n == 0:
            return []
        k = min(k, n)
        q = np.ascontiguousarray(vec, dtype=np.float32).reshape(1, self.dim)
        if self._faiss is not None:
            scores, ids = self._faiss.search(q, k)
            return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        sims = self._vecs @ q[0]
        top = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-sims[top])]
        return [(int(self._ids[i]), float(sims[i])) for i in top]
