"""Items added after training get a share of beam search's top k by ID prefix (ttds.rank.new_items)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ttds.rank import BeamConfig, PrefixTrie, rank_beam
from ttds.rank.new_items import first_new_item, new_item_rule, surface_new_items

# IDs of 3 codes (tokens 10.., 20.., 30..); items 0-5 trained, 6-8 added later
IDS = [
    [10, 20, 30], [10, 20, 31], [10, 21, 30], [11, 20, 30], [11, 21, 30], [12, 20, 30],  # trained
    [10, 20, 32], [11, 21, 31], [13, 20, 30],  # new: prefix of item 0/1, prefix of item 4, a prefix no trained item has
]
VOCAB = 40


@pytest.fixture()
def rule():
    trie = PrefixTrie.from_sequences(IDS, list(range(len(IDS))), VOCAB)
    return new_item_rule(trie, levels=3, n_items=len(IDS), first_new=6, share=0.2)


def test_prefixes_group_new_items_under_their_trained_neighbours(rule):
    assert rule.prefix[0] == rule.prefix[1] == rule.prefix[6]  # <10><20>
    assert rule.prefix[4] == rule.prefix[7] and rule.prefix[2] != rule.prefix[0]
    assert sorted(int(i) for g in rule.members.values() for i in g) == [6, 7, 8]
    assert rule.slots(10) == 2 and rule.slots(5) == 1


def test_a_new_item_follows_the_best_result_of_its_prefix_and_pushes_out_the_last():
    trie = PrefixTrie.from_sequences(IDS, list(range(len(IDS))), VOCAB)
    rule = new_item_rule(trie, 3, len(IDS), 6, share=0.2)  # k=5: one slot
    items = np.array([[4, 2, 0, 3, 5, 1]])
    scores = -np.arange(6, dtype=np.float32)[None]
    got, got_scores = surface_new_items(items, scores, rule, 5, np.array([7]))
    assert got.tolist() == [[4, 7, 2, 0, 3]]  # 7 shares item 4's prefix; 5 (last) pushed out
    assert got_scores[0, 1] == scores[0, 0]  # a new item takes the score of the result it follows
    # seen: 7 may not come back; the next prefix with a new item is item 0's (item 6)
    got, _ = surface_new_items(items, scores, rule, 5, np.array([7]), seen=[[7]])
    assert got.tolist() == [[4, 2, 0, 6, 3]]
    # a new item the search returned itself counts against the slots: nothing added
    got, _ = surface_new_items(np.array([[8, 4, 2, 0, 3, 5]]), scores, rule, 5, np.array([7]))
    assert got.tolist() == [[8, 4, 2, 0, 3]]


def test_no_rule_without_added_items_or_with_share_zero():
    trie = PrefixTrie.from_sequences(IDS, list(range(len(IDS))), VOCAB)
    assert new_item_rule(trie, 3, len(IDS), None, 0.1) is None and new_item_rule(trie, 3, len(IDS), 6, 0.0) is None
    assert first_new_item({}) is None and first_new_item({"catalogue": {"version": 1, "added_items": 0}}) is None
    assert first_new_item({"catalogue": {"version": 3, "added_items": 3, "items": 9}}) == 6


def test_rank_beam_with_the_rule_returns_new_items_and_keeps_the_search_order():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)).eval()
    trie = PrefixTrie.from_sequences(IDS, list(range(len(IDS))), VOCAB)
    rule = new_item_rule(trie, 3, len(IDS), 6, share=0.2)
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    plain = rank_beam(model, prompts, trie, BeamConfig(beam_width=9, top_k=5), pad_id=0)
    ruled = rank_beam(model, prompts, trie, BeamConfig(beam_width=9, top_k=5), pad_id=0, new_items=rule)
    for p, r in zip(plain.items, ruled.items):
        assert len(set(r)) == 5 and (r >= 6).sum() >= 1  # width 9 holds every prefix: a slot is always filled
        warm = [i for i in r if i < 6]
        assert warm == [i for i in p if i < 6][: len(warm)]  # trained items keep their order
