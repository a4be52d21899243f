"""Baselines: popularity by hand, model shapes and causality, a Ray Train run that learns the
planted transitions (and beats popularity by a wide margin), and resume from a checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from ttds.baselines import GRU4Rec, SASRec, score_users, train_and_evaluate
from ttds.rank import left_pad
from ttds.config import GRU4RecConfig, SASRecConfig
from ttds.baselines.popularity import evaluate_popularity, popularity_ranking
from ttds.data import schema
from ttds.data.corpus import Corpus
from ttds.config import TrainConfig

torch.set_num_threads(1)

# user -> items in time order (integer keys keep their ids through preparation)
TINY = {0: [0, 1, 2, 3, 4], 1: [0, 1, 3, 2], 2: [0, 2, 1, 4], 3: [1, 0, 3]}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Corpus:
    from ttds.data.prepare import prepare_corpus
    from ttds.data.raw import RawCorpus

    rows = [(str(u), str(i), 1000 * u + t) for u, items in TINY.items() for t, i in enumerate(items)]
    inter = pa.Table.from_pydict(
        {"user_key": [r[0] for r in rows], "item_key": [r[1] for r in rows], "timestamp": [r[2] for r in rows],
         "rating": [5.0] * len(rows), "review": [None] * len(rows)},
        schema=schema.RAW_INTERACTIONS,
    )
    out = tmp_path_factory.mktemp("tiny")
    prepare_corpus(RawCorpus(source="test", name="tiny", interactions=inter), out)
    return Corpus.open(out)


def test_popularity_by_hand(tiny_corpus):
    # train counts: item0 = 3, item1 = 3, item2 = 2, items 3 and 4 = 0; ties go by the rank
    # layer's seeded hash (ttds.rank.ties), never by item id
    top = popularity_ranking(tiny_corpus, k=10)
    assert set(top[:2].tolist()) == {0, 1} and top[2] == 2 and set(top[3:5].tolist()) == {3, 4} and (top[5:] == -1).all()
    assert popularity_ranking(tiny_corpus, k=3).tolist() == top[:3].tolist()
    # test targets 4, 2, 4, 3 sit at rank 2 (item 2) and ranks 3 or 4 (the tied items 3 and 4)
    m = evaluate_popularity(tiny_corpus, "test")
    assert set(m) == {"HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10"}
    assert m["HR@1"] == 0.0 and m["HR@5"] == 1.0 and m["HR@10"] == 1.0
    lo, hi = (np.mean([1 / math.log2(r + 2) for r in ranks]) for ranks in ((4, 2, 4, 4), (3, 2, 3, 3)))
    assert lo - 1e-9 <= m["NDCG@5"] <= hi + 1e-9 and m["NDCG@10"] == pytest.approx(m["NDCG@5"])
    # valid targets 3, 3, 1, 0: 1 and 0 share the top count, so at most those two hit at rank 0
    assert evaluate_popularity(tiny_corpus, "valid")["HR@1"] in (0.0, 0.25, 0.5)
    # excluding seen items moves test targets to ranks 0, 0, 0 or 1, 1 or 2
    ex = evaluate_popularity(tiny_corpus, "test", exclude_seen=True)
    assert ex["HR@1"] in (pytest.approx(0.5), pytest.approx(0.75)) and ex["HR@5"] == 1.0


MODELS = [
    pytest.param(lambda: SASRec(30, SASRecConfig(max_len=8, hidden=16, heads=2)), id="sasrec"),
    pytest.param(lambda: GRU4Rec(30, GRU4RecConfig(max_len=8, hidden=24, embedding=16)), id="gru4rec"),
]


@pytest.mark.parametrize("make", MODELS)
def test_forward_shapes_loss_and_causality(make):
    torch.manual_seed(0)
    model = make()
    seq = left_pad([[1, 2, 3, 4, 5], [6, 7], [8]], model.pad_id, keep_last=8).ids
    assert seq.shape == (3, 5) and seq[1].tolist() == [30, 30, 30, 6, 7]
    loss = model.train()(seq, torch.randint(0, 30, seq.shape))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    model.eval()
    with torch.no_grad():
        h = model(seq)
        assert h.shape[:2] == (3, 5)  # states: hidden size of the encoder
        assert model.score_last(seq).shape == (3, 30)
        # causal: changing later items leaves every earlier position's output unchanged
        changed = seq.clone()
        changed[0, 3:] = torch.tensor([11, 12])
        h2 = model(changed)
        assert torch.allclose(h[0, :3], h2[0, :3], atol=1e-5)
        assert not torch.allclose(h[0, 3:], h2[0, 3:], atol=1e-5)
        assert torch.allclose(h[1:], h2[1:], atol=1e-5)
        # padding: the same sequence padded to max_len gives the same outputs
        full = left_pad([[1, 2, 3, 4, 5], [6, 7], [8]], model.pad_id, keep_last=8, width=8).ids
        assert torch.allclose(model(full)[:, -5:], h, atol=1e-5)
    top = score_users(model, [np.array([1, 2, 3]), np.array([4])], k=10, exclude_seen=True)
    assert top.shape == (2, 10) and not set(top[0]) & {1, 2, 3}


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_models_learn_planted_transitions_in_process(name, synthetic_corpus):
    """The same loss as the worker, without Ray (seconds): both encoders must learn."""
    from ttds.baselines.seqmodel_worker import build_model, evaluate_ranks

    c = Corpus.open(synthetic_corpus)
    torch.manual_seed(0)
    model = build_model(name, {"hidden": 32, "max_len": 20, **({"embedding": 32} if name == "gru4rec" else {})}, c.n_items)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    seqs = [s[-21:] for s in c.train_sequences if len(s) >= 2]
    rng = np.random.default_rng(0)
    for _ in range(8):
        model.train()
        order = rng.permutation(len(seqs))
        for i in range(0, len(seqs), 32):
            seq = left_pad([seqs[j] for j in order[i : i + 32]], model.pad_id, keep_last=21).ids
            loss = model(seq[:, :-1], seq[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
    _, hist, targets = c.eval_arrays("valid")
    ndcg = evaluate_ranks(model, hist, targets).result()["NDCG@10"]
    # popularity scores ~.11 here; both models reach ~.4 in 8 epochs (measured)
    assert ndcg > evaluate_popularity(c, "valid")["NDCG@10"] + 0.15, ndcg


def test_sasrec_ray_train_beats_popularity_and_resumes(ray_session, synthetic_corpus, tmp_path):
    """Trained with the weight average on (ema_epochs), which a resume continues (_check_weight_average)."""
    train = TrainConfig(num_workers=2, cpus_per_worker=0.5)
    # a short average: 300 users over 2 workers in batches of 32 = 5 steps per epoch, 0.4 epochs = 2 steps (decay .5)
    cfg = {"epochs": 8, "patience": 100, "batch_size": 32, "lr": 5e-3, "hidden": 32, "ema_epochs": 0.4}
    with pytest.raises(ValueError, match="lr_schedule"):  # refused before any worker starts
        train_and_evaluate("sasrec", synthetic_corpus, tmp_path / "bad", {**cfg, "lr_schedule": "linear"}, train)
    with pytest.raises(ValueError, match="ema_decay=1.0"):
        train_and_evaluate("sasrec", synthetic_corpus, tmp_path / "bad", {**cfg, "ema_epochs": 0, "ema_decay": 1.0}, train)
    with pytest.raises(ValueError, match="not both"):
        train_and_evaluate("sasrec", synthetic_corpus, tmp_path / "bad", {**cfg, "ema_decay": 0.5}, train)
    pop = train_and_evaluate("popularity", synthetic_corpus, tmp_path / "pop")
    res = train_and_evaluate("sasrec", synthetic_corpus, tmp_path / "sasrec", cfg, train)
    # 300 users, 10 planted cluster transitions: measured NDCG@10 ~.40-.45 vs popularity .10
    assert res["NDCG@10"] > pop["NDCG@10"] + 0.15, (res, pop)
    assert res["HR@10"] > pop["HR@10"] + 0.2
    assert [h["epoch"] for h in res["history"]] == list(range(8)) and res["resumed_from_epoch"] == -1
    assert res["valid_NDCG@10"] == max(h["valid_NDCG@10"] for h in res["history"])
    assert res["examples_per_s"] > 0 and res["peak_rss_mb"] > 0 and res["wall_s"] > 0
    assert (tmp_path / "sasrec" / "metrics.json").exists() and (tmp_path / "sasrec" / "model.safetensors").exists()
    updates = _check_weight_average(tmp_path / "sasrec", synthetic_corpus, res["history"][-1]["valid_NDCG@10"])
    assert updates % 8 == 0  # one per step, 8 equal epochs
    decay = json.loads((tmp_path / "sasrec" / "model.json").read_text())["model_config"]["ema_decay"]
    assert decay == pytest.approx(1 - 1 / (0.4 * (updates // 8)), abs=1e-12)  # the span was set from the steps each worker took

    # the same folder with more epochs continues from the saved epoch instead of restarting
    # (with a cosine schedule from here on: it depends on the epoch number alone, so it applies
    # to the resumed epochs without anything saved)
    more = train_and_evaluate("sasrec", synthetic_corpus, tmp_path / "sasrec", {**cfg, "epochs": 10, "lr_schedule": "cosine"}, train)
    assert more["resumed_from_epoch"] == 7
    assert [h["epoch"] for h in more["history"]] == list(range(10))
    assert more["history"][:8] == res["history"]
    assert more["valid_NDCG@10"] >= res["valid_NDCG@10"]
    scales = [h["lr_scale"] for h in more["history"]]
    assert scales[:8] == [1.0] * 8 and 1.0 > scales[8] > scales[9] and abs(scales[9] - 0.1) < 1e-9, scales
    assert _check_weight_average(tmp_path / "sasrec", synthetic_corpus, more["history"][-1]["valid_NDCG@10"]) == updates // 8 * 10  # continued


def _check_weight_average(out, corpus_dir, reported_valid_ndcg: float) -> int:
    """The newest checkpoint keeps the live weights and the average beside them, and the
    validation figure reported for its epoch is the average's, not the live weights'.
    Returns the average's update count."""
    from pathlib import Path

    from safetensors.torch import load_file

    from ttds.baselines.seqmodel_worker import CKPT_NAME, build_model, evaluate_ranks
    from ttds import checkpoint as ckpt_io
    from ttds.train.launch import latest_checkpoint
    from ttds.train.weight_average import WEIGHT_AVERAGE_FILE

    d = Path(latest_checkpoint(out / "ray_train").path)
    tensors, state = ckpt_io.load_state(d, CKPT_NAME)
    average = load_file(str(d / WEIGHT_AVERAGE_FILE))
    live = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    averaged = {**live, **{k: v for k, v in average.items() if k != "__updates__"}}
    assert any(not torch.equal(live[k], averaged[k]) for k in live)  # the checkpoint's model is the live one
    model = build_model("sasrec", state["model_config"], int(state["n_items"]))
    model.load_state_dict(averaged)
    _, hists, targets = Corpus.open(corpus_dir).eval_arrays("valid")
    assert evaluate_ranks(model, hists, targets).result()["NDCG@10"] == pytest.approx(reported_valid_ndcg, abs=1e-9)
    return int(average["__updates__"][0])
