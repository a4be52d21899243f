"""Content kNN: rank items by how close their text is to what the user bought (no training).

Score of a candidate = cosine of its text vector to the mean of the user's history items'
text vectors. The vectors come from the same text encoder as TTDS's item X
(`ttds.features.build.encode_with_backbone`: the text backbone, its vocabulary built from the
training items' titles), each L2-normalised, centred on the mean of the items the model was
trained with, and normalised again (mean-pooled LLM states share one large common direction).

Why it is here: it is the natural baseline for cold items. It needs nothing but an item's text,
so it ranks a new item as readily as an old one; a generative recommender that places new
items by their text must beat it on cold items to show that its training adds something.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ttds.data.corpus import Corpus
from ttds.eval.metrics import ranking_metrics
from ttds.eval.per_user import PER_USER_FILE, per_user_table, write_per_user
from ttds.features.build import FeatureConfig, encode_with_backbone

__all__ = ["ContentKNNConfig", "text_item_vectors", "content_knn_ranking", "evaluate_content_knn"]


@dataclass
class ContentKNNConfig:
    text_backbone: str = "tiny-llama"  # as `features.text_backbone`: the TTDS recipe's backbone
    text_max_length: int = 96
    text_batch_size: int = 16
    text_actors: int = 1
    batch_users: int = 1024


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)).astype(np.float32)


def text_item_vectors(corpus: Corpus, cfg: ContentKNNConfig, train_items: int | None = None, vocab_titles: list[str] | None = None) -> np.ndarray:
    """Unit text vectors [n_items, H] of `corpus`'s items, centred on its first `train_items` items
    (the ones a model was trained with; default all). `vocab_titles`: the titles the tiny text
    backbone's vocabulary is built from (default the corpus's; pass the training items' titles so
    that no cold item's text shapes the encoder)."""
    fcfg = FeatureConfig(source="text", text_backbone=cfg.text_backbone, text_max_length=cfg.text_max_length,
                         text_batch_size=cfg.text_batch_size, text_actors=cfg.text_actors)
    raw = encode_with_backbone(corpus.item_texts, fcfg, vocab_titles if vocab_titles is not None else corpus.item_titles)
    x = _normalise(raw)
    return _normalise(x - x[: train_items or len(x)].mean(0, keepdims=True))


def content_knn_ranking(vecs: np.ndarray, histories: Sequence[np.ndarray], k: int = 10, exclude_seen: bool = False,
                        batch_users: int = 1024) -> np.ndarray:
    """Top-k item ids [n_users, k] by cosine to the mean history vector (ties: lowest id first).
    An empty history scores every item 0 (ranked by id)."""
    n_items = len(vecs)
    out = np.zeros((len(histories), min(k, n_items)), dtype=np.int64)
    for start in range(0, len(histories), batch_users):
        chunk = histories[start : start + batch_users]
        q = np.zeros((len(chunk), vecs.shape[1]), dtype=np.float32)
        for r, h in enumerate(chunk):
            if len(h):
                q[r] = vecs[np.asarray(h, dtype=np.int64)].mean(0)
        scores = _normalise(q) @ vecs.T
        if exclude_seen:
            for r, h in enumerate(chunk):
                scores[r, np.asarray(h, dtype=np.int64)] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, : out.shape[1]]
        out[start : start + len(chunk)] = order
    return out


def evaluate_content_knn(corpus: Corpus, vecs: np.ndarray, split: str = "test", exclude_seen: bool = False,
                         per_user_path: str | Path | None = None, batch_users: int = 1024) -> dict:
    """HR@1/5/10, NDCG@1/5/10 on `split` of `corpus` (full ranking), and the per-user file."""
    if len(vecs) != corpus.n_items:
        raise ValueError(f"{len(vecs)} item vectors for {corpus.n_items} items")
    t0 = time.time()
    users, histories, targets = corpus.eval_arrays(split)
    ranked = content_knn_ranking(vecs, histories, 10, exclude_seen, batch_users)
    res = ranking_metrics(ranked, targets, ks=(1, 5, 10))
    if per_user_path is not None:
        write_per_user(per_user_path, per_user_table(users, targets, [ranked]))
    return {**res, "users": int(len(targets)), "wall_s": time.time() - t0}


def run_content_knn(corpus: Corpus, out_dir: str | Path, cfg: ContentKNNConfig, exclude_seen: bool = False,
                    vectors: np.ndarray | None = None) -> dict:
    """The benchmark's entry point, shaped as `train_and_evaluate`'s result: test figures (per-user
    file in `out_dir`), validation NDCG@10, config. `vectors`: the items' text vectors when the
    caller has them (a cold-item run encodes the full catalogue once), else encoded here."""
    import dataclasses
    import json
    import resource

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vecs = vectors[: corpus.n_items] if vectors is not None else text_item_vectors(corpus, cfg)
    np.save(out / "item_text_vectors.npy", vecs)
    test = evaluate_content_knn(corpus, vecs, "test", exclude_seen, out / PER_USER_FILE, cfg.batch_users)
    valid = evaluate_content_knn(corpus, vecs, "valid", exclude_seen, None, cfg.batch_users)
    res = {**test, "valid_NDCG@10": valid["NDCG@10"], "wall_s": time.time() - t0,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
           "config": {**dataclasses.asdict(cfg), "exclude_seen": exclude_seen, "score": "cosine(candidate text, mean history text)"}}
    (out / "metrics.json").write_text(json.dumps(res, indent=2, default=float))
    return res
