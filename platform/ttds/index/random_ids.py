"""Random IDs (the TT-SR ablation): every row gets M codes drawn at random, ignoring features.

It answers "how much do *semantic* IDs matter?": same ID length, same vocabulary, no meaning.
Row i's code depends only on the seed and i (numpy fills the [n, M] draw row by row), so a
longer table keeps the IDs of the rows it shares with a shorter one.
"""

from __future__ import annotations

import numpy as np

from ttds.index.base import check_codes

__all__ = ["RandomIndexer"]


class RandomIndexer:
    """Seeded random codes by row order; `fit` only records the feature width."""

    def __init__(self, levels: int = 4, codebook_size: int = 256, seed: int = 0) -> None:
        if codebook_size < 2 or levels < 1:
            raise ValueError(f"need levels >= 1 and codebook_size >= 2, got {levels}, {codebook_size}")
        self.levels = levels
        self.codebook_size = codebook_size
        self.seed = seed
        self.fitted_rows: int | None = None

    def fit(self, x: np.ndarray) -> "RandomIndexer":
        self.fitted_rows = len(x)
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        codes = rng.integers(0, self.codebook_size, size=(len(x), self.levels), dtype=np.int64)
        return check_codes(codes, self.levels, self.codebook_size)
