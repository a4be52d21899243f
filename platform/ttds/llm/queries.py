"""The model's query for a prompt: the L_ID head (hidden -> X space) on the pooled prompt state,
and the optional ranking loss that trains it (`loss.retrieval_weight`).

They live with the model, not with the rankers, because the model's own forward computes the
loss (`TTDSModel.forward`), and the generative-retrieval ranker (`ttds.rank.retrieval`) searches
with the very same query, so what is trained is what is searched.

Which hidden state ("pool", saved in the model's ttds.json as `retrieval_pool`):
- "last": the state at the prompt's last token, i.e. where the LLM starts generating the next
  item's ID. Models trained with the ranking loss use it: on the generated corpus it reached
  valid HR@10 ~.6 where mean pooling stayed at ~.2 with the same steps (measured), because a
  causal LM's last state already summarises the history with the recent items weighted up;
- "mean": the mean over the prompt's real tokens, the pooling L_ID trains on ID sequences;
  models trained without the ranking loss keep it (their head only ever saw mean pools).
L_ID alone trains the head on ID-token sequences, not on prompts, so the fast path is weak
unless the optional ranking loss trains it jointly: `retrieval_loss` is a full-catalogue
softmax of cosine(query, X_item) / temperature with cross-entropy on the user's next item
(every item is a negative: no sampling bias, and at ~10k items x a few hundred dims it costs
one small matmul).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ttds.llm import dmvae

__all__ = ["POOLS", "TRAINED_POOL", "prompt_queries", "prompt_states", "retrieval_loss"]

POOLS = ("last", "mean")
TRAINED_POOL = "last"  # the pooling the ranking loss trains (see the module docstring)


def prompt_states(backbone, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Last-layer states [B, T, H] (fp32) of left-padded prompts: the one backbone pass of the fast path."""
    out = backbone(
        input_ids=input_ids, attention_mask=mask, position_ids=dmvae.position_ids_from_mask(mask),
        output_hidden_states=True, use_cache=False, logits_to_keep=1,
    )
    return out.hidden_states[-1].float()


def prompt_queries(backbone, head: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, pool: str = "mean") -> torch.Tensor:
    """head(last-layer state of each left-padded prompt, pooled by `pool`): [B, x_dim], not normalised.

    What `ttds.rank.retrieval.rank_retrieval` searches with, in evaluation and serving alike.
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
