"""Reader for the raw Amazon Review Data (2018): `<Category>.json.gz` + `meta_<Category>.json.gz`.

Both files are JSON lines (gzipped or not); old dumps hold Python dict literals instead,
which `parse_record` accepts. As in the LC-Rec preprocessing, items are defined by the
metadata: when a meta file is given, reviews of items without metadata are `unknown_id`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ttds.data.raw import RawCorpus
from ttds.data.readers._common import (
    InteractionBuilder,
    as_rating,
    as_timestamp,
    clean_text,
    items_table,
    iter_lines,
    parse_record,
    require_file,
    require_rows,
    users_table,
)
from ttds.data.rejects import RejectLog

REQUIRED_REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime")


def category_name(path: str | Path) -> str:
    """`Musical_Instruments_5.json.gz` -> `Musical_Instruments_5` (the dataset name)."""
    name = Path(path).name
    for suffix in (".gz", ".json", ".jsonl"):
        name = name.removesuffix(suffix)
    return name


def _key(value: Any) -> str | None:
    """An id as a non-empty string; None for anything else (lists, dicts, empty)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    key = str(value).strip()
    return key or None


def read_meta(path: str | Path, rejects: RejectLog) -> dict[str, dict[str, str]]:
    """`meta_<Category>.json(.gz)` -> {asin: text fields}.

    The 2018 dumps repeat some asins; the first entry is kept. 2014 dumps call the category
    field `categories` (a list of lists); both spellings are read.
    """
    items: dict[str, dict[str, str]] = {}
    for lineno, line in iter_lines(path):
        rejects.seen += 1
        rec = parse_record(line)
        if rec is None:
            rejects.add("malformed_json", path, lineno, "not a JSON object (nor a Python dict literal)", line)
            continue
        if rec.get("asin") in (None, ""):
            rejects.add("missing_field", path, lineno, "no asin", line)
            continue
        asin = _key(rec["asin"])
        if asin is None:
            rejects.add("wrong_type", path, lineno, f"asin {rec['asin']!r} is not a string", line)
            continue
        if asin in items:
            continue
        items[asin] = {
            "title": clean_text(rec.get("title")),
            "description": clean_text(rec.get("description"), ", "),
            "brand": clean_text(rec.get("brand")),
            "categories": clean_text(rec.get("category", rec.get("categories")), ","),
        }
    return items


def review_text(rec: dict[str, Any]) -> str:
    """summary + ". " + reviewText, cleaned; no doubled stop when the summary already ends one."""
    summary, text = clean_text(rec.get("summary")), clean_text(rec.get("reviewText"))
    if summary and text:
        return f"{summary} {text}" if summary[-1] in ".!?" else f"{summary}. {text}"
    return summary or text


def read_reviews(path: str | Path, items: dict[str, Any] | None, rejects: RejectLog) -> InteractionBuilder:
    """Review lines -> events. A bad `overall` keeps the event with a null rating ("repaired"):
    the interaction itself is sound and ratings are secondary here."""
    builder = InteractionBuilder(path, rejects)
    for lineno, line in iter_lines(path):
        rejects.seen += 1
        rec = parse_record(line)
        if rec is None:
            rejects.add("malformed_json", path, lineno, "not a JSON object (nor a Python dict literal)", line)
            continue
        missing = [f for f in REQUIRED_REVIEW_FIELDS if rec.get(f) in (None, "")]
        if missing:
            rejects.add("missing_field", path, lineno, f"no {', '.join(missing)}", line)
            continue
        user, item, ts = _key(rec["reviewerID"]), _key(rec["asin"]), as_timestamp(rec["unixReviewTime"])
        if user is None or item is None or ts is None:
            bad = [f for f, v in zip(REQUIRED_REVIEW_FIELDS, (user, item, ts)) if v is None]
            rejects.add("wrong_type", path, lineno, "; ".join(f"{f}={rec[f]!r} is not {'an integer time' if f == 'unixReviewTime' else 'a string'}" for f in bad), line)
            continue
        if items is not None and item not in items:
            rejects.add("unknown_id", path, lineno, f"asin {item!r} has no metadata entry", line)
            continue
        rating = None
        if rec.get("overall") not in (None, ""):
            rating = as_rating(rec["overall"])
            if rating is None:
                rejects.add("wrong_type", path, lineno, f"overall={rec['overall']!r} is not a number; rating left empty", line, action="repaired")
        builder.add(user, item, ts, lineno, rating, review_text(rec))
    return builder


def read_amazon(reviews: str | Path, meta: str | Path | None = None, name: str | None = None) -> RawCorpus:
    """Read an Amazon 2018 category: reviews (required) and metadata (optional).

    Without metadata the items table lists the reviewed asins with empty text.
    """
    rejects = RejectLog()
    reviews_path = require_file(reviews, "Amazon reviews file")
    inputs = [reviews_path]
    items = None
    if meta is not None:
        meta_path = require_file(meta, "Amazon metadata file")
        items = read_meta(meta_path, rejects)
        inputs.append(meta_path)
    builder = read_reviews(reviews_path, items, rejects)
    require_rows(builder, str(reviews_path))
    if items is None:
        items = {k: {} for k in builder.items()}
    return RawCorpus(
        source="amazon",
        name=name or category_name(reviews_path),
        interactions=builder.finish(),
        items=items_table(items),
        users=users_table(dict.fromkeys(builder.users(), "")),
        rejects=rejects,
        inputs=inputs,
    )
