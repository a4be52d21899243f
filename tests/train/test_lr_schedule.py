"""optim.lr_schedule: the per-epoch factor, and bad values refused before any work."""

from __future__ import annotations

import math

import pytest

from ttds.config import TTDSJobConfig, load_config
from ttds.train.lr_schedule import lr_factor


def test_cosine_decays_from_full_rate_to_the_floor_over_the_trained_epochs():
    f = [lr_factor("cosine", e, epochs=6, warmup_epochs=1, min_ratio=0.1) for e in range(6)]
    assert f[0] == f[1] == 1.0  # the frozen warm-up epoch does not spend the schedule
    assert all(a > b for a, b in zip(f[1:], f[2:]))  # strictly decreasing afterwards
    assert math.isclose(f[-1], 0.1) and math.isclose(f[3], 0.55)  # midpoint of 1 .. 0.1
    assert lr_factor("cosine", 9, epochs=6) == pytest.approx(0.1)  # a resumed run past the horizon stays at the floor
    assert lr_factor("cosine", 0, epochs=1) == 1.0
    assert all(lr_factor("constant", e, 6) == 1.0 for e in range(6))


def test_unknown_schedule_is_refused_up_front():
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("linear", 0, 3)
    with pytest.raises(ValueError) as err:  # the config checks itself as it is loaded: both problems at once
        load_config(TTDSJobConfig, None, ["--optim.lr_schedule=linear", "--optim.min_lr_ratio=2"])
    assert "optim.lr_schedule='linear'" in str(err.value) and "min_lr_ratio" in str(err.value)
