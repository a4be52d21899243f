"""Full-ranking next-item evaluation by trie-constrained beam search over all items.

Leave-one-out: every user's held-out item is ranked against the whole catalogue (no sampled
negatives). Metrics are averaged over the next-item instruction templates, as in the paper.
`exclude_seen` keeps each user's history items out of the ranking (RecBole's full-sort
protocol); the Amazon leave-one-out sets have no repeat purchases, so a seen item can never be
the held-out one and ranking it only wastes a slot.
The same function runs inside a Ray Train worker (validation, each rank a slice of users),
in Ray Data actors (jobs/evaluate.py) and in tests.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ttds.decode.beam import BeamConfig, rank_items
from ttds.decode.trie import PrefixTrie
from ttds.eval.metrics import MetricAccumulator
from ttds.llm.prompts import PromptBuilder


def build_trie(builder: PromptBuilder, vocab_size: int) -> PrefixTrie:
    seqs = builder.items.sequences()
    return PrefixTrie.from_sequences(seqs, list(range(len(seqs))), vocab_size)


def rank_next_items(
    backbone,
    builder: PromptBuilder,
    trie: PrefixTrie,
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
) -> np.ndarray:
    """Top-k item ids per user; the prompt carries the last `max_history` items, the exclusion all of them.
    `node_bias`: an in-search popularity prior (`PrefixTrie.prior_bias`), or None.
    `item_head`: rank by the model's item head (`ttds.decode.item_head`) instead of beam search."""
    if item_head is not None:
        from ttds.decode.item_head import rank_by_item_head

        return rank_by_item_head(backbone, item_head, builder, user_ids, histories, template, max_history, beam.top_k, batch_size, exclude_seen)
    prompts = [builder.next_item_prompt(int(u), list(h)[-max_history:], template) for u, h in zip(user_ids, histories)]
    seen = [np.asarray(h) for h in histories] if exclude_seen else None
    out = np.full((len(prompts), beam.top_k), -1, dtype=np.int64)
    step = max(batch_size * 8, 1)
    chunks = range(0, len(prompts), step)
    for s in tqdm(chunks, desc=f"ranking (template {template})", disable=not progress, unit_scale=step):
        out[s : s + step] = rank_items(backbone, prompts[s : s + step], trie, beam, batch_size=batch_size, pad_token_id=builder.pad_id,
                                       exclude=seen[s : s + step] if seen is not None else None, node_bias=node_bias)
    return out


def evaluate_next_item(
    backbone,
    builder: PromptBuilder,
    trie: PrefixTrie,
    user_ids,
    histories,
    targets,
    templates: list[int],
    beam: BeamConfig,
    max_history: int,
    batch_size: int = 64,
    progress: bool = False,
    exclude_seen: bool = False,
    item_head: torch.nn.Module | None = None,
) -> dict[int, MetricAccumulator]:
    """One MetricAccumulator per template (merge across workers, then `average`); `item_head`: see `rank_next_items`."""
    accs = {}
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            for t in templates:
                ranked = rank_next_items(backbone, builder, trie, user_ids, histories, t, beam, max_history, batch_size, progress, exclude_seen,
                                         item_head=item_head)
                accs[t] = MetricAccumulator(ks=(1, 5, 10)).update(ranked, np.asarray(targets))
    finally:
        backbone.train(was_training)
    return accs


def average(accs: dict[int, MetricAccumulator]) -> dict[str, float]:
    """Mean over templates of each metric, plus each template's own figures."""
    results = {t: a.result() for t, a in accs.items()}
    keys = next(iter(results.values())).keys()
    out = {k: float(np.mean([r[k] for r in results.values()])) for k in keys}
    out["per_template"] = {str(t): r for t, r in results.items()}
    out["users"] = int(next(iter(accs.values())).count)
    return out
