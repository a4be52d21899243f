"""Load test of the Ray Serve app over loopback HTTP: latency percentiles, throughput, overhead.

For each mode (beam, retrieval) and each concurrency (default 1, 8, 32 clients) it sends
`/recommend` requests for known users for a bounded time and count, then reports p50/p95/p99
latency, throughput and errors. It also times `Recommender.recommend` in this process (same
model, same thread count as a replica), interleaved request by request with HTTP calls so both
see the same machine load, and reports the serving overhead at one client: end-to-end p50 /
in-process p50 (target <= 1.5 for beam search, the expensive path).

Everything stays on 127.0.0.1 and in a Ray started here (shut down at the end).

  python benchmarks/serve_load.py --model runs/train_ttds/<ts>/model
  python benchmarks/serve_load.py --model ... --duration 5 --concurrency 1,8,32 --out runs/bench/serve_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT))


@dataclass
class Cell:
    mode: str
    clients: int
    requests: int
    errors: int
    wall_s: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarise(mode: str, clients: int, lat_s: list[float], errors: int, wall: float) -> Cell:
    ms = [x * 1000 for x in lat_s]
    return Cell(mode, clients, len(ms), errors, round(wall, 2), round(len(ms) / max(wall, 1e-9), 1),
                round(percentile(ms, 0.5), 1), round(percentile(ms, 0.95), 1), round(percentile(ms, 0.99), 1),
                round(statistics.fmean(ms), 1) if ms else float("nan"))


def paired(url: str, rec, mode: str, users: list[int], n: int, k: int) -> tuple[Cell, Cell]:
    """Alternate one in-process `Recommender.recommend` call and one HTTP request, n times.

    Interleaving puts both measurements under the same machine load (on a shared machine the
    load drifts by the second), so their ratio is the serving overhead and not the drift.
    """
    import httpx

    local, remote = [], []
    errors = 0
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(3):  # warm-up of both paths
            rec.recommend(user_id=users[i], k=k, mode=mode)
            client.post("/recommend", json={"user_id": users[i], "k": k, "mode": mode})
        t0 = time.perf_counter()
        for i in range(n):
            u = users[i % len(users)]
            t = time.perf_counter()
            rec.recommend(user_id=u, k=k, mode=mode)
            local.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = client.post("/recommend", json={"user_id": u, "k": k, "mode": mode})
            if r.status_code == 200:
                remote.append(time.perf_counter() - t)
            else:
                errors += 1
        wall = time.perf_counter() - t0
    return summarise(f"{mode} (in-process)", 1, local, 0, wall), summarise(f"{mode} (HTTP, paired)", 1, remote, errors, wall)


async def http_cell(url: str, mode: str, clients: int, users: list[int], duration: float, max_requests: int, k: int) -> Cell:
    import httpx

    lat: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker(w: int) -> None:
            nonlocal errors, sent
            i = w
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                t = time.perf_counter()
                try:
                    r = await client.post("/recommend", json={"user_id": users[i % len(users)], "k": k, "mode": mode})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat.append(time.perf_counter() - t)
                else:
                    errors += 1
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - t0
    return summarise(mode, clients, lat, errors, wall)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(model: str, threads: int, autoscale: bool, batch_wait: float | None) -> str:
    import ray
    from ray import serve

    from serve_apps.app import compose
    from ttds.runtime import init_ray

    for attempt in range(3):  # a saturated machine sometimes misses the raylet's start-up deadline
        try:
            init_ray(num_cpus=os.cpu_count() or 2, object_store_mb=300)
            break
        except Exception:  # noqa: BLE001
            ray.shutdown()
            if attempt == 2:
                raise
            time.sleep(5)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    fixed = {} if autoscale else {"autoscaling_config": None, "num_replicas": 1}
    options = {d: dict(fixed) for d in ("Ingress", "UserEncoder", "SemanticIDGenerator", "Retriever")}
    overrides: dict = {"num_threads": threads}
    if batch_wait is not None:
        overrides["batch_wait_timeout_s"] = batch_wait
    serve.run(compose(model, options, overrides), name="ttds", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("the app did not become healthy within 300 s")


def table(cells: list[Cell], pairs: list[Cell], overhead: dict[str, float]) -> str:
    lines = ["| mode | clients | requests | errors | req/s | p50 ms | p95 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in pairs + cells:
        lines.append(f"| {c.mode} | {c.clients} | {c.requests} | {c.errors} | {c.rps} | {c.p50_ms} | {c.p95_ms} | {c.p99_ms} |")
    lines.append("")
    for mode, o in overhead.items():
        lines.append(f"serving overhead ({mode}, 1 client, p50 end-to-end / p50 in-process, interleaved): {o:.2f}x (target <= 1.5)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a model folder written by jobs/train_ttds.py (<run>/model)")
    p.add_argument("--modes", default="beam,retrieval")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per (mode, concurrency) cell")
    p.add_argument("--max-requests", type=int, default=400, help="requests per cell at most")
    p.add_argument("--pairs", type=int, default=40, help="interleaved in-process / HTTP pairs per mode (overhead)")
    p.add_argument("--k", type=int, default=10, help="items per request (k > beam_width widens the beam)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per replica (and in-process)")
    p.add_argument("--users", type=int, default=200, help="known users cycled through")
    p.add_argument("--batch-wait", type=float, default=None, help="override @serve.batch batch_wait_timeout_s (default: the code's)")
    p.add_argument("--autoscale", action="store_true", help="use the deployments' autoscaling configs (default: 1 replica each)")
    p.add_argument("--out", default="runs/bench/serve_load.json")
    args = p.parse_args(argv)
    model = str(Path(args.model).resolve())
    if not (Path(model) / "ttds.json").exists():
        print(f"error: {model} is not a TTDS model folder (no ttds.json)", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    levels = [int(c) for c in args.concurrency.split(",") if c]
    from ray import serve

    from ttds.config import RecommenderConfig
    from ttds.serve.recommender import Recommender

    rec = Recommender.load(model, RecommenderConfig(num_threads=args.threads))
    users = list(range(min(args.users, rec.n_users)))
    url = start_serve(model, args.threads, args.autoscale, args.batch_wait)
    cells: list[Cell] = []
    pairs: list[Cell] = []
    overhead: dict[str, float] = {}
    try:
        for mode in modes:
            local, remote = paired(url, rec, mode, users, args.pairs, args.k)
            pairs += [local, remote]
            overhead[mode] = round(remote.p50_ms / max(local.p50_ms, 1e-9), 2)
            print(f"{mode:9s} paired: in-process p50={local.p50_ms} ms, HTTP p50={remote.p50_ms} ms -> {overhead[mode]}x", flush=True)
            for c in levels:
                cell = asyncio.run(http_cell(url, mode, c, users, args.duration, args.max_requests, args.k))
                cells.append(cell)
                print(f"{mode:9s} clients={c:3d} {cell.rps:7.1f} req/s p50={cell.p50_ms} ms p99={cell.p99_ms} ms errors={cell.errors}", flush=True)
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()
    text = table(cells, pairs, overhead)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": model, "k": args.k, "paired": [asdict(c) for c in pairs], "http": [asdict(c) for c in cells],
        "overhead_p50": overhead, "duration_s": args.duration, "max_requests": args.max_requests, "threads": args.threads,
        "batch_wait_timeout_s": args.batch_wait, "autoscale": args.autoscale, "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()},
    }, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
