"""The one epoch loop every trainer runs: TTDS, the tokenizer, SASRec/GRU4Rec and LightGCN.

Why one loop: the same steps were written four times and drifted (names; the weight average
reached one trainer after another). As in RecBole's `Trainer.fit`, the loop owns what is the
same for every model (seed, resume, epochs and time budget, validation with the weight average
swapped in, best/patience, checkpoint + `ray.train.report` + history.jsonl, one console line
per epoch); a model gives only its hooks (`Trainer`). In a Ray Train worker (`place` given) it
resumes, checkpoints and reports; in-process (`place=None`) it is one rank that saves nothing.
"""

from __future__ import annotations

import json
import tempfile
import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ContextManager

import torch
from torch import nn

from ttds.runtime import set_loopback_env
from ttds.train.collectives import all_reduce_values
from ttds.train.launch import RunPlace, starting_checkpoint
from ttds.train.weight_average import WeightAverage, read_weight_average, start_average

__all__ = ["LoopConfig", "LoopState", "STATE_FILE", "Trainer", "fit", "over_time_budget", "rank_and_world"]

STATE_FILE = "train_state.json"


@dataclass
class LoopConfig:
    """What the loop needs from a trainer's typed config (each trainer fills it from its own)."""

    epochs: int
    seed: int | None  # torch's global seed before the model is built; None = the trainer seeds its own generators
    seed_per_rank: bool = False  # seed + rank (ranks draw different batches / ids); False = the same init on every rank
    patience: int = 0  # epochs without a better `metric` before stopping; 0 = never stop early
    metric: str = ""  # the key of `validate()`'s figures that selects the best epoch; "" = no selection
    time_budget_s: float = 0.0  # stop before an epoch that would end past this much loop time, resumes included (0 = none)
    ema_decay: float = 0.0  # >0: validate, select and keep a weight average (ttds.train.weight_average)
    validate_live: bool = False  # with an average: also report what the live weights score (`<metric>` as `valid_live_...`)
    history_path: str = ""  # one JSON line per epoch appended here by rank 0 ("" = none)


@dataclass
class LoopState:
    """The loop's part of a checkpoint (`train_state.json`): where it is and what it selected."""

    epoch: int = -1  # the last finished epoch
    best_score: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the best
    resumed_from_epoch: int = -1  # the epoch this run started after (-1 = a fresh start)
    history: list[dict] = field(default_factory=list)  # every epoch's figures, also across resumes
    # loop time spent so far, across resumes: the time budget's clock, so a run that was stopped and
    # resumed trains no longer in all than one that was not (a benchmark unit's budget is the same)
    loop_s: float = 0.0

    @classmethod
    def read(cls, directory: str | Path) -> "LoopState":
        raw = json.loads((Path(directory) / STATE_FILE).read_text())
        renamed = {"best": "best_score", "stale": "bad_epochs"}  # the TTDS job's names before this loop
        raw = {renamed[k] if k in renamed else k: v for k, v in raw.items()}
        if "loop_s" not in raw:  # a checkpoint from before loop_s: its epochs' own times
            raw["loop_s"] = sum(float(h.get("epoch_s", 0.0)) for h in raw.get("history", []))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def write(self, directory: str | Path) -> None:
        (Path(directory) / STATE_FILE).write_text(json.dumps(asdict(self), default=float))


class Trainer(ABC):
    """The hooks a model gives the loop. `model` (set by `start`) is what the weight average
    follows; `average` (set by the loop) must be `update()`d after every optimiser step."""

    model: nn.Module | None = None
    average: WeightAverage | None = None

    @abstractmethod
    def start(self, resume: Path | None, state: LoopState) -> None:
        """Build the model and optimiser, or load them from `resume` (a checkpoint folder this
        trainer's `save` wrote; `state` is the loop's part of it)."""

    def before_epoch(self, epoch: int) -> dict[str, Any]:
        """Work before the epoch's steps (TTDS: re-index); returns figures for the epoch's record."""
        return {}

    @abstractmethod
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of optimiser steps on this rank's shard; returns its figures."""

    def validate(self) -> dict[str, Any]:
        """Validation figures, the same on every rank (all-reduced); holds `LoopConfig.metric`."""
        return {}

    def save_best(self, metrics: dict[str, Any]) -> None:
        """Rank 0, when the epoch improved `metric`: keep the weights in place (the average's)."""

    @abstractmethod
    def save(self, directory: Path, metrics: dict[str, Any]) -> None:
        """Rank 0: the live weights and whatever `start` needs to resume, into `directory`."""

    def gathered(self) -> ContextManager:
        """Whole parameters for validation and saving (ZeRO-3 partitions them)."""
        return nullcontext()


def rank_and_world(place: RunPlace | None) -> tuple[int, int]:
    if place is None:
        return 0, 1
    import ray.train

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()


