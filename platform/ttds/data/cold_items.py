"""The cold-start protocol: items no system saw in training, kept as candidates at test time.

Why a protocol of its own: a catalogue grows every day, and a recommender that can only rank
the items it was trained on cannot recommend a new one at all. To measure that, a fraction F of
the items is taken out of EVERY training input and put back as candidates at test time:

  `train/`  the corpus every system trains on: cold items are in no sequence, no interaction
            row (so in no task row: next item, buyers, comments), not in the items table (so in
            no tokenizer feature, no text vocabulary, no collaborative vector); a valid or test
            target that is cold is dropped there (-1);
  `full/`   the evaluation corpus: every interaction, every item, the same users and splits.

Both corpora number items the same way: warm items first (0..n_warm-1, in their old order),
cold items after them (n_warm..n-1). A model trained on `train/` and extended with the cold
items' text (`ttds.serve.catalogue`) then names the items exactly as `full/` does.

Which items are cold: with real timestamps (unix seconds), the latest-appearing ones (the
items whose first interaction is latest, as a new catalogue entry would be); without (LC-Rec
files carry positions, not times), a seeded draw.

User texts built from reviews are kept as they are (they may mention a cold item in words,
never by id); the shared LC-Rec sets have none.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ttds.data import schema
from ttds.data.corpus import Corpus

__all__ = ["ColdSplit", "choose_cold_items", "make_cold_split", "REAL_TIME_MIN"]

REAL_TIME_MIN = 100_000_000  # a timestamp below this (1973) is a position, not a time
SPLIT_FILE = "cold_items.json"


@dataclass
class ColdSplit:
    train: Corpus  # what every system trains on (warm items only)
    full: Corpus  # what every system is tested on (all items; cold ids >= n_warm)
    n_warm: int
    rule: str  # "latest" | "seeded draw"

    @property
    def n_cold(self) -> int:
        return self.full.n_items - self.n_warm

    def is_cold(self, item_ids) -> np.ndarray:
        return np.asarray(item_ids) >= self.n_warm

    def cold_items(self) -> dict[str, dict[str, str]]:
        """{item key: text fields} of the cold items, in id order (what `ttds.serve.catalogue` takes)."""
        rows = self.full.items.slice(self.n_warm).to_pylist()
        return {r["item_key"]: {f: r[f] or "" for f in schema.TEXT_FIELDS} for r in rows}


def choose_cold_items(corpus: Corpus, fraction: float, seed: int = 0) -> tuple[np.ndarray, str]:
    """(sorted item ids to make cold, the rule used): round(F * items), at least 1."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"cold item fraction must lie in (0, 1), got {fraction}")
    n = corpus.n_items
    k = max(1, int(round(fraction * n)))
    if k >= n:
        raise ValueError(f"a cold fraction of {fraction} leaves no warm item among {n}")
    inter = pq.read_table(corpus.path("interactions"), columns=["item_id", "timestamp"])
    first = pc.min(inter["timestamp"]).as_py() if inter.num_rows else 0
    rng = np.random.default_rng(seed)
    if first is not None and first >= REAL_TIME_MIN:
        df = inter.group_by("item_id").aggregate([("timestamp", "min")]).to_pandas()
        t = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        t[df["item_id"].to_numpy()] = df["timestamp_min"].to_numpy()
        order = np.lexsort((rng.random(n), -t))  # latest first appearance first; seeded ties
        return np.sort(order[:k]), "latest"
    return np.sort(rng.choice(n, k, replace=False)), "seeded draw"


