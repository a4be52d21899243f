"""SASRec's and GRU4Rec's hooks on the one training loop (`ttds.train.loop`).

Each rank trains on its Ray Data shard of the "sequences" layout (one row per user, loss at
every position), DDP averages gradients; each rank scores its slice of the validation users
against all items and the metric sums are all-reduced, so every rank takes the same
early-stopping decision (ranks that disagree on when to stop would hang each other).
Every checkpoint holds the current weights + optimizer state (to resume) AND the best weights
so far (the weight average's with `ema_decay` > 0), so the newest checkpoint alone answers
both questions whatever Ray's retention keeps.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

from ttds import checkpoint as ckpt_io
from ttds.baselines.gru4rec import GRU4Rec
from ttds.baselines.sasrec import SASRec, SequentialRecommender
from ttds.config import GRU4RecConfig, SASRecConfig, from_dict, to_dict
from ttds.data.corpus import Corpus
from ttds.eval.metrics import MetricAccumulator
from ttds.rank import left_pad, mask_seen, query_keys, top_k
from ttds.train.collectives import all_reduce_metrics, all_reduce_values
from ttds.train.launch import RunPlace
from ttds.train.loop import LoopConfig, LoopState, Trainer, fit, rank_and_world
from ttds.train.lr_schedule import lr_factor

__all__ = ["MODELS", "SeqWork", "build_model", "evaluate_ranks", "load_best", "seq_worker"]

MODELS: dict[str, tuple[type, type]] = {"sasrec": (SASRec, SASRecConfig), "gru4rec": (GRU4Rec, GRU4RecConfig)}
VALID_KS = (1, 5, 10)
CKPT_NAME = "seqmodel"
SeqModelConfig = Union[SASRecConfig, GRU4RecConfig]


def build_model(name: str, model_config: dict, n_items: int) -> SequentialRecommender:
    """The model `name` ("sasrec" | "gru4rec") from its config dict."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, not {name!r}")
    model_cls, cfg_cls = MODELS[name]
    return model_cls(n_items, from_dict(cfg_cls, model_config))


def rank_users(model: SequentialRecommender, histories, k: int = 10, exclude_seen: bool = False, batch_size: int = 1024) -> np.ndarray:
    """Top-k item ids [n, k] after each history, scoring every item (full ranking).

    Slots past the number of items are -1 (a miss for the metrics), so @10 stays defined on
    toy corpora with fewer than 10 items.
    """
    model.eval()
    device = next(model.parameters()).device
    out = np.full((len(histories), k), -1, dtype=np.int64)
    kk = min(k, model.n_items)
    with torch.no_grad():
        for start in range(0, len(histories), batch_size):
            chunk = histories[start : start + batch_size]
            scores = model.score_last(left_pad(chunk, model.pad_id, keep_last=model.max_len, allow_empty=True).ids.to(device))
            if exclude_seen:
                scores = mask_seen(scores, chunk)
            vals, idx = top_k(scores, kk, query_keys(chunk))  # the tie rule every ranker shares (ttds.rank.ties)
            idx[vals == -torch.inf] = -1  # only seen items were left
            out[start : start + len(chunk), :kk] = idx.cpu().numpy()
    return out


def evaluate_ranks(model: SequentialRecommender, histories, targets: np.ndarray, exclude_seen: bool = False) -> MetricAccumulator:
    """Metric sums over these users (merge across ranks by addition)."""
    acc = MetricAccumulator(ks=VALID_KS)
    if len(histories):
        acc.update(rank_users(model, histories, max(VALID_KS), exclude_seen), targets)
    return acc


