"""Seen-item exclusion for rankers that over-fetch candidates and filter them (popularity, the
retrieval fast path). Beam search masks seen items inside the search instead
(`ttds.decode.beam.exclusion_table`), because a filtered beam would come back short."""

from __future__ import annotations

import numpy as np

__all__ = ["keep_unseen"]


def keep_unseen(candidates: np.ndarray, seen, k: int) -> np.ndarray:
    """The first `k` of `candidates` (best first, -1 = none) that are not in `seen`."""
    candidates = np.asarray(candidates)
    return candidates[(candidates >= 0) & ~np.isin(candidates, np.asarray(seen))][:k]
