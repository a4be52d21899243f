"""Ray Serve application of the TTDS recommender: four deployments composed with handles.

  Ingress (FastAPI) ─► UserEncoder ─(PromptState)─► SemanticIDGenerator   beam search, @serve.batch
        │                                      └─► Retriever             faiss fast path, text cold start
        └─► Retriever (GET /items/{id}, /items/{id}/similar)

The UserEncoder validates and resolves user id / history / text into a PromptState; its
response is passed unresolved to the ranking step, which receives it straight from the encoder.

Why split this way: the encoder is cheap CPU work that needs no backbone; beam search is the
expensive, batchable part and the one to put on GPUs and autoscale; retrieval needs one
forward pass and a faiss index and scales separately.

Rollout: each deployment loads the model folder named in its `user_config` (`reconfigure`).
`serve deploy` with a changed model_dir reconfigures the running replicas in place: the new
model loads beside the old one and one reference is swapped, so requests in flight finish on
the model they started with and none is dropped. `serve.run` again (or a code change) replaces
replicas instead; `max_surge_percent` starts the new ones before the old ones stop. States carry
the model version; a step on another version re-resolves (see `ttds.serve.recommender`).

Run:  serve run serve_apps/config.yaml                 (edit model_dir there first)
      serve run serve_apps.app:build_app model_dir=runs/train_ttds/<ts>/model
"""

import asyncio
import gc
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query as QueryParam, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_apps.schemas import (
    MAX_BODY_BYTES,
    MAX_HISTORY,
    MAX_K,
    MAX_TEXT_CHARS,
    ErrorResponse,
    Health,
    ItemInfo,
    RecommendRequest,
    RecommendResponse,
    ScoredItem,
    SimilarItems,
)
from ttds.config import RecommenderConfig
from ttds.serve.recommender import Failure, PromptState, Query, Recommendation, Recommender, RequestError, route

log = logging.getLogger("ray.serve")
MODEL_ENV = "TTDS_MODEL_DIR"


# --------------------------------------------------------------------------- model holder


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


def _rank(rec: Recommender, items: list) -> list:
    """Rank a batch in which some entries are already Failures (from the encoder): pass those on."""
    out = list(items)
    live = [i for i, s in enumerate(items) if isinstance(s, PromptState)]
    for i, r in zip(live, rec.run([items[i] for i in live]) if live else []):
        out[i] = r
    return out


def _as_values(fn, *args):
    """Run fn; a RequestError becomes a Failure value (no exception, no traceback crosses Ray)."""
    try:
        return fn(*args)
    except RequestError as e:
        return Failure.of(e)


# --------------------------------------------------------------------------- deployments

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
    """Validation + who the user is: known user ID, cold-start user ID from the tower, or text."""

    PARTS = ()

    async def resolve(self, query: Query) -> PromptState | Failure:
        return _as_values(self.current().resolve, query)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=32,
    max_queued_requests=128,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 16},
    **_COMMON,
)
class SemanticIDGenerator(ModelHolder):
    """Trie-constrained beam search over item semantic IDs, batched across concurrent requests."""

    PARTS = ("generator",)
    BATCHED = "generate"

    # batch_wait_timeout_s=0: no waiting for company. The batch runs off the event loop, so
    # requests that arrive while one batch computes queue up and form the next one (natural
    # batching under load) while a lone request pays no wait (measured: a 10 ms wait was a third
    # of the serving overhead at one client). user_config may set a wait for throughput.
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def generate(self, states: list[PromptState | Failure]) -> list[Recommendation | Failure]:
        rec = self.current()
        # off the event loop: requests keep arriving (and forming the next batch) meanwhile
        return await asyncio.to_thread(_rank, rec, states)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=64,
    max_queued_requests=256,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 16},
    **_COMMON,
)
class Retriever(ModelHolder):
    """Fast path (prompt → id_head → faiss over item X), text cold start, item metadata."""

    PARTS = ("retriever",)
    BATCHED = "retrieve"

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)  # see SemanticIDGenerator.generate
    async def retrieve(self, states: list[PromptState | Failure]) -> list[Recommendation | Failure]:
        rec = self.current()
        return await asyncio.to_thread(_rank, rec, states)

    async def item(self, item_id: int) -> dict | Failure:
        rec = self.current()
        return _as_values(lambda: {**rec.item_info(item_id), "model_version": rec.version})

    async def similar(self, item_id: int, k: int) -> dict | Failure:
        rec = self.current()

        def run() -> dict:
            items = rec.similar_items(item_id, k)
            return {"item_id": item_id, "items": [(i, s, rec.titles[i]) for i, s in items], "model_version": rec.version}

        return _as_values(run)


