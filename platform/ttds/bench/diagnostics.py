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
- `coverage`: distinct recommended items / catalogue size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ttds.data.corpus import Corpus

__all__ = ["DIAGNOSTICS", "ranking_diagnostics"]

DIAGNOSTICS = ("seen_share", "target_seen_share", "log_pop_recommended", "log_pop_target", "coverage")


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
    log_pop = np.log1p(corpus.item_popularity().astype(np.float64))
    return {
        "seen_share": float(seen.sum() / max(filled.sum(), 1)),
        "target_seen_share": float(np.mean([int(t) in set(history[int(u)].tolist()) for u, t in zip(table["user_id"], targets)])),
        "log_pop_recommended": float(log_pop[ranked[filled]].mean()) if filled.any() else float("nan"),
        "log_pop_target": float(log_pop[targets].mean()),
        "coverage": float(len(np.unique(ranked[filled])) / max(corpus.n_items, 1)),
    }
