"""Ranking diagnostics by hand on the generated corpus: seen share, popularity, coverage, hits by popularity bucket."""

import numpy as np
import pandas as pd
import pytest

from ttds.bench.diagnostics import (
    HISTORY_BUCKETS,
    POPULARITY_BUCKETS,
    history_bucket_of_lengths,
    popularity_bucket_of_items,
    ranking_diagnostics,
)
from ttds.bench.report import diagnostics_markdown
from ttds.data.corpus import Corpus
from ttds.eval.per_user import per_user_table


def test_diagnostics_by_hand(synthetic_corpus):
    corpus = Corpus.open(synthetic_corpus)
    uids, hists, targets = corpus.eval_arrays("test")
    n = len(uids)
    # each user's list: its last 3 history items first, then 7 fixed items (-1 if shorter)
    fixed = np.array([i for i in range(corpus.n_items) if i not in set(np.concatenate(hists).tolist())][:7])
    lists = np.full((n, 10), -1, dtype=np.int64)
    for r, h in enumerate(hists):
        mine = h[-3:]
        lists[r, : len(mine)] = mine
        lists[r, len(mine) : len(mine) + len(fixed)] = fixed[: 10 - len(mine)]
    table = per_user_table(uids, targets, [lists])
    d = ranking_diagnostics(table, corpus)
    filled = lists >= 0
    seen = sum(min(len(h), 3) for h in hists)
    assert d["seen_share"] == pytest.approx(seen / filled.sum())
    assert d["target_seen_share"] == pytest.approx(np.mean([t in set(h.tolist()) for t, h in zip(targets, hists)]))
    log_pop = np.log1p(corpus.item_popularity())
    assert d["log_pop_recommended"] == pytest.approx(log_pop[lists[filled]].mean())
    assert d["log_pop_target"] == pytest.approx(log_pop[targets].mean())
    assert d["coverage"] == pytest.approx(len(np.unique(lists[filled])) / corpus.n_items)

    with pytest.raises(ValueError, match="no top10 column"):
        ranking_diagnostics(table.drop(columns=["top10"]), corpus)
    with pytest.raises(ValueError, match="not test users"):
        ranking_diagnostics(pd.concat([table, table.assign(user_id=10**6)]), corpus)


def test_popularity_buckets_rank_items_by_count():
    counts = np.array([5, 0, 9, 5, 1, 7, 2, 3, 0, 4, 6, 8, 1, 1, 2, 3, 0, 2, 9, 1])  # 20 items
    b = popularity_bucket_of_items(counts)
    # ranked: 2 (9), 18 (9), 11 (8), 5 (7), ... -> top 5% = 1 item, 5-20% = 3, 20-50% = 6, rest 10
    assert np.flatnonzero(b == 0).tolist() == [2]
    assert sorted(np.flatnonzero(b == 1).tolist()) == [5, 11, 18]
    assert np.bincount(b, minlength=4).tolist() == [1, 3, 6, 10]


def test_hits_by_popularity_bucket_by_hand(synthetic_corpus):
    """Per bucket: the users whose held-out item is in it, their mean NDCG@10, and the slot share."""
    corpus = Corpus.open(synthetic_corpus)
    uids, hists, targets = corpus.eval_arrays("test")
    rng = np.random.default_rng(0)
    lists = np.stack([rng.choice(np.setdiff1d(np.arange(corpus.n_items), [t]), 10, replace=False) for t in targets])
    lists[::3, 4] = targets[::3]  # some hits, at rank 5
    table = per_user_table(uids, targets, [lists])
    d = ranking_diagnostics(table, corpus)["by_popularity"]
    bucket = popularity_bucket_of_items(corpus.item_popularity())
    assert list(d) == list(POPULARITY_BUCKETS)
    for j, name in enumerate(POPULARITY_BUCKETS):
        mine = bucket[targets] == j
        assert d[name]["users"] == pytest.approx(mine.mean())
        if mine.any():
            assert d[name]["NDCG@10"] == pytest.approx(np.where(lists[mine] == targets[mine, None], 1 / np.log2(np.arange(2, 12)), 0).sum(1).mean())
        assert d[name]["slots"] == pytest.approx((bucket[lists] == j).mean())
    assert sum(v["users"] for v in d.values()) == pytest.approx(1.0)
    md = "\n".join(diagnostics_markdown({"x": ranking_diagnostics(table, corpus)}))
    assert "top 5% of items" in md and f"{d['top 5%']['NDCG@10']:.4f}" in md


def test_history_buckets_are_inclusive_upper_edges():
    b = history_bucket_of_lengths(np.array([1, 5, 6, 8, 9, 12, 13, 20, 21, 500]))
    assert b.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert len(HISTORY_BUCKETS) == 5


