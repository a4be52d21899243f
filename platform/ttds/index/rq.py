"""Residual-quantisation tokenizer: one tower of the TTDS semantic token generator.

An input vector x (item text embedding, collaborative vector, user profile) is encoded by an
MLP into a latent z, and z is quantised by M codebooks in turn: level l picks the code e_l
nearest (L2) to the residual r_l and hands r_{l+1} = r_l - e_l to the next level (TTDS
eq. 10-11). The M code indices are the entity's semantic ID; a decoder reconstructs x from
z_q = sum_l e_l so the codes must keep the information in x.

Residual quantisers are known to collapse (a few codes take every item, so many items share
one ID). Three things here prevent that, and each is switchable for ablations:
k-means initialisation of every level on real residuals, per-level usage counts, and a
restart that re-seeds codes nobody used since the last restart with residuals drawn from data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ttds.index.balanced import LAST_LEVEL_MODES, spread_last_level

__all__ = [
    "RQConfig",
    "RQOutput",
    "ResidualQuantizer",
    "RQTokenizer",
    "codebook_report",
    "reconstruction_error",
    "kmeans",
]


@dataclass
class RQConfig:
    """One tower's shape and quantiser behaviour.

    `dead_code_threshold` is count-based: a code that was assigned to fewer than this many
    vectors (in training-mode forwards) since the last `restart_dead_codes` call is dead and
    gets re-seeded. A count rule, rather than an EMA, makes "dead" independent of batch size
    and of how often restarts run: 1.0 means "nobody picked it during the whole window".
    """

    input_dim: int
    code_dim: int = 256
    levels: int = 4
    codebook_size: int = 256
    hidden_dims: tuple[int, ...] = (512,)
    commitment: float = 0.25
    kmeans_init: bool = True
    kmeans_iters: int = 20
    dead_code_threshold: float = 1.0
    dropout: float = 0.0
    seed: int = 0
    last_level: str = "balanced"  # balanced: colliding entities get distinct last codes (LC-Rec) | nearest

    def __post_init__(self) -> None:
        # YAML gives lists; a tuple keeps the config hashable and comparable.
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if self.input_dim <= 0 or self.code_dim <= 0:
            raise ValueError(f"input_dim and code_dim must be positive, got {self.input_dim}, {self.code_dim}")
        if self.levels <= 0 or self.codebook_size <= 1:
            raise ValueError(f"need levels >= 1 and codebook_size >= 2, got {self.levels}, {self.codebook_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.last_level not in LAST_LEVEL_MODES:
            raise ValueError(f"last_level must be one of {LAST_LEVEL_MODES}, got {self.last_level!r}")


@dataclass
class RQOutput:
    """Everything one forward produces; `loss` is what the optimiser minimises."""

    recon: torch.Tensor
    z: torch.Tensor
    z_q: torch.Tensor
    codes: torch.Tensor  # LongTensor [B, M]
    loss: torch.Tensor
    recon_loss: torch.Tensor
    quant_loss: torch.Tensor


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances [n, k] via the matmul expansion (fast and deterministic on CPU).

    Always fp32, also under bf16 autocast (GPU training): bf16 keeps ~3 significant digits,
    too few to tell nearby codes apart, and code choice is what the index is made of.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, c = x.float(), c.float()
        d = x.pow(2).sum(1, keepdim=True) - 2.0 * (x @ c.t()) + c.pow(2).sum(1).unsqueeze(0)
    return d.clamp_min_(0.0)


def _nearest(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Index of the nearest row of `c` for every row of `x` (ties go to the lowest index)."""
    return _sq_dists(x, c).argmin(dim=1)


