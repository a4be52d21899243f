"""Generative-retrieval fast path (after TokenRec): one forward pass instead of M decoding steps.

The next-item prompt goes through the backbone once; its last-layer hidden state goes through
the model's `id_head` (the DM-VAE L_ID head, hidden -> X space) and an exact inner-product
search over the L2-normalised item X returns the top K. This is what
`ttds.recommender.Recommender.retrieve` serves; the benchmark evaluates it with the same
metrics as beam search so its quality cost sits next to its speed.

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

__all__ = ["POOLS", "TRAINED_POOL", "ItemIndex", "pool_of", "prompt_batches", "prompt_queries", "prompt_states", "rank_by_retrieval", "retrieval_examples", "retrieval_loss"]

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

    The same map as `Recommender` serves (tested equal), so what is trained and evaluated
    here is what the Serve app returns.
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


class ItemIndex:
    """Exact inner-product search over L2-normalised item X (faiss IndexFlatIP)."""

    def __init__(self, item_x: np.ndarray):
        import faiss

        x = np.ascontiguousarray(item_x, dtype=np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
        self.dim, self.n = x.shape[1], x.shape[0]
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(x)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item ids), each [n, k]; queries are normalised here."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have {q.shape[1]} dims, item X has {self.dim}")
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-8)
        return self.index.search(q, min(k, self.n))


def prompt_batches(backbone, builder, user_ids, histories, template: int, max_history: int, batch_size: int, device):
    """(rows, input_ids, mask) of the users' next-item prompts (the evaluation prompt), batched by
    length (little padding), on `device`; the backbone is in eval mode without gradients while the
    batches are consumed, and back in its mode afterwards. The loop of every one-forward ranker."""
    from ttds.decode.beam import left_pad

    prompts = [builder.next_item_prompt(int(u), list(h)[-max_history:], template) for u, h in zip(user_ids, histories)]
    order = np.argsort([len(p) for p in prompts], kind="stable")
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask = left_pad([prompts[i] for i in idx], builder.pad_id)
                yield idx, ids.to(device), mask.to(device)
    finally:
        backbone.train(was_training)


def rank_by_retrieval(
    backbone, head: torch.nn.Module, builder, index: ItemIndex, user_ids, histories, template: int,
    max_history: int, k: int = 10, batch_size: int = 64, *, pool: str, exclude_seen: bool = False,
) -> np.ndarray:
    """Top-k item ids [n, k] (-1 past the catalogue) for each user's next-item prompt.

    `pool` has no default on purpose: it must be the model's (`pool_of(meta)`).
    `exclude_seen`: each user's history items are kept out (the search asks for k + the
    batch's longest history, so k items remain after the filter).
    """
    from ttds.eval.seen import keep_unseen

    out = np.full((len(user_ids), k), -1, dtype=np.int64)
    device = next(head.parameters()).device
    for idx, ids, mask in prompt_batches(backbone, builder, user_ids, histories, template, max_history, batch_size, device):
        q = prompt_queries(backbone, head, ids, mask, pool).cpu().numpy()
        if not exclude_seen:
            _, items = index.search(q, k)
            out[idx, : items.shape[1]] = items
            continue
        _, items = index.search(q, k + max(len(histories[i]) for i in idx))
        for row, i in zip(items, idx):
            kept = keep_unseen(row, histories[i], k)
            out[i, : len(kept)] = kept
    return out
