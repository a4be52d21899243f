"""The twin-tower tokenizer's hooks on the one training loop (`ttds.train.loop`).

Every rank k-means-initialises the codebooks from the same full data with the same seed (no
broadcast needed); batches come from each rank's Ray Data shard; DeepSpeed averages gradients.
After each epoch dead codes are restarted identically everywhere (usage summed over ranks,
written through DeepSpeed's fp32 master copy) and codebook figures computed on the full data.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ttds import checkpoint as ckpt_io
from ttds.config import IndexConfig
from ttds.index.collisions import collision_rate
from ttds.index.rq import codebook_report, reconstruction_error
from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
from ttds.train import deepspeed_utils as dsu
from ttds.train.launch import RunPlace
from ttds.train.loop import LoopConfig, LoopState, Trainer, fit, rank_and_world


def _full(name: str) -> torch.Tensor | None:
    """Materialise an unsplit dataset ('items_all' / 'users_all') as one float tensor."""
    import ray.train

    try:
        shard = ray.train.get_dataset_shard(name)
    except (KeyError, ValueError):
        return None
    if shard is None:
        return None
    parts = [b["data"] for b in shard.iter_batches(batch_size=8192, batch_format="numpy")]
    return torch.as_tensor(np.concatenate(parts), dtype=torch.float32) if parts else None


def _sample(x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    return x if len(x) <= n else x[torch.randperm(len(x), generator=gen)[:n]]


def tower_metrics(prefix: str, tower, x: torch.Tensor) -> dict:
    codes = tower.encode(x).cpu().numpy()
    report = codebook_report(codes, tower.codebook_size)
    out = {
        f"{prefix}_collision_rate": collision_rate(codes),
        f"{prefix}_recon_error": reconstruction_error(tower, x),
        f"{prefix}_min_usage": min(r["usage_fraction"] for r in report),
    }
    for r in report:
        out[f"{prefix}_used_l{r['level']}"] = r["used_codes"]
        out[f"{prefix}_perplexity_l{r['level']}"] = round(r["perplexity"], 2)
    return out


def _restart(tower, x: torch.Tensor, gen_seed: int) -> list[int]:
    """Restart dead codes of `tower` identically on every rank, through DeepSpeed's master copy."""
    import torch.distributed as dist

    q = tower.quantizer
    if dist.is_initialized():
        dist.all_reduce(q.usage)  # a code is dead only if no rank used it
    q.generator.manual_seed(gen_seed)
    with torch.no_grad():
        restarted = q.restart_dead_codes(tower.latents(x))
    dsu.set_full_param(q.codebooks, q.codebooks.data.clone())
    return restarted


@dataclass
class TokenizerWork:
    """A tokenizer worker's input: the index section (epochs, lr, seed, ...), the DeepSpeed
    stage, and what the driver derived: the towers' config and the history file."""

    index: IndexConfig
    zero_stage: int
    towers: dict  # TwinTowerConfig.from_dict input (index.towers(item_dim, user_dim))
    history_path: str


