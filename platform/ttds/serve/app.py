"""Ray Serve application of the TTDS recommender: an HTTP ingress in front of the ranking replicas.

Three topologies, chosen by `args.topology` in serve_apps/config.yaml (`set_topology` turns a
config into another):

  single (shipped; small CPU models) Ingress(+model)                     the ingress replica holds the model
  fused (the builder's default)      Ingress ─► Ranker                   resolve + rank in one batched call
  composed (large models)            Ingress ─► UserEncoder ─► Ranker    the encoder's response is handed
                                                                          on unresolved (no round trip)

The Ranker holds the whole `Recommender` and hands each batch to `Recommender.recommend_batch`
(queries) or `Recommender.run` (states from the encoder), which route by mode; this module only
adds transport, batching, admission, health and the mapping of results and failures to HTTP.

Why three: every Serve hop costs a few milliseconds of serialisation and scheduling, which for a
small model is most of a request (measured: three hops ~30 ms against ~5-10 ms of model time;
with fused, the Ingress -> Ranker part was half of what remained, the Server-Timing split in
benchmarks/serve_load.py). Fused, a request crosses one internal hop after the proxy's; single,
none: the Ingress replica runs the batched model calls itself (in a thread, so /healthz,
/readyz and admission keep answering), each replica admitting for itself. Single gives up
scaling the HTTP front apart from the model, keeping model work out of the process that
answers health, and the Ingress's retry of a model replica that dies mid-request (those in flight
fail: Serve's proxy answers them, a retryable JSON 503 with ttds.serve.proxy_errors): for a small CPU model it still won every measured
figure (docs/serving.md), so config.yaml ships it. For a large backbone on GPUs the cheap CPU
work of resolving users (histories, user tower) is worth keeping off the GPU replicas: composed.

The Ingress holds no model in fused and composed. It admits requests by time (`ttds.serve.admission`: start within a
deadline or a fast JSON 503 with Retry-After), answers /healthz (liveness) and /readyz (readiness)
without queueing behind requests, and shapes every error as the one `ErrorResponse`.

Rollout: each model deployment loads the folder named in its `user_config` (`reconfigure`).
`serve deploy` with a changed model_dir reconfigures the running replicas in place: the new model
loads beside the old one and one reference is swapped, so requests in flight finish on the model
they started with. States carry the model version; a step on another version re-resolves.

Run:  serve run serve_apps/config.yaml                 (edit model_dir there first)
      serve run serve_apps.app:build_app model_dir=runs/train_ttds/<ts>/model
"""


import asyncio
import dataclasses
import gc
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, Query as QueryParam, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from ttds.config import RecommenderConfig
from ttds.serve.recommender import Failure, PromptState, Query, Recommendation, Recommender, RequestError
from ttds.serve.admission import Admission, AdmissionConfig, Overloaded
from ttds.serve.schemas import (
    MAX_BODY_BYTES,
    MAX_HISTORY,
    MAX_ID,
    MAX_K,
    MAX_TEXT_CHARS,
    ErrorResponse,
    ItemInfo,
    Liveness,
    NotReady,
    Readiness,
    RecommendRequest,
    RecommendResponse,
    ScoredItem,
    SimilarItems,
    safe_request_id,
)

log = logging.getLogger("ray.serve")
MODEL_ENV = "TTDS_MODEL_DIR"
TOPOLOGIES = ("single", "fused", "composed")


# --------------------------------------------------------------------------- model holders


BATCH_KEYS = ("max_batch_size", "batch_wait_timeout_s")  # serving-layer keys of user_config


def parse_user_config(config: dict | None) -> tuple[str, RecommenderConfig]:
    """`{"model_dir": ..., <RecommenderConfig fields>...}` → (model_dir, config); clear errors."""
    config = dict(config or {})
    model_dir = config.pop("model_dir", None) or os.environ.get(MODEL_ENV)
    if not model_dir:
        raise ValueError(f"user_config needs model_dir (a folder written by jobs/train_ttds.py), or set {MODEL_ENV}")
    if not (Path(model_dir) / "ttds.json").exists():
        raise FileNotFoundError(f"model_dir {model_dir} is not a TTDS model folder (no ttds.json)")
    config.setdefault("max_k", MAX_K)
    config.setdefault("max_request_history", MAX_HISTORY)
    config.setdefault("max_text_chars", MAX_TEXT_CHARS)
    return str(Path(model_dir).resolve()), RecommenderConfig.from_dict(config)


