"""Serving and evaluation share one ranking layer (ttds.rank): the same model gives the same users
the same lists through both; and inside a served batch, a failing row never fails its neighbours.

In process (no Ray): the evaluation side is the Ray Data actor's own callable
(`ttds.eval.distributed._Ranker`) and the retrieval benchmark's loader, the serving side
`Recommender.recommend_batch`, which the Serve replicas run.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ttds.data.corpus import Corpus
from ttds.serve.recommender import Failure, Query, Recommendation, Recommender, route

USERS = 40


@pytest.fixture(scope="module")
def folders(tiny_model, synthetic_corpus, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(text-featured model, the same with an item head, collaborative model without text):
    the serving tests' tiny model folders (tests/serve/conftest.py)."""
    a = tiny_model(0, True)
    head = tmp_path_factory.mktemp("rank_consistency") / "a_head"
    shutil.copytree(a, head)
    from safetensors.torch import save_file

    torch.manual_seed(5)
    n_items = Corpus.open(synthetic_corpus).n_items
    save_file({"weight": torch.randn(n_items, 32) * 0.5}, str(head / "item_head.safetensors"))
    return a, head, tiny_model(1, False)


def eval_lists(model_dir: Path, corpus: Corpus, rank_by: str, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, ranked [n, 10]) of the first test users, by the offline evaluation's actor code."""
    from ttds.eval.distributed import _Ranker

    uids, hists, targets = corpus.eval_arrays("test")
    df = pd.DataFrame({"user_id": uids[:USERS], "history": [h.tolist() for h in hists[:USERS]], "target": targets[:USERS]})
    ranker = _Ranker(str(model_dir), [0], beam_width=20, top_k=10, batch_size=16, exclude_seen=exclude_seen, rank_by=rank_by)
    out = ranker(df)
    return out["user_id"].to_numpy(), np.stack(out["ranked_0"].to_numpy())


def served_lists(rec: Recommender, uids, mode: str, exclude_seen: bool) -> np.ndarray:
    res = rec.recommend_batch([Query(user_id=int(u), k=10, mode=mode, exclude_seen=exclude_seen) for u in uids])
    assert all(isinstance(r, Recommendation) for r in res), [r for r in res if isinstance(r, Failure)][:3]
    return np.array([[i for i, _ in r.items] for r in res])


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_serving_returns_the_evaluations_lists(folders, synthetic_corpus, exclude_seen):
    a, head, _ = folders
    corpus = Corpus.open(synthetic_corpus)
    # beam search: evaluation's actor vs the generator part, the whole batch in one call
    uids, ranked = eval_lists(a, corpus, "beam", exclude_seen)
    rec = Recommender.load(a)
    assert (served_lists(rec, uids, "beam", exclude_seen) == ranked).all()
    # the item head: evaluation's rank_by=item_head vs serving's retrieval mode on the same folder
    uids, ranked = eval_lists(head, corpus, "item_head", exclude_seen)
    served = served_lists(Recommender.load(head, parts=("retriever",)), uids, "retrieval", exclude_seen)
    assert (served == ranked).all()
    # the faiss fast path: the benchmark's retrieval evaluation code vs serving's retrieval mode
    from ttds.bench.retrieval_eval import load_retrieval
    from ttds.rank import next_item_prompts, rank_retrieval

    backbone, id_head, builder, index, max_history, pool = load_retrieval(a, device="cpu")
    _, hists, _ = corpus.eval_arrays("test")
    ours = rank_retrieval(backbone, id_head, index, next_item_prompts(builder, uids, hists[:USERS], 0, max_history), 10,
                          pad_id=builder.pad_id, pool=pool, seen=hists[:USERS] if exclude_seen else None).items
    assert (served_lists(rec, uids, "retrieval", exclude_seen) == ours).all()


def ids(r: Recommendation) -> list[int]:
    return [i for i, _ in r.items]


def test_a_failing_row_never_fails_its_neighbours(folders, synthetic_corpus):
    """Model B has no text features: text requests must fail (400) alone, while the beam and
    retrieval requests batched with them, sent from several threads at once, all succeed with
    exactly the lists they get when sent alone."""
    _, _, b = folders
    corpus = Corpus.open(synthetic_corpus)
    rec = Recommender.load(b)
    valid = [Query(user_id=u, k=5, mode=m) for u in range(12) for m in ("retrieval", "beam")]
    valid += [Query(history=corpus.train_sequences[u][:3].tolist(), k=5, mode="retrieval", exclude_seen=True) for u in range(4)]
    bad = [Query(text="a red guitar", k=5), Query(text="strings", k=5, mode="retrieval"), Query(user_id=10**6), Query(history=[corpus.n_items])]
    alone = {i: rec.recommend_batch([q])[0] for i, q in enumerate(valid)}
    assert all(isinstance(r, Recommendation) for r in alone.values())

    rng = np.random.default_rng(0)

    def batch(seed: int) -> list[tuple[int | None, Recommendation | Failure]]:
        """A shuffled batch of all valid queries and the bad ones; (index into valid or None, result)."""
        order = list(range(len(valid))) + [None] * len(bad)
        np.random.default_rng(seed).shuffle(order)
        bad_iter = iter(bad)
        queries = [valid[i] if i is not None else next(bad_iter) for i in order]
        return list(zip(order, rec.recommend_batch(queries)))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(batch, rng.integers(0, 1000, 8).tolist()))
    for res in results:
        fails = [r for i, r in res if i is None]
        assert all(isinstance(r, Failure) for r in fails), fails
        assert sorted(f.status for f in fails) == [400, 400, 400, 404]
        assert sum("text-sourced" in f.message for f in fails) == 2
        for i, r in res:
            if i is not None:
                assert isinstance(r, Recommendation), (valid[i], r)
                assert ids(r) == ids(alone[i]) and r.mode == alone[i].mode  # scores: equal up to padding's float noise
                assert np.allclose([x for _, x in r.items], [x for _, x in alone[i].items], atol=1e-4)
    # run(): states resolved elsewhere (the Serve encoder) take the same per-row path
    states = [rec.resolve(q) for q in (valid[0], Query(text="a red guitar"), valid[1])]
    out = rec.run(states)
    assert isinstance(out[1], Failure) and out[1].status == 400
    assert ids(out[0]) == ids(alone[0]) and ids(out[2]) == ids(alone[1])


def test_routing_is_one_rule():
    assert route(Query(user_id=1)) == "generator"
    assert route(Query(user_id=1, mode="retrieval")) == "retriever"
    assert route(Query(text="x")) == "retriever" and route(Query(text="x", mode="beam")) == "retriever"
