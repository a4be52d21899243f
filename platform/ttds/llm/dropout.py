"""Residual-branch dropout for a HF decoder, added by forward hooks.

Why hooks: Llama configs carry no hidden dropout (only attention-probability dropout), and the
backbone may be built in code, loaded from a folder or wrapped by LoRA; hooks on the token
embedding and on every layer's attention and MLP outputs give the standard Transformer
dropout (as SASRec uses) on all three without changing or saving anything in the model. They
act only in training mode, so evaluation, serving and saved weights are unaffected.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# module-name suffixes whose outputs are dropped: the embedding and each residual branch
_BRANCHES = ("embed_tokens", ".self_attn", ".mlp")


def add_residual_dropout(backbone: nn.Module, p: float) -> int:
    """Hook dropout(p) onto the embedding and every attention/MLP output; returns the hook count.

    p == 0 adds nothing. Idempotent per module (a second call replaces nothing twice).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    if p == 0.0:
        return 0
    count = 0
    for name, module in backbone.named_modules():
        if not name.endswith(_BRANCHES) or getattr(module, "_ttds_dropout", None) is not None:
            continue
        if name.endswith("embed_tokens") and not isinstance(module, nn.Embedding):
            continue
        module._ttds_dropout = p
        module.register_forward_hook(_drop_output)
        count += 1
    return count


def _drop_output(module: nn.Module, _inputs, output):
    if not module.training:
        return output
    p = module._ttds_dropout
    if isinstance(output, torch.Tensor):
        return F.dropout(output, p, training=True)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (F.dropout(output[0], p, training=True), *output[1:])
    return output
