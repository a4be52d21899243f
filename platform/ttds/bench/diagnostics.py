"""What a system recommends, beyond whether it hits: seen items, popularity bias, coverage.

Why: two systems can tie on NDCG@10 for different reasons. On Amazon Instruments SASRec's rank 1
was an item the user already had for 42% of test users (their last item for 25%), although no
test item there is a repeat, so its HR@1 looked far below TTDS's; taking seen items
out (`--exclude-seen`) changed the comparison. These figures, computed from the per-user files
every run writes (`ttds.eval.per_user`, column `top10`), show such effects directly:

- `seen_share`: share of the top-10 slots holding an item already in the user's history;
- `target_seen_share`: share of users whose held-out item is in their history (0 means a
  seen item can never be a hit, so excluding them is free);
- `log_pop_recommended` / `log_pop_target`: mean log(1 + training count) of the recommended
  items and of the held-out items (a large gap = popularity bias);
- `coverage`: distinct recommended items / catalogue size;
- `by_popularity`: per bucket of held-out item popularity (items ranked by training count: the
  top 5% of the catalogue, 5-20%, 20-50%, the rest), the share of users whose held-out item is
  in it, their NDCG@10 and HR@10, and the share of all recommended slots spent on its items.
  Every bucket is kept (its slot share means something even when no held-out item falls in
  it); such a bucket's NDCG@10 / HR@10 are None (JSON null, "–" in the tables), never NaN.
  It says where a gap comes from: on Instruments (seen items excluded) TTDS trailed SASRec
  mostly on held-out items outside the top 5% (NDCG@10 .011 vs .034 in 5-20%), where it spent
  8% of its slots against SASRec's 14%.
- `by_history`: per bucket of the user's history length (items before the held-out one) that
  holds any user (no NaN rows, which would not survive JSON), the share of users in it and their
  NDCG@10 and HR@10. It says whether a gap is about reading long
  sequences or about users with little context: on Instruments (seen items excluded) 69% of
  TTDS's gap to SASRec (cosine recipe) came from users with at most 5 items, 1% from those with more than 20.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ttds.data.corpus import Corpus
from ttds.eval.per_user import read_per_user

__all__ = ["DIAGNOSTICS", "HISTORY_BUCKETS", "POPULARITY_BUCKETS", "diagnose_folders", "history_bucket_of_lengths",
           "popularity_bucket_of_items", "ranking_diagnostics"]

DIAGNOSTICS = ("seen_share", "target_seen_share", "log_pop_recommended", "log_pop_target", "coverage")
# upper edges, as fractions of the catalogue ranked by training count (most bought first)
POPULARITY_BUCKETS = {"top 5%": 0.05, "5-20%": 0.2, "20-50%": 0.5, "50-100%": 1.0}
# upper edges (inclusive) of the history length, in items; 5-core data starts at 4 test history items
HISTORY_BUCKETS = {"<=5": 5, "6-8": 8, "9-12": 12, "13-20": 20, ">20": np.inf}


def popularity_bucket_of_items(counts: np.ndarray) -> np.ndarray:
    """Index into POPULARITY_BUCKETS of every item (ties in count: lower item id ranks first)."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    rank = np.empty(len(order), dtype=np.float64)
    rank[order] = np.arange(len(order)) / max(len(order), 1)
    return np.searchsorted(np.array(list(POPULARITY_BUCKETS.values())), rank, side="right")


def history_bucket_of_lengths(lengths: np.ndarray) -> np.ndarray:
    """Index into HISTORY_BUCKETS of every history length."""
    return np.searchsorted(np.array(list(HISTORY_BUCKETS.values()), dtype=np.float64), np.asarray(lengths, dtype=np.float64), side="left")


def _hits_by_group(table: pd.DataFrame, group: np.ndarray, names) -> dict[str, dict[str, float]]:
    out = {}
    for j, name in enumerate(names):
        users = group == j
        out[name] = {
            "users": float(users.mean()),
            # None (JSON null) for a group without users: NaN is not JSON, and "no users" is not a figure
            "NDCG@10": float(table["NDCG@10"].to_numpy()[users].mean()) if users.any() else None,
            "HR@10": float(table["HR@10"].to_numpy()[users].mean()) if users.any() else None,
        }
    return out


def ranking_diagnostics(table: pd.DataFrame, corpus: Corpus, split: str = "test") -> dict[str, float]:
    """The figures above for one per-user table (needs its `top10` column)."""
    if "top10" not in table.columns:
        raise ValueError("this per-user table has no top10 column (written before ranked lists were kept); rank again to get one")
    uids, hists, _ = corpus.eval_arrays(split)
    history = {int(u): h for u, h in zip(uids, hists)}
    missing = [int(u) for u in table["user_id"] if int(u) not in history]
    if missing:
        raise ValueError(f"{len(missing)} users of the table are not {split} users of {corpus.name} (first: {missing[0]}): another corpus?")
    ranked = np.stack(table["top10"].to_numpy()).astype(np.int64)
    targets = table["target"].to_numpy().astype(np.int64)
    seen = np.array([np.isin(r, history[int(u)]) & (r >= 0) for u, r in zip(table["user_id"], ranked)])
    filled = ranked >= 0
    counts = corpus.item_popularity()
    log_pop = np.log1p(counts.astype(np.float64))
    bucket = popularity_bucket_of_items(counts)
    slots = bucket[ranked[filled]]
    by_pop = _hits_by_group(table, bucket[targets], POPULARITY_BUCKETS)
    for j, name in enumerate(POPULARITY_BUCKETS):
        by_pop[name]["slots"] = float((slots == j).mean()) if len(slots) else None
    lengths = np.array([len(history[int(u)]) for u in table["user_id"]])
    return {
        "seen_share": float(seen.sum() / max(filled.sum(), 1)),
        "target_seen_share": float(np.mean([int(t) in set(history[int(u)].tolist()) for u, t in zip(table["user_id"], targets)])),
        "log_pop_recommended": float(log_pop[ranked[filled]].mean()) if filled.any() else None,
        "log_pop_target": float(log_pop[targets].mean()),
        "coverage": float(len(np.unique(ranked[filled])) / max(corpus.n_items, 1)),
        "by_popularity": by_pop,
        "by_history": {k: v for k, v in _hits_by_group(table, history_bucket_of_lengths(lengths), HISTORY_BUCKETS).items() if v["users"] > 0},
    }


def diagnose_folders(corpus_dir: str | Path, runs: list[str | Path], split: str = "test") -> dict[str, dict]:
    """`ranking_diagnostics` of runs made apart ({run as given: figures}), all scored on the corpus in `corpus_dir`."""
    corpus = Corpus.open(corpus_dir)
    out = {}
    for run in runs:
        try:
            out[str(run)] = ranking_diagnostics(read_per_user(run), corpus, split)
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"{run}: {e}") from e
    return out