# --------------------------------------------------------------------------- HTTP ingress

ERRORS = {
    400: {"model": ErrorResponse, "description": "bad input (unknown item in history, malformed JSON, ...)"},
    404: {"model": ErrorResponse, "description": "unknown user or item"},
    413: {"model": ErrorResponse, "description": "body over 64 KiB"},
    422: {"model": ErrorResponse, "description": "wrong types or out-of-range values"},
    503: {"model": ErrorResponse, "description": "overloaded or model not loaded: retry later"},
}

app = FastAPI(
    title="ttds recommender",
    description="Generative recommendation with learned semantic IDs (TTDS): trie-constrained beam search "
    "over item IDs, or the faiss retrieval fast path. Cold-start users get a user ID from the user tower.",
    version="0.1.0",
    max_body_size=MAX_BODY_BYTES,  # 413 past 64 KiB (Content-Length or streamed), before parsing
)


def _error(status: int, message: str, detail: list | None = None, headers: dict | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    bad_json = [e for e in errors if e.get("type") == "json_invalid"]
    if bad_json:
        pos = (bad_json[0].get("ctx") or {}).get("error", "")
        return _error(400, f"request body is not valid JSON ({pos})" if pos else "request body is not valid JSON")
    detail = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body", "message": str(e.get("msg", ""))} for e in errors]
    return _error(422, "invalid request: " + "; ".join(f"{d['field']}: {d['message']}" for d in detail), detail)


@app.exception_handler(StarletteHTTPException)
async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = uuid.uuid4().hex[:12]
    log.error("unhandled error %s on %s: %r", rid, request.url.path, exc, exc_info=exc)
    return _error(500, f"internal error (id {rid}); the server log has the details")


def _failure(f: Failure) -> JSONResponse:
    return _error(f.status, f.message)


async def _guard(coro):
    """Await a handle call; backpressure → 503, anything unexpected → generic 500 (logged)."""
    from ray.serve.exceptions import BackPressureError

    try:
        return await coro
    except BackPressureError:
        return _error(503, "overloaded: too many queued requests, retry shortly", headers={"Retry-After": "1"})
    except Exception as exc:  # noqa: BLE001 - never a traceback to the client
        rid = uuid.uuid4().hex[:12]
        log.error("request %s failed: %r", rid, exc, exc_info=exc)
        return _error(500, f"internal error (id {rid}); the server log has the details")


async def _awaited(response):
    return await response


# NOTE: everything the Ingress methods use must be defined above it: `serve.ingress` captures
# the class (and the module globals it sees) when it is decorated.
@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=64,
    max_queued_requests=128,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 32},
    # an Ingress request may wait for a downstream replica that is loading a model
    **{**_COMMON, "graceful_shutdown_timeout_s": 60},
)
@serve.ingress(app)
class Ingress:
    """HTTP front: validation (pydantic), routing by mode, error mapping. Holds no model."""

    def __init__(self, encoder: DeploymentHandle, generator: DeploymentHandle, retriever: DeploymentHandle):
        self.encoder, self.generator, self.retriever = encoder, generator, retriever
        self.expected_model: str | None = None

    def reconfigure(self, config: dict) -> None:
        """Only the model_dir the operator asked for, so /healthz can say a rollout is under way."""
        config = config or {}
        self.expected_model = str(Path(config["model_dir"]).resolve()) if config.get("model_dir") else None

    @app.post("/recommend", response_model=RecommendResponse, responses=ERRORS)
    async def recommend(self, req: RecommendRequest):
        """Top-k items for a known user, a raw history (cold start) or a text (text-sourced models)."""
        q = Query(user_id=req.user_id, history=req.history, text=req.text, k=req.k, mode=req.mode, exclude_seen=req.exclude_seen)
        # The encoder's response is handed on unresolved: the ranking step receives the state
        # (or the encoder's Failure) straight from the encoder, without a round trip through here.
        state = self.encoder.resolve.remote(q)
        step = self.generator.generate if route(q) == "generator" else self.retriever.retrieve
        rec = await _guard(step.remote(state))
        if isinstance(rec, JSONResponse):
            return rec
        if isinstance(rec, Failure):
            return _failure(rec)
        return RecommendResponse(
            items=[ScoredItem(item_id=i, score=s, title=t) for (i, s), t in zip(rec.items, rec.titles)],
            mode=rec.mode,
            user=rec.kind,
            user_semantic_id=rec.user_semantic_id,
            model_version=rec.version,
        )

    @app.get("/items/{item_id}", response_model=ItemInfo, responses=ERRORS)
    async def item(self, item_id: int):
        """Title and semantic ID of an item."""
        out = await _guard(self.retriever.item.remote(item_id))
        if isinstance(out, Failure):
            return _failure(out)
        return out

    @app.get("/items/{item_id}/similar", response_model=SimilarItems, responses=ERRORS)
    async def similar(self, item_id: int, k: int = QueryParam(10, ge=1, le=MAX_K)):
        """Nearest items by cosine over the items' X."""
        out = await _guard(self.retriever.similar.remote(item_id, k))
        if isinstance(out, (Failure, JSONResponse)):
            return _failure(out) if isinstance(out, Failure) else out
        return SimilarItems(item_id=out["item_id"], items=[ScoredItem(item_id=i, score=s, title=t) for i, s, t in out["items"]],
                            model_version=out["model_version"])

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz(self):
        """ok when every component has a model and all serve the same version."""
        comps: dict[str, dict] = {}
        for name, handle in (("encoder", self.encoder), ("generator", self.generator), ("retriever", self.retriever)):
            try:
                comps[name] = await asyncio.wait_for(_awaited(handle.status.remote()), timeout=5)
            except Exception as exc:  # noqa: BLE001
                comps[name] = {"version": None, "error": f"unavailable ({type(exc).__name__}: {exc})"[:500]}
        versions = {c.get("version") for c in comps.values()}
        dirs = {c.get("model_dir") for c in comps.values()}
        ok = None not in versions and len(versions) == 1
        rolling = len(versions) > 1 or (self.expected_model is not None and dirs != {self.expected_model})
        body = Health(status="ok" if ok else "degraded", model_version=next(iter(versions)) if ok else None, rolling_out=rolling, components=comps)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


