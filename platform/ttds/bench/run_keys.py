"""Which earlier benchmark run a re-run may reuse: config keys that survive new config fields.

The harness reuses a system's folder when the system's resolved config is the one that made it,
checked by a hash of the config ("key"). A plain hash breaks every earlier folder as soon as the
platform gains a config field, although the new field set to what the platform did before it existed changes
nothing: a user upgrading ttds would retrain hours of TTDS runs for nothing. So each folder also
keeps the config its key was made from (`key.json`: {"key", "keyed"}), and a changed key is still
reusable when the new config differs from the stored one only by fields the stored one lacks,
each at its value in `BEFORE_ADDED`. Anything else (a changed value, a removed field, a new field
at another value, a new field not registered there) is a different run.

`BEFORE_ADDED` holds each added field's *earlier behaviour*, which is not always its default:
`optim.lr_schedule` defaults to cosine, but runs made before it existed used a constant rate, so
only `constant` matches them. It is the config's own migration table (`ttds.config.migrate`):
a field added to a config is registered there once, with its version step, and old folders,
old config files and old model folders all follow (unregistered: old folders retrain, the safe side).

Folders written before `keyed` was stored: a TTDS system's keyed config is its result.json config
less the harness's own additions; it is used only if it hashes to the stored key, so a
reconstruction that is not exact never reuses anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ttds.config.migrate import earlier_behaviour

__all__ = ["BEFORE_ADDED", "KEY_FILE", "NO_EFFECT", "config_key", "differs_only_by_added", "keyed_of_folder", "plain", "write_key_file"]

KEY_FILE = "key.json"
# what the harness adds to a TTDS system's result config beside the keyed config
_RESULT_ONLY = ("ablation", "ablation_overrides", "tokenizer_dir", "index_kind")  # index_kind: older harness versions

# dotted path in a keyed config -> the value that reproduces what runs did before the field existed
BEFORE_ADDED: dict[str, Any] = earlier_behaviour()
# in a `before` table: the field changes nothing for this kind of system, so any value matches
# (e.g. train.deepspeed_when_alone for a baseline, which never trains through DeepSpeed)
NO_EFFECT = object()


def plain(obj: Any) -> Any:
    """`obj` as JSON gives it back (tuples -> lists, paths -> str): stored and fresh configs compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def config_key(keyed: dict) -> str:
    return hashlib.sha1(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_key_file(sysdir: Path, keyed: dict) -> None:
    (sysdir / KEY_FILE).write_text(json.dumps({"key": config_key(keyed), "keyed": plain(keyed)}, default=str))


def keyed_of_folder(sysdir: Path) -> dict | None:
    """The config an existing folder's key was made from, or None when it cannot be known exactly."""
    try:
        stored = json.loads((sysdir / KEY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(stored.get("keyed"), dict):
        return stored["keyed"]
    try:  # an older folder: only a TTDS system's result config holds its keyed config
        config = json.loads((sysdir / "result.json").read_text())["entry"]["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    keyed = {k: v for k, v in config.items() if k not in _RESULT_ONLY}
    return keyed if config_key(keyed) == stored.get("key") else None


def differs_only_by_added(old: Any, new: Any, before: dict[str, Any] | None = None, prefix: str = "") -> bool:
    """True when `new` is `old` plus fields `old` lacks, each at its `before` value (default `BEFORE_ADDED`).

    `old` and `new` are plain (JSON) values; `before` is keyed by dotted path from the top.
    """
    before = BEFORE_ADDED if before is None else before
    if isinstance(old, dict) and isinstance(new, dict):
        if set(old) - set(new):
            return False  # a field the platform no longer has: not the same run
        for k, v in new.items():
            path = f"{prefix}{k}"
            if k in old:
                if not differs_only_by_added(old[k], v, before, f"{path}."):
                    return False
            elif path not in before or (before[path] is not NO_EFFECT and plain(before[path]) != v):
                return False
        return True
    return old == new
