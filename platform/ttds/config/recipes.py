"""Recipes: named configurations kept as YAML files, one per ablation or benchmark system.

`jobs/train_ttds.py --ablation NAME` and `jobs/benchmark.py --systems NAME,...` read
`configs/recipes/NAME.yaml`; adding a file there adds a recipe, with no code to touch. A file:

    label: TTDS + item head            # the name results tables use
    kind: ttds                         # ttds (the TTDS job) | seq (a sequential baseline) | popularity | content (content kNN)
    model: sasrec                      # kind seq only: sasrec | gru4rec
    description: why this recipe exists (one paragraph)
    config:                            # kind ttds: TTDSJobConfig keys; kind seq: the model's config keys
      loss: {item_head_weight: 1.0}

Where the folder is found, first that exists: `$TTDS_RECIPES` (a folder), the repository's
`configs/recipes/` (a source checkout or an editable install), and `<prefix>/share/ttds/recipes`
(a wheel install: pyproject.toml ships the files there as data files).
Layering: defaults < `--config FILE` < the recipe's config < command-line overrides.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ttds.config.loader import ConfigError, from_dict, load_config, read_yaml
from ttds.config.schema import GRU4RecConfig, SASRecConfig, TTDSJobConfig, allowed

__all__ = ["RECIPES_ENV", "Recipe", "SEQ_MODELS", "list_recipes", "load_recipe", "recipe_names", "recipes_dir", "recipes_help"]

RECIPES_ENV = "TTDS_RECIPES"
RecipeKind = Literal["ttds", "seq", "popularity", "content"]
# a sequential baseline's name -> its config section
SEQ_MODELS: dict[str, type] = {"sasrec": SASRecConfig, "gru4rec": GRU4RecConfig}
_KEYS = {"label", "kind", "model", "description", "config"}


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: RecipeKind
    label: str
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # nested overrides of the kind's config
    model: str = ""  # kind seq: a key of SEQ_MODELS
    path: str = ""

    def ttds_config(self, overrides: list[str] | None = None, base: str | Path | None = None) -> TTDSJobConfig:
        """The TTDS job config of a `ttds` recipe: defaults < `base` YAML < recipe < `overrides`."""
        if self.kind != "ttds":
            raise ConfigError(f"recipe {self.name!r} is a {self.kind} recipe, not a TTDS job")
        return load_config(TTDSJobConfig, base, overrides, layers=[self.config])


def _candidates() -> list[Path]:
    out = []
    if os.environ.get(RECIPES_ENV):
        out.append(Path(os.environ[RECIPES_ENV]))
    out.append(Path(__file__).resolve().parents[3] / "configs" / "recipes")  # platform/ttds/config -> repository
    out.append(Path(sys.prefix) / "share" / "ttds" / "recipes")
    return out


def recipes_dir() -> Path:
    """The recipe folder in use (see the module docstring for the search order)."""
    for p in _candidates():
        if p.is_dir():
            return p
    raise ConfigError(f"no recipe folder found (looked in {', '.join(str(p) for p in _candidates())}); "
                      f"set {RECIPES_ENV} to a folder of recipe YAML files")


def _parse(name: str, path: Path) -> Recipe:
    data = read_yaml(path)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"recipe {path}: unknown key(s) {unknown}; known: {sorted(_KEYS)}")
    kind = data["kind"] if "kind" in data else "ttds"
    if kind not in allowed(RecipeKind):
        raise ConfigError(f"recipe {path}: kind={kind!r}: expected one of {', '.join(allowed(RecipeKind))}")
    config = data["config"] if data.get("config") is not None else {}
    if not isinstance(config, dict):
        raise ConfigError(f"recipe {path}: config must be a mapping of config keys")
    model = str(data["model"]) if "model" in data else (name if kind == "seq" else "")
    recipe = Recipe(name=name, kind=kind, label=str(data["label"]) if "label" in data else name,
                    description=" ".join(str(data["description"]).split()) if "description" in data else "",
                    config=config, model=model, path=str(path))
    try:  # a misspelt key or refused value fails when the recipe is read, not an hour into a run
        if kind == "ttds":
            recipe.ttds_config()
        elif kind == "seq":
            if model not in SEQ_MODELS:
                raise ConfigError(f"model={model!r}: expected one of {', '.join(SEQ_MODELS)}")
            from_dict(SEQ_MODELS[model], config)
        elif config:
            raise ConfigError(f"a {kind} recipe takes no config")
    except ConfigError as e:
        raise ConfigError([f"recipe {path}: {p}" for p in e.problems]) from None
    return recipe


def list_recipes(folder: str | Path | None = None) -> dict[str, Recipe]:
    """Every recipe of the folder, by name (the file name less `.yaml`), sorted."""
    d = Path(folder) if folder is not None else recipes_dir()
    return {p.stem: _parse(p.stem, p) for p in sorted(d.glob("*.yaml"), key=lambda p: p.stem)}


def recipe_names(kind: str | None = None, folder: str | Path | None = None) -> list[str]:
    """Names of the recipe files (only those of `kind` when given), without reading them all."""
    d = Path(folder) if folder is not None else recipes_dir()
    names = sorted(p.stem for p in d.glob("*.yaml"))  # by name: `ttds` before `ttds-dm`
    if kind is None:
        return names
    return [n for n in names if load_recipe(n, d).kind == kind]


def load_recipe(name: str, folder: str | Path | None = None) -> Recipe:
    """Recipe `name` of the folder, or a YAML file path (`my_recipes/x.yaml`)."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"recipe file {path} not found")
        return _parse(path.stem, path)
    d = Path(folder) if folder is not None else recipes_dir()
    path = d / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {name!r}; recipes in {d}: {', '.join(recipe_names(folder=d)) or 'none'}")
    return _parse(name, path)


def _first_sentence(text: str) -> str:
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def recipes_help(kind: str | None = None, width: int = 100) -> str:
    """One block per recipe (name, label, the description's first sentence) for a job's --help;
    the full descriptions are in docs/configuration.md."""
    import textwrap

    try:
        recipes = list_recipes()
    except ConfigError as e:
        return f"  (recipes unavailable: {e})"
    lines = [f"recipes in {recipes_dir()} (add a YAML file there for a new one):"]
    for name, r in recipes.items():
        if kind is not None and r.kind != kind:
            continue
        lines.append(f"  {name:<12} {r.label}" + (f" [{r.kind}{': ' + r.model if r.model and r.model != name else ''}]" if kind is None else ""))
        if r.description:
            lines += textwrap.wrap(_first_sentence(r.description), width=width, initial_indent=" " * 15, subsequent_indent=" " * 15)
    return "\n".join(lines)