class ModelHolder:
    """Holds the Recommender in force; `reconfigure` loads a new one, then swaps atomically.

    Requests read `self.rec` once and keep that object, so a swap mid-request is harmless. A
    failed rollout keeps the old model serving (and says so in `status`) rather than leave
    the replica with nothing; a failed FIRST load fails the replica so `serve status` shows it.
    """

    PARTS: tuple[str, ...] = ()  # Recommender parts this deployment needs (see Recommender.load)
    BATCHED: str | None = None  # name of the @serve.batch method whose knobs user_config may set

    def __init__(self) -> None:
        self.rec: Recommender | None = None
        self._key: tuple | None = None
        self.last_error: str | None = None
        self._lock = asyncio.Lock()

    async def reconfigure(self, config: dict) -> None:
        config = dict(config or {})
        batching = {k: config.pop(k) for k in BATCH_KEYS if k in config}
        if self.BATCHED:
            method = getattr(self, self.BATCHED)
            if "max_batch_size" in batching:
                method.set_max_batch_size(int(batching["max_batch_size"]))
            if "batch_wait_timeout_s" in batching:
                method.set_batch_wait_timeout_s(float(batching["batch_wait_timeout_s"]))
        async with self._lock:
            try:
                model_dir, cfg = parse_user_config(config)
                key = (model_dir, cfg)
                if key == self._key:
                    return
                rec = await asyncio.to_thread(Recommender.load, model_dir, cfg, self.PARTS)
            except Exception as e:  # noqa: BLE001 - reported, and fatal only without an old model
                if self.rec is None:
                    raise
                self.last_error = f"rollout to {config.get('model_dir')} failed, still serving {self.rec.model_dir}: {type(e).__name__}: {e}"
                log.error(self.last_error)
                return
            old, self.rec, self._key, self.last_error = self.rec, rec, key, None
            log.info("%s now serves %s (version %s)", type(self).__name__, rec.model_dir, rec.version)
        if old is not None:
            del old
            gc.collect()
            _empty_cuda_cache()

    def current(self) -> Recommender:
        rec = self.rec
        if rec is None:
            raise RuntimeError("no model loaded: give the deployment a user_config with model_dir")
        return rec

    def check_health(self) -> None:
        self.current()

    async def status(self) -> dict:
        rec = self.rec
        out: dict[str, Any] = rec.status() if rec is not None else {"model_dir": None, "version": None}
        out["last_error"] = self.last_error
        return out


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def rank_batch(rec: Recommender, items: list) -> list[Recommendation | Failure]:
    """One batch as the Ranker receives it: Queries (fused), PromptStates or the encoder's
    Failures (composed). Queries go to `recommend_batch`, states to `run`; Failures pass through.
    The Recommender answers per row, so one bad row never fails its neighbours."""
    out: list = list(items)
    queries = [i for i, x in enumerate(items) if isinstance(x, Query)]
    states = [i for i, x in enumerate(items) if isinstance(x, PromptState)]
    for rows, fn in ((queries, rec.recommend_batch), (states, rec.run)):
        if rows:
            for i, r in zip(rows, fn([items[i] for i in rows])):
                out[i] = r
    return out


def _as_values(fn, *args):
    """Run fn; a RequestError becomes a Failure value (no exception, no traceback crosses Ray)."""
    try:
        return fn(*args)
    except RequestError as e:
        return Failure.of(e)


# max_surge_percent=100: a restart (new code or actor options) starts the replacement before the
# old replica stops, so a deployment is never without a replica while a model loads.
_COMMON = dict(health_check_period_s=10, health_check_timeout_s=30, graceful_shutdown_timeout_s=30,
               graceful_shutdown_wait_loop_s=2, max_surge_percent=100)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=64,
    max_queued_requests=256,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 16},
    **_COMMON,
)
class UserEncoder(ModelHolder):
    """Composed topology only: who the user is (known ID, cold-start ID from the tower, or text)."""

    PARTS = ()

    async def resolve(self, query: Query) -> PromptState | Failure:
        return await asyncio.to_thread(_as_values, self.current().resolve, query)  # a text query runs the tower: off the loop