class TokenizerTrainer(Trainer):
    """The twin towers' hooks: k-means init, steps over the item (and user) shards, dead-code
    restarts after each epoch, codebook figures on the full data as the epoch's validation."""

    def __init__(self, w: TokenizerWork, world: int):
        self.w, self.ix, self.world = w, w.index, world
        self.gen = torch.Generator().manual_seed(self.ix.seed)

    def start(self, resume: Path | None, state: LoopState) -> None:
        import ray.train

        ix = self.ix
        self.items_all, self.users_all = _full("items_all"), _full("users_all")
        model = TwinTowerTokenizer(TwinTowerConfig.from_dict(self.w.towers))
        if resume is not None:
            tensors, _ = ckpt_io.load_state(resume, "tokenizer")
            model.load_state_dict(tensors)
        else:
            model.item.quantizer.init_codebooks(model.item.latents(_sample(self.items_all, ix.init_samples, self.gen)))
            if model.user is not None and self.users_all is not None:
                model.user.quantizer.init_codebooks(model.user.latents(_sample(self.users_all, ix.init_samples, self.gen)))
        books = [m.quantizer.codebooks for m in (model.item, model.user) if m is not None]
        book_ids = {id(b) for b in books}
        groups = [
            {"params": [p for p in model.parameters() if id(p) not in book_ids]},
            {"params": books, "lr": ix.lr * ix.codebook_lr_scale},
        ]
        self.engine = dsu.initialize(model, lr=ix.lr, stage=self.w.zero_stage, micro_batch=ix.batch_size, param_groups=groups)
        self.model = model
        # DeepSpeed put the towers on this worker's device (a GPU under train.use_gpu): the whole
        # catalogue goes there too, for the per-epoch metrics and dead-code restarts
        self.items_all = self.items_all.to(self.engine.device)
        self.users_all = self.users_all.to(self.engine.device) if self.users_all is not None else None
        self.item_shard = ray.train.get_dataset_shard("items")
        self.user_shard = ray.train.get_dataset_shard("users") if model.user is not None else None
        n_items_rank = math.ceil(len(self.items_all) / self.world)
        steps = max(1, math.ceil(n_items_rank / ix.batch_size))
        self.user_bs = max(1, math.ceil(math.ceil(len(self.users_all) / self.world) / steps)) if self.user_shard is not None else 1

    def train_epoch(self, epoch: int) -> dict:
        ix, model, engine = self.ix, self.model, self.engine
        model.train()
        sums, n = {"loss": 0.0, "item_loss": 0.0, "user_loss": 0.0}, 0
        it_items = self.item_shard.iter_torch_batches(batch_size=ix.batch_size, dtypes=torch.float32, device=engine.device)
        it_users = (self.user_shard.iter_torch_batches(batch_size=self.user_bs, dtypes=torch.float32, device=engine.device)
                    if self.user_shard is not None else iter(()))
        last_user = None
        for ib, ub in itertools.zip_longest(it_items, it_users):
            if ib is None:
                break  # items set the epoch length; equal shards keep ranks in step
            if ub is not None:
                last_user = ub
            user_x = last_user["data"] if last_user is not None else None
            out = engine(ib["data"], user_x)
            engine.backward(out["loss"])
            engine.step()
            sums["loss"] += float(out["loss"].detach())
            sums["item_loss"] += float(out["item"].loss.detach())
            if out["user"] is not None:
                sums["user_loss"] += float(out["user"].loss.detach())
            n += 1
        restarted = {}
        if ix.restart_every and (epoch + 1) % ix.restart_every == 0 and epoch + 1 < ix.epochs:
            seed = ix.seed * 1000 + epoch
            restarted["item_restarted"] = sum(_restart(model.item, _sample(self.items_all, ix.init_samples, self.gen), seed))
            if model.user is not None:
                restarted["user_restarted"] = sum(_restart(model.user, _sample(self.users_all, ix.init_samples, self.gen), seed + 1))
        return {**{k: v / max(n, 1) for k, v in sums.items()}, **restarted}

    def validate(self) -> dict:
        self.model.eval()
        out = tower_metrics("item", self.model.item, self.items_all)
        if self.model.user is not None:
            out.update(tower_metrics("user", self.model.user, self.users_all))
        return out

    def save(self, directory: Path, metrics: dict) -> None:
        ckpt_io.save_state(directory, self.model.state_dict(), {"epoch": metrics["epoch"], "metrics": metrics, "towers": self.w.towers}, "tokenizer")

    def gathered(self):
        return dsu.gathered(self.model.parameters())


def tokenizer_worker(w: TokenizerWork, place: RunPlace) -> None:
    """The Ray Train worker of the tokenizer job: its hooks on the one loop (every epoch kept)."""
    _, world = rank_and_world(place)
    loop = LoopConfig(epochs=w.index.epochs, seed=w.index.seed, history_path=w.history_path)
    fit(TokenizerTrainer(w, world), loop, place)
