"""Per-epoch learning-rate schedules of the TTDS job (`optim.lr_schedule`).

Why per epoch, not per step: the number of steps in an epoch is not known up front (tasks are
sampled by rate from a Ray Data stream), and a factor that depends only on the epoch number is
the same after a resume from a checkpoint, with nothing extra to save.
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine")


def schedule_problem(schedule: str, key: str = "optim.lr_schedule") -> str | None:
    """The config error for an unknown schedule (None when it is known): one message for every caller."""
    if schedule in LR_SCHEDULES:
        return None
    return f"{key}={schedule!r}: expected one of {', '.join(LR_SCHEDULES)}"


def lr_factor(schedule: str, epoch: int, epochs: int, warmup_epochs: int = 0, min_ratio: float = 0.1) -> float:
    """Multiplier of the configured learning rates in `epoch` (0-based).

    `cosine` decays from 1 in the first trained epoch (after `warmup_epochs`, whose backbone is
    frozen) to `min_ratio` in the last of `epochs`, so the final epochs settle instead of
    hopping between minima at full rate; `constant` is 1 throughout.
    """
    if schedule == "constant":
        return 1.0
    problem = schedule_problem(schedule)
    if problem:
        raise ValueError(problem)
    span = max(epochs - warmup_epochs - 1, 1)
    t = min(max(epoch - warmup_epochs, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
