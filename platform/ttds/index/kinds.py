"""`index.kind`: which ID scheme a run uses, and how a learned tower of that kind is built.

Learned kinds (rq, kway_masked, moc) train a tower with the same interface, so the tokenizer
job, the joint TTDS training (dynamic re-index) and serving differ only in the tower class
built here. Static kinds (lsh, random, precomputed) assign codes without training. Every
kind's codes go through the same collision suffixes (`SemanticIDTable.from_codes`), so final
IDs are unique whatever the scheme.

A tower config dict carries its kind (`"kind": "moc"`); a dict without one is RQ, which is
how configs saved before this module existed still load.
"""

from __future__ import annotations

from typing import Any

from ttds.index.kway import KWayConfig, KWayTokenizer
from ttds.index.moc import MoCConfig, MoCTokenizer
from ttds.index.rq import RQConfig, RQTokenizer

__all__ = ["LEARNED_KINDS", "STATIC_KINDS", "INDEX_KINDS", "tower_config_from_dict", "build_tower", "tower_kind"]

LEARNED_KINDS = ("rq", "kway_masked", "moc")
STATIC_KINDS = ("lsh", "random", "precomputed")
INDEX_KINDS = LEARNED_KINDS + STATIC_KINDS

_CONFIGS: dict[str, type[RQConfig]] = {"rq": RQConfig, "kway_masked": KWayConfig, "moc": MoCConfig}
_TOWERS: dict[type[RQConfig], type[RQTokenizer]] = {RQConfig: RQTokenizer, KWayConfig: KWayTokenizer, MoCConfig: MoCTokenizer}


def tower_kind(config: RQConfig | dict[str, Any]) -> str:
    """The learned kind of a tower config (object or dict); RQ when it names none."""
    if isinstance(config, dict):
        return str(config.get("kind", "rq"))
    return str(getattr(config, "kind", "rq"))


def tower_config_from_dict(d: dict[str, Any] | RQConfig) -> RQConfig:
    """The config object of a tower dict, by its `kind` (YAML/JSON round trip)."""
    if isinstance(d, RQConfig):
        return d
    kind = tower_kind(d)
    if kind not in _CONFIGS:
        raise ValueError(f"tower kind must be one of {LEARNED_KINDS}, got {kind!r}")
    fields = dict(d)
    if kind == "rq":
        fields.pop("kind", None)
    return _CONFIGS[kind](**fields)


def build_tower(config: RQConfig) -> RQTokenizer:
    """A fresh tower of the config's kind (every one is an `RQTokenizer` by interface)."""
    return _TOWERS[type(config)](config)
