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
Both paths run the same hooks (`LightGCNTrainer`) on the one loop (`ttds.train.loop`), so they
learn the same model.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ttds.config import LightGCNConfig, TrainConfig
from ttds.train.launch import RunPlace, run_trainer
from ttds.train.loop import LoopConfig, Trainer, fit, rank_and_world

log = logging.getLogger(__name__)

__all__ = ["LightGCNConfig", "interaction_pairs", "normalized_adjacency", "LightGCN", "LightGCNTrainer", "train_lightgcn", "lightgcn_vectors", "lightgcn_worker"]


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


class LightGCNTrainer(Trainer):
    """LightGCN's hooks on the one loop: an epoch is len(pairs) / (batch x world) BPR steps.

    Every rank builds the same model (same seed); rank r samples its own triples, and the
    gradients are averaged over ranks before each step, so the ranks take the same step.
    No validation: every epoch is kept, the last one's vectors are the result.
    """

    def __init__(self, train_sequences: Sequence[Sequence[int]], n_items: int, cfg: LightGCNConfig, rank: int = 0, world: int = 1):
        self.users, self.items = interaction_pairs(train_sequences)
        self.n_users, self.n_items, self.cfg = len(train_sequences), n_items, cfg
        if len(self.users) == 0:
            raise ValueError("LightGCN needs at least one training interaction")
        self.rng = np.random.default_rng(cfg.seed * 1009 + rank)
        self.pair_keys = np.sort(self.users * n_items + self.items)
        self.steps = max(1, math.ceil(len(self.users) / (cfg.batch_size * world)))

    def start(self, resume: Path | None, state) -> None:
        adjacency = normalized_adjacency(self.users, self.items, self.n_users, self.n_items)
        self.gcn = LightGCN(self.n_users, self.n_items, self.cfg.dim, self.cfg.layers, adjacency, self.cfg.seed)
        self.opt = torch.optim.Adam(self.gcn.parameters(), lr=self.cfg.lr)

    def train_epoch(self, epoch: int) -> dict:
        total = 0.0
        for _ in range(self.steps):
            pick = self.rng.integers(0, len(self.users), self.cfg.batch_size)
            bu, bp = self.users[pick], self.items[pick]
            bn = _negatives(bu, self.n_items, self.pair_keys, self.rng)
            loss = self.gcn.bpr_loss(*(torch.as_tensor(a) for a in (bu, bp, bn)), reg=self.cfg.reg)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            _allreduce_grads(self.gcn)
            self.opt.step()
            total += float(loss.detach())
        log.info("lightgcn epoch %d bpr %.4f", epoch + 1, total / self.steps)
        return {"bpr_loss": total / self.steps}

    def save(self, directory: Path, metrics: dict) -> None:
        from safetensors.numpy import save_file

        item_v, user_v = self.gcn.vectors()
        save_file({"item": item_v, "user": user_v}, str(directory / VECTORS_FILE))


VECTORS_FILE = "lightgcn.safetensors"


def train_lightgcn(train_sequences: Sequence[Sequence[int]], n_items: int, cfg: LightGCNConfig) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Train LightGCN with BPR in this process; returns (item vectors, user vectors, loss per epoch)."""
    trainer = LightGCNTrainer(train_sequences, n_items, cfg)
    state = fit(trainer, LoopConfig(epochs=cfg.epochs, seed=None), None)  # the model and the triples seed their own generators
    item_v, user_v = trainer.gcn.vectors()
    return item_v, user_v, [h["bpr_loss"] for h in state.history]


def _allreduce_grads(model: nn.Module) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()


@dataclass
class LightGCNWork:
    """A LightGCN worker's input: its config and the training split."""

    cfg: LightGCNConfig
    n_items: int
    train_sequences: list[list[int]]


def lightgcn_worker(w: LightGCNWork, place: RunPlace) -> None:
    """Ray Train worker: the hooks on the one loop; each epoch's checkpoint holds the vectors."""
    rank, world = rank_and_world(place)
    torch.set_num_threads(1)
    seqs = [np.asarray(s, dtype=np.int64) for s in w.train_sequences]
    fit(LightGCNTrainer(seqs, w.n_items, w.cfg, rank, world), LoopConfig(epochs=w.cfg.epochs, seed=None), place)


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

    work = LightGCNWork(cfg, int(n_items), [np.asarray(s, dtype=np.int64).tolist() for s in train_sequences])
    train = TrainConfig(num_workers=cfg.num_workers, cpus_per_worker=cfg.cpus_per_worker, max_failures=0, resume=False, keep_checkpoints=1)
    with tempfile.TemporaryDirectory(prefix="lightgcn-") as storage:
        result = run_trainer(lightgcn_worker, work, train, storage, "lightgcn")
        if result.error:
            raise result.error
        log.info("lightgcn (Ray Train, %d workers): bpr %.4f after %d epochs", cfg.num_workers, result.metrics["bpr_loss"], cfg.epochs)
        with result.checkpoint.as_directory() as d:
            t = load_file(f"{d}/{VECTORS_FILE}")
    return t["item"], t["user"]
