"""Load test of the Ray Serve app over loopback HTTP: serving overhead, throughput, overload.

It deploys serve_apps/config.yaml as shipped (the model folder put in; `--topology` may switch
single/fused/composed, as docs/serving.md says to by hand) on a Ray started here, then:

1. Overhead per concurrency (default 1, 4, 16 clients) and mode (beam, retrieval): HTTP p50
   latency over in-process p50 latency of the same model (`Recommender.recommend_batch`, same
   thread count as a replica). At one client the two are interleaved request by request on one
   keep-alive connection (http.client, the cheapest client there is), so both see the same
   machine load. At c > 1 clients the in-process figure is one batch of c requests (what a
   replica's @serve.batch runs for c concurrent callers), measured just before the HTTP cell.
2. Overload (default 256 clients, beam): closed-loop clients that honour Retry-After (as the
   503 asks) for `--overload-duration` seconds, while /readyz is polled from this process.
   It prints the issue's figures and whether each target holds: the JSON 503s' p99 latency,
   the accepted requests' p99, throughput against the peak (the best of step 1 and a 32-client
   run), /readyz's worst latency, the Retry-After values given, the latency right after.

Concurrent clients (c > 1 and the overload) run in a process of their own (asyncio + aiohttp),
not in this interpreter; each cell reports that client's CPU use (cores), the CPU milliseconds
per request each Serve process group spent (proxy, Ingress, Ranker, ...) and the load average:
on a shared machine that says whether the server, the client or the neighbours had the cores.

`--direct-ingress` sets RAY_SERVE_ENABLE_DIRECT_INGRESS=1 for the Ray started here (Ray 2.60's
experimental mode: each Ingress replica serves HTTP on a port of its own, no proxy hop) and sends
the load straight to the replicas' endpoints (Serve's published target groups; concurrent clients
spread over them, one client and the /readyz probe on the first). The run prints the addresses
each Serve process listens on.

Everything stays on 127.0.0.1 and in a Ray started here (shut down at the end).

  python benchmarks/serve_load.py --model /abs/path/to/runs/train_ttds/<ts>/model
  python benchmarks/serve_load.py --model ... --concurrency 1,4,16 --overload-clients 256 --out runs/bench/serve_load.json
  python benchmarks/serve_load.py --model ... --topology single --direct-ingress
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import threading
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
    load_avg: float = float("nan")  # 1-minute load average when the cell ended
    client_cpu: float = float("nan")  # the load generator's CPU seconds per wall second (1.0 = one core)
    server_cpu_ms: dict = field(default_factory=dict)  # CPU ms per request, by Serve process group
    split: dict = field(default_factory=dict)  # where_time_went (concurrent cells)
    server_cores: float = float("nan")  # CPU seconds per wall second of all Serve processes (concurrent cells)


@dataclass
class Overload:
    clients: int
    duration_s: float
    accepted: int
    rejected_503: int
    rejected_late: int  # 503s given at the deadline after queueing (the rest were refused on arrival)
    other_errors: int
    rejected_json_with_retry_after: float  # share of 503s that are the JSON ErrorResponse with Retry-After
    accepted_rps: float
    peak_rps: float
    throughput_vs_peak: float
    accepted_p50_ms: float
    accepted_p99_ms: float
    rejected_p50_ms: float
    rejected_p99_ms: float
    retry_after_p50_s: float
    retry_after_max_s: float
    readyz_polls: int
    readyz_not_200: int
    readyz_max_ms: float
    recovery_p50_ms: float  # one client, right after the overload stops
    load_avg: float
    client_cpu: float
    server_cpu_ms: dict = field(default_factory=dict)
    processes_died: int = 0  # Serve processes that died during the run (replaced by Serve; not a clean run)
    healthz_p50_ms: float = float("nan")  # GET /healthz polled during the overload: the path outside the app, no work in it
    healthz_max_ms: float = float("nan")
    accepted_split: dict = field(default_factory=dict)  # where_time_went of accepted requests
    rejected_split: dict = field(default_factory=dict)  # ... and of the 503s
    errors_sample: list = field(default_factory=list)
    server_cores: float = float("nan")  # CPU seconds per wall second of all Serve processes
    server_cpu_per_accepted_ms: float = float("nan")  # all Serve CPU (refusals included) per accepted request
    peak_cpu_per_request_ms: float = float("nan")  # ... at the peak: the ratio of the two is what overload wastes
    peak_cores: float = float("nan")  # CPU the Serve processes got in the peak's cell

    def targets(self) -> dict[str, bool]:
        """The issue's overload targets."""
        return {"503 p99 <= 100 ms": self.rejected_p99_ms <= 100 or self.rejected_503 == 0,
                "accepted p99 < 5 s": self.accepted_p99_ms < 5000,
                "throughput >= 80% of peak": self.throughput_vs_peak >= 0.8,
                "/readyz <= 1 s": self.readyz_max_ms <= 1000 and self.readyz_not_200 == 0,
                "503s are JSON with Retry-After": self.rejected_json_with_retry_after >= 0.999 or self.rejected_503 == 0,
                "no other errors": self.other_errors == 0}


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
                round(statistics.fmean(ms), 1) if ms else float("nan"), round(os.getloadavg()[0], 1))


