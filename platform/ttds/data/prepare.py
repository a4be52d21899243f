"""Raw corpus → prepared corpus on disk (Parquet + JSON manifest + rejects file).

The prepared folder is the single input of every later stage:
    interactions.parquet  user_id, item_id, timestamp, rating, review, position, split
    items.parquet         item_id, item_key, title, description, brand, categories
    users.parquet         user_id, user_key, text (given user text, else train reviews)
    sequences.parquet     user_id, train (list), valid, test
    precomputed_index.parquet  (when the source ships an item index)
    manifest.json         counts, source, k-core, sha256 of inputs, reject counts
    rejects.jsonl         every bad record with kind, file, line, reason

Memory: the raw interactions are read in batches and kept only as integer codes (user,
item, timestamp, rating, row order: about 30 bytes an event) plus the review column as one
Arrow string buffer; sorting, de-duplication, k-core and the split run on those arrays,
and the output is written in chunks of whole users. No per-event Python object is ever
built, so a 10M-event corpus prepares in well under 4 GB (docs/scaling.md has the curve).
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
import pyarrow.compute as pc
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
    chunk_rows: int = 1 << 20  # rows read and written per batch: bounds the transient memory


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class _Events:
    """The raw interactions as arrays: codes index `user_keys` / `item_keys`."""

    user: np.ndarray  # int32 codes in first-seen order
    item: np.ndarray
    timestamp: np.ndarray  # int64
    rating: np.ndarray  # float32, NaN = missing
    user_keys: np.ndarray  # object array of str
    item_keys: np.ndarray


def _encode(raw: RawCorpus, batch_rows: int) -> _Events:
    """One streaming pass: string keys -> int codes via a dictionary of the distinct keys."""
    maps: dict[str, dict[str, int]] = {"user_key": {}, "item_key": {}}
    parts: dict[str, list[np.ndarray]] = {"user_key": [], "item_key": [], "timestamp": [], "rating": []}
    for batch in raw.interaction_batches(["user_key", "item_key", "timestamp", "rating"], batch_rows):
        for col, m in maps.items():
            local, uniq = pd.factorize(batch.column(col).to_numpy(zero_copy_only=False))
            if (local < 0).any():
                raise DataError(f"{raw.name}: interactions with a null {col} reached preparation; the reader must reject them")
            glob = np.fromiter((m.setdefault(k, len(m)) for k in uniq), dtype=np.int64, count=len(uniq))
            parts[col].append(glob[local].astype(np.int32))
        parts["timestamp"].append(batch.column("timestamp").to_numpy(zero_copy_only=False).astype(np.int64))
        parts["rating"].append(batch.column("rating").to_numpy(zero_copy_only=False).astype(np.float32))

    def cat(col, dtype):
        return np.concatenate(parts.pop(col)) if parts[col] else np.zeros(0, dtype)

    return _Events(
        user=cat("user_key", np.int32), item=cat("item_key", np.int32),
        timestamp=cat("timestamp", np.int64), rating=cat("rating", np.float32),
        user_keys=np.array(list(maps["user_key"]), dtype=object), item_keys=np.array(list(maps["item_key"]), dtype=object),
    )


def _reviews(raw: RawCorpus, batch_rows: int) -> pa.Array:
    """The review column in file order as one Arrow array (a buffer, not Python strings)."""
    chunks = [b.column(0).cast(pa.large_string()) for b in raw.interaction_batches(["review"], batch_rows)]
    return pa.concat_arrays(chunks) if chunks else pa.array([], pa.large_string())


def prepare_corpus(raw: RawCorpus, out_dir: str | Path, opts: PrepareOptions | None = None) -> dict:
    """Validate, filter, split and write `raw`; returns the manifest."""
    opts = opts or PrepareOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rejects = raw.rejects
    ev = _encode(raw, opts.chunk_rows)
    if len(ev.user) == 0:
        raise DataError(f"{raw.name}: no usable interactions were read.\n{rejects.summary()}")
    user_rank = np.empty(len(ev.user_keys), dtype=np.int64)
    user_rank[np.argsort(ev.user_keys, kind="stable")] = np.arange(len(ev.user_keys))
    order = split.time_order(user_rank[ev.user], ev.timestamp)  # row indices into the raw file
    del user_rank
    if opts.dedupe:
        first = split.first_occurrence(ev.user[order], ev.item[order])
        dup = order[~first]
        split.record_duplicates(rejects, ev.user_keys[ev.user[dup]], ev.item_keys[ev.item[dup]], ev.timestamp[dup])
        order = order[first]
    n_read = len(order)
    order = order[split.k_core_mask(ev.user[order], ev.item[order], opts.kcore)]
    if len(order) == 0:
        raise DataError(f"{raw.name}: nothing is left after {opts.kcore}-core filtering of {n_read} interactions")
    if rejects.rate() > opts.max_reject_rate:
        rejects.write(out / "rejects.jsonl")
        raise DataError(
            f"{raw.name}: {rejects.rate():.1%} of records were rejected, above max_reject_rate="
            f"{opts.max_reject_rate:.0%}; see {out / 'rejects.jsonl'}\n{rejects.summary()}"
        )

    user_id, user_keys = split.dense_codes(ev.user[order], ev.user_keys)
    item_id, item_keys = split.dense_codes(ev.item[order], ev.item_keys)
    ev.user = ev.item = ev.user_keys = ev.item_keys = None  # free before the output pass
    regroup = np.argsort(user_id, kind="stable")  # by user_id; time order kept inside a user
    order, user_id, item_id = order[regroup], user_id[regroup], item_id[regroup]
    del regroup
    position, code = split.leave_one_out_codes(user_id)

    items = _items_table(raw, item_keys)
    pq.write_table(items, out / "items.parquet")
    counts = _write_users_interactions_sequences(
        raw, out, ev, order, user_id, item_id, position, code, user_keys, opts.chunk_rows
    )
    if raw.precomputed_index:
        key_to_id = {k: i for i, k in enumerate(item_keys)}
        rows = [(key_to_id[k], v) for k, v in raw.precomputed_index.items() if k in key_to_id]
        rows.sort()
        pq.write_table(
            pa.Table.from_pydict({"item_id": [r[0] for r in rows], "tokens": [r[1] for r in rows]}, schema=schema.PRECOMPUTED_INDEX),
            out / "precomputed_index.parquet",
        )
    rejects.write(out / "rejects.jsonl")

    items_with_text = _count_text(items.column("title"))
    manifest = {
        "name": raw.name,
        "source": raw.source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "kcore": opts.kcore,
        "counts": {
            "users": int(len(user_keys)),
            "items": int(len(item_keys)),
            "interactions": int(len(order)),
            "train_interactions": int((code == 0).sum()),
            "valid": int((code == 1).sum()),
            "test": int((code == 2).sum()),
            "items_with_text": items_with_text,
            "users_with_text": counts["users_with_text"],
        },
        "has_item_text": items_with_text > 0,
        "has_user_text": counts["users_with_text"] > 0,
        "has_precomputed_index": bool(raw.precomputed_index),
        "inputs": {str(p): sha256_of(Path(p)) for p in raw.inputs},
        "rejects": {"seen": rejects.seen, "dropped": rejects.dropped, "by_kind": rejects.counts()},
        "prepare_seconds": round(time.time() - t0, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _count_text(col: pa.ChunkedArray) -> int:
    """Values that are neither null nor empty."""
    return int(pc.sum(pc.fill_null(pc.not_equal(col, ""), False).cast(pa.int64())).as_py() or 0)


def _lookup(keys: pa.Array | pa.ChunkedArray, wanted: np.ndarray) -> pa.Array:
    """Row of each `wanted` key in `keys` (the last row when a key repeats; null when absent)."""
    pos = pd.Series(np.arange(len(keys)), index=keys.to_numpy(zero_copy_only=False) if len(keys) else [])
    pos = pos[~pos.index.duplicated(keep="last")]
    idx = pos.reindex(wanted).to_numpy()
    missing = np.isnan(idx) if idx.dtype.kind == "f" else np.zeros(len(idx), bool)
    return pa.array(np.where(missing, 0, idx).astype(np.int64), mask=missing)


def _items_table(raw: RawCorpus, item_keys: np.ndarray) -> pa.Table:
    meta = raw.items_table()
    rows = _lookup(meta.column("item_key"), item_keys)
    cols = {f: meta.column(f).take(rows) for f in schema.TEXT_FIELDS}
    return pa.Table.from_pydict(
        {"item_id": np.arange(len(item_keys), dtype=np.int64), "item_key": pa.array(item_keys, pa.string()), **cols},
        schema=schema.ITEMS,
    )


def _user_chunks(user_id: np.ndarray, chunk_rows: int):
    """(row start, row end, user start, user end) slices of whole users, about chunk_rows rows each."""
    n_users = int(user_id[-1]) + 1
    starts = np.searchsorted(user_id, np.arange(n_users + 1))  # row where each user begins
    u0 = 0
    while u0 < n_users:
        u1 = int(np.searchsorted(starts, starts[u0] + chunk_rows, side="right")) - 1
        u1 = min(max(u1, u0 + 1), n_users)
        yield int(starts[u0]), int(starts[u1]), u0, u1
        u0 = u1


def _write_users_interactions_sequences(raw, out, ev, order, user_id, item_id, position, code, user_keys, chunk_rows) -> dict:
    """Writes the three per-user tables chunk by chunk (rows are grouped by user_id)."""
    reviews = _reviews(raw, chunk_rows)
    given_tab = raw.users.filter(pc.fill_null(pc.not_equal(raw.users.column("text"), ""), False))
    given_rows = _lookup(given_tab.column("user_key"), user_keys)
    given_text = given_tab.column("text").take(given_rows).to_pylist() if len(user_keys) else []
    split_names = pa.array(split.SPLIT_NAMES.tolist(), pa.string())
    users_with_text = 0
    with pq.ParquetWriter(out / "interactions.parquet", schema.INTERACTIONS) as wi, \
            pq.ParquetWriter(out / "users.parquet", schema.USERS) as wu, \
            pq.ParquetWriter(out / "sequences.parquet", schema.SEQUENCES) as ws:
        for r0, r1, u0, u1 in _user_chunks(user_id, chunk_rows):
            rows = order[r0:r1]
            uid, iid, cd = user_id[r0:r1], item_id[r0:r1], code[r0:r1]
            rev = reviews.take(pa.array(rows)).cast(pa.string())
            wi.write_table(pa.Table.from_arrays([
                pa.array(uid), pa.array(iid), pa.array(ev.timestamp[rows]),
                pa.array(ev.rating[rows], pa.float32(), from_pandas=True), rev,
                pa.array(position[r0:r1]), split_names.take(pa.array(cd)),
            ], schema=schema.INTERACTIONS))
            # users: given text wins, else the train-split reviews (never valid/test: that leaks)
            train = cd == 0
            texts = given_text[u0:u1]
            has_review = train & pc.fill_null(pc.not_equal(rev, ""), False).to_numpy(zero_copy_only=False)
            if has_review.any():
                joined = _join_per_user(uid[has_review] - u0, rev.filter(pa.array(has_review)).to_pylist(), u1 - u0)
                texts = [g or j for g, j in zip(texts, joined)]
            users_with_text += sum(1 for t in texts if t)
            wu.write_table(pa.Table.from_arrays(
                [pa.array(np.arange(u0, u1, dtype=np.int64)), pa.array(user_keys[u0:u1], pa.string()), pa.array(texts, pa.string())],
                schema=schema.USERS,
            ))
            n_train = np.bincount(uid[train] - u0, minlength=u1 - u0)
            offsets = np.r_[0, np.cumsum(n_train)].astype(np.int32)
            seq = {}
            for part, c in (("valid", 1), ("test", 2)):
                v = np.full(u1 - u0, -1, dtype=np.int64)
                m = cd == c
                v[uid[m] - u0] = iid[m]
                seq[part] = pa.array(v)
            keep = n_train > 0  # a user without train events gets no row (as before)
            tab = pa.Table.from_arrays([
                pa.array(np.arange(u0, u1, dtype=np.int64)),
                pa.ListArray.from_arrays(pa.array(offsets), pa.array(iid[train])).cast(pa.list_(pa.int64())),
                seq["valid"], seq["test"],
            ], schema=schema.SEQUENCES)
            ws.write_table(tab if keep.all() else tab.filter(pa.array(keep)))
    return {"users_with_text": users_with_text}


def _join_per_user(local_uid: np.ndarray, texts: list[str], n_users: int) -> list[str | None]:
    """' '.join of each user's texts (in row order) capped at USER_TEXT_CHARS; None when none."""
    out: list[str | None] = [None] * n_users
    bounds = np.flatnonzero(np.r_[True, local_uid[1:] != local_uid[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        out[int(local_uid[a])] = " ".join(texts[a:b])[:USER_TEXT_CHARS]
    return out
