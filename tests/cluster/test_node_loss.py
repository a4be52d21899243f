"""A node (a whole raylet, not a worker process) disappears from a multi-node Ray cluster.

Each scenario (tests/cluster/node_loss.py) starts its own cluster of three raylets on
127.0.0.1 (`ray.cluster_utils.Cluster`) in a child process, so the session's shared Ray is
untouched. The corpus folder is read by Ray Data from a path every node sees (one machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
EPOCHS = 8  # node_loss.EPOCHS


def run_scenario(name: str, work: Path, corpus: Path, timeout: int = 900) -> dict:
    # the scenario reuses the serve tests' model builder and deploy helpers: the child finds them
    # (and serve_apps at the repository root) on PYTHONPATH, as pytest's own `pythonpath` does
    root = HERE.parents[1]
    path = os.pathsep.join([str(root), str(root / "tests"), str(root / "tests" / "serve"), os.environ.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, str(HERE / "node_loss.py"), name, str(work), str(corpus)],
                       capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": path})
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert r.returncode == 0 and lines, f"scenario {name} failed (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_training_resumes_after_losing_a_node(synthetic_corpus, tmp_path):
    got = run_scenario("train", tmp_path, synthetic_corpus)
    assert got["remover_error"] is None and got["removed"] is not None, got
    # the two ranks ran on two different raylets, and one of them was removed
    assert len(set(got["removed"]["rank_nodes"].values())) == 2, got["removed"]
    assert got["alive_nodes"] == 2
    # the run finished every epoch, restarted from the checkpoint it had (not from scratch)
    assert got["epochs_run"] == EPOCHS
    assert got["removed"]["epoch"] < EPOCHS - 1  # removed mid-run
    assert got["resumed_from_epoch"] >= got["removed"]["epoch"] >= 0, got  # not from scratch


@pytest.mark.slow
def test_serving_keeps_answering_after_losing_a_node(synthetic_corpus, tmp_path):
    got = run_scenario("serve", tmp_path, synthetic_corpus)
    assert len(got["replica_nodes"]) == 2, got  # one Ranker replica per worker raylet
    # before the loss every request is answered: a 200, or on a CPU-starved CI box a few retryable
    # JSON 503s (admission's answer to a request that cannot start in time), never an error
    assert got["before"] > 0 and got["before_ok"] + got["before_retryable"] == got["before"], got
    assert got["before_retryable"] <= 0.05 * got["before"], got
    # requests in flight on the removed node may fail: counted, and bounded
    assert got["after"] > 0 and got["after"] - got["after_ok"] <= max(4, 0.2 * got["after"]), got
    # once Serve has noticed, the surviving replica answers everything
    assert got["late"] > 0 and got["late_ok"] == got["late"], got