def _remap(ids: np.ndarray, new_of: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    return np.where(ids >= 0, new_of[np.maximum(ids, 0)], ids)


def _write(out: Path, corpus: Corpus, inter: pa.Table, items: pa.Table, seqs: pa.Table, index: pa.Table | None, info: dict) -> Corpus:
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(inter, out / "interactions.parquet")
    pq.write_table(items, out / "items.parquet")
    pq.write_table(seqs, out / "sequences.parquet")
    shutil.copy2(corpus.path("users"), out / "users.parquet")
    if index is not None:
        pq.write_table(index, out / "precomputed_index.parquet")
    split = pc.value_counts(inter["split"]).to_pylist()
    counts = {d["values"]: d["counts"] for d in split}
    manifest = dict(corpus.manifest)
    manifest["counts"] = {**manifest["counts"], "items": items.num_rows, "interactions": inter.num_rows,
                          "train_interactions": counts.get("train", 0), "valid": counts.get("valid", 0), "test": counts.get("test", 0),
                          "items_with_text": sum(1 for t in items.column("title").to_pylist() if t)}
    manifest["cold_items"] = info
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return Corpus.open(out)


def make_cold_split(corpus: Corpus, fraction: float, seed: int, out_dir: str | Path) -> ColdSplit:
    """Write `out_dir/train` and `out_dir/full` (see the module doc); reuses them when already written
    for the same corpus, fraction and seed."""
    out = Path(out_dir)
    want = {"corpus": str(Path(corpus.root).resolve()), "fraction": fraction, "seed": seed}
    done = out / SPLIT_FILE
    if done.exists():
        info = json.loads(done.read_text())
        if {k: info.get(k) for k in want} == want:
            return ColdSplit(Corpus.open(out / "train"), Corpus.open(out / "full"), int(info["n_warm"]), info["rule"])
        shutil.rmtree(out)
    cold, rule = choose_cold_items(corpus, fraction, seed)
    n = corpus.n_items
    is_cold = np.zeros(n, dtype=bool)
    is_cold[cold] = True
    n_warm = int(n - len(cold))
    order = np.concatenate([np.flatnonzero(~is_cold), cold])  # new id -> old id
    new_of = np.empty(n, dtype=np.int64)
    new_of[order] = np.arange(n)

    inter = pq.read_table(corpus.path("interactions"))
    inter = inter.set_column(inter.schema.get_field_index("item_id"), "item_id", pa.array(_remap(inter["item_id"].to_numpy(), new_of)))
    items = corpus.items.take(pa.array(order)).set_column(0, "item_id", pa.array(np.arange(n, dtype=np.int64)))
    s = corpus.sequences
    train_lists = [_remap(t, new_of) for t in s.column("train").to_pylist()]
    valid, test = _remap(s.column("valid").to_numpy(), new_of), _remap(s.column("test").to_numpy(), new_of)
    index = corpus.precomputed_index()
    if index is not None:
        index = pa.table({"item_id": pa.array(_remap(index["item_id"].to_numpy(), new_of)), "tokens": index["tokens"]},
                         schema=schema.PRECOMPUTED_INDEX).sort_by("item_id")
    info = {**want, "rule": rule, "n_warm": n_warm, "n_cold": int(len(cold)),
            "cold_keys_first": corpus.items.take(pa.array(cold[:20])).column("item_key").to_pylist()}

    def seq_table(lists, v, t) -> pa.Table:
        return pa.table({"user_id": s.column("user_id"), "train": pa.array([x.tolist() for x in lists], pa.list_(pa.int64())),
                         "valid": pa.array(v, pa.int64()), "test": pa.array(t, pa.int64())}, schema=schema.SEQUENCES)

    full = _write(out / "full", corpus, inter, items, seq_table(train_lists, valid, test), index, {**info, "part": "full"})
    warm_rows = pc.less(inter["item_id"], n_warm)
    tr_index = index.filter(pc.less(index["item_id"], n_warm)) if index is not None else None
    train = _write(out / "train", corpus, inter.filter(warm_rows), items.slice(0, n_warm),
                   seq_table([x[x < n_warm] for x in train_lists], np.where(valid >= n_warm, -1, valid), np.where(test >= n_warm, -1, test)),
                   tr_index, {**info, "part": "train"})
    done.write_text(json.dumps(info, indent=2))
    return ColdSplit(train, full, n_warm, rule)
