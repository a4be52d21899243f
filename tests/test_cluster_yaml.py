"""cluster.yaml is a config `ray up` accepts, and so are the variants its comments describe.

Validation goes through Ray's own launcher code (`prepare_config` fills in the provider's
defaults exactly as `ray up` does, then `validate_config` checks the JSON schema shipped in
ray/autoscaler/ray-schema.json and the node-type rules). Nothing here touches a cloud or the
network: the provider-specific bootstrap (AWS API calls) is the only step of `ray up` left out.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

import ray.autoscaler
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def commented_block(name: str) -> dict:
    """The YAML written in comments between `# --- <name> (begin) ---` and `(end)` markers."""
    text = CLUSTER_YAML.read_text()
    m = re.search(rf"^\s*# --- {re.escape(name)} \(begin\) ---\n(.*?)^\s*# --- {re.escape(name)} \(end\) ---", text, re.M | re.S)
    assert m, f"cluster.yaml has no commented block '{name}' (the docs and this test rely on it)"
    body = "\n".join(re.sub(r"^\s*# ?", "", line) for line in m.group(1).splitlines())
    block = yaml.safe_load(body)
    assert isinstance(block, dict) and block, f"block '{name}' is not a YAML mapping:\n{body}"
    return block


def launcher_accepts(cfg: dict) -> dict:
    """What `ray up` does before it talks to the provider; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def all_commands(cfg: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    return [c for k in keys for c in cfg.get(k) or []]


def test_matches_the_schema_ray_ships(config):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(config, schema)


def test_ray_up_accepts_it(config):
    prepared = launcher_accepts(config)
    assert prepared["cluster_name"] == "ttds"
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"] == "us-west-2"
    assert prepared["provider"]["cache_stopped_nodes"] is True
    assert prepared["idle_timeout_minutes"] > 0


def test_gpu_workers_autoscale_from_zero(config):
    types = config["available_node_types"]
    gpu = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu, "no worker type offers GPUs"
    for name, t in gpu.items():
        assert name != config["head_node_type"]
        assert t["min_workers"] == 0 < t["max_workers"], f"{name} does not scale from 0"
    assert max(t["max_workers"] for t in gpu.values()) >= 4, "`--train.num_workers=4` needs 4 GPUs"
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert sum(t.get("max_workers", 0) for t in workers) <= config["max_workers"]


def test_head_runs_no_tasks(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert "GPU" not in head["resources"]


def test_setup_installs_the_project_with_its_gpu_extra(config):
    assert config["file_mounts"]["~/ttds"] == "."
    setup = config["setup_commands"]
    assert any(re.search(r"pip install -e \"\$HOME/ttds\[gpu\]\"", c) for c in setup), setup
    assert any("-m ttds.warmup" in c for c in setup), setup
    install = next(i for i, c in enumerate(setup) if "ttds[gpu]" in c)
    warmup = next(i for i, c in enumerate(setup) if "ttds.warmup" in c)
    assert install < warmup


def test_no_tilde_inside_quotes(config):
    # bash leaves "~/x" unexpanded: pip would look for a folder literally named "~"
    for cmd in all_commands(config):
        assert not re.search(r"[\"']~", cmd), cmd


def test_start_commands(config):
    head = config["head_start_ray_commands"]
    worker = config["worker_start_ray_commands"]
    assert head[0] == "ray stop" and worker[0] == "ray stop"
    start = " ".join(head[1:])
    for flag in ("ray start --head", "--port=6379", "--dashboard-host=0.0.0.0", "--autoscaling-config=~/ray_bootstrap_config.yaml"):
        assert flag in start, f"head start lacks {flag}: {start}"
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(worker[1:])
    # the dashboard listens on 0.0.0.0: every node runs Ray with token authentication
    for cmd in (start, " ".join(worker[1:])):
        assert "RAY_AUTH_MODE=token" in cmd
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_uploads_leave_out_local_state(config):
    excluded = set(config["rsync_exclude"])
    assert {".venv", "runs"} <= excluded
    assert ".gitignore" in config["rsync_filter"]


def test_on_prem_variant_is_valid(config):
    block = commented_block("on-prem variant")
    assert block["provider"]["type"] == "local"
    assert block["auth"]["ssh_user"]
    # the steps the comment lists: swap provider/auth, drop the AWS node types, boto3 and max_workers
    onprem = copy.deepcopy(config)
    onprem.pop("available_node_types")
    onprem.pop("head_node_type")
    onprem["head_setup_commands"] = [c for c in onprem["head_setup_commands"] if "boto3" not in c]
    onprem.update(block)

    jsonschema.validate(onprem, json.loads(SCHEMA.read_text()))
    prepared = launcher_accepts(onprem)
    n_ips = len(block["provider"]["worker_ips"])
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == n_ips == prepared["max_workers"]
    assert prepared["setup_commands"] == config["setup_commands"]


def test_p4d_variant_is_valid(config):
    block = commented_block("p4d worker group")
    ((name, group),) = block.items()
    assert group["resources"]["GPU"] == 8 and group["min_workers"] == 0
    big = copy.deepcopy(config)
    big["available_node_types"][name] = group
    launcher_accepts(big)


def test_shared_storage_variant_is_valid(config):
    block = commented_block("shared storage")
    cmds = block["initialization_commands"]
    assert any("mount -t nfs4" in c and "/mnt/cluster_storage" in c for c in cmds), cmds
    shared = copy.deepcopy(config)
    shared.update(block)
    launcher_accepts(shared)


def test_docker_option_is_valid(config):
    block = commented_block("docker option")
    assert block["docker"]["image"].startswith("rayproject/") and block["docker"]["image"].endswith("-gpu")
    assert "2.60.0" in block["docker"]["image"]
    docked = copy.deepcopy(config)
    docked.update(block)
    prepared = launcher_accepts(docked)
    assert prepared["docker"]["container_name"]
