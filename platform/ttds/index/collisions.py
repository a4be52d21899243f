"""Collision handling: make M-token semantic codes into unique, prefix-free IDs.

Two entities may get the same M codes (the quantiser can't separate them). They keep those
codes, which still say what they are, and get one extra suffix token `<s_k>` numbered by row
order inside their collision set; entities with a unique code get no suffix. An M-token ID
is then never a prefix of an (M+1)-token ID, because a code that needs a suffix is shared
and so never appears alone. This keeps trie-constrained decoding unambiguous.
"""

from __future__ import annotations

import numpy as np

__all__ = ["collision_rate", "assign_suffixes", "max_suffix", "final_keys", "is_prefix_free"]


def _as_codes(codes: np.ndarray) -> np.ndarray:
    arr = np.asarray(codes, dtype=np.int64)
    if arr.ndim != 2:
        raise ValueError(f"codes must be [n, M], got shape {arr.shape}")
    return arr


def collision_rate(codes: np.ndarray) -> float:
    """(n - number of distinct code rows) / n, before suffixes; 0.0 for no rows.

    It counts the rows that would need a suffix beyond the first of each collision set,
    i.e. the fraction of entities a code-only ID could not tell apart from another.
    """
    arr = _as_codes(codes)
    n = len(arr)
    if n == 0:
        return 0.0
    return (n - len(np.unique(arr, axis=0))) / n


def assign_suffixes(codes: np.ndarray) -> np.ndarray:
    """Suffix per row: -1 for a unique code, else 0..k-1 by row order within the set of k.

    Row order (not, say, a hash) makes the assignment stable: the same table in the same
    order always gets the same suffixes.
    """
    arr = _as_codes(codes)
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse, counts = np.unique(arr, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    group_sorted = inverse[order]
    # Start offset of every group inside the sorted order; rank = position - start.
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - starts[group_sorted]
    suffix = np.empty(n, dtype=np.int64)
    suffix[order] = rank
    suffix[counts[inverse] == 1] = -1
    return suffix


def max_suffix(codes: np.ndarray) -> int:
    """Largest suffix `assign_suffixes` gives (size of the largest collision set - 1), -1 if none."""
    arr = _as_codes(codes)
    if len(arr) == 0:
        return -1
    _, counts = np.unique(arr, axis=0, return_counts=True)
    biggest = int(counts.max())
    return biggest - 1 if biggest > 1 else -1


def final_keys(codes: np.ndarray, suffix: np.ndarray) -> list[tuple[int, ...]]:
    """Each row's full ID as a tuple: the M codes, plus the suffix when it has one."""
    arr = _as_codes(codes)
    suf = np.asarray(suffix, dtype=np.int64)
    return [tuple(row) + ((int(s),) if s >= 0 else ()) for row, s in zip(arr.tolist(), suf.tolist())]


def is_prefix_free(keys: list[tuple[int, ...]]) -> bool:
    """True when no key equals another or is a proper prefix of another key."""
    ordered = sorted(set(keys))
    if len(ordered) != len(keys):
        return False
    # In lexicographic order a prefix sorts right before its extensions.
    return not any(b[: len(a)] == a for a, b in zip(ordered[:-1], ordered[1:]))