def _flat_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as flat tensors (safetensors) + the JSON-able rest."""
    sd = opt.state_dict()
    tensors = {f"optim.{pid}.{key}": v for pid, st in sd["state"].items() for key, v in st.items() if torch.is_tensor(v)}
    return tensors, {"param_groups": sd["param_groups"]}


def _unflat_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().clone() for k, v in tensors.items()}


def _strip(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_best(directory: str, name: str = CKPT_NAME) -> tuple[SequentialRecommender, dict]:
    """The best-epoch model of a checkpoint folder written by `seq_worker`, and its state."""
    tensors, state = ckpt_io.load_state(directory, name)
    model = build_model(state["model"], state["model_config"], int(state["n_items"]))
    model.load_state_dict(_strip("best", tensors))
    model.eval()
    return model, state


def _valid_slice(corpus_dir: str, rank: int, world: int) -> tuple[list[np.ndarray], np.ndarray]:
    """This rank's slice of the validation users (every world-th user from `rank`).

    Read straight from the corpus (a parquet read, milliseconds) rather than through a Ray
    Dataset: a second dataset cost ~7 s per run in the driver and again in each worker on the
    shared 2-core box (measured), for 24k rows that every epoch reuses. Histories stay whole
    (the model cuts to max_len itself) so `exclude_seen` sees them all.
    """
    _, hist, targets = Corpus.open(corpus_dir).eval_arrays("valid")
    return hist[rank::world], targets[rank::world]


@dataclass
class SeqWork:
    """A SASRec/GRU4Rec worker's input: the model's typed config (its ema_decay already set from
    ema_epochs by the driver), the catalogue size and where the validation users are."""

    model: str  # "sasrec" | "gru4rec"
    config: SeqModelConfig
    n_items: int
    corpus_dir: str
    exclude_seen: bool = False
    history_path: str = ""  # one JSON line per epoch (a Tune trial's record; a stopped trial keeps what it ran)


class SeqTrainer(Trainer):
    """Next-item cross-entropy at every position of the "sequences" rows, DDP-averaged; the
    best weights ride in every checkpoint beside the live ones and the optimizer state."""

    def __init__(self, w: SeqWork, rank: int, world: int):
        self.w, self.mc, self.rank, self.world = w, w.config, rank, world

    def start(self, resume: Path | None, state: LoopState) -> None:
        import ray.train
        from ray.train.torch import get_device, prepare_model

        mc = self.mc
        if mc.threads:
            torch.set_num_threads(mc.threads)
        model = build_model(self.w.model, to_dict(mc), self.w.n_items)  # the loop seeded torch: the same init on every rank
        self.opt = torch.optim.Adam(model.parameters(), lr=mc.lr, weight_decay=mc.weight_decay)
        self.best = _prefixed("best", model.state_dict())
        if resume is not None:
            tensors, saved = ckpt_io.load_state(resume, CKPT_NAME)
            model.load_state_dict(_strip("model", tensors))
            self.opt.load_state_dict(_unflat_optimizer(tensors, saved["optimizer"]))
            self.best = {k: v for k, v in tensors.items() if k.startswith("best.")}
        torch.manual_seed(mc.seed * 1000 + state.epoch + 1 + 7919 * self.rank)  # dropout streams differ by rank/epoch
        self.ddp = prepare_model(model)  # moves the model to this worker's GPU when the run has one
        self.device = get_device()
        self.model = model  # the loop's weight average follows it (made after the move to its device)
        self.shard = ray.train.get_dataset_shard("train")
        self.valid_hist, self.valid_tgt = _valid_slice(self.w.corpus_dir, self.rank, self.world)

    def train_epoch(self, epoch: int) -> dict:
        mc, model = self.mc, self.model
        scale = lr_factor(mc.lr_schedule, epoch, mc.epochs, 0, mc.min_lr_ratio)
        for group in self.opt.param_groups:
            group["lr"] = mc.lr * scale
        t0 = time.perf_counter()
        self.ddp.train()
        pad = model.pad_id
        loss_sum, n_pred = 0.0, 0
        batches = self.shard.iter_batches(
            batch_size=mc.batch_size, batch_format="numpy",
            local_shuffle_buffer_size=4 * mc.batch_size, local_shuffle_seed=mc.seed * 1000 + epoch,
        )
        for batch in batches:
            seq = left_pad(batch["items"], pad, keep_last=model.max_len + 1, allow_empty=True).ids.to(self.device)
            inp, tgt = seq[:, :-1], seq[:, 1:]
            n = int(((inp != pad) & (tgt != pad)).sum())
            loss = self.ddp(inp, tgt)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.average is not None:
                self.average.update()
            loss_sum += float(loss.detach()) * n
            n_pred += n
        train_s = time.perf_counter() - t0
        loss_sum, n_pred = all_reduce_values([loss_sum, n_pred])
        slowest, rss = all_reduce_values([train_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0], "max")
        return {"loss": loss_sum / max(n_pred, 1), "examples_per_s": n_pred / max(slowest, 1e-9),  # next-item predictions, all ranks
                "lr_scale": scale, "peak_rss_mb": rss}

    def validate(self) -> dict:
        valid = all_reduce_metrics(evaluate_ranks(self.model, self.valid_hist, self.valid_tgt, self.w.exclude_seen)).result()
        return {f"valid_{k}": v for k, v in valid.items() if k != "NDCG@1"}

    def save_best(self, metrics: dict) -> None:
        self.best = _prefixed("best", self.model.state_dict())  # the weights just validated: the average, when there is one

    def save(self, directory: Path, metrics: dict) -> None:
        opt_tensors, opt_meta = _flat_optimizer(self.opt)
        tensors = {**_prefixed("model", self.model.state_dict()), **self.best, **opt_tensors}
        saved = {"model": self.w.model, "model_config": to_dict(self.mc), "n_items": self.w.n_items, "optimizer": opt_meta}
        ckpt_io.save_state(directory, tensors, saved, CKPT_NAME)


def seq_worker(w: SeqWork, place: RunPlace) -> None:
    """The Ray Train worker of SASRec/GRU4Rec: its hooks on the one loop, selected on valid NDCG@10."""
    rank, world = rank_and_world(place)
    mc = w.config
    loop = LoopConfig(epochs=mc.epochs, seed=mc.seed, patience=mc.patience, metric="valid_NDCG@10",
                      time_budget_s=mc.time_budget_s, ema_decay=mc.ema_decay, history_path=w.history_path)
    fit(SeqTrainer(w, rank, world), loop, place)
