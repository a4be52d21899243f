"""The weight average (optim.ema_decay / ema_epochs): its arithmetic, the swap, and its checkpoint round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttds.train.weight_average import WeightAverage, decay_for_epochs, read_weight_average, steps_per_epoch


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    m[1].bias.requires_grad_(False)  # a frozen parameter is neither averaged nor touched
    return m


def test_average_follows_the_warmed_up_decay_and_skips_frozen_weights():
    m = _model()
    avg = WeightAverage(m, decay=0.9)
    assert len(avg.params) == 3
    w0 = m[0].weight.detach().clone()
    with torch.no_grad():
        m[0].weight.add_(1.0)
    avg.update()  # update 0: d = min(0.9, 1/10) = 0.1
    assert torch.allclose(avg.shadow[0], w0 + 0.9)
    for _ in range(200):
        avg.update()
    assert avg.current_decay() == 0.9
    assert torch.allclose(avg.shadow[0], m[0].weight, atol=1e-6)  # a constant weight is its own average


def test_swap_shows_the_average_then_restores_the_live_weights_exactly():
    m = _model()
    avg = WeightAverage(m, decay=0.99)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    avg.update()
    live = [p.detach().clone() for p in m.parameters()]
    x = torch.randn(5, 3)
    with avg.swapped_in():
        assert torch.equal(m[0].weight, avg.shadow[0])
        averaged_out = m(x)
    assert all(torch.equal(p, v) for p, v in zip(m.parameters(), live))
    assert not torch.allclose(m(x), averaged_out)
    with pytest.raises(RuntimeError), avg.swapped_in():  # restored even when the block fails
        raise RuntimeError("validation failed")
    assert all(torch.equal(p, v) for p, v in zip(m.parameters(), live))


def test_checkpoint_round_trip_and_a_mismatch_is_refused(tmp_path):
    m = _model()
    avg = WeightAverage(m, decay=0.5)
    with torch.no_grad():
        m[0].weight.mul_(3)
    avg.update()
    avg.update()
    avg.save(tmp_path)
    again = WeightAverage(_model(), decay=0.5)
    again.load_state(read_weight_average(tmp_path))
    assert again.updates == 2 and all(torch.equal(a, b) for a, b in zip(again.shadow, avg.shadow))
    assert read_weight_average(tmp_path / "nothing-here") is None
    wider = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))
    with pytest.raises(ValueError, match="lacks"):  # 1.bias is trainable here, not averaged there
        WeightAverage(wider, decay=0.5).load_state(read_weight_average(tmp_path))
    wider[1].bias.requires_grad_(False)
    with pytest.raises(ValueError, match="shape"):
        WeightAverage(wider, decay=0.5).load_state(read_weight_average(tmp_path))
    with pytest.raises(ValueError):
        WeightAverage(m, decay=1.0)


def test_bad_decay_and_zero3_are_refused_before_work(synthetic_corpus, tmp_path):
    from test_train_ttds_e2e import tiny_config

    from ttds.config import check_config

    with pytest.raises(ValueError, match=r"optim.ema_decay=1.0: expected a value in \[0, 1\)"):
        check_config(tiny_config(synthetic_corpus, tmp_path, 1, ["--optim.ema_decay=1.0"]))
    with pytest.raises(ValueError, match="needs train.zero_stage <= 2"):
        check_config(tiny_config(synthetic_corpus, tmp_path, 1, ["--optim.ema_decay=0.99", "--train.zero_stage=3"]))
    check_config(tiny_config(synthetic_corpus, tmp_path, 1, ["--optim.ema_decay=0.99"]))
    with pytest.raises(ValueError, match="set ema_decay or ema_epochs, not both"):
        check_config(tiny_config(synthetic_corpus, tmp_path, 1, ["--optim.ema_decay=0.99", "--optim.ema_epochs=1"]))
    with pytest.raises(ValueError, match=r"optim.ema_epochs=-1.0: expected a value >= 0"):
        check_config(tiny_config(synthetic_corpus, tmp_path, 1, ["--optim.ema_epochs=-1"]))
    with pytest.raises(ValueError, match="needs train.zero_stage <= 2"):
        check_config(tiny_config(synthetic_corpus, tmp_path, 1, ["--optim.ema_epochs=1", "--train.zero_stage=3"]))
    check_config(tiny_config(synthetic_corpus, tmp_path, 1, ["--optim.ema_epochs=0.5"]))


def test_span_in_epochs_gives_the_decay_of_that_many_steps():
    # Instruments TTDS: ~28.8k prompt rows in batches of 32 on one worker = 900 steps: the .999 measured by hand (1 - 1/900 = .99889)
    assert steps_per_epoch(28_800, 32, 1) == 900 and abs(decay_for_epochs(1, 28_800, 32, 1) - (1 - 1 / 900)) < 1e-15
    assert steps_per_epoch(28_801, 32, 1) == 901  # a last short batch is a step
    assert steps_per_epoch(28_800, 32, 2) == 450  # each worker steps through its half
    assert abs(decay_for_epochs(2, 24_772, 256, 1) - (1 - 1 / 194)) < 1e-15  # SASRec: 97 steps per epoch, two epochs
    assert decay_for_epochs(0.5, 64, 32, 1) == 0.0  # a span of one step is the live weights: no average
    assert decay_for_epochs(1, 10, 32, 4) == 0.0
