"""GRU4Rec (Hidasi et al., 2016): a GRU over the item history, scored against every item.

Trained like SASRec here (full-softmax cross-entropy at every position, tied item table
behind a linear head) so the two baselines differ only in the encoder.

Why the roll to right padding: a GRU's state changes even on a zero (padding) input through
its biases, so left padding would make a user's output depend on how much padding the batch
needed. The encoder moves each row's real items to the front, runs a packed GRU over exactly
those, and moves the states back under the left-padded layout the rest of the code uses.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ttds.baselines.sasrec import SequentialRecommender
from ttds.config import GRU4RecConfig

__all__ = ["GRU4Rec", "GRU4RecConfig"]


def _shift_rows(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Row b of x [B, L, ...] rotated left by shift[b] positions."""
    B, L = x.shape[:2]
    idx = (torch.arange(L, device=x.device)[None, :] + shift[:, None]) % L
    idx = idx.view(B, L, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, idx)


class GRU4Rec(SequentialRecommender):
    """Item embedding → dropout → GRU → linear head → scores against the tied item table."""

    def __init__(self, n_items: int, cfg: GRU4RecConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or GRU4RecConfig()
        self.cfg, self.n_items, self.max_len = cfg, n_items, cfg.max_len
        self.item_emb = nn.Embedding(n_items + 1, cfg.embedding, padding_idx=n_items)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.embedding, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head = nn.Linear(cfg.hidden, cfg.embedding)
        # 1/sqrt(d), not SASRec's 0.02 (which SASRec scales up by sqrt(d) at the input): with
        # 0.02 the GRU's inputs were too small to tell items apart and the synthetic loss sat
        # near log(n_items) for 8 epochs (measured); 1/sqrt(d) learns from the first epochs.
        nn.init.normal_(self.item_emb.weight, std=cfg.embedding ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[self.pad_id].zero_()

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(h))

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        B, L = seq.shape
        lengths = (seq != self.pad_id).sum(1)
        shift = L - lengths  # left padding width of each row
        right = _shift_rows(seq, shift)  # real items first, padding after
        x = self.drop(self.item_emb(right))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=L)
        return _shift_rows(out, (L - shift) % L)  # back to left padding
