"""Helpers shared by every reader, so that each bad-input rule is written (and tested) once.

- opening a file with transparent gzip, and streaming its lines with 1-based line numbers;
- parsing one record line (JSON, falling back to a Python literal for old Amazon dumps);
- walking a single top-level JSON object entry by entry, so that each entry knows its line;
- cleaning text (HTML tags, entities, whitespace; joining lists);
- `InteractionBuilder`: collects events and applies the duplicate and time-order rules.
"""

from __future__ import annotations

import ast
import gzip
import html
import io
import json
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ttds.data import schema
from ttds.data.rejects import DataError, RejectLog

_GZIP_MAGIC = b"\x1f\x8b"

# A real markup tag: a letter right after "<" (or "</"), optional attributes, then ">". Stricter
# than `<[^>]*>` on purpose: product text like "< 1.5mm ... for > 3mm" or "<> Zero setting"
# must survive cleaning. Comments are removed as well.
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>", re.S)
_SPACE = re.compile(r"\s+")
_WS = re.compile(r"[ \t\n\r]*")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def require_file(path: str | Path, what: str) -> Path:
    """Return `path` as a Path, or raise DataError naming what was expected there."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} not found: {p}")
    return p


def open_text(path: str | Path) -> IO[str]:
    """Open a text file for reading, gunzipping by content (not by name: `.json` files are
    sometimes gzipped and `.gz` names sometimes are not)."""
    p = Path(path)
    with open(p, "rb") as f:
        magic = f.read(2)
    if magic == _GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", errors="replace")
    return open(p, encoding="utf-8", errors="replace")


def read_text(path: str | Path) -> str:
    """The whole (possibly gzipped) file as text, for the one-object JSON formats."""
    with open_text(path) as f:
        return f.read()


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its newline) for every non-blank line.

    Blank lines are skipped rather than reported: trailing newlines are normal, not bad data.
    A gzip stream that ends early raises DataError, since the rest of the file is unreadable.
    """
    try:
        with open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read {path}: {e}") from e


def parse_record(line: str) -> dict[str, Any] | None:
    """Parse one JSON-lines record; None when the line is neither JSON nor a Python literal.

    Old Amazon dumps (2014) are Python dict literals (single quotes, True/None), so
    `ast.literal_eval` is tried second: it evaluates literals only, never code.
    Anything that is not a mapping counts as unparseable: every record format is an object.
    """
    try:
        value = json.loads(line)
    except ValueError:
        try:
            value = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def iter_json_object(path: str | Path) -> Iterator[tuple[str, Any, int]]:
    """Yield (key, value, 1-based line of the key) for each entry of a file holding one JSON
    object, in file order.

    Walking the object entry by entry (the C scanner still parses each value) costs about
    the same as `json.load`, but gives each entry the line a user needs to find it, and keeps
    repeated keys that `json.load` would silently collapse. A file that is not one JSON
    object raises DataError with the line where parsing stopped.
    """
    text = read_text(path)
    decoder = json.JSONDecoder()
    scan_string = json.decoder.scanstring  # type: ignore[attr-defined]
    line, counted = 1, 0

    def fail(pos: int, why: str) -> DataError:
        lineno = text.count("\n", 0, pos) + 1
        return DataError(f"{path}:{lineno}: not a JSON object file ({why})")

    pos = _WS.match(text, 0).end()
    if pos < len(text) and text[pos] == "\ufeff":  # a byte-order mark some editors write
        pos = _WS.match(text, pos + 1).end()
    if pos >= len(text) or text[pos] != "{":
        raise fail(pos, "expected '{'")
    pos = _WS.match(text, pos + 1).end()
    if pos < len(text) and text[pos] == "}":
        return
    while True:
        if pos >= len(text) or text[pos] != '"':
            raise fail(pos, "expected a quoted key")
        key_pos = pos
        try:
            key, pos = scan_string(text, pos + 1)
        except ValueError as e:
            raise fail(pos, str(e)) from e
        pos = _WS.match(text, pos).end()
        if pos >= len(text) or text[pos] != ":":
            raise fail(pos, "expected ':' after a key")
        pos = _WS.match(text, pos + 1).end()
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError as e:
            raise fail(pos, f"bad value for key {key!r}: {e}") from e
        line += text.count("\n", counted, key_pos)
        counted = key_pos
        yield key, value, line
        pos = _WS.match(text, pos).end()
        if pos < len(text) and text[pos] == ",":
            pos = _WS.match(text, pos + 1).end()
            continue
        if pos < len(text) and text[pos] == "}":
            break
        raise fail(pos, "expected ',' or '}'")
    if _WS.match(text, pos + 1).end() != len(text):
        raise fail(pos + 1, "extra data after the object")


