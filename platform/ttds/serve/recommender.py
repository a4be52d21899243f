"""The trained recommender as one in-process object: what the Serve deployments and Python callers use.

Why one plain-Python class under the Serve app: everything a request needs (ID tables, prompt
builder, trie, backbone, features, faiss index, user histories) comes from ONE model folder and
must stay consistent with it. Keeping it here means the HTTP app, the benchmark and the tests run
the same code, and the deployments only add transport, batching and rollout on top.

This class only loads, resolves users and delegates: every ranking is `ttds.rank`'s, the code
offline evaluation runs (so a user gets the same list from both: tests/rank checks it).

A request goes through two steps, which the Serve app runs in separate deployments:
  1. `resolve`  (UserEncoder): validate the input, turn user id / raw history / text into a
     `PromptState` (who the user is to the model, which items go in the prompt);
  2. the ranking part `route(query)` names: "generator" (SemanticIDGenerator: `rank_beam`,
     trie-constrained beam search) or "retriever" (Retriever: the item head when the model has
     one, else `rank_retrieval`, the L_ID head into X space and the faiss index; text queries
     search the text index). `run` groups a batch by that one routing rule.
Errors are per request: a row that cannot be served (text on a model without text features,
retrieval without features) gets its own `Failure`; its batch neighbours are still ranked.
A `PromptState` carries the model version it was resolved with; a step running another version
(mid-rollout) re-resolves the query itself, so a prompt is never built with one ID table and
decoded with another.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ttds.config import RecommenderConfig
from ttds.data.corpus import Corpus
from ttds.data.rejects import DataError
from ttds.index.kway import tokenize_unseen_users
from ttds.index.table import level_token
from ttds.llm.model_io import load_model, prompt_builder
from ttds.rank.beam import BeamConfig, rank_beam
from ttds.rank.item_head import rank_item_head
from ttds.rank.item_index import ItemIndex
from ttds.rank.new_items import first_new_item, new_item_rule
from ttds.rank.retrieval import pool_of, rank_retrieval
from ttds.rank.ties import query_keys
from ttds.rank.trie import build_trie
from ttds.runtime import select_device

log = logging.getLogger(__name__)

MODES = ("beam", "retrieval")
PARTS = ("generator", "retriever")  # what needs the backbone; the encoder part is always loaded


class RequestError(ValueError):
    """Bad input. The message says what to fix; `status` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Failure:
    """A RequestError as a plain value: crosses process boundaries without a traceback."""

    status: int
    message: str

    @classmethod
    def of(cls, err: RequestError) -> "Failure":
        return cls(err.status, err.message)


@dataclass
class Query:
    """One request as the client gave it (already type-checked by the HTTP layer or the caller)."""

    user_id: int | None = None
    history: list[int] | None = None
    text: str | None = None
    k: int = 10
    mode: str = "beam"
    exclude_seen: bool = False


@dataclass
class PromptState:
    """What the model needs for one request, in entity ids (not token ids: see module doc)."""

    query: Query
    version: str
    kind: str  # "known" | "cold_start" | "anonymous" (history, no user tokens) | "text"
    user_id: int = -1  # a row of the user table, -1 when the prompt names no known user
    user_codes: tuple[int, ...] | None = None  # cold-start user codes from the user tower
    history: list[int] = field(default_factory=list)  # the items in the prompt (clipped)
    seen: list[int] = field(default_factory=list)  # everything the user had, for exclude_seen
    text: str | None = None


@dataclass
class Recommendation:
    items: list[tuple[int, float]]  # (item id, score), best first
    mode: str  # "beam" | "retrieval" | "text"
    kind: str
    version: str
    user_semantic_id: str | None = None
    titles: list[str] = field(default_factory=list)  # one per item ("" when the corpus is absent)


def model_version(model_dir: Path) -> str:
    """Content hash of what defines the model's meaning (meta + ID tables), 12 hex chars.

    Content, not path: a copied folder is the same model; a re-trained one in the same place is not.
    """
    h = hashlib.sha1()
    for name in ("ttds.json", "item_ids.parquet", "user_ids.parquet", "id_head.safetensors"):
        p = model_dir / name
        if p.exists():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def route(query: Query) -> str:
    """The Recommender part that ranks a query: THE routing rule (the Serve app calls it to pick a
    deployment, `Recommender.run` to group a batch). Beam-mode prompts go to the "generator";
    retrieval mode and text queries to the "retriever"."""
    return "generator" if query.text is None and query.mode == "beam" else "retriever"


