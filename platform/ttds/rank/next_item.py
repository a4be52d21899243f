"""Users' next-item prompts and their ranking: what offline evaluation asks of a model.

Serving builds its prompts per request (`ttds.serve.recommender.Recommender.prompt_ids`, the same
`builder.next_item_prompt`) and calls the same rankers (`rank_beam`, `rank_item_head`,
`rank_retrieval`), so a user gets the same list from both (tested in tests/rank).
The prompt carries the last `max_history` items; the seen filter all of them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ttds.rank.beam import BeamConfig, rank_beam
from ttds.rank.item_head import rank_item_head
from ttds.rank.new_items import NewItemRule
from ttds.rank.trie import PrefixTrie

__all__ = ["next_item_prompts", "rank_next_items"]


def next_item_prompts(builder, user_ids, histories: Sequence[Sequence[int]], template: int, max_history: int) -> list[list[int]]:
    """The evaluation prompt of each user: `builder.next_item_prompt` over its last `max_history` items."""
    return [builder.next_item_prompt(int(u), list(h)[-max_history:], template) for u, h in zip(user_ids, histories)]


def rank_next_items(
    backbone,
    builder,
    trie: PrefixTrie | None,
    user_ids,
    histories,
    template: int,
    beam: BeamConfig,
    max_history: int,
    batch_size: int = 64,
    progress: bool = False,
    exclude_seen: bool = False,
    node_bias: torch.Tensor | None = None,
    item_head: torch.nn.Module | None = None,
    new_items: NewItemRule | None = None,
) -> np.ndarray:
    """Top-`beam.top_k` item ids per user (int64 [n, k], -1 = empty) by beam search, or by the
    model's `item_head` when given (then `trie` and `node_bias` are unused).
    `exclude_seen`: each user's whole history is kept out. `node_bias`: an in-search popularity
    prior (`PrefixTrie.prior_bias`), or None. `new_items`: beam search's rule for items added after
    training (`ttds.rank.new_items`), or None."""
    prompts = next_item_prompts(builder, user_ids, histories, template, max_history)
    seen = [np.asarray(h) for h in histories] if exclude_seen else None
    if item_head is not None:
        return rank_item_head(backbone, item_head, prompts, beam.top_k, pad_id=builder.pad_id, batch_size=batch_size, seen=seen).items
    if trie is None:
        raise ValueError("beam search needs the model's trie (ttds.rank.trie.build_trie)")
    out = np.full((len(prompts), beam.top_k), -1, dtype=np.int64)
    step = max(batch_size * 8, 1)
    for s in tqdm(range(0, len(prompts), step), desc=f"ranking (template {template})", disable=not progress, unit_scale=step):
        out[s : s + step] = rank_beam(backbone, prompts[s : s + step], trie, beam, pad_id=builder.pad_id, batch_size=batch_size,
                                      seen=seen[s : s + step] if seen is not None else None, node_bias=node_bias,
                                      new_items=new_items).items
    return out
