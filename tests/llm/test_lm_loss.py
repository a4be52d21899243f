"""L_LLM from labelled positions only (ttds.llm.model.causal_lm_loss) is HF's loss over full logits,
for a plain and a LoRA-wrapped Llama, with and without label smoothing, gradients included."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from ttds.llm.backbone import last_hidden_states
from ttds.llm.dmvae import position_ids_from_mask
from ttds.llm.model import causal_lm_loss


def _batch(vocab: int):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding
    mask[2, :2] = 0
    labels = torch.full_like(ids, -100)
    labels[:, 7:] = ids[:, 7:]  # a label on the last tokens only, as the task rows do
    labels[1, 3] = ids[1, 3]
    return ids, mask, labels


def _reference(model, ids, mask, labels, smoothing):
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    logits = out.logits[:, :-1].float().reshape(-1, out.logits.shape[-1])
    return torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100, label_smoothing=smoothing)


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_and_gradients_equal_the_full_logits_loss(lora, smoothing):
    torch.manual_seed(0)
    vocab = 90
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]))
    ids, mask, labels = _batch(vocab)

    ref = _reference(model, ids, mask, labels, smoothing)
    ref_grads = torch.autograd.grad(ref, [p for p in model.parameters() if p.requires_grad])
    hidden = last_hidden_states(model, ids, mask, position_ids_from_mask(mask))
    got = causal_lm_loss(model, hidden, labels, smoothing)
    grads = torch.autograd.grad(got, [p for p in model.parameters() if p.requires_grad])

    assert torch.allclose(got, ref, atol=1e-6, rtol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(grads, ref_grads))
    if not lora:  # the states the item head reads are the full forward's last hidden states
        full = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), output_hidden_states=True)
        assert torch.allclose(hidden, full.hidden_states[-1], atol=1e-6)
