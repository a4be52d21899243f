"""Mixture-of-Codes: parallel codebooks on one latent, the scaling factor, and the fusion module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttds.index.collisions import collision_rate
from ttds.index.diagnostics import nmi
from ttds.index.moc import MoCConfig, MoCTokenizer
from ttds.llm.fusion import CodeFusion, load_fusion, save_fusion


def mixture(n: int, dim: int, clusters: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3.0
    return torch.from_numpy((centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim))).astype(np.float32))


def config(**kw) -> MoCConfig:
    base = dict(input_dim=16, code_dim=8, hidden_dims=(32,), levels=4, codebook_size=16, seed=0)
    base.update(kw)
    return MoCConfig(**base)


def test_parallel_codebooks_quantise_one_latent_and_average():
    model = MoCTokenizer(config())
    assert model.num_codebooks == 4 and model.config.num_codebooks == 4 and model.config.kind == "moc"
    x = mixture(128, 16, 6)
    z = model.latents(x)
    assert z.shape == (128, 4, 8) and all(torch.equal(z[:, 0], z[:, k]) for k in range(4))
    model.quantizer.init_codebooks(z)
    codes, z_q = model.quantizer.quantize(z)
    assert codes.shape == (128, 4)
    assert torch.allclose(z_q, model.quantizer.code_vectors_of(codes).mean(1))  # decoder sees the average
    # not residual: each codebook picks the code nearest to z itself
    for k in range(4):
        d = torch.cdist(z[:, k], model.quantizer.codebooks[k].detach())
        assert torch.equal(codes[:, k], d.argmin(1))
    # independent initialisations give different partitions of the same latent
    assert nmi(codes[:, 0].numpy(), codes[:, 1].numpy()) < 0.999
    out = model(x)
    out.loss.backward()
    assert out.recon.shape == (128, 16) and out.z_q.shape == (128, 8)
    assert all(float(model.quantizer.codebooks.grad[k].abs().sum()) > 0 for k in range(4))
    assert model.encoder[0][0].weight.grad is not None


def test_more_codebooks_tell_more_items_apart():
    x = mixture(800, 16, 10, seed=2)
    rates = {}
    for n in (1, 2, 4):
        model = MoCTokenizer(config(levels=n, codebook_size=16))
        model.train()
        model(x)  # the first training forward k-means-initialises the codebooks
        model.eval()
        rates[n] = collision_rate(model.encode(x).numpy())
    assert rates[4] < rates[2] < rates[1]


# -- fusion ------------------------------------------------------------------------------------
M, H, VOCAB = 3, 6, 20


def make_fusion(zero_init: bool = True) -> CodeFusion:
    level_of = torch.full((VOCAB,), -1, dtype=torch.long)
    level_of[10:13] = 0  # tokens 10-12: level-0 codes, 13-15 level 1, 16-18 level 2
    level_of[13:16] = 1
    level_of[16:19] = 2
    torch.manual_seed(0)
    return CodeFusion(M, H, level_of, bottleneck=4, zero_init=zero_init)


def test_fusion_finds_complete_in_order_spans():
    f = make_fusion()
    ids = torch.tensor([
        [1, 10, 13, 16, 2, 11, 14, 17, 19],  # two complete spans
        [10, 13, 3, 16, 10, 14, 18, 0, 0],  # an interrupted span, then one complete span
        [13, 10, 16, 11, 14, 2, 2, 2, 2],  # out of order, truncated: none
    ])
    rows, starts = f.span_starts(ids)
    assert sorted(zip(rows.tolist(), starts.tolist())) == [(0, 1), (0, 5), (1, 4)]
    assert f.span_starts(ids[:, :2])[0].numel() == 0  # shorter than an ID


def test_fusion_is_identity_at_start_causal_and_learns():
    f = make_fusion(zero_init=True)
    ids = torch.tensor([[1, 10, 13, 16, 2, 11, 14]])
    emb = torch.randn(1, 7, H, requires_grad=True)
    assert torch.equal(f(emb, ids), emb)  # zero-initialised up-projection: identity
    f2 = make_fusion(zero_init=False)
    out = f2(emb, ids)
    assert not torch.allclose(out[0, 3], emb[0, 3])  # the span's last token carries the fusion
    assert torch.equal(out[0, [0, 1, 2, 4, 5, 6]], emb[0, [0, 1, 2, 4, 5, 6]])  # nothing else changes
    # the fused position reads every code of its span and nothing after it: causal
    grad = torch.autograd.grad(out[0, 3].sum(), emb, retain_graph=True)[0]
    assert all(float(grad[0, p].abs().sum()) > 0 for p in (1, 2, 3))
    assert float(grad[0, [0, 4, 5, 6]].abs().sum()) == 0.0
    for p in range(7):
        g = torch.autograd.grad(out[0, p].sum(), emb, retain_graph=True)[0]
        assert float(g[0, p + 1 :].abs().sum()) == 0.0  # no position sees a later token
    # gradients reach the fusion parameters and flow back to the embeddings
    f.zero_grad()
    (f(emb, ids) * torch.randn(1, 7, H)).sum().backward()
    assert float(f.up.weight.grad.abs().sum()) > 0 and emb.grad is not None
    torch.optim.SGD(f.parameters(), lr=0.1).step()
    f.zero_grad()
    (f(emb, ids) * torch.randn(1, 7, H)).sum().backward()
    assert float(f.down.weight.grad.abs().sum()) > 0  # once up is non-zero, the bottleneck learns too


def test_fusion_save_load(tmp_path):
    f = make_fusion(zero_init=False)
    ids = torch.tensor([[10, 13, 16]])
    emb = torch.randn(1, 3, H)
    save_fusion(tmp_path, f)
    g = load_fusion(tmp_path)
    assert g is not None and torch.equal(g(emb, ids), f(emb, ids))
    assert load_fusion(tmp_path / "none") is None
    with pytest.raises(ValueError):
        CodeFusion(1, H, torch.zeros(VOCAB, dtype=torch.long))


def test_moc_fusion_inside_ttds_model_training_decoding_and_saving(tmp_path):
    """Behind index.kind == "moc" the model fuses every complete item ID, learns the fusion
    with the LLM loss, decodes with it (one token per step: the generated ID stays unfused),
    and a saved model folder brings it back."""
    from ttds.index.table import SemanticIDTable
    from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
    from ttds.llm.backbone import BackboneConfig, add_semantic_tokens, apply_lora, load_backbone
    from ttds.llm.fusion import fusion_for_towers
    from ttds.llm.model import TTDSModel
    from ttds.llm.model_io import load_model, save_model
    from ttds.llm.prompts import PromptBuilder, TokenTable, semantic_vocabulary
    from ttds.rank.pad import left_pad
    from ttds.train.ttds_worker import code_vector_map

    n_items, levels, n = 30, 3, 8
    towers_dict = {"item": {"input_dim": 16, "code_dim": 8, "levels": levels, "codebook_size": n, "hidden_dims": (16,), "kind": "moc"}, "user": None}
    towers = TwinTowerTokenizer(TwinTowerConfig.from_dict(towers_dict))
    x = mixture(n_items, 16, 5)
    towers.item.quantizer.init_codebooks(towers.item.latents(x))
    items = SemanticIDTable.from_codes("item", np.arange(n_items), towers.encode_items(x).numpy(), n)
    cfg = BackboneConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, lora=False, full_finetune=True)
    backbone, tok = load_backbone(cfg, ["red guitar", "blue drum"])
    add_semantic_tokens(backbone, tok, semantic_vocabulary(levels, 0, n, 8), code_vector_map(towers))
    backbone = apply_lora(backbone, cfg)
    assert fusion_for_towers({"item": {**towers_dict["item"], "kind": "rq"}}, levels, n, backbone, tok) is None  # rq: no fusion
    fusion = fusion_for_towers(towers_dict, levels, n, backbone, tok)
    model = TTDSModel(backbone, towers, 32, 16, fusion=fusion)
    builder = PromptBuilder(tok, TokenTable.from_table(items, tok.get_vocab()), None)
    seqs, labels = zip(*[builder.next_item(None, [u % n_items, (u + 3) % n_items, (u + 7) % n_items], 0) for u in range(4)])
    ids, mask, lab = left_pad(list(seqs), builder.pad_id, list(labels))
    assert len(fusion.span_starts(ids)[0]) == 12  # 3 IDs in each of 4 sequences

    out = model(ids, mask, lab)
    out["loss"].backward()
    assert float(model.fusion.up.weight.grad.abs().sum()) > 0  # the LLM loss trains the fusion
    with torch.no_grad():
        model.fusion.up.weight.normal_(std=0.5)  # a trained, non-identity fusion
    model.eval()
    with torch.no_grad():
        fused = model.backbone(input_ids=ids, attention_mask=mask).logits  # beam search / serving path
        model.fusion.detach()
        plain = model.backbone(input_ids=ids, attention_mask=mask).logits
        model.fusion.attach(model.backbone)
    assert not torch.allclose(fused, plain)
    # one generated token at a time (KV-cache decoding) never holds a complete span: unfused
    step = ids[:, -1:]
    with torch.no_grad():
        a = model.backbone(input_ids=step).logits
        model.fusion.detach()
        b = model.backbone(input_ids=step).logits
        model.fusion.attach(model.backbone)
    assert torch.equal(a, b)

    save_model(tmp_path / "m", model, tok, items, None, {"epoch": 0})
    loaded = load_model(tmp_path / "m")
    assert loaded.model.fusion is not None
    with torch.no_grad():
        again = loaded.model.backbone(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(again, fused, atol=1e-5)