def kmeans(x: torch.Tensor, k: int, iters: int = 20, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; returns k centres [k, d] (float32, CPU).

    Runs on CPU with an explicit generator so that the same data and seed give the same
    centres on any machine. With fewer distinct points than k, every point becomes a centre
    and the remaining centres are jittered copies: they start unused, and the dead-code
    restart gives them work once more data arrives. Empty clusters during Lloyd steps take
    the points worst served by their centre, so no centre is wasted.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    x = x.detach().to("cpu", torch.float32)
    n, d = x.shape
    if n == 0:
        raise ValueError("kmeans needs at least one point")
    scale = float(x.std()) if n > 1 else 1.0
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    if n <= k:
        extra = x[torch.randint(0, n, (k - n,), generator=gen)]
        extra = extra + 1e-3 * scale * torch.randn(extra.shape, generator=gen)
        return torch.cat([x, extra], 0)
    # k-means++ seeding: each new centre is drawn with probability proportional to D^2.
    centres = torch.empty(k, d)
    centres[0] = x[torch.randint(0, n, (1,), generator=gen)]
    closest = _sq_dists(x, centres[:1]).squeeze(1)
    for j in range(1, k):
        total = float(closest.sum())
        if total <= 0.0:  # every point already sits on a centre (duplicates): pick uniformly
            idx = torch.randint(0, n, (1,), generator=gen)
        else:
            idx = torch.multinomial(closest / total, 1, generator=gen)
        centres[j] = x[idx]
        closest = torch.minimum(closest, _sq_dists(x, centres[j : j + 1]).squeeze(1))
    for _ in range(iters):
        dist = _sq_dists(x, centres)
        best, assign = dist.min(dim=1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros(k, d).index_add_(0, assign, x)
        new = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
        empty = (counts == 0).nonzero().squeeze(1)
        if empty.numel():
            worst = torch.argsort(best, descending=True, stable=True)[: empty.numel()]
            new[empty] = x[worst]
        if torch.equal(new, centres):
            break
        centres = new
    return centres


class ResidualQuantizer(nn.Module):
    """M codebooks of N x code_dim applied to successive residuals.

    `forward(z)` returns `(z_q, codes, quant_loss)`: z_q carries the straight-through
    gradient to z (so the encoder learns from the reconstruction), and quant_loss is
    sum_l ||sg(r_l) - e_l||^2 + commitment * ||r_l - sg(e_l)||^2 (means over elements), which
    is the only path by which codebooks learn. The residual handed to level l+1 is
    r_l - sg(e_l): each codebook is then trained on its own level's target only.
    """

    def __init__(
        self,
        code_dim: int,
        levels: int = 4,
        codebook_size: int = 256,
        commitment: float = 0.25,
        kmeans_init: bool = True,
        kmeans_iters: int = 20,
        dead_code_threshold: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.code_dim = code_dim
        self.levels = levels
        self.codebook_size = codebook_size
        self.commitment = commitment
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.generator = torch.Generator().manual_seed(seed)
        init = torch.randn(levels, codebook_size, code_dim, generator=self.generator) / math.sqrt(code_dim)
        self.codebooks = nn.Parameter(init)
        # Assignments per code since the last restart (training-mode forwards only).
        self.register_buffer("usage", torch.zeros(levels, codebook_size))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))

    # -- quantisation ---------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.training and self.kmeans_init and not bool(self.initialized):
            self.init_codebooks(z)
        residual = z
        z_q = torch.zeros_like(z)
        codes = []
        quant_loss = z.new_zeros(())
        for level in range(self.levels):
            book = self.codebooks[level]
            idx = _nearest(residual.detach(), book.detach())
            e = F.embedding(idx, book)
            quant_loss = quant_loss + F.mse_loss(e, residual.detach())
            quant_loss = quant_loss + self.commitment * F.mse_loss(residual, e.detach())
            z_q = z_q + e
            residual = residual - e.detach()
            codes.append(idx)
            if self.training:
                with torch.no_grad():
                    self.usage[level] += torch.bincount(idx, minlength=self.codebook_size).to(self.usage.dtype)
        z_q_st = z + (z_q - z).detach()
        return z_q_st, torch.stack(codes, dim=1), quant_loss

    @torch.no_grad()
    def quantize(self, z: torch.Tensor, last_level: str = "nearest") -> tuple[torch.Tensor, torch.Tensor]:
        """(codes [B, M], z_q [B, D]) without touching usage counts or gradients.

        last_level="balanced" gives entities of `z` that share the first M-1 codes distinct
        last-level codes (see `ttds.index.balanced`): the batch is the whole catalogue then.
        """
        if last_level not in LAST_LEVEL_MODES:
            raise ValueError(f"last_level must be one of {LAST_LEVEL_MODES}, not {last_level!r}")
        residual = z.detach()
        z_q = torch.zeros_like(residual)
        codes = []
        for level in range(self.levels):
            book = self.codebooks[level].detach()
            if last_level == "balanced" and level == self.levels - 1:
                prefix = torch.stack(codes, 1) if codes else residual.new_zeros((len(residual), 0), dtype=torch.long)
                spread = spread_last_level(prefix.cpu().numpy(), _sq_dists(residual, book).cpu().numpy())
                idx = torch.from_numpy(spread).to(residual.device)
            else:
                idx = _nearest(residual, book)
            e = book[idx]
            z_q += e
            residual = residual - e
            codes.append(idx)
        return torch.stack(codes, dim=1), z_q

    @torch.no_grad()
    def quantization_error(self, z: torch.Tensor) -> float:
        """Mean squared error ||z - z_q||^2 per element: how well the codebooks cover z."""
        _, z_q = self.quantize(z)
        return float(F.mse_loss(z_q, z.detach()))

    # -- codebook maintenance -----------------------------------------------------------
    @torch.no_grad()
    def init_codebooks(self, z: torch.Tensor) -> None:
        """k-means every level on the residuals of `z` left by the levels above it.

        Random codebooks leave most codes far from the data, so a handful win every
        assignment from the first step; centres taken from the data's own residuals start
        every code with work. Deterministic given the quantiser's seed.
        """
        residual = z.detach().to("cpu", torch.float32)
        for level in range(self.levels):
            centres = kmeans(residual, self.codebook_size, self.kmeans_iters, self.generator)
            self.codebooks.data[level] = centres.to(self.codebooks.device, self.codebooks.dtype)
            residual = residual - centres[_nearest(residual, centres)]
        self.usage.zero_()
        self.initialized.fill_(True)

    @torch.no_grad()
    def dead_codes(self) -> torch.Tensor:
        """Bool [M, N]: codes used fewer than `dead_code_threshold` times since the last restart."""
        return self.usage < self.dead_code_threshold

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> list[int]:
        """Re-seed dead codes with residuals of `z` drawn at random; returns counts per level.

        Level by level, so a level's residuals already reflect the restarts above it. Usage
        counts are reset afterwards: the next window judges every code afresh. Called before
        any training forward, every code counts as dead and this amounts to a data
        initialisation.
        """
        residual = z.detach().to("cpu", torch.float32)
        n = residual.shape[0]
        if n == 0:
            return [0] * self.levels
        dead = self.dead_codes().cpu()
        restarted = []
        for level in range(self.levels):
            restarted.append(self._reseed(level, dead[level], residual))
            book = self.codebooks.detach()[level].to("cpu", torch.float32)
            residual = residual - book[_nearest(residual, book)]
        self.usage.zero_()
        return restarted


    @torch.no_grad()
    def _reseed(self, level: int, dead: torch.Tensor, pool: torch.Tensor) -> int:
        """Overwrite the dead codes (bool [N]) of codebook `level` with rows of `pool` drawn at random."""
        dead_idx = dead.nonzero().squeeze(1)
        k, n = int(dead_idx.numel()), pool.shape[0]
        if k:
            if k <= n:
                pick = torch.randperm(n, generator=self.generator)[:k]
            else:
                pick = torch.randint(0, n, (k,), generator=self.generator)
            self.codebooks.data[level, dead_idx.to(self.codebooks.device)] = pool[pick].to(self.codebooks.device, self.codebooks.dtype)
        return k


def _mlp(dims: list[int], dropout: float) -> nn.Sequential:
    """Linear layers with ReLU (and optional dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class RQTokenizer(nn.Module):
    """One tower: encoder MLP -> ResidualQuantizer -> decoder MLP (an RQ-VAE).

    Parameters are initialised under `config.seed` inside a forked RNG, so constructing a
    tokenizer is reproducible and does not disturb the caller's global random state.
    """

    def __init__(self, config: RQConfig) -> None:
        super().__init__()
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            enc_dims = [config.input_dim, *config.hidden_dims, config.code_dim]
            self.encoder = _mlp(enc_dims, config.dropout)
            self.decoder = _mlp(enc_dims[::-1], config.dropout)
        self.quantizer = ResidualQuantizer(
            code_dim=config.code_dim,
            levels=config.levels,
            codebook_size=config.codebook_size,
            commitment=config.commitment,
            kmeans_init=config.kmeans_init,
            kmeans_iters=config.kmeans_iters,
            dead_code_threshold=config.dead_code_threshold,
            seed=config.seed,
        )

    @property
    def levels(self) -> int:
        return self.config.levels

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def forward(self, x: torch.Tensor) -> RQOutput:
        z = self.encoder(x)
        z_q, codes, quant_loss = self.quantizer(z)
        recon = self.decoder(z_q)
        recon_loss = F.mse_loss(recon, x)
        return RQOutput(
            recon=recon,
            z=z,
            z_q=z_q,
            codes=codes,
            loss=recon_loss + quant_loss,
            recon_loss=recon_loss,
            quant_loss=quant_loss,
        )

    @torch.no_grad()
    def latents(self, x: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
        """Encoder outputs z in eval mode (no dropout), in batches; training mode is restored."""
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self.encoder(x[i : i + batch_size]) for i in range(0, len(x), batch_size)], 0)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 8192, last_level: str | None = None) -> torch.Tensor:
        """Semantic codes LongTensor [B, M] (eval mode, no grad, usage counts untouched).

        `last_level` overrides the config's rule (e.g. "nearest" to report plain RQ collisions).
        """
        if len(x) == 0:
            return torch.zeros(0, self.levels, dtype=torch.long, device=x.device)
        codes, _ = self.quantizer.quantize(self.latents(x, batch_size), last_level or self.config.last_level)
        return codes

    @torch.no_grad()
    def code_vectors(self) -> torch.Tensor:
        """Codebooks [M, N, code_dim], detached: the seeds for the LLM's new token embeddings."""
        return self.quantizer.codebooks.detach().clone()

    def codebook_report(self, codes: torch.Tensor | np.ndarray) -> list[dict]:
        return codebook_report(codes, self.codebook_size)


def codebook_report(codes: torch.Tensor | np.ndarray, codebook_size: int) -> list[dict]:
    """Per level: used_codes, dead_codes (= N - used), usage_fraction and perplexity.

    Perplexity is exp(entropy) of the empirical code distribution: N when usage is uniform,
    1 when every entity shares one code; it says how many codes effectively carry entities,
    which the bare used count hides when one code holds most of them.
    """
    arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    arr = arr.reshape(len(arr), -1)
    report = []
    for level in range(arr.shape[1]):
        counts = np.bincount(arr[:, level], minlength=codebook_size).astype(np.float64)
        used = int((counts > 0).sum())
        total = counts.sum()
        if total > 0:
            p = counts[counts > 0] / total
            perplexity = float(np.exp(-(p * np.log(p)).sum()))
        else:
            perplexity = 0.0
        report.append(
            {
                "level": level,
                "used_codes": used,
                "dead_codes": codebook_size - used,
                "usage_fraction": used / codebook_size,
                "perplexity": perplexity,
            }
        )
    return report


@torch.no_grad()
def reconstruction_error(model: RQTokenizer, x: torch.Tensor, batch_size: int = 8192) -> float:
    """Mean squared error of decode(quantise(encode(x))) against x, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        total, count = 0.0, 0
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            _, z_q = model.quantizer.quantize(model.encoder(xb))
            total += float(F.mse_loss(model.decoder(z_q), xb, reduction="sum"))
            count += xb.numel()
        return total / max(count, 1)
    finally:
        model.train(was_training)
