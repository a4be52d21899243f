"""`ray job submit` of the training job against a local cluster started with `ray start`, and
what the job's driver prints: the quiet job console (ttds.console, tests/jobs/test_console.py).

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
    # the job must turn Ray Data's progress bars off itself (an earlier quiet console in this
    # process set the variable that the cluster, and so the job's driver, would inherit)
    for key in ("RAY_ADDRESS", "RAY_DATA_DISABLE_PROGRESS_BARS"):
        env.pop(key, None)
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
        # the group's raylet, GCS and workers exit on SIGTERM at once; `ray start --block` itself
        # then "drains for up to 30 s" and was still there after 60 s (measured), so it gets 5 s
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(30)


@pytest.mark.slow
def test_train_ttds_through_ray_job_submit(local_cluster, synthetic_corpus, tmp_path):
    """The job runs to the end on the cluster, and its driver's output (`ray job logs`: what the
    person who submitted it reads) is the quiet console's: under 100 lines, stage lines, the
    epoch line and the final table, no Ray chatter; Ray's own output is kept in the run folder.
    One training run checks both (each costs a Ray start and a TTDS run on the 2-core machine)."""
    from ttds.console import LOG_FILE

    url, env = local_cluster
    out = tmp_path / "run"
    sid = f"ttds-test-{os.getpid()}-{int(time.time())}"
    cmd = [RAY, "job", "submit", "--address", url, "--submission-id", sid, "--working-dir", str(ROOT), "--",
           sys.executable, "jobs/train_ttds.py", f"--data.corpus={synthetic_corpus}", f"--output_dir={out}",
           "--optim.epochs=1", "--index.epochs=2", "--index.codebook_size=16", "--index.code_dim=16", "--index.hidden_dims=[32]",
           "--index.levels=3", "--index.features.source=collaborative", "--index.features.collaborative.epochs=2",
           "--eval.valid_users=50", "--eval.test_users=40", "--eval.templates=1", "--eval.workers=1", "--eval.beam_width=10",
           "--backbone.hidden_size=32", "--backbone.num_layers=1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500, cwd=ROOT)  # 1500 s, as the console test had: a loaded 2-core machine
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in (r.stdout + r.stderr)
    m = json.loads((out / "metrics.json").read_text())
    assert m["test"]["users"] == 40 and 0.0 <= m["test"]["NDCG@10"] <= 1.0
    assert (out / "model" / "item_ids.parquet").exists()

    logs = subprocess.run([RAY, "job", "logs", "--address", url, sid], env=env, capture_output=True, text=True, timeout=120)
    assert logs.returncode == 0, logs.stderr[-2000:]
    text = logs.stdout
    assert text.count("\n") < 100, text
    for want in ("data: done", "tokenizer: 2/2 epoch", "epoch 1/1  loss", "epochs: 1/1 epoch", "ranking: 40/40 user",
                 "system", "TTDS", "Popularity", "NDCG@10", f"run folder: {out}", str(out / LOG_FILE)):
        assert want in text, (want, text)
    for ray_chatter in ("RayTrainWorker", "TrainController", "Dataset", "WARNING"):
        assert ray_chatter not in text, (ray_chatter, text)
    assert "RayTrainWorker" in (out / LOG_FILE).read_text()  # Ray's output is kept, in the run folder
