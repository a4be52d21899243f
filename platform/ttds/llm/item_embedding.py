"""A learned vector per item, added to the input embedding of the last token of the item's ID.

Why: the LLM reads a history as semantic-ID tokens only, so two items that share their first
codes look alike to it until the last code, and an item's identity must be composed from
tokens that popular items dominate. Measured (README, "Is it the decoding or the model?"):
TTDS's weakness on less popular items is in the LLM's state, not in the decoding. SASRec, the
strongest baseline on both real sets, reads a history as one embedding per item. This module
gives the LLM the same thing beside the codes: every complete item ID in the input gets its
item's vector added (residual) to the embedding of the ID's last token. `backbone.item_embedding`:
`none` (the paper's model), `separate` (own table, zero at start so a new module changes
nothing), `tied` (the item head's output vectors, as SASRec ties its input and output item
embeddings; needs the item head).

Why the last token only: the vector names the whole item, so at an earlier position it would
show tokens the model is trained to predict there (the same rule as MoC's fusion module,
`ttds.llm.fusion`). An ID with a collision suffix ends at the suffix token; the vector goes
there, never on its M-th code (which predicts the suffix). KV-cache decoding feeds one token
per step, so a generated ID never gets a vector; training, beam search, the item head and
serving all see the same inputs, because the module hooks the backbone's input embedding.

The codes -> item map follows the ID table in force (`set_items` after every re-index); an ID
the table does not hold (a user ID, a cold item) gets nothing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ttds.index.table import suffix_token
from ttds.llm.embedding_hook import InputEmbeddingHook, id_span_starts, item_code_layout

__all__ = ["ITEM_EMBEDDING_MODES", "ItemEmbedding", "build_item_embedding"]

ITEM_EMBEDDING_MODES = ("none", "separate", "tied")


class ItemEmbedding(InputEmbeddingHook):
    """Per-item input vectors; `tied_to` (an nn.Linear [n_items, H]) shares the item head's weight."""

    def __init__(self, n_items: int, hidden: int, levels: int, codebook_size: int, code_of: torch.Tensor, level_of: torch.Tensor,
                 suffix_of: torch.Tensor, tied_to: nn.Linear | None = None) -> None:
        super().__init__()
        self.n_items, self.hidden, self.levels, self.codebook_size = int(n_items), int(hidden), int(levels), int(codebook_size)
        self.suffixes = int(suffix_of.max().item()) + 1 if suffix_of.numel() else 0
        if float(codebook_size) ** levels * (self.suffixes + 1) >= 2.0**62:
            raise ValueError(f"item_embedding: {levels} levels of {codebook_size} codes have too many combinations to key")
        # vocabulary layout: plain tensors, not state (they follow the tokenizer, which is saved)
        self.code_of, self.level_of, self.suffix_of = code_of.long(), level_of.long(), suffix_of.long()
        self.tied = tied_to is not None
        if self.tied:
            if tuple(tied_to.weight.shape) != (self.n_items, self.hidden):
                raise ValueError(f"item_embedding=tied needs an item head of shape [{n_items}, {hidden}], got {tuple(tied_to.weight.shape)}")
            object.__setattr__(self, "_head", tied_to)  # a reference, not a submodule: saved once, as the head
        else:
            self.weight = nn.Parameter(torch.zeros(self.n_items, self.hidden))
        self._keys = torch.zeros(0, dtype=torch.long)
        self._items = torch.zeros(0, dtype=torch.long)
        self._on: tuple = (None, ())  # (device, lookup tensors there): moved once, not on every forward

    def _lookups(self, dev: torch.device) -> tuple[torch.Tensor, ...]:
        """(level_of, code_of, suffix_of, sorted keys, their items) on `dev`."""
        if self._on[0] != dev:
            self._on = (dev, tuple(t.to(dev) for t in (self.level_of, self.code_of, self.suffix_of, self._keys, self._items)))
        return self._on[1]

    @property
    def table(self) -> torch.Tensor:
        return self._head.weight if self.tied else self.weight

    def _key(self, codes: torch.Tensor, suffix: torch.Tensor) -> torch.Tensor:
        """One int64 per ID: its M codes in base N, plus (suffix + 1) * N^M (0 = no suffix)."""
        base = self.codebook_size ** torch.arange(self.levels, device=codes.device, dtype=torch.long)
        return (codes.long() * base).sum(-1) + (suffix.long() + 1) * self.codebook_size**self.levels

    def set_items(self, table) -> None:
        """Follow a SemanticIDTable (call again after every re-index)."""
        codes = torch.tensor(np.array(table.codes, dtype=np.int64))
        if codes.shape[1] != self.levels:
            raise ValueError(f"item_embedding was built for {self.levels}-level IDs, the table has {codes.shape[1]}")
        keys = self._key(codes, torch.tensor(np.array(table.suffix, dtype=np.int64)))
        order = torch.argsort(keys)
        self._keys, self._items = keys[order], torch.tensor(np.array(table.ids, dtype=np.int64))[order]
        self._on = (None, ())

    def item_positions(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, last-token positions, items) of every complete ID of a known item in `input_ids` [B, T]."""
        dev = input_ids.device
        level_of, code_of, suffix_of, sorted_keys, items = self._lookups(dev)
        rows, starts = id_span_starts(input_ids, level_of, self.levels)
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        if rows.numel() == 0 or sorted_keys.numel() == 0:
            return empty, empty, empty
        pos = starts.unsqueeze(1) + torch.arange(self.levels, device=dev)
        toks = input_ids[rows.unsqueeze(1).expand_as(pos), pos]
        codes = code_of[toks]
        after = starts + self.levels  # a suffix token right after the M codes belongs to this ID
        inside = after < input_ids.shape[1]
        nxt = input_ids[rows, after.clamp(max=input_ids.shape[1] - 1)]
        known = (nxt >= 0) & (nxt < len(suffix_of))
        suffix = torch.where(inside & known, suffix_of[nxt.clamp(0, len(suffix_of) - 1)], torch.full_like(nxt, -1))
        last = torch.where(suffix >= 0, after, after - 1)
        keys = self._key(codes, suffix)
        at = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
        hit = sorted_keys[at] == keys
        return rows[hit], last[hit], items[at[hit]]

    def forward(self, embeds: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        rows, last, items = self.item_positions(input_ids)
        if rows.numel() == 0:
            return embeds
        vecs = self.table[items].to(embeds.dtype)
        return embeds.index_put((rows, last), embeds[rows, last] + vecs)


def build_item_embedding(mode: str, n_items: int, levels: int, codebook_size: int, tokenizer, backbone: nn.Module,
                         item_head: nn.Linear | None = None) -> ItemEmbedding | None:
    """The module for `backbone.item_embedding=mode` (None for `none`), keyed by `tokenizer`'s code tokens."""
    if mode not in ITEM_EMBEDDING_MODES:
        raise ValueError(f"item_embedding={mode!r}: expected one of {', '.join(ITEM_EMBEDDING_MODES)}")
    if mode == "none":
        return None
    if mode == "tied" and item_head is None:
        raise ValueError("item_embedding=tied shares the item head's vectors: train with loss.item_head_weight > 0")
    level_of, code_of = item_code_layout(tokenizer, levels, codebook_size, len(tokenizer))
    suffix_of = torch.full((len(tokenizer),), -1, dtype=torch.long)
    vocab = tokenizer.get_vocab()
    k = 0
    while suffix_token(k) in vocab:
        suffix_of[vocab[suffix_token(k)]] = k
        k += 1
    hidden = int(backbone.get_input_embeddings().weight.shape[1])
    return ItemEmbedding(n_items, hidden, levels, codebook_size, code_of, level_of, suffix_of, tied_to=item_head if mode == "tied" else None)
