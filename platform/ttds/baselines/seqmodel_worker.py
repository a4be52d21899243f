"""The Ray Train worker loop shared by SASRec and GRU4Rec (one function of a config dict).

Each rank trains on its Ray Data shard of the "sequences" layout (one row per user, loss at
every position), DDP averages gradients. After every epoch each rank scores its slice of the
validation users against all items; the metric SUMS are all-reduced (sums merge exactly,
means would not), so every rank sees the same score and takes the same early-stopping
decision (ranks that disagree on when to stop would hang each other's collectives).

Every checkpoint holds the current weights + optimizer state (to resume) AND the best weights
so far (to evaluate), so the newest checkpoint alone answers both questions whatever Ray's
retention keeps. With `ema_decay` > 0 the best weights are the weight average's
(`ttds.train.weight_average`, as in the TTDS job), which is what validation scores.
"""

from __future__ import annotations

import resource
import tempfile
import time
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from ttds.baselines.gru4rec import GRU4Rec
from ttds.baselines.sasrec import SASRec, SequentialRecommender, left_pad
from ttds.config import GRU4RecConfig, SASRecConfig
from ttds.eval.metrics import MetricAccumulator
from ttds.runtime import set_loopback_env
from ttds.train import checkpoint as ckpt_io
from ttds.train.collectives import all_reduce_values
from ttds.train.lr_schedule import lr_factor
from ttds.train.weight_average import read_weight_average, start_average

__all__ = ["MODELS", "build_model", "evaluate_ranks", "load_best", "seq_worker"]

MODELS: dict[str, tuple[type, type]] = {"sasrec": (SASRec, SASRecConfig), "gru4rec": (GRU4Rec, GRU4RecConfig)}
VALID_KS = (1, 5, 10)
CKPT_NAME = "seqmodel"


def build_model(name: str, model_config: dict, n_items: int) -> SequentialRecommender:
    """The model `name` ("sasrec" | "gru4rec") from its config dict."""
    from ttds.config import from_dict

    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, not {name!r}")
    model_cls, cfg_cls = MODELS[name]
    return model_cls(n_items, from_dict(cfg_cls, model_config))


def top_k(model: SequentialRecommender, histories, k: int = 10, exclude_seen: bool = False, batch_size: int = 1024) -> np.ndarray:
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
            scores = model.score_last(left_pad(chunk, model.max_len, model.pad_id).to(device))
            if exclude_seen:
                for row, h in enumerate(chunk):
                    scores[row, torch.as_tensor(np.asarray(h, dtype=np.int64))] = -torch.inf
            vals, idx = torch.topk(scores, kk, dim=1)
            idx[vals == -torch.inf] = -1  # only seen items were left
            out[start : start + len(chunk), :kk] = idx.cpu().numpy()
    return out


def evaluate_ranks(model: SequentialRecommender, histories, targets: np.ndarray, exclude_seen: bool = False) -> MetricAccumulator:
    """Metric sums over these users (merge across ranks by addition)."""
    acc = MetricAccumulator(ks=VALID_KS)
    if len(histories):
        acc.update(top_k(model, histories, max(VALID_KS), exclude_seen), targets)
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
    from ttds.data.corpus import Corpus

    _, hist, targets = Corpus.open(corpus_dir).eval_arrays("valid")
    return hist[rank::world], targets[rank::world]


