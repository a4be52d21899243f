"""Left padding of token / item sequences: the one batching layout of every model input here.

Why left: a causal LM's next token, and a sequential recommender's next item, are read at the
last position; with left padding that is column -1 for every row, so one slice serves the batch
(and beam search appends to the right without moving anything).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from ttds.llm.prompts import IGNORE

__all__ = ["Padded", "left_pad", "prompt_batches"]


class Padded(NamedTuple):
    """`input_ids` [B, T], `attention_mask` [B, T] (1 on real tokens) and `labels` [B, T]
    (IGNORE in the padding) or None; unpacks as `ids, mask, labels = left_pad(...)`."""

    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor | None


def left_pad(
    seqs: Sequence[Sequence[int]] | np.ndarray,
    pad_id: int,
    labels: Sequence[Sequence[int]] | None = None,
    *,
    keep_last: int | None = None,
    width: int | None = None,
    allow_empty: bool = False,
) -> Padded:
    """Left-pad rows into one batch.

    `labels`: per-row labels of the same lengths, padded with IGNORE. `keep_last`: keep only the
    last n entries of each row (a sequential model's window). `width`: pad to this width instead
    of the longest row (rows must fit). `allow_empty`: accept empty rows (an all-padding row, as
    a sequential model's user with no history); prompts are never empty, so by default an empty
    row is an error.
    """
    if len(seqs) == 0:
        raise ValueError("no sequences to pad")
    if labels is not None and len(labels) != len(seqs):
        raise ValueError(f"{len(labels)} label rows for {len(seqs)} sequences")
    rows = [np.asarray(s, dtype=np.int64).reshape(-1) for s in seqs]
    labs = [np.asarray(x, dtype=np.int64).reshape(-1) for x in labels] if labels is not None else None
    if keep_last is not None:
        rows = [r[len(r) - min(keep_last, len(r)) :] for r in rows]
        labs = [x[len(x) - min(keep_last, len(x)) :] for x in labs] if labs is not None else None
    for i, r in enumerate(rows):
        if len(r) == 0 and not allow_empty:
            raise ValueError(f"sequence {i} is empty")
        if labs is not None and len(labs[i]) != len(r):
            raise ValueError(f"sequence {i} has {len(r)} tokens but {len(labs[i])} labels")
    longest = max(max(len(r) for r in rows), 1)
    if width is not None:
        if width < longest:
            raise ValueError(f"width {width} is shorter than the longest row ({longest})")
        longest = width
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    lab = np.full((len(rows), longest), IGNORE, dtype=np.int64) if labs is not None else None
    for i, r in enumerate(rows):
        if len(r):
            ids[i, longest - len(r) :] = r
            mask[i, longest - len(r) :] = 1
            if lab is not None:
                lab[i, longest - len(r) :] = labs[i]
    return Padded(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(lab) if lab is not None else None)


def prompt_batches(backbone, prompts: Sequence[Sequence[int]], pad_id: int, batch_size: int, device):
    """(rows, input_ids, mask) of `prompts` in batches sorted by length (little padding), on
    `device`; the backbone is in eval mode without gradients while the batches are consumed,
    and back in its mode afterwards. The loop of every one-forward ranker."""
    order = np.argsort([len(p) for p in prompts], kind="stable")
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask, _ = left_pad([prompts[i] for i in idx], pad_id)
                yield idx, ids.to(device), mask.to(device)
    finally:
        backbone.train(was_training)
