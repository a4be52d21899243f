"""The systems the benchmark can train and test, by name: the recipes of `configs/recipes/`.

- every recipe file (`ttds.config.recipes`): `popularity`, `sasrec`, `gru4rec` (kind
  `popularity` / `seq`: the baselines of `ttds.baselines`), and the TTDS family (kind `ttds`:
  `ttds`, `tiger`, `ttss`, `stds`, `ttds-dm`, `ttds-ho`, `ttds-uid`, `m3`, `m5`, `ttds-ih`,
  `ttds-ihe`: the TTDS job with the recipe's config; `tiger` = static index, no user tower, no
  DM-VAE, no high-order tasks: the TIGER-style static semantic-ID recommender). A new recipe
  file is a new system;
- `<ttds-family>-retrieval` (e.g. `ttds-retrieval`): the model trained for `<ttds-family>`,
  ranked by the generative-retrieval fast path (`ttds.rank.retrieval`) instead of beam
  search. It adds its base system to the run, trained with `loss.retrieval_weight` > 0.
- `<ttds-family>@<index.kind>` (e.g. `ttds@moc`, `tiger@lsh`): that system with another ID
  scheme (`index.kind`: rq, kway_masked, moc, lsh, random, precomputed), so one run puts the
  schemes side by side in one table. `ttds@moc-retrieval` works too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ttds.config import IndexKind, allowed, list_recipes, load_recipe
from ttds.config.recipes import Recipe

__all__ = ["System", "known_systems", "resolve_systems", "retrieval_bases"]

RETRIEVAL_SUFFIX = "-retrieval"
KIND_SEP = "@"
INDEX_KINDS = allowed(IndexKind)


@dataclass(frozen=True)
class System:
    name: str
    kind: str  # "popularity" | "seq" (SASRec/GRU4Rec) | "content" (content kNN) | "ttds" (TTDS job + recipe) | "retrieval"
    ablation: str = ""  # kind "ttds": its recipe's name (configs/recipes/<ablation>.yaml)
    base: str = ""  # kind "retrieval": the TTDS-family system whose model it ranks with
    implied: bool = False  # added because a retrieval system needs it, not asked for
    index_kind: str = ""  # kind "ttds": an `index.kind` other than the recipe's own ("" = its own)
    model: str = ""  # kind "seq": the baseline model (sasrec | gru4rec) its recipe trains
    recipe_label: str = ""  # the recipe's label (results tables)
    recipe_path: str = ""  # a recipe file that replaces the named one (the confirmatory protocol's frozen, tuned recipe)

    @property
    def recipe(self) -> Recipe:
        """The recipe this system runs (kind ttds: its ablation's; seq/popularity: its own; a frozen file when set)."""
        return load_recipe(self.recipe_path or self.ablation or self.name)

    @property
    def label(self) -> str:
        return self.recipe_label or self.name

    @property
    def trains(self) -> bool:
        return self.kind in ("seq", "ttds")


def known_systems() -> list[str]:
    """Every recipe, then the retrieval variant of each TTDS-family recipe and `ttds@<kind>`."""
    recipes = list_recipes()
    family = [n for n, r in recipes.items() if r.kind == "ttds"]
    return [*recipes, *(f"{a}{RETRIEVAL_SUFFIX}" for a in family), *(f"ttds{KIND_SEP}{k}" for k in INDEX_KINDS)]


def _family_label(name: str, recipes: dict[str, Recipe]) -> str:
    recipe, sep, index_kind = name.partition(KIND_SEP)
    base = recipes[recipe].label if recipe in recipes else recipe
    return f"{base}, index.kind={index_kind}" if sep else base


def _one(name: str, recipes: dict[str, Recipe]) -> System:
    recipe, sep, index_kind = name.partition(KIND_SEP)
    if recipe in recipes and not sep:
        r = recipes[recipe]
        if r.kind == "popularity":
            return System(name, "popularity", recipe_label=r.label)
        if r.kind == "seq":
            return System(name, "seq", model=r.model, recipe_label=r.label)
        if r.kind == "content":
            return System(name, "content", recipe_label=r.label)
    if recipe in recipes and recipes[recipe].kind == "ttds" and (not sep or index_kind in INDEX_KINDS):
        return System(name, "ttds", ablation=recipe, index_kind=index_kind, recipe_label=_family_label(name, recipes))
    if name.endswith(RETRIEVAL_SUFFIX):
        base = _one(name[: -len(RETRIEVAL_SUFFIX)], recipes) if name[: -len(RETRIEVAL_SUFFIX)].partition(KIND_SEP)[0] in recipes else None
        if base is not None and base.kind == "ttds":
            return System(name, "retrieval", base=base.name, recipe_label=f"{base.recipe_label} retrieval fast path")
    hint = f" (index kinds after '{KIND_SEP}': {', '.join(INDEX_KINDS)})" if KIND_SEP in name else ""
    raise ValueError(f"unknown system {name!r}; known: {', '.join(known_systems())}{hint} "
                     "(a system is a recipe file in configs/recipes/)")


def resolve_systems(names: list[str]) -> list[System]:
    """Systems in run order: each retrieval system right after its base (added if missing)."""
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError("no systems given")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"systems named twice: {dupes}")
    recipes = list_recipes()
    asked = [_one(n, recipes) for n in names]
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
            out.append(dataclasses.replace(_one(s.base, recipes), implied=True))
            have.add(s.base)
        pos = max(i for i, o in enumerate(out) if o.name == s.base or o.base == s.base)
        out.insert(pos + 1, s)
    return out


def retrieval_bases(systems: list[System]) -> set[str]:
    """TTDS-family systems whose model a retrieval system ranks with (trained with the loss)."""
    return {s.base for s in systems if s.kind == "retrieval"}
