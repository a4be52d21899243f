"""Balanced last-level assignment: colliding entities get distinct last codes, others keep theirs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttds.index.balanced import spread_last_level
from ttds.index.collisions import collision_rate
from ttds.index.rq import RQConfig, RQTokenizer


def test_colliding_pair_is_split_and_the_closer_entity_keeps_its_code():
    prefix = np.array([[1, 2], [1, 2], [3, 4]])
    d = np.array(
        [
            [0.1, 0.5, 0.9, 2.0],  # nearest code 0
            [0.2, 0.3, 0.9, 2.0],  # nearest code 0 too (collides), next best 1
            [0.0, 0.5, 0.9, 2.0],  # code 0 under another prefix: no collision
        ]
    )
    codes = spread_last_level(prefix, d)
    assert codes.tolist() == [0, 1, 0]


def test_non_colliding_entities_keep_their_nearest_code():
    rng = np.random.default_rng(0)
    prefix = rng.integers(0, 4, (50, 3))
    d = rng.random((50, 16))
    codes = spread_last_level(prefix, d)
    keys = np.concatenate([prefix, d.argmin(1)[:, None]], 1)
    _, inv, cnt = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    groups = {tuple(p) for p, c in zip(prefix, cnt[inv.reshape(-1)]) if c > 1}
    untouched = np.array([tuple(p) not in groups for p in prefix])
    assert untouched.any()
    assert (codes[untouched] == d.argmin(1)[untouched]).all()
    assert collision_rate(np.concatenate([prefix, codes[:, None]], 1)) == 0.0


def test_group_larger_than_the_codebook_keeps_only_the_unavoidable_collisions():
    prefix = np.zeros((6, 1), dtype=np.int64)
    d = np.tile(np.arange(4, dtype=float), (6, 1))  # 6 entities, 4 codes: 2 must collide
    codes = spread_last_level(prefix, d)
    assert len(set(codes.tolist())) == 4
    assert collision_rate(np.concatenate([prefix, codes[:, None]], 1)) == pytest.approx(2 / 6)  # 6 entities, 4 distinct IDs


def test_rq_tokenizer_balanced_encoding_splits_duplicate_inputs():
    torch.manual_seed(0)
    base = torch.randn(64, 8)
    x = torch.cat([base, base[:10]])  # 10 exact duplicates: nearest-code RQ must collide on them
    tok = RQTokenizer(RQConfig(input_dim=8, code_dim=4, levels=2, codebook_size=16, hidden_dims=(16,)))
    tok.train()
    tok(x)  # k-means initialisation of the codebooks
    nearest = tok.encode(x, last_level="nearest").numpy()
    balanced = tok.encode(x).numpy()  # the config's default rule: balanced
    assert tok.config.last_level == "balanced"
    assert collision_rate(nearest) >= 10 / 74  # at least the duplicates
    assert collision_rate(balanced) < collision_rate(nearest)
    assert (balanced[:, 0] == nearest[:, 0]).all()  # only the last level moves
    assert (tok.encode(x).numpy() == balanced).all()  # deterministic


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="last_level"):
        RQConfig(input_dim=4, last_level="sinkhorn")
