"""Ranking by the item head: one backbone forward per prompt, one logit per item, top-k.

Why a second ranker beside beam search: a generative recommender scores an item by the product
of its ID tokens' probabilities, and shared ID prefixes let the popular items take every beam
(on Instruments TTDS spent 91% of its top-10 slots on the 5% most bought items, and lost to
SASRec on the rest). The item head (`TTDSModel.item_head`, trained with `loss.item_head_weight`)
reads the same LLM state where generation of the next ID starts and scores every item with its
own output vector, as SASRec's softmax does, so no item is crowded out by a shared prefix.
Measured (README): it ties beam search on Instruments and beats it on Scientific, but leans to
popular items much as the beam does, so the tail weakness lies in the LLM's state. It is also a generative-retrieval fast path: one forward, no decoding steps, no faiss needed
for ~10k items (the logits are one matmul), and seen items are masked before the top-k.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ttds.llm.queries import prompt_states
from ttds.rank.beam import Ranked
from ttds.rank.pad import prompt_batches
from ttds.rank.seen import mask_seen
from ttds.rank.ties import query_keys, top_k

__all__ = ["SCORE_BLOCK_MB", "item_head_scores", "prompt_last_states", "rank_item_head", "top_items"]


# Why blocks: a [batch, catalogue] score matrix is 122 MB at 1M items and batch 32 (docs/scaling.md),
# and the seen-item table as much again; scoring item blocks with a running top-k bounds both.
SCORE_BLOCK_MB = 64.0


def prompt_last_states(backbone, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, H] LLM state at each left-padded prompt's last token (where the next ID starts)."""
    return prompt_states(backbone, input_ids, mask)[:, -1]  # left padding: -1 is every row's last token


def item_head_scores(backbone, item_head: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, n_items] item logits of left-padded next-item prompts (the whole catalogue at once)."""
    last = prompt_last_states(backbone, input_ids, mask)
    return item_head(last.to(item_head.weight.dtype)).float()


def _block_seen(seen: Sequence[Sequence[int]] | None, lo: int, hi: int) -> list[list[int]] | None:
    if seen is None:
        return None
    return [[int(i) - lo for i in row if lo <= int(i) < hi] for row in seen]


def top_items(last: torch.Tensor, weight: torch.Tensor, k: int, keys, seen: Sequence[Sequence[int]] | None = None,
              block_mb: float = SCORE_BLOCK_MB) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, item ids) [B, k] of `last @ weight.T` with each row's seen items out, scored in
    item blocks of at most `block_mb` of scores with a running top-k. Exact: the tie rule orders
    by (score, tie value of the item id), a total order, so the best k of the blocks' best k are
    the best k of the catalogue."""
    b, n = last.shape[0], weight.shape[0]
    block = max(k, int(block_mb * 2**20 / 4 / max(b, 1)))
    last = last.to(weight.dtype)
    cand_s, cand_i = [], []
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        logits = mask_seen((last @ weight[lo:hi].T).float(), _block_seen(seen, lo, hi))
        ids = torch.arange(lo, hi, device=logits.device).unsqueeze(0).expand(b, -1)
        s, i = top_k(logits, k, keys, ids)
        cand_s.append(s)
        cand_i.append(i + lo)
    if len(cand_s) == 1:
        return cand_s[0], cand_i[0]
    s_all, i_all = torch.cat(cand_s, dim=1), torch.cat(cand_i, dim=1)
    s, pos = top_k(s_all, k, keys, i_all)
    return s, i_all.gather(1, pos)


def rank_item_head(
    backbone, item_head: torch.nn.Module, prompts: Sequence[Sequence[int]], k: int = 10, *,
    pad_id: int, batch_size: int = 64, seen: Sequence[Sequence[int]] | None = None, block_mb: float = SCORE_BLOCK_MB,
) -> Ranked:
    """Top-k items [n, k] of each prompt by the item head's logits (evaluation and serving alike).

    `seen[i]`: item ids masked to -inf before the top-k, so k unseen items come back (the
    catalogue is larger than any history). Ties: the prompts' query keys (`ttds.rank.ties`).
    Scores are computed in item blocks of at most `block_mb` (`top_items`)."""
    if seen is not None and len(seen) != len(prompts):
        raise ValueError(f"seen has {len(seen)} rows for {len(prompts)} prompts")
    weight = item_head.weight
    n_items = weight.shape[0]
    k = min(k, n_items)
    items = np.full((len(prompts), k), -1, dtype=np.int64)
    scores = np.full((len(prompts), k), -np.inf, dtype=np.float32)
    keys = query_keys(prompts)
    for idx, ids, mask in prompt_batches(backbone, prompts, pad_id, batch_size, weight.device):
        last = prompt_last_states(backbone, ids, mask)
        s, i = top_items(last, weight, k, keys[idx], [seen[j] for j in idx] if seen is not None else None, block_mb)
        s = s.cpu().numpy()
        i = np.where(np.isfinite(s), i.cpu().numpy(), -1)  # everything seen: nothing left
        items[idx], scores[idx] = i, s
    return Ranked(items, scores)
