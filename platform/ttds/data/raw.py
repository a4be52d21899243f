"""What every reader returns: raw tables keyed by the source's own string keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ttds.data import schema
from ttds.data.rejects import RejectLog


@dataclass
class RawCorpus:
    """A source's records after parsing and validation, before k-core and id remapping.

    `interactions` follows `schema.RAW_INTERACTIONS`, `items` `schema.RAW_ITEMS`, `users`
    `schema.RAW_USERS`. Events of one user are kept in file order; preparation sorts them by
    (timestamp, file order). `precomputed_index` maps item_key to its tokens (LC-Rec
    `X.index.json`) when the source ships one.
    """

    source: str
    name: str
    interactions: pa.Table
    items: pa.Table = field(default_factory=lambda: schema.empty(schema.RAW_ITEMS))
    users: pa.Table = field(default_factory=lambda: schema.empty(schema.RAW_USERS))
    precomputed_index: dict[str, list[str]] | None = None
    rejects: RejectLog = field(default_factory=RejectLog)
    inputs: list[Path] = field(default_factory=list)  # files read, hashed into the manifest
