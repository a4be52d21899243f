"""Ranking by training popularity: the floor every learned model must clear, as a ranker like the
others (same seen filter, same tie rule), so evaluation can score it on exactly its users.

Popularity ties are the common case (many items share a count), so the tie rule matters most
here: ties go by the seeded hash of (the user's history key, item) (`ttds.rank.ties`), never by
item id (low ids are the early, popular items).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ttds.rank.seen import mask_seen
from ttds.rank.ties import query_keys, top_k

__all__ = ["rank_popularity"]

_CHUNK = 256  # users per top-k: bounds the [users, items] score block


def rank_popularity(
    counts: np.ndarray, k: int = 10, histories: Sequence[Sequence[int]] | None = None, exclude_seen: bool = False,
) -> np.ndarray:
    """Top-k item ids by `counts` (training interactions per item), -1 past the catalogue.

    Without `histories`: one list [k] (ties by key 0). With `histories`: one row per user [n, k],
    ties keyed by the user's history, each user's seen items removed when `exclude_seen`.
    """
    counts = torch.as_tensor(np.asarray(counts, dtype=np.float64), dtype=torch.float64)
    n = counts.numel()
    if histories is None:
        if exclude_seen:
            raise ValueError("exclude_seen needs the users' histories")
        top = np.full(k, -1, dtype=np.int64)  # -1 pads past the last item (toy corpora)
        _, idx = top_k(counts.unsqueeze(0), k)
        top[: idx.shape[1]] = idx[0].numpy()
        return top
    out = np.full((len(histories), k), -1, dtype=np.int64)
    keys = query_keys([np.asarray(h, dtype=np.int64) for h in histories])
    for s in range(0, len(histories), _CHUNK):
        rows = list(range(s, min(s + _CHUNK, len(histories))))
        scores = counts.unsqueeze(0).expand(len(rows), n)
        if exclude_seen:
            scores = mask_seen(scores, [histories[i] for i in rows])
        vals, idx = top_k(scores, k, keys[rows])
        out[rows, : idx.shape[1]] = np.where(np.isfinite(vals.numpy()), idx.numpy(), -1)
    return out
