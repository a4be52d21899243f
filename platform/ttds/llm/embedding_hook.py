"""What the modules that rewrite the backbone's input embeddings share (MoC's code fusion,
per-item input vectors): where the item code tokens sit in the vocabulary, and a forward hook
on the input embedding, so every caller of the backbone (training, beam search, serving) gets
the rewritten embeddings without knowing about them."""

from __future__ import annotations

import torch
from torch import nn

from ttds.index.table import level_token

__all__ = ["InputEmbeddingHook", "id_span_starts", "item_code_layout"]


def item_code_layout(tokenizer, levels: int, codebook_size: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(level_of, code_of) over token ids 0..size-1: an item code token's ID level and code, -1 / 0 elsewhere."""
    level_of = torch.full((int(size),), -1, dtype=torch.long)
    code_of = torch.zeros(int(size), dtype=torch.long)
    vocab = tokenizer.get_vocab()
    for lv in range(levels):
        for c in range(codebook_size):
            tok = vocab.get(level_token("item", lv, c))
            if tok is None:
                raise ValueError(f"tokenizer lacks {level_token('item', lv, c)}; add the semantic tokens first")
            level_of[tok], code_of[tok] = lv, c
    return level_of, code_of


def id_span_starts(input_ids: torch.Tensor, level_of: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, starts) of every complete, in-order span of item code tokens (levels 0..M-1) in
    `input_ids` [B, T]; `level_of[token]` is a token's ID level, -1 for any other token."""
    b, t = input_ids.shape
    m = int(levels)
    if t < m:
        empty = torch.zeros(0, dtype=torch.long, device=input_ids.device)
        return empty, empty
    level_of = level_of.to(input_ids.device)
    known = (input_ids >= 0) & (input_ids < len(level_of))
    lv = torch.where(known, level_of[input_ids.clamp(0, len(level_of) - 1)], torch.full_like(input_ids, -1))
    width = t - m + 1
    ok = torch.ones(b, width, dtype=torch.bool, device=input_ids.device)
    for j in range(m):
        ok &= lv[:, j : j + width] == j
    return ok.nonzero(as_tuple=True)


class InputEmbeddingHook(nn.Module):
    """A module whose forward(embeds [B, T, H], input_ids [B, T]) rewrites a backbone's input embeddings."""

    _handle = None

    def attach(self, backbone: nn.Module) -> None:
        """Rewrite the output of `backbone`'s input embedding on every call (a forward hook)."""
        self.detach()

        def hook(module, args, output):
            ids = args[0] if args else None
            if ids is None or not torch.is_tensor(ids) or ids.dim() != 2:
                return output
            return self(output, ids)

        self._handle = backbone.get_input_embeddings().register_forward_hook(hook)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