class Ranking(ModelHolder):
    """The model calls: beam search and retrieval (and, fused, resolving users), batched across
    concurrent requests; also item metadata and similar items. The Ranker deployment is this;
    in the single topology the Ingress is this too."""

    PARTS = ("generator", "retriever")
    BATCHED = "rank"

    # batch_wait_timeout_s=0: no waiting for company. The batch runs off the event loop, so
    # requests that arrive while one batch computes queue up and form the next one (natural
    # batching under load) while a lone request pays no wait (measured: a 10 ms wait was a third
    # of the serving overhead at one client). user_config may set a wait for throughput.
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def rank(self, items: list[Query | PromptState | Failure]) -> list[Recommendation | Failure]:
        rec = self.current()
        # off the event loop: requests keep arriving (and forming the next batch), status answers
        return await asyncio.to_thread(rank_batch, rec, items)

    async def item_info(self, item_id: int) -> dict | Failure:
        rec = self.current()
        return _as_values(lambda: {**rec.item_info(item_id), "model_version": rec.version})

    async def similar_items(self, item_id: int, k: int) -> dict | Failure:
        rec = self.current()

        def run() -> dict:
            items = rec.similar_items(item_id, k)
            return {"item_id": item_id, "items": [(i, s, rec.titles[i]) for i, s in items], "model_version": rec.version}

        return await asyncio.to_thread(_as_values, run)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=32,
    max_queued_requests=64,
    autoscaling_config={"min_replicas": 2, "max_replicas": 4, "target_ongoing_requests": 16},
    **_COMMON,
)
class Ranker(Ranking):
    """The model replica (fused and composed topologies)."""


class _Local:
    """Stands in for a DeploymentHandle when the model lives in this replica (single topology):
    `self.ranker.rank.remote(q)` becomes `await self.rank(q)`, so the routes are the same code."""

    def __init__(self, target: Any):
        self._target = target

    def __getattr__(self, name: str) -> "_LocalMethod":
        return _LocalMethod(getattr(self._target, name))


class _LocalMethod:
    def __init__(self, fn):
        self._fn = fn

    def remote(self, *args):
        return self._fn(*args)  # a coroutine: the caller awaits it as it would a DeploymentResponse


# --------------------------------------------------------------------------- HTTP: one error contract


def _request_id(request: Request) -> str:
    """Serve's proxy puts an x-request-id on every request (the client's own, or a new one) and
    echoes it in the response; outside Serve (tests) the middleware below does the same."""
    state = request.scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        rid = safe_request_id(request.headers.get("x-request-id")) or uuid.uuid4().hex
        state["request_id"] = rid
    return rid


def error_response(request: Request, status: int, message: str, detail: list | None = None,
                   headers: dict | None = None) -> JSONResponse:
    body = ErrorResponse(error=message, request_id=_request_id(request), detail=detail)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
    """Admission's refusal: 503 with the reason and its Retry-After."""
    return error_response(request, 503, f"{exc.reason}; retry after {exc.retry_after_s} s", headers=_retry_after(exc.retry_after_s))


def _admitted(scope) -> bool:
    """Whether the request goes through admission (`Ingress._call`): the model routes, POST
    /recommend and GET /items/..., not health, docs or the schema."""
    path = scope.get("path", "")
    root = scope.get("root_path", "").rstrip("/")
    if root and path.startswith(root):
        path = path[len(root):]
    method = scope.get("method")
    return (method == "POST" and path == "/recommend") or (method == "GET" and path.startswith("/items/"))


class BodyTooLarge(HTTPException):  # FastAPI's class: its body reader re-raises it as is
    def __init__(self) -> None:
        super().__init__(413, f"request body over {MAX_BODY_BYTES // 1024} KiB")


