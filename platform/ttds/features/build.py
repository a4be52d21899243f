"""Build the tokenizer inputs X for every item and user, by `index.source`.

- `text`: item text (and user text) encoded by the LLM backbone, streamed through Ray Data
  `map_batches` with one backbone per actor, so a large catalogue encodes in parallel.
- `collaborative`: vectors learned from the training split (no text needed).
- `text+collaborative`: both, each L2-normalised, concatenated.
- `lightgcn` / `text+lightgcn`: LightGCN graph vectors of users and items (BPR on the
  training split, a Ray Train job), alone or after the text part. Training is the train layer's
  job (`ttds.train.lightgcn.lightgcn_vectors`), so the caller hands it in (`lightgcn=`): the
  tokenizer job does (`ttds.train.tokenizer_job.make_features`).
Users without text are the mean of their training items' X (never valid/test items).

Text features ARE encodings of the LLM backbone (`ttds.llm.backbone.encode_texts`), so this
package sits above `llm` in the layer order; the backbone (transformers, peft) loads inside
the Ray Data actors only, not when this module is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ttds.config import FeatureConfig, FeatureSource, LightGCNConfig, allowed
from ttds.data.corpus import Corpus
from ttds.features.collaborative import collaborative_vectors

log = logging.getLogger(__name__)

SOURCES = allowed(FeatureSource)

# (training sequences, n_items, config) -> (item vectors, user vectors): the LightGCN trainer
GraphVectors = Callable[[Sequence[Sequence[int]], int, LightGCNConfig], tuple[np.ndarray, np.ndarray]]


@dataclass
class Features:
    item_x: np.ndarray
    user_x: np.ndarray
    source: str
    text_dims: int = 0  # leading columns of X that come from the text encoder


def resolve_source(source: str, corpus: Corpus) -> str:
    if source not in SOURCES:
        raise ValueError(f"index.source must be one of {SOURCES}, not {source!r}")
    if source == "auto":
        return "text" if corpus.has_item_text else "collaborative"
    if "text" in source and not corpus.has_item_text:
        raise ValueError(f"index.source={source!r} needs item text, but corpus {corpus.name!r} has none; use 'collaborative'")
    return source


def users_from_items(corpus: Corpus, item_x: np.ndarray) -> np.ndarray:
    out = np.zeros((corpus.n_users, item_x.shape[1]), dtype=np.float32)
    for u, seq in enumerate(corpus.train_sequences):
        if len(seq):
            out[u] = item_x[seq].mean(0)
    return out


class _TextEncoder:
    """A Ray Data actor: loads the backbone once, encodes batches of texts."""

    def __init__(self, backbone: str, corpus_texts: list[str], max_length: int, batch_size: int):
        from ttds.llm.backbone import BackboneConfig, load_backbone

        self.model, self.tokenizer = load_backbone(BackboneConfig(name=backbone), corpus_texts)
        self.model.eval()
        self.max_length, self.batch_size = max_length, batch_size

    def __call__(self, batch: dict) -> dict:
        from ttds.llm.backbone import encode_texts

        vecs = encode_texts(self.model, self.tokenizer, list(batch["text"]), batch_size=self.batch_size, max_length=self.max_length)
        return {"row": batch["row"], "x": vecs}


def encode_with_backbone(texts: list[str], cfg: FeatureConfig, corpus_texts: list[str]) -> np.ndarray:
    """Encode `texts` with Ray Data map_batches over `cfg.text_actors` backbone actors."""
    import ray.data

    ds = ray.data.from_items([{"row": i, "text": t or ""} for i, t in enumerate(texts)])
    out = ds.map_batches(
        _TextEncoder,
        fn_constructor_kwargs={"backbone": cfg.text_backbone, "corpus_texts": corpus_texts, "max_length": cfg.text_max_length, "batch_size": cfg.text_batch_size},
        batch_size=max(cfg.text_batch_size * 4, 32),
        compute=ray.data.ActorPoolStrategy(size=cfg.text_actors),
        num_cpus=0.5,
    )
    rows = out.take_all()
    x = np.zeros((len(texts), len(rows[0]["x"])), dtype=np.float32)
    for r in rows:
        x[int(r["row"])] = r["x"]
    return x


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


def _standardise(x: np.ndarray) -> np.ndarray:
    """Row-normalise, centre and scale to unit variance: each source part weighs the same."""
    x = _normalise(x.astype(np.float32))
    x = x - x.mean(0, keepdims=True)
    return (x / max(float(x.std()), 1e-8)).astype(np.float32)


def standardise_like(text_vecs: np.ndarray, old_x: np.ndarray, text_dims: int) -> np.ndarray:
    """Replace the text part (first `text_dims` columns) of X with fresh text vectors."""
    if text_vecs.shape[1] != text_dims:
        raise ValueError(f"re-encoded text has {text_vecs.shape[1]} dims but X's text part has {text_dims}")
    out = old_x.copy()
    out[:, :text_dims] = _standardise(text_vecs)
    return out


def build_features(corpus: Corpus, cfg: FeatureConfig, lightgcn: GraphVectors | None = None) -> Features:
    """X of every item and user by `cfg.source`; `lightgcn` trains the graph vectors when the
    source needs them (`ttds.train.lightgcn.lightgcn_vectors`)."""
    source = resolve_source(cfg.source, corpus)
    if "lightgcn" in source and lightgcn is None:
        raise ValueError(f"index.features.source={source!r} needs a LightGCN trainer: pass lightgcn=ttds.train.lightgcn.lightgcn_vectors "
                         "(or build X through ttds.train.tokenizer_job.make_features)")
    parts_item, parts_user = [], []
    if "text" in source:
        corpus_texts = corpus.item_titles
        item_text = encode_with_backbone(corpus.item_texts, cfg, corpus_texts)
        user_text = users_from_items(corpus, item_text)
        if corpus.has_user_text:
            has = np.array([bool(t) for t in corpus.user_texts])
            if has.any():
                enc = encode_with_backbone([t for t, h in zip(corpus.user_texts, has) if h], cfg, corpus_texts)
                user_text[has] = enc
        parts_item.append(_standardise(item_text))
        parts_user.append(_standardise(user_text))
    if "collaborative" in source:
        item_c, user_c = collaborative_vectors(corpus.train_sequences, corpus.n_items, cfg.collaborative)
        parts_item.append(_standardise(item_c))
        parts_user.append(_standardise(user_c))
    if "lightgcn" in source:
        item_g, user_g = lightgcn(corpus.train_sequences, corpus.n_items, cfg.lightgcn)
        parts_item.append(_standardise(item_g))
        parts_user.append(_standardise(user_g))
    # text part first: the dynamic index re-encodes exactly those columns (standardise_like)
    item_x = np.concatenate(parts_item, 1).astype(np.float32)
    user_x = np.concatenate(parts_user, 1).astype(np.float32)
    return Features(item_x=item_x, user_x=user_x, source=source, text_dims=parts_item[0].shape[1] if "text" in source else 0)
