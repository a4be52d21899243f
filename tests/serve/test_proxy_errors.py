"""The proxy middleware (ttds.serve.proxy_errors) over ASGI apps that answer as Ray 2.60's proxy does.

The inner apps send the messages Serve's proxy sends (`convert_object_to_asgi_messages`: a text
body for its own 503/408/404, nothing at all when the call to a replica failed); the end-to-end
case, a replica killed under load behind the real proxy, is tests/serve/test_replica_kill.py.
"""

from __future__ import annotations

import asyncio
import importlib
import json

from starlette.middleware import Middleware

from ttds.serve.proxy_errors import REPLICA_FAILED, JsonProxyErrors, middlewares
from ttds.runtime import PROXY_ERRORS_CALLBACK
from ttds.serve.schemas import ErrorResponse

RID = b"0f3a-req"


def _scope(path: str = "/recommend") -> dict:
    return {"type": "http", "method": "POST", "path": path, "headers": [(b"host", b"127.0.0.1"), (b"x-request-id", RID)]}


def _text_app(status: int, text: bytes, extra: list | None = None, chunks: int = 1):
    async def app(scope, receive, send):
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"x-request-id", RID), *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        step = max(1, len(text) // chunks)
        parts = [text[i : i + step] for i in range(0, len(text), step)] or [b""]
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})
    return app


def _call(app, scope: dict | None = None) -> tuple[int, dict, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(JsonProxyErrors(app)(scope or _scope(), receive, send))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, sent  # exactly one response
    headers = {k.decode().lower(): v.decode() for k, v in starts[0]["headers"]}
    return starts[0]["status"], headers, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def _error(body: bytes) -> ErrorResponse:
    return ErrorResponse.model_validate(json.loads(body))


def test_the_proxys_backpressure_503_becomes_the_json_error_with_its_retry_after():
    text = b"Request dropped due to backpressure (num_queued_requests=256, max_queued_requests=256)."
    status, headers, body = _call(_text_app(503, text, [(b"retry-after", b"1")], chunks=3))
    err = _error(body)
    assert status == 503 and headers["content-type"] == "application/json" and headers["retry-after"] == "1"
    assert err.request_id == RID.decode() == headers["x-request-id"] and err.error == text.decode()
    assert int(headers["content-length"]) == len(body)


def test_a_timeout_and_an_unknown_route_keep_their_status_and_a_503_without_retry_after_gets_one():
    status, headers, body = _call(_text_app(408, b"Request 0f3a-req timed out after 60.0s."))
    assert status == 408 and _error(body).error.startswith("Request 0f3a-req timed out") and "retry-after" not in headers
    status, _, body = _call(_text_app(404, b"Path '/nope' not found. Ping http://.../-/routes for available routes."))
    assert status == 404 and "not found" in _error(body).error
    status, headers, body = _call(_text_app(503, b"Deployment 'Ingress' in application 'ttds' is unavailable."))
    assert status == 503 and headers["retry-after"] == "1" and _error(body).request_id == RID.decode()


def test_no_response_from_the_proxy_becomes_a_retryable_json_503_not_a_bare_500():
    async def replica_died(scope, receive, send):  # what the proxy does on RayActorError: sends nothing
        return None

    status, headers, body = _call(replica_died)
    assert status == 503 and headers["retry-after"] == "1" and headers["x-request-id"] == RID.decode()
    assert _error(body).error == REPLICA_FAILED and "Actor" not in body.decode()


def test_json_errors_successes_and_other_protocols_pass_through_untouched():
    async def app_error(scope, receive, send):  # the app's own ErrorResponse
        await send({"type": "http.response.start", "status": 422, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"error": "k: too large", "request_id": "x"}'})

    status, _, body = _call(app_error)
    assert status == 422 and json.loads(body)["error"] == "k: too large"
    status, headers, body = _call(_text_app(200, b"success"))  # the proxy's /-/healthz
    assert status == 200 and body == b"success" and headers["content-type"].startswith("text/plain")

    seen = []

    async def websocket(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(JsonProxyErrors(websocket)({"type": "websocket", "headers": []}, None, None))
    assert seen == ["websocket"]


def test_the_callback_that_init_ray_names_returns_starlette_middleware_for_the_proxy():
    module, name = PROXY_ERRORS_CALLBACK.split(":")
    assert getattr(importlib.import_module(module), name) is middlewares
    got = middlewares()
    assert len(got) == 1 and isinstance(got[0], Middleware) and got[0].cls is JsonProxyErrors
