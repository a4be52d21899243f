"""Node-failure scenarios on a multi-raylet Ray cluster on 127.0.0.1 (`ray.cluster_utils.Cluster`).

Run by tests/cluster/test_node_loss.py in a child process: a scenario owns its own cluster
(head + two worker raylets), so it never disturbs the session's shared Ray, and a hang costs
the child's timeout, not the suite. Each scenario prints one JSON line with what it saw.

    python tests/cluster/node_loss.py train <workdir> <corpus>
    python tests/cluster/node_loss.py serve <workdir> <corpus>
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

from ttds.runtime import set_loopback_env

set_loopback_env()

# node death is noticed within ~3 s instead of the default ~30 s
RETRYABLE = -503  # a JSON 503 with Retry-After: the app's answer to a request it cannot start in time
SYSTEM_CONFIG = {"health_check_period_ms": 500, "health_check_failure_threshold": 4, "health_check_initial_delay_ms": 0}
LOOPBACK = {"node_ip_address": "127.0.0.1"}
EPOCHS = 8


def _retry(fn, what: str, attempts: int = 5):
    """Ray waits a fixed 30 s for a new raylet to register; on a loaded 2-core machine it can take longer."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - start-up timeouts under load; retried
            if attempt == attempts - 1:
                raise
            print(f"{what} did not start ({e}); retrying", flush=True)


def start_cluster(worker_resources: dict | None = None):
    """Head (1 CPU, resource `head`) + two 1-CPU worker raylets (resource `worker_node`), all on loopback."""
    import ray
    from ray.cluster_utils import Cluster

    head_args = {**LOOPBACK, "include_dashboard": False, "num_cpus": 1, "resources": {"head": 10}, "object_store_memory": 200 << 20, "_system_config": SYSTEM_CONFIG}
    cluster = _retry(lambda: Cluster(initialize_head=True, head_node_args=head_args), "the head raylet")
    workers = [_retry(lambda: cluster.add_node(**LOOPBACK, num_cpus=1, resources={"worker_node": 1, **(worker_resources or {})},
                                               object_store_memory=120 << 20), "a worker raylet") for _ in range(2)]
    cluster.wait_for_nodes(timeout=120)
    env = {k: os.environ[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "GLOO_SOCKET_IFNAME", "MASTER_ADDR", "DS_ACCELERATOR",
                                      "TOKENIZERS_PARALLELISM") if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1] / "platform"), str(HERE.parent / "serve"), str(HERE.parent), str(HERE.parents[1])])
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", runtime_env={"env_vars": env})
    for n in ray.nodes():
        assert n["NodeManagerAddress"] == "127.0.0.1", n["NodeManagerAddress"]
    return cluster, workers


def actor_nodes(class_suffix: str) -> dict[str, str]:
    """Alive actors whose class name ends with `class_suffix`: actor id -> node id (GCS actor
    table; the public state API needs the dashboard, which ttds keeps off)."""
    from ray._private import state

    return {aid: info["Address"]["NodeID"] for aid, info in state.actors(actor_state_name="ALIVE").items()
            if info["ActorClassName"].endswith(class_suffix)}


# --------------------------------------------------------------------------- training


def registered_epoch(run_dir: Path) -> int:
    """Epoch of the newest checkpoint Ray Train's controller has registered, -1 when none."""
    try:
        latest = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text()).get("latest_checkpoint_result")
    except (OSError, ValueError):
        return -1
    return int(latest["metrics"].get("epoch", -1)) if latest else -1


class NodeRemover(threading.Thread):
    """Once the epoch-`after` checkpoint is registered, removes (kills) a worker raylet that hosts a training rank."""

    def __init__(self, cluster, workers, out: Path, after: int = 0, timeout_s: float = 600):
        super().__init__(daemon=True)
        self.cluster, self.workers, self.out, self.after, self.timeout_s = cluster, workers, out, after, timeout_s
        self.removed: dict | None = None
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.time() + self.timeout_s
        while time.time() < deadline:
            for run_dir in [p for p in self.out.iterdir() if p.is_dir()]:
                if registered_epoch(run_dir) >= self.after:
                    nodes = actor_nodes("RayTrainWorker")
                    victim = next((w for w in self.workers if w.node_id in nodes.values()), None)
                    if victim is None:
                        self.error = f"no worker raylet hosts a rank: {nodes}"
                        return
                    self.cluster.remove_node(victim, allow_graceful=False)
                    self.removed = {"node": victim.node_id, "rank_nodes": nodes, "epoch": registered_epoch(run_dir), "t": time.time()}
                    return
            time.sleep(0.1)
        self.error = "the run never registered the checkpoint to remove a node after"


