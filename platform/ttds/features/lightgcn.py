"""LightGCN user and item vectors from the training split (`index.features.source=lightgcn`).

LightGCN (He et al., SIGIR 2020) learns one free embedding per user and per item and smooths
them over the user-item graph: E^(k+1) = A_hat E^(k), with A_hat the symmetrically
normalised bipartite adjacency, and the final vector the mean of layers 0..K. It is trained
with the BPR loss on (user, seen item, random unseen item) triples. TokenRec tokenises
exactly such graph vectors; here they are one more `index.source` every tokenizer kind can
use. Only *training* interactions build the graph and the triples: validation and test items
never enter, or they would leak into the IDs.

Training runs as a Ray Train job (`ray_train=True`, the default: `num_workers` workers, each
sampling its own BPR triples, gradients all-reduced, vectors returned in a checkpoint), or
in-process (`ray_train=False`) for callers without a Ray cluster, tests of the model itself,
and corpora small enough that a Ray Train start (seconds) costs more than the training.
Both paths run the same `train_lightgcn` loop, so they learn the same model.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ttds.config import LightGCNConfig, TrainConfig

log = logging.getLogger(__name__)

__all__ = ["LightGCNConfig", "interaction_pairs", "normalized_adjacency", "LightGCN", "train_lightgcn", "lightgcn_vectors", "lightgcn_worker"]


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


def _negatives(users: np.ndarray, n_items: int, pair_keys: np.ndarray, rng: np.random.Generator, tries: int = 3) -> np.ndarray:
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


def train_lightgcn(
    train_sequences: Sequence[Sequence[int]],
    n_items: int,
    cfg: LightGCNConfig,
    rank: int = 0,
    world: int = 1,
    grad_hook: Callable[[nn.Module], None] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Train LightGCN with BPR; returns (item vectors, user vectors, loss per epoch).

    Every rank builds the same model (same seed); rank r samples its own triples, and
    `grad_hook` (the Ray Train worker's all-reduce) makes the ranks take the same step.
    """
    users, items = interaction_pairs(train_sequences)
    n_users = len(train_sequences)
    if len(users) == 0:
        raise ValueError("LightGCN needs at least one training interaction")
    model = LightGCN(n_users, n_items, cfg.dim, cfg.layers, normalized_adjacency(users, items, n_users, n_items), cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed * 1009 + rank)
    pair_keys = np.sort(users * n_items + items)
    steps = max(1, math.ceil(len(users) / (cfg.batch_size * world)))
    history = []
    for epoch in range(cfg.epochs):
        total = 0.0
        for _ in range(steps):
            pick = rng.integers(0, len(users), cfg.batch_size)
            bu, bp = users[pick], items[pick]
            bn = _negatives(bu, n_items, pair_keys, rng)
            loss = model.bpr_loss(*(torch.as_tensor(a) for a in (bu, bp, bn)), reg=cfg.reg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_hook is not None:
                grad_hook(model)
            opt.step()
            total += float(loss.detach())
        history.append(total / steps)
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
        log.info("lightgcn epoch %d bpr %.4f", epoch + 1, history[-1])
    item_v, user_v = model.vectors()
    return item_v, user_v, history


def _allreduce_grads(model: nn.Module) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()


def lightgcn_worker(config: dict) -> None:
    """Ray Train loop: train, report the BPR loss per epoch, rank 0 returns the vectors."""
    import os

    import ray.train
    from safetensors.numpy import save_file

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(1)
    cfg = LightGCNConfig(**config["lightgcn"])
    seqs = [np.asarray(s, dtype=np.int64) for s in config["train_sequences"]]
    item_v, user_v, history = train_lightgcn(seqs, config["n_items"], cfg, rank, world, _allreduce_grads)
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            save_file({"item": item_v, "user": user_v}, os.path.join(d, "lightgcn.safetensors"))
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report({"epoch": cfg.epochs - 1, "bpr_loss": history[-1], "bpr_first": history[0]}, checkpoint=checkpoint)


def lightgcn_vectors(train_sequences: Sequence[Sequence[int]], n_items: int, cfg: LightGCNConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(item vectors [n_items, dim], user vectors [n_users, dim]) from training interactions.

    With `cfg.ray_train` the loop runs on Ray Train workers through the jobs' shared launcher
    (`ttds.train.launch.run_trainer`) in a scratch storage folder (the vectors come back in the
    final checkpoint and are then saved by the caller, e.g. the tokenizer job's
    features.safetensors); Ray must be initialised (`ttds.runtime.init_ray`).
    """
    cfg = cfg or LightGCNConfig()
    if not cfg.ray_train:
        item_v, user_v, _ = train_lightgcn(train_sequences, n_items, cfg)
        return item_v, user_v
    from safetensors.numpy import load_file

    from ttds.train.launch import run_trainer

    config = {"lightgcn": asdict(cfg), "n_items": int(n_items), "train_sequences": [np.asarray(s, dtype=np.int64).tolist() for s in train_sequences]}
    train = TrainConfig(num_workers=cfg.num_workers, cpus_per_worker=cfg.cpus_per_worker, max_failures=0, resume=False, keep_checkpoints=1)
    with tempfile.TemporaryDirectory(prefix="lightgcn-") as storage:
        result = run_trainer(lightgcn_worker, config, train, storage, "lightgcn")
        if result.error:
            raise result.error
        log.info("lightgcn (Ray Train, %d workers): %s", cfg.num_workers, {k: result.metrics.get(k) for k in ("bpr_first", "bpr_loss")})
        with result.checkpoint.as_directory() as d:
            t = load_file(f"{d}/lightgcn.safetensors")
    return t["item"], t["user"]
