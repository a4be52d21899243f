"""MoC's fusion module: fuse the M code-token embeddings of an item ID before the backbone.

Mixture-of-Codes (arXiv 2410.09560) gives an item M parallel codes that say different,
non-hierarchical things about it; its recommender fuses their embeddings with a bottleneck
MLP and a residual connection over the concatenation, so the codes are read together rather
than one by one. Here, for a causal LM, every complete, in-order item ID span in the input
(<a_i><b_j>...<level M-1>) has its M embeddings concatenated [M*H], passed through
down -> GELU -> up, and the result is added (residual) to the embedding of the span's *last*
token. The up-projection starts at zero, so a new module is the identity and cannot disturb
trained embeddings.

Why the last token only: a fused vector depends on every code of its span, so written at
an earlier position it would show that position tokens it is trained to predict (the
next-item task trains on every ID of a sequence, history included). At the last position
it depends on that token and earlier ones only, which the model may see there anyway; the
fusion is therefore causal and the same rule holds in training, beam search and serving.
(KV-cache decoding feeds one token per step, so the ID being generated is never fused; its
last token is fed only before a suffix token, the one place training and decoding differ.)

The module attaches as a forward hook on the backbone's input embedding
(`ttds.llm.embedding_hook`), so every caller of the backbone (training, validation beam search,
the recommender, serving) gets fused embeddings without knowing about it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ttds.llm.embedding_hook import InputEmbeddingHook, id_span_starts, item_code_layout

__all__ = ["CodeFusion", "build_fusion", "fusion_for_towers", "save_fusion", "load_fusion"]


class CodeFusion(InputEmbeddingHook):
    """Bottleneck residual MLP over the concatenated embeddings of each item ID's M code tokens.

    `level_of[token_id]` is the ID position (0..M-1) of an item code token, -1 for any other
    token; it is a buffer so a saved module knows its vocabulary layout.
    """

    def __init__(self, levels: int, hidden: int, level_of: torch.Tensor, bottleneck: int = 0, zero_init: bool = True) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"fusion needs IDs of at least 2 code tokens, got {levels}")
        self.levels = int(levels)
        self.hidden = int(hidden)
        self.bottleneck = int(bottleneck) if bottleneck > 0 else int(hidden)
        self.register_buffer("level_of", torch.as_tensor(level_of, dtype=torch.long).clone())
        self.down = nn.Linear(self.levels * self.hidden, self.bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(self.bottleneck, self.hidden)
        if zero_init:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def span_starts(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, starts) of every complete, in-order item ID span of `input_ids` [B, T]."""
        return id_span_starts(input_ids, self.level_of, self.levels)

    def forward(self, embeds: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Embeddings [B, T, H]; each span's last token gets + up(act(down(concat(span))))."""
        rows, starts = self.span_starts(input_ids)
        if rows.numel() == 0:
            return embeds
        pos = starts.unsqueeze(1) + torch.arange(self.levels, device=embeds.device)  # [S, M]
        spans = embeds[rows.unsqueeze(1).expand_as(pos), pos]  # [S, M, H]
        flat = spans.reshape(len(rows), -1).to(self.down.weight.dtype)
        last = pos[:, -1]
        fused = spans[:, -1] + self.up(self.act(self.down(flat))).to(embeds.dtype)
        return embeds.index_put((rows, last), fused)


def build_fusion(levels: int, codebook_size: int, tokenizer, hidden: int, vocab_size: int, bottleneck: int = 0) -> CodeFusion:
    """A fusion module for item IDs of `levels` tokens named by `tokenizer`'s vocabulary."""
    level_of, _ = item_code_layout(tokenizer, levels, codebook_size, vocab_size)
    return CodeFusion(levels, hidden, level_of, bottleneck)


def fusion_for_towers(towers: dict, levels: int, codebook_size: int, backbone: nn.Module, tokenizer, bottleneck: int = 0) -> CodeFusion | None:
    """The fusion module when the item tower is Mixture-of-Codes (`index.kind == "moc"`), else None."""
    item = towers.get("item") if isinstance(towers, dict) else None
    if not item or item.get("kind") != "moc" or levels < 2:
        return None
    weight = backbone.get_input_embeddings().weight
    return build_fusion(levels, codebook_size, tokenizer, int(weight.shape[1]), int(weight.shape[0]), bottleneck)


def save_fusion(directory: str | Path, fusion: CodeFusion) -> None:
    """`fusion.safetensors` + `fusion.json` (shape) in a model folder."""
    d = Path(directory)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in fusion.state_dict().items()}
    save_file(state, str(d / "fusion.safetensors"))
    (d / "fusion.json").write_text(json.dumps({"levels": fusion.levels, "hidden": fusion.hidden, "bottleneck": fusion.bottleneck}))


def load_fusion(directory: str | Path) -> CodeFusion | None:
    """The saved fusion module of a model folder, or None when it has none."""
    d = Path(directory)
    if not (d / "fusion.json").exists():
        return None
    info = json.loads((d / "fusion.json").read_text())
    state = load_file(str(d / "fusion.safetensors"))
    fusion = CodeFusion(info["levels"], info["hidden"], state["level_of"], info["bottleneck"], zero_init=False)
    fusion.load_state_dict(state)
    return fusion
