"""Discriminability and robustness diagnostics of an index (after MoC, arXiv 2410.09560).

- **NMI** between quantised representations and item categories: how much of the
  catalogue's category structure the codes keep. Reported for every code position, for the
  full pre-suffix code (all M tokens) and for the final ID; computed with a small numpy
  implementation equal to scikit-learn's `normalized_mutual_info_score` (arithmetic mean
  normalisation), since scikit-learn is not a dependency.
- **Singular spectrum** of the code embeddings: the singular values of the matrix of every
  entity's quantised vector (its code vectors, concatenated over positions). A spectrum that
  falls off a cliff means the codes span few directions (dimensional collapse, the "dimension
  robustness" MoC measures); the share of energy in the top directions and the effective rank
  (exp of the entropy of normalised singular values) summarise it; a PNG shows the curve.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "entropy",
    "mutual_information",
    "nmi",
    "category_labels",
    "code_category_nmi",
    "singular_spectrum",
    "spectrum_summary",
    "plot_spectrum",
    "index_diagnostics",
]

_SPLIT = re.compile(r"\s*(?:,|>|\|)\s*")


def _codes_of(labels: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Dense integer labels 0..k-1 for any hashable labels (rows of a 2-d array count as one label)."""
    arr = np.asarray(labels)
    if arr.ndim == 2:
        _, inv = np.unique(arr, axis=0, return_inverse=True)
        return inv.reshape(-1)
    _, inv = np.unique(arr.astype(str) if arr.dtype == object else arr, return_inverse=True)
    return inv.reshape(-1)


