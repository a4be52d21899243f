"""Corpus readers: one per source format, all returning a `RawCorpus` with bad input counted
in its `RejectLog` (see `ttds.data.rejects` for the kinds), never raised record by record."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ttds.data.raw import RawCorpus
from ttds.data.readers.amazon import read_amazon
from ttds.data.readers.lcrec import read_lcrec
from ttds.data.readers.recbole import read_recbole
from ttds.data.rejects import DataError

READERS: dict[str, Callable[..., RawCorpus]] = {
    "lcrec": read_lcrec,  # path: folder with X.inter.json; kw: name
    "amazon": read_amazon,  # path: reviews .json(.gz); kw: meta, name
    "recbole": read_recbole,  # path: folder with name.inter; kw: name, *_field
}


def read_corpus(source: str, path: str | Path, **kw: Any) -> RawCorpus:
    """Read a corpus of format `source` ("lcrec" | "amazon" | "recbole") from `path`.

    An unknown source is a DataError, not a KeyError: it usually comes from a user's config.
    """
    try:
        reader = READERS[source]
    except KeyError:
        raise DataError(f"unknown corpus source {source!r}; expected one of {sorted(READERS)}") from None
    return reader(path, **kw)


__all__ = ["READERS", "read_amazon", "read_corpus", "read_lcrec", "read_recbole"]
