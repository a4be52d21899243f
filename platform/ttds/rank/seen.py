"""Seen-item exclusion, the one filter every ranker uses (`exclude_seen`: RecBole's full-sort
protocol; the Amazon leave-one-out sets have no repeat purchases, so a seen item can never be the
held-out one and ranking it only wastes a slot).

Two forms of the same rule, chosen by how a ranker produces candidates:
- a table (`exclusion_table`) for rankers that score every item (item head, SASRec) or search a
  trie (beam search): seen items are masked to -inf *before* selection, because a filtered beam
  or top-k would come back short;
- over-fetch and filter (`unseen_positions`, `keep_unseen`) for rankers that return a best-first
  candidate list (the faiss index, popularity): fetch k + |seen|, keep the first k unseen.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["exclusion_table", "keep_unseen", "mask_seen", "unseen_positions"]


def unseen_positions(candidates: np.ndarray, seen, k: int, scores: np.ndarray | None = None) -> np.ndarray:
    """Positions of the first `k` of `candidates` (best first, -1 = none) not in `seen`;
    with `scores`, candidates whose score is not finite (faiss's padding, masked items) are dropped too."""
    candidates = np.asarray(candidates)
    keep = (candidates >= 0) & ~np.isin(candidates, np.asarray(list(seen), dtype=np.int64))
    if scores is not None:
        keep &= np.isfinite(np.asarray(scores))
    return np.flatnonzero(keep)[:k]


def keep_unseen(candidates: np.ndarray, seen, k: int) -> np.ndarray:
    """The first `k` of `candidates` (best first, -1 = none) that are not in `seen`."""
    candidates = np.asarray(candidates)
    return candidates[unseen_positions(candidates, seen, k)]


def exclusion_table(seen: Sequence[Sequence[int]], n_items: int) -> torch.Tensor:
    """Bool `[len(seen), n_items]`: True at each row's seen item ids (ids outside the range ignored)."""
    table = torch.zeros(len(seen), n_items, dtype=torch.bool)
    for row, items in enumerate(seen):
        ids = torch.as_tensor(np.asarray(items, dtype=np.int64).reshape(-1))
        ids = ids[(ids >= 0) & (ids < n_items)]
        table[row, ids] = True
    return table


def mask_seen(scores: torch.Tensor, seen: Sequence[Sequence[int]] | None) -> torch.Tensor:
    """`scores` [B, n_items] with each row's seen items set to -inf (a copy; None = unchanged)."""
    if seen is None or not any(len(s) for s in seen):
        return scores
    table = exclusion_table(seen, scores.shape[1]).to(scores.device)
    return scores.masked_fill(table, float("-inf"))