class EdgeMiddleware:
    """Outermost ASGI layer of the app: a request id on every response, a `Server-Timing`
    header, and the body limit (413 as the JSON ErrorResponse: Starlette's own limit answers
    text/plain). A declared Content-Length over the limit is refused before reading; a streamed
    body when it passes it.

    `Server-Timing: app;dur=<ms>, arrive;desc=<unix time>` says how long the app spent on the
    request and when it reached the app: a client on the same host subtracts its send time to
    see how long the request waited in front of the app (Serve's proxy, the hop, the replica's
    event loop), which is where overload time went (benchmarks/serve_load.py reports it).

    Overload is refused here too, before the body is read: a request to an admitted route
    (`_admitted`) that admission would refuse on arrival gets its JSON 503 at once. Why here:
    under Serve the body is not in the request, the replica fetches it from the proxy (a call
    back into a proxy that is as busy as everything else under overload), then FastAPI parses
    and validates it; measured at 256 clients, those steps were most of a 503's time in the app
    (p50 ~0.4 s) for a decision that takes microseconds; judged here, a 503's time in the app is
    p99 ~2-6 ms. A request let through holds its place (`Admission.arrive`) until `Ingress._call`
    hands it to admission, or leaves if validation refuses it. The Ingress puts its `Admission`
    on `app.state.admission` (one Ingress replica per process)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        arrived, t0 = time.time(), time.perf_counter()
        request = Request(scope)
        incoming = safe_request_id(request.headers.get("x-request-id"))
        rid = _request_id(request)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                timing = f"app;dur={(time.perf_counter() - t0) * 1000:.2f}, arrive;desc={arrived:.6f}"
                extra = [(b"server-timing", timing.encode())] + ([(b"x-request-id", rid.encode())] if incoming is None else [])
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            response = error_response(request, 413, BodyTooLarge().detail)
            return await response(scope, receive, send_with_id)
        admission = getattr(getattr(scope.get("app"), "state", None), "admission", None)
        arrival = None
        if admission is not None and _admitted(scope):
            try:
                arrival = admission.arrive()
            except Overloaded as exc:
                return await overloaded(request, exc)(scope, receive, send_with_id)
            scope["state"]["arrival"] = arrival  # Ingress._call hands it to admission
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY_BYTES:
                    raise BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
        finally:
            if arrival is not None:  # refused by validation (or any error) before admission
                admission.leave(arrival)


ERRORS = {
    400: {"model": ErrorResponse, "description": "a well-formed request the loaded model cannot serve (unknown item in history, "
          "text on a model without text features), or malformed JSON"},
    404: {"model": ErrorResponse, "description": "unknown user or item"},
    413: {"model": ErrorResponse, "description": f"body over {MAX_BODY_BYTES // 1024} KiB"},
    422: {"model": ErrorResponse, "description": "wrong types, out-of-range values or unknown fields / query parameters"},
    500: {"model": ErrorResponse, "description": "internal error (the request id is in the server log)"},
    503: {"model": ErrorResponse, "description": "overloaded (could not start within the admission deadline) or a replica "
          "failed: retry after the Retry-After header's seconds",
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait before retrying"}}},
}

app = FastAPI(
    title="ttds recommender",
    description="Generative recommendation with learned semantic IDs (TTDS): trie-constrained beam search "
    "over item IDs, or the faiss retrieval fast path. Cold-start users get a user ID from the user tower. "
    "Every error is an ErrorResponse with a request id.",
    version="0.2.0",
    docs_url=None,  # served below from the installed swagger-ui-bundle package: no CDN
    redoc_url=None,
)
app.add_middleware(EdgeMiddleware)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    bad_json = [e for e in errors if e.get("type") == "json_invalid"]
    if bad_json:
        pos = (bad_json[0].get("ctx") or {}).get("error", "")
        return error_response(request, 400, f"request body is not valid JSON ({pos})" if pos else "request body is not valid JSON")
    detail = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        field = ".".join(loc[1:] if loc and loc[0] == "body" else loc) or "body"
        detail.append({"field": field, "message": str(e.get("msg", ""))})
    return error_response(request, 422, "invalid request: " + "; ".join(f"{d['field']}: {d['message']}" for d in detail), detail)


@app.exception_handler(StarletteHTTPException)
async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.url.path}; see /docs or /openapi.json"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(request, exc.status_code, message, headers=getattr(exc, "headers", None))


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = _request_id(request)
    log.error("unhandled error (request %s) on %s: %r", rid, request.url.path, exc, exc_info=exc)
    return error_response(request, 500, "internal error; the server log has the details under this request id")


_INT = re.compile(r"^[0-9]+$")


def strict_params(query: tuple[str, ...] = (), ints: tuple[str, ...] = ()):
    """Dependency making the parameters exactly what the schema says: unknown query parameters
    are a 422 (as unknown body fields are), and integer path/query parameters are digits only
    (FastAPI's lax parsing would take "+0.0" or "1_0" for an integer, which no schema allows)."""

    def check(request: Request) -> None:
        errors = [{"type": "extra_forbidden", "loc": ("query", name), "msg": "unknown query parameter", "input": request.query_params.get(name)}
                  for name in sorted(set(request.query_params) - set(query))]
        for name in ints:
            for where, params in (("path", request.path_params), ("query", request.query_params)):
                raw = params.get(name)
                if raw is not None and not _INT.match(str(raw)):
                    errors.append({"type": "int_parsing", "loc": (where, name), "msg": "must be an integer (digits only)", "input": raw})
        if errors:
            raise RequestValidationError(errors)

    return Depends(check)


def _retry_after(seconds: int) -> dict:
    return {"Retry-After": str(max(0, int(seconds)))}


async def _awaited(response):
    return await response


# --------------------------------------------------------------------------- offline docs


def _swagger_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


DOC_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}


