"""The cold-item protocol (ttds.data.cold_items, ttds.bench.cold, --cold-items) on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def split(synthetic_corpus, tmp_path_factory):
    from ttds.data.cold_items import make_cold_split
    from ttds.data.corpus import Corpus

    return make_cold_split(Corpus.open(synthetic_corpus), 0.2, 0, tmp_path_factory.mktemp("cold") / "split")


def test_cold_items_are_in_no_training_input(split, synthetic_corpus, tmp_path):
    from ttds.data.corpus import Corpus
    from ttds.data.task_examples import write_task_rows

    orig = Corpus.open(synthetic_corpus)
    n, n_warm = orig.n_items, split.n_warm
    assert split.n_cold == round(0.2 * n) and split.rule == "latest"  # synthetic events carry real times
    # the cold items are the latest to appear
    inter = pq.read_table(split.full.path("interactions")).to_pandas()
    first = inter.groupby("item_id")["timestamp"].min()
    assert first[first.index >= n_warm].min() >= first[first.index < n_warm].max()

    train = split.train
    assert train.n_items == n_warm and len(train.item_texts) == n_warm  # tokenizer features: one X row per warm item
    assert all((s < n_warm).all() for s in train.train_sequences)
    seqs = train.sequences.to_pandas()
    assert (seqs["valid"] < n_warm).all() and (seqs["test"] < n_warm).all()
    assert pq.read_table(train.path("interactions"))["item_id"].to_numpy().max() < n_warm
    rows = pq.read_table(write_task_rows(train, tmp_path, ["next_item", "user_pred", "text2id", "id2text"], 20)).to_pandas()
    item_rows = rows["task"].isin(["user_pred", "text2id", "id2text"])
    assert rows.loc[item_rows, "anchor"].max() < n_warm
    assert max(max(s) for s in rows.loc[rows["task"] == "next_item", "seq"]) < n_warm
    cold_keys = set(split.cold_items())
    assert not cold_keys & set(train.items.column("item_key").to_pylist())

    # the full corpus is the original, renumbered: same events, same item of each event
    full = split.full
    assert full.n_items == n and full.manifest["counts"]["interactions"] == orig.manifest["counts"]["interactions"]
    key_of = dict(zip(full.items.column("item_id").to_pylist(), full.items.column("item_key").to_pylist()))
    okey_of = dict(zip(orig.items.column("item_id").to_pylist(), orig.items.column("item_key").to_pylist()))
    o = orig.sequences.to_pandas().set_index("user_id")
    f = full.sequences.to_pandas().set_index("user_id")
    for u in range(0, orig.n_users, 37):
        assert [key_of[i] for i in f.loc[u, "train"]] == [okey_of[i] for i in o.loc[u, "train"]]
        assert key_of[f.loc[u, "test"]] == okey_of[o.loc[u, "test"]]
    _, _, targets = full.eval_arrays("test")
    assert split.is_cold(targets).sum() > 0, "no test user has a cold target: nothing to measure"


def test_without_times_the_draw_is_seeded(tmp_path):
    from ttds.data.cold_items import choose_cold_items
    from ttds.data.corpus import Corpus
    from ttds.data.prepare import prepare_corpus
    from ttds.data.synthetic import SyntheticConfig, generate

    raw, _ = generate(SyntheticConfig(n_items=60, n_users=80, n_clusters=4, seed=1))
    positions = raw.interactions.to_pandas().groupby("user_key").cumcount().to_numpy()
    raw.interactions = raw.interactions.set_column(2, "timestamp", __import__("pyarrow").array(positions, "int64"))
    prepare_corpus(raw, tmp_path / "c")
    c = Corpus.open(tmp_path / "c")
    a, rule = choose_cold_items(c, 0.1, seed=3)
    assert rule == "seeded draw" and len(a) == round(0.1 * c.n_items)
    assert (choose_cold_items(c, 0.1, seed=3)[0] == a).all() and not (choose_cold_items(c, 0.1, seed=4)[0] == a).all()
    with pytest.raises(ValueError, match="fraction"):
        choose_cold_items(c, 1.0)


def test_content_knn_and_ttds_rank_cold_items_and_the_split_is_reported(ray_session, split, tmp_path):
    """The harness with --cold-items on popularity and content kNN (cold/warm figures in results.json
    and cold_items.md), and a tiny text-sourced TTDS model extended with the cold items' text."""
    from ttds.bench.cold import cold_figures
    from ttds.bench.harness import BenchConfig, run_benchmark
    from ttds.config import TTDSJobConfig
    from ttds.eval.per_user import read_per_user

    res = run_benchmark(BenchConfig(data=str(split.full.root), systems=["popularity", "content-knn"], out=str(tmp_path / "b"), cold_items=0.2,
                                    exclude_seen=True))  # a history item is its own nearest text: keep them out
    assert not res["failures"], res["failures"]
    cold = res["results"]["cold_items"]
    assert cold["cold_items"] > 0 and cold["test_users_cold_target"] > 0
    pop, knn = cold["systems"]["popularity"], cold["systems"]["content-knn"]
    assert pop["cold"]["HR@10"] == 0.0 and "cannot rank" in pop["note"] and pop["warm"]["users"] > 0
    assert knn["cold"]["users"] == pop["cold"]["users"] and knn["warm"]["users"] == pop["warm"]["users"]
    assert "content-knn" in (tmp_path / "b" / "cold_items.md").read_text()
    bsplit = res["results"]["cold_items"]
    knn_lists = read_per_user(Path(res["details"]["content-knn"]["out_dir"]) / "cold_per_user.parquet")
    warm_n = bsplit["warm_items"]
    assert (np.stack(knn_lists["top10"].to_numpy()) >= warm_n).any(), "content kNN never ranked a cold item"
    assert knn["cold"]["HR@10"] > 0.0

    # TTDS: a tiny text-sourced model trained on the warm corpus only, extended, ranked by beam search
    from test_serve_app import build_tiny_model

    sysdir = tmp_path / "ttds"
    sysdir.mkdir()
    build_tiny_model(split.train.root, sysdir / "model", seed=0, text_features=True)
    tcfg = TTDSJobConfig()
    tcfg.eval.test_users, tcfg.eval.templates, tcfg.eval.workers, tcfg.eval.beam_width = 80, 1, 1, 20
    fig = cold_figures("ttds", sysdir, split, True, tcfg)
    assert fig["cold"]["users"] + fig["warm"]["users"] == 80 and "extended" in fig["note"] and "new-item rule" in fig["note"]
    plain = fig["rankers"]["beam-plain"]
    assert plain["cold"]["users"] == fig["cold"]["users"] and "no new-item rule" in plain["note"]
    lists = np.stack(read_per_user(sysdir / "cold_per_user.parquet")["top10"].to_numpy())
    plain_lists = np.stack(read_per_user(sysdir / plain["per_user"])["top10"].to_numpy())
    # the rule (share 0.1: one slot of ten) only adds cold items: never fewer than plain beam search, and every row has one
    assert ((lists >= split.n_warm).sum(1) >= (plain_lists >= split.n_warm).sum(1)).all()
    assert ((lists >= split.n_warm).sum(1) >= 1).mean() > 0.9, "the new-item rule left most top 10s without a cold item"
    assert json.loads((sysdir / "model-cold" / "ttds.json").read_text())["catalogue"]["items"] == split.full.n_items

    # --cold-reference: the warm-target users against the same system's run without cold items (here its own lists)
    from ttds.bench.cold import cold_summary, cold_table
    from ttds.eval.per_user import PER_USER_FILE

    ref = tmp_path / "ref" / "systems" / "ttds"
    ref.mkdir(parents=True)
    (ref / "result.json").write_text("{}")
    (ref / PER_USER_FILE).write_bytes((sysdir / "cold_per_user.parquet").read_bytes())
    summary = cold_summary(split, {"ttds": fig}, {"ttds": {"kind": "ttds", "out_dir": str(sysdir)}}, tmp_path / "ref")
    warm = summary["paired_warm_vs_reference"]
    assert set(warm) == {"ttds"} and "ttds (beam-plain)" in summary["systems"]  # the recipe's ranker against its reference
    assert warm["ttds"]["users"] == fig["warm"]["users"] and warm["ttds"]["diff"] == 0.0
    assert "trained without cold items" in cold_table(summary)
