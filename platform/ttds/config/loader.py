"""Dataclass configs: YAML files plus `--section.key=value` overrides, one config per job.

Every job resolves its config the same way (defaults < YAML file < recipe < command line) and
writes the resolved config next to its outputs, with the `config_version` it was written at
(`ttds.config.migrate`), so any run can be repeated exactly and an older file still loads.

Unknown keys are refused by name; a value is converted to its field's declared type
(`Literal` fields accept only their listed values), and each section checks its own values when
it is built (`ttds.config.schema`), so a typo fails before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ttds.config.migrate import CONFIG_VERSION, VERSION_KEY, migrate

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value the user can fix; jobs print it without a traceback.

    `problems` holds one message per problem, so a section's complaints can be reported under
    its dotted name and every problem of a config is reported at once, not the first only."""

    def __init__(self, message: str | list[str]):
        self.problems = list(message) if isinstance(message, list) else [message]
        super().__init__("; ".join(self.problems))


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert YAML/CLI values to the field's declared type, with a clear error if impossible."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return _literal(value, typing.get_args(tp), where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        last: ConfigError | None = None
        for a in args:
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                last = e
        raise last or ConfigError(f"{where}: cannot use {value!r}")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, f"{where}.")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        try:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    if tp is str:
        return str(value)
    return value


def _literal(value: Any, allowed: tuple, where: str) -> Any:
    """`value` as one of a Literal's values: YAML/CLI text is parsed (`2` -> 2) and a YAML
    boolean matches the strings "true"/"false" (`reencode_text: true` in a file)."""
    if value in allowed and type(value) in {type(a) for a in allowed}:
        return value
    candidates = [value]
    if isinstance(value, bool):
        candidates.append(str(value).lower())
    if isinstance(value, str):
        try:
            candidates.append(yaml.safe_load(value))
        except yaml.YAMLError:
            pass
    for c in candidates:
        for a in allowed:
            if c == a and type(c) is type(a):
                return a
    raise ConfigError(f"{where}={value!r}: expected one of {', '.join(str(a) for a in allowed)}")


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys by name.

    Fields absent from `data` take their defaults; a section's own check (its `__post_init__`)
    runs as it is built, and its complaint is reported under the section's dotted name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {sorted(f'{where}{k}' for k in unknown)}; known keys here: {sorted(types_)}"
        )
    kwargs, problems = {}, []
    for k, v in data.items():
        try:
            kwargs[k] = _coerce(v, types_[k], f"{where}{k}")
        except ConfigError as e:
            problems += e.problems
    required = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in data
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        problems.append(f"missing config key(s) {[f'{where}{k}' for k in required]}")
    if required:
        raise ConfigError(problems)
    try:
        built = cls(**kwargs)  # defaults (nested sections: default_factory) for the rest
    except ConfigError as e:  # the section's own check: its keys under the section's name
        problems += [f"{where}{p}" for p in e.problems]
    if problems:  # every problem at once (a value refused above was left at its default here)
        raise ConfigError(problems)
    return built


def to_dict(cfg: Any) -> dict:
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings to a nested dict (values parsed as YAML scalars)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like --section.key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a config section")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"unknown config key {key!r}; known keys here: {sorted(node)}")
        node[parts[-1]] = raw
    return data


def read_yaml(path: str | Path) -> dict:
    """A YAML file that must hold a mapping (a config file or a recipe)."""
    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the config file must hold a mapping")
    return loaded


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None, layers: list[dict] | tuple = ()
) -> T:
    """Defaults, then the YAML file at `path`, then each mapping of `layers` (a recipe's
    config), then `--a.b=c` overrides.

    A file that carries `config_version` (every config.yaml a run saved) is brought to the
    current version first (`ttds.config.migrate`); a file without one is read as written for
    the current version (a hand-written file states what its author wants today)."""
    data = _defaults(cls)
    if path:
        loaded = read_yaml(path)
        if VERSION_KEY in loaded:
            loaded = migrate(loaded, loaded.pop(VERSION_KEY))
        data = _merge(data, loaded)
    for layer in layers:
        data = _merge(data, layer)
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def load_saved(cls: type[T], data: dict) -> T:
    """A config a run saved (config.yaml's mapping, a model's ttds.json "config"), migrated from
    the version it was written at; a saved config without a version predates versions (0)."""
    data = dict(data)
    return from_dict(cls, migrate(data, data.pop(VERSION_KEY, 0)))


def _defaults(cls: type) -> dict:
    """The defaults of `cls` as a dict; a class with required fields (BenchConfig) has only its defaulted ones."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = to_dict(f.default_factory())
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config, stamped with the config version it was written at."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({VERSION_KEY: CONFIG_VERSION, **to_dict(cfg)}, f, sort_keys=False)


def job_argparser(description: str, epilog: str = "") -> argparse.ArgumentParser:
    """The shared CLI shape: `--config FILE` plus any number of `--section.key=value`."""
    p = argparse.ArgumentParser(
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML file with config values (overridden by --section.key=value)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def parse_job_args(
    parser: argparse.ArgumentParser, cls: type[T], argv: list[str] | None = None, layers: list[dict] | tuple = ()
) -> tuple[argparse.Namespace, T]:
    """Parse the job's own flags; the rest are `--section.key=value` overrides on top of
    `--config FILE` and `layers` (a recipe). Bad input exits with argparse's usage error."""
    args, rest = parser.parse_known_args(argv)
    bad = [r for r in rest if not (r.startswith("--") and "=" in r)]
    if bad:
        parser.error(f"unrecognised arguments {bad}; config overrides look like --section.key=value")
    try:
        cfg = load_config(cls, args.config, rest, layers)
    except ConfigError as e:
        parser.error(str(e))
    if args.print_config:
        print(yaml.safe_dump({VERSION_KEY: CONFIG_VERSION, **to_dict(cfg)}, sort_keys=False))
        raise SystemExit(0)
    return args, cfg


def describe_fields(cls: type, prefix: str = "") -> str:
    """One line per config key with its default, for --help epilogs (docs/configuration.md
    has the full reference: `python -m ttds.config.reference`)."""
    lines = []
    types_ = _field_types(cls)
    default = _defaults(cls)
    for f in dataclasses.fields(cls):
        if _is_dataclass_type(types_[f.name]):
            lines.append(describe_fields(types_[f.name], f"{prefix}{f.name}."))
        elif f.name in default:
            lines.append(f"  --{prefix}{f.name}={default[f.name]!r}")
        else:
            lines.append(f"  --{prefix}{f.name}=(required)")
    return "\n".join(lines)
