"""The LightGCN model (ttds.features.lightgcn): normalised adjacency, layer-mean propagation, negatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttds.features.lightgcn import LightGCN, interaction_pairs, normalized_adjacency, sample_negatives


def test_adjacency_is_symmetric_normalised_and_propagation_averages_layers():
    seqs = [np.array([0, 1]), np.array([1]), np.array([], dtype=np.int64)]
    users, items = interaction_pairs(seqs)
    assert users.tolist() == [0, 0, 1] and items.tolist() == [0, 1, 1]
    a = normalized_adjacency(users, items, 3, 2).to_dense()
    assert torch.allclose(a, a.T)
    # user 0 (degree 2) - item 1 (degree 2): 1 / sqrt(2 * 2)
    assert a[0, 3 + 1] == pytest.approx(0.5)
    assert a[2].abs().sum() == 0  # a user without training items has no edges
    model = LightGCN(3, 2, 4, 2, normalized_adjacency(users, items, 3, 2))
    e = model.embedding.detach()
    expect = (e + a @ e + a @ (a @ e)) / 3
    assert torch.allclose(model.propagate().detach(), expect, atol=1e-6)


def test_negatives_avoid_the_users_training_items():
    users, items = interaction_pairs([np.array([0, 1, 2]), np.array([3])])
    pair_keys = np.sort(users * 5 + items)
    neg = sample_negatives(np.zeros(200, dtype=np.int64), 5, pair_keys, np.random.default_rng(0), tries=50)
    assert set(neg.tolist()) <= {3, 4}
