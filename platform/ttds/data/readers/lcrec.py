"""Reader for LC-Rec format folders (`X.inter.json`, `X.item.json`, `X.index.json`, maps).

LC-Rec files are already preprocessed (k-core, dedup, time-sorted), so they carry no
timestamps: an event's timestamp is its position in the user's list, which keeps the order
preparation will sort by. Item keys are the LC-Rec integer ids written as strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ttds.data.raw import RawCorpus
from ttds.data.readers._common import (
    InteractionBuilder,
    clean_text,
    excerpt,
    items_table,
    iter_json_object,
    iter_lines,
    require_file,
    require_rows,
    users_table,
)
from ttds.data.rejects import DataError, RejectLog

INTER_SUFFIX = ".inter.json"


def locate(path: str | Path, name: str | None = None) -> tuple[Path, str]:
    """The folder and dataset name from a folder (name inferred from its one `*.inter.json`)
    or from the `X.inter.json` file itself."""
    p = Path(path)
    if p.is_file() and p.name.endswith(INTER_SUFFIX):
        return p.parent, name or p.name[: -len(INTER_SUFFIX)]
    if not p.is_dir():
        raise DataError(f"LC-Rec folder not found: {p}")
    if name is None:
        found = sorted(q.name[: -len(INTER_SUFFIX)] for q in p.glob(f"*{INTER_SUFFIX}"))
        if not found:
            raise DataError(f"no *{INTER_SUFFIX} file in {p}; is this an LC-Rec folder?")
        if len(found) > 1:
            raise DataError(f"several datasets in {p}: {found}; pass name=")
        name = found[0]
    return p, name


def _int_key(key: str) -> str | None:
    """The canonical id string of an integer key ("007" -> "7"), None when not an integer."""
    try:
        return str(int(key))
    except ValueError:
        return None


def _read_items(path: Path, rejects: RejectLog) -> dict[str, dict[str, str]]:
    """`X.item.json` -> {item_key: text fields}. Missing text fields are empty, not rejects:
    many real items lack a description or brand. A repeated id keeps its first entry."""
    items: dict[str, dict[str, str]] = {}
    for key, value, line in iter_json_object(path):
        rejects.seen += 1
        item = _int_key(key)
        if item is None:
            rejects.add("wrong_type", path, line, f"item id {key!r} is not an integer", {key: value})
            continue
        if not isinstance(value, dict):
            rejects.add("wrong_type", path, line, f"item {key!r}: expected an object of text fields, got {type(value).__name__}", {key: value})
            continue
        if item in items:
            continue
        items[item] = {
            "title": clean_text(value.get("title")),
            "description": clean_text(value.get("description"), ", "),
            "brand": clean_text(value.get("brand")),
            "categories": clean_text(value.get("categories"), ","),
        }
    return items


def _read_index(path: Path, rejects: RejectLog) -> dict[str, list[str]]:
    """`X.index.json` -> {item_key: tokens}; an entry that is not a list of strings is dropped."""
    index: dict[str, list[str]] = {}
    for key, value, line in iter_json_object(path):
        rejects.seen += 1
        item = _int_key(key)
        if item is None:
            rejects.add("wrong_type", path, line, f"item id {key!r} is not an integer", {key: value})
        elif not (isinstance(value, list) and value and all(isinstance(t, str) for t in value)):
            rejects.add("wrong_type", path, line, f"item {key!r}: tokens must be a non-empty list of strings", {key: value})
        else:
            index[item] = value
    return index


def check_id_map(path: Path, rejects: RejectLog) -> int:
    """Validate an `X.item2id` / `X.user2id` file (`KEY<TAB>int` lines); returns good lines.

    The maps only link LC-Rec ids back to Amazon keys, which nothing downstream needs, so
    they are checked (a broken map hints at a broken export) but not returned.
    """
    good = 0
    for lineno, line in iter_lines(path):
        rejects.seen += 1
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            rejects.add("missing_field", path, lineno, "expected KEY<TAB>id", line)
        elif _int_key(parts[1].strip()) is None:
            rejects.add("wrong_type", path, lineno, f"id {parts[1]!r} is not an integer", line)
        else:
            good += 1
    return good


def _read_inter(path: Path, known_items: dict[str, Any] | None, rejects: RejectLog) -> InteractionBuilder:
    """`X.inter.json` -> events; timestamp = position in the user's list."""
    builder = InteractionBuilder(path, rejects)
    for user, seq, line in iter_json_object(path):
        if not isinstance(seq, list):
            rejects.seen += 1
            rejects.add("wrong_type", path, line, f"user {user!r}: expected a list of item ids, got {type(seq).__name__}", {user: seq})
            continue
        if not seq:
            rejects.seen += 1
            rejects.add("empty_sequence", path, line, f"user {user!r} has no interactions", {user: seq})
            continue
        if set(map(type, seq)) == {int}:  # the fast path: a clean list (bools are not ints here)
            keys = list(map(str, seq))
            if known_items is None or known_items.keys() >= set(keys):
                builder.extend(user, keys, range(len(keys)), line)
                rejects.seen += len(keys)
                continue
        for pos, item in enumerate(seq):
            rejects.seen += 1
            if not isinstance(item, int) or isinstance(item, bool):
                rejects.add("wrong_type", path, line, f"user {user!r}, position {pos}: item id {item!r} is not an integer", excerpt({user: seq}))
            elif known_items is not None and str(item) not in known_items:
                rejects.add("unknown_id", path, line, f"user {user!r}, position {pos}: item {item} is not in the item file", excerpt({user: seq}))
            else:
                builder.add(user, str(item), pos, line)
    return builder


def read_lcrec(path: str | Path, name: str | None = None) -> RawCorpus:
    """Read an LC-Rec folder. `X.inter.json` is required; `X.item.json` (item text),
    `X.index.json` (precomputed semantic IDs) and `X.item2id`/`X.user2id` are optional.

    Without `X.item.json` the items table lists the ids found in the interactions, with empty
    text; with it, interactions on items missing from it are `unknown_id`.
    """
    folder, name = locate(path, name)
    rejects = RejectLog()
    inter_path = require_file(folder / f"{name}{INTER_SUFFIX}", "LC-Rec interaction file")
    inputs = [inter_path]

    items = None
    item_path = folder / f"{name}.item.json"
    if item_path.is_file():
        items = _read_items(item_path, rejects)
        inputs.append(item_path)
    index = None
    index_path = folder / f"{name}.index.json"
    if index_path.is_file():
        index = _read_index(index_path, rejects)
        inputs.append(index_path)
    for suffix in (".item2id", ".user2id"):
        map_path = folder / f"{name}{suffix}"
        if map_path.is_file():
            check_id_map(map_path, rejects)
            inputs.append(map_path)

    builder = _read_inter(inter_path, items, rejects)
    require_rows(builder, str(inter_path))
    if items is None:
        items = {k: {} for k in sorted(builder.items(), key=int)}
    return RawCorpus(
        source="lcrec",
        name=name,
        interactions=builder.finish(),
        items=items_table(items),
        users=users_table(dict.fromkeys(builder.users(), "")),
        precomputed_index=index,
        rejects=rejects,
        inputs=inputs,
    )
