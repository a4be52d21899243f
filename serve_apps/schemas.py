"""Request and response models of the HTTP API (pydantic 2).

Why strict types: a recommender silently coercing "12" or 12.7 or true into an item id would
answer a question the client did not ask; rejecting them with a 422 that names the field is
cheaper for everyone. The limits here bound the work one request can cause; the model-specific
checks (is this user / item known?) live in `ttds.serve.recommender` and answer 400/404.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

MAX_K = 100
MAX_HISTORY = 200
MAX_TEXT_CHARS = 2000
MAX_BODY_BYTES = 64 * 1024


class RecommendRequest(BaseModel):
    """Who to recommend for: a known `user_id`, a raw `history`, both, or `text` alone."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user_id": 3, "k": 10, "mode": "beam"},
                {"history": [12, 40, 7], "k": 5, "mode": "retrieval", "exclude_seen": True},
                {"text": "a quiet mechanical keyboard", "k": 10},
            ]
        },
    )

    user_id: StrictInt | None = Field(None, ge=0, description="a user id of the training corpus (0..n_users-1)")
    history: list[StrictInt] | None = Field(
        None, max_length=MAX_HISTORY, description="item ids, oldest first; without user_id this is a cold-start user"
    )
    text: StrictStr | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS, description="free text (text cold start; text-sourced models only)")
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="how many items to return")
    mode: Literal["beam", "retrieval"] = Field("beam", description="beam: trie-constrained generation; retrieval: faiss fast path")
    exclude_seen: StrictBool = Field(False, description="drop items already in the user's history")

    @model_validator(mode="after")
    def _who(self) -> "RecommendRequest":
        if self.text is not None and (self.user_id is not None or self.history):
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


class SimilarItems(BaseModel):
    item_id: int
    items: list[ScoredItem]
    model_version: str


class ErrorResponse(BaseModel):
    error: str
    detail: list[dict] | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    model_version: str | None
    rolling_out: bool = False
    components: dict[str, dict]
