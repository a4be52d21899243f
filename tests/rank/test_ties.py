"""The tie rule (ttds.rank.ties) in every ranker: a constant-score ranker scores at chance and
favours no item ids; evaluations refuse a user count that differs from the split's."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ttds.eval.metrics import MetricAccumulator, check_user_count
from ttds.rank import (
    BeamConfig, ItemIndex, PrefixTrie, query_key, query_keys, rank_beam, rank_item_head, rank_popularity, rank_retrieval, tie_values, top_k,
)

RNG = np.random.default_rng(0)


def hr10(ranked: np.ndarray, targets: np.ndarray) -> float:
    return MetricAccumulator(ks=(10,)).update(ranked, targets).result()["HR@10"]


def assert_at_chance(ranked: np.ndarray, n_items: int, targets: np.ndarray) -> None:
    """HR@10 within 4 standard errors of 10 / n_items, and the recommended ids spread over the
    catalogue (a low-id bias would put their mean far below the middle)."""
    p = 10 / n_items
    se = np.sqrt(p * (1 - p) / len(targets))
    assert abs(hr10(ranked, targets) - p) < 4 * se + 1e-9, (hr10(ranked, targets), p)
    picked = ranked[ranked >= 0]
    assert abs(picked.mean() - (n_items - 1) / 2) < 0.1 * n_items, picked.mean()
    assert len(np.unique(picked)) > 0.9 * n_items


def test_top_k_constant_scores_are_at_chance_and_deterministic():
    n_items, n_users = 500, 20000
    keys = query_keys([[u, 7] for u in range(n_users)])
    _, idx = top_k(torch.zeros(n_users, n_items), 10, keys)
    assert_at_chance(idx.numpy(), n_items, RNG.integers(0, n_items, n_users))
    # deterministic, row by row: alone or in any batch, numpy or torch, a row ranks the same
    again = top_k(np.zeros((5, n_items), np.float32), 10, keys[100:105])[1]
    assert (again == idx[100:105].numpy()).all()
    # without ties top_k is torch.topk; ties only reorder equal scores, never across scores
    x = torch.randn(8, 300)
    assert torch.equal(top_k(x, 20)[1], x.topk(20).indices)
    tied = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.5, 2.0]])
    vals, idx = top_k(tied, 4, [3])
    assert vals.tolist() == [[2.0, 2.0, 2.0, 2.0]] and sorted(idx[0].tolist()) == [1, 2, 3, 5]
    t = tie_values(np.array([3]), np.array([[1, 2, 3, 5]]))[0]
    assert idx[0].tolist() == [c for _, c in sorted(zip(-t, [1, 2, 3, 5]))]
    # -inf (seen items) and NaN come last; the hash is a bijection per key (no tie on it)
    s = torch.tensor([[float("nan"), 0.0, float("-inf"), 0.0]])
    assert set(top_k(s, 2)[1][0].tolist()) == {1, 3}
    assert len(np.unique(tie_values(np.array([9]), np.arange(100000)[None])[0])) == 100000
    assert query_key([1, 2, 3]) == query_key(np.array([1, 2, 3])) != query_key([1, 2, 4])


def test_popularity_and_retrieval_ties_are_at_chance():
    n_items, n_users = 200, 6000
    histories = [RNG.integers(0, n_items, RNG.integers(1, 6)).tolist() for _ in range(n_users)]
    targets = RNG.integers(0, n_items, n_users)
    assert_at_chance(rank_popularity(np.ones(n_items), 10, histories), n_items, targets)
    # one list without histories: an id-neutral permutation too (not 0..9)
    assert sorted(rank_popularity(np.ones(n_items), 10).tolist()) != list(range(10))
    # faiss over identical vectors: every cosine ties; the index orders them by the rule
    index = ItemIndex(np.ones((n_items, 8), np.float32), gpu=False)
    scores, items = index.search(np.ones((n_users, 8), np.float32), 10, keys=query_keys(histories))
    assert_at_chance(items, n_items, targets)
    # ...exactly as top_k orders the same scores, with seen items fetched past
    seen = histories[:50]
    _, got = index.search(np.ones((50, 8), np.float32), 10, seen=seen, keys=query_keys(seen))
    masked = torch.zeros(50, n_items)
    for r, h in enumerate(seen):
        masked[r, h] = float("-inf")
    assert (got == top_k(masked, 10, query_keys(seen))[1].numpy()).all()


# ---------------------------------------------------------------------------- LM rankers


VOCAB, BASE, ALPHA, DEPTH = 64, 40, 4, 4  # 4**4 = 256 items, IDs of one length: equal probability under uniform logits


@pytest.fixture(scope="module")
def constant_model():
    """A real tiny Llama whose logits are constant (lm_head zeroed): every ID is equally likely."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()
    return model


def test_beam_and_item_head_with_constant_scores_are_at_chance(constant_model):
    torch.set_num_threads(1)
    ids = [[BASE + c for c in code] for code in itertools.product(range(ALPHA), repeat=DEPTH)]
    n_items = len(ids)
    trie = PrefixTrie.from_sequences(ids, list(range(n_items)), VOCAB)
    n_users = 1500
    prompts = [RNG.integers(1, BASE, RNG.integers(2, 6)).tolist() for _ in range(n_users)]
    targets = RNG.integers(0, n_items, n_users)
    beam = rank_beam(constant_model, prompts, trie, BeamConfig(beam_width=10, top_k=10), pad_id=0, batch_size=250)
    assert np.isfinite(beam.scores).all() and np.allclose(beam.scores, beam.scores[0, 0])  # truly tied
    assert_at_chance(beam.items, n_items, targets)
    # the same prompt alone: the same list (the tie key is the prompt's, not its batch position)
    alone = rank_beam(constant_model, prompts[:3], trie, BeamConfig(beam_width=10, top_k=10), pad_id=0, batch_size=1)
    assert (alone.items == beam.items[:3]).all()

    head = torch.nn.Linear(32, n_items, bias=False)
    torch.nn.init.zeros_(head.weight)
    heads = rank_item_head(constant_model.model, head, prompts, 10, pad_id=0, batch_size=250)
    assert_at_chance(heads.items, n_items, targets)

    id_head = torch.nn.Linear(32, 8)
    index = ItemIndex(np.ones((n_items, 8), np.float32), gpu=False)
    ret = rank_retrieval(constant_model.model, id_head, index, prompts[:600], 10, pad_id=0, pool="last", batch_size=200)
    assert_at_chance(ret.items, n_items, targets[:600])


def test_user_count_must_match_the_split():
    check_user_count(10, 10)
    with pytest.raises(RuntimeError, match="evaluated 9 users but the split has 10"):
        check_user_count(9, 10, "test split")
