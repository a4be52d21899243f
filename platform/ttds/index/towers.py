"""Twin-tower tokenizer: one RQ tower for items, an optional one for users.

TTDS gives users semantic IDs as well as items, so prompts can name a user in the same token
language. The towers share nothing (inputs differ in kind and width); they are one module so
that one optimiser, one checkpoint and one re-index step cover both. Without a user tower
the model is the "STDS" ablation (items only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ttds.index.kinds import build_tower, tower_config_from_dict
from ttds.index.rq import RQConfig, RQOutput

__all__ = ["TwinTowerConfig", "TwinTowerTokenizer"]


@dataclass
class TwinTowerConfig:
    """Item tower config, user tower config (None: no user tower) and the user loss weight."""

    item: RQConfig
    user: RQConfig | None = None
    user_weight: float = 1.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TwinTowerConfig":
        """From nested plain dicts (a YAML section); each tower dict's `kind` picks its class."""
        item = tower_config_from_dict(d["item"])
        user = d.get("user")
        if user is not None:
            user = tower_config_from_dict(user)
        return cls(item=item, user=user, user_weight=float(d.get("user_weight", 1.0)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TwinTowerTokenizer(nn.Module):
    """`item` and (optionally) `user` RQTokenizers trained under one summed loss."""

    def __init__(self, config: TwinTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.item = build_tower(config.item)  # RQ, K-way or MoC by the config's kind
        self.user = build_tower(config.user) if config.user is not None else None

    @property
    def has_user_tower(self) -> bool:
        return self.user is not None

    def load_saved(self, state: dict[str, torch.Tensor]) -> None:
        """Load a saved tokenizer (strict). A single-tower model (the STDS ablation) takes the item
        tower of a twin-tower save and ignores its user tower, so ablations can share one warm-up;
        the reverse (a twin-tower model from an item-only save) still fails on the missing keys."""
        if self.user is None:
            state = {k: v for k, v in state.items() if not k.startswith("user.")}
        self.load_state_dict(state)

    def forward(self, item_x: torch.Tensor, user_x: torch.Tensor | None = None) -> dict[str, Any]:
        """{"item": RQOutput, "user": RQOutput | None, "loss": item.loss + user_weight * user.loss}.

        `user_x=None` trains only the item tower on this batch (batches of items and users
        need not come together).
        """
        item_out: RQOutput = self.item(item_x)
        loss = item_out.loss
        user_out: RQOutput | None = None
        if user_x is not None:
            if self.user is None:
                raise ValueError("user features given but this tokenizer has no user tower")
            user_out = self.user(user_x)
            loss = loss + self.config.user_weight * user_out.loss
        return {"item": item_out, "user": user_out, "loss": loss}

    def encode_items(self, x: torch.Tensor) -> torch.Tensor:
        return self.item.encode(x)

    def encode_users(self, x: torch.Tensor) -> torch.Tensor:
        if self.user is None:
            raise ValueError("this tokenizer has no user tower")
        return self.user.encode(x)
