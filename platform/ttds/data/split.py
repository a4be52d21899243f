"""k-core filtering, time ordering, id remapping and the leave-one-out split.

These are plain pandas/numpy functions over an interactions frame so they are easy to test
on hand-checked cases; `prepare.py` chains them and writes the corpus.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ttds.data.rejects import RejectLog


def sort_by_time(df: pd.DataFrame) -> pd.DataFrame:
    """Stable sort by (user, timestamp, file order): ties keep the order the source gave."""
    df = df.assign(_order=np.arange(len(df)))
    return df.sort_values(["user_key", "timestamp", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)


def drop_duplicates(df: pd.DataFrame, rejects: RejectLog) -> pd.DataFrame:
    """Keep the earliest (user, item) event; later repeats are counted as rejects.

    Leave-one-out over sequences with repeats would let the test item appear in the
    training history, which inflates metrics; the LC-Rec pipeline removes them too.
    """
    dup = df.duplicated(["user_key", "item_key"], keep="first")
    for row in df[dup].itertuples(index=False):
        rejects.add(
            "duplicate_interaction", "<interactions>", 0,
            f"user {row.user_key} already has item {row.item_key}; kept the earliest",
            {"user": row.user_key, "item": row.item_key, "timestamp": int(row.timestamp)},
        )
    return df[~dup].reset_index(drop=True)


def k_core(df: pd.DataFrame, k: int, user_col: str = "user_key", item_col: str = "item_key") -> pd.DataFrame:
    """Keep users and items with at least k interactions, iterated to a fixed point.

    Removing a sparse item can push a user below k and vice versa, so one pass is not
    enough; the loop stops when a pass removes nothing.
    """
    if k <= 1:
        return df
    while True:
        user_counts = df[user_col].map(df[user_col].value_counts())
        item_counts = df[item_col].map(df[item_col].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return df.reset_index(drop=True)
        df = df[keep]
        if df.empty:
            return df.reset_index(drop=True)


def dense_ids(keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Map string keys to 0..n-1, keeping numeric order when every key is an integer.

    Numeric order keeps LC-Rec ids unchanged after preparation (so a shipped
    `X.index.json` and the paper's splits line up); other keys keep first-seen order.
    """
    uniq = pd.unique(keys)
    if all(isinstance(u, str) and u.lstrip("-").isdigit() for u in uniq):
        uniq = np.array(sorted(uniq, key=int), dtype=object)
    mapping = pd.Series(np.arange(len(uniq), dtype=np.int64), index=uniq)
    return mapping.loc[keys].to_numpy(), np.asarray(uniq, dtype=object)


def leave_one_out(df: pd.DataFrame) -> pd.DataFrame:
    """Mark each user's last event `test`, the one before `valid`, the rest `train`.

    `df` must be sorted by user then time. Users with fewer than 3 events keep them all in
    train: they have too little history to evaluate without leaving them empty.
    """
    position = df.groupby("user_id", sort=False).cumcount().to_numpy()
    length = df["user_id"].map(df["user_id"].value_counts()).to_numpy()
    split = np.full(len(df), "train", dtype=object)
    eligible = length >= 3
    split[eligible & (position == length - 1)] = "test"
    split[eligible & (position == length - 2)] = "valid"
    return df.assign(position=position.astype(np.int32), split=split)


def sequences(df: pd.DataFrame) -> pd.DataFrame:
    """One row per user: train item list, valid item, test item (-1 when absent)."""
    train = df[df["split"] == "train"].groupby("user_id", sort=True)["item_id"].apply(list)
    out = pd.DataFrame({"user_id": train.index.to_numpy(dtype=np.int64), "train": train.to_list()})
    for part in ("valid", "test"):
        m = df[df["split"] == part].set_index("user_id")["item_id"]
        out[part] = out["user_id"].map(m).fillna(-1).astype(np.int64)
    return out
