"""Generative-retrieval fast path (after TokenRec): one forward pass instead of M decoding steps.

The next-item prompt goes through the backbone once; its last-layer hidden state goes through
the model's `id_head` (the DM-VAE L_ID head, hidden -> X space) and an exact inner-product
search over the L2-normalised item X (`ttds.rank.item_index.ItemIndex`) returns the top K.
Serving (`ttds.serve.recommender`) and the benchmark's evaluation both call `rank_retrieval`,
so its quality cost sits next to its speed and what is evaluated is what is served.

Which hidden state ("pool", saved in the model's ttds.json as `retrieval_pool`):
- "last": the state at the prompt's last token, i.e. where the LLM starts generating the next
  item's ID. Models trained with the ranking loss use it: on the generated corpus it reached
  valid HR@10 ~.6 where mean pooling stayed at ~.2 with the same steps (measured), because a
  causal LM's last state already summarises the history with the recent items weighted up;
- "mean": the mean over the prompt's real tokens, the pooling L_ID trains on ID sequences;
  models trained without the ranking loss keep it (their head only ever saw mean pools).
L_ID alone trains the head on ID-token sequences, not on prompts, so the fast path is weak
unless the optional ranking loss trains it jointly (`loss.retrieval_weight > 0`):
`retrieval_loss` is a full-catalogue softmax of cosine(query, X_item) / temperature with
cross-entropy on the user's next item (every item is a negative: no sampling bias, and at
~10k items x a few hundred dims it costs one small matmul).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ttds.llm import dmvae
from ttds.rank.beam import Ranked
from ttds.rank.item_index import ItemIndex
from ttds.rank.pad import prompt_batches
from ttds.rank.ties import query_keys

__all__ = ["POOLS", "TRAINED_POOL", "pool_of", "prompt_queries", "prompt_states", "rank_retrieval", "retrieval_examples", "retrieval_loss"]

POOLS = ("last", "mean")
TRAINED_POOL = "last"  # the pooling the ranking loss trains (see the module docstring)


def pool_of(meta: dict) -> str:
    """The pooling a saved model's retrieval path uses (models before the option: "mean")."""
    pool = meta.get("retrieval_pool", "mean")
    if pool not in POOLS:
        raise ValueError(f"retrieval_pool must be one of {POOLS}, not {pool!r}")
    return pool


def prompt_states(backbone, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Last-layer states [B, T, H] (fp32) of left-padded prompts: the one backbone pass of the fast path."""
    out = backbone(
        input_ids=input_ids, attention_mask=mask, position_ids=dmvae.position_ids_from_mask(mask),
        output_hidden_states=True, use_cache=False, logits_to_keep=1,
    )
    return out.hidden_states[-1].float()


def prompt_queries(backbone, head: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, pool: str = "mean") -> torch.Tensor:
    """head(last-layer state of each left-padded prompt, pooled by `pool`): [B, x_dim], not normalised.

    What `rank_retrieval` searches with, in evaluation and serving alike.
    """
    hidden = prompt_states(backbone, input_ids, mask)
    pooled = hidden[:, -1] if pool == "last" else dmvae.masked_mean(hidden, mask)  # left padding: -1 is every row's last token
    return head(pooled.to(head.weight.dtype)).float()


def retrieval_loss(
    backbone, head: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
    item_x: torch.Tensor, temperature: float = 0.1, pool: str = TRAINED_POOL,
) -> torch.Tensor:
    """Cross-entropy of the target item under softmax(cos(query, X) / temperature) over all items.

    Cosine, not a raw dot product, because serving searches L2-normalised X with a normalised
    query; training the same score keeps train and serve consistent.
    """
    q = F.normalize(prompt_queries(backbone, head, input_ids, mask, pool), dim=-1)
    x = F.normalize(item_x.float(), dim=-1)
    return F.cross_entropy(q @ x.T / temperature, targets.long())


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