# --------------------------------------------------------------------------- ingress


class ReadyView:
    """What /readyz answers, refreshed in the background so the endpoint never waits.

    A component is ready when its replica reports a loaded model. Status calls go straight to
    the model replicas, which keep room for them: admission caps the work in flight below their
    `max_ongoing_requests`, and a batch runs off the replica's event loop. A poll that still
    times out keeps the last answer, which stays valid while requests keep succeeding.
    """

    STALE_S = 15.0

    def __init__(self) -> None:
        self.components: dict[str, dict] = {}
        self.polled_at = 0.0
        self.ok_at = 0.0  # last successful answer from a model replica (poll or request)
        self.task: asyncio.Task | None = None


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    # far above admission's in-flight + queue: the proxy never queues (its 503 is text/plain);
    # the app refuses with a JSON 503 instead. /healthz and /readyz therefore never wait.
    max_ongoing_requests=1024,
    max_queued_requests=256,
    backpressure_config={"retry_after_s": 1},
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 256},
    **{**_COMMON, "graceful_shutdown_timeout_s": 60},
)
@serve.ingress(app)
class Ingress(Ranking):
    """HTTP front: validation (pydantic), admission, health, error mapping. Holds no model,
    except in the single topology (no `ranker` handle given), where it is the Ranker too."""

    def __init__(self, ranker: DeploymentHandle | None = None, encoder: DeploymentHandle | None = None):
        super().__init__()
        self.local = ranker is None
        self.ranker, self.encoder = (_Local(self) if self.local else ranker), encoder
        self.expected_model: str | None = None
        self.health_details = False
        self.admission = Admission()
        app.state.admission = self.admission  # EdgeMiddleware refuses with it before reading a body
        self.ready = ReadyView()

    async def reconfigure(self, config: dict) -> None:
        """`model_dir` (so /readyz can say a rollout is under way), `admission` (AdmissionConfig
        fields) and `health_details` (show model paths and errors on /readyz: off by default).
        Single topology: also the Ranker's keys (RecommenderConfig fields, batching), loaded here."""
        config = dict(config or {})
        mine = {k: config.pop(k) for k in ("admission", "health_details") if k in config}
        if not self.local:
            unknown = sorted(set(config) - {"model_dir"})
            if unknown:
                raise ValueError(f"unknown Ingress user_config key(s) {unknown}; known: admission, health_details, model_dir")
        self.expected_model = str(Path(config["model_dir"]).resolve()) if config.get("model_dir") else None
        self.health_details = bool(mine.get("health_details", False))
        self.admission.configure(AdmissionConfig.from_dict(mine.get("admission")))
        if self.local:
            await super().reconfigure(config)

    def check_health(self) -> None:
        if self.local:  # the model is here: no model, no health (as a Ranker)
            super().check_health()

    # ------------------------------------------------------------------ calls downstream
    def _components(self) -> dict[str, DeploymentHandle]:
        return {"ranker": self.ranker, **({"encoder": self.encoder} if self.encoder is not None else {})}

    async def _call(self, request: Request, make_call):
        """Admit, call downstream, map transport failures. Returns the value or a JSONResponse.

        A replica that dies mid-request is retried once (requests are idempotent) while the
        deadline allows, then answered 503 with Retry-After: the client may retry."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        cfg = self.admission.cfg
        try:
            async with self.admission.slot(request.scope.get("state", {}).get("arrival")):
                t0 = time.perf_counter()
                for attempt in (0, 1):
                    try:
                        out = await make_call()
                        self.ready.ok_at = time.monotonic()
                        return out
                    except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
                        log.warning("request %s: replica failed (%s), attempt %d", _request_id(request), type(exc).__name__, attempt + 1)
                        if attempt == 1 or time.perf_counter() - t0 > cfg.deadline_s:
                            return error_response(request, 503, "a model replica failed while handling the request; retry",
                                                  headers=_retry_after(cfg.retry_after_s))
        except Overloaded as exc:
            return overloaded(request, exc)
        except (BackPressureError, DeploymentUnavailableError) as exc:
            return error_response(request, 503, f"model replicas unavailable or saturated ({type(exc).__name__}); retry",
                                  headers=_retry_after(self.admission.retry_after_s()))
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client
            log.error("request %s failed: %r", _request_id(request), exc, exc_info=exc)
            return error_response(request, 500, "internal error; the server log has the details under this request id")

    # ------------------------------------------------------------------ API
    @app.post("/recommend", response_model=RecommendResponse, responses=ERRORS, dependencies=[strict_params()])
    async def recommend(self, req: RecommendRequest, request: Request):
        """Top-k items for a known user, a raw history (cold start) or a text (text-sourced models)."""
        q = Query(user_id=req.user_id, history=req.history, text=req.text, k=req.k, mode=req.mode, exclude_seen=req.exclude_seen)

        def call():
            # composed: the encoder's response goes to the Ranker unresolved (no round trip here)
            return self.ranker.rank.remote(self.encoder.resolve.remote(q) if self.encoder is not None else q)

        rec = await self._call(request, call)
        if isinstance(rec, JSONResponse):
            return rec
        if isinstance(rec, Failure):
            return error_response(request, rec.status, rec.message)
        return RecommendResponse(
            items=[ScoredItem(item_id=i, score=s, title=t) for (i, s), t in zip(rec.items, rec.titles)],
            mode=rec.mode,
            user=rec.kind,
            user_semantic_id=rec.user_semantic_id,
            model_version=rec.version,
        )

    @app.get("/items/{item_id}", response_model=ItemInfo, responses=ERRORS, dependencies=[strict_params(ints=("item_id",))])
    async def item(self, item_id: Annotated[int, PathParam(ge=0, le=MAX_ID)], request: Request):
        """Title and semantic ID of an item."""
        out = await self._call(request, lambda: self.ranker.item_info.remote(item_id))
        if isinstance(out, Failure):
            return error_response(request, out.status, out.message)
        return out

    @app.get("/items/{item_id}/similar", response_model=SimilarItems, responses=ERRORS, dependencies=[strict_params(query=("k",), ints=("item_id", "k"))])
    async def similar(self, item_id: Annotated[int, PathParam(ge=0, le=MAX_ID)], request: Request,
                      k: Annotated[int, QueryParam(ge=1, le=MAX_K)] = 10):
        """Nearest items by cosine over the items' X."""
        out = await self._call(request, lambda: self.ranker.similar_items.remote(item_id, k))
        if isinstance(out, JSONResponse):
            return out
        if isinstance(out, Failure):
            return error_response(request, out.status, out.message)
        return SimilarItems(item_id=out["item_id"], items=[ScoredItem(item_id=i, score=s, title=t) for i, s, t in out["items"]],
                            model_version=out["model_version"])

    # ------------------------------------------------------------------ health
    @app.get("/healthz", response_model=Liveness, responses={500: {"model": ErrorResponse}}, dependencies=[strict_params()])
    async def healthz(self):
        """Liveness: the ingress process answers. Never waits on a model or the request queue."""
        return Liveness()

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": NotReady}}, dependencies=[strict_params()])
    async def readyz(self, request: Request):
        """Readiness: every model deployment has a loaded model (busy is still ready). Answered
        from a view refreshed in the background every second, so it never waits on a request."""
        r = self.ready
        if r.task is None or r.task.done():
            r.task = asyncio.get_running_loop().create_task(self._refresh_forever())
        if not r.polled_at:  # first call: wait for the first poll, bounded
            for _ in range(20):
                if r.polled_at:
                    break
                await asyncio.sleep(0.05)
        body = self._readiness()
        if body.status == "ready":
            return body
        # not ready is an error like any other: the ErrorResponse fields, plus the readiness view
        out = NotReady(error=f"not ready: {body.reason}", request_id=_request_id(request), **body.model_dump())
        return JSONResponse(out.model_dump(exclude_none=True), status_code=503, headers=_retry_after(self.admission.cfg.retry_after_s))

    async def _refresh_forever(self) -> None:
        while True:
            await self._poll()
            await asyncio.sleep(1.0)

    async def _poll(self) -> None:
        async def one(name: str, handle: DeploymentHandle) -> tuple[str, dict | None]:
            try:
                return name, await asyncio.wait_for(_awaited(handle.status.remote()), timeout=2.0)
            except Exception as exc:  # noqa: BLE001 - unreachable or busy: keep the last answer
                if self.ready.components.get(name, {}).get("_ok", True):  # say it once per outage
                    log.warning("status of %s: no answer (%s: %s)", name, type(exc).__name__, exc)
                self.ready.components.setdefault(name, {})["_ok"] = False
                return name, None

        results = await asyncio.gather(*(one(n, h) for n, h in self._components().items()))
        now = time.monotonic()
        for name, status in results:
            if status is not None:
                self.ready.components[name] = {**status, "_at": now, "_ok": True}
        if all(s is not None for _, s in results):
            self.ready.ok_at = now
        self.ready.polled_at = now

    def _readiness(self) -> Readiness:
        r, now = self.ready, time.monotonic()
        names = list(self._components())
        comps = {n: r.components.get(n) for n in names}
        missing = [n for n, st in comps.items() if st is None or st.get("version") is None]  # st: a component's status
        versions = {st.get("version") for st in comps.values() if st}
        dirs = {st.get("model_dir") for st in comps.values() if st}
        rolling = len(versions) > 1 or (self.expected_model is not None and bool(dirs) and dirs != {self.expected_model}) \
            or any(st and st.get("last_error") for st in comps.values())
        reason = None
        if missing:
            reason = f"no model loaded yet in: {', '.join(missing)}"
        elif now - r.ok_at > ReadyView.STALE_S:
            reason = f"no answer from the model replicas for {now - r.ok_at:.0f} s"
        if self.health_details:
            details = {n: {k: v for k, v in (c or {}).items() if not k.startswith("_")} for n, c in comps.items()}
        else:
            details = None
        return Readiness(status="not_ready" if reason else "ready", model_version=next(iter(versions)) if len(versions) == 1 else None,
                         rolling_out=rolling, reason=reason, components=details)

    # ------------------------------------------------------------------ docs (no CDN)
    @app.get("/docs", include_in_schema=False)
    async def docs(self, request: Request):
        root = request.scope.get("root_path", "").rstrip("/")
        assets = _swagger_dir()
        if assets is None:  # the package is missing: still no CDN, just the schema
            return HTMLResponse(f'<html><body><p>Swagger UI assets are not installed (pip install swagger-ui-bundle).</p>'
                                f'<p>The API schema: <a href="{root}/openapi.json">{root}/openapi.json</a></p></body></html>')
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title=f"{app.title} - docs",
                                   swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
                                   swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png")

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def doc_asset(self, name: str, request: Request):
        assets = _swagger_dir()
        if assets is None or name not in DOC_ASSETS:
            return error_response(request, 404, f"no docs asset {name!r}")
        return Response((assets / name).read_bytes(), media_type=DOC_ASSETS[name], headers={"Cache-Control": "max-age=86400"})


