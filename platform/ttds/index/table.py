"""The semantic-ID table: entity id -> tokens; the contract between training and serving.

A model is always saved with the table it was trained on, because the LLM's new tokens mean
nothing without it. The table stores raw codes and suffixes (tokens are derived), writes
Parquet for the rows and JSON for the facts a reader checks first (M, N, collision rate).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ttds.index.collisions import assign_suffixes, collision_rate, final_keys

REINDEX_RULES = ("fresh", "sticky_last")  # see SemanticIDTable.with_codes

__all__ = [
    "ITEM_PREFIXES",
    "USER_PREFIXES",
    "SUFFIX_PREFIX",
    "KINDS",
    "level_token",
    "suffix_token",
    "SemanticIDTable",
]

ITEM_PREFIXES = ("a", "b", "c", "d", "e", "f", "g", "h")
USER_PREFIXES = ("ua", "ub", "uc", "ud", "ue", "uf", "ug", "uh")
SUFFIX_PREFIX = "s"  # shared by items and users: `<s_k>` only ever follows a full code
KINDS = ("item", "user")

TABLE_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("id", pa.int64()),
        ("tokens", pa.list_(pa.string())),
        ("codes", pa.list_(pa.int64())),
        ("suffix", pa.int64()),
    ]
)


def _prefixes(kind: str) -> tuple[str, ...]:
    if kind == "item":
        return ITEM_PREFIXES
    if kind == "user":
        return USER_PREFIXES
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def level_token(kind: str, level: int, code: int) -> str:
    """`<a_12>` for item level 0 code 12, `<ua_12>` for a user."""
    return f"<{_prefixes(kind)[level]}_{int(code)}>"


def suffix_token(k: int) -> str:
    return f"<{SUFFIX_PREFIX}_{int(k)}>"


@dataclass(eq=False)
class SemanticIDTable:
    """Rows of (entity id, M codes, suffix) for one kind of entity.

    Equality is identity (arrays have no single truth value); compare tables with `churn`.

    `suffix[i] == -1` means row i's M-token code is unique and its ID has M tokens; otherwise
    the ID has M+1 tokens ending in `<s_k>` (see `collisions`).
    """

    kind: str
    ids: np.ndarray
    codes: np.ndarray
    suffix: np.ndarray
    codebook_size: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        prefixes = _prefixes(self.kind)
        self.ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        self.codes = np.asarray(self.codes, dtype=np.int64)
        if self.codes.ndim != 2 or len(self.codes) != len(self.ids):
            raise ValueError(f"codes must be [{len(self.ids)}, M], got {self.codes.shape}")
        self.suffix = np.asarray(self.suffix, dtype=np.int64).reshape(-1)
        if len(self.suffix) != len(self.ids):
            raise ValueError(f"suffix has {len(self.suffix)} rows, ids {len(self.ids)}")
        if self.codes.shape[1] > len(prefixes):
            raise ValueError(f"at most {len(prefixes)} levels have token names, got {self.codes.shape[1]}")
        if self.codes.size and (self.codes.min() < 0 or self.codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        if len(np.unique(self.ids)) != len(self.ids):
            raise ValueError("entity ids must be unique")
        self._by_id: tuple[np.ndarray, np.ndarray] | None = None  # (sorted ids, their rows)
        self._by_key: tuple[np.ndarray, np.ndarray] | None = None  # (sorted packed IDs, their rows)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_codes(
        cls,
        kind: str,
        ids: Sequence[int] | np.ndarray,
        codes: np.ndarray,
        codebook_size: int,
        meta: dict[str, Any] | None = None,
    ) -> "SemanticIDTable":
        """A table whose suffixes are computed from the codes (row order decides suffix order)."""
        codes = np.asarray(codes, dtype=np.int64)
        return cls(kind, np.asarray(ids), codes, assign_suffixes(codes), int(codebook_size), dict(meta or {}))

    def with_codes(self, codes: np.ndarray, rule: str = "fresh") -> "SemanticIDTable":
        """The table a re-index gives: `codes` [n, M] for this table's rows, under `rule`.

        rule="fresh" takes the codes as they are. rule="sticky_last" keeps a row's last-level
        code wherever its first M-1 codes did not change. Why: the last RQ level quantises the
        smallest residual, so tiny tower drift flips it; measured on Instruments and Scientific
        after three re-indexes, 22-25% of items had a new last code while only 13-18% had a new
        prefix, and every flipped ID is one the LLM has to learn again. Rows whose prefix moved
        take their new codes (a rare clash with a kept code gets a suffix token, as any collision).
        """
        if rule not in REINDEX_RULES:
            raise ValueError(f"reindex rule must be one of {REINDEX_RULES}, not {rule!r}")
        codes = np.array(codes, dtype=np.int64, copy=True)
        if codes.shape != self.codes.shape:
            raise ValueError(f"codes have shape {codes.shape}, the table {self.codes.shape}")
        if rule == "sticky_last" and self.levels > 1:
            same_prefix = (codes[:, :-1] == self.codes[:, :-1]).all(axis=1)
            codes[same_prefix, -1] = self.codes[same_prefix, -1]
        return SemanticIDTable.from_codes(self.kind, self.ids, codes, self.codebook_size, self.meta)

    # -- shape and facts --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def levels(self) -> int:
        return int(self.codes.shape[1])

    @property
    def prefixes(self) -> tuple[str, ...]:
        return _prefixes(self.kind)[: self.levels]

    @property
    def collision_rate(self) -> float:
        """Share of rows whose M-token code another row already has (before suffixes)."""
        return collision_rate(self.codes)

    @property
    def max_suffix(self) -> int:
        return int(self.suffix.max()) if len(self.suffix) else -1

    # -- tokens ------------------------------------------------------------------------------
    def _row(self, row: int | None, entity_id: int | None) -> int:
        if (row is None) == (entity_id is None):
            raise ValueError("pass exactly one of row or entity_id")
        if entity_id is not None:
            return self.row_of(entity_id)
        if not -len(self) <= row < len(self):
            raise IndexError(f"row {row} out of range for {len(self)} rows")
        return int(row)

    def tokens(self, row: int | None = None, *, entity_id: int | None = None) -> list[str]:
        """Tokens of one row (by position, or by `entity_id=`), suffix token last when present."""
        r = self._row(row, entity_id)
        out = [level_token(self.kind, level, c) for level, c in enumerate(self.codes[r].tolist())]
        if self.suffix[r] >= 0:
            out.append(suffix_token(self.suffix[r]))
        return out

    def token_strings(self) -> list[list[str]]:
        """Tokens of every row, in row order."""
        heads = [f"<{p}_" for p in self.prefixes]
        out = []
        for codes, suf in zip(self.codes.tolist(), self.suffix.tolist()):
            toks = [f"{heads[level]}{c}>" for level, c in enumerate(codes)]
            if suf >= 0:
                toks.append(suffix_token(suf))
            out.append(toks)
        return out

    def _token_column(self) -> pa.Array:
        """`token_strings()` as an Arrow list column, built with vectorised string ops (no per-row lists)."""
        import pyarrow.compute as pc

        n, m = len(self), self.levels
        has = self.suffix >= 0
        per_row = np.where(has, m + 1, m)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(per_row, out=offsets[1:])
        parts = [pc.binary_join_element_wise(f"<{p}_", pc.cast(pa.array(self.codes[:, level]), pa.string()), ">", "")
                 for level, p in enumerate(self.prefixes)]
        parts.append(pc.binary_join_element_wise(f"<{SUFFIX_PREFIX}_", pc.cast(pa.array(self.suffix[has]), pa.string()), ">", ""))
        # position of every token in the flat values: level l of row r at offsets[r] + l, suffix at offsets[r] + m
        where = [offsets[:-1] + level for level in range(m)] + [offsets[:-1][has] + m]
        values = pa.concat_arrays([a.cast(pa.string()) for a in parts])
        flat_pos = np.concatenate(where)
        take = np.empty(len(flat_pos), dtype=np.int64)
        take[flat_pos] = np.arange(len(flat_pos))
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values.take(pa.array(take)))

    def id_string(self, row: int | None = None, *, entity_id: int | None = None) -> str:
        """The ID as one string, e.g. "<a_12><b_7><c_201><d_3>"."""
        return "".join(self.tokens(row, entity_id=entity_id))

    def vocabulary(self) -> list[str]:
        """Every token the table could use: all M*N level tokens (level-major), then suffixes.

        All N codes of every level are listed even when unused, so re-assigned IDs after a
        re-index never need new LLM tokens; suffixes run 0..max_suffix of this table.
        """
        vocab = [level_token(self.kind, level, c) for level in range(self.levels) for c in range(self.codebook_size)]
        vocab += [suffix_token(k) for k in range(self.max_suffix + 1)]
        return vocab

    # -- lookups -----------------------------------------------------------------------------
    # Sorted arrays and a binary search, not dicts: at 1M items a dict of token tuples held
    # ~1 GB of Python objects, the arrays hold 16 bytes a row (docs/scaling.md).
    def row_of(self, entity_id: int) -> int:
        """Row index of an entity id; KeyError when the table lacks it."""
        if self._by_id is None:
            order = np.argsort(self.ids, kind="stable")
            self._by_id = (self.ids[order], order)
        sorted_ids, rows = self._by_id
        i = int(np.searchsorted(sorted_ids, int(entity_id)))
        if i >= len(sorted_ids) or sorted_ids[i] != int(entity_id):
            raise KeyError(int(entity_id))
        return int(rows[i])

    def _packed(self, codes: np.ndarray, suffix: np.ndarray) -> np.ndarray | None:
        """One int64 per ID (codes in base N, then suffix + 1 above them); None if that overflows."""
        n, m = self.codebook_size, self.levels
        if float(n) ** m * (self.max_suffix + 2) >= 2.0**62:
            return None
        base = n ** np.arange(m, dtype=np.int64)
        return (codes.astype(np.int64) * base).sum(1) + (suffix.astype(np.int64) + 1) * n**m

    def _parse(self, tokens: Sequence[str]) -> tuple[list[int], int] | None:
        """(codes, suffix or -1) of a token sequence of this table's shape, None when it is not one."""
        if len(tokens) not in (self.levels, self.levels + 1):
            return None
        codes = []
        try:
            for level, (prefix, tok) in enumerate(zip(self.prefixes, tokens)):
                head = f"<{prefix}_"
                if not (tok.startswith(head) and tok.endswith(">")):
                    return None
                codes.append(int(tok[len(head) : -1]))
            suffix = -1
            if len(tokens) > self.levels:
                tok, head = tokens[-1], f"<{SUFFIX_PREFIX}_"
                if not (tok.startswith(head) and tok.endswith(">")):
                    return None
                suffix = int(tok[len(head) : -1])
        except ValueError:
            return None
        return codes, suffix

    def entity_of(self, tokens: Sequence[str]) -> int | None:
        """The entity a generated token sequence names, or None: decoding's inverse lookup."""
        parsed = self._parse(list(tokens))
        if parsed is None:
            return None
        codes, suffix = parsed
        if self._by_key is None:
            keys = self._packed(self.codes, self.suffix)
            if keys is None:  # too many combinations to pack: compare rows directly
                hit = np.flatnonzero((self.codes == np.asarray(codes)).all(1) & (self.suffix == suffix))
                return int(self.ids[hit[0]]) if len(hit) else None
            order = np.argsort(keys, kind="stable")
            self._by_key = (keys[order], order)
        sorted_keys, rows = self._by_key
        key = self._packed(np.asarray([codes]), np.asarray([suffix]))
        if key is None or (np.asarray(codes) >= self.codebook_size).any() or min(codes) < 0:
            return None
        i = int(np.searchsorted(sorted_keys, key[0]))
        if i >= len(sorted_keys) or sorted_keys[i] != key[0]:
            return None
        return int(self.ids[rows[i]])

    def keys(self) -> list[tuple[int, ...]]:
        """Each row's final ID as integers (codes, then suffix when present)."""
        return final_keys(self.codes, self.suffix)

    def assert_unique(self) -> None:
        """Raise ValueError if two rows share a final ID (a broken or hand-edited table)."""
        rows = np.concatenate([self.codes, self.suffix[:, None]], 1)
        if len(rows) == 0:
            return
        _, first, inverse, counts = np.unique(rows, axis=0, return_index=True, return_inverse=True, return_counts=True)
        dup = np.flatnonzero(counts[inverse.reshape(-1)] > 1)
        if len(dup):
            i = int(dup[dup != first[inverse.reshape(-1)[dup]]][0])
            j = int(first[inverse.reshape(-1)[i]])
            raise ValueError(f"{self.kind} ids {self.ids[j]} and {self.ids[i]} share the ID {self.id_string(i)}")

    def churn(self, other: "SemanticIDTable") -> float:
        """Fraction of entity ids present in both tables whose final ID differs.

        Measures how much a re-index moved things (the LLM must re-learn moved IDs). NaN when
        the tables share no entity, since no change can be measured then.
        """
        common, mine, theirs = np.intersect1d(self.ids, other.ids, assume_unique=True, return_indices=True)
        if len(common) == 0:
            return float("nan")
        if self.levels != other.levels:
            return 1.0
        same_codes = (self.codes[mine] == other.codes[theirs]).all(axis=1)
        same_suffix = self.suffix[mine] == other.suffix[theirs]
        return float(1.0 - (same_codes & same_suffix).mean())

    # -- persistence -------------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "levels": self.levels,
            "codebook_size": self.codebook_size,
            "rows": len(self),
            "collision_rate": self.collision_rate,
            "max_suffix": self.max_suffix,
            "prefixes": list(self.prefixes),
            "meta": self.meta,
        }

    def save(self, directory: str | Path) -> Path:
        """Write `<kind>_ids.parquet` and `<kind>_ids.json` into `directory`; returns the Parquet path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        n, m = len(self), self.levels
        code_offsets = pa.array(np.arange(n + 1, dtype=np.int32) * m)
        table = pa.table(
            {
                "kind": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [self.kind]).cast(pa.string()),
                "id": pa.array(self.ids, pa.int64()),
                "tokens": self._token_column(),
                "codes": pa.ListArray.from_arrays(code_offsets, pa.array(self.codes.reshape(-1))),
                "suffix": pa.array(self.suffix, pa.int64()),
            },
            schema=TABLE_SCHEMA,
        )
        path = d / f"{self.kind}_ids.parquet"
        pq.write_table(table, path)
        (d / f"{self.kind}_ids.json").write_text(json.dumps(self._metadata(), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, directory: str | Path, kind: str) -> "SemanticIDTable":
        """Read a table written by `save`; checks the JSON facts against the rows."""
        _prefixes(kind)
        d = Path(directory)
        info = json.loads((d / f"{kind}_ids.json").read_text())
        table = pq.read_table(d / f"{kind}_ids.parquet")
        levels = int(info["levels"])
        codes_col = table.column("codes").combine_chunks()
        flat = np.asarray(codes_col.flatten().to_numpy(zero_copy_only=False), dtype=np.int64)
        if len(flat) != levels * table.num_rows:
            raise ValueError(f"{kind} table: codes do not all have {levels} levels")
        out = cls(
            kind=kind,
            ids=table.column("id").to_numpy(),
            codes=flat.reshape(table.num_rows, levels),
            suffix=table.column("suffix").to_numpy(),
            codebook_size=int(info["codebook_size"]),
            meta=dict(info.get("meta", {})),
        )
        if info.get("kind", kind) != kind:
            raise ValueError(f"{d} holds a {info['kind']} table under the name {kind}")
        return out
