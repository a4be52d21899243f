"""Load test of the Ray Serve app over loopback HTTP: serving overhead, throughput, overload.

It deploys serve_apps/config.yaml as shipped (the model folder put in; `--topology` may switch
fused/composed) on a Ray started here, then:

1. Overhead per concurrency (default 1, 4, 16 clients) and mode (beam, retrieval): HTTP p50
   latency over in-process p50 latency of the same model (`Recommender.recommend_batch`, same
   thread count as a replica). At c clients the in-process figure is one batch of c requests:
   what a replica's @serve.batch runs for c concurrent callers. At one client the two are
   interleaved request by request, so both see the same machine load (on a shared machine it
   drifts by the second); at more, in-process runs just before the HTTP cell.
2. Overload (default 256 clients, beam): closed-loop clients that honour Retry-After (as the
   503 asks) for `--overload-duration` seconds, while /readyz is polled. It reports the JSON
   503s' p99 latency, the accepted requests' p99, throughput against the peak of step 1 and of
   a 32-client run, /readyz's worst latency, and the latency right after the overload (recovery).

Everything stays on 127.0.0.1 and in a Ray started here (shut down at the end).

  python benchmarks/serve_load.py --model runs/train_ttds/<ts>/model
  python benchmarks/serve_load.py --model ... --concurrency 1,4,16 --overload-clients 256 --out runs/bench/serve_load.json
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


@dataclass
class Overload:
    clients: int
    duration_s: float
    accepted: int
    rejected_503: int
    other_errors: int
    rejected_json_with_retry_after: float  # share of 503s that are the JSON ErrorResponse with Retry-After
    accepted_rps: float
    peak_rps: float
    throughput_vs_peak: float
    accepted_p50_ms: float
    accepted_p99_ms: float
    rejected_p50_ms: float
    rejected_p99_ms: float
    readyz_polls: int
    readyz_not_200: int
    readyz_max_ms: float
    recovery_p50_ms: float  # one client, right after the overload stops
    errors_sample: list = field(default_factory=list)


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


def body(user: int, k: int, mode: str) -> dict:
    return {"user_id": user, "k": k, "mode": mode}


def paired(url: str, rec, mode: str, users: list[int], n: int, k: int) -> tuple[Cell, Cell]:
    """Alternate one in-process call and one HTTP request, n times (one client)."""
    import httpx

    from ttds.serve.recommender import Query

    local, remote = [], []
    errors = 0
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(3):  # warm-up of both paths
            rec.recommend_batch([Query(user_id=users[i], k=k, mode=mode)])
            client.post("/recommend", json=body(users[i], k, mode))
        t0 = time.perf_counter()
        for i in range(n):
            u = users[i % len(users)]
            t = time.perf_counter()
            rec.recommend_batch([Query(user_id=u, k=k, mode=mode)])
            local.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = client.post("/recommend", json=body(u, k, mode))
            if r.status_code == 200:
                remote.append(time.perf_counter() - t)
            else:
                errors += 1
        wall = time.perf_counter() - t0
    return summarise(f"{mode} (in-process)", 1, local, 0, wall), summarise(f"{mode} (HTTP)", 1, remote, errors, wall)


def in_process(rec, mode: str, clients: int, users: list[int], n: int, k: int) -> Cell:
    """p50 of `recommend_batch` over batches of `clients` requests (latency of each request in it)."""
    from ttds.serve.recommender import Query

    lat = []
    t0 = time.perf_counter()
    for b in range(n):
        qs = [Query(user_id=users[(b * clients + j) % len(users)], k=k, mode=mode) for j in range(clients)]
        t = time.perf_counter()
        rec.recommend_batch(qs)
        lat.append(time.perf_counter() - t)
    cell = summarise(f"{mode} (in-process)", clients, lat, 0, time.perf_counter() - t0)
    cell.requests, cell.rps = n * clients, round(n * clients / max(cell.wall_s, 1e-9), 1)  # requests, not batches
    return cell


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
                    r = await client.post("/recommend", json=body(users[i % len(users)], k, mode))
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


async def overload(url: str, mode: str, clients: int, users: list[int], duration: float, k: int, peak: float) -> Overload:
    """`clients` closed-loop clients that wait Retry-After seconds after a 503; /readyz polled."""
    import httpx

    acc, rej, errs, sample = [], [], 0, []
    well_formed = 0
    ready: list[tuple[int, float]] = []
    stop_at = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker(w: int) -> None:
            nonlocal errs, well_formed
            i = w
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                try:
                    r = await client.post("/recommend", json=body(users[i % len(users)], k, mode))
                except httpx.HTTPError as e:
                    errs += 1
                    sample.append(repr(e)[:200])
                    continue
                dt = time.perf_counter() - t
                i += clients
                if r.status_code == 200:
                    acc.append(dt)
                elif r.status_code == 503:
                    rej.append(dt)
                    retry = r.headers.get("retry-after")
                    try:
                        ok = r.headers["content-type"].startswith("application/json") and "request_id" in r.json()
                    except ValueError:
                        ok = False
                    well_formed += bool(ok and retry)
                    await asyncio.sleep(float(retry or 1))
                else:
                    errs += 1
                    sample.append(f"{r.status_code} {r.text[:200]}")

        async def prober() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as probe:
                while time.perf_counter() < stop_at:
                    t = time.perf_counter()
                    try:
                        r = await probe.get("/readyz")
                        ready.append((r.status_code, time.perf_counter() - t))
                    except httpx.HTTPError:
                        ready.append((-1, time.perf_counter() - t))
                    await asyncio.sleep(0.5)

        t0 = time.perf_counter()
        await asyncio.gather(prober(), *(worker(w) for w in range(clients)))
        wall = time.perf_counter() - t0
        rec_lat = []
        for j in range(10):  # recovery: one client, at once
            t = time.perf_counter()
            r = await client.post("/recommend", json=body(users[j % len(users)], k, mode))
            if r.status_code == 200:
                rec_lat.append(time.perf_counter() - t)
    rps = len(acc) / wall
    ms = lambda xs, q: round(percentile([x * 1000 for x in xs], q), 1)  # noqa: E731
    return Overload(clients, round(wall, 1), len(acc), len(rej), errs, round(well_formed / max(len(rej), 1), 3), round(rps, 1),
                    round(peak, 1), round(rps / max(peak, 1e-9), 3), ms(acc, 0.5), ms(acc, 0.99), ms(rej, 0.5), ms(rej, 0.99),
                    len(ready), sum(1 for c, _ in ready if c != 200), round(max((d for _, d in ready), default=float("nan")) * 1000, 1),
                    ms(rec_lat, 0.5), sample[:5])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shipped_app(model: str, threads: int, topology: str | None, batch_wait: float | None) -> dict:
    """serve_apps/config.yaml's application as shipped, pointed at `model`."""
    import yaml

    app = yaml.safe_load((ROOT / "serve_apps" / "config.yaml").read_text())["applications"][0]
    if topology:
        app["args"]["topology"] = topology
    for dep in app["deployments"]:
        dep["user_config"]["model_dir"] = model
        if dep["name"] != "Ingress":
            dep["user_config"]["num_threads"] = threads
            if batch_wait is not None:
                dep["user_config"]["batch_wait_timeout_s"] = batch_wait
    if app["args"].get("topology") == "composed" and not any(d["name"] == "UserEncoder" for d in app["deployments"]):
        app["deployments"].append({"name": "UserEncoder", "user_config": {"model_dir": model, "num_threads": threads}})
    return app