def _flatten(value: Any) -> list[str]:
    """Strings of a possibly nested list (Amazon 2014 categories are lists of lists)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _flatten(v)]
    return [str(value)]


def clean_text(value: Any, sep: str = " ") -> str:
    """One clean line of text from a str, a number, or a (nested) list of them.

    Lists are joined with `sep` after cleaning each part (empty parts dropped), HTML tags are
    removed and entities decoded, and whitespace runs collapse to one space: the text ends up
    in LLM prompts, where markup and newlines are noise.
    """
    parts = []
    for raw in _flatten(value):
        s = _TAG.sub(" ", html.unescape(raw)) if "<" in raw or "&" in raw else raw
        s = _SPACE.sub(" ", s).strip()
        if s:
            parts.append(s)
    return sep.join(parts)


def excerpt(value: Any) -> str:
    """A short JSON-ish excerpt of a record for the reject log."""
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)[:200]


def as_timestamp(value: Any) -> int | None:
    """Seconds as int from an int, a float or a numeric string; None when not a finite number
    that fits int64 (a larger one would make Arrow raise far from the offending line).

    Floats are truncated (RecBole writes `timestamp:float`); bools are rejected because
    `True` is an int in Python but never a time.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        t = value
    else:
        try:
            f = float(value)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(f):
            return None
        t = int(f)
    return t if _INT64_MIN <= t <= _INT64_MAX else None


