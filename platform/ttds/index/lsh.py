"""LSH indexer (ablation): semantic IDs from signs of static random projections.

Each level owns log2(N) random hyperplanes; a row's code at that level packs the sign bits of
its projections. Levels apply to residuals, as in RQ: after level l, every row subtracts the
mean of the rows that fell in its cell, so level l+1 splits *within* cells and the ID stays
coarse-to-fine (a prefix names a region). The hyperplanes never learn; only the cell means
come from `fit`, which is what makes this "semantic IDs without training" rather than a
random ID. `residual=False` gives independent projections of the centred input instead.
"""

from __future__ import annotations

import numpy as np

from ttds.index.base import check_codes

__all__ = ["LSHIndexer"]


class LSHIndexer:
    """Random-hyperplane LSH with `levels` codes of `codebook_size` (a power of two) values."""

    def __init__(self, levels: int = 4, codebook_size: int = 256, seed: int = 0, residual: bool = True) -> None:
        bits = int(codebook_size).bit_length() - 1
        if codebook_size < 2 or (1 << bits) != codebook_size:
            raise ValueError(f"LSH needs a power-of-two codebook_size, got {codebook_size}")
        self.levels = levels
        self.codebook_size = codebook_size
        self.seed = seed
        self.residual = residual
        self.bits = bits
        self.mean: np.ndarray | None = None
        self.planes: np.ndarray | None = None  # [levels, bits, dim]
        self.cell_means: np.ndarray | None = None  # [levels, N, dim] (residual mode)

    def _level_codes(self, r: np.ndarray, level: int) -> np.ndarray:
        signs = (r @ self.planes[level].T) > 0  # [n, bits]
        weights = np.left_shift(np.int64(1), np.arange(self.bits, dtype=np.int64))
        return signs.astype(np.int64) @ weights

    def fit(self, x: np.ndarray) -> "LSHIndexer":
        x = np.asarray(x, dtype=np.float64)
        rng = np.random.default_rng(self.seed)
        self.mean = x.mean(axis=0)
        self.planes = rng.standard_normal((self.levels, self.bits, x.shape[1]))
        self.cell_means = np.zeros((self.levels, self.codebook_size, x.shape[1]))
        if self.residual:
            r = x - self.mean
            for level in range(self.levels):
                codes = self._level_codes(r, level)
                counts = np.bincount(codes, minlength=self.codebook_size)
                sums = np.zeros((self.codebook_size, x.shape[1]))
                np.add.at(sums, codes, r)
                self.cell_means[level] = sums / np.maximum(counts, 1)[:, None]
                r = r - self.cell_means[level][codes]
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        if self.planes is None:
            raise RuntimeError("LSHIndexer.encode called before fit")
        r = np.asarray(x, dtype=np.float64) - self.mean
        out = np.empty((len(r), self.levels), dtype=np.int64)
        for level in range(self.levels):
            out[:, level] = self._level_codes(r, level)
            if self.residual:
                r = r - self.cell_means[level][out[:, level]]
        return check_codes(out, self.levels, self.codebook_size)
