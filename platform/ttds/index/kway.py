"""TokenRec's masked K-way tokenizer (MQ-Tokenizer, arXiv 2406.10450), as one tower.

Where RQ refines one latent level by level, the K-way tokenizer splits the representation
into K *parallel* sub-spaces: K sub-encoders (one MLP each) map X to K latents, each
quantised by its own codebook, so an entity gets K tokens that are not ordered coarse to
fine. The decoder reconstructs X from the sum (or the concatenation) of the K code vectors.

During training every sub-encoder sees its own randomly masked view of X (a share
`mask_ratio` of the input features zeroed, the rest scaled by 1/(1 - mask_ratio) as in
inverted dropout, so train- and eval-time inputs have the same expected scale). The codes
must then survive missing evidence, which is what lets an *unseen* user, described only by
the mean X of a short history, land on codes that mean something (`tokenize_unseen_users`)
without retraining anything. At inference (eval mode) nothing is masked.

The tower follows `RQTokenizer`'s interface (encoder -> quantizer -> decoder, `latents`,
`encode`, `code_vectors`, the quantizer's `codebooks [K, N, D]`, `usage`, `init_codebooks`,
`restart_dead_codes`), so the Ray Train worker, DeepSpeed parameter groups, the dynamic
re-index and serving treat it exactly like an RQ tower (`latents` are [B, K, D], unmasked).
k-means initialisation and the dead-code restart reuse `rq.kmeans` / `rq._nearest` per
sub-space, and the config's `last_level` rule (`ttds.index.balanced`) applies to the last
codebook as it does to RQ's last level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ttds.index.balanced import LAST_LEVEL_MODES, spread_last_level
from ttds.index.rq import RQConfig, RQTokenizer, ResidualQuantizer, _mlp, _nearest, _sq_dists, kmeans
from ttds.index.table import level_token

__all__ = [
    "KWayConfig",
    "GroupedLinear",
    "KWayEncoder",
    "ParallelQuantizer",
    "KWayTokenizer",
    "history_vectors",
    "tokenize_unseen_users",
    "unseen_user_tokens",
]

COMBINES = ("sum", "concat", "mean")


@dataclass
class KWayConfig(RQConfig):
    """An RQ tower config plus the K-way knobs; `levels` is K (tokens per entity).

    `kind` is stored so a saved `towers.json` / `tokenizer.json` rebuilds the right tower.
    """

    mask_ratio: float = 0.2
    combine: str = "sum"  # how the K code vectors feed the decoder: sum | concat
    kind: str = "kway_masked"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.combine not in ("sum", "concat"):
            raise ValueError(f"combine must be 'sum' or 'concat', got {self.combine!r}")


class GroupedLinear(nn.Module):
    """K independent linear maps applied to [B, K, in] at once (one einsum, not K calls).

    Initialised like `nn.Linear` (uniform in +-1/sqrt(in)) so a K-way encoder starts at
    the same scale as RQ's MLP encoder.
    """

    def __init__(self, groups: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bki,kio->bko", x, self.weight) + self.bias


class KWayEncoder(nn.Module):
    """X [B, in] -> K latents [B, K, D]; K sub-MLPs, each on its own masked view in training.

    `last_mask` keeps the keep-mask [B, K, in] of the latest training forward (None after an
    eval forward), so tests and diagnostics can see that masking really happened.
    """

    def __init__(self, groups: int, dims: Sequence[int], mask_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.groups = groups
        self.mask_ratio = float(mask_ratio)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(GroupedLinear(groups, a, b))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)
        self.last_mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = x.unsqueeze(1).expand(-1, self.groups, -1)
        if self.training and self.mask_ratio > 0:
            keep = (torch.rand(views.shape, device=x.device) >= self.mask_ratio).to(x.dtype)
            views = views * keep / (1.0 - self.mask_ratio)
            self.last_mask = keep.detach()
        else:
            self.last_mask = None
        return self.net(views)


class ParallelQuantizer(ResidualQuantizer):
    """K codebooks of N x D; codebook k quantises latent k of z [B, K, D] (no residuals).

    `forward(z)` returns `(z_q, codes [B, K], quant_loss)` where z_q combines the K
    straight-through code vectors by `combine` (sum | mean -> [B, D], concat -> [B, K*D]).
    quant_loss is the mean over codebooks of ||sg(z_k) - e_k||^2 + commitment ||z_k - sg(e_k)||^2,
    so its scale does not grow with K. Buffers and methods mirror `ResidualQuantizer`
    (usage counts, `initialized`, `init_codebooks`, `restart_dead_codes`, `quantize`), which
    is what the tokenizer worker's restart and metrics code relies on. It subclasses RQ for that
    state (and `dead_codes`, `quantization_error`) and overrides every method that quantises.
    """

    def __init__(
        self,
        code_dim: int,
        levels: int = 4,
        codebook_size: int = 256,
        commitment: float = 0.25,
        combine: str = "sum",
        kmeans_init: bool = True,
        kmeans_iters: int = 20,
        dead_code_threshold: float = 1.0,
        seed: int = 0,
    ) -> None:
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        # same codebooks, usage counts and `initialized` flag as RQ; every quantising method is overridden
        super().__init__(code_dim, levels, codebook_size, commitment, kmeans_init, kmeans_iters, dead_code_threshold, seed)
        self.combine = combine

    @property
    def out_dim(self) -> int:
        """Width of the combined z_q the decoder receives."""
        return self.code_dim * self.levels if self.combine == "concat" else self.code_dim

    def _combine(self, e: torch.Tensor) -> torch.Tensor:
        if self.combine == "sum":
            return e.sum(1)
        if self.combine == "mean":
            return e.mean(1)
        return e.reshape(e.shape[0], -1)

    def _check(self, z: torch.Tensor) -> None:
        if z.ndim != 3 or z.shape[1] != self.levels or z.shape[2] != self.code_dim:
            raise ValueError(f"expected latents [B, {self.levels}, {self.code_dim}], got {tuple(z.shape)}")

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check(z)
        if self.training and self.kmeans_init and not bool(self.initialized):
            self.init_codebooks(z)
        codes, vecs = [], []
        quant_loss = z.new_zeros(())
        for k in range(self.levels):
            zk, book = z[:, k], self.codebooks[k]
            idx = _nearest(zk.detach(), book.detach())
            e = F.embedding(idx, book)
            quant_loss = quant_loss + F.mse_loss(e, zk.detach()) + self.commitment * F.mse_loss(zk, e.detach())
            vecs.append(zk + (e - zk).detach())  # straight-through per sub-space
            codes.append(idx)
            if self.training:
                with torch.no_grad():
                    self.usage[k] += torch.bincount(idx, minlength=self.codebook_size).to(self.usage.dtype)
        return self._combine(torch.stack(vecs, 1)), torch.stack(codes, 1), quant_loss / self.levels

    @torch.no_grad()
    def quantize(self, z: torch.Tensor, last_level: str = "nearest") -> tuple[torch.Tensor, torch.Tensor]:
        """(codes [B, K], combined z_q) without touching usage counts or gradients.

        last_level="balanced" applies RQ's collision-aware rule (`ttds.index.balanced`) to the
        last codebook: entities of `z` sharing the other K-1 codes get distinct last codes.
        """
        if last_level not in LAST_LEVEL_MODES:
            raise ValueError(f"last_level must be one of {LAST_LEVEL_MODES}, not {last_level!r}")
        self._check(z)
        z = z.detach()
        codes = torch.stack([_nearest(z[:, k], self.codebooks[k].detach()) for k in range(self.levels)], 1)
        if last_level == "balanced":
            last = self.levels - 1
            dists = _sq_dists(z[:, last], self.codebooks[last].detach()).cpu().numpy()
            codes[:, last] = torch.from_numpy(spread_last_level(codes[:, :last].cpu().numpy(), dists)).to(codes.device)
        e = torch.stack([self.codebooks[k].detach()[codes[:, k]] for k in range(self.levels)], 1)
        return codes, self._combine(e)

    @torch.no_grad()
    def code_vectors_of(self, codes: torch.Tensor) -> torch.Tensor:
        """The K code vectors [B, K, D] of given codes (for diagnostics)."""
        return torch.stack([self.codebooks[k].detach()[codes[:, k]] for k in range(self.levels)], 1)

    @torch.no_grad()
    def init_codebooks(self, z: torch.Tensor) -> None:
        """k-means each codebook on its own sub-space's latents (deterministic given the seed).

        When all sub-spaces see the same latent (Mixture-of-Codes), the shared generator has
        moved on between codebooks, so each starts from a different k-means++ seeding and
        the codebooks partition the data differently.
        """
        self._check(z)
        z = z.detach().to("cpu", torch.float32)
        for k in range(self.levels):
            centres = kmeans(z[:, k], self.codebook_size, self.kmeans_iters, self.generator)
            self.codebooks.data[k] = centres.to(self.codebooks.device, self.codebooks.dtype)
        self.usage.zero_()
        self.initialized.fill_(True)

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> list[int]:
        """Re-seed dead codes of codebook k with latents z[:, k] drawn at random; counts per codebook."""
        self._check(z)
        z = z.detach().to("cpu", torch.float32)
        n = z.shape[0]
        if n == 0:
            return [0] * self.levels
        dead = self.dead_codes().cpu()
        restarted = []
        for k in range(self.levels):
            restarted.append(self._reseed(k, dead[k], z[:, k]))
        self.usage.zero_()
        return restarted


class KWayTokenizer(RQTokenizer):
    """K-way encoder (masked in training) -> ParallelQuantizer -> decoder.

    Subclasses `RQTokenizer` for its forward, `latents`, `encode`, `code_vectors` and
    `codebook_report`, which only need `encoder`, `quantizer` and `decoder`; the parent's
    constructor (which builds RQ parts) is deliberately not run. The tokenizer job's
    trainer and `rq.reconstruction_error` work on it unchanged.
    """

    def __init__(self, config: KWayConfig) -> None:
        nn.Module.__init__(self)
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            dims = [config.input_dim, *config.hidden_dims, config.code_dim]
            self.encoder = KWayEncoder(config.levels, dims, config.mask_ratio, config.dropout)
            self.quantizer = ParallelQuantizer(
                code_dim=config.code_dim,
                levels=config.levels,
                codebook_size=config.codebook_size,
                commitment=config.commitment,
                combine=config.combine,
                kmeans_init=config.kmeans_init,
                kmeans_iters=config.kmeans_iters,
                dead_code_threshold=config.dead_code_threshold,
                seed=config.seed,
            )
            dec = [self.quantizer.out_dim, *config.hidden_dims[::-1], config.input_dim]
            self.decoder = _mlp(dec, config.dropout)


# -- unseen users ------------------------------------------------------------------------------
def history_vectors(item_x: np.ndarray, histories: Sequence[Sequence[int]]) -> np.ndarray:
    """One vector per history: the mean X of its items (zeros for an empty history).

    This is how the feature builder already describes users without text, so a vector made
    here for a new user lives where the user tower was trained.
    """
    item_x = np.asarray(item_x, dtype=np.float32)
    out = np.zeros((len(histories), item_x.shape[1]), dtype=np.float32)
    for i, h in enumerate(histories):
        h = np.asarray(list(h), dtype=np.int64)
        if len(h):
            if h.min() < 0 or h.max() >= len(item_x):
                raise ValueError(f"history {i} names items outside [0, {len(item_x)})")
            out[i] = item_x[h].mean(0)
    return out


def tokenize_unseen_users(
    tower: RQTokenizer, item_x: np.ndarray, histories: Sequence[Sequence[int]], scale: float = 1.0,
) -> np.ndarray:
    """Codes [n, K] for users the tokenizer never saw, from their histories alone: THE cold-start
    rule (serving's `Recommender.cold_start_codes` applies it to one request's history).

    Nothing is trained: the (eval-mode, unmasked) user tower encodes the mean X of each history,
    times `scale` (serving passes the ratio of the users' X norm to that of their items' mean X,
    so the vector sits where the tower was trained; 1 = the plain mean). Nearest codes at the
    last level: a user's ID must not depend on which other new users arrive in the same batch.
    Works for any tower kind whose input width matches item X (collaborative, LightGCN or text
    X); a suffix is not assigned here because it depends on the table the user joins (see
    `SemanticIDTable.from_codes`).
    """
    if tower.config.input_dim != np.asarray(item_x).shape[1]:
        raise ValueError(f"user tower expects {tower.config.input_dim}-dim input but item X has {np.asarray(item_x).shape[1]}")
    v = history_vectors(item_x, histories) * np.float32(scale)
    with torch.no_grad():
        return tower.encode(torch.from_numpy(v), last_level="nearest").cpu().numpy().astype(np.int64)


def unseen_user_tokens(tower: RQTokenizer, item_x: np.ndarray, histories: Sequence[Sequence[int]]) -> list[list[str]]:
    """The user tokens (`<ua_3><ub_40>...`) of unseen users, ready for a prompt."""
    codes = tokenize_unseen_users(tower, item_x, histories)
    return [[level_token("user", lv, c) for lv, c in enumerate(row)] for row in codes.tolist()]
