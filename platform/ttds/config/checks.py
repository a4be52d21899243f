"""Checks across config sections: values each valid alone that would only break hours later together.

A section checks its own values as it is built (`ttds.config.schema.Section`); what needs two
sections (a ranker and the head it ranks with, the weight average and the ZeRO stage) is here,
in one function per job config, run when the job config is built and again by the job
(`check_config`) before any work starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ttds.config.schema import TTDSJobConfig

__all__ = ["check_config", "check_ttds_job", "ema_span_problem"]


def ema_span_problem(decay: float, epochs: float) -> str | None:
    """What is wrong with a weight average's values (decay per step, span in epochs), or None.

    That only one of the two is given is checked where a user's input is (`check_ttds_job`,
    the baselines' runner): a resolved config may hold both, the decay derived from the span
    (`ttds.train.weight_average.decay_for_epochs`)."""
    if epochs < 0:
        return f"ema_epochs={epochs}: expected a value >= 0 (0 = set by ema_decay)"
    if not 0.0 <= decay < 1.0:
        return f"ema_decay={decay}: expected a value in [0, 1) (0 = no weight average)"
    return None


def check_ttds_job(cfg: "TTDSJobConfig") -> list[str]:
    """The cross-section problems of a TTDS job config (keys with their section's prefix)."""
    problems = []
    if cfg.optim.ema_epochs > 0 and cfg.optim.ema_decay > 0:
        problems.append("optim: set ema_decay or ema_epochs, not both (ema_epochs sets the decay from the steps per epoch)")
    if (cfg.optim.ema_decay > 0 or cfg.optim.ema_epochs > 0) and cfg.train.zero_stage >= 3:
        problems.append("optim.ema_decay / ema_epochs > 0 needs train.zero_stage <= 2 (ZeRO-3 partitions the weights it averages)")
    if cfg.backbone.item_embedding == "tied" and cfg.loss.item_head_weight <= 0:
        problems.append("backbone.item_embedding=tied shares the item head's vectors: it needs loss.item_head_weight > 0")
    if cfg.eval.rank_by == "item_head" and cfg.loss.item_head_weight <= 0:
        problems.append("eval.rank_by=item_head needs loss.item_head_weight > 0 (the item head is trained only then)")
    return problems


def check_config(cfg: "TTDSJobConfig") -> None:
    """Raise ValueError on a TTDS job config that would fail later (the job calls this first).

    A config built by the loader or the dataclass is checked already; this also catches one
    assembled field by field (`dataclasses.replace` on a section skips the job's check)."""
    sections = {"data": cfg.data, "index": cfg.index, "index.features": cfg.index.features, "backbone": cfg.backbone,
                "tasks": cfg.tasks, "loss": cfg.loss, "optim": cfg.optim, "eval": cfg.eval, "train": cfg.train}
    problems = [f"{name}.{p}" for name, section in sections.items() for p in section.all_problems()]
    problems += check_ttds_job(cfg)
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))