# --------------------------------------------------------------------------- composition


def compose(model_dir: str | None, options: dict[str, dict] | None = None, recommender: dict | None = None):
    """The bound application. `options[name]` are `.options()` for that deployment (tests and
    the benchmark use them for replica counts and limits); `recommender` overrides serving knobs."""
    options = options or {}
    user_config = {"model_dir": str(model_dir), **(recommender or {})} if model_dir else None

    def bind(dep, name: str, cfg: dict | None):
        opts = dict(options.get(name, {}))
        if cfg is not None:
            opts.setdefault("user_config", cfg)
        return dep.options(**opts) if opts else dep

    encoder = bind(UserEncoder, "UserEncoder", user_config).bind()
    generator = bind(SemanticIDGenerator, "SemanticIDGenerator", user_config).bind()
    retriever = bind(Retriever, "Retriever", user_config).bind()
    ingress_cfg = {"model_dir": str(model_dir)} if model_dir else None
    return bind(Ingress, "Ingress", ingress_cfg).bind(encoder, generator, retriever)


def build_app(args: dict[str, Any] | None = None):
    """Application builder for `serve run serve_apps.app:build_app model_dir=...` and config files.

    With a config file, `user_config.model_dir` of each deployment is what is served (and what a
    rollout changes); `args.model_dir` is only the default when a deployment has no user_config.
    """
    args = dict(args or {})
    model_dir = args.get("model_dir") or os.environ.get(MODEL_ENV)
    if model_dir and not (Path(model_dir) / "ttds.json").exists():
        raise FileNotFoundError(f"model_dir {model_dir} is not a TTDS model folder (no ttds.json); train one with jobs/train_ttds.py")
    return compose(model_dir, args.get("options"), args.get("recommender"))
