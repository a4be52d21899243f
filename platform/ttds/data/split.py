"""k-core filtering, time ordering, id remapping and the leave-one-out split.

Each step is a numpy function over integer code arrays (a few bytes per interaction, so a
10M-event corpus fits in a few hundred MB); `prepare.py` chains them and writes the corpus
chunk by chunk. The pandas wrappers below keep the hand-checked cases readable in tests and
call the same array code, so there is one implementation of each rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ttds.data.rejects import RejectLog

SPLIT_NAMES = np.array(["train", "valid", "test"], dtype=object)  # split code -> name


def time_order(user_rank: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """Row order sorted by (user, timestamp, file order): ties keep the order the source gave."""
    return np.lexsort((np.arange(len(timestamp)), timestamp, user_rank))


def first_occurrence(user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Mask of the rows that are the first (user, item) event in row order.

    Leave-one-out over sequences with repeats would let the test item appear in the
    training history, which inflates metrics; the LC-Rec pipeline removes them too.
    """
    key = user.astype(np.int64) * (int(item.max(initial=0)) + 1) + item
    _, first = np.unique(key, return_index=True)  # stable: the earliest row of each key
    keep = np.zeros(len(key), dtype=bool)
    keep[first] = True
    return keep


def record_duplicates(rejects: RejectLog, user_keys, item_keys, timestamps) -> None:
    """One `duplicate_interaction` reject per repeated (user, item) event dropped."""
    for u, i, t in zip(user_keys, item_keys, timestamps):
        rejects.add(
            "duplicate_interaction", "<interactions>", 0,
            f"user {u} already has item {i}; kept the earliest",
            {"user": u, "item": i, "timestamp": int(t)},
        )


def k_core_mask(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """Rows kept by k-core: users and items with at least k events, iterated to a fixed point.

    Removing a sparse item can push a user below k and vice versa, so one pass is not
    enough; the loop stops when a pass removes nothing. Codes are dense non-negative ints.
    """
    keep = np.ones(len(user), dtype=bool)
    if k <= 1 or len(user) == 0:
        return keep
    nu, ni = int(user.max()) + 1, int(item.max()) + 1
    while True:
        uc = np.bincount(user[keep], minlength=nu)
        ic = np.bincount(item[keep], minlength=ni)
        new = keep & (uc[user] >= k) & (ic[item] >= k)
        if new.sum() == keep.sum():
            return keep
        keep = new


def dense_codes(codes: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber `codes` (indices into `keys`) to 0..n-1 over the codes present.

    Numeric order when every key is an integer string keeps LC-Rec ids unchanged after
    preparation (so a shipped `X.index.json` and the paper's splits line up); other keys
    keep first-seen order in `codes`. Returns (new ids per row, key of each new id).
    """
    present, first = np.unique(codes, return_index=True)
    present_keys = keys[present]
    if all(isinstance(k, str) and k.lstrip("-").isdigit() for k in present_keys):
        rank = np.argsort(np.array([int(k) for k in present_keys], dtype=object), kind="stable")
    else:
        rank = np.argsort(first, kind="stable")
    new_of_code = np.full(int(codes.max(initial=-1)) + 1, -1, dtype=np.int64)
    new_of_code[present[rank]] = np.arange(len(rank), dtype=np.int64)
    return new_of_code[codes], np.asarray(present_keys[rank], dtype=object)


def leave_one_out_codes(user_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in the user's sequence, split code 0/1/2 = train/valid/test) per row.

    `user_id` must be grouped (rows of one user adjacent, in time order). Users with fewer
    than 3 events keep them all in train: too little history to evaluate.
    """
    n = len(user_id)
    if n == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int8)
    starts = np.flatnonzero(np.r_[True, user_id[1:] != user_id[:-1]])
    lengths = np.diff(np.r_[starts, n])
    length = np.repeat(lengths, lengths)
    position = np.arange(n) - np.repeat(starts, lengths)
    code = np.zeros(n, dtype=np.int8)
    eligible = length >= 3
    code[eligible & (position == length - 1)] = 2
    code[eligible & (position == length - 2)] = 1
    return position.astype(np.int32), code


# ---- pandas wrappers over the array functions (tests and small callers) ----


def k_core(df: pd.DataFrame, k: int, user_col: str = "user_key", item_col: str = "item_key") -> pd.DataFrame:
    """`k_core_mask` over a frame keyed by any hashable user/item columns."""
    keep = k_core_mask(pd.factorize(df[user_col])[0], pd.factorize(df[item_col])[0], k)
    return df[keep].reset_index(drop=True)


def dense_ids(keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """`dense_codes` over a column of string keys."""
    codes, uniq = pd.factorize(keys)
    return dense_codes(codes, np.asarray(uniq, dtype=object))


def leave_one_out(df: pd.DataFrame) -> pd.DataFrame:
    """Adds `position` and `split` to a frame sorted by user then time."""
    position, code = leave_one_out_codes(df["user_id"].to_numpy())
    return df.assign(position=position, split=SPLIT_NAMES[code])


def sequences(df: pd.DataFrame) -> pd.DataFrame:
    """One row per user: train item list, valid item, test item (-1 when absent)."""
    train = df[df["split"] == "train"].groupby("user_id", sort=True)["item_id"].apply(list)
    out = pd.DataFrame({"user_id": train.index.to_numpy(dtype=np.int64), "train": train.to_list()})
    for part in ("valid", "test"):
        m = df[df["split"] == part].set_index("user_id")["item_id"]
        out[part] = out["user_id"].map(m).fillna(-1).astype(np.int64)
    return out