def as_rating(value: Any) -> float | None:
    """A finite float from a number or numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class InteractionBuilder:
    """Collects one file's events and applies the rules shared by every reader.

    - `duplicate_interaction`: a (user, item) pair seen again keeps only its earliest event
      (smallest timestamp, then first in the file); the others are dropped and reported.
    - `non_monotonic_timestamp`: a user whose kept events, in file order, go back in time is
      reported once, at the first step back, as "repaired": the events are kept and
      preparation sorts them. Once per user, not per event: files grouped by item (Amazon
      2018) would otherwise log almost every event.

    `add`/`extend` only append; both rules run vectorised in `finish()`, because a Python
    dict lookup per event made reading 200k events take seconds. Events stay in file order.
    """

    def __init__(self, file: str | Path, rejects: RejectLog) -> None:
        self.file = str(file)
        self.rejects = rejects
        self.user: list[str] = []
        self.item: list[str] = []
        self.timestamp: list[int] = []
        self.rating: list[float | None] = []
        self.review: list[str] = []
        self.line: list[int] = []
        self._table: pa.Table | None = None

    def add(self, user: str, item: str, timestamp: int, line: int, rating: float | None = None, review: str = "") -> None:
        """Append one event."""
        self.user.append(user)
        self.item.append(item)
        self.timestamp.append(timestamp)
        self.rating.append(rating)
        self.review.append(review)
        self.line.append(line)
        self._table = None

    def extend(self, user: str, items: list[str], timestamps: Iterable[int], line: int) -> None:
        """Append one user's events that share a line and have no rating or review (LC-Rec)."""
        n = len(items)
        self.user.extend([user] * n)
        self.item.extend(items)
        self.timestamp.extend(timestamps)
        self.rating.extend([None] * n)
        self.review.extend([""] * n)
        self.line.extend([line] * n)
        self._table = None

    def __len__(self) -> int:
        return len(self.user)

    def _describe(self, row: int) -> str:
        return f"user={self.user[row]} item={self.item[row]} timestamp={self.timestamp[row]}"

    def _duplicates(self, ucode: np.ndarray, icode: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Keep mask after dropping all but the earliest event of each (user, item) pair."""
        n = len(ucode)
        rows = np.arange(n)
        order = np.lexsort((rows, ts, icode, ucode))  # by pair, then time, then file order
        same = np.zeros(n, dtype=bool)
        same[1:] = (ucode[order][1:] == ucode[order][:-1]) & (icode[order][1:] == icode[order][:-1])
        keep = np.ones(n, dtype=bool)
        if not same.any():
            return keep
        keep[order[same]] = False
        first = np.maximum.accumulate(np.where(same, 0, np.arange(n)))  # group start, in sorted order
        kept_of = np.empty(n, dtype=np.int64)
        kept_of[order] = order[first]
        for row in np.flatnonzero(~keep):  # file order
            kept = int(kept_of[row])
            self.rejects.add(
                "duplicate_interaction",
                self.file,
                self.line[row],
                f"user {self.user[row]!r} already has item {self.item[row]!r} "
                f"(line {self.line[kept]}, timestamp {self.timestamp[kept]}); the earliest is kept",
                self._describe(int(row)),
            )
        return keep

    def _check_order(self, ucode: np.ndarray, ts: np.ndarray, keep: np.ndarray) -> None:
        """Report each user whose kept events step back in time, at the first step back.

        Until its first step back a user's times never decrease, so that step is the first
        event earlier than the one just before it: a neighbour comparison suffices.
        """
        rows = np.flatnonzero(keep)
        by_user = rows[np.argsort(ucode[rows], kind="stable")]  # each user's events, file order
        u, t = ucode[by_user], ts[by_user]
        back = np.zeros(len(by_user), dtype=bool)
        back[1:] = (u[1:] == u[:-1]) & (t[1:] < t[:-1])
        hits = np.flatnonzero(back)
        if not len(hits):
            return
        _, first = np.unique(u[hits], return_index=True)
        for pos in sorted(hits[first], key=lambda p: by_user[p]):
            row, prev = int(by_user[pos]), int(by_user[pos - 1])
            self.rejects.add(
                "non_monotonic_timestamp",
                self.file,
                self.line[row],
                f"user {self.user[row]!r} goes back in time ({self.timestamp[row]} after "
                f"{self.timestamp[prev]}); events kept, sorted by time in preparation",
                self._describe(row),
                action="repaired",
            )

    def finish(self) -> pa.Table:
        """The kept events as a `RAW_INTERACTIONS` table; reports duplicates and time order.

        Idempotent: calling it again returns the same table without reporting twice.
        """
        if self._table is not None:
            return self._table
        table = pa.Table.from_pydict(
            dict(zip(schema.RAW_INTERACTIONS.names, (self.user, self.item, self.timestamp, self.rating, self.review))),
            schema=schema.RAW_INTERACTIONS,
        )
        if table.num_rows:
            ucode = _codes(table["user_key"])
            icode = _codes(table["item_key"])
            ts = table["timestamp"].to_numpy()
            keep = self._duplicates(ucode, icode, ts)
            self._check_order(ucode, ts, keep)
            if not keep.all():
                table = table.filter(pa.array(keep))
        self._table = table
        return table

    def kept(self) -> int:
        """Number of events left after dropping duplicates."""
        return self.finish().num_rows

    def users(self) -> list[str]:
        """Users with at least one kept event, in order of first appearance."""
        return pc.unique(self.finish()["user_key"]).to_pylist()

    def items(self) -> list[str]:
        """Items with at least one kept event, in order of first appearance."""
        return pc.unique(self.finish()["item_key"]).to_pylist()


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Dense int codes of a string column, so pairs compare as integers."""
    return pc.dictionary_encode(column.combine_chunks()).indices.to_numpy(zero_copy_only=False).astype(np.int64)


def items_table(rows: dict[str, dict[str, str]]) -> pa.Table:
    """A `RAW_ITEMS` table from {item_key: {text field: text}}; missing fields become ""."""
    cols: dict[str, list[str]] = {"item_key": list(rows)}
    for f in schema.TEXT_FIELDS:
        cols[f] = [r.get(f, "") for r in rows.values()]
    return pa.Table.from_pydict(cols, schema=schema.RAW_ITEMS)


def users_table(rows: dict[str, str]) -> pa.Table:
    """A `RAW_USERS` table from {user_key: text}."""
    return pa.Table.from_pydict({"user_key": list(rows), "text": list(rows.values())}, schema=schema.RAW_USERS)


def require_rows(builder: InteractionBuilder, what: str) -> None:
    """Raise DataError when no event survived: nothing downstream can use an empty corpus.

    The message carries the reject summary, since the log itself is lost with the exception.
    """
    if builder.kept() == 0:
        raise DataError(f"no usable interactions in {what}\n{builder.rejects.summary()}")
