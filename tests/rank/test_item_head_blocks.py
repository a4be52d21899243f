"""The item head scores the catalogue in blocks with a running top-k: the same lists as scoring
it whole (ties and seen items included), with the score matrix bounded by the block size."""

from __future__ import annotations

import torch

from ttds.rank.item_head import top_items
from ttds.rank.seen import mask_seen
from ttds.rank.ties import query_keys, top_k


def _whole(last, weight, k, keys, seen):
    return top_k(mask_seen((last @ weight.T).float(), seen), k, keys)


def test_blocks_give_the_whole_catalogue_lists_with_ties_and_seen_items():
    g = torch.Generator().manual_seed(0)
    n, h, b, k = 1000, 8, 6, 10
    weight = torch.randn(n, h, generator=g)
    weight[500:700] = weight[500]  # a run of tied items that straddles blocks
    last = torch.randn(b, h, generator=g)
    last[0] = 0.0  # every score equal: the tie rule alone orders this row
    histories = [[int(i) for i in torch.randint(0, n, (20,), generator=g)] for _ in range(b)]
    histories[1] += list(range(500, 520))
    keys = query_keys(histories)
    ws, wi = _whole(last, weight, k, keys, histories)
    for block_mb in (1e-4, 3e-3, 64.0):  # blocks of k items, ~130 items, the whole catalogue
        s, i = top_items(last, weight, k, keys, histories, block_mb=block_mb)
        assert torch.equal(i, wi), block_mb
        assert torch.allclose(s, ws)
    assert not any(set(i[r].tolist()) & set(histories[r]) for r in range(b))
