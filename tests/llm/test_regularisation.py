"""Dropout hooks and label smoothing: what they change in training and what they must not."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ttds.llm.dropout import add_residual_dropout
from ttds.llm.model import causal_lm_loss


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      intermediate_size=32, max_position_embeddings=32, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def test_dropout_hooks_act_in_training_only():
    model = _llama()
    ids = torch.randint(0, 50, (2, 7))
    model.eval()
    before = model(input_ids=ids).logits
    n = add_residual_dropout(model, 0.3)
    assert n == 1 + 2 * 2  # the embedding and each layer's attention and MLP
    assert add_residual_dropout(model, 0.3) == 0  # not hooked twice
    assert torch.allclose(model(input_ids=ids).logits, before)  # eval: unchanged
    model.train()
    a, b = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert not torch.allclose(a, b)  # training: a fresh mask per forward
    assert add_residual_dropout(_llama(), 0.0) == 0
    with pytest.raises(ValueError):
        add_residual_dropout(_llama(), 1.0)


class _Identity(torch.nn.Module):
    """A 'backbone' whose output embedding is the identity: its hidden states are the logits."""

    def get_output_embeddings(self):
        return torch.nn.Identity()


def test_smoothing_penalises_sharp_predictions():
    # (equality with HF's loss at smoothing 0, and with full logits at 0.1: tests/llm/test_lm_loss.py)
    sharp = torch.full((1, 2, 50), -20.0)
    sharp[0, 0, 7] = 20.0
    lab = torch.tensor([[0, 7]])
    # a confident, correct prediction costs more once smoothed: the loss no longer rewards all-in mass
    assert causal_lm_loss(_Identity(), sharp, lab, 0.0) < 1e-3 < causal_lm_loss(_Identity(), sharp, lab, 0.1)


def test_out_of_range_values_are_refused_before_any_work():
    from ttds.config import TTDSJobConfig, load_config

    with pytest.raises(ValueError) as err:  # the config checks itself as it is loaded: both problems at once
        load_config(TTDSJobConfig, None, ["--backbone.dropout=1.5", "--loss.label_smoothing=-0.1"])
    assert "backbone.dropout=1.5" in str(err.value) and "loss.label_smoothing=-0.1" in str(err.value)
