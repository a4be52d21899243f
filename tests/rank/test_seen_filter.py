"""The over-fetch-and-filter exclusion of seen items shared by popularity, retrieval and serving."""

from __future__ import annotations

import numpy as np

from ttds.rank.seen import keep_unseen, unseen_positions


def test_keep_unseen_skips_seen_and_padding_and_keeps_order():
    cands = np.array([7, 3, -1, 5, 9, 2])
    assert keep_unseen(cands, [3, 9], 3).tolist() == [7, 5, 2]
    assert keep_unseen(cands, [], 2).tolist() == [7, 3]
    assert keep_unseen(cands, [7, 3, 5, 9, 2], 3).tolist() == []  # short when too few remain


def test_unseen_positions_drops_non_finite_scores():
    items = np.array([4, 8, 1, 6])
    scores = np.array([0.9, -np.inf, 0.5, np.nan])
    assert unseen_positions(items, {1}, 10, scores).tolist() == [0]
    assert unseen_positions(items, set(), 10, scores).tolist() == [0, 2]
    assert unseen_positions(items, (), 1).tolist() == [0]
