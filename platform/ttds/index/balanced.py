"""Collision-aware assignment of the last RQ level ("uniform semantic mapping", as in LC-Rec).

Nearest-code quantisation sends near-duplicate inputs to the same M codes. Pretrained text
encoders make that common: on Amazon Scientific, SmolLM2's mean-pooled states put 10% of the
items within cosine .986 of another item, and nearest-code RQ left 5.7% of the items colliding.
Every collision costs the recommender a suffix token it has to generate and a prefix it cannot
tell apart.

LC-Rec fixes this at the last level: entities that share the first M-1 codes get distinct
last-level codes, chosen to stay as close to their residuals as possible (LC-Rec solves it with
Sinkhorn-Knopp; here a greedy assignment over each prefix group, cheapest (entity, code) pair
first, which is exact for a group of two and needs no extra dependency). Only groups larger
than the codebook, or exact-duplicate inputs beyond it, keep a collision; the suffix token of
`ttds.index.collisions` still makes every final ID unique. Entities not in a collision keep
their nearest code, so the quantisation error grows only for the few that move.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LAST_LEVEL_MODES", "spread_last_level"]

LAST_LEVEL_MODES = ("nearest", "balanced")


def spread_last_level(prefix: np.ndarray, last_dists: np.ndarray) -> np.ndarray:
    """Last-level codes [n]: nearest code, except that entities sharing `prefix` get distinct codes.

    prefix: int [n, M-1] codes of the levels above (may have 0 columns when M=1);
    last_dists: float [n, N] squared distances of each entity's last residual to the last codebook.
    """
    n, n_codes = last_dists.shape
    codes = last_dists.argmin(1).astype(np.int64)
    if n < 2:
        return codes
    keys = np.concatenate([prefix.reshape(n, -1), codes[:, None]], 1)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    if counts.max() < 2:
        return codes  # no collision: nothing to move
    # re-assign whole prefix groups that hold a collision (their other members may have to
    # give up a code a colliding member needs less than they do)
    _, group_of, _ = np.unique(prefix.reshape(n, -1), axis=0, return_inverse=True, return_counts=True)
    group_of = group_of.reshape(-1)
    bad_groups = np.unique(group_of[counts[inverse.reshape(-1)] > 1])
    for g in bad_groups:
        members = np.flatnonzero(group_of == g)
        codes[members] = _greedy_distinct(last_dists[members])
    return codes


def _greedy_distinct(d: np.ndarray) -> np.ndarray:
    """Distinct codes for the rows of d [g, N] by increasing distance (rows beyond N keep their nearest)."""
    g, n_codes = d.shape
    out = d.argmin(1).astype(np.int64)
    order = np.argsort(d, axis=None, kind="stable")
    row_done = np.zeros(g, dtype=bool)
    code_used = np.zeros(n_codes, dtype=bool)
    left = min(g, n_codes)
    for flat in order:
        r, c = divmod(int(flat), n_codes)
        if row_done[r] or code_used[c]:
            continue
        out[r] = c
        row_done[r] = code_used[c] = True
        left -= 1
        if left == 0:
            break
    return out
