"""The systems the benchmark can train and test, by name.

- `popularity`, `sasrec`, `gru4rec`, `content-knn`: the baselines of `ttds.baselines` (content kNN:
  text cosine to the history, no training; the cold-item baseline);
- every key of `ttds.configs.ABLATIONS` (`ttds`, `tiger`, `ttss`, `stds`, `ttds-dm`, `ttds-ho`,
  `m3`, `m5`): the TTDS job with that ablation's overrides (`tiger` = static index, no user
  tower, no DM-VAE, no high-order tasks: the TIGER-style static semantic-ID recommender);
- `<ttds-family>-retrieval` (e.g. `ttds-retrieval`): the model trained for `<ttds-family>`,
  ranked by the generative-retrieval fast path (`ttds.decode.retrieval`) instead of beam
  search. It adds its base system to the run, trained with `loss.retrieval_weight` > 0.
- `<ttds-family>@<index.kind>` (e.g. `ttds@moc`, `tiger@lsh`): that system with another ID
  scheme (`index.kind`: rq, kway_masked, moc, lsh, random, precomputed), so one run puts the
  schemes side by side in one table. `ttds@moc-retrieval` works too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ttds.configs import ABLATIONS
from ttds.index.kinds import INDEX_KINDS

__all__ = ["BASELINES", "System", "known_systems", "resolve_systems"]

BASELINES = ("popularity", "sasrec", "gru4rec", "content-knn")
RETRIEVAL_SUFFIX = "-retrieval"
KIND_SEP = "@"

LABELS = {
    "popularity": "Popularity",
    "sasrec": "SASRec",
    "gru4rec": "GRU4Rec",
    "content-knn": "Content kNN (text cosine)",
    "ttds": "TTDS",
    "tiger": "TIGER-style (static IDs)",
    "ttss": "TTSS (static index)",
    "stds": "STDS (no user tower)",
    "ttds-dm": "TTDS w/o DM-VAE",
    "ttds-ho": "TTDS w/o high-order tasks",
    "ttds-uid": "TTDS, user ID in next-item prompts",
    "ttds-ih": "TTDS + item head (ranked by it)",
    "ttds-ihe": "TTDS + item head + item input vectors",
    "m3": "TTDS M=3",
    "m5": "TTDS M=5",
}


@dataclass(frozen=True)
class System:
    name: str
    kind: str  # "popularity" | "seq" (SASRec/GRU4Rec) | "content" (content kNN) | "ttds" (TTDS job + ablation) | "retrieval"
    ablation: str = ""  # ABLATIONS key (kind "ttds")
    base: str = ""  # kind "retrieval": the TTDS-family system whose model it ranks with
    implied: bool = False  # added because a retrieval system needs it, not asked for
    index_kind: str = ""  # kind "ttds": an `index.kind` other than the ablation's own ("" = its own)

    @property
    def label(self) -> str:
        if self.kind == "retrieval":
            return f"{_family_label(self.base)} retrieval fast path"
        return _family_label(self.name)

    @property
    def trains(self) -> bool:
        return self.kind in ("seq", "ttds")


def known_systems() -> list[str]:
    return [*BASELINES, *ABLATIONS, *(f"{a}{RETRIEVAL_SUFFIX}" for a in ABLATIONS),
            *(f"ttds{KIND_SEP}{k}" for k in INDEX_KINDS)]


def _ttds_family(name: str) -> tuple[str, str] | None:
    """(ablation, index kind) of a TTDS-family name (`ttds`, `tiger@moc`), else None."""
    ablation, sep, index_kind = name.partition(KIND_SEP)
    if ablation not in ABLATIONS or (sep and index_kind not in INDEX_KINDS):
        return None
    return ablation, index_kind


def _family_label(name: str) -> str:
    ablation, sep, index_kind = name.partition(KIND_SEP)
    base = LABELS.get(ablation, ablation)
    return f"{base}, index.kind={index_kind}" if sep else base


def _one(name: str) -> System:
    if name == "popularity":
        return System(name, "popularity")
    if name in ("sasrec", "gru4rec"):
        return System(name, "seq")
    if name == "content-knn":
        return System(name, "content")
    family = _ttds_family(name)
    if family is not None:
        return System(name, "ttds", ablation=family[0], index_kind=family[1])
    if name.endswith(RETRIEVAL_SUFFIX) and _ttds_family(name[: -len(RETRIEVAL_SUFFIX)]) is not None:
        return System(name, "retrieval", base=name[: -len(RETRIEVAL_SUFFIX)])
    hint = f" (index kinds after '{KIND_SEP}': {', '.join(INDEX_KINDS)})" if KIND_SEP in name else ""
    raise ValueError(f"unknown system {name!r}; known: {', '.join(known_systems())}{hint}")


def resolve_systems(names: list[str]) -> list[System]:
    """Systems in run order: each retrieval system right after its base (added if missing)."""
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError("no systems given")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"systems named twice: {dupes}")
    asked = [_one(n) for n in names]
    out: list[System] = []
    have = {s.name for s in asked}
    for s in asked:
        if s.kind == "retrieval":
            continue
        out.append(s)
    for s in asked:
        if s.kind != "retrieval":
            continue
        if s.base not in have:
            out.append(dataclasses.replace(_one(s.base), implied=True))
            have.add(s.base)
        pos = max(i for i, o in enumerate(out) if o.name == s.base or o.base == s.base)
        out.insert(pos + 1, s)
    return out


def retrieval_bases(systems: list[System]) -> set[str]:
    """TTDS-family systems whose model a retrieval system ranks with (trained with the loss)."""
    return {s.base for s in systems if s.kind == "retrieval"}
