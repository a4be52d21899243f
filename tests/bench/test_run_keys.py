"""Which earlier run a benchmark re-run may reuse when the platform has gained config fields."""

from __future__ import annotations

import json

from ttds.bench.run_keys import config_key, differs_only_by_added, keyed_of_folder, write_key_file

BEFORE = {"eval.exclude_seen": False, "optim.lr_schedule": "constant"}


def test_added_fields_match_only_at_their_earlier_behaviour():
    old = {"eval": {"beam": 20}, "optim": {"lr": 1e-3}}
    assert differs_only_by_added(old, {"eval": {"beam": 20, "exclude_seen": False}, "optim": {"lr": 1e-3}}, BEFORE)
    assert not differs_only_by_added(old, {"eval": {"beam": 20, "exclude_seen": True}, "optim": {"lr": 1e-3}}, BEFORE)
    # the default of a new field is not enough: the earlier runs must have behaved like it
    assert not differs_only_by_added(old, {"eval": {"beam": 20}, "optim": {"lr": 1e-3, "lr_schedule": "cosine"}}, BEFORE)
    assert not differs_only_by_added(old, {"eval": {"beam": 20, "unknown_new": 0}, "optim": {"lr": 1e-3}}, BEFORE)  # unregistered
    assert not differs_only_by_added(old, {"eval": {"beam": 40}, "optim": {"lr": 1e-3}}, BEFORE)  # a changed value
    assert not differs_only_by_added(old, {"eval": {"beam": 20}}, BEFORE)  # a removed section
    assert differs_only_by_added(old, old, {})


def test_keyed_config_of_new_and_older_folders(tmp_path):
    keyed = {"optim": {"lr": 1e-3}, "eval": {"beam": 20}}
    new = tmp_path / "new"
    new.mkdir()
    write_key_file(new, keyed)
    assert keyed_of_folder(new) == keyed

    older = tmp_path / "older"  # key.json with the hash only; the config is in result.json
    older.mkdir()
    (older / "key.json").write_text(json.dumps({"key": config_key(keyed)}))
    (older / "result.json").write_text(json.dumps({"entry": {"config": {**keyed, "ablation": "ttds", "ablation_overrides": []}}}))
    assert keyed_of_folder(older) == keyed
    # a result config that does not hash to the stored key (a baseline's, or edited) tells nothing
    (older / "key.json").write_text(json.dumps({"key": "0123456789abcdef"}))
    assert keyed_of_folder(older) is None
    assert keyed_of_folder(tmp_path / "missing") is None