def body(user: int, k: int, mode: str) -> dict:
    return {"user_id": user, "k": k, "mode": mode}


# --------------------------------------------------------------------------- the load generator (own process)


async def _load(spec: dict) -> dict:
    """Closed-loop aiohttp clients; with `honour_retry_after` a 503 makes that client sleep
    Retry-After seconds (what a well-behaved client does). Runs in a process of its own."""
    import aiohttp

    urls, mode, clients, k, users = spec["urls"], spec["mode"], spec["clients"], spec["k"], spec["users"]
    ok: list[float] = []
    rej: list[float] = []
    retry: list[float] = []
    errors, json_ok, sent, late, sample = 0, 0, 0, 0, []
    stop = time.perf_counter() + spec["duration"]
    conn = aiohttp.TCPConnector(limit=clients + 4)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as s:

        split: dict[int, list] = {200: [], 503: []}  # (before the app, in the app) seconds, by status

        async def post(user: int, url: str) -> tuple[int, float, dict, bytes]:
            sent, t = time.time(), time.perf_counter()
            async with s.post(f"{url}/recommend", json=body(user, k, mode)) as r:
                data = await r.read()
                dt = time.perf_counter() - t
                app = server_timing(r.headers.get("Server-Timing", ""))
                if app and r.status in split:
                    split[r.status].append((app[1] - sent, app[0], dt))
                return r.status, dt, dict(r.headers), data

        async def worker(w: int) -> None:
            nonlocal errors, json_ok, sent, late
            i = w
            while time.perf_counter() < stop and sent < spec["max_requests"]:
                sent += 1
                try:
                    status, dt, headers, data = await post(users[i % len(users)], urls[w % len(urls)])  # clients spread over the endpoints
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    errors += 1
                    sample.append(repr(e)[:200])
                    continue
                i += clients
                if status == 200:
                    ok.append(dt)
                elif status == 503 and spec["honour_retry_after"]:
                    rej.append(dt)
                    ra = headers.get("Retry-After")
                    try:
                        well_formed = headers.get("Content-Type", "").startswith("application/json") and "request_id" in json.loads(data)
                    except ValueError:
                        well_formed = False
                    json_ok += bool(well_formed and ra)
                    late += b"could not start within" in data  # queued, then refused at its deadline
                    wait = float(ra) if ra and ra.replace(".", "", 1).isdigit() else 1.0
                    retry.append(wait)
                    await asyncio.sleep(wait)
                else:
                    errors += 1
                    sample.append(f"{status} {data[:200]!r}")

        cpu0, t0 = _cpu_self(), time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall, cpu = time.perf_counter() - t0, _cpu_self() - cpu0
        recovery = []
        for j in range(spec.get("recovery", 0)):  # one client, at once
            status, dt, _, _ = await post(users[j % len(users)], urls[0])
            if status == 200:
                recovery.append(dt)
    return {"ok": ok, "rej": rej, "retry": retry, "errors": errors, "json_ok": json_ok, "sample": sample[:5],
            "wall": wall, "cpu": cpu, "recovery": recovery, "late": late, "split": {str(k): v for k, v in split.items()}}


