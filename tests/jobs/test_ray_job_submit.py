"""`ray job submit` of the training job against a local cluster started with `ray start`.

The cluster runs in its own process group and is torn down by killing that group only:
`ray stop` would kill every Ray on the machine, including other test sessions' clusters.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def local_cluster(tmp_path):
    gcs, dash, agent = free_port(), free_port(), free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}", "--num-cpus=2", "--object-store-memory=300000000"],
        env=env, start_new_session=True, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the local Ray head did not open its dashboard within 120 s:\n" + (tmp_path / "head.log").read_text()[-2000:])
        yield url, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


@pytest.mark.slow
def test_train_ttds_through_ray_job_submit(local_cluster, synthetic_corpus, tmp_path):
    url, env = local_cluster
    out = tmp_path / "run"
    cmd = [RAY, "job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
           sys.executable, "jobs/train_ttds.py", f"--data.corpus={synthetic_corpus}", f"--output_dir={out}",
           "--optim.epochs=1", "--index.epochs=2", "--index.codebook_size=16", "--index.code_dim=16", "--index.hidden_dims=[32]",
           "--index.levels=3", "--index.features.source=collaborative", "--eval.valid_users=50", "--eval.test_users=60",
           "--eval.templates=1", "--eval.workers=1", "--eval.beam_width=10", "--backbone.hidden_size=32", "--backbone.num_layers=1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in (r.stdout + r.stderr)
    m = json.loads((out / "metrics.json").read_text())
    assert m["test"]["users"] == 60 and 0.0 <= m["test"]["NDCG@10"] <= 1.0
    assert (out / "model" / "item_ids.parquet").exists()
