"""The sweep definition: a YAML file with Tune settings, fixed config values and a search space.

Layout of the file (see configs/tune_default.yaml):

    tune:        TuneSettings (searcher, scheduler, samples, concurrency, ...)
    base:        a partial TTDSJobConfig mapping, fixed for every trial AND written to best.yaml
    sweep_only:  a partial TTDSJobConfig mapping applied to trials only (budget knobs such as
                 fewer test users), so best.yaml stays a config for a real training run
    space:       dotted TTDSJobConfig key -> parameter spec

Keys are checked against TTDSJobConfig when the file is read, so a typo fails before any trial
starts instead of after an hour of trials that silently ignored it.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ttds.config import ConfigError, TTDSJobConfig, TuneSettings, allowed, apply_overrides, from_dict, to_dict
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


@dataclass
class SweepSpec:
    tune: TuneSettings
    base: dict  # the full resolved TTDSJobConfig as a dict (defaults < YAML base < CLI pins)
    sweep_only: dict  # partial mapping layered over `base` for trials only
    space: dict[str, ParamSpec]

    def trial_config(self, params: dict[str, Any], output_dir: str) -> TTDSJobConfig:
        """The config one trial trains with: base, sweep-only knobs, then its sampled values."""
        return build_config(merge(self.base, self.sweep_only), params, output_dir)

    def final_config(self, params: dict[str, Any]) -> TTDSJobConfig:
        """The config to re-train the winner with: no sweep-only knobs, no output folder."""
        return build_config(self.base, params, "")

    def to_yaml_dict(self) -> dict:
        """What `load_sweep` reads back (written into the sweep folder, used by --resume)."""
        return {
            "tune": to_dict(self.tune),
            "base": self.base,
            "sweep_only": self.sweep_only,
            "space": {k: _spec_dict(s) for k, s in self.space.items()},
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


def config_keys() -> dict[str, Any]:
    """Every dotted leaf key of TTDSJobConfig with its default value."""
    out: dict[str, Any] = {}

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


def parse_param(key: str, raw: Any) -> ParamSpec:
    """A spec from YAML: a mapping {type, values | low, high}, or a bare list (= choice)."""
    known = config_keys()
    if key not in known:
        close = difflib.get_close_matches(key, list(known), n=3)
        hint = f" (did you mean {close}?)" if close else ""
        raise ConfigError(f"space: {key!r} is not a TTDSJobConfig key{hint}")
    if key in ("output_dir", "data.corpus"):
        raise ConfigError(f"space: {key!r} cannot be swept (each trial's output folder and the corpus are fixed)")
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
