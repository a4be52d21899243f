"""How every ranker orders items with equal scores: one documented, deterministic rule.

Why a rule at all: `torch.topk`, `np.argsort` and faiss return tied candidates in an order that
depends on the backend, and usually favours low indices. Item ids are not neutral (LC-Rec
numbers items by first appearance, so low ids are the old, popular ones), and ties are common in
practice (bf16 logits on CUDA hold 8 mantissa bits; popularity counts repeat; identical feature
vectors). A ranker that hands ties to low ids is quietly helped by popularity.

The rule ("ties by a seeded hash"): candidates are ordered by score, descending; candidates with
equal scores by `tie_values(keys, ids)`, descending, a pseudo-random permutation of the ids that
depends on a fixed seed (`TIE_SEED`) and on the row's query key. The query key is a hash of what
the ranker is conditioned on (`query_key`): the prompt's token ids for the LM rankers (beam,
item head, retrieval), the user's history for popularity, SASRec and GRU4Rec, so

- it is deterministic: the same query ranks the same way in evaluation and serving, whatever it
  was batched with (the key is a property of the row, never of its position in a batch);
- it favours no id: each query sees its own permutation, so a constant-score ranker returns a
  uniformly random list per user and scores at chance (HR@10 = 10 / n_items, tested);
- it is exact: the hash is a bijection of ids below 2**31 for a given key, so two candidates of
  one row never tie on it (item id is the last resort, never reached in practice).

`top_k` applies the rule to a score matrix (torch or numpy, any device); beam search applies it
to its candidate pool (keyed by trie node, see `ttds.rank.beam`) and to its final list;
`ttds.rank.index.ItemIndex` re-orders faiss's results by it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["TIE_SEED", "query_key", "query_keys", "tie_values", "top_k"]

TIE_SEED = 0x5EED  # fixed: changing it changes every ranking that holds a tie
_MASK = (1 << 31) - 1  # hashes live in [0, 2**31): every product below stays inside int64
_M1, _M2, _M3 = 0x2C1B3C6D, 0x297A2D39, 0x3C6EF372 | 1  # odd multipliers: bijective mod 2**31


def _mix(x):
    """A bijection of [0, 2**31) (xor-shift / odd multiply rounds, murmur-style), for int64
    torch tensors and numpy arrays alike (values stay < 2**31, products < 2**63)."""
    x = x & _MASK
    x = ((x ^ (x >> 16)) * _M1) & _MASK
    x = ((x ^ (x >> 13)) * _M2) & _MASK
    x = ((x ^ (x >> 15)) * _M3) & _MASK
    return x ^ (x >> 16)


def query_key(tokens: Sequence[int] | np.ndarray | str | bytes) -> int:
    """A stable key in [0, 2**31) for one query: a hash of its token ids (or of a text's bytes).

    Not Python's `hash` (salted per process): the key must be the same in every worker.
    """
    if isinstance(tokens, str):
        tokens = tokens.encode("utf-8")
    if isinstance(tokens, (bytes, bytearray)):
        tokens = np.frombuffer(bytes(tokens), dtype=np.uint8)
    arr = np.asarray(tokens, dtype=np.int64).reshape(-1) & _MASK
    h = int(_mix(np.int64(TIE_SEED ^ len(arr))))
    for t in arr.tolist():  # prompts are ~100 tokens: a Python loop is cheap next to any model
        h = int(_mix(np.int64((h * 31 + t) & _MASK)))
    return h


def query_keys(queries: Sequence[Sequence[int]]) -> np.ndarray:
    """`query_key` of each query, as int64 [n]."""
    return np.fromiter((query_key(q) for q in queries), dtype=np.int64, count=len(queries))


def tie_values(keys, ids):
    """The tie-break value of each id for each row's key: `keys` [B] (or [B, 1]), `ids` [..., N]
    broadcast against it; torch in, torch out (same device), numpy in, numpy out.
    Bijective in the id for a fixed key (ids in [0, 2**31)), so values within a row are distinct."""
    if isinstance(ids, torch.Tensor):
        k = torch.as_tensor(keys, dtype=torch.long, device=ids.device).reshape(-1, *([1] * (ids.dim() - 1)))
        offset = _mix(k ^ TIE_SEED)
        return _mix((ids.long() & _MASK) ^ offset)
    ids = np.asarray(ids, dtype=np.int64)
    k = np.asarray(keys, dtype=np.int64).reshape(-1, *([1] * (ids.ndim - 1)))
    return _mix((ids & _MASK) ^ _mix(k ^ TIE_SEED))


def top_k(scores, k: int, keys=None, ids=None):
    """(values, indices) of the `k` best columns of each row of `scores` [B, N], ordered by
    score descending and ties by the seeded hash of (row key, column id) (module docstring).

    `scores`: a torch tensor (any device; NaN counts as -inf) or a numpy array (answered in
    numpy). `keys`: one query key per row (`query_key`), None = 0 for every row (a fixed but
    still id-neutral permutation). `ids`: what each column stands for [B, N] (beam search's
    candidate pool: trie nodes), None = the column index (an item id for a score matrix).
    Cost: one `topk` of k + 1 and two sorts of k; only where a tie straddles the k-th score, the
    tie hash of the whole row and a second `topk`. Never a full sort.

    SASRec / GRU4Rec evaluation: `top_k(model_scores_with_seen_masked, 10, query_keys(histories))[1]`.
    """
    if isinstance(scores, np.ndarray):
        v, i = top_k(torch.from_numpy(np.ascontiguousarray(scores)), k, keys, None if ids is None else torch.from_numpy(np.asarray(ids)))
        return v.numpy(), i.numpy()
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, N], got shape {tuple(scores.shape)}")
    b, n = scores.shape
    k = min(int(k), n)
    if k <= 0 or b == 0:
        return scores[:, :0], torch.zeros(b, 0, dtype=torch.long, device=scores.device)
    keys = torch.zeros(b, dtype=torch.long) if keys is None else torch.as_tensor(np.asarray(keys), dtype=torch.long)
    if keys.numel() != b:
        raise ValueError(f"{keys.numel()} keys for {b} rows")
    s = torch.nan_to_num(scores.float(), nan=float("-inf"))
    keys = keys.to(s.device)
    vals, idx = s.topk(min(k + 1, n), dim=1)  # one past the cut: is the k-th score tied beyond it?
    kth, idx = vals[:, k - 1 : k], idx[:, :k]
    if n > k and bool((vals[:, k] == vals[:, k - 1]).any()):
        # a tie straddles the cut in some row: strictly better than the k-th is always in, and the
        # highest tie values among the scores equal to it fill the rest
        cols = torch.arange(n, device=s.device).unsqueeze(0) if ids is None else ids.to(s.device)
        tie = tie_values(keys, cols).expand(b, n)
        pick = torch.where(s > kth, torch.full_like(tie, 1 << 40), torch.where(s == kth, tie, torch.full_like(tie, -1)))
        idx = pick.topk(k, dim=1).indices
    # order the k chosen by (score, tie value), both descending: one small lexicographic sort
    chosen = idx if ids is None else ids.to(s.device).gather(1, idx)
    tv = tie_values(keys, chosen)
    order = tv.argsort(dim=1, descending=True)
    idx = idx.gather(1, order)
    order = s.gather(1, idx).argsort(dim=1, descending=True, stable=True)
    idx = idx.gather(1, order)
    return scores.gather(1, idx), idx