def start_serve(app: dict) -> str:
    import httpx
    import ray
    from ray import serve
    from ray.serve import context
    from ray.serve.schema import ServeDeploySchema

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
    context._get_global_client().deploy_apps(ServeDeploySchema(applications=[app]), _blocking=False)  # what `serve deploy` does
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("the app did not become ready within 600 s")


def table(cells: list[Cell], ratios: dict, ov: Overload | None) -> str:
    lines = ["| mode | clients | requests | errors | req/s | p50 ms | p95 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        lines.append(f"| {c.mode} | {c.clients} | {c.requests} | {c.errors} | {c.rps} | {c.p50_ms} | {c.p95_ms} | {c.p99_ms} |")
    lines.append("")
    lines.append("| mode | clients | HTTP p50 / in-process p50 |")
    lines.append("|---|---:|---:|")
    for mode, by_c in ratios.items():
        for c, r in by_c.items():
            lines.append(f"| {mode} | {c} | {r:.2f}x |")
    if ov is not None:
        lines += ["", f"overload: {ov.clients} clients (honouring Retry-After) for {ov.duration_s} s: accepted {ov.accepted_rps} req/s = "
                  f"{ov.throughput_vs_peak:.0%} of peak {ov.peak_rps}; accepted p50/p99 {ov.accepted_p50_ms}/{ov.accepted_p99_ms} ms; "
                  f"{ov.rejected_503} JSON 503s ({ov.rejected_json_with_retry_after:.0%} JSON with Retry-After), p50/p99 "
                  f"{ov.rejected_p50_ms}/{ov.rejected_p99_ms} ms; other errors {ov.other_errors}; /readyz {ov.readyz_polls} polls, "
                  f"{ov.readyz_not_200} not 200, worst {ov.readyz_max_ms} ms; recovery p50 {ov.recovery_p50_ms} ms"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a model folder written by jobs/train_ttds.py (<run>/model)")
    p.add_argument("--modes", default="beam,retrieval")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per (mode, concurrency) cell")
    p.add_argument("--max-requests", type=int, default=400, help="requests per cell at most")
    p.add_argument("--pairs", type=int, default=40, help="interleaved in-process / HTTP pairs at one client")
    p.add_argument("--batches", type=int, default=10, help="in-process batches per concurrency > 1")
    p.add_argument("--k", type=int, default=10, help="items per request (k > beam_width widens the beam)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per replica (and in-process)")
    p.add_argument("--users", type=int, default=200, help="known users cycled through")
    p.add_argument("--batch-wait", type=float, default=None, help="override @serve.batch batch_wait_timeout_s (default: the code's)")
    p.add_argument("--topology", choices=("fused", "composed"), default=None, help="default: the config's")
    p.add_argument("--overload-clients", type=int, default=256, help="0 = no overload run")
    p.add_argument("--overload-duration", type=float, default=20.0)
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
    app = shipped_app(model, args.threads, args.topology, args.batch_wait)
    url = start_serve(app)
    cells: list[Cell] = []
    ratios: dict[str, dict[int, float]] = {}
    ov = None
    try:
        for mode in modes:
            ratios[mode] = {}
            for c in levels:
                if c == 1:
                    local, remote = paired(url, rec, mode, users, args.pairs, args.k)
                else:
                    local = in_process(rec, mode, c, users, args.batches, args.k)
                    remote = asyncio.run(http_cell(url, mode, c, users, args.duration, args.max_requests, args.k))
                cells += [local, remote]
                ratios[mode][c] = round(remote.p50_ms / max(local.p50_ms, 1e-9), 2)
                print(f"{mode:9s} clients={c:3d} in-process p50={local.p50_ms} ms, HTTP p50={remote.p50_ms} ms "
                      f"({remote.rps} req/s, errors {remote.errors}) -> {ratios[mode][c]}x", flush=True)
        if args.overload_clients:
            mode = modes[0]
            probe = asyncio.run(http_cell(url, mode, 32, users, args.duration, 10**9, args.k))
            cells.append(probe)
            peak = max(c.rps for c in cells if c.mode in (mode, f"{mode} (HTTP)"))  # HTTP cells of this mode, probe included
            print(f"{mode:9s} clients= 32 {probe.rps} req/s p99={probe.p99_ms} ms; peak {peak} req/s", flush=True)
            ov = asyncio.run(overload(url, mode, args.overload_clients, users, args.overload_duration, args.k, peak))
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()
    text = table(cells, ratios, ov)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": model, "k": args.k, "topology": app["args"].get("topology"), "cells": [asdict(c) for c in cells],
        "ratio_p50": ratios, "overload": asdict(ov) if ov else None, "duration_s": args.duration, "threads": args.threads,
        "batch_wait_timeout_s": args.batch_wait,
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()},
    }, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
