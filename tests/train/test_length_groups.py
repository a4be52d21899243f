"""optim.length_group_steps: the same examples in as many steps, with less padding."""

import random

from ttds.train.ttds_worker import regroup_by_length


def _padded(steps):
    return sum(len(s) * max(len(e[0]) for e in s) for s in steps)


def test_regroup_keeps_every_example_and_the_step_count_and_pads_less():
    rng = random.Random(0)
    steps = [[(list(range(rng.randint(3, 90))), k, s) for k in range(rng.randint(1, 32))] for s in range(8)]
    out = regroup_by_length(steps, random.Random(1))
    assert len(out) == len(steps) and all(out)
    key = lambda e: (len(e[0]), e[1], e[2])  # noqa: E731
    assert sorted((e for s in out for e in s), key=key) == sorted((e for s in steps for e in s), key=key)
    assert _padded(out) < _padded(steps)


def test_one_step_is_left_alone():
    steps = [[([1, 2, 3], 0)]]
    assert regroup_by_length(steps, random.Random(0)) is steps
