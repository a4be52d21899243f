"""Batched beam search over item semantic IDs, constrained by a :class:`PrefixTrie`.

Why constrained beam search: the recommender ranks the whole catalogue by generating IDs, so
every returned sequence must be a real item's ID and each item should appear once. The trie
guarantees both; a per-position token set would not.

Design choices (and why):

- The prompt is encoded once; its KV cache is then indexed to ``B * beam_width`` rows and
  re-indexed by source beam every step (``Cache.reorder_cache``), so each step feeds one
  token per beam instead of re-encoding the prompt.
- Scores are sums of ``log_softmax`` over the FULL vocabulary, so a constrained and an
  unconstrained run give comparable numbers (the constraint removes candidates, it does not
  renormalise). Constrained steps gather the scores of each beam's trie children
  (``PrefixTrie.children``) instead of masking all other tokens to ``-inf``: the same
  result, but top-k runs over a few dozen children instead of the whole vocabulary. The sum is ``log P(ID | prompt)``, the quantity to rank items by, so there is
  no length penalty even though IDs have length M or M+1.
- Variable-length IDs: a beam that reaches a terminal node is finished. It keeps its slot and
  score in the candidate pool (it competes with live expansions) but is not expanded. Search
  stops when every beam is finished or at ``trie.max_depth``.
- Inputs are left-padded; position ids come from the attention mask so a prompt decodes the
  same alone or in a padded batch.
- Only the decoding steps are a Python loop; each step is batched tensor ops.
- Seen items (``exclude``): an item the user already has can be kept out of the ranking. In
  constrained search the banned items' final tokens are masked before each step's top-k, so they
  never take a beam slot (filtering the returned list instead would leave it short); the
  finalisation drops them too, which also covers the unconstrained search.
- Popularity prior (``node_bias``, constrained search only): an optional per-node score added
  when a beam enters a node (``PrefixTrie.prior_bias``), so the search ranks by
  ``log P(ID | prompt) - strength * log prior(item)`` with the prior applied at every step.
  Generative recommenders trained by maximum likelihood put most of their beam on popular
  prefixes (on Instruments TTDS spent 91% of its top-10 slots on the top 5% of items); the
  returned scores include the bias.
- Ties (``ttds.rank.ties``): candidates with equal scores are ordered by the seeded hash of
  (row key, the trie node they reach) inside the search (unconstrained: of their pool
  position), and the final list by the hash of (row key, item). The row key is the prompt's
  `query_key` (``rank_beam``), so bf16 ties never favour low token or item ids and a prompt
  ranks the same alone or in any batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ttds.rank.new_items import NewItemRule, surface_new_items
from ttds.rank.pad import left_pad
from ttds.rank.seen import exclusion_table
from ttds.rank.ties import query_keys, tie_values, top_k
from ttds.rank.trie import PrefixTrie

__all__ = ["BeamConfig", "BeamResult", "Ranked", "beam_search", "rank_beam"]

NEG_INF = float("-inf")


@dataclass
class BeamConfig:
    """How wide to search and how many items to return.

    ``constrained=False`` runs the same search without the trie mask for ``trie.max_depth``
    steps and maps generated sequences back to items afterwards; it exists as a speed and
    quality baseline.
    """

    beam_width: int = 20
    top_k: int = 10
    constrained: bool = True

    def __post_init__(self) -> None:
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")
        if not 1 <= self.top_k <= self.beam_width:
            raise ValueError(f"top_k must be in [1, beam_width={self.beam_width}], got {self.top_k}")


@dataclass
class BeamResult:
    """Ranked items per prompt, best first.

    ``items[b, r]`` is ``-1`` (with score ``-inf`` and an all ``-1`` sequence) where fewer
    than ``top_k`` valid, distinct items were found; ``sequences`` are the IDs' tokens,
    ``-1``-padded after an ID ends.
    """

    items: torch.Tensor  # LongTensor[B, top_k]
    scores: torch.Tensor  # FloatTensor[B, top_k]
    sequences: torch.Tensor  # LongTensor[B, top_k, max_depth]


class Ranked(NamedTuple):
    """What every ranker returns for a batch of queries: `items` int64 [n, k] best first (-1 past
    what was found) and their `scores` float32 [n, k] (-inf there)."""

    items: np.ndarray
    scores: np.ndarray


def _model_device(model: torch.nn.Module) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    return next(model.parameters()).device


def _last_logprobs(logits: torch.Tensor) -> torch.Tensor:
    """Float32 log-softmax of the last position, over the full vocabulary."""
    return torch.log_softmax(logits[:, -1].float(), dim=-1)


def _select(
    scores: torch.Tensor,
    done: torch.Tensor,
    cand: torch.Tensor,
    cand_tokens: torch.Tensor | None,
    width: int,
    keys: torch.Tensor,
    cand_ids: torch.Tensor,
    stay_ids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One beam step for ``[B, w]`` beams: choose the best ``width`` candidates per prompt.

    ``cand[b, i, c]`` is the total score of extending beam ``i`` by candidate ``c`` (``-inf``
    if not allowed); ``cand_tokens`` maps candidates to tokens (``None``: candidate = token,
    the unconstrained case). The pool is every expansion of every unfinished beam plus every
    finished beam as it is; one top-k over the flattened pool per prompt (several times
    faster on CPU than a top-k per beam followed by a second one), ties ordered by the tie
    hash of `cand_ids` [B, w, c] / `stay_ids` [B, w] (what each candidate stands for).
    Returns ``(new_scores, source_beam, token, is_stay)``, each ``[B, width']``; ``token`` is
    ``-1`` for finished beams carried over unchanged.
    """
    b, w, c = cand.shape
    cand = cand.masked_fill(done.unsqueeze(-1), NEG_INF)
    stay = scores.masked_fill(~done, NEG_INF)  # finished beams compete as they are
    pool = torch.cat([cand.reshape(b, w * c), stay], dim=1)
    ids = torch.cat([cand_ids.reshape(b, w * c), stay_ids], dim=1)
    new_scores, idx = top_k(pool, min(width, pool.shape[1]), keys, ids)
    is_stay = idx >= w * c
    src = torch.where(is_stay, idx - w * c, idx // max(c, 1))
    if c == 0:
        token = torch.full_like(idx, -1)
    else:
        flat = idx.clamp(max=w * c - 1)
        token = flat % c if cand_tokens is None else cand_tokens.reshape(b, w * c).gather(1, flat)
        token = torch.where(is_stay, torch.full_like(token, -1), token)
    return new_scores, src, token, is_stay


def _banned(exclude: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``exclude[b, item]`` looked up for an ``items`` tensor ``[B, ...]`` (``-1`` = no item: False)."""
    b = items.shape[0]
    flat = items.reshape(b, -1)
    ok = (flat >= 0) & (flat < exclude.shape[1])
    hit = exclude.gather(1, flat.clamp(min=0, max=exclude.shape[1] - 1)) & ok
    return hit.view(items.shape)


def _finalize(
    items: torch.Tensor, scores: torch.Tensor, seqs: torch.Tensor, top_k: int, keys: torch.Tensor, exclude: torch.Tensor | None = None
) -> BeamResult:
    """Drop invalid and repeated items, move them to the end, cut to ``top_k``; order by score,
    ties by the tie hash of (row key, item).

    Why dedupe here: constrained beams are distinct paths and so distinct items, but an
    unconstrained run can reach one item by two sequences (tokens after a complete ID).
    """
    b, w = items.shape
    valid = (items >= 0) & torch.isfinite(scores)
    if exclude is not None:
        valid &= ~_banned(exclude, items)
    earlier = torch.ones(w, w, dtype=torch.bool, device=items.device).tril(-1)  # [i, j]: j < i
    repeated = ((items.unsqueeze(2) == items.unsqueeze(1)) & earlier & valid.unsqueeze(1)).any(-1)
    valid &= ~repeated
    key = torch.where(valid, scores, torch.full_like(scores, NEG_INF))
    by_tie = tie_values(keys, items.clamp(min=0)).argsort(dim=1, descending=True)
    order = by_tie.gather(1, torch.sort(key.gather(1, by_tie), dim=1, descending=True, stable=True).indices)
    items = torch.where(valid, items, torch.full_like(items, -1)).gather(1, order)
    scores = key.gather(1, order)
    seqs = seqs.masked_fill(~valid.unsqueeze(-1), -1).gather(1, order.unsqueeze(-1).expand_as(seqs))
    if w < top_k:  # fewer beams than requested (tiny vocabularies): pad
        pad = top_k - w
        items = torch.cat([items, items.new_full((b, pad), -1)], 1)
        scores = torch.cat([scores, scores.new_full((b, pad), NEG_INF)], 1)
        seqs = torch.cat([seqs, seqs.new_full((b, pad, seqs.shape[2]), -1)], 1)
    return BeamResult(items=items[:, :top_k], scores=scores[:, :top_k], sequences=seqs[:, :top_k])


@torch.no_grad()
def beam_search(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: PrefixTrie,
    cfg: BeamConfig,
    exclude: torch.Tensor | None = None,
    node_bias: torch.Tensor | None = None,
    keys: torch.Tensor | np.ndarray | None = None,
) -> BeamResult:
    """Rank catalogue items for each left-padded prompt by beam search over semantic IDs.

    ``model`` is a Hugging Face causal LM (anything that accepts ``input_ids``,
    ``attention_mask``, ``position_ids``, ``past_key_values``, ``use_cache`` and
    ``logits_to_keep`` and returns ``logits`` and a ``Cache``); its vocabulary must cover the
    trie's. Runs on the model's device, in eval mode (restored afterwards). ``exclude``: an
    optional bool ``[B, n]`` table, True for items prompt ``b`` must not get (its seen items).
    ``node_bias``: optional ``[trie.num_nodes]`` score added on entering each node (see the
    module docstring); needs ``cfg.constrained``. ``keys``: each prompt's query key for the
    tie rule (``ttds.rank.ties``; ``rank_beam`` passes the prompts' own), None = 0.
    """
    device = _model_device(model)
    input_ids = input_ids.to(device)
    attention_mask = attention_mask.to(device=device, dtype=torch.long)
    if trie.device != device:
        trie = trie.to(device)
    b = input_ids.shape[0]
    width, depth = cfg.beam_width, trie.max_depth
    keys = torch.zeros(b, dtype=torch.long, device=device) if keys is None else torch.as_tensor(np.asarray(keys), dtype=torch.long).to(device)
    if keys.shape != (b,):
        raise ValueError(f"keys has shape {tuple(keys.shape)} for {b} prompts")
    if exclude is not None:
        if exclude.shape[0] != b:
            raise ValueError(f"exclude has {exclude.shape[0]} rows for {b} prompts")
        exclude = exclude.to(device=device, dtype=torch.bool)
    if node_bias is not None:
        if not cfg.constrained:
            raise ValueError("node_bias needs the constrained search (it is defined on trie nodes)")
        if node_bias.shape != (trie.num_nodes,):
            raise ValueError(f"node_bias has shape {tuple(node_bias.shape)}; the trie has {trie.num_nodes} nodes")
        node_bias = node_bias.to(device=device, dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
        )
        past = out.past_key_values
        if not hasattr(past, "reorder_cache"):
            raise TypeError(f"model returned {type(past).__name__} as cache; need a transformers Cache")
        logp = _last_logprobs(out.logits)
        if cfg.constrained and logp.shape[-1] < trie.vocab_size:
            raise ValueError(f"model vocabulary {logp.shape[-1]} is smaller than the trie's {trie.vocab_size}")
        next_pos = attention_mask.sum(-1)  # position of the first generated token

        # One live beam (the root) per prompt; the first step widens it to `width`.
        w = 1
        nodes = trie.root(b).unsqueeze(1)
        scores = torch.zeros(b, 1, device=device)
        done = torch.zeros(b, 1, dtype=torch.bool, device=device)
        seqs = torch.full((b, 1, depth), -1, dtype=torch.long, device=device)
        logp = logp.unsqueeze(1)
        for t in range(depth):
            if cfg.constrained:
                # Score only the trie children of each beam (gathered from the full-vocabulary
                # log-probs, so the normalisation is unchanged): equivalent to masking the
                # other tokens to -inf, without top-k over the whole vocabulary.
                child_tok, child_ok = trie.children(nodes.reshape(-1))
                child_tok = child_tok.view(b, w, -1)
                cand = scores.unsqueeze(-1) + logp.gather(2, child_tok)
                cand = cand.masked_fill(~child_ok.view(b, w, -1), NEG_INF)
                child_node = trie.step(nodes.unsqueeze(-1), child_tok)  # -1 on padding slots (scored -inf)
                if node_bias is not None:
                    cand = cand + node_bias[child_node.clamp(min=0)]  # invalid children are -inf already
                if exclude is not None:  # a seen item's last token: never a candidate
                    cand = cand.masked_fill(_banned(exclude, trie.item_at(child_node)), NEG_INF)
                scores, src, token, is_stay = _select(scores, done, cand, child_tok, width, keys, child_node, nodes)
            else:
                cand = scores.unsqueeze(-1) + logp
                pos = torch.arange(cand[0].numel() + w, device=device).expand(b, -1)  # pool positions
                scores, src, token, is_stay = _select(scores, done, cand, None, width, keys, pos[:, :-w].reshape(cand.shape), pos[:, -w:])
            nodes = nodes.gather(1, src)
            seqs = seqs.gather(1, src.unsqueeze(-1).expand(-1, -1, depth)).clone()
            seqs[:, :, t] = token
            dead = ~torch.isfinite(scores)
            if cfg.constrained:
                nodes = torch.where(is_stay, nodes, trie.step(nodes, token))
                done = is_stay | trie.is_terminal(nodes) | (nodes < 0) | dead
            else:
                done = dead
            nodes = torch.where(dead, torch.full_like(nodes, -1), nodes)
            if t == depth - 1 or bool(done.all()):
                break
            # Feed the chosen token of every beam; finished beams feed a dummy token whose
            # output is ignored (keeping the batch rectangular is cheaper than compacting).
            rows = (torch.arange(b, device=device) * w).unsqueeze(1) + src
            w = src.shape[1]
            past.reorder_cache(rows.reshape(-1))
            step_mask = torch.cat(
                [
                    attention_mask.repeat_interleave(w, dim=0),
                    attention_mask.new_ones(b * w, t + 1),
                ],
                dim=1,
            )
            step_pos = (next_pos + t).repeat_interleave(w).unsqueeze(1)
            out = model(
                input_ids=token.clamp(min=0).reshape(b * w, 1),
                attention_mask=step_mask,
                position_ids=step_pos,
                past_key_values=past,
                use_cache=True,
                logits_to_keep=1,
            )
            past = out.past_key_values
            logp = _last_logprobs(out.logits).view(b, w, -1)

        if cfg.constrained:
            items = torch.where(done, trie.item_at(nodes), torch.full_like(nodes, -1))
        else:
            items = trie.lookup(seqs)
        return _finalize(items, scores, seqs, cfg.top_k, keys, exclude)
    finally:
        model.train(was_training)


def rank_beam(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    trie: PrefixTrie,
    cfg: BeamConfig | None = None,
    *,
    pad_id: int,
    batch_size: int = 64,
    seen: Sequence[Sequence[int]] | None = None,
    node_bias: torch.Tensor | None = None,
    new_items: NewItemRule | None = None,
) -> Ranked:
    """Top-``cfg.top_k`` items of each prompt by beam search (the ranker evaluation and serving share).

    Batches of ``batch_size`` prompts sorted by length (little padding; a prompt's result does not
    depend on its batch), left-padded with ``pad_id``. ``seen[i]``: item ids prompt ``i`` must not
    get (masked inside the search), or None. ``node_bias``: see :func:`beam_search`. Ties: the
    prompts' query keys (``ttds.rank.ties``). ``new_items``: items added after training get up to
    their share of each top k by ID prefix (``ttds.rank.new_items``; the search then returns its
    whole width to draw prefixes from), or None.
    """
    if seen is not None and len(seen) != len(prompts):
        raise ValueError(f"seen has {len(seen)} rows for {len(prompts)} prompts")
    n_items = int(trie.terminal_item.max()) + 1 if trie.terminal_item.numel() else 0
    cfg = cfg or BeamConfig()
    items = np.full((len(prompts), cfg.top_k), -1, dtype=np.int64)
    scores = np.full((len(prompts), cfg.top_k), -np.inf, dtype=np.float32)
    keys = query_keys(prompts)
    # the new-item rule draws prefixes from the whole width, then cuts to top_k itself
    search = cfg if new_items is None else BeamConfig(beam_width=cfg.beam_width, top_k=cfg.beam_width, constrained=cfg.constrained)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask, _ = left_pad([prompts[i] for i in idx], pad_id)
        rows = [seen[i] for i in idx] if seen is not None else None
        banned = exclusion_table(rows, n_items) if rows is not None and any(len(r) for r in rows) else None
        res = beam_search(model, ids, mask, trie, search, banned, node_bias, keys[idx])
        got, got_scores = res.items.cpu().numpy(), res.scores.float().cpu().numpy()
        if new_items is not None:
            got, got_scores = surface_new_items(got, got_scores, new_items, cfg.top_k, keys[idx], rows)
        items[idx], scores[idx] = got, got_scores
    return Ranked(items, scores)
