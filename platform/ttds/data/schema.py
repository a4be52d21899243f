"""Arrow schemas of the corpus: the contract between readers, preparation and training.

Raw tables (what readers return) still carry the source's own keys as strings
(`user_key`, `item_key`), because id remapping happens only after k-core filtering.
Prepared tables (what is written to disk) carry dense int64 ids starting at 0.
"""

from __future__ import annotations

import pyarrow as pa

TEXT_FIELDS = ("title", "description", "brand", "categories")

RAW_INTERACTIONS = pa.schema(
    [
        ("user_key", pa.string()),
        ("item_key", pa.string()),
        ("timestamp", pa.int64()),
        ("rating", pa.float32()),
        ("review", pa.string()),
    ]
)
RAW_ITEMS = pa.schema([("item_key", pa.string())] + [(f, pa.string()) for f in TEXT_FIELDS])
RAW_USERS = pa.schema([("user_key", pa.string()), ("text", pa.string())])

SPLITS = ("train", "valid", "test")

INTERACTIONS = pa.schema(
    [
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("timestamp", pa.int64()),
        ("rating", pa.float32()),
        ("review", pa.string()),
        ("position", pa.int32()),  # index of the event inside the user's time-ordered sequence
        ("split", pa.string()),  # one of SPLITS
    ]
)
ITEMS = pa.schema(
    [("item_id", pa.int64()), ("item_key", pa.string())] + [(f, pa.string()) for f in TEXT_FIELDS]
)
USERS = pa.schema([("user_id", pa.int64()), ("user_key", pa.string()), ("text", pa.string())])
# One row per user: the time-ordered item ids of each split part, the unit Ray Data streams.
SEQUENCES = pa.schema(
    [
        ("user_id", pa.int64()),
        ("train", pa.list_(pa.int64())),
        ("valid", pa.int64()),  # -1 when the user has no validation item
        ("test", pa.int64()),  # -1 when the user has no test item
    ]
)
# A precomputed item index shipped with a corpus (LC-Rec `X.index.json`), by prepared item id.
PRECOMPUTED_INDEX = pa.schema([("item_id", pa.int64()), ("tokens", pa.list_(pa.string()))])


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of `schema`, for sources that lack a part (e.g. no user text)."""
    return schema.empty_table()
