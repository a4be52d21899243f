"""The LightGCN trainer (ttds.train.lightgcn): BPR learning, the Ray Train path, index.source=lightgcn."""

from __future__ import annotations

import numpy as np
import pytest

from ttds.config import FeatureConfig, LightGCNConfig
from ttds.data.corpus import Corpus
from ttds.features.build import build_features
from ttds.train.lightgcn import lightgcn_vectors, train_lightgcn
from ttds.train.tokenizer_job import make_features


def clustered_sequences(n_users: int = 120, n_items: int = 60, clusters: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Each user buys 6 items of one cluster: the graph has `clusters` dense blocks."""
    rng = np.random.default_rng(seed)
    per = n_items // clusters
    return [rng.choice(np.arange(c * per, (c + 1) * per), 6, replace=False) for c in rng.integers(0, clusters, n_users)]


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
    corpus = Corpus.open(synthetic_corpus)
    cfg = FeatureConfig(source="lightgcn", lightgcn=LightGCNConfig(dim=8, epochs=2, ray_train=False))
    f = make_features(corpus, cfg)
    assert f.source == "lightgcn" and f.item_x.shape == (corpus.n_items, 8) and f.user_x.shape == (corpus.n_users, 8)
    assert np.isfinite(f.item_x).all() and f.text_dims == 0
    # features sit below train: build_features is handed the trainer, and says so when it is not
    with pytest.raises(ValueError, match="needs a LightGCN trainer"):
        build_features(corpus, cfg)
