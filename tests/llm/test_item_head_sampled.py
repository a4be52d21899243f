"""Sampled softmax in the item head loss (loss.item_head_negatives) for large catalogues."""

from __future__ import annotations

import torch

from ttds.config import LossConfig
from ttds.llm.model import TTDSModel, item_head_loss


class _Backbone(torch.nn.Module):
    """Embedding-only stand-in with what TTDSModel reads of an HF model: its last hidden states (no
    body: `ttds.llm.backbone.last_hidden_states` falls back to `output_hidden_states`) and an output
    embedding, here all zero and frozen, so L_LLM is a constant that moves nothing."""

    def __init__(self, vocab: int = 16, hidden: int = 8):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, hidden)
        self.head = torch.nn.Linear(hidden, vocab, bias=False).requires_grad_(False)
        torch.nn.init.zeros_(self.head.weight)

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, output_hidden_states=False, logits_to_keep=0):
        out = type("Out", (), {})()
        out.hidden_states = (self.emb(input_ids),)
        return out


def _batch(n_rows=6, t=5, vocab=16, n_items=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab, (n_rows, t), generator=g)
    pos = torch.stack([torch.arange(n_rows), torch.randint(t, (n_rows,), generator=g)], 1)
    # the target is a fixed function of the token at the position, so it is learnable
    return ids, pos, ids[pos[:, 0], pos[:, 1]] * 3 % n_items


def test_default_is_full_softmax_bit_for_bit():
    assert LossConfig().item_head_negatives == 0
    torch.manual_seed(0)
    hidden = torch.randn(4, 5, 8)
    head = torch.nn.Linear(8, 30, bias=False)
    pos, tgt = torch.tensor([[0, 1], [1, 4], [2, 0], [3, 3]]), torch.tensor([3, 29, 0, 3])
    full = torch.nn.functional.cross_entropy(head(hidden[pos[:, 0], pos[:, 1]]).float(), tgt)
    assert torch.equal(item_head_loss(hidden, head, pos, tgt), full)
    assert torch.equal(item_head_loss(hidden, head, pos, tgt, negatives=0), full)
    rng = torch.get_rng_state()
    item_head_loss(hidden, head, pos, tgt, negatives=0)
    assert torch.equal(rng, torch.get_rng_state())  # the full path draws nothing


def test_sampled_softmax_masks_target_draws_and_costs_k_by_negatives():
    torch.manual_seed(1)
    hidden = torch.randn(2, 3, 8)
    head = torch.nn.Linear(8, 5, bias=False)
    pos, tgt = torch.tensor([[0, 0], [1, 2]]), torch.tensor([1, 4])
    # 4 negatives of 5 items: some draws hit a target and must be masked, never NaN
    for _ in range(20):
        loss = item_head_loss(hidden, head, pos, tgt, negatives=4)
        assert torch.isfinite(loss) and float(loss) >= 0


def test_sampled_softmax_trains_the_item_head_and_ranks_targets_first():
    n_items = 50
    model = TTDSModel(_Backbone(), torch.nn.Module(), 8, 3, n_items=n_items)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    ids, pos, tgt = _batch(n_items=n_items)
    torch.manual_seed(0)
    first = None
    for _ in range(150):
        out = model(ids, torch.ones_like(ids), ids, item_positions=pos, item_targets=tgt, item_weight=1.0, item_negatives=8)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = float(out["item_head_loss"]) if first is None else first
    assert float(out["item_head_loss"]) < first / 4
    with torch.no_grad():
        scores = model.item_head(model.backbone.emb(ids)[pos[:, 0], pos[:, 1]])
    assert (scores.argmax(1) == tgt).float().mean() == 1.0  # the full-catalogue ranking learned it
