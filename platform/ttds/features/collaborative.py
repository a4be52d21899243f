"""Collaborative item and user vectors learned from the training split only.

For corpora without item text (Instruments here) the item tower's input X comes from
interactions. We learn a softmax matrix factorisation with a sequential term:
  score(u, i) = <p_u + q_prev, e_i>
trained with full-softmax cross-entropy over all items on the *training* events only (the
valid/test items never enter, or they would leak into the IDs). Items that co-occur and
follow each other end up close, which is what a hierarchical ID should group.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from ttds.config import CollaborativeConfig

log = logging.getLogger(__name__)


class SequentialMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.prev = nn.Embedding(n_items + 1, dim, padding_idx=n_items)  # n_items = "no previous item"
        self.item = nn.Embedding(n_items, dim)
        for emb in (self.user, self.prev, self.item):
            nn.init.normal_(emb.weight, std=0.05)

    def forward(self, users: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return (self.user(users) + self.prev(prev)) @ self.item.weight.T


def train_pairs(train_sequences: list[np.ndarray], n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    users, prev, target = [], [], []
    for u, seq in enumerate(train_sequences):
        if len(seq) == 0:
            continue
        users.append(np.full(len(seq), u))
        prev.append(np.concatenate([[n_items], seq[:-1]]))
        target.append(seq)
    return np.concatenate(users), np.concatenate(prev), np.concatenate(target)


def collaborative_vectors(
    train_sequences: list[np.ndarray], n_items: int, cfg: CollaborativeConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(item_vectors [n_items, dim], user_vectors [n_users, dim]) from training events."""
    cfg = cfg or CollaborativeConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    users, prev, target = (torch.as_tensor(a, dtype=torch.long) for a in train_pairs(train_sequences, n_items))
    model = SequentialMF(len(train_sequences), n_items, cfg.dim)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(target)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            loss = nn.functional.cross_entropy(model(users[idx], prev[idx]), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        log.info("collaborative epoch %d loss %.4f", epoch + 1, total / n)
    with torch.no_grad():
        items = model.item.weight.numpy().copy()
        # a user's vector: its own factor plus the mean of its training items' vectors, so
        # users with similar histories sit together even when their own factor is noisy
        user_vecs = model.user.weight.numpy().copy()
        for u, seq in enumerate(train_sequences):
            if len(seq):
                user_vecs[u] += items[seq].mean(0)
    return items.astype(np.float32), user_vecs.astype(np.float32)
