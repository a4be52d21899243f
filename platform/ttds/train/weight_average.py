"""An exponential moving average of the trainable weights, validated and kept in their place.

Why: on Instruments every TTDS recipe peaks on validation after 4-5 epochs of constant-lr,
small-batch (32 prompts) AdamW steps and then declines while the training loss keeps falling;
the live weights at any step carry that step's noise. An average over the last ~1/(1 - decay)
steps is a cheap ensemble of nearby solutions (Polyak averaging; the "EMA" of timm and of
TF's ExponentialMovingAverage). Training always steps the live weights; validation, the best
model and early stopping see the averaged ones, so what is selected is what is saved.

The shadow copies live beside the parameters (same device, fp32 as the parameters are), and
ZeRO-1/2 keep every parameter whole on every rank, so each rank averages the same numbers.
ZeRO-3 partitions parameters, which this does not handle: `ttds_job.check_config` refuses it.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

__all__ = ["WeightAverage", "WEIGHT_AVERAGE_FILE", "decay_for_epochs", "decay_problem", "read_weight_average", "span_problem", "start_average", "steps_per_epoch"]

WEIGHT_AVERAGE_FILE = "weight_average.safetensors"


class WeightAverage:
    """shadow <- shadow + (1 - d) (live - shadow) after every optimiser step, with
    d = min(decay, (1 + n) / (10 + n)) at update n, so the first steps do not leave the
    average stuck near the initial weights (TF's `num_updates` warm-up)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        if len(self.names) != len(self.params):  # named_parameters and parameters dedupe tied weights alike
            raise RuntimeError("trainable parameter names and parameters do not line up")
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.current_decay())
        self.updates += 1

    @contextmanager
    def swapped_in(self):
        """The averaged weights in the model's parameters for the block; the live ones after,
        bit for bit (so a ZeRO-1/2 optimizer's own master copy stays in step with them)."""
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.params, live):
                    p.copy_(v)

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {n: s.detach().to("cpu").contiguous() for n, s in zip(self.names, self.shadow)}
        tensors["__updates__"] = torch.tensor([self.updates], dtype=torch.long)
        save_file(tensors, str(Path(directory) / WEIGHT_AVERAGE_FILE))

    def load_state(self, saved: dict[str, torch.Tensor]) -> None:
        """Continue an average read by `read_weight_average` (same trainable parameters)."""
        missing = [n for n in self.names if n not in saved]
        if missing:
            raise ValueError(f"the saved weight average lacks {len(missing)} trainable parameter(s), e.g. {missing[:3]}")
        for n, s in zip(self.names, self.shadow):
            if saved[n].shape != s.shape:
                raise ValueError(f"the saved weight average of {n} has shape {tuple(saved[n].shape)}, the model's is {tuple(s.shape)}")
            s.copy_(saved[n])
        self.updates = int(saved["__updates__"][0])


def read_weight_average(directory: str | Path) -> dict[str, torch.Tensor] | None:
    """The average saved in a checkpoint folder, or None (a run that trained without one: the
    average then starts from the live weights it resumes with)."""
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHT_AVERAGE_FILE
    return load_file(str(path)) if path.exists() else None


def decay_problem(decay: float, where: str) -> str | None:
    """What is wrong with a configured decay (checked before any work starts), or None."""
    if not 0.0 <= decay < 1.0:
        return f"{where}={decay}: expected a value in [0, 1) (0 = no weight average)"
    return None


def span_problem(decay: float, epochs: float, where: str) -> str | None:
    """What is wrong with a configured (decay, span in epochs) pair, or None. Two ways to say the
    same thing: a decay per step, or a span in epochs that `decay_for_epochs` turns into one."""
    if epochs < 0:
        return f"{where}.ema_epochs={epochs}: expected a value >= 0 (0 = set by ema_decay)"
    if epochs > 0 and decay > 0:
        return f"{where}: set ema_decay or ema_epochs, not both (ema_epochs sets the decay from the steps per epoch)"
    return decay_problem(decay, f"{where}.ema_decay")


def steps_per_epoch(rows: int, batch_size: int, workers: int) -> int:
    """Optimiser steps one worker takes per epoch: its shard of the rows in batches."""
    return max(1, math.ceil(math.ceil(rows / max(1, workers)) / max(1, batch_size)))


def decay_for_epochs(epochs: float, rows: int, batch_size: int, workers: int) -> float:
    """The per-step decay whose average spans ~`epochs` epochs of steps: 1 - 1 / (epochs x steps).

    Why: the right decay depends on the steps per epoch (TTDS on Instruments ~900 steps of 32
    prompts wants .999, SASRec ~100 steps of 256 sequences .99), so a span in epochs is the
    setting that carries across corpora, batch sizes and worker counts. A span of one step or
    less is the live weights themselves: 0 (no average)."""
    span = epochs * steps_per_epoch(rows, batch_size, workers)
    return 0.0 if span <= 1.0 else 1.0 - 1.0 / span


def start_average(model: nn.Module, decay: float, saved: dict[str, torch.Tensor] | None, say=print) -> WeightAverage | None:
    """The average a trainer keeps (None when decay is 0), continued from `saved` (a checkpoint's,
    from `read_weight_average`) when it fits the model; otherwise it starts from the live weights
    and `say`s why, never ending a long run over it."""
    if decay <= 0:
        return None
    average = WeightAverage(model, decay)
    if saved is not None:
        try:
            average.load_state(saved)
        except ValueError as e:
            say(f"the checkpoint's weight average does not fit this model ({e}); it restarts from the live weights")
    return average
