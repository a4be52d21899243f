"""Older saved configs and model folders, brought to the current config version.

Every config a run saves (config.yaml of a job, the "config" of a model's ttds.json, and the
model's ttds.json itself) carries `config_version`. A field added to a config later is absent
from files written before it; read naively, it would take today's default, which is not always
what those runs did (`optim.lr_schedule` defaults to cosine, but runs before it kept the rate
constant). So each version step lists the fields it added with their *earlier behaviour*, and
`migrate` fills them into an older file, step by step, before it is loaded.

This is the one place such "what did it do before this field" values live: the benchmark's
run keys (`ttds.bench.run_keys`: may an earlier folder be reused?), job configs read back and
model folders (`ttds.llm.model_io`) all read them from here.

Adding a config field: bump CONFIG_VERSION, and add a step `{new version: {dotted path: value
that reproduces what runs did before the field}}` (the default, when nothing changes).
This module imports nothing from ttds (the config package is the bottom layer).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["CONFIG_VERSION", "VERSION_KEY", "earlier_behaviour", "migrate", "migrate_model_meta"]

VERSION_KEY = "config_version"

# Version 1 is the first written into files; files without a version are version 0. Its step
# holds every field added before versions existed (they were kept in three places before).
CONFIG_VERSION = 2

# version -> {dotted path in a job config (TTDSJobConfig / TokenizerJobConfig): earlier behaviour}
STEPS: dict[int, dict[str, Any]] = {
    1: {
        "index.reindex_rule": "fresh",  # re-indexing took the towers' codes as they were
        "tasks.user_id_in_next_item": True,  # next-item prompts carried the user's ID
        "loss.item_head_weight": 0.0,  # no item head
        "eval.rank_by": "beam",  # ranked by beam search
        "optim.lr_schedule": "constant",  # NOT the default (cosine): runs before it kept lr fixed
        "optim.min_lr_ratio": 0.1,  # read only by cosine; its default, so a constant run matches
        "backbone.dropout": 0.0,
        "backbone.item_embedding": "none",  # prompts carried the code tokens only
        "loss.label_smoothing": 0.0,
        "eval.exclude_seen": False,  # every item was ranked
        "optim.ema_decay": 0.0,  # the live weights were validated and kept
        "optim.ema_epochs": 0.0,  # the average's span was given by ema_decay only
        "loss.item_head_negatives": 0,  # the item head took the full softmax
        "train.log_every": 100,  # the TTDS worker's progress line every 100 steps
    },
    2: {
        "tasks.instruction_words": True,  # prompts carried the templates' words
        "optim.length_group_steps": 1,  # batches in data order
        "train.deepspeed_when_alone": True,  # one worker stepped through DeepSpeed ZeRO too
        "eval.new_item_share": 0.0,  # beam search gave added items no slots (plain search)
    },
}

# version -> {key of a model folder's ttds.json: earlier behaviour}
MODEL_STEPS: dict[int, dict[str, Any]] = {
    1: {
        "next_item_user_id": True,  # models saved before it was recorded always carried the user ID
        "exclude_seen": False,  # selected with every item ranked
        "retrieval_pool": "mean",  # the fast path mean-pooled the prompt (ttds.rank.retrieval)
        "rank_by": "beam",  # selected (and evaluated by default) with beam search
    },
}


def earlier_behaviour(since: int = 0) -> dict[str, Any]:
    """{dotted path: earlier behaviour} of every job-config field added after version `since`."""
    out: dict[str, Any] = {}
    for version in sorted(STEPS):
        if version > since:
            out.update(STEPS[version])
    return out


def _check_version(version: Any, what: str) -> int:
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError(f"{what}: {VERSION_KEY}={version!r} is not a version number")
    if version > CONFIG_VERSION:
        raise ValueError(f"{what} was written by a newer ttds ({VERSION_KEY}={version}, this one reads up to "
                         f"{CONFIG_VERSION}): upgrade ttds to read it")
    return version


def migrate(data: dict, version: Any) -> dict:
    """A job config (nested dict) written at `version`, with every field added since filled
    with its earlier behaviour. Only sections the file has are filled (a partial file stays
    partial); a field the file sets is never changed. Returns a new dict."""
    version = _check_version(version, "config")
    out = copy.deepcopy(data)
    for path, value in earlier_behaviour(version).items():
        *sections, key = path.split(".")
        node = out
        for s in sections:
            node = node.get(s) if isinstance(node, dict) else None  # a section the file lacks: nothing to fill
            if node is None:
                break
        if isinstance(node, dict) and key not in node:
            node[key] = copy.deepcopy(value)
    return out


def migrate_model_meta(meta: dict) -> dict:
    """A model folder's ttds.json at the current version: its own added keys filled, and its
    "config" (the job config it was trained with) migrated. Returns a new dict."""
    version = _check_version(meta[VERSION_KEY] if VERSION_KEY in meta else 0, "ttds.json")  # absent: before versions
    out = copy.deepcopy(meta)
    for v in sorted(MODEL_STEPS):
        if v > version:
            for key, value in MODEL_STEPS[v].items():
                out.setdefault(key, copy.deepcopy(value))
    if isinstance(out.get("config"), dict):  # absent in hand-made test folders
        cfg = dict(out["config"])
        out["config"] = migrate(cfg, cfg.pop(VERSION_KEY) if VERSION_KEY in cfg else version)
    out[VERSION_KEY] = CONFIG_VERSION
    return out
