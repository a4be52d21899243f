"""Prefix trie and constrained beam search, on tiny real Llama models (CPU, seconds)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ttds.rank import BeamConfig, PrefixTrie, beam_search, exclusion_table, left_pad, rank_beam


def pad(prompts):
    """(input_ids, mask) of left-padded prompts (pad id 0), what beam_search takes."""
    return left_pad(prompts, 0)[:2]


def rank_items(model, prompts, trie, cfg, batch_size=64, exclude=None, node_bias=None):
    return rank_beam(model, prompts, trie, cfg, pad_id=0, batch_size=batch_size, seen=exclude, node_bias=node_bias).items

VOCAB = 72
CODE_BASE, CODE_SIZE, M = 40, 6, 4  # position j uses tokens CODE_BASE + 6j .. + 6j + 5
SUFFIX_BASE = 64  # collision suffix tokens 64..71


def make_catalogue(n_items: int, alphabet: int, seed: int) -> list[list[int]]:
    """Random M-token IDs; colliding codes get a suffix token, as the real ID table does."""
    rng = random.Random(seed)
    codes = [tuple(CODE_BASE + CODE_SIZE * j + rng.randrange(alphabet) for j in range(M)) for _ in range(n_items)]
    groups: dict[tuple[int, ...], int] = {}
    for c in codes:
        groups[c] = groups.get(c, 0) + 1
    seen: dict[tuple[int, ...], int] = {}
    ids = []
    for c in codes:
        if groups[c] == 1:
            ids.append(list(c))
        else:
            ids.append(list(c) + [SUFFIX_BASE + seen.get(c, 0)])
            seen[c] = seen.get(c, 0) + 1
    return ids


def tiny_llama(seed: int = 0, hidden: int = 32, layers: int = 1) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the
    thread pool's contention made training 50x slower (1 s vs 53 s): run on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------- trie


def test_trie_rejects_duplicates_and_prefixes():
    with pytest.raises(ValueError, match="identical"):
        PrefixTrie.from_sequences([[1, 2, 3], [4, 5, 6], [1, 2, 3]], [0, 1, 2], 10)
    with pytest.raises(ValueError, match="prefix"):
        PrefixTrie.from_sequences([[1, 2, 3, 4], [1, 2, 3]], [0, 1], 10)
    with pytest.raises(ValueError, match="prefix"):  # prefix not adjacent in input order
        PrefixTrie.from_sequences([[1, 2], [0, 9], [1, 2, 5, 5], [1, 3]], [0, 1, 2, 3], 10)
    with pytest.raises(ValueError, match="tokens must lie"):
        PrefixTrie.from_sequences([[1, 2, 10]], [0], 10)
    with pytest.raises(ValueError, match="sequences but"):
        PrefixTrie.from_sequences([[1, 2]], [0, 1], 10)


def _brute_children(seqs: list[list[int]], prefix: list[int]) -> set[int]:
    n = len(prefix)
    return {s[n] for s in seqs if len(s) > n and s[:n] == prefix}


def _walk(trie: PrefixTrie, prefix: list[int]) -> int:
    node = torch.tensor([0])
    for tok in prefix:
        node = trie.step(node, torch.tensor([tok]))
    return int(node[0])


def test_allowed_mask_matches_brute_force():
    seqs = make_catalogue(300, alphabet=4, seed=1)
    assert {len(s) for s in seqs} == {M, M + 1}, "want collisions so IDs have two lengths"
    items = [1000 + i for i in range(len(seqs))]
    trie = PrefixTrie.from_sequences(seqs, items, VOCAB)
    assert trie.max_depth == M + 1 and trie.min_depth == M and trie.num_items == len(seqs)

    rng = random.Random(0)
    prefixes = {tuple(s[:d]) for s in seqs for d in range(len(s) + 1)}
    invalid = [[rng.randrange(VOCAB) for _ in range(rng.randrange(1, 5))] for _ in range(50)]
    queries = [list(p) for p in sorted(prefixes)] + invalid
    nodes = torch.tensor([_walk(trie, p) for p in queries])

    mask = trie.allowed_mask(nodes)
    assert mask.shape == (len(queries), VOCAB) and mask.dtype == torch.bool
    child_tok, child_ok = trie.children(nodes)
    terminal = trie.item_at(nodes)
    by_seq = {tuple(s): it for s, it in zip(seqs, items)}
    for row, prefix in enumerate(queries):
        want = _brute_children(seqs, prefix) if tuple(prefix) in prefixes else set()
        assert set(torch.nonzero(mask[row]).flatten().tolist()) == want, prefix
        got_children = child_tok[row][child_ok[row]].tolist()
        assert got_children == sorted(want), prefix
        assert int(terminal[row]) == by_seq.get(tuple(prefix), -1)
        assert (int(nodes[row]) >= 0) == (tuple(prefix) in prefixes)
    assert torch.equal(trie.is_terminal(nodes), terminal >= 0)
    # lookup reads whole sequences back as items, ignoring tokens after a complete ID
    padded = torch.tensor([s + [-1] * (M + 1 - len(s)) for s in seqs])
    assert trie.lookup(padded).tolist() == items
    assert trie.lookup(torch.tensor([[0, 0, 0, 0, 0]])).tolist() == [-1]


# ---------------------------------------------------------------------------- beam search


@pytest.fixture(scope="module")
def random_model() -> LlamaForCausalLM:
    return tiny_llama(seed=3, hidden=48, layers=2)


PROMPTS = [[1, 2, 3, 41, 47, 53, 59, 4], [5, 6], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [20]]


def _check_ranked(res, by_item: dict[int, list[int]]):
    for row in range(res.items.shape[0]):
        items = res.items[row].tolist()
        valid = [i for i in items if i >= 0]
        assert len(valid) == len(set(valid)), "an item appears twice"
        assert items[: len(valid)] == valid, "-1 padding must come last"
        assert all(i in by_item for i in valid)
        scores = res.scores[row][: len(valid)]
        assert torch.all(scores[:-1] >= scores[1:]), "not sorted by score"
        assert torch.all(torch.isfinite(scores))
        for r, item in enumerate(valid):  # the sequence is that item's ID, then -1 padding
            seq = res.sequences[row, r].tolist()
            ident = by_item[item]
            assert seq[: len(ident)] == ident and all(t == -1 for t in seq[len(ident) :])


def test_constrained_returns_valid_unique_sorted_items_and_is_padding_invariant(random_model):
    seqs = make_catalogue(200, alphabet=5, seed=2)
    trie = PrefixTrie.from_sequences(seqs, list(range(len(seqs))), VOCAB)
    by_item = dict(enumerate(seqs))
    cfg = BeamConfig(beam_width=12, top_k=10)
    ids, mask = pad(PROMPTS)
    batch = beam_search(random_model, ids, mask, trie, cfg)
    assert batch.items.shape == (4, 10) and batch.sequences.shape == (4, 10, trie.max_depth)
    assert (batch.items >= 0).all()
    _check_ranked(batch, by_item)
    for row, prompt in enumerate(PROMPTS):
        alone = beam_search(random_model, *pad([prompt]), trie, cfg)
        torch.testing.assert_close(alone.scores[0], batch.scores[row], atol=1e-4, rtol=1e-4)
        assert alone.items[0].tolist() == batch.items[row].tolist()
    assert random_model.training is False


def _exact_log_prob(model, prompt: list[int], ident: list[int]) -> float:
    """log P(ID | prompt) by one plain forward pass (no cache, no padding)."""
    ids = torch.tensor([prompt + ident])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    start = len(prompt) - 1
    return float(sum(logp[start + j, t] for j, t in enumerate(ident)))


def test_wide_beam_is_exact_over_variable_length_ids(random_model):
    """With beam_width >= nodes per depth nothing is pruned: the scores must equal exact
    log P(ID | prompt) for every item (checks KV cache reuse, positions under left padding,
    finished beams kept in the pool, and full-vocabulary normalisation)."""
    seqs = make_catalogue(14, alphabet=2, seed=5)
    assert {len(s) for s in seqs} == {M, M + 1}
    trie = PrefixTrie.from_sequences(seqs, list(range(len(seqs))), VOCAB)
    cfg = BeamConfig(beam_width=16, top_k=14)
    res = beam_search(random_model, *pad(PROMPTS), trie, cfg)
    for row, prompt in enumerate(PROMPTS):
        exact = {i: _exact_log_prob(random_model, prompt, s) for i, s in enumerate(seqs)}
        assert sorted(res.items[row].tolist()) == list(range(len(seqs)))
        for item, score in zip(res.items[row].tolist(), res.scores[row].tolist()):
            assert score == pytest.approx(exact[item], abs=1e-4)
        want_order = sorted(exact, key=lambda i: -exact[i])
        assert res.items[row].tolist()[:3] == want_order[:3]


def test_excluded_items_never_take_a_slot_and_the_rest_keep_their_exact_order(random_model):
    """Seen-item exclusion: with a beam wide enough to be exact, the ranking with exclusion is
    the full ranking with the banned items removed (not a shorter list), scores unchanged."""
    seqs = make_catalogue(14, alphabet=2, seed=5)
    trie = PrefixTrie.from_sequences(seqs, list(range(len(seqs))), VOCAB)
    cfg = BeamConfig(beam_width=16, top_k=10)
    full = beam_search(random_model, *pad(PROMPTS), trie, BeamConfig(beam_width=16, top_k=14))
    banned = [full.items[0, :3].tolist(), [], [int(full.items[2, 5])], list(range(14))]
    res = beam_search(random_model, *pad(PROMPTS), trie, cfg, exclusion_table(banned, 14))
    for row in range(len(PROMPTS)):
        want = [i for i in full.items[row].tolist() if i not in banned[row]][:10]
        got = [i for i in res.items[row].tolist() if i >= 0]
        assert got == want
        torch.testing.assert_close(res.scores[row, : len(got)], full.scores[row][[full.items[row].tolist().index(i) for i in got]])
    assert res.items[3].eq(-1).all()  # everything seen: nothing left to recommend

    # a narrow beam on a large catalogue: the banned items are masked before selection, so
    # the lists stay full (filtering the returned top-k instead would leave them short)
    seqs = make_catalogue(200, alphabet=5, seed=2)
    trie = PrefixTrie.from_sequences(seqs, list(range(len(seqs))), VOCAB)
    narrow = BeamConfig(beam_width=10, top_k=10)
    plain = rank_items(random_model, PROMPTS, trie, narrow)
    seen = [row[:6].tolist() for row in plain]
    ranked = rank_items(random_model, PROMPTS, trie, narrow, exclude=seen)
    for row, s in zip(ranked, seen):
        assert (row >= 0).all() and not set(row.tolist()) & set(s)
    with pytest.raises(ValueError, match="seen has 1 rows for 4 prompts"):
        rank_items(random_model, PROMPTS, trie, narrow, exclude=[[1]])


def test_popularity_prior_telescopes_and_a_wide_beam_ranks_exactly_by_the_penalised_score(random_model):
    """node_bias = trie.prior_bias(w, g): along an ID the biases sum to -g log(w_item / sum w), so a
    beam wide enough to be exact returns log P(ID | prompt) - g log prior(item), in that order."""
    import math

    seqs = make_catalogue(14, alphabet=2, seed=5)
    trie = PrefixTrie.from_sequences(seqs, list(range(len(seqs))), VOCAB)
    weight = [1.0 + 5 * (i % 3) + i for i in range(len(seqs))]
    g = 0.7
    bias = trie.prior_bias(weight, g)
    for item, ident in enumerate(seqs):
        path = [_walk(trie, ident[: d + 1]) for d in range(len(ident))]
        assert float(bias[path].sum()) == pytest.approx(-g * math.log(weight[item] / sum(weight)), abs=1e-5)
    res = beam_search(random_model, *pad(PROMPTS), trie, BeamConfig(beam_width=16, top_k=14), node_bias=bias)
    for row, prompt in enumerate(PROMPTS):
        want = {i: _exact_log_prob(random_model, prompt, s) - g * math.log(weight[i] / sum(weight)) for i, s in enumerate(seqs)}
        for item, score in zip(res.items[row].tolist(), res.scores[row].tolist()):
            assert score == pytest.approx(want[item], abs=1e-4)
        assert res.items[row].tolist()[:3] == sorted(want, key=lambda i: -want[i])[:3]


def test_a_strong_prior_moves_a_narrow_beam_to_less_popular_items(random_model):
    seqs = make_catalogue(200, alphabet=5, seed=2)
    trie = PrefixTrie.from_sequences(seqs, list(range(len(seqs))), VOCAB)
    weight = np.where(np.arange(200) < 100, 1000.0, 1.0)  # items 0-99 popular, 100-199 rare
    narrow = BeamConfig(beam_width=10, top_k=10)
    plain = rank_items(random_model, PROMPTS, trie, narrow)
    debiased = rank_items(random_model, PROMPTS, trie, narrow, node_bias=trie.prior_bias(weight, 1.0))
    assert (debiased >= 100).mean() > (plain >= 100).mean() and (debiased >= 100).mean() > 0.9
    with pytest.raises(ValueError, match="constrained"):
        beam_search(random_model, *pad(PROMPTS), trie, BeamConfig(10, 10, constrained=False), node_bias=trie.prior_bias(weight, 1.0))
    with pytest.raises(ValueError, match="nodes"):
        beam_search(random_model, *pad(PROMPTS), trie, narrow, node_bias=torch.zeros(3))
    with pytest.raises(ValueError, match="> 0"):
        trie.prior_bias(np.zeros(200), 1.0)


def test_fewer_items_than_top_k_pads_with_minus_one(random_model):
    trie = PrefixTrie.from_sequences([[40, 46, 52, 58], [41, 46, 52, 58], [40, 47, 52, 58]], [5, 6, 7], VOCAB)
    res = beam_search(random_model, *pad(PROMPTS[:2]), trie, BeamConfig(beam_width=8, top_k=5))
    assert sorted(res.items[0, :3].tolist()) == [5, 6, 7]
    assert res.items[:, 3:].eq(-1).all() and torch.isinf(res.scores[:, 3:]).all()
    assert res.sequences[:, 3:].eq(-1).all()


def test_unconstrained_runs_and_maps_sequences_to_items(random_model):
    seqs = make_catalogue(50, alphabet=3, seed=4)
    trie = PrefixTrie.from_sequences(seqs, list(range(len(seqs))), VOCAB)
    res = beam_search(random_model, *pad(PROMPTS), trie, BeamConfig(beam_width=6, top_k=4, constrained=False))
    assert res.items.shape == (4, 4) and res.sequences.shape == (4, 4, trie.max_depth)
    for row in range(4):  # whatever it generated, the item column agrees with a trie lookup
        for r in range(4):
            item = int(res.items[row, r])
            if item >= 0:
                assert int(trie.lookup(res.sequences[row, r : r + 1])[0]) == item


# ---------------------------------------------------------------------------- planted answer


@pytest.fixture(scope="module")
def overfit():
    """A tiny Llama trained for a few seconds so P1 -> ID(item 7) and P2 -> ID(item 3)."""
    seqs = make_catalogue(40, alphabet=3, seed=7)
    trie = PrefixTrie.from_sequences(seqs, list(range(len(seqs))), VOCAB)
    p1, p2 = [1, 2, 3, 4, 5, 6], [9, 8, 7]
    model = tiny_llama(seed=11, hidden=32, layers=1).train()
    ids, mask = pad([p1 + seqs[7], p2 + seqs[3]])
    labels = torch.full_like(ids, -100)
    for row, (prompt, ident) in enumerate([(p1, seqs[7]), (p2, seqs[3])]):
        n = ids.shape[1]
        labels[row, n - len(ident) :] = torch.tensor(ident)  # loss on the ID tokens only
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 0.05
    return model, trie, [p1, p2]


def test_planted_answer_is_ranked_first(overfit):
    model, trie, prompts = overfit
    res = beam_search(model, *pad(prompts), trie, BeamConfig(beam_width=20, top_k=10))
    assert res.items[:, 0].tolist() == [7, 3]
    assert (res.items >= 0).all()
    assert rank_items(model, prompts, trie, BeamConfig(beam_width=20, top_k=10), batch_size=1)[:, 0].tolist() == [7, 3]


def test_unconstrained_agrees_on_top1_of_overfit_model(overfit):
    model, trie, prompts = overfit
    con = beam_search(model, *pad(prompts), trie, BeamConfig(beam_width=20, top_k=10))
    unc = beam_search(model, *pad(prompts), trie, BeamConfig(beam_width=20, top_k=10, constrained=False))
    assert unc.items[:, 0].tolist() == [7, 3]
    # Same full-vocabulary normalisation. Unconstrained always generates max_depth tokens, so
    # for a shorter ID its score also holds the (<= 0) log-prob of the token after the ID.
    for row in range(2):
        id_len = int((con.sequences[row, 0] >= 0).sum())
        if id_len == trie.max_depth:
            assert float(unc.scores[row, 0]) == pytest.approx(float(con.scores[row, 0]), abs=1e-4)
        else:
            assert float(unc.scores[row, 0]) <= float(con.scores[row, 0]) + 1e-4


def test_beam_config_validates():
    with pytest.raises(ValueError):
        BeamConfig(beam_width=5, top_k=6)
    with pytest.raises(ValueError):
        BeamConfig(beam_width=0)
