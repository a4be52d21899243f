"""Per-item input vectors (backbone.item_embedding): where they go, that they stay causal, that
they follow re-indexing, and that a saved model brings them back (separate and tied)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

N_ITEMS, LEVELS, N, H = 12, 3, 4, 32


def _setup():
    from ttds.index.table import SemanticIDTable
    from ttds.llm.backbone import BackboneConfig, add_semantic_tokens, load_backbone
    from ttds.llm.prompts import semantic_vocabulary

    cfg = BackboneConfig(hidden_size=H, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, lora=False, full_finetune=True)
    backbone, tok = load_backbone(cfg, ["red guitar", "blue drum"])
    add_semantic_tokens(backbone, tok, semantic_vocabulary(LEVELS, 2, N, 4))
    codes = np.array([[i % N, (i // N) % N, (i * 3) % N] for i in range(N_ITEMS)])
    codes[5] = codes[4]  # a collision: items 4 and 5 get suffix tokens
    items = SemanticIDTable.from_codes("item", np.arange(N_ITEMS), codes, N)
    assert items.suffix[4] == 0 and items.suffix[5] == 1 and items.suffix[3] < 0
    return cfg, backbone, tok, items


def _ids(tok, items, seq, user=None):
    from ttds.llm.prompts import TokenTable

    table = TokenTable.from_table(items, tok.get_vocab())
    out = [tok.bos_token_id or 0, 7]
    starts = []
    for i in seq:
        starts.append(len(out))
        out += table.get(i)
    if user is not None:
        out += user
    return torch.tensor([out]), starts


def test_vectors_land_on_the_last_token_of_each_known_id_and_stay_causal():
    from ttds.index.table import level_token
    from ttds.llm.item_embedding import build_item_embedding

    _, backbone, tok, items = _setup()
    emb = build_item_embedding("separate", N_ITEMS, LEVELS, N, tok, backbone)
    emb.set_items(items)
    user = [tok.convert_tokens_to_ids(level_token("user", lv, 1)) for lv in range(2)]
    ids, starts = _ids(tok, items, [3, 5, 4, 11], user=user)
    rows, last, got = emb.item_positions(ids)
    # items 4 and 5 end at their suffix tokens (one past their M codes); the others at their M-th code;
    # the user ID is not an item
    want_last = [starts[0] + 2, starts[1] + 3, starts[2] + 3, starts[3] + 2]
    assert rows.tolist() == [0, 0, 0, 0] and got.tolist() == [3, 5, 4, 11] and last.tolist() == want_last

    x = torch.randn(1, ids.shape[1], H, requires_grad=True)
    assert torch.equal(emb(x, ids), x)  # separate starts at zero: a new module changes nothing
    with torch.no_grad():
        emb.weight.normal_()
    out = emb(x, ids)
    changed = (out - x).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert changed == want_last
    assert torch.allclose(out[0, want_last[1]] - x[0, want_last[1]], emb.weight[5])
    # the M-th code of a colliding item (it predicts the suffix) gets nothing: no leak of the suffix
    assert torch.equal(out[0, starts[1] + 2], x[0, starts[1] + 2]) and torch.equal(out[0, starts[2] + 2], x[0, starts[2] + 2])
    # gradients reach exactly the items in the input
    out.sum().backward()
    assert sorted(emb.weight.grad.abs().sum(-1).nonzero().flatten().tolist()) == [3, 4, 5, 11]

    # one token at a time (KV-cache decoding) never holds a complete ID
    assert emb.item_positions(ids[:, -1:])[0].numel() == 0


def test_vectors_follow_a_re_index():
    from ttds.index.table import SemanticIDTable
    from ttds.llm.item_embedding import build_item_embedding

    _, backbone, tok, items = _setup()
    emb = build_item_embedding("separate", N_ITEMS, LEVELS, N, tok, backbone)
    emb.set_items(items)
    ids, _ = _ids(tok, items, [2])
    assert emb.item_positions(ids)[2].tolist() == [2]
    # item 2 and item 9 swap codes: the same tokens now name item 9
    codes = items.codes.copy()
    codes[[2, 9]] = codes[[9, 2]]
    emb.set_items(SemanticIDTable.from_codes("item", np.arange(N_ITEMS), codes, N))
    assert emb.item_positions(ids)[2].tolist() == [9]


def test_modes_are_checked():
    from ttds.llm.item_embedding import build_item_embedding

    _, backbone, tok, _ = _setup()
    assert build_item_embedding("none", N_ITEMS, LEVELS, N, tok, backbone) is None
    with pytest.raises(ValueError, match="expected one of"):
        build_item_embedding("shared", N_ITEMS, LEVELS, N, tok, backbone)
    with pytest.raises(ValueError, match="item_head_weight"):
        build_item_embedding("tied", N_ITEMS, LEVELS, N, tok, backbone)


@pytest.mark.parametrize("mode", ["separate", "tied"])
def test_a_saved_model_brings_its_item_vectors_back(tmp_path, mode):
    from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
    from ttds.llm.item_embedding import build_item_embedding
    from ttds.llm.model import TTDSModel
    from ttds.llm.model_io import load_model, save_model

    _, backbone, tok, items = _setup()
    towers = TwinTowerTokenizer(TwinTowerConfig.from_dict({"item": {"input_dim": 8, "code_dim": 4, "levels": LEVELS, "codebook_size": N,
                                                                    "hidden_dims": (8,)}, "user": None}))
    model = TTDSModel(backbone, towers, H, 8, n_items=N_ITEMS)
    emb = build_item_embedding(mode, N_ITEMS, LEVELS, N, tok, backbone, model.item_head)
    emb.set_items(items)
    model.set_item_embedding(emb)
    if mode == "tied":
        assert emb.table is model.item_head.weight and not list(emb.parameters())  # saved once, as the head
    else:
        with torch.no_grad():
            emb.weight.normal_()
    ids, _ = _ids(tok, items, [1, 5, 8])
    model.eval()
    with torch.no_grad():
        with_vectors = model.backbone(input_ids=ids).logits
        model.item_embedding.detach()
        without = model.backbone(input_ids=ids).logits
        model.item_embedding.attach(model.backbone)
    assert not torch.allclose(with_vectors, without)

    save_model(tmp_path / "m", model, tok, items, None, {"epoch": 0})
    lm = load_model(tmp_path / "m")
    assert lm.model.item_embedding is not None and lm.model.item_embedding.tied == (mode == "tied")
    if mode == "tied":
        assert lm.model.item_embedding.table is lm.model.item_head.weight
    with torch.no_grad():
        again = lm.model.backbone(input_ids=ids).logits
    assert torch.allclose(again, with_vectors, atol=1e-5)


def test_the_job_refuses_a_bad_item_embedding_before_work(tmp_path):
    from ttds.config import TTDSJobConfig, check_config, load_config

    def cfg(*extra):
        return load_config(TTDSJobConfig, None, ["--data.corpus=synthetic", f"--output_dir={tmp_path}", *extra])

    with pytest.raises(ValueError, match="item_embedding='shared'"):
        check_config(cfg("--backbone.item_embedding=shared"))
    with pytest.raises(ValueError, match="needs loss.item_head_weight > 0"):
        check_config(cfg("--backbone.item_embedding=tied"))
    check_config(cfg("--backbone.item_embedding=separate"))  # no head needed
