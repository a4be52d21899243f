"""The one faiss index of the package: exact inner-product search over L2-normalised vectors,
on the GPU when faiss sees one, with the seen filter and the tie rule applied to its results.

Exact (IndexFlatIP), because the catalogue is the ranking universe and ~1e5 items search in
milliseconds anyway. Used by the retrieval ranker (item X), serving's text cold start (the
text part of item X) and similar items.
"""

from __future__ import annotations

import numpy as np

from ttds.rank.seen import unseen_positions
from ttds.rank.ties import tie_values

__all__ = ["ItemIndex", "normalise"]


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32, contiguous; zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


class ItemIndex:
    """Cosine search over item vectors: `search(queries, k, seen, keys)` -> (scores, ids), each
    [n, k], best first, -1 / -inf past what remains.

    `gpu`: None = every GPU faiss sees (the faiss-gpu build on a GPU node), False = CPU.
    """

    def __init__(self, item_x: np.ndarray, gpu: bool | None = None):
        import faiss

        x = normalise(item_x)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"item vectors must be a non-empty [n, d] array, got shape {x.shape}")
        self.vectors = x
        self.n, self.dim = x.shape
        index = faiss.IndexFlatIP(self.dim)
        index.add(x)
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if gpu is None:
            gpu = gpus > 0
        if gpu and gpus == 0:
            raise RuntimeError("gpu=True but this faiss sees no GPU: install the `gpu` extra (faiss-gpu-cu12) on a GPU node")
        self.index = faiss.index_cpu_to_all_gpus(index) if gpu else index
        self.on_gpu = bool(gpu)
        self.max_fetch = min(self.n, 2048) if gpu else self.n  # faiss-gpu's flat search answers k <= 2048

    def search(self, queries: np.ndarray, k: int, seen=None, keys=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per query by cosine (queries are normalised here).

        `seen[i]`: item ids row i must not get (fetched past, so k unseen remain). `keys[i]`: the
        row's query key for the tie rule (`ttds.rank.ties`; None = 0): equal scores are ordered
        by it, and a tie reaching past the fetched candidates widens the fetch, so the rule holds
        exactly whatever order faiss returned them in (on the GPU up to faiss-gpu's 2048 candidates).
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries have shape {q.shape}; the index holds {self.dim}-dim vectors")
        n_q = len(q)
        if seen is not None and len(seen) != n_q:
            raise ValueError(f"seen has {len(seen)} rows for {n_q} queries")
        keys = np.zeros(n_q, dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
        q = normalise(q)
        seen_sets = [np.unique(np.asarray(list(s), dtype=np.int64)) for s in seen] if seen is not None else [np.zeros(0, np.int64)] * n_q
        out_s = np.full((n_q, k), -np.inf, dtype=np.float32)
        out_i = np.full((n_q, k), -1, dtype=np.int64)
        if n_q == 0:
            return out_s, out_i
        m = min(self.max_fetch, k + max(len(s) for s in seen_sets) + 8)
        while True:
            scores, ids = self.index.search(q, m)
            widen = False
            for r in range(n_q):
                keep = unseen_positions(ids[r], seen_sets[r], self.n, scores[r])
                if m < self.max_fetch and (len(keep) < k or scores[r, -1] >= scores[r, keep[k - 1]]):
                    widen = True  # too few left, or a tie at the cut may continue past the fetch
                    break
                cand, sc = ids[r, keep], scores[r, keep]
                order = np.lexsort((-tie_values(keys[r : r + 1], cand[None])[0], -sc))[:k]
                out_i[r, : len(order)], out_s[r, : len(order)] = cand[order], sc[order]
            if not widen:
                return out_s, out_i
            m = min(self.max_fetch, 2 * m)
