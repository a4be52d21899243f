"""DM-VAE alignment losses of TTDS (eqs. 12-15).

L_ID aligns the backbone's view of an item's semantic ID with the item's representation X:
    L_ID = || head(pool(LLM(Sid_k))) - X_k ||^2
so that an ID token sequence "means" its item to the LLM, not just a string of codes.
L_token is the tokenizer's residual quantisation loss (reconstruction + codebook +
commitment) on the same items, which keeps the codes faithful to X while the LLM trains.
The total is L = L_LLM + alpha * (L_ID + beta * L_token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ttds.llm.backbone import last_hidden_states


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on the first real token of each left-padded row."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def id_alignment_loss(backbone, head: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, target_x: torch.Tensor) -> torch.Tensor:
    """L_ID: pooled last hidden state of the ID sequence, projected to X's space, vs X."""
    pooled = masked_mean(last_hidden_states(backbone, input_ids, mask, position_ids_from_mask(mask)), mask)
    return F.mse_loss(head(pooled).float(), target_x.float())


def total_loss(llm: torch.Tensor, l_id: torch.Tensor | None, l_token: torch.Tensor | None, alpha: float, beta: float) -> torch.Tensor:
    aux = llm.new_zeros(())
    if l_id is not None:
        aux = aux + l_id
    if l_token is not None:
        aux = aux + beta * l_token
    return llm + alpha * aux
