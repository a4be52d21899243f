"""Request and response models of the HTTP API (pydantic 2), and the one error body.

Why strict types: a recommender silently coercing "12" or 12.7 or true into an item id would
answer a question the client did not ask; rejecting them with a 422 that names the field is
cheaper for everyone. The limits here bound the work one request can cause; the model-specific
checks (is this user / item known?) live in `ttds.serve.recommender` and answer 400/404.

Why the schema is exact (schemathesis checks it, tests/serve/test_schemathesis.py): what the
OpenAPI document calls valid is what the API accepts, and the reverse. Hence no `null` for the
optional fields (an absent field is how "not given" is said), the "who" rule (text alone, or
user_id and/or a non-empty history) written into the schema as `anyOf`, and text that must hold
a non-space character.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

MAX_K = 100
MAX_HISTORY = 200
MAX_TEXT_CHARS = 2000
MAX_BODY_BYTES = 64 * 1024
# ids are dense row numbers (0..n-1); the bound is JSON's safe-integer range, where every integer is
# exact as a double, so a client or validator that reads numbers as doubles agrees on the boundary
MAX_ID = 2**53 - 1


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: 80.0 IS an integer there (a number with no fraction), so it is
    accepted as 80; strings, booleans and 80.5 still fail the strict check that follows."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def json_int(**constraints: int) -> Any:
    """A strict integer that takes JSON's 80.0, with its bounds (in this order, so that the
    schema says minimum/maximum)."""
    return Annotated[StrictInt, Field(**constraints), BeforeValidator(_json_integer)]


def _absent_by_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # "not given" is the field's absence; null is not a valid value

_NOT_TEXT = {"not": {"required": ["text"]}}
# The "who" rule of `RecommendRequest._who`, as JSON Schema: text alone, or user_id, or a non-empty history
_WHO = [
    {"required": ["text"], "not": {"anyOf": [{"required": ["user_id"]}, {"required": ["history"]}]}},
    {"required": ["user_id"], **_NOT_TEXT},
    {"required": ["history"], "properties": {"history": {"minItems": 1}}, **_NOT_TEXT},
]


def _who_schema(schema: dict[str, Any]) -> None:
    schema["anyOf"] = _WHO
    schema["examples"] = [
        {"user_id": 3, "k": 10, "mode": "beam"},
        {"history": [12, 40, 7], "k": 5, "mode": "retrieval", "exclude_seen": True},
        {"text": "a quiet mechanical keyboard", "k": 10},
    ]


class RecommendRequest(BaseModel):
    """Who to recommend for: a known `user_id`, a raw `history`, both, or `text` alone."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_who_schema)

    # `= None` without `| None`: absent means "not given"; an explicit null is a 422 (the schema has no null)
    user_id: json_int(ge=0, le=MAX_ID) = Field(  # type: ignore[valid-type]
        None, description="a user id of the training corpus (0..n_users-1)", json_schema_extra=_absent_by_default)
    history: list[json_int(ge=0, le=MAX_ID)] = Field(  # type: ignore[valid-type]
        None, max_length=MAX_HISTORY, description="item ids, oldest first; without user_id this is a cold-start user (then non-empty)",
        json_schema_extra=_absent_by_default,
    )
    text: StrictStr = Field(  # type: ignore[assignment]
        None, min_length=1, max_length=MAX_TEXT_CHARS, pattern=r"\S",
        description="free text (text cold start; text-sourced models only); alone, without user_id or history",
        json_schema_extra=_absent_by_default,
    )
    k: json_int(ge=1, le=MAX_K) = Field(10, description="how many items to return")  # type: ignore[valid-type]
    mode: Literal["beam", "retrieval"] = Field("beam", description="beam: trie-constrained generation; retrieval: faiss fast path")
    exclude_seen: StrictBool = Field(False, description="drop items already in the user's history")

    @model_validator(mode="after")
    def _who(self) -> "RecommendRequest":
        if self.text is not None and (self.user_id is not None or self.history is not None):
            raise ValueError("send text alone (text cold start), or user_id and/or history without text")
        if self.text is None and self.user_id is None and not self.history:
            raise ValueError("give user_id, a non-empty history (item ids, oldest first) or text")
        return self


class ScoredItem(BaseModel):
    item_id: int
    score: float = Field(description="log P(ID | prompt) in beam mode; cosine in X space in retrieval/text mode")
    title: str = ""


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    mode: Literal["beam", "retrieval", "text"]
    user: Literal["known", "cold_start", "anonymous", "text"] = Field(
        description="known: a training user; cold_start: user ID from the user tower; anonymous: no user tokens; text: text query"
    )
    user_semantic_id: str | None = None
    model_version: str


class ItemInfo(BaseModel):
    item_id: int
    title: str
    semantic_id: str
    model_version: str


class SimilarItems(BaseModel):
    item_id: int
    items: list[ScoredItem]
    model_version: str


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the offending field (body.history.3, query.k, path.item_id)")
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx/5xx the app answers has this body (and the same id in the X-Request-ID header)."""

    error: str = Field(description="what went wrong and, where it can, what to send instead")
    request_id: str = Field(description="quote it when reporting a problem: the server log carries it")
    detail: list[FieldError] | None = Field(None, description="one entry per invalid field (422 only)")


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    model_version: str | None = Field(None, description="the version every component serves (None while they differ)")
    rolling_out: bool = False
    reason: str | None = Field(None, description="why not ready")
    components: dict[str, dict] | None = Field(None, description="per-deployment details; only with health_details: true")


class NotReady(ErrorResponse, Readiness):
    """/readyz when not ready: the error contract's fields and the readiness view."""


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def safe_request_id(value: str | None) -> str | None:
    """A client's X-Request-ID if it is a plain token (it goes into logs and bodies), else None."""
    return value if value and _REQUEST_ID.match(value) else None
