"""Older saved configs and model folders load as the runs that wrote them behaved.

Why: a field added later takes today's default when an older file lacks it, and today's default
is not always what those runs did (`optim.lr_schedule`: cosine now, constant before it existed)."""

import json

import pytest
import yaml

from ttds.config import (
    CONFIG_VERSION,
    VERSION_KEY,
    TTDSJobConfig,
    earlier_behaviour,
    load_config,
    load_saved,
    migrate,
    migrate_model_meta,
    to_dict,
)


def _old_config() -> dict:
    """A config.yaml as written before versions: without the fields added since."""
    data = to_dict(TTDSJobConfig())
    for path in earlier_behaviour():
        section, key = path.split(".")
        del data[section][key]
    return data


def test_a_config_from_before_versions_gets_the_earlier_behaviour(tmp_path):
    cfg = load_saved(TTDSJobConfig, _old_config())
    assert cfg.optim.lr_schedule == "constant" and cfg.tasks.user_id_in_next_item is True
    assert cfg.backbone.item_embedding == "none" and cfg.eval.rank_by == "beam"
    path = tmp_path / "config.yaml"  # the same file stamped version 0 loads the same through load_config
    path.write_text(yaml.safe_dump({VERSION_KEY: 0, **_old_config()}))
    assert load_config(TTDSJobConfig, path) == cfg


def test_a_current_file_and_a_hand_written_file_are_not_changed(tmp_path):
    current = {VERSION_KEY: CONFIG_VERSION, "optim": {"epochs": 2}}
    assert migrate({"optim": {"epochs": 2}}, CONFIG_VERSION) == {"optim": {"epochs": 2}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"optim": {"epochs": 2}}))  # no version: written for today's defaults
    assert load_config(TTDSJobConfig, path).optim.lr_schedule == "cosine"
    path.write_text(yaml.safe_dump(current))
    assert load_config(TTDSJobConfig, path).optim.lr_schedule == "cosine"


def test_migration_fills_only_missing_keys_of_sections_the_file_has():
    out = migrate({"optim": {"lr_schedule": "cosine"}}, 0)
    assert out["optim"]["lr_schedule"] == "cosine" and out["optim"]["ema_decay"] == 0.0
    assert "index" not in out  # a partial file stays partial


def test_a_newer_or_broken_version_is_refused():
    with pytest.raises(ValueError, match="newer ttds"):
        migrate({}, CONFIG_VERSION + 1)
    with pytest.raises(ValueError, match="not a version number"):
        migrate({}, "one")


def test_model_meta_of_an_older_folder():
    meta = {"epoch": 2, "max_history": 20, "config": _old_config()}
    out = migrate_model_meta(meta)
    assert out[VERSION_KEY] == CONFIG_VERSION
    assert (out["next_item_user_id"], out["exclude_seen"], out["retrieval_pool"], out["rank_by"]) == (True, False, "mean", "beam")
    assert out["config"]["optim"]["lr_schedule"] == "constant"
    newer = migrate_model_meta({VERSION_KEY: CONFIG_VERSION, "next_item_user_id": False, "config": to_dict(TTDSJobConfig())})
    assert newer["next_item_user_id"] is False and newer["config"]["optim"]["lr_schedule"] == "cosine"
    assert json.loads(json.dumps(out)) == out


def test_the_benchmark_run_keys_read_the_same_table():
    from ttds.bench.run_keys import BEFORE_ADDED

    assert BEFORE_ADDED == earlier_behaviour()
    for path in earlier_behaviour():  # every registered field exists in today's schema
        section, key = path.split(".")
        assert key in to_dict(TTDSJobConfig())[section]
