"""Instruction prompts of the TTDS tasks, assembled directly as token ids.

Template text is tokenised once; entity IDs are looked up in a `TokenTable` (the current
semantic-ID table as LM token ids), so rebuilding every example after a re-index costs one
array swap, and examples are built in the worker from plain entity ids streamed by Ray Data.

Tasks (several paraphrased templates each):
- next_item: user ID + item history -> next item (loss on every item of the history: each
  is the next item of its prefix, one pass covers all prefixes);
- user_pred: item ID + the users who bought it -> the next user (high-order task);
- comment: user ID + history -> the user's review text (when user text exists);
- text2id / id2text: item text -> item ID and item ID -> title (when item text exists).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ttds.index.table import level_token, suffix_token

IGNORE = -100

TEMPLATES: dict[str, tuple[str, ...]] = {
    "next_item": (
        "User {user} has purchased the following items in order:",
        "Here is the interaction history of user {user}. Predict each next item:",
        "Given the items user {user} bought so far, recommend the next one:",
    ),
    "user_pred": (
        "Item {item} was bought by these users in order:",
        "Which user is most likely to interact with item {item} next? Users so far:",
    ),
    "comment": (
        "User {user} bought {history}. The review this user wrote:",
        "Based on the history {history} of user {user}, write the user's review:",
    ),
    "text2id": (
        "Which item matches this description? {text} Item:",
        "Find the item described as: {text} Answer:",
    ),
    "id2text": (
        "What is the title of item {item}? Title:",
        "Item {item} is called:",
    ),
}
TASKS = tuple(TEMPLATES)
_FIELD = re.compile(r"\{(\w+)\}")


@dataclass
class TokenTable:
    """Entity id -> LM token ids of its semantic ID, as a padded array (fast gathers)."""

    ids: np.ndarray  # [n, max_len] int64, padded with -1
    lengths: np.ndarray  # [n]

    @classmethod
    def from_table(cls, table, vocab: dict[str, int]) -> "TokenTable":
        toks = table.token_strings()
        width = max(len(t) for t in toks)
        ids = np.full((len(toks), width), -1, dtype=np.int64)
        lengths = np.zeros(len(toks), dtype=np.int64)
        order = np.argsort(table.ids)
        if not np.array_equal(table.ids[order], np.arange(len(toks))):
            raise ValueError("a semantic-ID table must cover entity ids 0..n-1")
        for row in range(len(toks)):
            ent = int(table.ids[row])
            t = [vocab[x] for x in toks[row]]
            ids[ent, : len(t)] = t
            lengths[ent] = len(t)
        return cls(ids, lengths)

    def get(self, entity: int) -> list[int]:
        return self.ids[entity, : self.lengths[entity]].tolist()

    def sequences(self) -> list[list[int]]:
        return [self.get(i) for i in range(len(self.ids))]


class PromptBuilder:
    """Builds (input_ids, labels) for every task and the eval prompt of next-item."""

    def __init__(
        self,
        tokenizer,
        items: TokenTable,
        users: TokenTable | None = None,
        item_titles: list[str] | None = None,
        user_texts: list[str] | None = None,
        max_text_tokens: int = 32,
        max_len: int = 256,
        next_item_user_id: bool = True,
        instruction_words: bool = True,
    ):
        self.tokenizer = tokenizer
        self.items, self.users = items, users
        # False: next-item prompts leave the user ID out (tasks.user_id_in_next_item explains why)
        self.next_item_user_id = next_item_user_id
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.eos = [tokenizer.eos_token_id]
        self.pad_id = tokenizer.pad_token_id
        self.max_len = max_len
        self.max_text_tokens = max_text_tokens
        # False (tasks.instruction_words): templates keep only their fields, no words
        self.instruction_words = instruction_words
        self.templates = {task: [self._parse(t) for t in ts] for task, ts in TEMPLATES.items()}
        self.sep = self._encode(" ")
        self.titles = self._encode_all(item_titles) if item_titles else None
        self.user_texts = self._encode_all(user_texts) if user_texts else None

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode_all(self, texts: list[str]) -> list[list[int]]:
        enc = self.tokenizer([t or "" for t in texts], add_special_tokens=False, truncation=True, max_length=self.max_text_tokens)
        return [list(x) for x in enc["input_ids"]]

    def _parse(self, template: str) -> list:
        parts, pos = [], 0
        words = self.instruction_words
        for m in _FIELD.finditer(template):
            if m.start() > pos and words:
                parts.append(self._encode(template[pos : m.start()]))
            parts.append(m.group(1))
            pos = m.end()
        if pos < len(template) and words:
            parts.append(self._encode(template[pos:]))
        return parts

    def available_tasks(self) -> list[str]:
        out = ["next_item"]
        if self.users is not None:
            out.append("user_pred")
        if self.user_texts is not None and any(self.user_texts):
            out.append("comment")
        if self.titles is not None and any(self.titles):
            out += ["text2id", "id2text"]
        return out

    def n_templates(self, task: str) -> int:
        return len(self.templates[task])

    def _fill(self, task: str, t: int, fields: dict[str, list[int]]) -> list[int]:
        out = list(self.bos)
        for part in self.templates[task][t % len(self.templates[task])]:
            out += fields.get(part, []) if isinstance(part, str) else part
        return out

    def _user(self, user: int) -> list[int]:
        return self.users.get(user) if self.users is not None and user >= 0 else []

    def _items(self, items) -> list[int]:
        out: list[int] = []
        for i in items:
            out += self.items.get(int(i))
        return out

    # -- tasks -----------------------------------------------------------------------------
    def _next_item_head(self, user: int, t: int, user_tokens: list[int] | None = None) -> list[int]:
        slot = (list(user_tokens) if user_tokens is not None else self._user(user)) if self.next_item_user_id else []
        return self._fill("next_item", t, {"user": slot})

    def next_item(self, user: int, items, t: int = 0) -> tuple[list[int], list[int]]:
        ids, labels, _ = self.next_item_spans(user, items, t)
        return ids, labels

    def next_item_spans(self, user: int, items, t: int = 0) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """`next_item` plus (query position, item) for every item whose ID survives the clip.

        The query position is the token just before the item's first ID token: the state from
        which the LLM starts generating that item, which the item head scores (`loss.item_head_weight`)."""
        prompt = self._next_item_head(user, t)
        ids, labels, starts = list(prompt), [IGNORE] * len(prompt), []
        for i in items:
            tok = self.items.get(int(i))
            starts.append((len(ids), int(i)))
            ids += tok
            labels += tok
        cut = max(0, len(ids) - self.max_len)  # what _clip removes: ids[head : head + cut]
        head = len(self.bos)
        spans = [(s - cut - 1, i) for s, i in starts if cut == 0 or s >= head + cut]
        ids, labels = self._clip(ids, labels)
        return ids, labels, [(q, i) for q, i in spans if q >= 0]

    def next_item_prompt(self, user: int, history, t: int = 0, user_tokens: list[int] | None = None) -> list[int]:
        """The evaluation/serving prompt. `user_tokens` fill the user slot instead of the table's
        ID (serving: a cold-start user's codes); a model trained without the slot ignores both."""
        return self._next_item_head(user, t, user_tokens) + self._items(history)

    def user_pred(self, item: int, users, t: int = 0) -> tuple[list[int], list[int]]:
        prompt = self._fill("user_pred", t, {"item": self.items.get(item)})
        ids, labels = list(prompt), [IGNORE] * len(prompt)
        for u in users:
            tok = self.users.get(int(u))
            ids += tok
            labels += tok
        return self._clip(ids, labels)

    def comment(self, user: int, history, t: int = 0) -> tuple[list[int], list[int]]:
        prompt = self._fill("comment", t, {"user": self._user(user), "history": self._items(history[-5:])})
        target = self.user_texts[user] + self.eos
        return self._clip(prompt + target, [IGNORE] * len(prompt) + target)

    def text2id(self, item: int, t: int = 0) -> tuple[list[int], list[int]]:
        prompt = self._fill("text2id", t, {"text": self.titles[item]})
        target = self.items.get(item)
        return prompt + target, [IGNORE] * len(prompt) + target

    def id2text(self, item: int, t: int = 0) -> tuple[list[int], list[int]]:
        prompt = self._fill("id2text", t, {"item": self.items.get(item)})
        target = self.titles[item] + self.eos
        return prompt + target, [IGNORE] * len(prompt) + target

    def _clip(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        """Keep the last max_len tokens (recent history matters most) but never cut the start."""
        if len(ids) <= self.max_len:
            return ids, labels
        head = len(self.bos)
        cut = len(ids) - self.max_len
        return ids[:head] + ids[head + cut :], labels[:head] + labels[head + cut :]

    def id_sequences(self, entities) -> list[list[int]]:
        """BOS + an item's ID tokens: the input whose pooled state L_ID aligns with X."""
        return [self.bos + self.items.get(int(e)) for e in entities]


def semantic_vocabulary(item_levels: int, user_levels: int, codebook_size: int, suffixes: int) -> list[str]:
    """Every token an ID may use, fixed up front so re-indexing never grows the vocabulary."""
    vocab = [level_token("item", lv, c) for lv in range(item_levels) for c in range(codebook_size)]
    vocab += [level_token("user", lv, c) for lv in range(user_levels) for c in range(codebook_size)]
    vocab += [suffix_token(k) for k in range(suffixes)]
    return vocab