# --------------------------------------------------------------------------- composition


def compose(model_dir: str | None, options: dict[str, dict] | None = None, recommender: dict | None = None,
            topology: str = "fused", ingress: dict | None = None):
    """The bound application. `options[name]` are `.options()` for that deployment (tests and
    the benchmark use them for replica counts and limits); `recommender` overrides serving knobs;
    `ingress` is the Ingress user_config (admission, health_details) beside model_dir."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
    options = options or {}
    user_config = {"model_dir": str(model_dir), **(recommender or {})} if model_dir else None

    def bind(dep, name: str, cfg: dict | None):
        opts = dict(options.get(name, {}))
        if cfg is not None:
            opts.setdefault("user_config", cfg)
        return dep.options(**opts) if opts else dep

    ingress_cfg = {**({"model_dir": str(model_dir)} if model_dir else {}), **(ingress or {})} or None
    if topology == "single":  # the Ingress is the Ranker: it takes the Ranker's user_config keys too
        return bind(Ingress, "Ingress", {**(user_config or {}), **(ingress_cfg or {})} or None).bind()
    ranker = bind(Ranker, "Ranker", user_config).bind()
    encoder = bind(UserEncoder, "UserEncoder", user_config).bind() if topology == "composed" else None
    return bind(Ingress, "Ingress", ingress_cfg).bind(ranker, encoder)


INGRESS_KEYS = ("model_dir", "admission", "health_details")  # the Ingress's own user_config keys (model_dir: for /readyz)
MODEL_PLACEMENT = ("ray_actor_options", "autoscaling_config", "num_replicas")  # where the model runs, and how many


def set_topology(app_config: dict, topology: str) -> dict:
    """A config.yaml application (any topology) turned into `topology`: what to do by hand in
    config.yaml (docs/serving.md); the benchmark and the tests use this.

    To `single`, the Ranker block folds into the Ingress: its user_config keys (RecommenderConfig
    fields, batching), CPUs and replica counts; the Ingress keeps its admission, health and
    request limits, and a UserEncoder block goes. From `single` to `fused`/`composed`, the
    reverse: the model's user_config keys, CPUs and replica counts move to a Ranker block, and the
    Ingress, now model-free, takes the code's defaults for those (`Ingress` above). `composed`
    also gets a UserEncoder block (model_dir and num_threads of the Ranker) unless it has one.
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
    deps = {d["name"]: dict(d) for d in app_config["deployments"]}
    if "Ingress" not in deps:
        raise ValueError(f"the application has no Ingress deployment block: {sorted(deps)}")
    ingress, ranker, encoder = deps.pop("Ingress"), deps.pop("Ranker", None), deps.pop("UserEncoder", None)
    config = dict(ingress.get("user_config") or {})
    if ranker is None:  # single: split the model part out of the Ingress
        ranker = {"name": "Ranker", "user_config": {k: v for k, v in config.items() if k not in INGRESS_KEYS[1:]},
                  **{k: ingress.pop(k) for k in MODEL_PLACEMENT if k in ingress}}
        ingress["user_config"] = {k: v for k, v in config.items() if k in INGRESS_KEYS}
    if topology == "single":
        merged = {**ingress, "user_config": {**(ranker.get("user_config") or {}), **ingress.get("user_config", {})}}
        merged.update({k: ranker[k] for k in MODEL_PLACEMENT if k in ranker})
        out = [merged]
    else:
        out = [ingress, ranker]
        if topology == "composed":
            model = ranker.get("user_config") or {}
            out.append(encoder or {"name": "UserEncoder", "user_config": {k: model[k] for k in ("model_dir", "num_threads") if k in model}})
    return {**app_config, "args": {**app_config.get("args", {}), "topology": topology}, "deployments": [*out, *deps.values()]}


