"""Read access to a prepared corpus folder (see `prepare.py` for its layout)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ttds.data.rejects import DataError

REQUIRED = ("manifest.json", "interactions.parquet", "items.parquet", "users.parquet", "sequences.parquet")


@dataclass
class Corpus:
    """A prepared corpus; tables load lazily so workers read only what they use."""

    root: Path

    @classmethod
    def open(cls, path: str | Path) -> "Corpus":
        root = Path(path)
        missing = [f for f in REQUIRED if not (root / f).exists()]
        if missing:
            raise DataError(
                f"{root} is not a prepared corpus (missing {', '.join(missing)}); "
                f"create one with: python jobs/prepare_data.py --source ... --out {root}"
            )
        return cls(root)

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.root / "manifest.json").read_text())

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def n_users(self) -> int:
        return int(self.manifest["counts"]["users"])

    @property
    def n_items(self) -> int:
        return int(self.manifest["counts"]["items"])

    def path(self, part: str) -> Path:
        return self.root / f"{part}.parquet"

    @cached_property
    def items(self) -> pa.Table:
        return pq.read_table(self.path("items"))

    @cached_property
    def users(self) -> pa.Table:
        return pq.read_table(self.path("users"))

    @cached_property
    def sequences(self) -> pa.Table:
        return pq.read_table(self.path("sequences"))

    @cached_property
    def train_sequences(self) -> list[np.ndarray]:
        """Train item ids of every user, indexed by user_id (users are dense 0..n-1)."""
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * self.n_users
        uids = self.sequences.column("user_id").to_numpy()
        for uid, seq in zip(uids, self.sequences.column("train").to_pylist()):
            out[int(uid)] = np.asarray(seq, dtype=np.int64)
        return out

    def eval_arrays(self, split: str) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """(user_ids, histories, targets) of the users that have a `split` item.

        valid: history = train; test: history = train + valid (the leave-one-out protocol).
        """
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', not {split!r}")
        s = self.sequences
        uids = s.column("user_id").to_numpy()
        train = s.column("train").to_pylist()
        valid = s.column("valid").to_numpy()
        target = s.column(split).to_numpy()
        keep = target >= 0
        hist = []
        for i in np.nonzero(keep)[0]:
            h = list(train[i])
            if split == "test" and valid[i] >= 0:
                h.append(int(valid[i]))
            hist.append(np.asarray(h, dtype=np.int64))
        return uids[keep], hist, target[keep]

    @cached_property
    def item_texts(self) -> list[str]:
        """One text per item (title, brand, categories, description), '' when it has none."""
        cols = {f: self.items.column(f).to_pylist() for f in ("title", "brand", "categories", "description")}
        out = []
        for i in range(self.n_items):
            parts = []
            for f, label in (("title", ""), ("brand", "Brand: "), ("categories", "Categories: "), ("description", "")):
                v = cols[f][i]
                if v:
                    parts.append(label + str(v))
            out.append(". ".join(parts))
        return out

    @cached_property
    def item_titles(self) -> list[str]:
        return [t or "" for t in self.items.column("title").to_pylist()]

    @cached_property
    def user_texts(self) -> list[str]:
        return [t or "" for t in self.users.column("text").to_pylist()]

    @property
    def has_item_text(self) -> bool:
        return bool(self.manifest.get("has_item_text"))

    @property
    def has_user_text(self) -> bool:
        return bool(self.manifest.get("has_user_text"))

    def precomputed_index(self) -> pa.Table | None:
        p = self.path("precomputed_index")
        return pq.read_table(p) if p.exists() else None

    def item_popularity(self) -> np.ndarray:
        """Training-split interaction counts per item (never valid/test: that leaks)."""
        counts = np.zeros(self.n_items, dtype=np.int64)
        for seq in self.train_sequences:
            np.add.at(counts, seq, 1)
        return counts
