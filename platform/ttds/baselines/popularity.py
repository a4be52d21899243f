"""Most-popular baseline: rank items by their training-split interaction count.

The floor every learned model must clear; on the synthetic corpus (planted transitions) it
is deliberately weak. Counts come from the training split only (valid/test would leak).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ttds.data.corpus import Corpus
from ttds.eval.metrics import check_user_count, ranking_metrics
from ttds.rank.popularity import rank_popularity

__all__ = ["REPORT_KEYS", "evaluate_popularity", "popularity_ranking", "report"]

# The figures every baseline reports (NDCG@1 equals HR@1 with one relevant item).
REPORT_KEYS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10")


def report(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in REPORT_KEYS}


def popularity_ranking(
    corpus: Corpus,
    k: int = 10,
    exclude_seen: bool = False,
    histories: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Top-k item ids by training popularity (`ttds.rank.popularity.rank_popularity`: ties by the
    seeded hash of the rank layer, not by item id).

    Without `histories`: one list, shape [k]. With `histories`: one row per user, shape
    [n, k], each user's seen items removed when `exclude_seen`.
    """
    return rank_popularity(corpus.item_popularity(), k, histories, exclude_seen)


def evaluate_popularity(corpus: Corpus, split: str = "test", exclude_seen: bool = False) -> dict[str, float]:
    """HR@1/5/10 and NDCG@5/10 of the popularity ranking on `split` (full ranking)."""
    _, histories, targets = corpus.eval_arrays(split)
    ranked = popularity_ranking(corpus, 10, exclude_seen, histories)
    check_user_count(len(ranked), len(targets), f"popularity on {split}")
    return report(ranking_metrics(ranked, targets, ks=(1, 5, 10)))
