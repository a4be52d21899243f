"""LightGCN graph vectors: normalised propagation, BPR learning, the Ray Train path, index.source."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttds.features.lightgcn import (
    LightGCN,
    LightGCNConfig,
    interaction_pairs,
    lightgcn_vectors,
    normalized_adjacency,
    train_lightgcn,
)


def clustered_sequences(n_users: int = 120, n_items: int = 60, clusters: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Each user buys 6 items of one cluster: the graph has `clusters` dense blocks."""
    rng = np.random.default_rng(seed)
    per = n_items // clusters
    return [rng.choice(np.arange(c * per, (c + 1) * per), 6, replace=False) for c in rng.integers(0, clusters, n_users)]


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


def test_bpr_training_learns_the_graph_blocks():
    seqs = clustered_sequences()
    item_v, user_v, history = train_lightgcn(seqs, 60, LightGCNConfig(dim=16, layers=2, epochs=15, batch_size=256, lr=1e-2))
    assert item_v.shape == (60, 16) and user_v.shape == (120, 16)
    assert history[-1] < history[0] * 0.7
    # a user scores the items of its own cluster above the others
    scores = user_v @ item_v.T
    own = np.zeros_like(scores, dtype=bool)
    for u, s in enumerate(seqs):
        c = int(s[0]) // 15
        own[u, c * 15 : (c + 1) * 15] = True
    assert scores[own].mean() > scores[~own].mean() + 0.5 * scores.std()
    # deterministic for a seed
    again, _, _ = train_lightgcn(seqs, 60, LightGCNConfig(dim=16, layers=2, epochs=15, batch_size=256, lr=1e-2))
    assert np.allclose(item_v, again)


@pytest.mark.slow
def test_ray_train_path_matches_in_process(ray_session):
    seqs = clustered_sequences(60, 40)
    cfg = dict(dim=8, layers=2, epochs=3, batch_size=128)
    local = lightgcn_vectors(seqs, 40, LightGCNConfig(**cfg, ray_train=False))
    remote = lightgcn_vectors(seqs, 40, LightGCNConfig(**cfg, ray_train=True))
    assert remote[0].shape == (40, 8) and remote[1].shape == (60, 8)
    assert np.allclose(local[0], remote[0], atol=1e-5) and np.allclose(local[1], remote[1], atol=1e-5)


def test_lightgcn_is_an_index_source(synthetic_corpus):
    from ttds.data.corpus import Corpus
    from ttds.config import FeatureConfig
    from ttds.features.build import build_features

    corpus = Corpus.open(synthetic_corpus)
    f = build_features(corpus, FeatureConfig(source="lightgcn", lightgcn=LightGCNConfig(dim=8, epochs=2, ray_train=False)))
    assert f.source == "lightgcn" and f.item_x.shape == (corpus.n_items, 8) and f.user_x.shape == (corpus.n_users, 8)
    assert np.isfinite(f.item_x).all() and f.text_dims == 0
