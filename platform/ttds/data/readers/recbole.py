"""Reader for RecBole atomic files: `name.inter`, optional `name.item` and `name.user`.

Each file is tab-separated with a typed header (`user_id:token	item_id:token	rating:float
timestamp:float`). Columns are found by name, so extra columns are ignored; item text
columns are matched through a few common aliases (ml-1m says `movie_title`, `genre`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ttds.data.raw import RawCorpus
from ttds.data.readers._common import (
    InteractionBuilder,
    as_rating,
    as_timestamp,
    clean_text,
    items_table,
    iter_lines,
    require_file,
    require_rows,
    users_table,
)
from ttds.data.rejects import DataError, RejectLog

# RAW_ITEMS text field -> RecBole column names that mean it, in order of preference.
ITEM_ALIASES = {
    "title": ("title", "movie_title", "name", "item_name"),
    "description": ("description", "desc"),
    "brand": ("brand",),
    "categories": ("categories", "category", "genre", "genres"),
}
TEXT_TYPES = ("token", "token_seq", None)  # None: a column whose header has no type


@dataclass(frozen=True)
class Header:
    """Column names and RecBole types (None when a column is untyped) of an atomic file."""

    names: tuple[str, ...]
    types: tuple[str | None, ...]

    @classmethod
    def parse(cls, line: str) -> "Header":
        names, types = [], []
        for field in line.split("\t"):
            name, _, typ = field.strip().partition(":")
            names.append(name.strip())
            types.append(typ.strip() or None)
        return cls(tuple(names), tuple(types))


def _rows(path: Path, required: tuple[str, ...], rejects: RejectLog) -> Iterator[tuple[Header, int, dict[str, str]]]:
    """Yield (header, line number, {column: value}) for every data row with all columns.

    The header must name every `required` column, otherwise the file is unusable and a
    DataError (`bad_header`) is raised. A row with fewer fields than the header is
    `missing_field`, one with more is `wrong_type`; both are dropped here and counted.
    """
    lines = iter_lines(path)
    first = next(lines, None)
    if first is None:
        raise DataError(f"{path}: bad_header: the file is empty (a RecBole atomic file starts with a typed header)")
    header_line, text = first
    header = Header.parse(text)
    absent = [c for c in required if c not in header.names]
    if absent:
        rejects.add("bad_header", path, header_line, f"header lacks {', '.join(absent)}", text)
        raise DataError(
            f"{path}:{header_line}: bad_header: the header has no {' / '.join(absent)} column "
            f"(found {list(header.names)}); expected e.g. '{chr(9).join(c + ':token' for c in required)}'"
        )
    width = len(header.names)
    for lineno, line in lines:
        rejects.seen += 1
        values = line.split("\t")
        if len(values) < width:
            missing = header.names[len(values):]
            rejects.add("missing_field", path, lineno, f"{len(values)} fields, header has {width}: no {', '.join(missing)}", line)
        elif len(values) > width:
            rejects.add("wrong_type", path, lineno, f"{len(values)} fields, header has {width}", line)
        else:
            yield header, lineno, dict(zip(header.names, values))


def _blank(row: dict[str, str], columns: tuple[str, ...]) -> list[str]:
    return [c for c in columns if not row[c].strip()]


def read_items(path: Path, item_field: str, rejects: RejectLog) -> dict[str, dict[str, str]]:
    """`.item` -> {item_key: text fields}; a repeated item keeps its first row."""
    items: dict[str, dict[str, str]] = {}
    for header, lineno, row in _rows(path, (item_field,), rejects):
        if _blank(row, (item_field,)):
            rejects.add("missing_field", path, lineno, f"empty {item_field}", "\t".join(row.values()))
            continue
        key = row[item_field].strip()
        if key in items:
            continue
        fields = {}
        for field, aliases in ITEM_ALIASES.items():
            col = next((a for a in aliases if a in row), None)
            fields[field] = clean_text(row[col]) if col else ""
        items[key] = fields
    return items


def read_users(path: Path, user_field: str, rejects: RejectLog) -> dict[str, str]:
    """`.user` -> {user_key: text}, text = "column: value" for every token-typed column, joined
    with "; ". Column names are kept because bare values ("M; 25; 10") mean nothing to an LLM."""
    users: dict[str, str] = {}
    for header, lineno, row in _rows(path, (user_field,), rejects):
        if _blank(row, (user_field,)):
            rejects.add("missing_field", path, lineno, f"empty {user_field}", "\t".join(row.values()))
            continue
        key = row[user_field].strip()
        if key in users:
            continue
        parts = []
        for name, typ in zip(header.names, header.types):
            value = clean_text(row[name]) if name != user_field and typ in TEXT_TYPES else ""
            if value:
                parts.append(f"{name}: {value}")
        users[key] = "; ".join(parts)
    return users


def read_inter(
    path: Path,
    items: dict[str, object] | None,
    rejects: RejectLog,
    user_field: str,
    item_field: str,
    time_field: str,
    rating_field: str,
) -> InteractionBuilder:
    """`.inter` -> events. Without a timestamp column, the event's rank within its user in
    file order stands in for time. A bad rating keeps the event with a null rating."""
    builder = InteractionBuilder(path, rejects)
    rank: dict[str, int] = {}
    for header, lineno, row in _rows(path, (user_field, item_field), rejects):
        line = "\t".join(row.values())
        required = (user_field, item_field) + ((time_field,) if time_field in row else ())
        blank = _blank(row, required)
        if blank:
            rejects.add("missing_field", path, lineno, f"empty {', '.join(blank)}", line)
            continue
        user, item = row[user_field].strip(), row[item_field].strip()
        if time_field in row:
            ts = as_timestamp(row[time_field].strip())
            if ts is None:
                rejects.add("wrong_type", path, lineno, f"{time_field}={row[time_field]!r} is not a number", line)
                continue
        else:
            ts = rank.get(user, 0)
            rank[user] = ts + 1
        if items is not None and item not in items:
            rejects.add("unknown_id", path, lineno, f"item {item!r} is not in the .item file", line)
            continue
        rating = None
        if row.get(rating_field, "").strip():
            rating = as_rating(row[rating_field].strip())
            if rating is None:
                rejects.add("wrong_type", path, lineno, f"{rating_field}={row[rating_field]!r} is not a number; rating left empty", line, action="repaired")
        builder.add(user, item, ts, lineno, rating, clean_text(row.get("review")))
    return builder


def locate(path: str | Path, name: str | None = None) -> tuple[Path, str]:
    """The folder and dataset name from a folder (name inferred from its one `*.inter`) or
    from the `name.inter` file itself."""
    p = Path(path)
    if p.is_file() and p.suffix == ".inter":
        return p.parent, name or p.stem
    if not p.is_dir():
        raise DataError(f"RecBole folder not found: {p}")
    if name is None:
        found = sorted(q.stem for q in p.glob("*.inter"))
        if not found:
            raise DataError(f"no *.inter file in {p}; is this a RecBole atomic-file folder?")
        if len(found) > 1:
            raise DataError(f"several datasets in {p}: {found}; pass name=")
        name = found[0]
    return p, name


def read_recbole(
    path: str | Path,
    name: str | None = None,
    *,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str = "timestamp",
    rating_field: str = "rating",
) -> RawCorpus:
    """Read RecBole atomic files `name.inter` (required), `name.item`, `name.user`.

    The field names default to RecBole's; pass others when a dataset config renames them.
    Users and items absent from the optional files are still listed, with empty text.
    """
    folder, name = locate(path, name)
    rejects = RejectLog()
    inter_path = require_file(folder / f"{name}.inter", "RecBole .inter file")
    inputs = [inter_path]
    items = None
    item_path = folder / f"{name}.item"
    if item_path.is_file():
        items = read_items(item_path, item_field, rejects)
        inputs.append(item_path)
    users: dict[str, str] = {}
    user_path = folder / f"{name}.user"
    if user_path.is_file():
        users = read_users(user_path, user_field, rejects)
        inputs.append(user_path)

    builder = read_inter(inter_path, items, rejects, user_field, item_field, time_field, rating_field)
    require_rows(builder, str(inter_path))
    if items is None:
        items = {k: {} for k in builder.items()}
    for user in builder.users():
        users.setdefault(user, "")
    return RawCorpus(
        source="recbole",
        name=name,
        interactions=builder.finish(),
        items=items_table(items),
        users=users_table(users),
        rejects=rejects,
        inputs=inputs,
    )
