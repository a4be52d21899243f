"""A generated corpus with planted structure, the embedded default of every job.

Items belong to clusters whose titles share cluster-specific words; users move from
cluster to cluster along a fixed transition map (with some noise) and pick items inside a
cluster by a Zipf law. A model that learns the transitions ranks the next item far better
than popularity, so tests can assert a wide, honest margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ttds.data import schema
from ttds.data.raw import RawCorpus
from ttds.data.rejects import RejectLog

_ADJ = "red blue green amber silver golden dark bright quiet loud smooth rough tiny giant classic modern".split()
_NOUN = (
    "guitar violin drum piano flute cable pedal stand string amp mic case strap tuner capo pick bow reed "
    "lens probe meter scale beaker filter valve pump sensor clamp drill gauge resistor relay socket"
).split()
_GENERIC = "pro deluxe series edition model kit set pack premium standard".split()


@dataclass
class SyntheticConfig:
    n_items: int = 400
    n_users: int = 1200
    n_clusters: int = 20
    min_len: int = 6
    max_len: int = 16
    follow_prob: float = 0.85  # probability of following the planted cluster transition
    zipf: float = 1.1  # within-cluster item preference skew
    with_reviews: bool = True
    seed: int = 0


def cluster_words(n_clusters: int) -> list[tuple[str, str]]:
    """A distinct (adjective, noun) pair per cluster: the planted text signal."""
    pairs = [(a, n) for n in _NOUN for a in _ADJ]
    rng = np.random.default_rng(1234)
    order = rng.permutation(len(pairs))[:n_clusters]
    return [pairs[i] for i in order]


def generate(cfg: SyntheticConfig | None = None) -> tuple[RawCorpus, dict]:
    """Returns the raw corpus and the planted truth (item clusters, transition map)."""
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    item_cluster = np.sort(rng.integers(0, cfg.n_clusters, cfg.n_items))
    item_cluster[: cfg.n_clusters] = np.arange(cfg.n_clusters)  # every cluster non-empty
    item_cluster = np.sort(item_cluster)
    members = [np.nonzero(item_cluster == c)[0] for c in range(cfg.n_clusters)]
    successor = rng.permutation(cfg.n_clusters)  # planted cluster -> next cluster
    words = cluster_words(cfg.n_clusters)

    titles, descs, brands, cats = [], [], [], []
    for i, c in enumerate(item_cluster):
        adj, noun = words[c]
        titles.append(f"{adj.title()} {noun} {rng.choice(_GENERIC)} {i}")
        descs.append(f"A {adj} {noun} for daily use. Works well with a {words[successor[c]][1]}.")
        brands.append(f"Brand{c % 7}")
        cats.append(f"Synthetic,{noun.title()}")

    users, items, ts, ratings, reviews = [], [], [], [], []
    for u in range(cfg.n_users):
        length = int(rng.integers(cfg.min_len, cfg.max_len + 1))
        c = int(rng.integers(cfg.n_clusters))
        seen: set[int] = set()
        t = int(rng.integers(1_500_000_000, 1_600_000_000))
        while len(seen) < length:
            pool = [i for i in members[c] if i not in seen]
            if pool:
                w = 1.0 / np.arange(1, len(pool) + 1) ** cfg.zipf
                item = int(pool[rng.choice(len(pool), p=w / w.sum())])
                seen.add(item)
                users.append(str(u))
                items.append(str(item))
                t += int(rng.integers(3600, 86400 * 30))
                ts.append(t)
                ratings.append(float(rng.integers(3, 6)))
                adj, noun = words[c]
                reviews.append(f"Nice {adj} {noun}, would buy again." if cfg.with_reviews else None)
            c = int(successor[c]) if rng.random() < cfg.follow_prob else int(rng.integers(cfg.n_clusters))

    inter = pa.Table.from_pydict(
        {"user_key": users, "item_key": items, "timestamp": ts, "rating": ratings, "review": reviews},
        schema=schema.RAW_INTERACTIONS,
    )
    item_tab = pa.Table.from_pydict(
        {"item_key": [str(i) for i in range(cfg.n_items)], "title": titles, "description": descs, "brand": brands, "categories": cats},
        schema=schema.RAW_ITEMS,
    )
    log = RejectLog()
    log.seen = inter.num_rows
    raw = RawCorpus(source="synthetic", name="synthetic", interactions=inter, items=item_tab, rejects=log)
    truth = {"item_cluster": item_cluster, "successor": successor, "cluster_words": words}
    return raw, truth
