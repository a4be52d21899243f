"""TokenRec's masked K-way tokenizer: shapes, masking in training only, init/restart, unseen users."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttds.index.collisions import collision_rate
from ttds.index.kway import (
    KWayConfig,
    KWayTokenizer,
    ParallelQuantizer,
    history_vectors,
    tokenize_unseen_users,
    unseen_user_tokens,
)
from ttds.index.rq import codebook_report, reconstruction_error


def mixture(n: int, dim: int, clusters: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3.0
    labels = rng.integers(0, clusters, n)
    return torch.from_numpy((centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)), labels


def config(**kw) -> KWayConfig:
    base = dict(input_dim=16, code_dim=8, hidden_dims=(32,), levels=3, codebook_size=16, mask_ratio=0.3, seed=0)
    base.update(kw)
    return KWayConfig(**base)


def test_config_validates():
    with pytest.raises(ValueError):
        config(mask_ratio=1.0)
    with pytest.raises(ValueError):
        config(combine="max")
    assert config().kind == "kway_masked"


@pytest.mark.parametrize("combine, dec_in", [("sum", 8), ("concat", 24)])
def test_shapes_k_tokens_and_combination(combine, dec_in):
    model = KWayTokenizer(config(combine=combine))
    x, _ = mixture(64, 16, 4)
    out = model(x)
    assert out.z.shape == (64, 3, 8)  # K sub-spaces
    assert out.codes.shape == (64, 3) and out.codes.dtype == torch.long
    assert out.z_q.shape == (64, dec_in) and out.recon.shape == (64, 16)
    assert model.quantizer.codebooks.shape == (3, 16, 8)
    assert model.code_vectors().shape == (3, 16, 8)
    assert model.encode(x).shape == (64, 3)
    # the decoder input is the sum / concatenation of the K chosen code vectors
    codes, z_q = model.quantizer.quantize(model.latents(x))
    assert codes.min() >= 0 and codes.max() < 16
    vecs = model.quantizer.code_vectors_of(codes)
    expect = vecs.sum(1) if combine == "sum" else vecs.reshape(64, -1)
    assert torch.allclose(z_q, expect)


def test_masking_is_applied_in_training_and_not_in_eval():
    model = KWayTokenizer(config(mask_ratio=0.4))
    x, _ = mixture(256, 16, 4)
    model.train()
    with torch.no_grad():
        z1 = model.encoder(x)
        mask = model.encoder.last_mask
        z2 = model.encoder(x)
    assert mask is not None and mask.shape == (256, 3, 16)
    assert abs(1.0 - float(mask.mean()) - 0.4) < 0.03  # about 40% of the features dropped
    assert not torch.equal(mask[:, 0], mask[:, 1])  # every sub-encoder has its own view
    assert not torch.allclose(z1, z2)  # a fresh mask per forward
    model.eval()
    with torch.no_grad():
        e1, e2 = model.encoder(x), model.encoder(x)
    assert model.encoder.last_mask is None and torch.equal(e1, e2)
    assert torch.equal(model.encode(x), model.encode(x))
    # with no masking the training view equals the eval view: masking is the only difference
    plain = KWayTokenizer(config(mask_ratio=0.0))
    plain.train()
    with torch.no_grad():
        zt = plain.encoder(x)
    assert plain.encoder.last_mask is None and torch.allclose(zt, plain.latents(x))


def test_gradients_reach_every_sub_encoder_codebook_and_decoder():
    model = KWayTokenizer(config())
    x, _ = mixture(64, 16, 4)
    model.quantizer.init_codebooks(model.latents(x))
    out = model(x)
    out.loss.backward()
    first = model.encoder.net[0].weight.grad  # [K, in, hidden]
    assert first is not None and all(float(first[k].abs().sum()) > 0 for k in range(3))
    assert float(model.quantizer.codebooks.grad.abs().sum()) > 0
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_kmeans_init_per_subspace_and_dead_code_restart():
    q = ParallelQuantizer(code_dim=4, levels=2, codebook_size=8, seed=0)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 2, 4, generator=g)
    z[:, 1] += 50.0  # sub-space 1 lives far away: its codebook must follow its own data
    q.init_codebooks(z)
    assert bool(q.initialized)
    assert q.codebooks[1].mean() > 40 and q.codebooks[0].abs().mean() < 5
    q.train()
    q(z)
    assert q.usage.sum(1).tolist() == [200.0, 200.0]
    # kill 3 codes of codebook 0 (nobody used them) and restart: they become data points
    q.usage.zero_()
    q.usage[0, 3:] = 1.0
    q.usage[1] = 1.0
    restarted = q.restart_dead_codes(z)
    assert restarted == [3, 0]
    rows = z[:, 0]
    for c in range(3):
        assert float((rows - q.codebooks[0, c].detach()).norm(dim=1).min()) < 1e-5
    assert float(q.usage.sum()) == 0.0


def test_init_uses_codebooks_and_is_deterministic():
    x, _ = mixture(600, 16, 12)

    def initialised() -> KWayTokenizer:
        m = KWayTokenizer(config())
        m.train()
        torch.manual_seed(0)  # the training forward's feature masks
        m(x)  # the first training forward k-means-initialises every parallel codebook
        m.eval()
        return m

    a = initialised()
    codes = a.encode(x)
    report = codebook_report(codes, 16)
    assert all(r["used_codes"] > 8 for r in report)
    # K parallel tokens name far more distinct IDs than any one codebook of 16 codes could
    distinct = round((1 - collision_rate(codes.numpy())) * len(x))
    assert distinct > 4 * 16
    assert np.isfinite(reconstruction_error(a, x))
    assert torch.equal(codes, initialised().encode(x))


def test_unseen_users_are_tokenised_from_history_without_retraining():
    # items in 6 clusters; a user's training history stays inside one cluster
    item_x, item_cluster = mixture(300, 16, 6, seed=1)
    item_x_np = item_x.numpy()
    rng = np.random.default_rng(0)
    members = [np.flatnonzero(item_cluster == c) for c in range(6)]

    def histories(n: int) -> tuple[list[list[int]], np.ndarray]:
        cl = rng.integers(0, 6, n)
        return [rng.choice(members[c], 5, replace=False).tolist() for c in cl], cl

    train_h, _ = histories(400)
    tower = KWayTokenizer(config(codebook_size=8, levels=2))
    tower.train()
    torch.manual_seed(0)
    tower(torch.from_numpy(history_vectors(item_x_np, train_h)))  # k-means init on the training users' vectors
    tower.eval()
    before = {k: v.clone() for k, v in tower.state_dict().items()}

    new_h, new_cluster = histories(60)  # users never seen in training
    codes = tokenize_unseen_users(tower, item_x_np, new_h)
    assert codes.shape == (60, 2) and codes.dtype == np.int64
    assert all(torch.equal(before[k], v) for k, v in tower.state_dict().items())  # nothing trained
    assert np.array_equal(codes, tokenize_unseen_users(tower, item_x_np, new_h))
    # the codes carry the user's taste: same-cluster users share a first code far more often
    same = new_cluster[:, None] == new_cluster[None, :]
    agree = codes[:, None, 0] == codes[None, :, 0]
    off = ~np.eye(60, dtype=bool)
    assert agree[same & off].mean() > agree[~same].mean() + 0.3
    toks = unseen_user_tokens(tower, item_x_np, new_h[:2])
    assert toks[0] == [f"<ua_{codes[0, 0]}>", f"<ub_{codes[0, 1]}>"]
    with pytest.raises(ValueError):
        tokenize_unseen_users(tower, item_x_np[:, :8], new_h)


def test_balanced_last_codebook_spreads_collisions():
    """The RQ towers' collision-aware last level (`ttds.index.balanced`) works on parallel codebooks."""
    q = ParallelQuantizer(code_dim=4, levels=2, codebook_size=8, seed=0)
    z = torch.randn(40, 2, 4, generator=torch.Generator().manual_seed(3))  # 40 entities, 64 possible IDs
    q.init_codebooks(z)
    near, _ = q.quantize(z)
    bal, z_q = q.quantize(z, "balanced")
    assert torch.equal(near[:, 0], bal[:, 0])  # only the last codebook moves
    assert collision_rate(bal.numpy()) < collision_rate(near.numpy())
    assert torch.allclose(z_q, q.code_vectors_of(bal).sum(1))
    with pytest.raises(ValueError):
        q.quantize(z, "sinkhorn")
    model = KWayTokenizer(config(last_level="nearest"))
    x, _ = mixture(64, 16, 4)
    assert torch.equal(model.encode(x), model.quantizer.quantize(model.latents(x))[0])
