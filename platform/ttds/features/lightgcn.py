"""LightGCN: the graph model behind `index.features.source=lightgcn` (the model math; its
trainer is `ttds.train.lightgcn`, hooks on the one loop, in-process or on Ray Train).

LightGCN (He et al., SIGIR 2020) learns one free embedding per user and per item and smooths
them over the user-item graph: E^(k+1) = A_hat E^(k), with A_hat the symmetrically
normalised bipartite adjacency, and the final vector the mean of layers 0..K. It is trained
with the BPR loss on (user, seen item, random unseen item) triples. TokenRec tokenises
exactly such graph vectors; here they are one more `index.source` every tokenizer kind can
use. Only *training* interactions build the graph and the triples: validation and test items
never enter, or they would leak into the IDs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["interaction_pairs", "normalized_adjacency", "LightGCN", "sample_negatives"]


def interaction_pairs(train_sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Unique (user, item) pairs of the training sequences, sorted by user then item."""
    users, items = [], []
    for u, seq in enumerate(train_sequences):
        s = np.unique(np.asarray(seq, dtype=np.int64))
        users.append(np.full(len(s), u, dtype=np.int64))
        items.append(s)
    if not users:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(users), np.concatenate(items)


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """Sparse D^-1/2 A D^-1/2 of the bipartite graph; users are nodes 0..U-1, items U..U+I-1."""
    rows = np.concatenate([users, items + n_users])
    cols = np.concatenate([items + n_users, users])
    deg = np.bincount(rows, minlength=n_users + n_items).astype(np.float64)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1.0)), 0.0)
    vals = inv[rows] * inv[cols]
    n = n_users + n_items
    idx = torch.as_tensor(np.stack([rows, cols]), dtype=torch.long)
    return torch.sparse_coo_tensor(idx, torch.as_tensor(vals, dtype=torch.float32), (n, n), check_invariants=True).coalesce()


class LightGCN(nn.Module):
    """Layer-0 embeddings of users and items; `propagate` gives the layer-mean vectors."""

    def __init__(self, n_users: int, n_items: int, dim: int, layers: int, adjacency: torch.Tensor, seed: int = 0) -> None:
        super().__init__()
        self.n_users, self.n_items, self.layers = n_users, n_items, layers
        gen = torch.Generator().manual_seed(seed)
        self.embedding = nn.Parameter(torch.randn(n_users + n_items, dim, generator=gen) * 0.1)
        self.adjacency = adjacency

    def propagate(self) -> torch.Tensor:
        """Mean over layers 0..K of A_hat^k E^(0): [U + I, dim]."""
        e = self.embedding
        total = e
        for _ in range(self.layers):
            e = torch.sparse.mm(self.adjacency, e)
            total = total + e
        return total / (self.layers + 1)

    def bpr_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, reg: float) -> torch.Tensor:
        final = self.propagate()
        u = final[users]
        p = final[self.n_users + pos]
        n = final[self.n_users + neg]
        bpr = nn.functional.softplus((u * n).sum(1) - (u * p).sum(1)).mean()  # -log sigmoid(s_pos - s_neg)
        e0 = self.embedding
        l2 = (e0[users].pow(2).sum() + e0[self.n_users + pos].pow(2).sum() + e0[self.n_users + neg].pow(2).sum()) / (2 * len(users))
        return bpr + reg * l2

    @torch.no_grad()
    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(item vectors [I, dim], user vectors [U, dim]) as float32 numpy."""
        final = self.propagate()
        return final[self.n_users :].numpy().astype(np.float32), final[: self.n_users].numpy().astype(np.float32)


def sample_negatives(users: np.ndarray, n_items: int, pair_keys: np.ndarray, rng: np.random.Generator, tries: int = 3) -> np.ndarray:
    """One random item per user that the user did not interact with in training (few redraws)."""
    neg = rng.integers(0, n_items, len(users))
    for _ in range(tries):
        keys = users * n_items + neg
        pos = np.searchsorted(pair_keys, keys)
        hit = (pos < len(pair_keys)) & (pair_keys[np.minimum(pos, len(pair_keys) - 1)] == keys)
        if not hit.any():
            break
        neg[hit] = rng.integers(0, n_items, int(hit.sum()))
    return neg