def test_hits_by_history_length_by_hand(synthetic_corpus):
    """Per history bucket: the share of users and their mean NDCG@10 / HR@10; the table names each bucket."""
    corpus = Corpus.open(synthetic_corpus)
    uids, hists, targets = corpus.eval_arrays("test")
    lists = np.tile(np.arange(10), (len(uids), 1))
    long = np.array([len(h) > 5 for h in hists])
    lists[long, 0] = targets[long]  # users with more than 5 items hit at rank 1, the rest (almost) never
    table = per_user_table(uids, targets, [lists])
    d = ranking_diagnostics(table, corpus)["by_history"]
    group = history_bucket_of_lengths(np.array([len(h) for h in hists]))
    # only the buckets holding users, in order (the generated corpus has none above 20 items)
    assert list(d) == [n for j, n in enumerate(HISTORY_BUCKETS) if (group == j).any()] and ">20" not in d
    for j, name in enumerate(HISTORY_BUCKETS):
        mine = group == j
        if mine.any():
            assert d[name]["users"] == pytest.approx(mine.mean())
            assert d[name]["HR@10"] == pytest.approx(table["HR@10"].to_numpy()[mine].mean())
            assert d[name]["NDCG@10"] == pytest.approx(table["NDCG@10"].to_numpy()[mine].mean())
    assert sum(v["users"] for v in d.values()) == pytest.approx(1.0)
    assert len(d) >= 3  # the generated corpus spreads over several lengths
    assert all(np.isfinite(v["NDCG@10"]) for v in d.values())  # survives a JSON round trip unchanged
    md = "\n".join(diagnostics_markdown({"x": ranking_diagnostics(table, corpus)}))
    assert "By history length" in md and "6-8 items" in md


def test_empty_groups_are_null_not_nan(synthetic_corpus):
    """A popularity bucket no held-out item falls in keeps its row with null figures, and lists
    with no item at all give null slot shares: the diagnostics stay strict JSON and print '–'."""
    import json

    corpus = Corpus.open(synthetic_corpus)
    uids, hists, targets = corpus.eval_arrays("test")
    bucket = popularity_bucket_of_items(corpus.item_popularity())
    top = bucket[targets] == 0  # only the users whose held-out item is among the 5% most bought
    assert top.any() and not top.all()
    lists = np.tile(np.arange(10), (int(top.sum()), 1))
    d = ranking_diagnostics(per_user_table(uids[top], targets[top], [lists]), corpus)
    assert d["by_popularity"]["top 5%"]["NDCG@10"] is not None
    assert all(d["by_popularity"][b]["NDCG@10"] is None and d["by_popularity"][b]["HR@10"] is None for b in list(POPULARITY_BUCKETS)[1:])
    json.dumps(d, allow_nan=False)
    empty = ranking_diagnostics(per_user_table(uids[top], targets[top], [np.full_like(lists, -1)]), corpus)
    assert empty["log_pop_recommended"] is None and all(v["slots"] is None for v in empty["by_popularity"].values())
    json.dumps(empty, allow_nan=False)
    md = "\n".join(diagnostics_markdown({"x": d, "empty": empty}))
    assert "nan" not in md.lower() and "| – (" in md and "– (–)" in md


def test_analyze_diagnostics_command_on_runs_made_apart(synthetic_corpus, tmp_path):
    """jobs/analyze.py diagnostics: one row per run folder; a run of another corpus is refused by name."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from ttds.bench.diagnostics import diagnose_folders
    from ttds.eval.per_user import PER_USER_FILE, write_per_user

    corpus = Corpus.open(synthetic_corpus)
    uids, _, targets = corpus.eval_arrays("test")
    write_per_user(tmp_path / "a" / PER_USER_FILE, per_user_table(uids, targets, [np.tile(np.arange(10), (len(uids), 1))]))
    d = diagnose_folders(synthetic_corpus, [tmp_path / "a"])
    assert list(d) == [str(tmp_path / "a")] and d[str(tmp_path / "a")]["coverage"] == pytest.approx(10 / corpus.n_items)
    write_per_user(tmp_path / "b" / PER_USER_FILE, per_user_table(uids + 10**6, targets, [np.zeros((len(uids), 10), dtype=np.int64)]))
    with pytest.raises(ValueError, match=f"{tmp_path / 'b'}: .* not test users"):
        diagnose_folders(synthetic_corpus, [tmp_path / "a", tmp_path / "b"])

    job = Path(__file__).resolve().parents[2] / "jobs" / "analyze.py"
    r = subprocess.run([sys.executable, str(job), "diagnostics", "--data", str(synthetic_corpus), str(tmp_path / "a"),
                        "--out", str(tmp_path / "d.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"| `{tmp_path / 'a'}` |" in r.stdout and json.loads((tmp_path / "d.json").read_text()) == json.loads(json.dumps(d))
    r = subprocess.run([sys.executable, str(job), "diagnostics", "--data", str(tmp_path / "none"), str(tmp_path / "a")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not a prepared corpus" in r.stderr and "Traceback" not in r.stderr
