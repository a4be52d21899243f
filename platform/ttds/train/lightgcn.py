"""The LightGCN trainer: LightGCN's hooks on the one loop (`ttds.train.loop`), in-process or on
Ray Train; the model itself is `ttds.features.lightgcn`.

Training runs as a Ray Train job (`ray_train=True`, the default: `num_workers` workers, each
sampling its own BPR triples, gradients all-reduced, vectors returned in a checkpoint), or
in-process (`ray_train=False`) for callers without a Ray cluster, tests of the model itself,
and corpora small enough that a Ray Train start (seconds) costs more than the training.
Both paths run the same hooks (`LightGCNTrainer`), so they learn the same model.
`lightgcn_vectors` is what `ttds.features.build.build_features` is handed (by the tokenizer
job, `ttds.train.tokenizer_job.make_features`) to build `index.features.source=lightgcn`.
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
import torch.distributed as dist
from safetensors.numpy import load_file, save_file
from torch import nn

from ttds.config import LightGCNConfig, TrainConfig
from ttds.features.lightgcn import LightGCN, interaction_pairs, normalized_adjacency, sample_negatives
from ttds.train.launch import RunPlace, run_trainer
from ttds.train.loop import LoopConfig, Trainer, fit, rank_and_world

log = logging.getLogger(__name__)

__all__ = ["LightGCNTrainer", "LightGCNWork", "VECTORS_FILE", "lightgcn_vectors", "lightgcn_worker", "train_lightgcn"]

VECTORS_FILE = "lightgcn.safetensors"


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
            bn = sample_negatives(bu, self.n_items, self.pair_keys, self.rng)
            loss = self.gcn.bpr_loss(*(torch.as_tensor(a) for a in (bu, bp, bn)), reg=self.cfg.reg)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            _allreduce_grads(self.gcn)
            self.opt.step()
            total += float(loss.detach())
        log.info("lightgcn epoch %d bpr %.4f", epoch + 1, total / self.steps)
        return {"bpr_loss": total / self.steps}

    def save(self, directory: Path, metrics: dict) -> None:
        item_v, user_v = self.gcn.vectors()
        save_file({"item": item_v, "user": user_v}, str(directory / VECTORS_FILE))


def train_lightgcn(train_sequences: Sequence[Sequence[int]], n_items: int, cfg: LightGCNConfig) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Train LightGCN with BPR in this process; returns (item vectors, user vectors, loss per epoch)."""
    trainer = LightGCNTrainer(train_sequences, n_items, cfg)
    state = fit(trainer, LoopConfig(epochs=cfg.epochs, seed=None), None)  # the model and the triples seed their own generators
    item_v, user_v = trainer.gcn.vectors()
    return item_v, user_v, [h["bpr_loss"] for h in state.history]


def _allreduce_grads(model: nn.Module) -> None:
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
