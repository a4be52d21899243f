"""TTDS model pieces: loss terms reach the right modules, prompts, re-indexing remaps targets."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ttds.index.table import SemanticIDTable
from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
from ttds.index.rq import RQConfig
from ttds.llm.backbone import BackboneConfig, add_semantic_tokens, apply_lora, load_backbone
from ttds.llm.model import TTDSModel
from ttds.llm.prompts import IGNORE, PromptBuilder, TokenTable, semantic_vocabulary
from ttds.rank.pad import left_pad
from ttds.train.ttds_worker import Indexer, code_vector_map

N_ITEMS, N_USERS, X_DIM, M, N = 40, 30, 16, 3, 8


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    towers = TwinTowerTokenizer(TwinTowerConfig(
        item=RQConfig(input_dim=X_DIM, code_dim=8, levels=M, codebook_size=N, hidden_dims=(16,)),
        user=RQConfig(input_dim=X_DIM, code_dim=8, levels=2, codebook_size=N, hidden_dims=(16,)),
    ))
    item_x = rng.normal(size=(N_ITEMS, X_DIM)).astype(np.float32)
    user_x = rng.normal(size=(N_USERS, X_DIM)).astype(np.float32)
    towers.item.quantizer.init_codebooks(towers.item.latents(torch.as_tensor(item_x)))
    towers.user.quantizer.init_codebooks(towers.user.latents(torch.as_tensor(user_x)))
    items = SemanticIDTable.from_codes("item", np.arange(N_ITEMS), towers.encode_items(torch.as_tensor(item_x)).numpy(), N)
    users = SemanticIDTable.from_codes("user", np.arange(N_USERS), towers.encode_users(torch.as_tensor(user_x)).numpy(), N)
    cfg = BackboneConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, lora=True)
    backbone, tok = load_backbone(cfg, ["red guitar", "blue drum"])
    add_semantic_tokens(backbone, tok, semantic_vocabulary(M, 2, N, 8), code_vector_map(towers))
    backbone = apply_lora(backbone, cfg)
    model = TTDSModel(backbone, towers, 32, X_DIM)
    vocab = tok.get_vocab()
    builder = PromptBuilder(tok, TokenTable.from_table(items, vocab), TokenTable.from_table(users, vocab), item_titles=[f"item {i}" for i in range(N_ITEMS)])
    return model, tok, builder, items, users, item_x, user_x


def test_semantic_ids_are_single_tokens_and_prompts_label_only_targets(parts):
    _, tok, builder, items, *_ = parts
    assert tok.tokenize(items.id_string(3)) == items.tokens(3)
    ids, labels = builder.next_item(user=2, items=[5, 7], t=1)
    target_tokens = builder.items.get(5) + builder.items.get(7)
    assert [x for x in labels if x != IGNORE] == target_tokens
    assert ids[-len(target_tokens):] == target_tokens
    prompt = builder.next_item_prompt(2, [5], t=1)
    assert ids[: len(prompt)] == prompt  # the eval prompt is the training sequence's prefix


def test_next_item_prompts_can_leave_out_the_user_id(parts):
    """tasks.user_id_in_next_item=false: no user tokens in next-item prompts (training and eval
    alike); user prediction still names users by their IDs."""
    _, tok, builder, items, users, *_ = parts
    plain = PromptBuilder(tok, builder.items, builder.users, next_item_user_id=False)
    user_toks = builder.users.get(2)
    with_id = builder.next_item_prompt(2, [5, 7], 0)
    without = plain.next_item_prompt(2, [5, 7], 0)
    assert without == plain.next_item_prompt(9, [5, 7], 0)  # the user no longer changes the prompt
    assert len(with_id) - len(without) == len(user_toks)
    assert not set(user_toks) & set(without) and set(user_toks) <= set(with_id)
    ids, labels = plain.next_item(2, [5, 7], 0)
    assert ids == without  # the training sequence of history [5, 7] is its eval prompt
    up_ids, up_labels = plain.user_pred(4, [2, 3], 0)
    assert [x for x in up_labels if x != IGNORE] == builder.users.get(2) + builder.users.get(3)


def test_each_loss_term_reaches_its_modules(parts):
    model, _, builder, _, _, item_x, user_x = parts
    seqs, labels = zip(*[builder.next_item(u, [u % N_ITEMS, (u + 1) % N_ITEMS], 0) for u in range(4)])
    ids, mask, lab = left_pad(list(seqs), builder.pad_id, list(labels))
    id_ids, id_mask, _ = left_pad(builder.id_sequences([0, 1, 2]), builder.pad_id)
    x = torch.as_tensor(item_x[:3])

    def grads(**kw):
        model.zero_grad()
        out = model(ids, mask, lab, **kw)
        out["loss"].backward()
        lora = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
        return {
            "backbone": any(g is not None and g.abs().sum() > 0 for g in lora),
            "towers": any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.towers.parameters()),
            "head": model.id_head.weight.grad is not None and model.id_head.weight.grad.abs().sum() > 0,
            "out": out,
        }

    llm_only = grads(alpha=0.0)
    assert llm_only["backbone"] and not llm_only["towers"] and not llm_only["head"]
    with_id = grads(alpha=1.0, beta=0.0, id_input_ids=id_ids, id_attention_mask=id_mask, id_targets=x)
    assert with_id["head"] and with_id["backbone"] and not with_id["towers"] and with_id["out"]["id_loss"] > 0
    full = grads(alpha=1.0, beta=1.0, id_input_ids=id_ids, id_attention_mask=id_mask, id_targets=x, item_x=x, user_x=torch.as_tensor(user_x[:3]))
    assert full["towers"] and full["out"]["token_loss"] > 0
    expected = full["out"]["llm_loss"] + 1.0 * (full["out"]["id_loss"] + 1.0 * full["out"]["token_loss"])
    assert torch.isclose(full["out"]["loss"].detach(), expected, rtol=1e-5)


def test_reindex_remaps_targets_consistently(parts):
    model, tok, builder, items, users, item_x, user_x = parts
    indexer = Indexer(items, users, suffixes=8)
    moved_x = item_x.copy()
    moved_x[:10] = moved_x[10:20]  # items 0-9 now look like items 10-19: their IDs must move
    stats = indexer.reassign(model.towers, moved_x, user_x)
    assert stats["reindexed"] == 1 and stats["item_churn"] > 0
    indexer.items.assert_unique()
    vocab = tok.get_vocab()
    new_builder = PromptBuilder(tok, TokenTable.from_table(indexer.items, vocab), builder.users)
    for item in range(N_ITEMS):
        ids, labels = new_builder.next_item(0, [item], 0)
        assert [x for x in labels if x != IGNORE] == [vocab[t] for t in indexer.items.tokens(entity_id=item)]
    # an item whose codes collide with another's gets a suffix, and the two IDs stay distinct
    same = [i for i in range(10) if indexer.items.codes[i].tolist() == indexer.items.codes[i + 10].tolist()]
    for i in same:
        assert indexer.items.tokens(entity_id=i) != indexer.items.tokens(entity_id=i + 10)


def test_reindex_keeps_ids_when_suffix_tokens_would_run_out(parts):
    model, _, _, items, users, item_x, user_x = parts
    indexer = Indexer(items, users, suffixes=2)
    same_x = np.repeat(item_x[:1], N_ITEMS, axis=0)  # every item identical: N_ITEMS-way collision
    stats = indexer.reassign(model.towers, same_x, user_x)
    assert stats["reindexed"] == 0 and indexer.items is items and "item_reindex_skipped_max_suffix" in stats
