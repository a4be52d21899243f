"""HR@K / NDCG@K on hand-computed cases, and exact merging of partial results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ttds.eval import MetricAccumulator, per_user_ranks, ranking_metrics


def _case():
    """Four users, K=10: target at rank 0, 2, 7, and absent (row padded with -1)."""
    ranked = np.array(
        [
            [5, 1, 2, 3, 4, 6, 7, 8, 9, 10],  # target 5 at rank 0
            [1, 2, 5, 3, 4, 6, 7, 8, 9, 10],  # target 5 at rank 2
            [1, 2, 3, 4, 6, 7, 8, 5, 9, 10],  # target 5 at rank 7
            [1, 2, 3, 4, 6, -1, -1, -1, -1, -1],  # target 5 absent
        ]
    )
    return ranked, np.array([5, 5, 5, 5])


def test_per_user_ranks():
    ranked, targets = _case()
    assert per_user_ranks(ranked, targets).tolist() == [0, 2, 7, -1]
    # first occurrence counts; a -1 target never matches -1 padding
    assert per_user_ranks(np.array([[3, 3, 1], [2, -1, -1]]), np.array([3, -1])).tolist() == [0, -1]


def test_hand_computed_values():
    ranked, targets = _case()
    m = ranking_metrics(ranked, targets)
    assert set(m) == {"HR@1", "HR@5", "HR@10", "NDCG@1", "NDCG@5", "NDCG@10"}
    assert m["HR@1"] == pytest.approx(1 / 4)
    assert m["HR@5"] == pytest.approx(2 / 4)
    assert m["HR@10"] == pytest.approx(3 / 4)
    assert m["NDCG@1"] == pytest.approx(1 / 4)
    assert m["NDCG@5"] == pytest.approx((1 + 0.5) / 4)  # 1/log2(2) + 1/log2(4)
    assert m["NDCG@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(9)) / 4)


def test_single_users():
    ranked, targets = _case()
    expect = [  # (HR@1, HR@5, HR@10, NDCG@5, NDCG@10) per user
        (1, 1, 1, 1.0, 1.0),
        (0, 1, 1, 0.5, 0.5),
        (0, 0, 1, 0.0, 1 / math.log2(9)),
        (0, 0, 0, 0.0, 0.0),
    ]
    for row, (h1, h5, h10, n5, n10) in enumerate(expect):
        m = ranking_metrics(ranked[row : row + 1], targets[row : row + 1])
        assert (m["HR@1"], m["HR@5"], m["HR@10"]) == (h1, h5, h10)
        assert m["NDCG@5"] == pytest.approx(n5) and m["NDCG@10"] == pytest.approx(n10)


def test_accumulator_merge_equals_concatenation():
    rng = np.random.default_rng(0)
    ranked = rng.integers(-1, 30, size=(101, 10))
    targets = rng.integers(0, 30, size=101)
    whole = ranking_metrics(ranked, targets)

    parts = [(0, 17), (17, 60), (60, 61), (61, 101)]
    workers = [MetricAccumulator().update(ranked[a:b], targets[a:b]) for a, b in parts]
    merged = MetricAccumulator()
    for w in workers[::-1]:  # order does not matter
        merged.merge(MetricAccumulator.from_dict(json.loads(json.dumps(w.to_dict()))))
    assert merged.count == 101
    got = merged.result()
    assert got.keys() == whole.keys()
    for key in whole:
        assert got[key] == pytest.approx(whole[key], abs=1e-12)


def test_accumulator_edge_cases():
    assert all(math.isnan(v) for v in MetricAccumulator().result().values())
    with pytest.raises(ValueError, match="cannot merge"):
        MetricAccumulator(ks=(1, 5)).merge(MetricAccumulator(ks=(1, 10)))
    with pytest.raises(ValueError, match="too short"):
        ranking_metrics(np.zeros((2, 5), dtype=int), np.zeros(2, dtype=int), ks=(1, 10))
    with pytest.raises(ValueError, match="n = len"):
        per_user_ranks(np.zeros((2, 5), dtype=int), np.zeros(3, dtype=int))
    m = ranking_metrics(np.array([[4, 2]]), np.array([2]), ks=(2,))
    assert m == {"HR@2": 1.0, "NDCG@2": pytest.approx(1 / math.log2(3))}


def test_per_user_table_means_are_the_reported_figures_and_paired_test_reads_them(tmp_path):
    import pandas as pd

    from ttds.bench.paired import paired_comparison
    from ttds.eval.per_user import per_user_table, read_per_user, write_per_user

    rng = np.random.default_rng(0)
    n, items = 400, 50
    targets = rng.integers(0, items, n)
    lists = [np.stack([rng.permutation(items)[:10] for _ in range(n)]) for _ in range(2)]  # two "templates"
    table = per_user_table(np.arange(n) + 100, targets, lists)
    expected = {k: np.mean([ranking_metrics(r, targets)[k] for r in lists]) for k in ("HR@1", "HR@10", "NDCG@5", "NDCG@10")}
    assert {k: table[k].mean() for k in expected} == pytest.approx(expected)
    back = read_per_user(write_per_user(tmp_path / "x" / "test_per_user.parquet", table).parent)
    pd.testing.assert_frame_equal(back, table)

    # a system that puts every target first beats this one beyond noise; one equal to it does not
    perfect = table.assign(**{"NDCG@10": 1.0})
    better = paired_comparison(perfect, table)
    assert better["diff"] > 0 and better["ci95"][0] > 0 and better["p_two_sided"] < 1e-6
    same = paired_comparison(table, table.sample(frac=1.0, random_state=1))  # row order must not matter
    assert same["diff"] == 0 and same["users"] == n and same["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="share 0 scored users"):
        paired_comparison(table, table.assign(user_id=table["user_id"] + 10_000))
