"""Ranking diagnostics by hand on the generated corpus: seen share, popularity, coverage."""

import numpy as np
import pandas as pd
import pytest

from ttds.bench.diagnostics import ranking_diagnostics
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