def server_timing(header: str) -> tuple[float, float] | None:
    """(seconds in the app, unix time it reached the app) from the app's Server-Timing header."""
    parts = dict(p.strip().split(";", 1) for p in header.split(",") if ";" in p)
    try:
        return float(parts["app"].split("=", 1)[1]) / 1000, float(parts["arrive"].split("=", 1)[1])
    except (KeyError, IndexError, ValueError):
        return None


def where_time_went(split: list) -> dict:
    """p50/p99 ms of a request's time by where it went, from (before the app, in the app,
    client-measured total) seconds per request: `before_app` (the proxy, the hop, the replica
    before the app's middleware: the clocks of client and app are the same host's), `in_app`
    (the app's own Server-Timing: admission, validation, the model call) and `outside` (total
    minus in_app: everything the app cannot shape, the way in and the way back through Serve's
    proxy). The p99 of each part is taken on its own (they need not come from one request)."""
    out = {}
    for name, xs in (("before_app", [x[0] for x in split]), ("in_app", [x[1] for x in split]),
                     ("outside", [x[2] - x[1] for x in split if len(x) > 2])):
        out[f"{name}_p50_ms"] = round(percentile(xs, 0.5) * 1000, 1)
        out[f"{name}_p99_ms"] = round(percentile(xs, 0.99) * 1000, 1)
    return out


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_clients(spec: dict) -> dict:
    """`_load(spec)` in a fresh Python process (its own interpreter and cores' share)."""
    out = subprocess.run([sys.executable, __file__, "--client", json.dumps(spec)], capture_output=True, text=True,
                         timeout=spec["duration"] + 300)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- what the server spent


class CpuMeter:
    """CPU seconds of this Ray's Serve processes (descendants of this process), by group."""

    GROUPS = (("ProxyActor", "proxy"), ("ServeController", "controller"), ("ServeReplica", None))

    def __init__(self) -> None:
        import psutil

        self.procs: dict[str, list] = {}
        self.last: dict[int, float] = {}  # pid -> CPU seconds when last seen (kept once the process is gone)
        self.gone: set[int] = set()  # processes that died during the run: say so, the figures undercount
        for p in psutil.Process(os.getpid()).children(recursive=True):
            try:
                title = " ".join(p.cmdline())
            except psutil.Error:
                continue
            for key, name in self.GROUPS:
                if key in title:
                    # ray::ServeReplica:<app>:<Deployment>[.<method running now>]
                    name = name or title.split("ServeReplica:", 1)[1].split(":", 1)[-1].split(".")[0].split()[0]
                    self.procs.setdefault(name, []).append(p)

    def snapshot(self) -> dict[str, float]:
        out = {}
        for name, procs in self.procs.items():
            total = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                    self.last[p.pid] = t.user + t.system
                except Exception:  # noqa: BLE001 - a replica gone mid-run (its replacement is not counted)
                    self.gone.add(p.pid)
                total += self.last.get(p.pid, 0.0)
            out[name] = total
        return out

    @staticmethod
    def cores(before: dict, after: dict, wall_s: float) -> float:
        """CPU seconds all Serve processes got per wall second: on a shared host, what the
        neighbours left them (throughput against the peak is only fair at similar figures)."""
        return round((sum(after.values()) - sum(before.values())) / max(wall_s, 1e-9), 2)

    @staticmethod
    def per_request(before: dict, after: dict, requests: int) -> dict[str, float]:
        return {n: round((after[n] - before.get(n, 0.0)) * 1000 / max(requests, 1), 2) for n in after}


