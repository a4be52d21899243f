"""Full-ranking next-item evaluation by trie-constrained beam search over all items.

Leave-one-out: every user's held-out item is ranked against the whole catalogue (no sampled
negatives). Metrics are averaged over the next-item instruction templates, as in the paper.
`exclude_seen` keeps each user's history items out of the ranking (RecBole's full-sort
protocol); the Amazon leave-one-out sets have no repeat purchases, so a seen item can never be
the held-out one and ranking it only wastes a slot.
The same function runs inside a Ray Train worker (validation, each rank a slice of users),
in Ray Data actors (jobs/evaluate.py) and in tests; the ranking itself is `ttds.rank`'s, the
one serving uses.
"""

from __future__ import annotations

import numpy as np
import torch

from ttds.eval.metrics import MetricAccumulator, check_user_count
from ttds.llm.prompts import PromptBuilder
from ttds.rank.beam import BeamConfig
from ttds.rank.next_item import rank_next_items
from ttds.rank.trie import PrefixTrie


def evaluate_next_item(
    backbone,
    builder: PromptBuilder,
    trie: PrefixTrie,
    user_ids,
    histories,
    targets,
    templates: list[int],
    beam: BeamConfig,
    max_history: int,
    batch_size: int = 64,
    progress: bool = False,
    exclude_seen: bool = False,
    item_head: torch.nn.Module | None = None,
) -> dict[int, MetricAccumulator]:
    """One MetricAccumulator per template (merge across workers, then `average`); `item_head`: see `rank_next_items`."""
    accs = {}
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            for t in templates:
                ranked = rank_next_items(backbone, builder, trie, user_ids, histories, t, beam, max_history, batch_size, progress, exclude_seen,
                                         item_head=item_head)
                accs[t] = MetricAccumulator(ks=(1, 5, 10)).update(ranked, np.asarray(targets))
                check_user_count(accs[t].count, len(user_ids), f"template {t}")
    finally:
        backbone.train(was_training)
    return accs


def average(accs: dict[int, MetricAccumulator]) -> dict[str, float]:
    """Mean over templates of each metric, plus each template's own figures."""
    results = {t: a.result() for t, a in accs.items()}
    keys = next(iter(results.values())).keys()
    out = {k: float(np.mean([r[k] for r in results.values()])) for k in keys}
    out["per_template"] = {str(t): r for t, r in results.items()}
    out["users"] = int(next(iter(accs.values())).count)
    return out
