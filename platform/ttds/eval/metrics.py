"""Leave-one-out ranking metrics: HR@K and NDCG@K with one relevant item per user.

Why sums and not means in the accumulator: distributed evaluation scores disjoint shards of
users on different workers. Sums of per-user values plus a user count merge exactly (by
addition) in any order; averaging averages would weight shards wrongly.

Definitions (rank is 0-based position of the target in the ranked list):
- ``HR@k``   = 1 if rank < k else 0
- ``NDCG@k`` = 1 / log2(rank + 2) if rank < k else 0 (the ideal DCG is 1: one relevant item)
Both are averaged over users. A target absent from the list counts as a miss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["DEFAULT_KS", "MetricAccumulator", "check_user_count", "per_user_ranks", "per_user_values", "ranking_metrics"]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


def per_user_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each user's target in its ranked row, ``-1`` if absent.

    ``ranked`` is ``int[n, K]`` item ids with ``-1`` for empty slots; if an item repeats, its
    first position counts. A ``-1`` target never matches.
    """
    ranked = np.asarray(ranked)
    targets = np.asarray(targets).reshape(-1)
    if ranked.ndim != 2 or ranked.shape[0] != targets.shape[0]:
        raise ValueError(f"ranked must be [n, K] with n = len(targets); got {ranked.shape} and {targets.shape}")
    hit = (ranked == targets[:, None]) & (targets[:, None] >= 0)
    found = hit.any(axis=1)
    return np.where(found, hit.argmax(axis=1), -1).astype(np.int64)


def check_user_count(evaluated: int, expected: int, what: str = "") -> None:
    """Raise unless every user of the split was evaluated exactly once.

    Why: a ranker or a distributed evaluation that silently drops (or duplicates) users changes
    the figure without any sign of it; every evaluation compares its count with the split's.
    """
    if int(evaluated) != int(expected):
        where = f" ({what})" if what else ""
        raise RuntimeError(f"evaluated {int(evaluated)} users but the split has {int(expected)}{where}: "
                           "users were lost or counted twice, the figures would be wrong")


def per_user_values(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user HR@k and NDCG@k values for the given ranks."""
    found = ranks >= 0
    gain = np.where(found, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        inside = found & (ranks < k)
        out[f"HR@{k}"] = inside.astype(np.float64)
        out[f"NDCG@{k}"] = np.where(inside, gain, 0.0)
    return out


def _check_ks(ks: Sequence[int], list_len: int) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive, got {ks}")
    if max(ks) > list_len:
        # A list of K items cannot support @k > K; answering would silently understate.
        raise ValueError(f"ranked lists have {list_len} entries, too short for @{max(ks)}")
    return ks


def ranking_metrics(
    ranked: np.ndarray, targets: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Mean ``HR@k`` and ``NDCG@k`` over users, for each ``k`` in ``ks``.

    ``ranked``: ``int[n, K]`` item ids best first (``-1`` = empty); ``targets``: ``int[n]``.
    Keys are ``"HR@k"`` and ``"NDCG@k"``. Raises ``ValueError`` if ``max(ks) > K``.
    """
    acc = MetricAccumulator(ks=tuple(ks))
    acc.update(ranked, targets)
    return acc.result()


@dataclass
class MetricAccumulator:
    """Running sums of per-user metric values; merge partial results by addition.

    Use ``update`` per batch, ``merge`` to combine workers (or ``to_dict``/``from_dict`` to
    ship through Ray as plain data), ``result`` for the means.
    """

    ks: tuple[int, ...] = DEFAULT_KS
    count: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        for name in self.keys():
            self.sums.setdefault(name, 0.0)

    def keys(self) -> list[str]:
        """Metric names in a stable order: all HR@k, then all NDCG@k."""
        return [f"HR@{k}" for k in self.ks] + [f"NDCG@{k}" for k in self.ks]

    def update(self, ranked: np.ndarray, targets: np.ndarray) -> "MetricAccumulator":
        """Add a batch of users; returns ``self`` for chaining."""
        ranked = np.asarray(ranked)
        if ranked.ndim != 2:
            raise ValueError(f"ranked must be [n, K], got shape {ranked.shape}")
        _check_ks(self.ks, ranked.shape[1])
        ranks = per_user_ranks(ranked, targets)
        for name, values in per_user_values(ranks, self.ks).items():
            self.sums[name] += float(values.sum())
        self.count += int(ranks.shape[0])
        return self

    def merge(self, other: "MetricAccumulator") -> "MetricAccumulator":
        """Add another accumulator's sums into this one (same ``ks`` required)."""
        if tuple(other.ks) != self.ks:
            raise ValueError(f"cannot merge accumulators with ks {self.ks} and {tuple(other.ks)}")
        for name in self.keys():
            self.sums[name] += other.sums[name]
        self.count += other.count
        return self

    def result(self) -> dict[str, float]:
        """Means over all users seen; NaN if none (an empty evaluation is not a score of 0)."""
        if self.count == 0:
            return {name: float("nan") for name in self.keys()}
        return {name: self.sums[name] / self.count for name in self.keys()}

    def to_dict(self) -> dict:
        """Plain-data form (JSON / Ray object store friendly)."""
        return {"ks": list(self.ks), "count": self.count, "sums": dict(self.sums)}

    @classmethod
    def from_dict(cls, data: dict) -> "MetricAccumulator":
        return cls(ks=tuple(data["ks"]), count=int(data["count"]), sums=dict(data["sums"]))
