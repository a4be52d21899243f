"""Collision suffixes and the semantic-ID table: token names, uniqueness, persistence, churn."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from ttds.index.collisions import assign_suffixes, collision_rate, final_keys, is_prefix_free, max_suffix
from ttds.index.table import SemanticIDTable, level_token, suffix_token

# Rows 1, 3 and 4 share (1, 2, 3); row 5 shares its first two levels with them but not the third.
CODES = np.array(
    [
        [0, 0, 0],
        [1, 2, 3],
        [4, 5, 6],
        [1, 2, 3],
        [1, 2, 3],
        [1, 2, 0],
    ],
    dtype=np.int64,
)


def test_suffixes_number_a_collision_set_by_row_order():
    suffix = assign_suffixes(CODES)
    assert suffix.tolist() == [-1, 0, -1, 1, 2, -1]
    assert suffix.dtype == np.int64
    assert collision_rate(CODES) == pytest.approx(2 / 6)
    assert max_suffix(CODES) == 2
    keys = final_keys(CODES, suffix)
    assert keys[1] == (1, 2, 3, 0) and keys[0] == (0, 0, 0)
    assert len(set(keys)) == len(keys)
    assert is_prefix_free(keys)


def test_suffixes_follow_rows_when_rows_move():
    reordered = CODES[[4, 0, 1, 2, 3, 5]]
    assert assign_suffixes(reordered).tolist() == [0, -1, 1, -1, 2, -1]


def test_no_collisions_and_empty_input():
    unique = np.arange(12).reshape(4, 3)
    assert assign_suffixes(unique).tolist() == [-1] * 4
    assert collision_rate(unique) == 0.0 and max_suffix(unique) == -1
    empty = np.zeros((0, 3), dtype=np.int64)
    assert assign_suffixes(empty).shape == (0,)
    assert collision_rate(empty) == 0.0 and max_suffix(empty) == -1
    with pytest.raises(ValueError):
        collision_rate(np.arange(3))


def test_is_prefix_free_detects_prefixes_and_duplicates():
    assert not is_prefix_free([(1, 2, 3), (1, 2, 3, 0)])
    assert not is_prefix_free([(1, 2, 3), (1, 2, 3)])
    assert is_prefix_free([(1, 2, 3, 0), (1, 2, 3, 1), (1, 2, 4)])


def test_random_codes_always_give_unique_prefix_free_ids():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(500, 3))  # 27 possible codes: many collisions
    keys = final_keys(codes, assign_suffixes(codes))
    assert len(set(keys)) == 500
    assert is_prefix_free(keys)


def item_table(meta=None) -> SemanticIDTable:
    return SemanticIDTable.from_codes("item", np.arange(10, 16), CODES, codebook_size=8, meta=meta)


def test_table_tokens_and_id_strings():
    table = item_table()
    assert table.levels == 3 and len(table) == 6
    assert table.tokens(0) == ["<a_0>", "<b_0>", "<c_0>"]
    assert table.tokens(3) == ["<a_1>", "<b_2>", "<c_3>", "<s_1>"]
    assert table.tokens(entity_id=13) == table.tokens(3)
    assert table.id_string(1) == "<a_1><b_2><c_3><s_0>"
    assert table.token_strings()[4] == ["<a_1>", "<b_2>", "<c_3>", "<s_2>"]
    assert table.token_strings() == [table.tokens(i) for i in range(6)]
    assert table.row_of(15) == 5
    with pytest.raises(KeyError):
        table.row_of(99)
    with pytest.raises(ValueError):
        table.tokens(0, entity_id=10)
    assert table.entity_of(["<a_1>", "<b_2>", "<c_3>", "<s_2>"]) == 14
    assert table.entity_of(["<a_1>", "<b_2>", "<c_3>"]) is None  # a shared code alone names nobody

    users = SemanticIDTable.from_codes("user", [7, 8], np.array([[3, 1], [3, 1]]), codebook_size=4)
    assert users.id_string(0) == "<ua_3><ub_1><s_0>"
    assert level_token("user", 2, 5) == "<uc_5>" and suffix_token(4) == "<s_4>"


def test_vocabulary_covers_every_level_token_and_used_suffix():
    table = item_table()
    vocab = table.vocabulary()
    assert len(vocab) == 3 * 8 + 3
    assert vocab[:2] == ["<a_0>", "<a_1>"] and vocab[8] == "<b_0>" and vocab[-1] == "<s_2>"
    assert len(set(vocab)) == len(vocab)
    assert {tok for row in table.token_strings() for tok in row} <= set(vocab)
    assert vocab == item_table().vocabulary()


def test_assert_unique_and_validation():
    item_table().assert_unique()
    broken = SemanticIDTable("item", np.arange(6), CODES, np.full(6, -1), codebook_size=8)
    with pytest.raises(ValueError, match="share the ID"):
        broken.assert_unique()
    with pytest.raises(ValueError):
        SemanticIDTable.from_codes("item", np.arange(6), CODES, codebook_size=4)  # code 6 >= N
    with pytest.raises(ValueError):
        SemanticIDTable.from_codes("shop", np.arange(6), CODES, codebook_size=8)
    with pytest.raises(ValueError):
        SemanticIDTable.from_codes("item", np.zeros(6), CODES, codebook_size=8)  # duplicate entity ids


def test_save_load_round_trip(tmp_path):
    table = item_table(meta={"source": "unit-test", "epoch": 3})
    path = table.save(tmp_path)
    assert path == tmp_path / "item_ids.parquet"
    rows = pq.read_table(path)
    assert rows.column_names == ["kind", "id", "tokens", "codes", "suffix"]
    assert rows.column("tokens").to_pylist()[1] == ["<a_1>", "<b_2>", "<c_3>", "<s_0>"]
    assert rows.column("kind").to_pylist() == ["item"] * 6
    info = json.loads((tmp_path / "item_ids.json").read_text())
    assert info["levels"] == 3 and info["codebook_size"] == 8
    assert info["collision_rate"] == pytest.approx(2 / 6)
    assert info["meta"] == {"source": "unit-test", "epoch": 3}

    loaded = SemanticIDTable.load(tmp_path, "item")
    assert np.array_equal(loaded.ids, table.ids)
    assert np.array_equal(loaded.codes, table.codes)
    assert np.array_equal(loaded.suffix, table.suffix)
    assert loaded.codebook_size == 8 and loaded.meta == table.meta
    assert loaded.token_strings() == table.token_strings()
    with pytest.raises(FileNotFoundError):
        SemanticIDTable.load(tmp_path, "user")


def test_churn_counts_changed_final_ids_over_common_entities():
    table = item_table()
    assert table.churn(item_table()) == 0.0
    codes = CODES.copy()
    codes[0] = [7, 7, 7]  # one ID moves
    moved = SemanticIDTable.from_codes("item", table.ids, codes, codebook_size=8)
    assert moved.churn(table) == pytest.approx(1 / 6)
    # Suffix-only changes count: rows 1 and 3 swap places, so their suffixes swap.
    swapped = SemanticIDTable.from_codes("item", table.ids[[0, 3, 2, 1, 4, 5]], CODES, codebook_size=8)
    assert swapped.churn(table) == pytest.approx(2 / 6)
    # Only entities present in both tables are compared.
    part = SemanticIDTable.from_codes("item", [10, 11, 99], np.array([[0, 0, 0], [5, 5, 5], [1, 1, 1]]), 8)
    assert part.churn(table) == pytest.approx(1 / 2)
    other = SemanticIDTable.from_codes("item", [100], np.array([[0, 0, 0]]), 8)
    assert math.isnan(other.churn(table))


def test_sticky_last_rule_keeps_last_codes_only_where_the_prefix_held():
    table = SemanticIDTable.from_codes("item", [0, 1, 2, 3], np.array([[0, 0, 5], [1, 1, 6], [2, 2, 7], [3, 3, 1]]), codebook_size=8)
    drifted = np.array(
        [
            [0, 0, 4],  # last code flipped, prefix held -> keeps 5
            [1, 2, 6],  # prefix moved -> takes its new codes
            [2, 2, 7],  # unchanged
            [0, 0, 6],  # prefix moved into row 0's group -> takes its new codes
        ]
    )
    fresh = table.with_codes(drifted, "fresh")
    assert fresh.codes.tolist() == drifted.tolist()
    assert fresh.churn(table) == pytest.approx(3 / 4)
    sticky = table.with_codes(drifted, "sticky_last")
    assert sticky.codes.tolist() == [[0, 0, 5], [1, 2, 6], [2, 2, 7], [0, 0, 6]]
    assert sticky.churn(table) == pytest.approx(2 / 4)
    assert table.codes.tolist()[0] == [0, 0, 5]  # the table in force is not modified
    # A newcomer landing on a code a sitting row kept: both get suffixes, IDs stay unique.
    clash = drifted.copy()
    clash[3] = [0, 0, 5]
    sticky = table.with_codes(clash, "sticky_last")
    assert len(set(sticky.keys())) == 4 and sticky.max_suffix == 1
    with pytest.raises(ValueError, match="reindex rule"):
        table.with_codes(drifted, "nearest")
    with pytest.raises(ValueError, match="shape"):
        table.with_codes(drifted[:, :2], "fresh")