class Recommender:
    """Loaded model + everything derived from it; immutable after `load` (swap, don't mutate)."""

    def __init__(self, model_dir: Path, cfg: RecommenderConfig, parts: Sequence[str]):
        self.model_dir, self.cfg, self.parts = model_dir, cfg, tuple(parts)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model_dir: str | Path, cfg: RecommenderConfig | None = None, parts: Sequence[str] = PARTS) -> "Recommender":
        """Load a model folder written by jobs/train_ttds.py (`<run>/model`).

        `parts` chooses what needs the backbone: "generator" (beam search, trie on the device),
        "retriever" (fast path: id_head + faiss). With neither, the backbone is dropped after
        loading: the UserEncoder deployment only needs tables, towers, features and histories.
        """
        cfg = cfg or RecommenderConfig()
        bad = sorted(set(parts) - set(PARTS))
        if bad:
            raise ValueError(f"unknown parts {bad}; choose from {PARTS}")
        model_dir = Path(model_dir).expanduser().resolve()
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        self = cls(model_dir, cfg, parts)
        spec = select_device(cfg.device)
        needs_backbone = bool(parts)
        lm = load_model(model_dir, device=spec.device if needs_backbone else None)
        self.version = model_version(model_dir)
        self.meta = lm.meta
        self.device = spec.device if needs_backbone else torch.device("cpu")
        self.tokenizer = lm.tokenizer
        self.items_table, self.users_table = lm.items, lm.users
        self.towers = lm.model.towers.to("cpu").eval()  # cold start encodes one vector: CPU, no transfer
        self.id_head = lm.model.id_head.eval()
        # the item head (models trained with loss.item_head_weight > 0) is the retrieval mode's ranker when present
        head = lm.model.item_head
        self.item_head = head.eval() if (head is not None and "retriever" in parts) else None
        self.backbone = lm.model.backbone.eval() if needs_backbone else None
        vocab = lm.tokenizer.get_vocab()
        self.vocab = vocab
        self.builder = prompt_builder(lm)
        self.n_items = len(lm.items)
        self.max_history = int(lm.meta.get("max_history", 20))
        self.trie = build_trie(self.builder, len(lm.tokenizer)).to(self.device) if "generator" in parts else None
        # items added after training (jobs/add_items.py): their share of a beam's top k (ttds.rank.new_items)
        self.new_items = (new_item_rule(self.trie, lm.items.levels, self.n_items, first_new_item(lm.meta), cfg.new_item_share)
                          if self.trie is not None else None)
        self._load_features(model_dir)
        self._load_corpus(cfg.corpus_dir or lm.meta.get("corpus_dir", ""))
        self.pool = pool_of(lm.meta)
        self.item_index = ItemIndex(self.item_x) if ("retriever" in parts and self.item_x is not None) else None
        self.text_index = None
        if "retriever" in parts and self.text_dims > 0 and self.item_x is not None:
            self.text_index = ItemIndex(self.item_x[:, : self.text_dims])
        del lm
        log.info("loaded model %s (version %s) parts=%s on %s", model_dir, self.version, parts, self.device)
        return self

    def _load_features(self, model_dir: Path) -> None:
        path = model_dir / "features.safetensors"
        self.item_x = self.user_x = None
        self.feature_source, self.text_dims, self._cold_scale = "none", 0, 1.0
        if not path.exists():
            log.warning("%s has no features.safetensors: retrieval mode and cold-start user IDs are off", model_dir)
            return
        from safetensors import safe_open
        from safetensors.numpy import load_file

        with safe_open(str(path), framework="numpy") as fh:
            info = fh.metadata() or {}
        t = load_file(str(path))
        self.item_x = np.asarray(t["item_x"], dtype=np.float32)
        self.user_x = np.asarray(t["user_x"], dtype=np.float32) if "user_x" in t else None
        self.feature_source = info.get("source", "unknown")
        self.text_dims = int(info.get("text_dims", 0) or 0)
        if len(self.item_x) != self.n_items:
            raise ValueError(f"features.safetensors has {len(self.item_x)} items but the ID table {self.n_items}")

    def _load_corpus(self, corpus_dir: str) -> None:
        """Histories (train + valid: everything before the test item) and titles.

        A serving machine may lack the corpus: then only raw-history requests work, and a
        user-id request says so instead of failing obscurely.
        """
        self.histories: list[np.ndarray] | None = None
        self.titles: list[str] = [""] * self.n_items
        self.corpus_dir = corpus_dir
        try:
            corpus = Corpus.open(corpus_dir) if corpus_dir else None
        except DataError as e:
            log.warning("no user histories: %s", e)
            corpus = None
        if corpus is None:
            return
        if corpus.n_items != self.n_items:
            log.warning("corpus %s has %d items, the model %d: not using its histories", corpus_dir, corpus.n_items, self.n_items)
            return
        seqs = corpus.sequences
        train = seqs.column("train").to_pylist()
        valid = seqs.column("valid").to_numpy()
        hist: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * corpus.n_users
        for uid, tr, va in zip(seqs.column("user_id").to_numpy(), train, valid):
            h = list(tr) + ([int(va)] if va >= 0 else [])
            hist[int(uid)] = np.asarray(h, dtype=np.int64)
        self.histories = hist
        self.titles = corpus.item_titles
        self._cold_scale = self._cold_start_scale(corpus.train_sequences)

    def _cold_start_scale(self, train_sequences: list[np.ndarray]) -> float:
        """Mean norm of users' X over mean norm of "mean of their training items' X".

        The user tower was trained on user_x, which is standardised on its own (collaborative
        user vectors carry the user's factor too), so a plain mean of item X sits at another
        scale; matching the average norm puts a cold-start vector where the tower expects input.
        """
        if self.user_x is None or self.item_x is None or self.user_x.shape[1] != self.item_x.shape[1]:
            return 1.0
        users = [u for u, s in enumerate(train_sequences[: len(self.user_x)]) if len(s)][:2000]
        if not users:
            return 1.0
        means = np.stack([self.item_x[train_sequences[u]].mean(0) for u in users])
        denom = float(np.linalg.norm(means, axis=1).mean())
        return float(np.linalg.norm(self.user_x[users], axis=1).mean()) / max(denom, 1e-8)

    # ------------------------------------------------------------------ facts
    @property
    def n_users(self) -> int:
        if self.users_table is not None:
            return len(self.users_table)
        return len(self.histories) if self.histories is not None else 0

    def status(self) -> dict:
        return {
            "model_dir": str(self.model_dir),
            "version": self.version,
            "items": self.n_items,
            "users": self.n_users,
            "user_tower": self.towers.user is not None,
            "features": self.feature_source,
            "text_cold_start": self.text_dims > 0 and self.text_dims == self.id_head.in_features,
            "device": str(self.device),
            "parts": list(self.parts),
        }

    def item_info(self, item_id: int) -> dict:
        self._check_item(item_id)
        return {"item_id": int(item_id), "title": self.titles[item_id], "semantic_id": self.items_table.id_string(entity_id=int(item_id))}

    # ------------------------------------------------------------------ step 1: resolve
    def _check_k(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.cfg.max_k:
            raise RequestError(f"k must be an integer in 1..{self.cfg.max_k}, got {k!r}")

    def _check_item(self, item_id: int) -> None:
        if isinstance(item_id, bool) or not isinstance(item_id, (int, np.integer)) or not 0 <= item_id < self.n_items:
            raise RequestError(f"item {item_id!r} is unknown: item ids are integers 0..{self.n_items - 1}", status=404)

    def resolve(self, q: Query) -> PromptState:
        """Validate a query and say who the user is to the model. Raises RequestError."""
        self._check_k(q.k)
        if q.mode not in MODES:
            raise RequestError(f"mode must be one of {list(MODES)}, got {q.mode!r}")
        if q.text is not None:
            if q.user_id is not None or q.history:
                raise RequestError("send text alone (text cold start), or user_id and/or history without text")
            if not isinstance(q.text, str) or not q.text.strip():
                raise RequestError("text is empty: describe what the user wants, or send user_id / history")
            if len(q.text) > self.cfg.max_text_chars:
                raise RequestError(f"text has {len(q.text)} characters; at most {self.cfg.max_text_chars} are accepted")
            return PromptState(q, self.version, "text", text=q.text)
        history = self._check_history(q.history) if q.history is not None else None
        if q.user_id is None:
            if not history:
                raise RequestError("give user_id, a non-empty history (item ids, oldest first) or text")
            codes = self.cold_start_codes(history)
            kind = "cold_start" if codes is not None else "anonymous"
            return PromptState(q, self.version, kind, -1, codes, history[-self.max_history :], list(history))
        uid = q.user_id
        if isinstance(uid, bool) or not isinstance(uid, (int, np.integer)) or not 0 <= uid < self.n_users:
            hint = "" if self.n_users == 0 else f"known users are 0..{self.n_users - 1}; "
            raise RequestError(f"user {uid!r} is unknown: {hint}for a new user send `history` (item ids) instead", status=404)
        if history is None:
            if self.histories is None:
                raise RequestError(
                    f"this deployment has no stored histories (corpus {self.corpus_dir or '?'} not found); send `history` with user_id"
                )
            history = self.histories[int(uid)].tolist()
        return PromptState(q, self.version, "known", int(uid), None, history[-self.max_history :], list(history))

    def _check_history(self, history) -> list[int]:
        if not isinstance(history, (list, tuple, np.ndarray)):
            raise RequestError("history must be a list of item ids (integers), oldest first")
        if len(history) > self.cfg.max_request_history:
            raise RequestError(
                f"history has {len(history)} items; at most {self.cfg.max_request_history} are accepted "
                f"(the model reads the last {self.max_history}): send the most recent ones"
            )
        bad = [h for h in history if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or not 0 <= h < self.n_items]
        if bad:
            shown = ", ".join(repr(b) for b in bad[:10]) + (" ..." if len(bad) > 10 else "")
            raise RequestError(f"history holds {len(bad)} unknown item id(s): {shown}; item ids are integers 0..{self.n_items - 1}")
        return [int(h) for h in history]

    def cold_start_codes(self, history: Sequence[int]) -> tuple[int, ...] | None:
        """User codes for a user unseen in training, by the one cold-start rule
        (`ttds.index.kway.tokenize_unseen_users`: the user tower on the mean X of the history,
        nothing retrained). None when the model has no user tower or no matching X."""
        tower = self.towers.user
        if tower is None or self.item_x is None or not len(history):
            return None
        if tower.config.input_dim != self.item_x.shape[1]:
            return None  # user X was built differently (e.g. user text): no sound mapping
        codes = tokenize_unseen_users(tower, self.item_x, [list(history)], self._cold_scale)
        return tuple(int(c) for c in codes[0].tolist())

    def _user_code_tokens(self, codes: Sequence[int]) -> list[int] | None:
        names = [level_token("user", lv, c) for lv, c in enumerate(codes)]
        if not all(n in self.vocab for n in names):
            return None
        return [self.vocab[n] for n in names]

    def cold_start_user_tokens(self, history: Sequence[int]) -> list[int]:
        """LM token ids naming a new user with this history ([] = the prompt gets no user tokens)."""
        codes = self.cold_start_codes(self._check_history(list(history)))
        return (self._user_code_tokens(codes) or []) if codes is not None else []

    def user_tokens(self, state: PromptState) -> list[int]:
        if state.user_codes is not None:
            return self._user_code_tokens(state.user_codes) or []
        if state.user_id >= 0 and self.builder.users is not None:
            return self.builder.users.get(state.user_id)
        return []

    def user_semantic_id(self, state: PromptState) -> str | None:
        toks = self.user_tokens(state)
        return "".join(self.tokenizer.convert_ids_to_tokens(toks)) if toks else None

    def prompt_ids(self, state: PromptState) -> list[int]:
        """The next-item prompt, built by the evaluation's own `builder.next_item_prompt`, with the
        user slot filled by the state's user tokens (a table user's ID, or a cold-start user's
        codes) when the model's prompts carry one."""
        tokens = self.user_tokens(state) if self.builder.next_item_user_id else None
        return self.builder.next_item_prompt(-1, state.history, self.cfg.template, user_tokens=tokens)

    # ------------------------------------------------------------------ step 2: rank (delegated to ttds.rank)
    def _finish(self, state: PromptState, items: np.ndarray, scores: np.ndarray, mode: str) -> Recommendation:
        """The first k real items of a ranked row (the rankers already kept seen items out)."""
        keep = np.flatnonzero((np.asarray(items) >= 0) & np.isfinite(np.asarray(scores)))[: state.query.k]
        out = [(int(items[j]), float(scores[j])) for j in keep]
        titles = [self.titles[i] for i, _ in out]
        return Recommendation(out, mode, state.kind, self.version, self.user_semantic_id(state), titles)

    @staticmethod
    def _seen(states: Sequence[PromptState]) -> list[list[int]]:
        return [s.seen if s.query.exclude_seen else [] for s in states]

    def check_servable(self, state: PromptState) -> None:
        """Raise RequestError if this model cannot rank `state` (the row's own fault only: checked
        per row before ranking, so a bad row never fails the rows batched with it)."""
        if route(state.query) == "generator":
            if self.trie is None:
                raise RuntimeError("this Recommender was loaded without the generator part")
        elif state.kind == "text":
            self._check_text()
        else:
            self._check_retrieval()

    def _rank_beam(self, states: Sequence[PromptState]) -> list[Recommendation]:
        """`rank_beam`, one search per distinct beam shape: grouping by (width, top_k) keeps each
        request's result independent of which requests it was batched with."""
        out: list[Recommendation | None] = [None] * len(states)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(states):
            top_k = min(s.query.k, self.n_items, self.cfg.max_beam_width)  # seen items are masked in the search, not over-fetched
            groups.setdefault((max(self.cfg.beam_width, top_k), top_k), []).append(i)
        for (width, top_k), rows in groups.items():
            group = [states[i] for i in rows]
            res = rank_beam(self.backbone, [self.prompt_ids(s) for s in group], self.trie, BeamConfig(beam_width=width, top_k=top_k),
                            pad_id=self.builder.pad_id, batch_size=self.cfg.batch_size, seen=self._seen(group),
                            new_items=self.new_items)
            for r, i in enumerate(rows):
                out[i] = self._finish(states[i], res.items[r], res.scores[r], "beam")
        return out  # type: ignore[return-value]

    def _rank_retrieval(self, states: Sequence[PromptState]) -> list[Recommendation]:
        """One forward per prompt: the item head's logits when the model has one (it was trained
        for this ranking, `ttds.rank.item_head`), else `rank_retrieval` (id_head -> faiss over item
        X); text queries search the text index. Ranked to the group's largest k, each row cut to
        its own (the order is total, so a prefix is the row's own top k)."""
        out: list[Recommendation | None] = [None] * len(states)
        text = [i for i, s in enumerate(states) if s.kind == "text"]
        prompt = [i for i, s in enumerate(states) if s.kind != "text"]
        if prompt:
            group = [states[i] for i in prompt]
            prompts, k = [self.prompt_ids(s) for s in group], max(s.query.k for s in group)
            if self.item_head is not None:
                res = rank_item_head(self.backbone, self.item_head, prompts, k, pad_id=self.builder.pad_id,
                                     batch_size=self.cfg.batch_size, seen=self._seen(group))
            else:
                res = rank_retrieval(self.backbone, self.id_head, self.item_index, prompts, k, pad_id=self.builder.pad_id,
                                     pool=self.pool, batch_size=self.cfg.batch_size, seen=self._seen(group))
            for r, i in enumerate(prompt):
                out[i] = self._finish(states[i], res.items[r], res.scores[r], "retrieval")
        if text:
            from ttds.llm.backbone import encode_texts

            texts = [states[i].text for i in text]
            q = encode_texts(self.backbone, self.tokenizer, texts, device=self.device)
            scores, items = self.text_index.search(q, max(states[i].query.k for i in text), keys=query_keys([t.encode() for t in texts]))
            for r, i in enumerate(text):
                out[i] = self._finish(states[i], items[r], scores[r], "text")
        return out  # type: ignore[return-value]

    def generate(self, states: Sequence[PromptState]) -> list[Recommendation | Failure]:
        """The generator part: beam search for each state (per-row failures, see `_ranked`)."""
        return self._ranked(states, self._rank_beam)

    def retrieve(self, states: Sequence[PromptState]) -> list[Recommendation | Failure]:
        """The retriever part: item head / faiss / text search for each state (per-row failures)."""
        return self._ranked(states, self._rank_retrieval)

    def _ranked(self, states: Sequence[PromptState], rank) -> list[Recommendation | Failure]:
        """Check each row, rank the servable ones together; a RequestError raised while ranking a
        batch re-ranks its rows one by one, so it lands on the row that caused it only."""
        out: list[Recommendation | Failure | None] = [None] * len(states)
        live = []
        for i, s in enumerate(states):
            try:
                self.check_servable(s)
                live.append(i)
            except RequestError as e:
                out[i] = Failure.of(e)
        if live:
            with torch.no_grad():
                try:
                    for i, r in zip(live, rank([states[i] for i in live])):
                        out[i] = r
                except RequestError:
                    for i in live:
                        try:
                            out[i] = rank([states[i]])[0]
                        except RequestError as e:
                            out[i] = Failure.of(e)
        return out  # type: ignore[return-value]

    def _check_retrieval(self) -> None:
        if self.backbone is None or "retriever" not in self.parts:
            raise RuntimeError("this Recommender was loaded without the retriever part")
        if self.item_head is None and self.item_index is None:
            raise RequestError("retrieval mode needs features.safetensors in the model folder; use mode=beam")

    def _check_text(self) -> None:
        if self.backbone is None or "retriever" not in self.parts:
            raise RuntimeError("this Recommender was loaded without the retriever part")
        hidden = int(self.id_head.in_features)  # the backbone's width (the head reads its states)
        if self.text_index is None or self.text_dims != hidden:
            raise RequestError(
                "text cold start needs a text-sourced model: item X must hold text vectors of the backbone's width "
                f"(this model's X is '{self.feature_source}' with {self.text_dims} text dims, the backbone encodes {hidden}); "
                "train with --index.features.source=text, or send user_id or history instead"
            )

    def similar_items(self, item_id: int, k: int = 10) -> list[tuple[int, float]]:
        """Nearest items by cosine over X (the item itself excluded)."""
        self._check_item(item_id)
        self._check_k(k)
        if self.item_x is None:
            raise RequestError("similar items need features.safetensors in the model folder")
        index = self.item_index if self.item_index is not None else ItemIndex(self.item_x)
        scores, items = index.search(index.vectors[int(item_id)][None], k, seen=[[int(item_id)]], keys=[int(item_id)])
        return [(int(i), float(s)) for i, s in zip(items[0], scores[0]) if i >= 0]

    # ------------------------------------------------------------------ whole requests
    def run(self, states: Sequence[PromptState]) -> list[Recommendation | Failure]:
        """Rank resolved states (any mix of modes), grouped by `route`; one Failure per row that
        cannot be served, the others ranked. States resolved by another model version
        (mid-rollout) are re-resolved here first so tables never mix."""
        fixed: list[PromptState | Failure] = []
        for s in states:
            if s.version == self.version:
                fixed.append(s)
                continue
            try:
                fixed.append(self.resolve(s.query))
            except RequestError as e:
                fixed.append(Failure.of(e))
        out: list[Recommendation | Failure | None] = [f if isinstance(f, Failure) else None for f in fixed]
        live = [i for i, s in enumerate(fixed) if isinstance(s, PromptState)]
        for part, fn in (("generator", self.generate), ("retriever", self.retrieve)):
            rows = [i for i in live if route(fixed[i].query) == part]
            if rows:
                for i, r in zip(rows, fn([fixed[i] for i in rows])):
                    out[i] = r
        return out  # type: ignore[return-value]

    def recommend_batch(self, queries: Sequence[Query]) -> list[Recommendation | Failure]:
        """Many requests at once (what @serve.batch hands a replica): one failure per bad query,
        the others still answered."""
        states: list[PromptState | Failure] = []
        for q in queries:
            try:
                states.append(self.resolve(q))
            except RequestError as e:
                states.append(Failure.of(e))
        good = [i for i, s in enumerate(states) if isinstance(s, PromptState)]
        ranked = self.run([states[i] for i in good]) if good else []
        out: list[Recommendation | Failure] = [s for s in states]  # type: ignore[misc]
        for i, r in zip(good, ranked):
            out[i] = r
        return out

    def recommend(
        self,
        user_id: int | None = None,
        history: Sequence[int] | None = None,
        text: str | None = None,
        k: int = 10,
        mode: str = "beam",
        exclude_seen: bool = False,
    ) -> list[tuple[int, float]]:
        """Top-k (item id, score), best first; raises RequestError on bad input.

        Scores: log P(ID | prompt) in beam mode, cosine in X space in retrieval / text mode.
        """
        q = Query(user_id, list(history) if history is not None else None, text, k, mode, exclude_seen)
        r = self.recommend_batch([q])[0]
        if isinstance(r, Failure):
            raise RequestError(r.message, r.status)
        return r.items
