"""Seen-item exclusion for rankers that over-fetch candidates and filter them (popularity, the
retrieval fast path, serving's retrieval and text modes). Beam search masks seen items inside the search instead
(`ttds.decode.beam.exclusion_table`), because a filtered beam would come back short."""

from __future__ import annotations

import numpy as np

__all__ = ["keep_unseen", "unseen_positions"]


def unseen_positions(candidates: np.ndarray, seen, k: int, scores: np.ndarray | None = None) -> np.ndarray:
    """Positions of the first `k` of `candidates` (best first, -1 = none) not in `seen`;
    with `scores`, candidates whose score is not finite (faiss's padding) are dropped too."""
    candidates = np.asarray(candidates)
    keep = (candidates >= 0) & ~np.isin(candidates, np.asarray(list(seen), dtype=np.int64))
    if scores is not None:
        keep &= np.isfinite(np.asarray(scores))
    return np.flatnonzero(keep)[:k]


def keep_unseen(candidates: np.ndarray, seen, k: int) -> np.ndarray:
    """The first `k` of `candidates` (best first, -1 = none) that are not in `seen`."""
    candidates = np.asarray(candidates)
    return candidates[unseen_positions(candidates, seen, k)]
