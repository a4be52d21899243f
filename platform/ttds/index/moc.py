"""Mixture-of-Codes (MoC, arXiv 2410.09560) as one tower of the semantic token generator.

MoC scales a semantic representation by *width* rather than depth: one encoder maps X to a
latent z, and N independent codebooks each quantise the same z in parallel (no residuals:
no codebook depends on another's choice). The decoder reconstructs X from the average of
the N code vectors, so the codebooks are trained jointly through one reconstruction while
each keeps its own VQ loss. The number of codebooks N (`num_codebooks`, the tower's
`levels`) is MoC's scaling factor: every extra codebook adds one token per entity and one
more partition of the same latent, which raises discriminability (fewer collisions, higher
NMI with categories) where deeper RQ levels only quantise ever smaller residuals.

Independence comes from initialisation: each codebook is k-means-initialised from its own
k-means++ seeding (and restarted from its own random draws), so the N partitions differ.
In the recommender, MoC's codes are fused before the backbone consumes them
(`ttds.llm.fusion.CodeFusion`, enabled when `index.kind == "moc"`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ttds.index.kway import ParallelQuantizer
from ttds.index.rq import RQConfig, RQTokenizer, _mlp

__all__ = ["MoCConfig", "Broadcast", "MoCTokenizer"]


@dataclass
class MoCConfig(RQConfig):
    """An RQ tower config read as MoC: `levels` is the number of parallel codebooks."""

    kind: str = "moc"

    @property
    def num_codebooks(self) -> int:
        return self.levels


class Broadcast(nn.Module):
    """z [B, D] -> [B, N, D] (a view): every codebook sees the same latent."""

    def __init__(self, copies: int) -> None:
        super().__init__()
        self.copies = copies

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.unsqueeze(1).expand(-1, self.copies, -1)


class MoCTokenizer(RQTokenizer):
    """Encoder MLP -> N parallel codebooks on the same latent -> mean -> decoder MLP.

    Reuses `RQTokenizer`'s forward/latents/encode/code_vectors and `ParallelQuantizer`
    (combine="mean"); the encoder ends in `Broadcast` so `latents` are [B, N, D] like the
    K-way tower's, and the worker's k-means init / dead-code restart need no special case.
    """

    def __init__(self, config: MoCConfig) -> None:
        nn.Module.__init__(self)
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            dims = [config.input_dim, *config.hidden_dims, config.code_dim]
            self.encoder = nn.Sequential(_mlp(dims, config.dropout), Broadcast(config.levels))
            self.decoder = _mlp(dims[::-1], config.dropout)
        self.quantizer = ParallelQuantizer(
            code_dim=config.code_dim,
            levels=config.levels,
            codebook_size=config.codebook_size,
            commitment=config.commitment,
            combine="mean",
            kmeans_init=config.kmeans_init,
            kmeans_iters=config.kmeans_iters,
            dead_code_threshold=config.dead_code_threshold,
            seed=config.seed,
        )

    @property
    def num_codebooks(self) -> int:
        """MoC's scaling factor: parallel codebooks, i.e. tokens per entity."""
        return self.config.levels
