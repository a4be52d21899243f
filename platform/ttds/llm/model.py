"""TTDS: the LLM backbone, the twin-tower tokenizer and the ID head in one module.

One forward computes every loss, so DeepSpeed sees a single module and a single scalar:
L = L_LLM + alpha * (L_ID + beta * L_token). Gradients of L_LLM and L_ID reach the backbone,
L_token reaches the tokenizer towers (trained jointly: the "dynamic" in TTDS).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from ttds.index.towers import TwinTowerTokenizer
from ttds.llm import dmvae
from ttds.llm.backbone import last_hidden_states
from ttds.llm.queries import retrieval_loss


def causal_lm_loss(backbone: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """L_LLM: next-token cross-entropy over the full vocabulary, HF's shift and ignore index (-100),
    mean over labelled tokens, computed from the final hidden states at labelled positions only.

    Why only there: most tokens of a row carry no label (instruction words, the history's text,
    padding), and the LM head's logits over the whole vocabulary at every position were the
    largest tensor of a step; the loss is the same number (tests/llm/test_lm_loss.py). Label
    smoothing (`loss.label_smoothing`): a generative recommender ranks the top-K items by sequence
    probability, and a model trained to put all mass on one code is sharp at rank 1 and poor at
    depth (HR@10).
    """
    shift_labels = labels[:, 1:].to(hidden.device)
    keep = shift_labels != -100
    logits = backbone.get_output_embeddings()(hidden[:, :-1][keep]).float()
    cap = getattr(getattr(backbone, "config", None), "final_logit_softcapping", None)
    if cap:  # models whose head soft-caps its logits (Gemma 2): as their own forward does
        logits = torch.tanh(logits / cap) * cap
    return nn.functional.cross_entropy(logits, shift_labels[keep], label_smoothing=smoothing)


def item_head_loss(hidden: torch.Tensor, head: nn.Linear, positions: torch.Tensor, targets: torch.Tensor,
                   negatives: int = 0) -> torch.Tensor:
    """Cross-entropy of each item from the state just before its ID (SASRec's loss, on the LLM's
    own states): hidden [B, T, H], positions [K, 2] (row, token), targets [K].

    `negatives=0`: full-catalogue softmax (K x n_items logits). `negatives>0`: sampled softmax
    for large catalogues: each row scores its target against `negatives` items drawn uniformly
    (shared by the K rows; a draw equal to the row's target is masked), so a step costs
    K x (1 + negatives) logits instead of K x n_items (at 1M items and K=256, 1 GB of logits
    and as much gradient). Uniform proposals give every item the same log-Q, which cancels in
    the softmax, so no correction term is needed; the loss is a biased but consistent
    estimate of the full one (docs/scaling.md measures both).
    """
    states = hidden[positions[:, 0], positions[:, 1]].to(head.weight.dtype)
    targets = targets.long()
    n_items = head.weight.shape[0]
    if negatives <= 0 or negatives >= n_items:
        return nn.functional.cross_entropy(head(states).float(), targets)
    drawn = torch.randint(n_items, (negatives,), device=states.device)
    pos = (states * head.weight[targets]).sum(-1, keepdim=True)  # [K, 1]
    neg = states @ head.weight[drawn].T  # [K, negatives]
    neg = neg.masked_fill(drawn.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos, neg], 1).float()
    return nn.functional.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))


_NULL = nullcontext()


def _untimed(name: str) -> nullcontext:
    return _NULL


class TTDSModel(nn.Module):
    def __init__(self, backbone: nn.Module, towers: TwinTowerTokenizer, hidden_size: int, x_dim: int, fusion: nn.Module | None = None,
                 n_items: int = 0):
        super().__init__()
        self.backbone = backbone
        self.towers = towers
        self.id_head = nn.Linear(hidden_size, x_dim)
        # optional item head (loss.item_head_weight > 0): one logit per item from the state where the
        # LLM starts an item's ID, trained like SASRec's output layer; ranks all items in one forward
        self.item_head = nn.Linear(hidden_size, n_items, bias=False) if n_items > 0 else None
        # index.kind == "moc" only: CodeFusion hooked on the input embedding (ttds.llm.fusion)
        self.fusion = fusion
        if fusion is not None:
            fusion.attach(backbone)
        # optional per-item input vectors (backbone.item_embedding, ttds.llm.item_embedding)
        self.item_embedding = None
        # the stage timer of a profiled run (ttds.train.profile sets it); None = no sections timed
        self.profiler = None

    def set_item_embedding(self, module) -> None:
        """Hook `module` (an ItemEmbedding, or None) on the backbone's input embedding."""
        if self.item_embedding is not None:
            self.item_embedding.detach()
        self.item_embedding = module
        if module is not None:
            module.attach(self.backbone)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        id_input_ids: torch.Tensor | None = None,
        id_attention_mask: torch.Tensor | None = None,
        id_targets: torch.Tensor | None = None,
        item_x: torch.Tensor | None = None,
        user_x: torch.Tensor | None = None,
        alpha: float = 0.0,
        beta: float = 0.0,
        ret_input_ids: torch.Tensor | None = None,
        ret_attention_mask: torch.Tensor | None = None,
        ret_targets: torch.Tensor | None = None,
        ret_item_x: torch.Tensor | None = None,
        ret_weight: float = 0.0,
        ret_temperature: float = 0.1,
        label_smoothing: float = 0.0,
        item_positions: torch.Tensor | None = None,
        item_targets: torch.Tensor | None = None,
        item_weight: float = 0.0,
        item_negatives: int = 0,
    ) -> dict[str, torch.Tensor]:
        """All losses of one batch; `item_negatives` (loss.item_head_negatives): 0 = full-catalogue
        softmax in the item head loss, >0 = sampled softmax with that many uniform negatives."""
        use_item_head = item_weight > 0 and self.item_head is not None
        timed = self.profiler.section if self.profiler is not None else _untimed
        with timed("fwd/backbone"):
            hidden = last_hidden_states(self.backbone, input_ids, attention_mask, dmvae.position_ids_from_mask(attention_mask))
        with timed("fwd/lm_loss"):
            llm = causal_lm_loss(self.backbone, hidden, labels, label_smoothing)
        l_id = l_token = None
        if alpha > 0 and id_input_ids is not None:
            with timed("fwd/dmvae_id"):
                l_id = dmvae.id_alignment_loss(self.backbone, self.id_head, id_input_ids, id_attention_mask, id_targets)
        if alpha > 0 and beta > 0 and item_x is not None:
            with timed("fwd/towers"):
                l_token = self.towers(item_x, user_x if self.towers.user is not None else None)["loss"]
        loss = dmvae.total_loss(llm, l_id, l_token, alpha, beta)
        l_ret = None
        if ret_weight > 0 and ret_input_ids is not None:
            # optional generative-retrieval ranking loss (ttds.llm.queries): trains the
            # id_head fast path (ttds.rank.retrieval) jointly; off (0) by default, as in the paper
            l_ret = retrieval_loss(self.backbone, self.id_head, ret_input_ids, ret_attention_mask, ret_targets, ret_item_x, ret_temperature)
            loss = loss + ret_weight * l_ret
        l_item = None
        if use_item_head:
            if item_positions is None or len(item_positions) == 0:
                # a batch without next-item rows: a zero that still touches the head, so every
                # data-parallel rank has a gradient for it and the ranks reduce the same tensors
                l_item = self.item_head.weight.sum() * 0.0
            else:
                with timed("fwd/item_head"):
                    l_item = item_head_loss(hidden, self.item_head, item_positions, item_targets, item_negatives)
            loss = loss + item_weight * l_item
        zero = llm.detach() * 0
        return {
            "loss": loss,
            "llm_loss": llm.detach(),
            "id_loss": l_id.detach() if l_id is not None else zero,
            "token_loss": l_token.detach() if l_token is not None else zero,
            "retrieval_loss": l_ret.detach() if l_ret is not None else zero,
            "item_head_loss": l_item.detach() if l_item is not None else zero,
        }
