"""Generative-retrieval fast path (after TokenRec): one forward pass instead of M decoding steps.

The next-item prompt goes through the backbone once; its last-layer hidden state goes through
the model's `id_head` (the DM-VAE L_ID head, hidden -> X space) and an exact inner-product
search over the L2-normalised item X (`ttds.rank.item_index.ItemIndex`) returns the top K.
Serving (`ttds.serve.recommender`) and the benchmark's evaluation both call `rank_retrieval`,
so its quality cost sits next to its speed and what is evaluated is what is served.

The query (`prompt_queries`), its pooling and the ranking loss that trains it belong to the
model (`ttds.llm.queries`); this module ranks with them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ttds.llm.queries import POOLS, prompt_queries
from ttds.rank.beam import Ranked
from ttds.rank.item_index import ItemIndex
from ttds.rank.pad import prompt_batches
from ttds.rank.ties import query_keys

__all__ = ["pool_of", "rank_retrieval", "retrieval_examples"]


def pool_of(meta: dict) -> str:
    """The pooling a saved model's retrieval path uses (models before the option: "mean")."""
    pool = meta.get("retrieval_pool", "mean")
    if pool not in POOLS:
        raise ValueError(f"retrieval_pool must be one of {POOLS}, not {pool!r}")
    return pool


def retrieval_examples(
    builder, sequences: Sequence[np.ndarray], users: Sequence[int], max_history: int, rng, n_templates: int | None = None,
) -> tuple[list[list[int]], list[int]]:
    """(prompt, next item) pairs: for each user a random cut of its TRAINING sequence.

    Every prefix of a training sequence is a valid next-item example (as SASRec trains on
    every position); the prompt is exactly the evaluation prompt (`next_item_prompt`) with a
    random template, so the head learns what it is asked at serving time.
    """
    n_t = n_templates or builder.n_templates("next_item")
    prompts, targets = [], []
    for u in users:
        seq = sequences[int(u)]
        j = rng.randrange(1, len(seq))
        prompts.append(builder.next_item_prompt(int(u), list(seq[:j])[-max_history:], rng.randrange(n_t)))
        targets.append(int(seq[j]))
    return prompts, targets


def rank_retrieval(
    backbone, head: torch.nn.Module, index: ItemIndex, prompts: Sequence[Sequence[int]], k: int = 10, *,
    pad_id: int, pool: str, batch_size: int = 64, seen: Sequence[Sequence[int]] | None = None,
) -> Ranked:
    """Top-k items [n, k] (-1 past the catalogue) of each prompt: head(pooled prompt state) searched
    in `index` by cosine. `pool` has no default on purpose: it must be the model's (`pool_of(meta)`).
    `seen[i]`: item ids prompt i must not get (the index fetches past them, so k remain).
    Ties: the prompts' query keys (`ttds.rank.ties`)."""
    if seen is not None and len(seen) != len(prompts):
        raise ValueError(f"seen has {len(seen)} rows for {len(prompts)} prompts")
    items = np.full((len(prompts), k), -1, dtype=np.int64)
    scores = np.full((len(prompts), k), -np.inf, dtype=np.float32)
    keys = query_keys(prompts)
    device = next(head.parameters()).device
    for idx, ids, mask in prompt_batches(backbone, prompts, pad_id, batch_size, device):
        q = prompt_queries(backbone, head, ids, mask, pool).cpu().numpy()
        s, i = index.search(q, k, [seen[j] for j in idx] if seen is not None else None, keys[idx])
        items[idx], scores[idx] = i, s
    return Ranked(items, scores)