def over_time_budget(budget_s: float, elapsed_s: float, epochs_done: int) -> bool:
    """Would the next epoch end past `budget_s`? Decided on the slowest rank's clock
    (all-reduced max) so every rank stops at the same epoch. 0 = no budget."""
    if budget_s <= 0:
        return False
    elapsed = all_reduce_values([elapsed_s], "max")[0]
    return elapsed + elapsed / max(epochs_done, 1) > budget_s


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def summary_line(epoch: int, loop: LoopConfig, metrics: dict[str, Any]) -> str:
    """One console line per epoch: the selection figure, the best so far, the loss, the time."""
    parts = [f"epoch {epoch + 1}/{loop.epochs}"] + [f"{k} {metrics[k]:.4f}" for k in ("loss", "bpr_loss") if k in metrics]
    if loop.metric:
        parts.append(f"{loop.metric} {metrics[loop.metric]:.4f} (best {metrics['best_' + loop.metric]:.4f} at epoch {metrics['best_epoch'] + 1})")
    return "  ".join(parts + [f"{metrics['epoch_s']:.1f} s"])


def report_line(metrics: dict[str, Any], epochs: int) -> str:
    """`summary_line` from a Ray Train report (the driver's console: ttds.train.progress); the
    selection metric is the key whose `best_` twin `_select` added."""
    metric = next((k for k in metrics if k != "epoch" and f"best_{k}" in metrics), "")  # best_epoch is bookkeeping
    return summary_line(int(metrics["epoch"]), LoopConfig(epochs=epochs, seed=None, metric=metric), metrics)


def fit(trainer: Trainer, loop: LoopConfig, place: RunPlace | None) -> LoopState:
    """Run `trainer` for `loop.epochs` (or until patience / the time budget stops it)."""
    rank, world = rank_and_world(place)
    if place is not None:
        set_loopback_env()
    if loop.seed is not None:
        torch.manual_seed(loop.seed + (rank if loop.seed_per_rank else 0))
    say = (lambda msg: print(msg, flush=True)) if rank == 0 else (lambda msg: None)

    state, saved_average = LoopState(), None
    ckpt = starting_checkpoint(place) if place is not None else None
    if ckpt is None:
        trainer.start(None, state)
    else:
        with ckpt.as_directory() as d:
            state = LoopState.read(d)
            trainer.start(Path(d), state)
            saved_average = read_weight_average(d)
    state.resumed_from_epoch = state.epoch
    trainer.average = start_average(trainer.model, loop.ema_decay, saved_average, say=say) if trainer.model is not None else None

    run_start, spent_before = time.time(), state.loop_s
    for epoch in range(state.epoch + 1, loop.epochs):
        if loop.patience and state.bad_epochs >= loop.patience:
            break  # a resumed run that had already stopped early
        t0 = time.time()
        metrics: dict[str, Any] = {"epoch": epoch, **trainer.before_epoch(epoch)}
        metrics.update(trainer.train_epoch(epoch))
        with trainer.gathered():
            t1 = time.time()
            if trainer.average is not None and loop.validate_live and loop.metric:  # beside the averaged weights that are selected
                metrics[loop.metric.replace("valid_", "valid_live_", 1)] = trainer.validate()[loop.metric]
            with trainer.average.swapped_in() if trainer.average is not None else nullcontext():
                metrics.update(trainer.validate())
                metrics["valid_s"] = time.time() - t1
                improved = _select(state, loop, epoch, metrics)
                if improved and rank == 0:
                    trainer.save_best(metrics)
            metrics["epoch_s"] = time.time() - t0
            state.epoch = epoch
            state.loop_s = spent_before + time.time() - run_start
            state.history.append(_scalars(metrics))
            if place is not None:
                _checkpoint_and_report(trainer, loop, state, metrics, rank)
        say(summary_line(epoch, loop, metrics))
        if loop.patience and state.bad_epochs >= loop.patience:
            break
        if over_time_budget(loop.time_budget_s, spent_before + time.time() - run_start, epoch + 1):  # all epochs, all runs
            break
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # no rank leaves while another still reports
    return state


def _select(state: LoopState, loop: LoopConfig, epoch: int, metrics: dict[str, Any]) -> bool:
    """Best/patience bookkeeping on `loop.metric`; True when this epoch is the new best."""
    if not loop.metric:
        return False
    score = float(metrics[loop.metric])
    improved = score > state.best_score
    if improved:
        state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
    else:
        state.bad_epochs += 1
    metrics.update({f"best_{loop.metric}": state.best_score, "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs})
    return improved


def _checkpoint_and_report(trainer: Trainer, loop: LoopConfig, state: LoopState, metrics: dict[str, Any], rank: int) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:  # the live weights (training resumes from them) and the average beside them
            trainer.save(Path(d), metrics)
            if trainer.average is not None:
                trainer.average.save(d)
            state.write(d)
            checkpoint = ray.train.Checkpoint.from_directory(d)
            if loop.history_path:  # the full per-epoch record (Ray keeps only retained checkpoints' metrics)
                with open(loop.history_path, "a") as fh:
                    fh.write(json.dumps(_scalars(metrics)) + "\n")
        ray.train.report(metrics, checkpoint=checkpoint)
