"""The errors Serve's HTTP proxy answers itself, in the app's JSON contract (a middleware in the proxy).

Why: the app shapes every error it answers as the JSON `ErrorResponse`, but some answers never
reach it. Ray 2.60's proxy answers these itself, as text/plain: 503 when the Ingress's queue is
full or no Ingress replica is up, 408 past `http_options.request_timeout_s`, 404 outside every
route prefix. When the replica dies mid-request (`RayActorError`), the proxy sends nothing and
uvicorn answers a bare 500. That is every in-flight request of a dying replica in the shipped
`single` topology.

Ray lets a list of Starlette middlewares wrap its proxy: the proxy imports the callable named
in `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` when it starts (so the variable must be in the
environment of whatever starts Ray: `serve run`, `ray start`; `ttds.runtime.init_ray` sets it to
`ttds.serve.proxy_errors:middlewares`, `ttds.runtime.PROXY_ERRORS_CALLBACK`).
This module's middleware, set in that variable:
- rewrites a text/plain 4xx/5xx from the proxy into an `ErrorResponse`, with the proxy's request
  id and its first line of text (these texts carry no traceback). A 503 gets `Retry-After`.
- answers a request the proxy left without a response with a retryable JSON 503. Only a failure
  in the proxy's call to the replica does that (a dead replica, or Ray's own error). The app's
  own 500s are JSON and pass through. `/recommend` and `/items/...` are reads, so a retry is
  safe, and Serve keeps another replica serving (min_replicas 2) while it replaces the dead one.
The Ray error text (actor ids, node addresses) stays in the proxy's log.
JSON responses, 2xx/3xx and websockets pass through untouched. The body of a text/plain error
is buffered; these bodies are small.
"""

from __future__ import annotations

import json
import logging

from ttds.serve.schemas import ErrorResponse

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
MAX_MESSAGE = 300  # characters of the proxy's text kept in `error`
REPLICA_FAILED = ("the replica serving this request failed before answering (it is being replaced); "
                  "the request did not complete: retry it")


def middlewares() -> list:
    """The proxy callback: Starlette middlewares that wrap Serve's HTTP proxy (see the module doc)."""
    from starlette.middleware import Middleware

    return [Middleware(JsonProxyErrors)]


def _header(headers: list, name: bytes) -> bytes | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def error_messages(status: int, message: str, headers: list) -> list[dict]:
    """The ASGI messages of a JSON `ErrorResponse`; `headers` are kept but for the body's own
    (content type and length); a 503 without `Retry-After` gets one."""
    rid = _header(headers, b"x-request-id")
    body = json.dumps(ErrorResponse(error=message, request_id=rid.decode("latin-1") if rid else "").model_dump(exclude_none=True)).encode()
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-type", b"content-length")]
    if status == 503 and _header(kept, b"retry-after") is None:
        kept.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    kept += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [{"type": "http.response.start", "status": status, "headers": kept},
            {"type": "http.response.body", "body": body, "more_body": False}]


class JsonProxyErrors:
    """Pure ASGI middleware around Serve's proxy app (see the module doc)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict | None = None  # a text error's start message, until its body is complete
        body = bytearray()
        started = False

        async def shaped_send(message) -> None:
            nonlocal held, started
            kind = message["type"]
            if kind == "http.response.start":
                started = True
                headers = [tuple(h) for h in message.get("headers", [])]
                ctype = (_header(headers, b"content-type") or b"").lower()
                if message["status"] >= 400 and not ctype.startswith(b"application/json"):
                    held = {**message, "headers": headers}
                    return
            elif kind == "http.response.body" and held is not None:
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                text = bytes(body).decode("utf-8", "replace").strip().splitlines()
                message_text = (text[0] if text else "")[:MAX_MESSAGE] or f"HTTP {held['status']}"
                for m in error_messages(held["status"], message_text, held["headers"]):
                    await send(m)
                held = None
                return
            await send(message)

        try:
            await self.app(scope, receive, shaped_send)
        finally:
            if not started:  # the proxy gave up on the replica without answering: retryable
                # the proxy's own middleware (inside this one) put the request id into the scope's headers
                rid = _header([tuple(h) for h in scope.get("headers", [])], b"x-request-id")
                headers = [(b"x-request-id", rid)] if rid else []
                log.warning("request %s: the proxy had no response for it (the replica failed, or the client went away): "
                            "answered with a JSON 503", rid.decode("latin-1") if rid else "?")
                try:
                    for m in error_messages(503, REPLICA_FAILED, headers):
                        await send(m)
                except Exception:  # noqa: BLE001 - the client has gone: nothing left to answer
                    pass
