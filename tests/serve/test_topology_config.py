"""`ttds.serve.app.set_topology`: the shipped config turned into each topology and back, as
docs/serving.md says to do by hand (no Ray needed: config dicts only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ttds.serve.app import INGRESS_KEYS, MODEL_PLACEMENT, set_topology

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def shipped() -> dict:
    return yaml.safe_load((ROOT / "serve_apps" / "config.yaml").read_text())["applications"][0]


def by_name(app: dict) -> dict[str, dict]:
    return {d["name"]: d for d in app["deployments"]}


def test_shipped_config_is_single(shipped):
    """The shipped topology holds the model in the Ingress, with the model's placement (two replicas)."""
    assert shipped["args"]["topology"] == "single"
    ingress = by_name(shipped)["Ingress"]
    assert list(by_name(shipped)) == ["Ingress"]
    assert {"beam_width", "num_threads", "admission", "model_dir"} <= set(ingress["user_config"])
    assert ingress["autoscaling_config"]["min_replicas"] == 2
    assert set_topology(shipped, "single") == shipped


@pytest.mark.parametrize("topology", ["fused", "composed"])
def test_split_and_fold_back(shipped, topology):
    split = set_topology(shipped, topology)
    deps = by_name(split)
    assert split["args"]["topology"] == topology
    assert list(deps) == ["Ingress", "Ranker", *(["UserEncoder"] if topology == "composed" else [])]
    ingress, ranker = deps["Ingress"], deps["Ranker"]
    # the Ingress is model-free: its own keys only, the code's CPUs and replica counts
    assert set(ingress["user_config"]) == set(INGRESS_KEYS)
    assert not set(MODEL_PLACEMENT) & set(ingress)
    assert ingress["max_ongoing_requests"] == 1024  # its request limits stay
    # the Ranker has the model's keys and placement
    model_keys = set(by_name(shipped)["Ingress"]["user_config"]) - {"admission", "health_details"}
    assert set(ranker["user_config"]) == model_keys
    assert ranker["autoscaling_config"] == by_name(shipped)["Ingress"]["autoscaling_config"]
    if topology == "composed":
        assert deps["UserEncoder"]["user_config"] == {k: ranker["user_config"][k] for k in ("model_dir", "num_threads")}
    assert set_topology(split, "single") == shipped  # and back: exactly the shipped config
    assert set_topology(set_topology(split, "fused"), topology) == split


def test_bad_topology_or_config_is_refused(shipped):
    with pytest.raises(ValueError, match="topology must be one of"):
        set_topology(shipped, "sharded")
    with pytest.raises(ValueError, match="no Ingress"):
        set_topology({**shipped, "deployments": []}, "fused")