def entropy(labels: Sequence[Any] | np.ndarray) -> float:
    """Shannon entropy (nats) of the empirical label distribution."""
    c = np.bincount(_codes_of(labels)).astype(np.float64)
    if c.sum() == 0:
        return 0.0
    p = c[c > 0] / c.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(a: Sequence[Any] | np.ndarray, b: Sequence[Any] | np.ndarray) -> float:
    """I(A; B) in nats from the contingency table of two labelings of the same rows."""
    x, y = _codes_of(a), _codes_of(b)
    if len(x) != len(y):
        raise ValueError(f"labelings differ in length: {len(x)} vs {len(y)}")
    n = len(x)
    if n == 0:
        return 0.0
    joint = np.bincount(x * (y.max() + 1) + y).astype(np.float64)
    nz = np.nonzero(joint)[0]
    pxy = joint[nz] / n
    px = np.bincount(x).astype(np.float64)[nz // (y.max() + 1)] / n
    py = np.bincount(y).astype(np.float64)[nz % (y.max() + 1)] / n
    return float(max((pxy * np.log(pxy / (px * py))).sum(), 0.0))


def nmi(a: Sequence[Any] | np.ndarray, b: Sequence[Any] | np.ndarray) -> float:
    """Normalised mutual information 2 I(A;B) / (H(A) + H(B)) in [0, 1].

    Same definition as scikit-learn's default; two constant labelings score 1.0 (they agree
    perfectly), a constant against a varied one 0.0.
    """
    ha, hb = entropy(a), entropy(b)
    if ha == 0.0 and hb == 0.0:
        return 1.0
    if ha == 0.0 or hb == 0.0:
        return 0.0
    return float(min(1.0, 2.0 * mutual_information(a, b) / (ha + hb)))


def category_labels(categories: Sequence[str | None], depth: int = 1) -> np.ndarray:
    """One label per item from category paths like "Industrial & Scientific,Fasteners,Staples".

    `depth` picks the path element (0 = the root, usually the same for a whole Amazon
    category; 1 = its first subdivision); a shorter path uses its deepest element. Items
    without categories get "" (callers drop them).
    """
    out = []
    for c in categories:
        parts = [p for p in _SPLIT.split(c.strip())] if c else []
        parts = [p for p in parts if p]
        out.append(parts[min(depth, len(parts) - 1)] if parts else "")
    return np.asarray(out, dtype=object)


def code_category_nmi(codes: np.ndarray, categories: Sequence[str] | np.ndarray, suffix: np.ndarray | None = None) -> dict[str, Any]:
    """NMI of item categories with each code position, with the full code and the final ID.

    Items with an empty category are left out. Keys: `level_nmi` (per position), `first_level`,
    `full_code` (all M tokens, before suffixes) and `final_id` (with suffixes; every ID is
    unique, so this mostly reflects H(categories) and is reported for completeness).
    """
    codes = np.asarray(codes, dtype=np.int64)
    cats = np.asarray(categories, dtype=object)
    keep = np.array([bool(c) for c in cats])
    if keep.sum() < 2 or len(set(cats[keep].tolist())) < 2:
        return {"items_with_category": int(keep.sum()), "categories": int(len(set(cats[keep].tolist()))), "nmi": None}
    c, k = cats[keep], codes[keep]
    out: dict[str, Any] = {
        "items_with_category": int(keep.sum()),
        "categories": int(len(set(c.tolist()))),
        "level_nmi": [round(nmi(k[:, lv], c), 4) for lv in range(k.shape[1])],
        "full_code": round(nmi(k, c), 4),
    }
    out["first_level"] = out["level_nmi"][0]
    if suffix is not None:
        full = np.concatenate([k, np.asarray(suffix, dtype=np.int64)[keep, None]], 1)
        out["final_id"] = round(nmi(full, c), 4)
    return out


def singular_spectrum(vectors: np.ndarray) -> np.ndarray:
    """Singular values (descending) of the centred matrix of per-entity code embeddings."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v.reshape(len(v), -1)
    if len(v) == 0:
        return np.zeros(0)
    v = v - v.mean(0, keepdims=True)
    return np.linalg.svd(v, compute_uv=False)


def spectrum_summary(s: np.ndarray, top: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Effective rank exp(H(s / sum s)) and the share of energy (s^2) in the top-k directions."""
    s = np.asarray(s, dtype=np.float64)
    total = float(s.sum())
    if total <= 0:
        return {"effective_rank": 0.0, "dims": int(len(s))}
    p = s[s > 0] / total
    energy = s**2 / float((s**2).sum())
    out = {"effective_rank": round(float(np.exp(-(p * np.log(p)).sum())), 3), "dims": int(len(s))}
    for k in top:
        if k <= len(s):
            out[f"energy_top{k}"] = round(float(energy[:k].sum()), 4)
    return out


def plot_spectrum(spectra: dict[str, np.ndarray], path: str | Path, title: str = "singular spectrum of code embeddings") -> Path:
    """Normalised singular values (s / s_max, log scale) of each named spectrum, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in spectra.items():
        s = np.asarray(s, dtype=np.float64)
        if len(s) and s[0] > 0:
            r = s / s[0]
            r = r[r > 1e-7]  # beyond the rank the values are round-off: leave them out
            ax.semilogy(np.arange(1, len(r) + 1), r, label=name)
    ax.set_xlabel("singular value index")
    ax.set_ylabel("s_i / s_1")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _quantised_vectors(tower, codes: np.ndarray) -> np.ndarray:
    """Per-entity code embeddings [n, M * D]: the code vectors of its codes, concatenated."""
    books = tower.code_vectors().cpu().numpy()  # [M, N, D]
    codes = np.asarray(codes, dtype=np.int64)
    return np.concatenate([books[lv][codes[:, lv]] for lv in range(codes.shape[1])], 1)


def index_diagnostics(
    out_dir: str | Path,
    items,
    users=None,
    item_categories: Sequence[str | None] | None = None,
    item_tower=None,
    user_tower=None,
    category_depth: int = 1,
) -> dict[str, Any]:
    """NMI with categories (items, when categories exist) and code-embedding spectra.

    `items` / `users` are `SemanticIDTable`s. Learned towers give their code vectors; static
    indexers (LSH, random, precomputed) have none, so their spectrum is that of one-hot codes
    (what an embedding table learned from scratch would start from), which still shows how
    evenly the codes spread. Writes `code_spectrum.png` and `diagnostics.json` into `out_dir`.
    """
    out = Path(out_dir)
    result: dict[str, Any] = {}
    if item_categories is not None:
        labels = category_labels(item_categories, category_depth)
        result["item_category_nmi"] = {"depth": category_depth, **code_category_nmi(items.codes, labels, items.suffix)}
    spectra: dict[str, np.ndarray] = {}
    for name, table, tower in (("item", items, item_tower), ("user", users, user_tower)):
        if table is None or len(table) == 0:
            continue
        if tower is not None:
            vecs, basis = _quantised_vectors(tower, table.codes), "code_vectors"
        else:
            n = table.codebook_size
            vecs = np.zeros((len(table), table.levels * n), dtype=np.float32)
            for lv in range(table.levels):
                vecs[np.arange(len(table)), lv * n + table.codes[:, lv]] = 1.0
            basis = "one_hot"
        s = singular_spectrum(vecs)
        spectra[name] = s
        result[f"{name}_spectrum"] = {"basis": basis, **spectrum_summary(s), "singular_values": [round(float(v), 5) for v in s[:64]]}
    if spectra:
        result["spectrum_png"] = str(plot_spectrum(spectra, out / "code_spectrum.png"))
    (out / "diagnostics.json").write_text(json.dumps(result, indent=2))
    return result