def seq_worker(config: dict[str, Any]) -> None:
    """Train config["model"] on the "train" shard; report per-epoch valid metrics + checkpoint.

    config: model, model_config (the dataclass as a dict), n_items, corpus_dir (validation
    users are read from it), exclude_seen.
    """
    import ray.train
    import torch.distributed as dist
    from ray.train.torch import get_device, prepare_model

    set_loopback_env()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    mc = config["model_config"]
    if mc.get("threads"):
        torch.set_num_threads(int(mc["threads"]))
    torch.manual_seed(mc["seed"])  # identical init on every rank (DDP also broadcasts rank 0's)

    model = build_model(config["model"], mc, int(config["n_items"]))
    opt = torch.optim.Adam(model.parameters(), lr=mc["lr"], weight_decay=mc["weight_decay"])
    # The full per-epoch history rides in the checkpoint: Ray's result only keeps the metrics
    # of retained checkpoints (the last `keep_checkpoints`), and a resume must not lose it.
    state: dict[str, Any] = {"epoch": -1, "best_epoch": -1, "best_score": -1.0, "bad_epochs": 0, "history": []}
    best = _prefixed("best", model.state_dict())
    saved_average = None
    resume = ray.train.get_checkpoint()
    if resume is not None:
        with resume.as_directory() as d:
            tensors, saved = ckpt_io.load_state(d, CKPT_NAME)
            saved_average = read_weight_average(d)
        model.load_state_dict(_strip("model", tensors))
        opt.load_state_dict(_unflat_optimizer(tensors, saved["optimizer"]))
        best = {k: v for k, v in tensors.items() if k.startswith("best.")}
        state = {k: saved[k] for k in state}
    state["resumed_from_epoch"] = state["epoch"]  # -1 on a fresh start
    torch.manual_seed(mc["seed"] * 1000 + state["epoch"] + 1 + 7919 * rank)  # dropout streams differ by rank/epoch

    ddp = prepare_model(model)  # moves the model to this worker's GPU when the run has one
    device = get_device()
    # ema_decay > 0: validate and keep an average of the weights (made after the model moved to its device)
    averager = start_average(model, float(mc.get("ema_decay", 0.0)), saved_average, say=print if rank == 0 else (lambda _: None))
    pad = model.pad_id
    shard = ray.train.get_dataset_shard("train")
    valid_hist, valid_tgt = _valid_slice(config["corpus_dir"], rank, world)

    run_start = time.perf_counter()
    for epoch in range(state["epoch"] + 1, mc["epochs"]):
        if state["bad_epochs"] >= mc["patience"]:
            break  # a resumed run that had already stopped early
        scale = lr_factor(mc.get("lr_schedule", "constant"), epoch, mc["epochs"], 0, mc.get("min_lr_ratio", 0.1))
        for group in opt.param_groups:
            group["lr"] = mc["lr"] * scale
        t0 = time.perf_counter()
        ddp.train()
        loss_sum, n_pred = 0.0, 0
        batches = shard.iter_batches(
            batch_size=mc["batch_size"], batch_format="numpy",
            local_shuffle_buffer_size=4 * mc["batch_size"], local_shuffle_seed=mc["seed"] * 1000 + epoch,
        )
        for batch in batches:
            seq = left_pad(batch["items"], model.max_len + 1, pad).to(device)
            inp, tgt = seq[:, :-1], seq[:, 1:]
            n = int(((inp != pad) & (tgt != pad)).sum())
            loss = ddp(inp, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if averager is not None:
                averager.update()
            loss_sum += float(loss.detach()) * n
            n_pred += n
        train_s = time.perf_counter() - t0

        with averager.swapped_in() if averager is not None else nullcontext():
            acc = evaluate_ranks(model, valid_hist, valid_tgt, config.get("exclude_seen", False))
            averaged = _prefixed("best", model.state_dict()) if averager is not None else None
        keys = acc.keys()
        summed = all_reduce_values([loss_sum, n_pred, acc.count] + [acc.sums[k] for k in keys])
        loss_sum, n_pred = summed[0], summed[1]
        total = MetricAccumulator(ks=VALID_KS, count=int(summed[2]), sums=dict(zip(keys, summed[3:])))
        valid = total.result()
        slowest, rss, elapsed = all_reduce_values(
            [train_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, time.perf_counter() - run_start], "max"
        )
        epoch_s = elapsed / (epoch - state["resumed_from_epoch"])  # mean epoch time of this run

        score = valid["NDCG@10"]
        if score > state["best_score"]:
            state.update(best_epoch=epoch, best_score=score, bad_epochs=0)
            best = averaged if averaged is not None else _prefixed("best", model.state_dict())
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "loss": loss_sum / max(n_pred, 1),
            **{f"valid_{k}": v for k, v in valid.items() if k != "NDCG@1"},
            "examples_per_s": n_pred / max(slowest, 1e-9),  # next-item predictions, all ranks
            "epoch_s": time.perf_counter() - t0,
            "lr_scale": scale,
            "best_epoch": state["best_epoch"],
            "best_valid_NDCG@10": state["best_score"],
            "peak_rss_mb": rss,
        }
        state["history"].append(metrics)
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0:
                opt_tensors, opt_meta = _flat_optimizer(opt)
                tensors = {**_prefixed("model", model.state_dict()), **best, **opt_tensors}
                saved = {
                    **state,
                    "model": config["model"],
                    "model_config": mc,
                    "n_items": int(config["n_items"]),
                    "optimizer": opt_meta,
                }
                ckpt_io.save_state(d, tensors, saved, CKPT_NAME)
                if averager is not None:
                    averager.save(d)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=checkpoint)
        if state["bad_epochs"] >= mc["patience"]:
            break
        if mc.get("time_budget_s") and elapsed + epoch_s > mc["time_budget_s"]:
            break  # the next epoch would end past the budget (same decision on every rank)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
