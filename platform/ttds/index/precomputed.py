"""Precomputed indexes (LC-Rec `X.index.json`): token lists like ["<a_137>", "<b_112>", ...].

Using a published index lets experiments separate "our tokenizer" from "the rest of the
pipeline": the same LLM training runs over IDs someone else learned. Tokens are parsed back
into codes (level letters must run a, b, c, ... in order) and the table recomputes suffixes
itself, because published indexes may still contain collisions.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

from ttds.index.table import ITEM_PREFIXES, SemanticIDTable

__all__ = ["parse_lcrec_tokens", "table_from_precomputed", "table_from_index_json", "table_from_arrow"]

_TOKEN = re.compile(r"^<([a-z]+)_(\d+)>$")


def parse_lcrec_tokens(tokens: Sequence[str]) -> np.ndarray:
    """Codes [M] int64 of one item's tokens; ValueError on a malformed or out-of-order token."""
    if len(tokens) == 0 or len(tokens) > len(ITEM_PREFIXES):
        raise ValueError(f"expected 1..{len(ITEM_PREFIXES)} tokens, got {len(tokens)}")
    codes = np.empty(len(tokens), dtype=np.int64)
    for level, tok in enumerate(tokens):
        m = _TOKEN.match(tok.strip())
        if m is None:
            raise ValueError(f"not a semantic token: {tok!r}")
        if m.group(1) != ITEM_PREFIXES[level]:
            raise ValueError(f"token {tok!r} at level {level}; expected prefix {ITEM_PREFIXES[level]!r}")
        codes[level] = int(m.group(2))
    return codes


def table_from_precomputed(
    item_ids: Sequence[int] | np.ndarray,
    token_lists: Sequence[Sequence[str]],
    codebook_size: int | None = None,
    meta: dict | None = None,
) -> SemanticIDTable:
    """An item table from parallel item ids and token lists (all of the same length M).

    `codebook_size=None` infers it as the largest code + 1, which under-counts when the top
    codes went unused; pass the index's real N (LC-Rec uses 256) when known.
    """
    if len(item_ids) != len(token_lists):
        raise ValueError(f"{len(item_ids)} item ids but {len(token_lists)} token lists")
    rows = [parse_lcrec_tokens(t) for t in token_lists]
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise ValueError(f"token lists of different lengths {sorted(lengths)}; expected one M")
    levels = lengths.pop() if lengths else 0
    codes = np.stack(rows) if rows else np.zeros((0, levels), dtype=np.int64)
    n = int(codebook_size) if codebook_size is not None else int(codes.max()) + 1 if codes.size else 1
    info = {"source": "precomputed", **(meta or {})}
    return SemanticIDTable.from_codes("item", np.asarray(item_ids, dtype=np.int64), codes, n, info)


def table_from_index_json(index: Mapping[str, Sequence[str]], codebook_size: int | None = None) -> SemanticIDTable:
    """From the parsed LC-Rec JSON object {"item id as string": [tokens]}, rows sorted by id."""
    ids = sorted(int(k) for k in index)
    return table_from_precomputed(ids, [index[str(i)] for i in ids], codebook_size)


def table_from_arrow(table: pa.Table, codebook_size: int | None = None) -> SemanticIDTable:
    """From a `ttds.data.schema.PRECOMPUTED_INDEX` table (item_id, tokens)."""
    return table_from_precomputed(
        table.column("item_id").to_pylist(), table.column("tokens").to_pylist(), codebook_size
    )
