"""A generated corpus with planted structure, the embedded default of every job.

Items belong to clusters whose titles share cluster-specific words; users move from
cluster to cluster along a fixed transition map (with some noise) and pick items inside a
cluster by a Zipf law. A model that learns the transitions ranks the next item far better
than popularity, so tests can assert a wide, honest margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
    """A distinct (adjective, noun) pair per cluster: the planted text signal.

    Past the 528 word pairs, the noun carries a number (`guitar2`) so pairs stay distinct.
    """
    pairs = [(a, n) for n in _NOUN for a in _ADJ]
    rng = np.random.default_rng(1234)
    order = rng.permutation(len(pairs))
    out = [pairs[i] for i in order[:n_clusters]]
    for c in range(len(pairs), n_clusters):
        adj, noun = pairs[order[c % len(pairs)]]
        out.append((adj, f"{noun}{c // len(pairs)}"))
    return out


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


def generate_to_parquet(cfg: SyntheticConfig, out_dir: str | Path, chunk_users: int = 100_000) -> tuple[RawCorpus, dict]:
    """The same planted structure as `generate`, written in chunks of users to Parquet.

    For corpora of millions of events: each chunk is sampled with numpy (cluster walk of
    every user at once, Zipf rank inside the cluster by inverse CDF, repeats within a user
    dropped) and appended to `raw_interactions.parquet`; items go to `raw_items.parquet`.
    Memory is bounded by `chunk_users`, never the corpus. The events differ from
    `generate` with the same seed (another sampler); the structure is the same.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    item_cluster = np.sort(rng.integers(0, cfg.n_clusters, cfg.n_items))
    item_cluster[: cfg.n_clusters] = np.arange(cfg.n_clusters)
    item_cluster = np.sort(item_cluster)
    start = np.searchsorted(item_cluster, np.arange(cfg.n_clusters + 1))  # members of c: start[c]..start[c+1]
    size = np.diff(start)
    successor = rng.permutation(cfg.n_clusters)
    words = cluster_words(cfg.n_clusters)
    adj = np.array([a for a, _ in words], dtype=object)
    noun = np.array([n for _, n in words], dtype=object)

    items_path = out / "raw_items.parquet"
    with pq.ParquetWriter(items_path, schema.RAW_ITEMS) as w:
        for i0 in range(0, cfg.n_items, 1 << 20):
            ids = np.arange(i0, min(i0 + (1 << 20), cfg.n_items))
            c = item_cluster[ids]
            generic = np.array(_GENERIC, dtype=object)[rng.integers(len(_GENERIC), size=len(ids))]
            w.write_table(pa.Table.from_pydict({
                "item_key": [str(i) for i in ids],
                "title": [f"{a.title()} {n} {g} {i}" for a, n, g, i in zip(adj[c], noun[c], generic, ids)],
                "description": [f"A {a} {n} for daily use. Works well with a {m}." for a, n, m in zip(adj[c], noun[c], noun[successor[c]])],
                "brand": [f"Brand{x % 7}" for x in c],
                "categories": [f"Synthetic,{n.title()}" for n in noun[c]],
            }, schema=schema.RAW_ITEMS))

    reviews = pa.array([f"Nice {a} {n}, would buy again." for a, n in words], pa.string())
    inter_path = out / "raw_interactions.parquet"
    rows = 0
    with pq.ParquetWriter(inter_path, schema.RAW_INTERACTIONS) as w:
        for u0 in range(0, cfg.n_users, chunk_users):
            b = min(chunk_users, cfg.n_users - u0)
            length = rng.integers(cfg.min_len, cfg.max_len + 1, size=b)
            walk = np.empty((b, cfg.max_len), dtype=np.int64)
            c = rng.integers(cfg.n_clusters, size=b)
            for step in range(cfg.max_len):
                walk[:, step] = c
                follow = rng.random(b) < cfg.follow_prob
                c = np.where(follow, successor[c], rng.integers(cfg.n_clusters, size=b))
            valid = np.arange(cfg.max_len)[None, :] < length[:, None]
            user = np.repeat(np.arange(u0, u0 + b), length)
            cl = walk[valid]
            rank = _zipf_rank(rng, size[cl], cfg.zipf)
            item = start[cl] + rank
            keep = _first_per_user(user, item)
            user, item, cl = user[keep], item[keep], cl[keep]
            step_t = rng.integers(3600, 86400 * 30, size=len(user))
            t0 = rng.integers(1_500_000_000, 1_600_000_000, size=b)
            first = np.r_[True, user[1:] != user[:-1]]
            csum = np.cumsum(step_t)
            base = np.maximum.accumulate(np.where(first, csum - step_t, 0))  # cumulative sum before each user's first event
            ts = t0[user - u0] + csum - base
            w.write_table(pa.Table.from_arrays([
                pc.cast(pa.array(user), pa.string()), pc.cast(pa.array(item), pa.string()), pa.array(ts),
                pa.array(rng.integers(3, 6, size=len(user)).astype(np.float32)),
                reviews.take(pa.array(cl)) if cfg.with_reviews else pa.nulls(len(user), pa.string()),
            ], schema=schema.RAW_INTERACTIONS))
            rows += len(user)
    log = RejectLog()
    log.seen = rows
    raw = RawCorpus(source="synthetic", name="synthetic", interactions=inter_path, items=items_path, rejects=log)
    return raw, {"item_cluster": item_cluster, "successor": successor, "cluster_words": words}


def _zipf_rank(rng: np.random.Generator, size: np.ndarray, s: float) -> np.ndarray:
    """A rank in [0, size) with P(r) ~ (r+1)^-s (continuous inverse CDF, floored)."""
    u = rng.random(len(size))
    if abs(s - 1.0) < 1e-9:
        x = np.exp(u * np.log(size + 1.0))
    else:
        x = ((np.power(size + 1.0, 1 - s) - 1) * u + 1) ** (1 / (1 - s))
    return np.minimum(np.floor(x).astype(np.int64) - 1, size - 1)


def _first_per_user(user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Mask of each (user, item) pair's first row, so no user repeats an item."""
    key = user.astype(np.int64) * (int(item.max(initial=0)) + 1) + item
    _, first = np.unique(key, return_index=True)
    keep = np.zeros(len(key), dtype=bool)
    keep[first] = True
    return keep
