"""Raw corpus → prepared corpus on disk (Parquet + JSON manifest + rejects file).

The prepared folder is the single input of every later stage:
    interactions.parquet  user_id, item_id, timestamp, rating, review, position, split
    items.parquet         item_id, item_key, title, description, brand, categories
    users.parquet         user_id, user_key, text (given user text, else train reviews)
    sequences.parquet     user_id, train (list), valid, test
    precomputed_index.parquet  (when the source ships an item index)
    manifest.json         counts, source, k-core, sha256 of inputs, reject counts
    rejects.jsonl         every bad record with kind, file, line, reason
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ttds.data import schema, split
from ttds.data.raw import RawCorpus
from ttds.data.rejects import DataError

log = logging.getLogger(__name__)

USER_TEXT_CHARS = 2000  # cap on the user text built from reviews; keeps prompts bounded


@dataclass
class PrepareOptions:
    kcore: int = 0  # 0/1 = no filtering; the LC-Rec corpora are already 5-core
    dedupe: bool = True
    max_reject_rate: float = 0.2  # fail when more than this share of records was dropped


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare_corpus(raw: RawCorpus, out_dir: str | Path, opts: PrepareOptions | None = None) -> dict:
    """Validate, filter, split and write `raw`; returns the manifest."""
    opts = opts or PrepareOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rejects = raw.rejects
    df = raw.interactions.to_pandas()
    if df.empty:
        raise DataError(f"{raw.name}: no usable interactions were read.\n{rejects.summary()}")
    df = split.sort_by_time(df)
    if opts.dedupe:
        df = split.drop_duplicates(df, rejects)
    n_read = len(df)
    df = split.k_core(df, opts.kcore)
    if df.empty:
        raise DataError(f"{raw.name}: nothing is left after {opts.kcore}-core filtering of {n_read} interactions")
    if rejects.rate() > opts.max_reject_rate:
        rejects.write(out / "rejects.jsonl")
        raise DataError(
            f"{raw.name}: {rejects.rate():.1%} of records were rejected, above max_reject_rate="
            f"{opts.max_reject_rate:.0%}; see {out / 'rejects.jsonl'}\n{rejects.summary()}"
        )

    df["user_id"], user_keys = split.dense_ids(df["user_key"])
    df["item_id"], item_keys = split.dense_ids(df["item_key"])
    df = df.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    df = split.leave_one_out(df)

    inter = pa.Table.from_pandas(
        df[["user_id", "item_id", "timestamp", "rating", "review", "position", "split"]],
        schema=schema.INTERACTIONS, preserve_index=False,
    )
    items = _items_table(raw, item_keys)
    users = _users_table(raw, user_keys, df)
    seqs = split.sequences(df)
    pq.write_table(inter, out / "interactions.parquet")
    pq.write_table(items, out / "items.parquet")
    pq.write_table(users, out / "users.parquet")
    pq.write_table(pa.Table.from_pandas(seqs, schema=schema.SEQUENCES, preserve_index=False), out / "sequences.parquet")
    if raw.precomputed_index:
        key_to_id = {k: i for i, k in enumerate(item_keys)}
        rows = [(key_to_id[k], v) for k, v in raw.precomputed_index.items() if k in key_to_id]
        rows.sort()
        pq.write_table(
            pa.Table.from_pydict({"item_id": [r[0] for r in rows], "tokens": [r[1] for r in rows]}, schema=schema.PRECOMPUTED_INDEX),
            out / "precomputed_index.parquet",
        )
    rejects.write(out / "rejects.jsonl")

    counts = df["split"].value_counts()
    manifest = {
        "name": raw.name,
        "source": raw.source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "kcore": opts.kcore,
        "counts": {
            "users": int(len(user_keys)),
            "items": int(len(item_keys)),
            "interactions": int(len(df)),
            "train_interactions": int(counts.get("train", 0)),
            "valid": int(counts.get("valid", 0)),
            "test": int(counts.get("test", 0)),
            "items_with_text": int(sum(1 for t in items.column("title").to_pylist() if t)),
            "users_with_text": int(sum(1 for t in users.column("text").to_pylist() if t)),
        },
        "has_item_text": bool(any(items.column("title").to_pylist())),
        "has_user_text": bool(any(users.column("text").to_pylist())),
        "has_precomputed_index": bool(raw.precomputed_index),
        "inputs": {str(p): sha256_of(Path(p)) for p in raw.inputs},
        "rejects": {"seen": rejects.seen, "dropped": rejects.dropped, "by_kind": rejects.counts()},
        "prepare_seconds": round(time.time() - t0, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _items_table(raw: RawCorpus, item_keys: np.ndarray) -> pa.Table:
    meta = {r["item_key"]: r for r in raw.items.to_pylist()}
    cols = {f: [meta.get(k, {}).get(f) for k in item_keys] for f in schema.TEXT_FIELDS}
    return pa.Table.from_pydict(
        {"item_id": np.arange(len(item_keys), dtype=np.int64), "item_key": list(item_keys), **cols}, schema=schema.ITEMS
    )


def _users_table(raw: RawCorpus, user_keys: np.ndarray, df: pd.DataFrame) -> pa.Table:
    """Given user text wins; else the user's train-split reviews (never valid/test: that leaks)."""
    given = {r["user_key"]: r["text"] for r in raw.users.to_pylist() if r.get("text")}
    train_reviews = (
        df[(df["split"] == "train") & df["review"].notna() & (df["review"] != "")]
        .groupby("user_id")["review"]
        .apply(lambda s: " ".join(s)[:USER_TEXT_CHARS])
    )
    texts = []
    for uid, key in enumerate(user_keys):
        texts.append(given.get(key) or train_reviews.get(uid))
    return pa.Table.from_pydict(
        {"user_id": np.arange(len(user_keys), dtype=np.int64), "user_key": list(user_keys), "text": texts}, schema=schema.USERS
    )
