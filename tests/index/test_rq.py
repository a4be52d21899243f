"""Residual quantiser and RQ tokenizer: gradients, initialisation, dead codes, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttds.index.rq import (
    RQConfig,
    RQTokenizer,
    ResidualQuantizer,
    codebook_report,
    kmeans,
    reconstruction_error,
)
from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer




def mixture(n: int, dim: int, clusters: int, seed: int = 0, spread: float = 3.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * spread
    labels = rng.integers(0, clusters, n)
    return torch.from_numpy((centres[labels] + rng.normal(size=(n, dim))).astype(np.float32))


def small_config(**kw) -> RQConfig:
    base = dict(input_dim=16, code_dim=8, hidden_dims=(32,), levels=3, codebook_size=16, seed=0)
    base.update(kw)
    return RQConfig(**base)


def test_config_normalises_and_validates():
    assert RQConfig(input_dim=4, hidden_dims=[8, 8]).hidden_dims == (8, 8)
    with pytest.raises(ValueError):
        RQConfig(input_dim=4, levels=0)
    with pytest.raises(ValueError):
        RQConfig(input_dim=4, codebook_size=1)


def test_quantizer_shapes_and_residual_sum():
    q = ResidualQuantizer(code_dim=8, levels=3, codebook_size=16, kmeans_init=False)
    z = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    z_q, codes, loss = q(z)
    assert z_q.shape == (32, 8)
    assert codes.shape == (32, 3) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    assert loss.ndim == 0 and float(loss.detach()) > 0
    # z_q is the sum of the picked code vectors, one per level.
    picked = sum(q.codebooks[level][codes[:, level]] for level in range(3))
    torch.testing.assert_close(z_q, picked)
    q_codes, q_zq = q.quantize(z)
    assert torch.equal(q_codes, codes)
    torch.testing.assert_close(q_zq, picked)


def test_each_level_quantises_the_residual_of_the_previous():
    q = ResidualQuantizer(code_dim=2, levels=2, codebook_size=2, kmeans_init=False)
    with torch.no_grad():
        q.codebooks[0] = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
        q.codebooks[1] = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    # Level 0 takes (10, 0); the residual (0, 1) then matches level 1's second code. Were
    # level 1 applied to z itself it would pick code 1 as well, so also check a point where
    # that differs: (10, 0.2) -> residual (0, 0.2) -> code 0.
    codes, z_q = q.quantize(torch.tensor([[10.0, 1.0], [10.0, 0.2]]))
    assert codes.tolist() == [[1, 1], [1, 0]]
    torch.testing.assert_close(z_q, torch.tensor([[10.0, 1.0], [10.0, 0.0]]))


def test_gradients_reach_encoder_by_straight_through_and_codebooks_by_quant_loss():
    model = RQTokenizer(small_config(kmeans_init=False))
    x = mixture(64, 16, 4)
    out = model(x)
    out.recon_loss.backward(retain_graph=True)
    enc_grad = model.encoder[0].weight.grad
    assert enc_grad is not None and float(enc_grad.abs().sum()) > 0
    book_grad = model.quantizer.codebooks.grad
    # The straight-through estimator passes the decoder's gradient to z, not to the codes.
    assert book_grad is None or float(book_grad.abs().sum()) == 0.0

    model.zero_grad(set_to_none=True)
    out.quant_loss.backward()
    book_grad = model.quantizer.codebooks.grad
    assert book_grad is not None
    used = torch.zeros(3, 16, dtype=torch.bool)
    for level in range(3):
        used[level, out.codes[:, level]] = True
    per_code = book_grad.abs().sum(-1)
    assert bool((per_code[used] > 0).all()), "every chosen code must get a codebook gradient"
    assert bool((per_code[~used] == 0).all()), "codes nobody picked get no gradient"
    # The commitment term also reaches the encoder.
    assert float(model.encoder[0].weight.grad.abs().sum()) > 0


def test_kmeans_init_beats_random_init_on_clustered_data():
    z = mixture(2000, 16, 20, seed=2, spread=5.0)
    random_q = ResidualQuantizer(code_dim=16, levels=2, codebook_size=32, kmeans_init=False, seed=0)
    random_err = random_q.quantization_error(z)
    # A stronger baseline than N(0, 1/d) codes: codes copied from random data rows.
    rows_q = ResidualQuantizer(code_dim=16, levels=2, codebook_size=32, kmeans_init=False, seed=0)
    rows_q.restart_dead_codes(z)
    rows_err = rows_q.quantization_error(z)
    km_q = ResidualQuantizer(code_dim=16, levels=2, codebook_size=32, kmeans_init=True, kmeans_iters=20, seed=0)
    km_q.init_codebooks(z)
    km_err = km_q.quantization_error(z)
    assert km_err < 0.7 * rows_err
    assert rows_err < random_err
    assert bool(km_q.initialized)


def test_kmeans_with_fewer_points_than_codes():
    x = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    centres = kmeans(x, 16, iters=5, generator=torch.Generator().manual_seed(0))
    assert centres.shape == (16, 2) and bool(torch.isfinite(centres).all())
    torch.testing.assert_close(centres[:5], x)  # every point is a centre
    q = ResidualQuantizer(code_dim=2, levels=2, codebook_size=16, seed=0)
    q.init_codebooks(x)
    assert q.quantization_error(x) < 1e-6


def test_kmeans_is_deterministic_given_the_generator():
    x = mixture(500, 8, 6, seed=3)
    a = kmeans(x, 12, generator=torch.Generator().manual_seed(7))
    b = kmeans(x, 12, generator=torch.Generator().manual_seed(7))
    c = kmeans(x, 12, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_dead_code_restart_revives_codes_far_from_the_data():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(400, 4, generator=gen)
    q = ResidualQuantizer(code_dim=4, levels=2, codebook_size=16, kmeans_init=False, seed=0)
    with torch.no_grad():
        q.codebooks[0, :4] = torch.randn(4, 4, generator=gen) * 0.5
        q.codebooks[0, 4:] = 1000.0  # no data point will ever pick these
    q.train()
    _, codes, _ = q(z)
    assert set(codes[:, 0].tolist()) <= {0, 1, 2, 3}
    dead = q.dead_codes()
    assert dead[0, 4:].all() and not dead[0, :4].any()

    restarted = q.restart_dead_codes(z)
    assert restarted[0] == 12
    assert float(q.codebooks.detach()[0].abs().max()) < 100.0  # the far codes now sit among the data
    assert float(q.usage.sum()) == 0.0  # a new window starts

    _, codes_after, _ = q(z)
    used_after = set(codes_after[:, 0].tolist())
    assert len(used_after) > 8, f"restart should put most revived codes to use, got {sorted(used_after)}"
    assert q.quantization_error(z) < 0.5 * float(z.pow(2).mean())


def test_usage_counts_only_in_training_mode():
    q = ResidualQuantizer(code_dim=4, levels=2, codebook_size=8, kmeans_init=False)
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    q.eval()
    q(z)
    assert float(q.usage.sum()) == 0.0
    q.train()
    q(z)
    assert q.usage.sum(1).tolist() == [50.0, 50.0]


def test_first_training_forward_initialises_with_kmeans():
    q = ResidualQuantizer(code_dim=4, levels=1, codebook_size=8, kmeans_init=True)
    z = mixture(300, 4, 8, seed=4, spread=6.0)
    before = q.quantization_error(z)
    q.train()
    q(z)
    assert bool(q.initialized)
    assert q.quantization_error(z) < 0.2 * before


def test_codebook_report_counts_and_perplexity():
    codes = np.stack([np.zeros(8, dtype=np.int64), np.arange(8) % 4], axis=1)
    level0, level1 = codebook_report(codes, codebook_size=16)
    assert level0["used_codes"] == 1 and level0["dead_codes"] == 15
    assert level0["perplexity"] == pytest.approx(1.0)
    assert level1["used_codes"] == 4 and level1["usage_fraction"] == pytest.approx(0.25)
    assert level1["perplexity"] == pytest.approx(4.0)


def test_encode_code_vectors_and_reconstruction_error():
    model = RQTokenizer(small_config())
    x = mixture(100, 16, 5)
    model.train()
    codes = model.encode(x)
    assert codes.shape == (100, 3) and codes.dtype == torch.long
    assert model.training, "encode must restore the training flag"
    assert float(model.quantizer.usage.sum()) == 0.0, "encode must not count usage"
    vecs = model.code_vectors()
    assert vecs.shape == (3, 16, 8) and not vecs.requires_grad
    vecs += 1.0
    assert not torch.equal(vecs, model.quantizer.codebooks.detach()), "code_vectors must be a copy"
    err = reconstruction_error(model, x)
    assert err > 0
    model.eval()
    with torch.no_grad():
        expected = float(torch.nn.functional.mse_loss(model(x).recon, x))
    assert err == pytest.approx(expected, rel=1e-5)


def test_state_dict_round_trip_gives_same_codes():
    x = mixture(300, 16, 4, seed=7)
    model = RQTokenizer(small_config())
    model.train()
    model(x)  # the first training forward k-means-initialises the codebooks
    model.eval()
    clone = RQTokenizer(small_config(seed=99))
    clone.load_state_dict(model.state_dict())
    assert bool(clone.quantizer.initialized)
    assert torch.equal(clone.encode(x), model.encode(x))


def test_twin_tower_losses_and_stds_ablation():
    item_cfg = small_config()
    user_cfg = small_config(input_dim=10, levels=2, codebook_size=8, seed=1)
    twin = TwinTowerTokenizer(TwinTowerConfig(item=item_cfg, user=user_cfg, user_weight=0.5))
    item_x, user_x = mixture(40, 16, 3), mixture(30, 10, 3, seed=1)
    out = twin(item_x, user_x)
    assert out["item"].codes.shape == (40, 3) and out["user"].codes.shape == (30, 2)
    torch.testing.assert_close(out["loss"], out["item"].loss + 0.5 * out["user"].loss)
    out["loss"].backward()
    assert twin.user.encoder[0].weight.grad is not None
    assert twin.encode_users(user_x).shape == (30, 2)

    only_items = twin(item_x)
    assert only_items["user"] is None
    torch.testing.assert_close(only_items["loss"], only_items["item"].loss)

    stds = TwinTowerTokenizer(TwinTowerConfig.from_dict({"item": item_cfg.__dict__}))
    assert not stds.has_user_tower
    with pytest.raises(ValueError):
        stds(item_x, user_x)
    with pytest.raises(ValueError):
        stds.encode_users(user_x)

    # STDS reuses a twin-tower save: the item tower loads, the user tower is ignored
    stds.load_saved(twin.state_dict())
    torch.testing.assert_close(stds.encode_items(item_x), twin.encode_items(item_x))
    with pytest.raises(RuntimeError, match="Missing"):  # a twin-tower model needs the user tower
        TwinTowerTokenizer(twin.config).load_saved(stds.state_dict())
