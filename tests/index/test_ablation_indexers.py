"""Ablation indexers behind one interface: random IDs, LSH, precomputed (LC-Rec)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from ttds.index import (
    Indexer,
    LSHIndexer,
    RandomIndexer,
    parse_lcrec_tokens,
    table_from_arrow,
    table_from_index_json,
    table_from_precomputed,
)
from conftest import shared_dataset
from ttds.index.collisions import is_prefix_free




def features(n: int = 400, dim: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("make", [lambda s: RandomIndexer(3, 64, seed=s), lambda s: LSHIndexer(3, 64, seed=s)])
def test_indexer_shapes_ranges_and_seeded_determinism(make):
    x = features()
    a = make(0).fit(x)
    assert isinstance(a, Indexer)
    codes = a.encode(x)
    assert codes.shape == (400, 3) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 64
    assert np.array_equal(codes, make(0).fit(x).encode(x))
    assert not np.array_equal(codes, make(1).fit(x).encode(x))
    # Codes spread over the codebook rather than sitting on a few values.
    assert all(len(np.unique(codes[:, level])) > 32 for level in range(3))


def test_random_ids_ignore_features_and_keep_row_prefixes():
    x = features(50)
    idx = RandomIndexer(4, 256, seed=3).fit(x)
    codes = idx.encode(x)
    assert np.array_equal(codes, idx.encode(np.zeros_like(x)))  # features do not matter
    assert np.array_equal(codes[:20], idx.encode(x[:20]))  # row i's ID depends on i only
    with pytest.raises(ValueError):
        RandomIndexer(4, 1)


def test_lsh_puts_near_duplicates_together_more_than_random_pairs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 32))
    near = x + 0.02 * rng.normal(size=x.shape)
    for residual in (True, False):
        idx = LSHIndexer(4, 16, seed=0, residual=residual).fit(x)
        a, b = idx.encode(x), idx.encode(near)
        shuffled = a[rng.permutation(len(a))]
        near_same = (a == b).mean(axis=0)
        random_same = (a == shuffled).mean(axis=0)
        assert near_same[0] > 0.9, near_same
        assert random_same[0] < 0.3, random_same
        assert (a == b).all(axis=1).mean() > 5 * max((a == shuffled).all(axis=1).mean(), 0.01)


def test_lsh_residual_levels_refine_within_cells():
    x = features(2000, 16, seed=2)
    idx = LSHIndexer(2, 16, seed=0).fit(x)
    codes = idx.encode(x)
    # The residual after level 0 has zero mean inside every level-0 cell (what fit subtracts).
    r = x - idx.mean - idx.cell_means[0][codes[:, 0]]
    for cell in np.unique(codes[:, 0]):
        assert np.allclose(r[codes[:, 0] == cell].mean(0), 0.0, atol=1e-5)
    with pytest.raises(ValueError):
        LSHIndexer(2, 100)
    with pytest.raises(RuntimeError):
        LSHIndexer(2, 16).encode(x)


def test_parse_lcrec_tokens():
    assert parse_lcrec_tokens(["<a_137>", "<b_112>", "<c_79>", "<d_200>"]).tolist() == [137, 112, 79, 200]
    for bad in (["<b_1>", "<a_2>"], ["<a_1>", "<a_2>"], ["a_1"], ["<a_x>"], ["<ua_1>"], []):
        with pytest.raises(ValueError):
            parse_lcrec_tokens(bad)


def test_table_from_precomputed_recomputes_suffixes():
    tokens = [
        ["<a_1>", "<b_2>", "<c_3>"],
        ["<a_1>", "<b_2>", "<c_3>"],
        ["<a_0>", "<b_9>", "<c_3>"],
    ]
    table = table_from_precomputed([5, 6, 7], tokens, codebook_size=16)
    assert table.kind == "item" and table.codebook_size == 16
    assert table.codes.tolist() == [[1, 2, 3], [1, 2, 3], [0, 9, 3]]
    assert table.suffix.tolist() == [0, 1, -1]
    assert table.tokens(entity_id=6) == ["<a_1>", "<b_2>", "<c_3>", "<s_1>"]
    assert table.meta["source"] == "precomputed"
    assert table_from_precomputed([5, 6, 7], tokens).codebook_size == 10  # inferred: max code + 1
    with pytest.raises(ValueError):
        table_from_precomputed([1, 2], [["<a_1>", "<b_2>"], ["<a_1>"]])

    by_json = table_from_index_json({"1": tokens[2], "0": tokens[0]}, codebook_size=16)
    assert by_json.ids.tolist() == [0, 1] and by_json.codes.tolist() == [[1, 2, 3], [0, 9, 3]]
    arrow = pa.table({"item_id": pa.array([3, 4], pa.int64()), "tokens": [tokens[0], tokens[2]]})
    assert table_from_arrow(arrow, 16).codes.tolist() == [[1, 2, 3], [0, 9, 3]]


@pytest.mark.real_data
def test_lcrec_instruments_index_parses_into_unique_ids():
    index = json.loads((shared_dataset("Instruments") / "Instruments.index.json").read_text())
    table = table_from_index_json(index, codebook_size=256)
    assert len(table) == len(index) and table.levels == 4
    assert table.id_string(0) == "".join(index["0"])
    assert 0 < table.collision_rate < 0.01
    table.assert_unique()
    assert is_prefix_free(table.keys())
