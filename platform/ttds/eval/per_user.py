"""Per-user test figures, kept beside every system's means.

Why: two systems scored on the same users are compared by the per-user differences (a paired
test), which is several times tighter than comparing two means with their own errors. The
mean of a column here is exactly the system's reported figure (templates averaged per user).
The `top10` column keeps each user's ranked list (the first template's), so what a system
recommends can be examined after the run (`ttds.bench.diagnostics`: seen items, popularity,
coverage) without ranking again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ttds.eval.metrics import per_user_ranks, per_user_values

__all__ = ["PER_USER_FILE", "per_user_table", "read_per_user", "write_per_user"]

PER_USER_FILE = "test_per_user.parquet"
KS = (1, 5, 10)


def per_user_table(user_ids, targets, ranked: Sequence[np.ndarray]) -> pd.DataFrame:
    """user_id, target, HR@k / NDCG@k per user (each the mean over the ranked lists given: one
    per next-item template, a single list for a model without templates) and `top10`, the first
    list's top 10 (-1 where shorter)."""
    if not ranked:
        raise ValueError("per_user_table needs at least one ranked list")
    targets = np.asarray(targets)
    values = [per_user_values(per_user_ranks(np.asarray(r), targets), KS) for r in ranked]
    table = {"user_id": np.asarray(user_ids, dtype=np.int64), "target": targets.astype(np.int64)}
    for key in values[0]:
        table[key] = np.mean([v[key] for v in values], axis=0)
    first = np.asarray(ranked[0])[:, :10]
    if first.shape[1] < 10:
        first = np.pad(first, ((0, 0), (0, 10 - first.shape[1])), constant_values=-1)
    table["top10"] = list(first.astype(np.int64))
    return pd.DataFrame(table)


def write_per_user(path: str | Path, table: pd.DataFrame) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    return path


def read_per_user(path: str | Path) -> pd.DataFrame:
    """A per-user table; a folder means its PER_USER_FILE."""
    path = Path(path)
    if path.is_dir():
        path = path / PER_USER_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no per-user results (written by the benchmark harness, jobs/train_ttds.py and jobs/evaluate.py)")
    return pd.read_parquet(path)