class ReadyProbe(threading.Thread):
    """Polls /readyz, then /healthz, every `every` s on a new connection each until stopped;
    (status, seconds) of each in `results` and `livez`. /healthz does no work in the app (its
    time there is microseconds), so its latency under the overload is what any request, a 503
    included, pays outside the app: the proxy and the hops on a busy host."""

    def __init__(self, url: str, every: float = 0.5):
        super().__init__(daemon=True)
        self.host, self.port = url.removeprefix("http://").split(":")
        self.every, self.results, self.livez = every, [], []
        self._stop_evt = threading.Event()

    def _get(self, path: str) -> tuple[int, float]:
        t = time.perf_counter()
        try:
            c = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
            c.request("GET", path)
            status = c.getresponse().status
            c.close()
        except OSError:
            status = -1
        return status, time.perf_counter() - t

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self.results.append(self._get("/readyz"))
            self.livez.append(self._get("/healthz"))
            self._stop_evt.wait(self.every)

    def stop(self) -> list[tuple[int, float]]:
        self._stop_evt.set()
        self.join(timeout=65)
        return self.results


# --------------------------------------------------------------------------- cells


def paired(url: str, rec, mode: str, users: list[int], n: int, k: int, meter: CpuMeter) -> tuple[Cell, Cell, Cell]:
    """Alternate one in-process call, one HTTP request and one GET /healthz, n times (one client,
    one keep-alive connection). /healthz is the floor: the same path (client, Serve's proxy, the
    hop into the Ingress replica, its middleware and FastAPI) doing no model work, so the HTTP
    latency less the floor is what the app and the model add. Returns (in-process, HTTP, floor);
    the HTTP cell's server CPU includes the interleaved /healthz requests."""
    from ttds.serve.recommender import Query

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)

    split = []

    def post(u: int) -> int:
        sent = time.time()
        conn.request("POST", "/recommend", json.dumps(body(u, k, mode)), {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        app = server_timing(r.getheader("Server-Timing", ""))
        if app and r.status == 200:
            split.append((app[1] - sent, app[0]))
        return r.status

    def livez() -> int:
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        r.read()
        return r.status

    local, remote, floor = [], [], []
    errors = 0
    for i in range(3):  # warm-up of both paths
        rec.recommend_batch([Query(user_id=users[i], k=k, mode=mode)])
        post(users[i])
        livez()
    cpu0 = meter.snapshot()
    t0 = time.perf_counter()
    for i in range(n):
        u = users[i % len(users)]
        t = time.perf_counter()
        rec.recommend_batch([Query(user_id=u, k=k, mode=mode)])
        local.append(time.perf_counter() - t)
        t = time.perf_counter()
        if post(u) == 200:
            remote.append(time.perf_counter() - t)
        else:
            errors += 1
        t = time.perf_counter()
        if livez() == 200:
            floor.append(time.perf_counter() - t)
        else:
            errors += 1
    wall = time.perf_counter() - t0
    conn.close()
    remote_cell = summarise(f"{mode} (HTTP)", 1, remote, errors, wall)
    remote_cell.server_cpu_ms = CpuMeter.per_request(cpu0, meter.snapshot(), n)
    remote_cell.split = where_time_went(split[3:])  # without the warm-up
    return summarise(f"{mode} (in-process)", 1, local, 0, wall), remote_cell, summarise("floor (GET /healthz)", 1, floor, 0, wall)


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


def http_cell(urls: list[str], mode: str, clients: int, users: list[int], duration: float, max_requests: int, k: int,
              meter: CpuMeter) -> Cell:
    cpu0 = meter.snapshot()
    r = run_clients({"urls": urls, "mode": mode, "clients": clients, "users": users, "duration": duration,
                     "max_requests": max_requests, "k": k, "honour_retry_after": False})
    cell = summarise(f"{mode} (HTTP)", clients, r["ok"], r["errors"], r["wall"])
    cell.client_cpu = round(r["cpu"] / max(r["wall"], 1e-9), 2)
    cpu1 = meter.snapshot()
    cell.server_cpu_ms = CpuMeter.per_request(cpu0, cpu1, len(r["ok"]) + r["errors"])
    cell.server_cores = CpuMeter.cores(cpu0, cpu1, r["wall"])
    cell.split = where_time_went(r["split"]["200"])
    return cell


def overload(urls: list[str], mode: str, clients: int, users: list[int], duration: float, k: int, peak: float,
             meter: CpuMeter) -> Overload:
    """`clients` closed-loop clients that wait Retry-After seconds after a 503; /readyz polled
    (at the first endpoint: with direct ingress, one Ingress replica)."""
    probe = ReadyProbe(urls[0])
    cpu0 = meter.snapshot()
    probe.start()
    try:
        r = run_clients({"urls": urls, "mode": mode, "clients": clients, "users": users, "duration": duration,
                         "max_requests": 10**9, "k": k, "honour_retry_after": True, "recovery": 10})
    finally:
        ready = probe.stop()
    acc, rej = r["ok"], r["rej"]
    cpu1 = meter.snapshot()
    server = CpuMeter.per_request(cpu0, cpu1, len(acc) + len(rej) + r["errors"])
    rps = len(acc) / r["wall"]
    ms = lambda xs, q: round(percentile([x * 1000 for x in xs], q), 1)  # noqa: E731
    return Overload(clients, round(r["wall"], 1), len(acc), len(rej), r["late"], r["errors"], round(r["json_ok"] / max(len(rej), 1), 3),
                    round(rps, 1), round(peak, 1), round(rps / max(peak, 1e-9), 3), ms(acc, 0.5), ms(acc, 0.99), ms(rej, 0.5),
                    ms(rej, 0.99), round(percentile(r["retry"], 0.5), 1), max(r["retry"], default=float("nan")),
                    len(ready), sum(1 for c, _ in ready if c != 200), round(max((d for _, d in ready), default=float("nan")) * 1000, 1),
                    ms(r["recovery"], 0.5), round(os.getloadavg()[0], 1), round(r["cpu"] / max(r["wall"], 1e-9), 2), server,
                    len(meter.gone), round(percentile([d * 1000 for _, d in probe.livez], 0.5), 1),
                    round(max((d for _, d in probe.livez), default=float("nan")) * 1000, 1),
                    where_time_went(r["split"]["200"]), where_time_went(r["split"]["503"]), r["sample"],
                    CpuMeter.cores(cpu0, cpu1, r["wall"]), round((sum(cpu1.values()) - sum(cpu0.values())) * 1000 / max(len(acc), 1), 1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shipped_app(model: str, threads: int, topology: str | None, batch_wait: float | None) -> dict:
    """serve_apps/config.yaml's application as shipped, pointed at `model`; `topology` turns it
    into another one as docs/serving.md says to by hand (`ttds.serve.app.set_topology`)."""
    import yaml

    from ttds.serve.app import set_topology

    app = yaml.safe_load((ROOT / "serve_apps" / "config.yaml").read_text())["applications"][0]
    app = set_topology(app, topology or app["args"].get("topology", "fused"))
    for dep in app["deployments"]:
        dep["user_config"]["model_dir"] = model
        if dep["name"] != "Ingress" or app["args"]["topology"] == "single":  # the deployments holding the model
            dep["user_config"]["num_threads"] = threads
            if batch_wait is not None and dep["name"] != "UserEncoder":
                dep["user_config"]["batch_wait_timeout_s"] = batch_wait
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
            # log_to_driver=False: this process does not echo every replica's access-log line (thousands
            # a second under overload, CPU a deployment's driver does not spend; the logs stay in files)
            init_ray(num_cpus=os.cpu_count() or 2, object_store_mb=300, log_to_driver=False)
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


DIRECT_INGRESS = "RAY_SERVE_ENABLE_DIRECT_INGRESS"


def direct_ingress_urls(app: dict, timeout_s: float = 300) -> list[str]:
    """With `RAY_SERVE_ENABLE_DIRECT_INGRESS=1` each Ingress replica serves HTTP itself on a port
    of its own (Ray allocates them from 30000-31000 on `http_options.host`); Serve publishes them
    as the `target_groups` of `GET /api/serve/applications` (what a load balancer in front would
    read). Waits until every Ingress replica the config starts has one and answers /readyz."""
    import httpx
    from ray.serve import context

    ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
    want = ingress.get("num_replicas") or (ingress.get("autoscaling_config") or {}).get("min_replicas", 1)
    deadline, urls = time.time() + timeout_s, []
    while time.time() < deadline:
        groups = context._get_global_client().get_serve_details().get("target_groups", [])
        urls = sorted({f"http://{t['ip']}:{t['port']}" for g in groups if g.get("app_name") == app["name"]
                       and str(getattr(g["protocol"], "value", g["protocol"])) == "HTTP" for t in g["targets"]})
        if len(urls) >= want:
            try:
                if all(httpx.get(f"{u}/readyz", timeout=10).status_code == 200 for u in urls):
                    return urls
            except httpx.HTTPError:
                pass
        time.sleep(1)
    raise RuntimeError(f"direct ingress: {len(urls)} of {want} Ingress replica endpoints ready after {timeout_s} s: {urls}")


def listening(meter: CpuMeter) -> dict[str, list[str]]:
    """The TCP addresses each Serve process listens on (what Ray bound, e.g. 127.0.0.1 or all interfaces)."""
    out: dict[str, list[str]] = {}
    for name, procs in meter.procs.items():
        for p in procs:
            try:
                conns = p.net_connections(kind="inet")
            except Exception:  # noqa: BLE001 - gone, or not ours to read
                conns = []
            out.setdefault(name, []).extend(sorted({f"{c.laddr.ip}:{c.laddr.port}" for c in conns if c.status == "LISTEN"}))
    return out


def table(cells: list[Cell], ratios: dict, ov: Overload | None, floors: dict | None = None, less_floor: dict | None = None) -> str:
    lines = ["| mode | clients | requests | errors | req/s | p50 ms | p95 ms | p99 ms | before app / in app p50 ms | load avg "
             "| client cores | server CPU ms/request |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in cells:
        cpu = ", ".join(f"{n} {v}" for n, v in c.server_cpu_ms.items())
        split = f"{c.split['before_app_p50_ms']} / {c.split['in_app_p50_ms']}" if c.split else ""
        lines.append(f"| {c.mode} | {c.clients} | {c.requests} | {c.errors} | {c.rps} | {c.p50_ms} | {c.p95_ms} | {c.p99_ms} | "
                     f"{split} | {c.load_avg} | {c.client_cpu} | {cpu} |")
    lines.append("")
    floors, less_floor = floors or {}, less_floor or {}
    lines.append("| mode | clients | HTTP p50 / in-process p50 | floor p50 ms (GET /healthz) | (HTTP - floor) / in-process |")
    lines.append("|---|---:|---:|---:|---:|")
    for mode, by_c in ratios.items():
        for c, r in by_c.items():
            extra = f"{floors[mode]} | {less_floor[mode]:.2f}x" if c == 1 and mode in floors else " | "
            lines.append(f"| {mode} | {c} | {r:.2f}x | {extra} |")
    if ov is not None:
        if ov.processes_died:
            lines += ["", f"WARNING: {ov.processes_died} Serve process(es) died during the run (see the Ray log: "
                      "OOM kills, failed health checks): the figures below are not a clean measurement"]
        cpu = ", ".join(f"{n} {v}" for n, v in ov.server_cpu_ms.items())
        lines += ["", f"overload: {ov.clients} clients honouring Retry-After for {ov.duration_s} s (load avg {ov.load_avg}, "
                  f"client {ov.client_cpu} cores; server CPU ms/request: {cpu}; Serve got {ov.server_cores} cores, "
                  f"{ov.server_cpu_per_accepted_ms} CPU ms per accepted request)",
                  f"  accepted {ov.accepted} = {ov.accepted_rps} req/s = {ov.throughput_vs_peak:.0%} of peak {ov.peak_rps}; "
                  f"accepted p50/p99 {ov.accepted_p50_ms}/{ov.accepted_p99_ms} ms; Serve CPU per accepted request "
                  f"{ov.server_cpu_per_accepted_ms} ms vs {ov.peak_cpu_per_request_ms} ms at the peak (the rest of the "
                  f"shortfall is CPU the host did not give: {ov.server_cores} cores now, {ov.peak_cores} at the peak)",
                  f"  {ov.rejected_503} 503s ({ov.rejected_late} late: queued, then refused at the deadline; "
                  f"{ov.rejected_json_with_retry_after:.0%} JSON with Retry-After), p50/p99 "
                  f"{ov.rejected_p50_ms}/{ov.rejected_p99_ms} ms; Retry-After p50 {ov.retry_after_p50_s} s, max {ov.retry_after_max_s} s; "
                  f"other errors {ov.other_errors} {ov.errors_sample[:2]}",
                  f"  where the time went (p50/p99 ms; before the app: proxy, hop, replica loop | inside the app (server side) | "
                  f"outside the app in all (client total less server side: proxy and hops both ways)): "
                  f"accepted {_parts(ov.accepted_split)}; 503s {_parts(ov.rejected_split)}",
                  f"  /readyz {ov.readyz_polls} polls, {ov.readyz_not_200} not 200, worst {ov.readyz_max_ms} ms; "
                  f"recovery p50 {ov.recovery_p50_ms} ms; /healthz (no work in the app) p50 {ov.healthz_p50_ms} ms, "
                  f"worst {ov.healthz_max_ms} ms",
                  "  targets: " + "; ".join(f"{k} {'OK' if v else 'MISSED'}" for k, v in ov.targets().items())]
    return "\n".join(lines)


def _parts(split: dict) -> str:
    return " | ".join(f"{split.get(f'{k}_p50_ms')}/{split.get(f'{k}_p99_ms')}" for k in ("before_app", "in_app", "outside"))


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
    p.add_argument("--topology", choices=("single", "fused", "composed"), default=None, help="default: the config's")
    p.add_argument("--overload-clients", type=int, default=256, help="0 = no overload run")
    p.add_argument("--overload-duration", type=float, default=20.0)
    p.add_argument("--serve-env", default="", help="KEY=VALUE,... set for every Ray process (Serve's tuning variables, "
                   "e.g. RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0); compare runs with and without")
    p.add_argument("--direct-ingress", action="store_true", help=f"set {DIRECT_INGRESS}=1 (Ray's experimental mode: "
                   "each Ingress replica serves HTTP on its own port, no proxy hop) and send the load straight to "
                   "the replicas' endpoints (concurrent clients spread over them)")
    p.add_argument("--out", default="runs/bench/serve_load.json")
    args = p.parse_args(argv)
    serve_env = dict(kv.split("=", 1) for kv in args.serve_env.split(",") if kv)
    if args.direct_ingress:
        serve_env[DIRECT_INGRESS] = "1"
    elif serve_env.get(DIRECT_INGRESS) == "1":
        p.error(f"use --direct-ingress rather than --serve-env {DIRECT_INGRESS}=1 (the load must go to the replicas' ports)")
    os.environ.update(serve_env)  # before Ray starts: its processes inherit this environment
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
    urls = direct_ingress_urls(app) if args.direct_ingress else [url]  # concurrent clients spread over these
    url = urls[0]  # one client (and the /readyz probe): one endpoint
    meter = CpuMeter()
    sockets = listening(meter)
    print(f"serving at {', '.join(urls)}; Serve processes: {sorted(meter.procs)}; load avg {os.getloadavg()[0]:.1f}; "
          f"listening: {sockets}", flush=True)
    cells: list[Cell] = []
    ratios: dict[str, dict[int, float]] = {}
    floors: dict[str, float] = {}  # one client: p50 ms of GET /healthz (the HTTP path doing no model work)
    less_floor: dict[str, float] = {}  # one client: (HTTP p50 - floor p50) / in-process p50
    ov = None
    try:
        for mode in modes:
            ratios[mode] = {}
            for c in levels:
                floor_note = ""
                if c == 1:
                    local, remote, floor = paired(url, rec, mode, users, args.pairs, args.k, meter)
                    cells += [local, remote, floor]
                    floors[mode] = floor.p50_ms
                    less_floor[mode] = round((remote.p50_ms - floor.p50_ms) / max(local.p50_ms, 1e-9), 2)
                    floor_note = f" (floor GET /healthz p50={floor.p50_ms} ms; less the floor {less_floor[mode]}x)"
                else:
                    local = in_process(rec, mode, c, users, args.batches, args.k)
                    remote = http_cell(urls, mode, c, users, args.duration, args.max_requests, args.k, meter)
                    cells += [local, remote]
                ratios[mode][c] = round(remote.p50_ms / max(local.p50_ms, 1e-9), 2)
                print(f"{mode:9s} clients={c:3d} in-process p50={local.p50_ms} ms, HTTP p50={remote.p50_ms} ms "
                      f"({remote.rps} req/s, errors {remote.errors}) -> {ratios[mode][c]}x{floor_note}; load avg {remote.load_avg}, "
                      f"server CPU ms/request {remote.server_cpu_ms}, client {remote.client_cpu} cores; "
                      f"before the app / in it p50 {remote.split.get('before_app_p50_ms')} / {remote.split.get('in_app_p50_ms')} ms", flush=True)
        if args.overload_clients:
            mode = modes[0]
            probe = http_cell(urls, mode, 32, users, args.duration, 10**9, args.k, meter)
            cells.append(probe)
            peak = max(c.rps for c in cells if c.mode == f"{mode} (HTTP)")  # HTTP cells of this mode, the 32-client run included
            print(f"{mode:9s} clients= 32 {probe.rps} req/s p99={probe.p99_ms} ms; peak {peak} req/s; load avg {probe.load_avg}, "
                  f"server CPU ms/request {probe.server_cpu_ms} ({probe.server_cores} cores), client {probe.client_cpu} cores", flush=True)
            ov = overload(urls, mode, args.overload_clients, users, args.overload_duration, args.k, peak, meter)
            best = max((c for c in cells if c.mode == f"{mode} (HTTP)"), key=lambda c: c.rps)
            ov.peak_cpu_per_request_ms, ov.peak_cores = round(sum(best.server_cpu_ms.values()), 1), best.server_cores
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()
    text = table(cells, ratios, ov, floors, less_floor)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": model, "k": args.k, "topology": app["args"].get("topology"), "cells": [asdict(c) for c in cells],
        "ratio_p50": ratios, "floor_p50_ms": floors, "ratio_p50_less_floor": less_floor, "overload": asdict(ov) if ov else None, "targets": ov.targets() if ov else None,
        "duration_s": args.duration, "threads": args.threads, "batch_wait_timeout_s": args.batch_wait, "serve_env": serve_env, "endpoints": urls, "listening": sockets,
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()},
    }, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client":  # the load generator's own process (run_clients)
        print(json.dumps(asyncio.run(_load(json.loads(sys.argv[2])))))
        sys.exit(0)
    sys.exit(main())
