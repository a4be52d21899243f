"""The interface every indexer (learned RQ, LSH, random IDs) offers, so ablations swap one line."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Indexer", "check_codes"]


@runtime_checkable
class Indexer(Protocol):
    """Maps feature rows to M codes in [0, codebook_size).

    `fit` sees the training entities' features once; `encode` may then be called on any rows
    (the same ones to build a table, new ones for cold-start entities).
    """

    levels: int
    codebook_size: int

    def fit(self, x: np.ndarray) -> "Indexer": ...

    def encode(self, x: np.ndarray) -> np.ndarray: ...


def check_codes(codes: np.ndarray, levels: int, codebook_size: int) -> np.ndarray:
    """Validate an indexer's output ([n, levels] int64 in range) and return it as int64."""
    arr = np.asarray(codes)
    if arr.ndim != 2 or arr.shape[1] != levels:
        raise ValueError(f"codes must be [n, {levels}], got {arr.shape}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size})")
    return arr
