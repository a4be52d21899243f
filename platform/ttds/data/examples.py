"""Training and evaluation examples as Ray Data datasets streamed from the corpus.

Two shapes of next-item example:
- `windows`: one row per prediction (history window -> target), the classic layout;
- `sequences`: one row per user with the last `max_history + 1` training items, trained
  with the loss at every position (covers every prefix in one pass, several times cheaper,
  measured on Instruments).
Rows carry plain int64 lists so any worker (Ray Train, Tune, Serve) can consume them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _window_rows(batch: pd.DataFrame, max_history: int) -> pd.DataFrame:
    uids, hists, targets = [], [], []
    for uid, seq in zip(batch["user_id"], batch["train"]):
        seq = list(seq)
        for t in range(1, len(seq)):
            uids.append(int(uid))
            hists.append(seq[max(0, t - max_history) : t])
            targets.append(int(seq[t]))
    return pd.DataFrame({"user_id": np.asarray(uids, dtype=np.int64), "history": hists, "target": np.asarray(targets, dtype=np.int64)})


def _sequence_rows(batch: pd.DataFrame, max_history: int) -> pd.DataFrame:
    seqs = [list(s)[-(max_history + 1) :] for s in batch["train"]]
    keep = [len(s) >= 2 for s in seqs]
    return pd.DataFrame(
        {
            "user_id": batch["user_id"].to_numpy(dtype=np.int64)[keep],
            "items": [s for s, k in zip(seqs, keep) if k],
        }
    )


def _eval_rows(batch: pd.DataFrame, split: str, max_history: int) -> pd.DataFrame:
    target = batch[split].to_numpy(dtype=np.int64)
    keep = target >= 0
    hists = []
    for seq, valid, k in zip(batch["train"], batch["valid"], keep):
        if not k:
            continue
        h = list(seq) + ([int(valid)] if split == "test" and valid >= 0 else [])
        hists.append(h[-max_history:])
    return pd.DataFrame({"user_id": batch["user_id"].to_numpy(dtype=np.int64)[keep], "history": hists, "target": target[keep]})


def next_item_dataset(corpus_dir: str | Path, split: str = "train", max_history: int = 20, layout: str = "windows") -> Any:
    """A Ray Dataset of next-item examples for `split` (train | valid | test).

    train + layout="windows": (user_id, history, target) for every position of each train
    sequence; train + layout="sequences": (user_id, items); valid/test: (user_id, history,
    target) with the leave-one-out history (test history includes the valid item).
    """
    import ray.data

    ds = ray.data.read_parquet(str(Path(corpus_dir) / "sequences.parquet"))
    if split == "train":
        if layout == "windows":
            return ds.map_batches(_window_rows, fn_kwargs={"max_history": max_history}, batch_format="pandas")
        if layout == "sequences":
            return ds.map_batches(_sequence_rows, fn_kwargs={"max_history": max_history}, batch_format="pandas")
        raise ValueError(f"layout must be 'windows' or 'sequences', not {layout!r}")
    if split in ("valid", "test"):
        return ds.map_batches(_eval_rows, fn_kwargs={"split": split, "max_history": max_history}, batch_format="pandas")
    raise ValueError(f"split must be train, valid or test, not {split!r}")