def scenario_train(work: Path, corpus: Path) -> dict:
    """2 SASRec workers (0.75 CPU each: one per 1-CPU node) lose a node after epoch 0; the run must finish."""
    from ttds.baselines.runner import train_and_evaluate
    from ttds.train.launch import TrainConfig

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cluster, workers = start_cluster()
    # The training rows are read from the shared path and materialized into the object store
    # of the head, the node that stays. Measured: with Ray Data's default (SPREAD) the blocks
    # landed on a worker raylet, and after that raylet was removed the restarted workers waited
    # forever on the lost blocks (no lineage reconstruction of a materialized dataset's blocks).
    ctx = ray.data.DataContext.get_current()
    ctx.scheduling_strategy = ctx.scheduling_strategy_large_args = NodeAffinitySchedulingStrategy(cluster.head_node.node_id, soft=False)
    out = work / "sasrec"
    out.mkdir(parents=True)
    remover = NodeRemover(cluster, workers, out, after=0)
    remover.start()
    t0 = time.time()
    res = train_and_evaluate(
        "sasrec", corpus, out,
        overrides={"hidden": 16, "layers": 1, "heads": 1, "epochs": EPOCHS, "patience": 100, "batch_size": 64, "max_len": 20, "threads": 1},
        train=TrainConfig(num_workers=2, cpus_per_worker=0.75, max_failures=3),
    )
    remover.join(timeout=5)
    history = res.get("history", [])

    alive = [n for n in ray.nodes() if n["Alive"]]
    return {"removed": remover.removed, "remover_error": remover.error, "epochs_run": res["epochs_run"],
            "resumed_from_epoch": res["resumed_from_epoch"], "ndcg10": res.get("NDCG@10"),
            "epochs": [h.get("epoch") for h in history],
            "alive_nodes": len(alive), "wall_s": time.time() - t0}


# --------------------------------------------------------------------------- serving


def scenario_serve(work: Path, corpus: Path) -> dict:
    """The shipped app turned into `topology: fused` (the model-free Ingress on the head retries a
    dead Ranker; the shipped `single` has no Ranker), its Ranker replicas on the two worker
    raylets; one raylet is removed under load."""
    import httpx
    from ray import serve

    from test_serve_app import app_config, build_tiny_model, deploy, free_port, wait_deployed, wait_ready

    cluster, workers = start_cluster()
    model = build_tiny_model(corpus, work / "model", seed=0, text_features=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
    app = app_config("ttds_nodes", "/", model, topology="fused")
    for dep in app["deployments"]:
        opts = dict(dep.get("ray_actor_options") or {})
        if dep["name"] == "Ranker":  # one replica on each worker raylet
            # the code's autoscaling_config applies when the config names none: pin it to 2
            dep.update(num_replicas=None, autoscaling_config={"min_replicas": 2, "max_replicas": 2, "initial_replicas": 2},
                       max_replicas_per_node=1, ray_actor_options={**opts, "resources": {"worker_node": 0.5}})
        else:  # everything else on the head, which stays
            dep.update(ray_actor_options={**opts, "resources": {"head": 0.1}})
    deploy([app])
    url = f"http://127.0.0.1:{port}"
    wait_deployed("ttds_nodes", timeout=400)
    wait_ready(url, timeout=200)
    replicas = actor_nodes(":Ranker")
    log: list[tuple[float, int]] = []  # (send time, status; 0 = connection error)
    bodies: list[str] = []  # the first failures' bodies, for the assertion message
    stop = threading.Event()

    def client(seed: int) -> None:
        u = seed
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                t = time.time()
                try:
                    r = c.post(f"{url}/recommend", json={"user_id": u % 50, "k": 5, "mode": "beam"})
                    retryable = r.status_code == 503 and "retry-after" in r.headers and '"request_id"' in r.text
                    log.append((t, r.status_code if not retryable else RETRYABLE))
                    if r.status_code != 200 and len(bodies) < 5:
                        bodies.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError:
                    log.append((t, 0))
                u += 7

    threads = [threading.Thread(target=client, args=(s,), daemon=True) for s in range(4)]
    for th in threads:
        th.start()
    time.sleep(8)
    victim = next(w for w in workers if w.node_id in replicas.values())
    t_remove = time.time()
    cluster.remove_node(victim, allow_graceful=False)
    time.sleep(20)
    stop.set()
    for th in threads:
        th.join(timeout=70)
    serve.shutdown()
    before = [s for t, s in log if t < t_remove]
    after = [s for t, s in log if t >= t_remove]
    late = [s for t, s in log if t >= t_remove + 10]  # once Serve has noticed the dead replica
    return {"replica_nodes": sorted(set(replicas.values())), "removed": victim.node_id,
            "failed_before": sorted({s for s in before if s != 200}), "failure_bodies": bodies,
            "before": len(before), "before_ok": sum(s == 200 for s in before), "before_retryable": sum(s == RETRYABLE for s in before),
            "after": len(after), "after_ok": sum(s == 200 for s in after),
            "late": len(late), "late_ok": sum(s == 200 for s in late),
            "failed_statuses": sorted({s for s in after if s != 200})}


if __name__ == "__main__":
    which, workdir, corpus_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    fn = {"train": scenario_train, "serve": scenario_serve}[which]
    result = fn(workdir, corpus_dir)
    print("RESULT " + json.dumps(result, default=str), flush=True)
    import ray

    ray.shutdown()
