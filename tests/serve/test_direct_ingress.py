"""The shipped app under Ray's experimental direct ingress (`RAY_SERVE_ENABLE_DIRECT_INGRESS=1`,
docs/serving.md): each Ingress replica serves HTTP on its own port, which must bind the config's
127.0.0.1, and the app must keep its routes and its one JSON error contract there.

The variable is read when Serve is imported in each Ray process, so this runs its own Ray in a
subprocess (the session's Ray has it off), with the benchmark's helpers that deploy the shipped
config and find the replicas' endpoints (`benchmarks/serve_load.py --direct-ingress`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
import httpx
sys.path.insert(0, sys.argv[2])
import serve_load as sl
from ray import serve

app = sl.shipped_app(sys.argv[1], 1, None, None)
for d in app["deployments"]:
    d["autoscaling_config"] = {"min_replicas": 1, "max_replicas": 1, "initial_replicas": 1}
    d["ray_actor_options"] = {"num_cpus": 0.05}
out = {}
try:
    sl.start_serve(app)
    urls = sl.direct_ingress_urls(app)
    out["urls"], out["listening"] = urls, sl.listening(sl.CpuMeter())
    u = urls[0]
    def get(r):
        try:
            body = r.json()
        except ValueError:
            body = r.text[:300]
        return {"status": r.status_code, "type": r.headers.get("content-type", ""), "rid": r.headers.get("x-request-id"), "body": body}
    out["healthz"] = get(httpx.get(f"{u}/healthz", timeout=60))
    out["readyz"] = get(httpx.get(f"{u}/readyz", timeout=60))
    out["ok"] = get(httpx.post(f"{u}/recommend", json={"user_id": 3, "k": 5}, timeout=60))
    out["own_id"] = get(httpx.post(f"{u}/recommend", json={"user_id": 3, "k": 5}, headers={"x-request-id": "mine-1"}, timeout=60))
    out["invalid"] = get(httpx.post(f"{u}/recommend", json={"user_id": 3, "k": 500}, timeout=60))
    out["too_large"] = get(httpx.post(f"{u}/recommend", content=b"x" * 70000, headers={"content-type": "application/json"}, timeout=60))
    out["no_route"] = get(httpx.get(f"{u}/nope", timeout=60))
    docs = httpx.get(f"{u}/docs", timeout=60)
    out["docs"] = {"status": docs.status_code, "cdn": "https://" in docs.text}
finally:
    serve.shutdown()
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_shipped_app_under_direct_ingress(tiny_model):
    model = tiny_model(0, True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own
    env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(model), str(ROOT / "benchmarks")], capture_output=True, text=True,
                         timeout=840, env=env, cwd=ROOT, check=False)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout[-3000:] + res.stderr[-5000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    print(json.dumps(out, indent=1)[:3000])

    # the replica's own port, from Ray's range, bound to loopback only
    (url,) = out["urls"]
    host, port = url.removeprefix("http://").rsplit(":", 1)
    assert host == "127.0.0.1" and 30000 <= int(port) < 31000, url
    assert f"127.0.0.1:{port}" in out["listening"]["Ingress"], out["listening"]
    assert not any(a.endswith(f":{port}") and not a.startswith("127.0.0.1:") for addrs in out["listening"].values() for a in addrs)

    assert out["healthz"]["status"] == 200 and out["readyz"]["status"] == 200, out
    assert out["ok"]["status"] == 200 and len(out["ok"]["body"]["items"]) == 5, out["ok"]
    assert out["own_id"]["rid"] == "mine-1", out["own_id"]
    for name, status in (("invalid", 422), ("too_large", 413), ("no_route", 404)):
        r = out[name]
        assert r["status"] == status and r["type"].startswith("application/json"), (name, r)
        assert r["body"]["request_id"] == r["rid"], (name, r)  # the one error contract, request id included
    assert out["docs"] == {"status": 200, "cdn": False}
