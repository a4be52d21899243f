"""The sweep definition: a YAML file with Tune settings, fixed config values and a search space.

Layout of the file (see configs/tune_default.yaml):

    tune:        TuneSettings (searcher, scheduler, samples, concurrency, ...)
    base:        a partial TTDSJobConfig mapping, fixed for every trial AND written to best.yaml
    sweep_only:  a partial TTDSJobConfig mapping applied to trials only (budget knobs such as
                 fewer test users), so best.yaml stays a config for a real training run
    space:       dotted TTDSJobConfig key -> parameter spec

Keys are checked against TTDSJobConfig when the file is read, so a typo fails before any trial
starts instead of after an hour of trials that silently ignored it.

A sweep's `target` is what each trial trains: `ttds` (the TTDS job, the file above) or a
sequential baseline (`sasrec`, `gru4rec`: `seq_sweep`), so the baselines get the same kind of
search on validation as TTDS (issue 31). A baseline sweep's `base` holds `model` (its config
section, e.g. SASRecConfig), `data.corpus`, `train` (TrainConfig) and `eval.exclude_seen`; its
space keys are the model config's (`SEQ_SPACE`: dropout, lr, width, weight average).
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ttds.config import SEQ_MODELS, ConfigError, TTDSJobConfig, TuneSettings, allowed, apply_overrides, from_dict, to_dict
from ttds.config.schema import TuneScheduler, TuneSearch

KINDS = ("choice", "grid", "uniform", "loguniform", "randint", "lograndint")
SEARCHERS = allowed(TuneSearch)
SCHEDULERS = allowed(TuneScheduler)
METRIC = "valid_NDCG@10"  # what the worker reports per epoch (ttds_worker.validate)


@dataclass
class ParamSpec:
    """One swept config key. `values` for choice/grid, `low`/`high` for ranges."""

    key: str
    kind: str
    values: list = field(default_factory=list)
    low: float | None = None
    high: float | None = None

    @property
    def log_scale(self) -> bool:
        return self.kind in ("loguniform", "lograndint")

    def to_tune(self):
        from ray import tune

        if self.kind == "choice":
            return tune.choice(self.values)
        if self.kind == "grid":
            return tune.grid_search(self.values)
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.kind == "randint":  # inclusive upper bound in the YAML, exclusive in Tune
            return tune.randint(int(self.low), int(self.high) + 1)
        return tune.lograndint(int(self.low), int(self.high) + 1)

    def describe(self) -> str:
        if self.kind in ("choice", "grid"):
            return f"{self.kind} {self.values}"
        return f"{self.kind} [{self.low}, {self.high}]"


# A baseline's default search space: the knobs the TTDS recipes were tuned on that SASRec/GRU4Rec
# share (dropout, lr, width, weight average), around SeqModelConfig's defaults.
SEQ_SPACE: dict[str, dict] = {
    "dropout": {"type": "uniform", "low": 0.1, "high": 0.5},
    "lr": {"type": "loguniform", "low": 3e-4, "high": 3e-3},
    "hidden": {"type": "choice", "values": [32, 64, 128]},
    "ema_epochs": {"type": "choice", "values": [0.0, 2.0, 5.0]},
}


@dataclass
class SweepSpec:
    tune: TuneSettings
    base: dict  # ttds: the full resolved TTDSJobConfig as a dict (defaults < YAML base < CLI pins); a baseline: see the module doc
    sweep_only: dict  # partial mapping layered over `base` for trials only
    space: dict[str, ParamSpec]
    target: str = "ttds"  # what a trial trains: "ttds" or a key of SEQ_MODELS

    @property
    def is_ttds(self) -> bool:
        return self.target == "ttds"

    def epochs(self, params: dict[str, Any] | None = None) -> int:
        """Epochs a trial plans (its sampled value when epochs are swept)."""
        key = "optim.epochs" if self.is_ttds else "epochs"
        if params and key in params:
            return int(params[key])
        return int(self.base["optim"]["epochs"] if self.is_ttds else self.base["model"]["epochs"])

    def max_epochs(self) -> int:
        swept = self.space.get("optim.epochs" if self.is_ttds else "epochs")
        return max(self.epochs(), *(swept.values or [swept.high])) if swept is not None else self.epochs()

    def trial_config(self, params: dict[str, Any], output_dir: str):
        """The config one trial trains with: base, sweep-only knobs, then its sampled values
        (a TTDSJobConfig, or the baseline's model config)."""
        if not self.is_ttds:
            return from_dict(SEQ_MODELS[self.target], {**merge(self.base, self.sweep_only)["model"], **params})
        return build_config(merge(self.base, self.sweep_only), params, output_dir)

    def final_config(self, params: dict[str, Any]):
        """The config to re-train the winner with: no sweep-only knobs, no output folder."""
        if not self.is_ttds:
            return from_dict(SEQ_MODELS[self.target], {**self.base["model"], **params})
        return build_config(self.base, params, "")

    def to_yaml_dict(self) -> dict:
        """What `load_sweep` reads back (written into the sweep folder, used by --resume)."""
        return {
            "tune": to_dict(self.tune),
            "base": self.base,
            "sweep_only": self.sweep_only,
            "space": {k: _spec_dict(s) for k, s in self.space.items()},
            **({} if self.is_ttds else {"target": self.target}),
        }


def _spec_dict(s: ParamSpec) -> dict:
    if s.kind in ("choice", "grid"):
        return {"type": s.kind, "values": list(s.values)}
    return {"type": s.kind, "low": s.low, "high": s.high}


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (extra or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def config_keys(target: str = "ttds") -> dict[str, Any]:
    """Every dotted leaf key of the target's config (TTDSJobConfig, or a baseline's) with its default value."""
    out: dict[str, Any] = {}
    if target != "ttds":
        return dict(to_dict(SEQ_MODELS[target]()))

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v

    walk(to_dict(TTDSJobConfig()), "")
    return out


def set_dotted(data: dict, key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value


def build_config(base: dict, params: dict[str, Any], output_dir: str) -> TTDSJobConfig:
    data = copy.deepcopy(base)
    for key, value in params.items():
        set_dotted(data, key, value)
    data["output_dir"] = output_dir
    return from_dict(TTDSJobConfig, data)


def parse_param(key: str, raw: Any, target: str = "ttds") -> ParamSpec:
    """A spec from YAML: a mapping {type, values | low, high}, or a bare list (= choice)."""
    known = config_keys(target)
    if key not in known:
        close = difflib.get_close_matches(key, list(known), n=3)
        hint = f" (did you mean {close}?)" if close else ""
        what = "TTDSJobConfig" if target == "ttds" else SEQ_MODELS[target].__name__
        raise ConfigError(f"space: {key!r} is not a {what} key{hint}")
    if key in ("output_dir", "data.corpus") or (target != "ttds" and key == "seed"):
        raise ConfigError(f"space: {key!r} cannot be swept (each trial's output folder, the corpus and a baseline's seed are fixed)")
    if isinstance(raw, list):
        raw = {"type": "choice", "values": raw}
    if not isinstance(raw, dict) or "type" not in raw:
        raise ConfigError(f"space.{key}: expected a list or a mapping with 'type' (one of {KINDS}), got {raw!r}")
    kind = raw["type"]
    if kind not in KINDS:
        raise ConfigError(f"space.{key}: type {kind!r} is not one of {KINDS}")
    extra = set(raw) - {"type", "values", "low", "high"}
    if extra:
        raise ConfigError(f"space.{key}: unknown field(s) {sorted(extra)}")
    if kind in ("choice", "grid"):
        values = raw.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"space.{key}: {kind} needs a non-empty 'values' list")
        return ParamSpec(key, kind, values=values)
    try:
        low, high = float(raw["low"]), float(raw["high"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"space.{key}: {kind} needs numeric 'low' and 'high'") from None
    if not low < high or (kind.startswith("log") and low <= 0) or math.isinf(high):
        raise ConfigError(f"space.{key}: need 0 < low < high for log scales and low < high otherwise, got {low}, {high}")
    return ParamSpec(key, kind, low=low, high=high)


def parse_grid_arg(arg: str) -> ParamSpec:
    """`--grid index.levels=3,4,5` on the command line: a grid over the listed values."""
    if "=" not in arg:
        raise ConfigError(f"--grid {arg!r} must look like KEY=v1,v2,...")
    key, raw = arg.split("=", 1)
    values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
    return parse_param(key, {"type": "grid", "values": values})


def load_sweep(
    path: str | Path | None,
    pins: list[str] | None = None,
    grids: list[str] | None = None,
    tune_overrides: dict[str, Any] | None = None,
) -> SweepSpec:
    """Read the sweep YAML, then apply command-line changes.

    `pins` are `--section.key=value` strings: fixed values for every trial; a pinned key is
    removed from the space (pinning is how a user narrows a sweep without editing the YAML).
    `grids` are `KEY=v1,v2` strings that replace (or add) a key's spec with a grid; they are
    applied after the pins, so a key both pinned and gridded is swept.
    """
    raw: dict = {}
    if path:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the sweep file must hold a mapping")
    unknown = set(raw) - {"tune", "base", "sweep_only", "space"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; expected tune, base, sweep_only, space")
    tune_data = {**(raw.get("tune") or {}), **{k: v for k, v in (tune_overrides or {}).items() if v is not None}}
    settings = from_dict(TuneSettings, tune_data, "tune.")
    base = merge(to_dict(TTDSJobConfig()), raw.get("base") or {})
    base = apply_overrides(base, pins or [])
    from_dict(TTDSJobConfig, base)  # reject bad keys / types now
    base = to_dict(from_dict(TTDSJobConfig, base))  # normalised types (CLI strings -> ints)
    sweep_only = raw.get("sweep_only") or {}
    from_dict(TTDSJobConfig, merge(base, sweep_only))
    space = {k: parse_param(k, v) for k, v in (raw.get("space") or {}).items()}
    for pin in pins or []:
        space.pop(pin.lstrip("-").split("=", 1)[0], None)
    for g in grids or []:  # after the pins: an explicit --grid on the command line wins
        spec = parse_grid_arg(g)
        space[spec.key] = spec
    validate_settings(settings, space)
    return SweepSpec(settings, base, sweep_only, space)


def validate_settings(t: TuneSettings, space: dict[str, ParamSpec]) -> None:
    """The settings against the space (TuneSettings checks its own values as it is built)."""
    grids = [k for k, s in space.items() if s.kind == "grid"]
    if grids and t.search != "random":
        raise ConfigError(f"grid parameters {grids} only work with --search random; use 'choice' for {t.search}")
    if not space:
        raise ConfigError("the search space is empty: add entries under 'space:' or use --grid KEY=v1,v2")


def count_trials(spec: SweepSpec) -> int:
    n = spec.tune.num_samples
    for s in spec.space.values():
        if s.kind == "grid":
            n *= len(s.values)
    return n


def param_space(spec: SweepSpec) -> dict:
    """Tune's param_space: flat dotted keys (searchers handle flat spaces best)."""
    return {k: s.to_tune() for k, s in spec.space.items()}


def seq_sweep(model: str, corpus: str, overrides: dict, train: dict, exclude_seen: bool, settings: TuneSettings,
              space: dict[str, Any] | None = None, sweep_only: dict | None = None) -> SweepSpec:
    """A sweep of baseline `model` (sasrec | gru4rec) on validation: `overrides` are its fixed
    config keys (recipe, budget, seed), `train` a TrainConfig dict, `space` YAML-style specs
    (default `SEQ_SPACE`). Keys of `space` drop out of `overrides`' fixed values."""
    if model not in SEQ_MODELS:
        raise ConfigError(f"a baseline sweep trains one of {', '.join(SEQ_MODELS)}, not {model!r}")
    specs = {k: parse_param(k, v, model) for k, v in (SEQ_SPACE if space is None else space).items()}
    base_model = to_dict(from_dict(SEQ_MODELS[model], overrides))
    base = {"model": base_model, "data": {"corpus": corpus, "seed": 0}, "train": dict(train), "eval": {"exclude_seen": bool(exclude_seen)}}
    validate_settings(settings, specs)
    spec = SweepSpec(settings, base, sweep_only or {}, specs, target=model)
    spec.trial_config({k: _sample_value(s) for k, s in specs.items()}, "")  # a refused value (heads vs width) fails now
    return spec


def ttds_sweep(config: dict, settings: TuneSettings, space: dict[str, Any], sweep_only: dict | None = None) -> SweepSpec:
    """A TTDS sweep from a resolved TTDSJobConfig dict (the benchmark's system config) and a space."""
    base = to_dict(from_dict(TTDSJobConfig, {**config, "output_dir": ""}))
    specs = {k: parse_param(k, v) for k, v in space.items()}
    validate_settings(settings, specs)
    return SweepSpec(settings, base, sweep_only or {}, specs)


def _sample_value(s: ParamSpec) -> Any:
    """One legal value of a spec (for checking a config before any trial)."""
    if s.kind in ("choice", "grid"):
        return s.values[0]
    return int(s.low) if s.kind in ("randint", "lograndint") else s.low