@dataclasses.dataclass
class AppArgs:
    """The `args:` of the Serve application (serve_apps/config.yaml, or `serve run ... key=value`):
    typed, so an unknown key is refused by name and a default lives in one place."""

    model_dir: str = ""  # "" = $TTDS_MODEL_DIR, or each deployment's user_config.model_dir
    topology: str = "fused"  # fused | single (what serve_apps/config.yaml ships) | composed (set_topology)
    options: dict[str, dict] | None = None  # .options() per deployment name
    recommender: dict | None = None  # RecommenderConfig overrides
    ingress: dict | None = None  # Ingress user_config overrides


def build_app(args: dict[str, Any] | None = None):
    """Application builder for `serve run serve_apps.app:build_app model_dir=...` and config files.

    `args.topology`: fused (the default here, with the code's deployment options), single (what
    serve_apps/config.yaml ships) or composed. With a config file, `user_config.model_dir` of
    each deployment is what is served (and what a rollout changes); `args.model_dir` is only the
    default when a deployment has no user_config.
    """
    try:
        a = AppArgs(**dict(args or {}))
    except TypeError as e:  # an unknown key, by name
        known = ", ".join(f.name for f in dataclasses.fields(AppArgs))
        raise ValueError(f"unknown application arg: {e}; known: {known}") from None
    model_dir = a.model_dir or os.environ.get(MODEL_ENV)
    if model_dir and not (Path(model_dir) / "ttds.json").exists():
        raise FileNotFoundError(f"model_dir {model_dir} is not a TTDS model folder (no ttds.json); train one with jobs/train_ttds.py")
    return compose(model_dir, a.options, a.recommender, a.topology, a.ingress)
