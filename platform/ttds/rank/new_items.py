"""Items added after training (`jobs/add_items.py`) in beam search: reserved slots by ID prefix.

Why a rule at all: a new item's ID comes from its text through the item tower, so its first
codes are those of similar trained items, but the LLM never saw the ID as a target. Trained by
maximum likelihood, it gives the new item's last code less probability than every last code it
learned under the same prefix, so beam search over the extended trie almost never returns a new
item, even when the search walked right through its prefix (docs/new_items.md gives the
figures with and without the rule).

The rule (TIGER's, Rajput et al. 2023, section 4.3: "a parameter epsilon, the largest share of
new items in the top K"): after the search, each new item whose ID prefix (every code but the
last) is the prefix of one of the search's results is a candidate; candidates are taken in the
order of the best result sharing their prefix (ties within one prefix by the seeded tie hash,
`ttds.rank.ties`), and up to `ceil(share * k)` of them enter the top k, each placed right after
the result whose prefix it shares (so a new item in the best result's branch is ranked second,
one in the tenth result's branch tenth), pushing the last results out. New items the search
returned on its own merit keep their place and count against the slots. A new item gets the
score of the result it follows. Seen items (`seen`) are never added.

What it does not do: it never scores a new item against another branch, so a new item whose
prefix no trained item has is returned only if the search finds it on its own. Retraining
(interactions with the new items) remains the way to rank them as well as trained items. The
item-head ranker needs no rule: each new item has a row (the mean of its semantic neighbours'
rows, `ttds.serve.catalogue`) and is scored like any item.

Where the share comes from: `eval.new_item_share` (offline) and `recommender.new_item_share`
(serving), default 0.1 (one slot of ten); 0 turns the rule off. It cannot be chosen on
validation under the cold-item protocol (validation targets are never new items), so it is a
declared prior, reported with the figures it gave.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ttds.rank.ties import tie_values
from ttds.rank.trie import PrefixTrie

__all__ = ["NewItemRule", "first_new_item", "new_item_rule", "surface_new_items"]


@dataclass(frozen=True)
class NewItemRule:
    """`prefix[i]`: the trie node of item i's ID without its last code; `members[node]`: the new
    items under that node (int64, ascending); `share`: the largest share of a top k they may take."""

    prefix: np.ndarray
    members: dict[int, np.ndarray]
    share: float
    first_new: int

    def slots(self, k: int) -> int:
        return int(math.ceil(self.share * k - 1e-9))


def first_new_item(meta: dict) -> int | None:
    """The first item id added after training (`ttds.json`'s `catalogue`), or None: no item was added."""
    cat = meta.get("catalogue") or {}
    added = int(cat.get("added_items", 0))
    return int(cat["items"]) - added if added > 0 else None


def new_item_rule(trie: PrefixTrie, levels: int, n_items: int, first_new: int | None, share: float) -> NewItemRule | None:
    """The rule for a model whose items from `first_new` on were added after training, or None
    (nothing added, or `share` 0). `levels`: codes per ID (the ID table's M), so the prefix is the
    node `levels - 1` tokens deep on each item's path (a suffix token, if any, comes after it)."""
    if first_new is None or share <= 0 or first_new >= n_items:
        return None
    if not 0 < share <= 1:
        raise ValueError(f"new_item_share must lie in [0, 1], got {share}")
    term = trie.terminal_item.cpu().numpy()
    depth = trie.depth.cpu().numpy()
    parent = trie.parent().cpu().numpy()
    node = np.full(n_items, -1, dtype=np.int64)
    at = np.flatnonzero(term >= 0)
    node[term[at]] = at
    for _ in range(int(depth.max())):  # walk up to depth levels - 1 (at most a suffix and a code)
        up = (node >= 0) & (depth[node.clip(min=0)] > levels - 1)
        if not up.any():
            break
        node[up] = parent[node[up]]
    new = np.arange(first_new, n_items)
    new = new[node[new] >= 0]
    order = np.argsort(node[new], kind="stable")
    nodes, starts = np.unique(node[new][order], return_index=True)
    members = {int(q): g for q, g in zip(nodes, np.split(new[order], starts[1:]))}
    return NewItemRule(prefix=node, members=members, share=float(share), first_new=int(first_new))


def surface_new_items(items: np.ndarray, scores: np.ndarray, rule: NewItemRule, k: int, keys: np.ndarray,
                      seen: Sequence[Sequence[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (items, scores) per row from a search's wider results `items` [n, W] (best first, -1
    past the end) with new items put in by the module's rule. `keys`: the rows' query keys."""
    n, _ = items.shape
    out_items = np.full((n, k), -1, dtype=np.int64)
    out_scores = np.full((n, k), -np.inf, dtype=np.float32)
    slots = rule.slots(k)
    for r in range(n):
        row = items[r][items[r] >= 0]
        top = row[:k]
        free = slots - int((top >= rule.first_new).sum())
        picks: list[tuple[float, int, float]] = []  # (position key, item, score)
        if free > 0:
            taken = set(top.tolist()) | (set(int(i) for i in seen[r]) if seen is not None else set())
            done_prefix: set[int] = set()
            for pos, item in enumerate(row):
                q = int(rule.prefix[item])
                if q in done_prefix or q not in rule.members:
                    continue
                done_prefix.add(q)
                cand = np.asarray([c for c in rule.members[q].tolist() if c not in taken], dtype=np.int64)
                if not len(cand):
                    continue
                cand = cand[np.argsort(-tie_values(keys[r : r + 1], cand[None])[0], kind="stable")].tolist()
                for c in cand[: free - len(picks)]:
                    picks.append((pos + 0.5, c, float(scores[r, pos])))
                if len(picks) >= free:
                    break
        keep = [(float(p), int(i), float(scores[r, p])) for p, i in enumerate(top[: k - len(picks)])]
        merged = sorted(keep + picks, key=lambda t: t[0])
        out_items[r, : len(merged)] = [m[1] for m in merged]
        out_scores[r, : len(merged)] = [m[2] for m in merged]
    return out_items, out_scores

