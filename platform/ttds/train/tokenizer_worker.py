"""The Ray Train worker loop of the twin-tower tokenizer (one function of a config dict).

Every rank k-means-initialises the codebooks from the same full, unsplit data with the same
seed, so all ranks start identical without a broadcast; training batches come from each
rank's Ray Data shard; DeepSpeed averages gradients (ZeRO stage from the config). At each
epoch end usage counts are summed over ranks, dead codes restarted identically everywhere
(through DeepSpeed's fp32 master copy), metrics computed on the full data and a checkpoint
reported; a restarted run continues from the last one.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile

import numpy as np
import torch

from ttds.index.collisions import collision_rate
from ttds.index.rq import codebook_report, reconstruction_error
from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
from ttds.runtime import set_loopback_env
from ttds.train import checkpoint as ckpt_io
from ttds.train import deepspeed_utils as dsu
from ttds.train.launch import starting_checkpoint


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


def tokenizer_worker(config: dict) -> None:
    import ray.train

    set_loopback_env()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(config["seed"])
    gen = torch.Generator().manual_seed(config["seed"])

    items_all, users_all = _full("items_all"), _full("users_all")
    model = TwinTowerTokenizer(TwinTowerConfig.from_dict(config["towers"]))
    start_epoch = 0
    resume = starting_checkpoint(config)
    if resume is not None:
        with resume.as_directory() as d:
            tensors, state = ckpt_io.load_state(d, "tokenizer")
        model.load_state_dict(tensors)
        start_epoch = int(state["epoch"]) + 1
    else:
        model.item.quantizer.init_codebooks(model.item.latents(_sample(items_all, config["init_samples"], gen)))
        if model.user is not None and users_all is not None:
            model.user.quantizer.init_codebooks(model.user.latents(_sample(users_all, config["init_samples"], gen)))

    books = [m.quantizer.codebooks for m in (model.item, model.user) if m is not None]
    book_ids = {id(b) for b in books}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in book_ids]},
        {"params": books, "lr": config["lr"] * config["codebook_lr_scale"]},
    ]
    engine = dsu.initialize(model, lr=config["lr"], stage=config["zero_stage"], micro_batch=config["batch_size"], param_groups=groups)
    # DeepSpeed put the towers on this worker's device (a GPU under train.use_gpu): the whole
    # catalogue goes there too, for the per-epoch metrics and dead-code restarts
    items_all = items_all.to(engine.device)
    users_all = users_all.to(engine.device) if users_all is not None else None

    item_shard = ray.train.get_dataset_shard("items")
    user_shard = ray.train.get_dataset_shard("users") if model.user is not None else None
    n_items_rank = math.ceil(len(items_all) / world)
    steps = max(1, math.ceil(n_items_rank / config["batch_size"]))
    user_bs = max(1, math.ceil(math.ceil(len(users_all) / world) / steps)) if user_shard is not None else 1

    for epoch in range(start_epoch, config["epochs"]):
        model.train()
        sums, n = {"loss": 0.0, "item_loss": 0.0, "user_loss": 0.0}, 0
        it_items = item_shard.iter_torch_batches(batch_size=config["batch_size"], dtypes=torch.float32, device=engine.device)
        it_users = user_shard.iter_torch_batches(batch_size=user_bs, dtypes=torch.float32, device=engine.device) if user_shard is not None else iter(())
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
        if config["restart_every"] and (epoch + 1) % config["restart_every"] == 0 and epoch + 1 < config["epochs"]:
            seed = config["seed"] * 1000 + epoch
            restarted["item_restarted"] = sum(_restart(model.item, _sample(items_all, config["init_samples"], gen), seed))
            if model.user is not None:
                restarted["user_restarted"] = sum(_restart(model.user, _sample(users_all, config["init_samples"], gen), seed + 1))
        model.eval()
        metrics = {"epoch": epoch, **{k: v / max(n, 1) for k, v in sums.items()}, **restarted}
        with dsu.gathered(model.parameters()), tempfile.TemporaryDirectory() as d:
            metrics.update(tower_metrics("item", model.item, items_all))
            if model.user is not None:
                metrics.update(tower_metrics("user", model.user, users_all))
            checkpoint = None
            if rank == 0:
                ckpt_io.save_state(d, model.state_dict(), {"epoch": epoch, "metrics": metrics, "towers": config["towers"]}, "tokenizer")
                checkpoint = ray.train.Checkpoint.from_directory(d)
                with open(config["history_path"], "a") as fh:  # every epoch, also across resumes
                    fh.write(json.dumps(metrics) + "\n")
            ray.train.report(metrics, checkpoint=checkpoint)
