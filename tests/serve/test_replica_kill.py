"""Fault tolerance of serving: SIGKILL one of two model replicas under load, in both topologies that hold a model apart.

serve_apps/config.yaml is deployed (as in test_serve_app.py, whose helpers this reuses) on a tiny
model with two model replicas (the config's min_replicas), twice:
- `fused`: two Ranker replicas behind a model-free Ingress. A request in flight on the dead Ranker
  is retried once by the Ingress, else answered by it with a retryable JSON 503.
- `single` (shipped): the model runs in the two Ingress replicas, so a request in flight on the
  dead one has no app left to answer it: Serve's proxy gets the actor's death and, with
  ttds.serve.proxy_errors in it (ttds.runtime.init_ray sets the variable Ray reads), answers a
  retryable JSON 503 instead of a bare 500.
Client threads send beam-search requests over HTTP on 127.0.0.1 while one replica's process is
killed; every failure is counted and printed. Serve must route everything else to the survivor,
start a replacement, and every request sent once it has noticed must succeed.

The replica's process id comes from the GCS actor table (`ray._private.state.actors`): the
public state API (`ray.util.state`) needs the dashboard, which ttds keeps off.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from test_serve_app import app_config, deploy, wait_deployed, wait_ready

httpx = pytest.importorskip("httpx")

APP = "ttds_ft"
MODEL_DEPLOYMENT = {"fused": "Ranker", "single": "Ingress"}  # the deployment whose replica is killed
CLIENTS = 6
MAX_FAILED_SHARE = 0.05
SETTLE_S = 5.0  # after the kill, requests sent later than this must all succeed


def generator_replicas(deployment: str) -> dict[str, int]:
    """Alive replicas of this app's `deployment`: actor name -> process id."""
    from ray._private import state

    out = {}
    for info in state.actors(actor_state_name="ALIVE").values():
        if info["ActorClassName"] == f"ServeReplica:{APP}:{deployment}" and info["Pid"]:
            out[info["Name"]] = int(info["Pid"])
    return out


def running_generators(deployment: str) -> int:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or deployment not in app.deployments:
        return 0
    return app.deployments[deployment].replica_states.get("RUNNING", 0)


@pytest.fixture(scope="module", params=sorted(MODEL_DEPLOYMENT))
def server_two_generators(request, serve_url, tiny_model):
    """The app with two model replicas on the session's Serve (tests/serve/conftest.py): (url, deployment)."""
    topology = request.param
    app = app_config(APP, "/", tiny_model(0, False), topology=topology)
    for dep in app["deployments"]:
        if dep["name"] == MODEL_DEPLOYMENT[topology]:
            # the code's autoscaling_config applies when the config names none: pin it to 2
            dep.update(num_replicas=None, autoscaling_config={"min_replicas": 2, "max_replicas": 2, "initial_replicas": 2})
    deploy([app])
    wait_deployed(APP, timeout=240)
    wait_ready(serve_url)
    return serve_url, MODEL_DEPLOYMENT[topology]


class Clients:
    """Threads posting /recommend (beam search: through the generator) until stopped."""

    def __init__(self, url: str, n: int):
        self.url, self.stop = url, threading.Event()
        self.results: list[tuple[float, float, int, str]] = []  # (sent, answered, status, body head)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, args=(i,), daemon=True) for i in range(n)]

    def loop(self, seed: int) -> None:
        i = seed
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                t = time.time()
                try:
                    r = client.post(f"{self.url}/recommend", json={"user_id": i % 200, "k": 5, "mode": "beam"})
                    status, body = r.status_code, r.text[:200]
                except httpx.HTTPError as e:  # a dropped connection counts as a failed request
                    status, body = -1, repr(e)[:200]
                with self.lock:
                    self.results.append((t, time.time(), status, body))
                i += CLIENTS

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(70)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_generator_replica_killed_under_load(server_two_generators):
    url, deployment = server_two_generators
    deadline = time.time() + 60
    while len(before := generator_replicas(deployment)) < 2 and time.time() < deadline:
        time.sleep(1)
    assert len(before) == 2, before

    with Clients(url, CLIENTS) as clients:
        time.sleep(6)  # steady load on both replicas
        victim_name, victim = sorted(before.items())[0]
        cmdline = Path(f"/proc/{victim}/cmdline").read_bytes().decode(errors="replace")
        assert cmdline.startswith("ray::ServeReplica"), cmdline  # never kill anything but our replica
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        # load goes on while Serve notices and replaces the replica
        deadline = time.time() + 120
        while time.time() < deadline:
            now = generator_replicas(deployment)
            if len(now) == 2 and victim_name not in now and running_generators(deployment) == 2:
                break
            time.sleep(1)
        t_replaced = time.time()
        time.sleep(5)  # and some load on the replacement
        n_before_stop = len(clients.results)

    results = list(clients.results)
    failed = [r for r in results if r[2] != 200]
    share = len(failed) / max(len(results), 1)
    before_kill = [r for r in results if r[1] < t_kill]
    late = [r for r in results if r[0] > t_kill + SETTLE_S]
    print(f"\n{len(results)} requests ({len(before_kill)} answered before the kill), {len(failed)} failed = {share:.2%}; "
          f"replacement RUNNING {t_replaced - t_kill:.1f} s after the kill; first failures: {failed[:3]}")

    now = generator_replicas(deployment)
    assert victim_name not in now and len(now) == 2 and victim not in now.values(), now  # replaced
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert len(before_kill) >= 10 and n_before_stop > len(before_kill) + 10, "too little load to judge"
    assert share <= MAX_FAILED_SHARE, (share, failed[:5])
    assert late and all(r[2] == 200 for r in late), [r for r in late if r[2] != 200][:5]
    assert all(r[2] == 503 and '"request_id"' in r[3] for r in failed), failed[:5]  # retryable JSON 503, never a 500 or a hang
