"""Ray Data rows for every TTDS task, in one id-only layout: (task, anchor, seq).

Rows name entities by id, not by semantic ID, so a re-index changes nothing here: the
worker turns ids into the current ID tokens. Layout per task:
  next_item: anchor=user, seq=last max_history+1 train items (loss on each item)
  comment:   anchor=user, seq=train items (the prompt's history); only users with text
  user_pred: anchor=item, seq=a chunk of its buyers in time order (train events only)
  text2id / id2text: anchor=item, seq=[] ; only items with a title
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ttds.data.corpus import Corpus

ROW_SCHEMA = pa.schema([("task", pa.string()), ("anchor", pa.int64()), ("seq", pa.list_(pa.int64()))])


def buyers_table(corpus: Corpus, chunk: int) -> pd.DataFrame:
    """Per item, its training buyers in time order, cut into chunks of `chunk` users."""
    inter = pq.read_table(corpus.path("interactions"), columns=["user_id", "item_id", "timestamp", "split"]).to_pandas()
    train = inter[inter["split"] == "train"].sort_values(["item_id", "timestamp", "user_id"], kind="stable")
    rows = []
    for item, users in train.groupby("item_id", sort=True)["user_id"]:
        u = users.to_numpy()
        for s in range(0, len(u), chunk):
            part = u[s : s + chunk]
            if len(part) >= 2:
                rows.append(("user_pred", int(item), part.tolist()))
    return pd.DataFrame(rows, columns=["task", "anchor", "seq"])


def write_task_rows(corpus: Corpus, out_dir: str | Path, tasks: list[str], max_history: int) -> Path:
    """Write the rows of `tasks` as Parquet (read back by Ray Data in the job)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    seqs = corpus.train_sequences
    if "next_item" in tasks:
        frames.append(pd.DataFrame({"task": "next_item", "anchor": np.arange(len(seqs)), "seq": [s[-(max_history + 1):].tolist() for s in seqs]}))
    if "comment" in tasks:
        has = [u for u, t in enumerate(corpus.user_texts) if t and len(seqs[u])]
        frames.append(pd.DataFrame({"task": "comment", "anchor": has, "seq": [seqs[u][-max_history:].tolist() for u in has]}))
    if "user_pred" in tasks:
        frames.append(buyers_table(corpus, max_history + 1))
    for task in ("text2id", "id2text"):
        if task in tasks:
            titled = [i for i, t in enumerate(corpus.item_titles) if t]
            frames.append(pd.DataFrame({"task": task, "anchor": titled, "seq": [[] for _ in titled]}))
    df = pd.concat(frames, ignore_index=True)
    df = df[df["seq"].map(len).ge(2) | ~df["task"].isin(["next_item", "user_pred"])]
    path = out / "task_rows.parquet"
    pq.write_table(pa.Table.from_pandas(df, schema=ROW_SCHEMA, preserve_index=False), path, row_group_size=4096)
    return path
