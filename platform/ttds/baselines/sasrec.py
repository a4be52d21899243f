"""SASRec (Kang & McAuley, 2018): a causal Transformer over the item history.

The full-softmax variant: the output at every position is scored against ALL item
embeddings (tied with the input table) and trained with cross-entropy on the next item.
It beats the paper's BCE with one sampled negative by a wide margin on the Amazon sets and
costs little at ~10k items, so it is the honest baseline to compare against.

`SequentialRecommender` holds what SASRec and GRU4Rec share (padding convention, tied
scoring, the loss at every position); it lives here because SASRec is the reference model
and GRU4Rec is defined as "the same, with a GRU for the encoder".

Padding convention: left padding with id `n_items`, so the newest item is always the last
column. Batches may be padded only to their longest row (not to `max_len`): positions are
right-aligned and padded keys are masked, so a sequence's outputs do not depend on how much
padding sits to its left (tested), and short Amazon histories (median 4) stay cheap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ttds.config import SASRecConfig

__all__ = ["SASRec", "SASRecConfig", "SequentialRecommender"]


class SequentialRecommender(nn.Module):
    """Base of next-item models: encode a left-padded sequence, score its states against items.

    Subclasses implement `encode(seq) -> [B, L, D]` and may override `project` (a head applied
    to the states before the dot product with the tied item table).
    """

    n_items: int
    max_len: int
    item_emb: nn.Embedding

    @property
    def pad_id(self) -> int:
        return self.n_items

    def encode(self, seq: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores of states `h[..., D]` against every real item (the padding row excluded)."""
        return self.project(h) @ self.item_emb.weight[: self.n_items].T

    def forward(self, seq: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """States [B, L, D]; with `targets` ([B, L], next items), the mean full-softmax loss.

        The loss lives inside `forward` so DistributedDataParallel sees every parameter use
        (the tied table is used twice) in one wrapped call.
        """
        seq = seq[:, -self.max_len :]  # models see at most max_len items (SASRec's positions)
        h = self.encode(seq)
        if targets is None:
            return h
        targets = targets[:, -self.max_len :]
        keep = (seq != self.pad_id) & (targets != self.pad_id)
        return F.cross_entropy(self.logits(h[keep]), targets[keep])

    @torch.no_grad()
    def score_last(self, seq: torch.Tensor) -> torch.Tensor:
        """Scores [B, n_items] of the next item after each (left-padded) sequence."""
        return self.logits(self.encode(seq[:, -self.max_len :])[:, -1])


class SASRec(SequentialRecommender):
    """Item + learned position embeddings → pre-LN causal Transformer blocks → tied scores."""

    def __init__(self, n_items: int, cfg: SASRecConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or SASRecConfig()
        if cfg.hidden % cfg.heads:
            raise ValueError(f"hidden ({cfg.hidden}) must be divisible by heads ({cfg.heads})")
        self.cfg, self.n_items, self.max_len = cfg, n_items, cfg.max_len
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=n_items)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                cfg.hidden,
                cfg.heads,
                dim_feedforward=cfg.inner or cfg.hidden,
                dropout=cfg.dropout,
                activation="relu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.hidden)  # pre-LN blocks leave the residual stream un-normalised
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Small embeddings: with tied scoring, unit-variance rows start with huge logits.
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[self.pad_id].zero_()

    def attention_mask(self, seq: torch.Tensor) -> torch.Tensor:
        """Bool mask [B*heads, L, L], True = blocked: future keys and padded keys.

        Each position may always see itself, so fully padded rows never become all -inf
        (which would give NaNs that leak through 0 * NaN in later layers).
        """
        B, L = seq.shape
        idx = torch.arange(L, device=seq.device)
        future = idx[None, :] > idx[:, None]
        padded = (seq == self.pad_id)[:, None, :] & ~torch.eye(L, dtype=torch.bool, device=seq.device)
        blocked = future[None] | padded
        return blocked.repeat_interleave(self.cfg.heads, dim=0)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        L = seq.shape[1]
        pos = torch.arange(self.max_len - L, self.max_len, device=seq.device)  # right-aligned
        x = self.item_emb(seq) * math.sqrt(self.cfg.hidden) + self.pos_emb(pos)[None]
        x = self.drop(x)
        mask = self.attention_mask(seq)
        for block in self.blocks:
            x = block(x, src_mask=mask)
        return self.norm(x)
