"""What every reader returns: raw tables keyed by the source's own string keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ttds.data import schema
from ttds.data.rejects import RejectLog


@dataclass
class RawCorpus:
    """A source's records after parsing and validation, before k-core and id remapping.

    `interactions` follows `schema.RAW_INTERACTIONS`: an in-memory table (readers of
    files that fit in memory) or the path of a Parquet file with that schema (a corpus
    generated or converted in chunks, which preparation then reads in batches and never
    holds whole). `items` follows `schema.RAW_ITEMS` (a table or a Parquet path), `users`
    `schema.RAW_USERS`. Events of one user are kept in file order; preparation sorts them
    by (timestamp, file order). `precomputed_index` maps item_key to its tokens (LC-Rec
    `X.index.json`) when the source ships one.
    """

    source: str
    name: str
    interactions: pa.Table | Path
    items: pa.Table | Path = field(default_factory=lambda: schema.empty(schema.RAW_ITEMS))
    users: pa.Table = field(default_factory=lambda: schema.empty(schema.RAW_USERS))
    precomputed_index: dict[str, list[str]] | None = None
    rejects: RejectLog = field(default_factory=RejectLog)
    inputs: list[Path] = field(default_factory=list)  # files read, hashed into the manifest

    @property
    def num_interactions(self) -> int:
        if isinstance(self.interactions, pa.Table):
            return self.interactions.num_rows
        return pq.ParquetFile(self.interactions).metadata.num_rows

    def interaction_batches(self, columns: list[str], batch_rows: int = 1 << 20) -> Iterator[pa.RecordBatch]:
        """The interactions' `columns` in file order, `batch_rows` rows at a time."""
        if isinstance(self.interactions, pa.Table):
            yield from self.interactions.select(columns).to_batches(max_chunksize=batch_rows)
        else:
            yield from pq.ParquetFile(self.interactions).iter_batches(batch_size=batch_rows, columns=columns)

    def items_table(self) -> pa.Table:
        return self.items if isinstance(self.items, pa.Table) else pq.read_table(self.items, schema=schema.RAW_ITEMS)
