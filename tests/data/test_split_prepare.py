"""k-core, leave-one-out, id remapping and the prepared corpus layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ttds.data import schema, split
from ttds.data.corpus import Corpus
from ttds.data.prepare import PrepareOptions, prepare_corpus
from ttds.data.raw import RawCorpus
from ttds.data.rejects import DataError, RejectLog
from ttds.data.synthetic import SyntheticConfig, generate


def frame(pairs):
    return pd.DataFrame(
        {"user_key": [u for u, _ in pairs], "item_key": [i for _, i in pairs], "timestamp": np.arange(len(pairs), dtype=np.int64)}
    )


def test_k_core_hand_checked_needs_iteration():
    # k=2. Item z has one event, so it goes; that leaves user C with one event, so C goes;
    # then item y (bought by C and D) has one event left, so y goes; then D has one left.
    pairs = [("A", "x"), ("A", "w"), ("B", "x"), ("B", "w"), ("C", "z"), ("C", "y"), ("D", "y"), ("D", "x")]
    out = split.k_core(frame(pairs), 2)
    assert sorted(zip(out.user_key, out.item_key)) == [("A", "w"), ("A", "x"), ("B", "w"), ("B", "x")]
    # a single pass would have kept C's y and D
    one_pass = frame(pairs)
    uc = one_pass.user_key.map(one_pass.user_key.value_counts())
    ic = one_pass.item_key.map(one_pass.item_key.value_counts())
    assert ((uc >= 2) & (ic >= 2)).sum() > len(out)


def test_k_core_fixed_point_property():
    rng = np.random.default_rng(0)
    pairs = list({(f"u{rng.integers(60)}", f"i{rng.integers(40)}") for _ in range(600)})
    out = split.k_core(frame(pairs), 5)
    assert (out.user_key.value_counts() >= 5).all() and (out.item_key.value_counts() >= 5).all()


def test_leave_one_out_and_sequences():
    df = pd.DataFrame({"user_id": [0, 0, 0, 0, 1, 1, 1, 2, 2], "item_id": [5, 6, 7, 8, 1, 2, 3, 4, 9]})
    out = split.leave_one_out(df)
    assert out.split.tolist() == ["train", "train", "valid", "test", "train", "valid", "test", "train", "train"]
    seqs = split.sequences(out)
    assert seqs.train.tolist() == [[5, 6], [1], [4, 9]]
    assert seqs.valid.tolist() == [7, 2, -1] and seqs.test.tolist() == [8, 3, -1]


def test_dense_ids_keep_numeric_order():
    ids, keys = split.dense_ids(pd.Series(["10", "2", "0", "2"]))
    assert keys.tolist() == ["0", "2", "10"] and ids.tolist() == [2, 1, 0, 1]


def raw_from(rows, name="t"):
    inter = pa.Table.from_pydict(
        {"user_key": [r[0] for r in rows], "item_key": [r[1] for r in rows], "timestamp": [r[2] for r in rows],
         "rating": [None] * len(rows), "review": [r[3] if len(r) > 3 else None for r in rows]},
        schema=schema.RAW_INTERACTIONS,
    )
    log = RejectLog()
    log.seen = len(rows)
    return RawCorpus(source="test", name=name, interactions=inter, rejects=log)


def test_prepare_sorts_by_time_dedupes_and_builds_user_text_from_train_only(tmp_path):
    rows = [("u", "b", 20, "second"), ("u", "a", 10, "first"), ("u", "c", 30, "third"), ("u", "a", 40, "again"),
            ("u", "d", 50, "LEAK valid"), ("u", "e", 60, "LEAK test")]
    manifest = prepare_corpus(raw_from(rows), tmp_path)
    c = Corpus.open(tmp_path)
    assert manifest["rejects"]["by_kind"] == {"duplicate_interaction": 1}
    keys = c.items.column("item_key").to_pylist()
    assert [keys[i] for i in c.train_sequences[0]] == ["a", "b", "c"]
    assert c.user_texts[0] == "first second third"
    _, hist, target = c.eval_arrays("test")
    assert [keys[i] for i in hist[0]] == ["a", "b", "c", "d"] and keys[target[0]] == "e"
    lines = (tmp_path / "rejects.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "duplicate_interaction"


def test_prepare_fails_clearly_when_too_much_is_rejected(tmp_path):
    raw = raw_from([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)])
    raw.rejects.seen = 10
    for i in range(7):
        raw.rejects.add("malformed_json", "x.json", i + 1, "bad line")
    with pytest.raises(DataError, match="max_reject_rate"):
        prepare_corpus(raw, tmp_path, PrepareOptions(max_reject_rate=0.5))
    assert len((tmp_path / "rejects.jsonl").read_text().splitlines()) == 7


def test_prepare_empty_after_kcore_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nothing is left"):
        prepare_corpus(raw_from([("u", "a", 1), ("v", "b", 2)]), tmp_path, PrepareOptions(kcore=5))


def test_synthetic_corpus_layout_and_planted_structure(tmp_path):
    raw, truth = generate(SyntheticConfig(n_items=100, n_users=200, n_clusters=8, seed=3))
    prepare_corpus(raw, tmp_path)
    c = Corpus.open(tmp_path)
    assert c.n_items == 100 and c.n_users == 200
    assert pq.read_schema(c.path("interactions")).equals(schema.INTERACTIONS, check_metadata=False)
    # titles carry their cluster's words
    words = truth["cluster_words"]
    for i in range(0, 100, 17):
        adj, noun = words[truth["item_cluster"][i]]
        assert adj.title() in c.item_titles[i] and noun in c.item_titles[i]
    # consecutive items follow the planted cluster transition far above chance (1/8)
    cl, succ = truth["item_cluster"], truth["successor"]
    follows = [succ[cl[a]] == cl[b] for s in c.train_sequences for a, b in zip(s[:-1], s[1:])]
    assert np.mean(follows) > 0.6


def test_same_seed_same_corpus():
    a, _ = generate(SyntheticConfig(n_items=50, n_users=40, n_clusters=5, seed=1))
    b, _ = generate(SyntheticConfig(n_items=50, n_users=40, n_clusters=5, seed=1))
    assert a.interactions.equals(b.interactions)


def test_corpus_open_explains_missing_files(tmp_path):
    with pytest.raises(DataError, match="prepare_data.py"):
        Corpus.open(tmp_path)
