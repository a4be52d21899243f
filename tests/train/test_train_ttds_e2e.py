"""End to end: the TTDS job on a small generated corpus beats popularity, and resumes."""

from __future__ import annotations

import json

import pytest

from ttds.config import TTDSJobConfig, load_config

from tiny import TINY


def tiny_config(corpus, out, epochs: int, extra=()):
    return load_config(TTDSJobConfig, None, [f"--data.corpus={corpus}", f"--output_dir={out}", f"--optim.epochs={epochs}", *TINY, *extra])


@pytest.mark.slow
def test_ttds_beats_popularity_then_resumes(ray_session, synthetic_corpus, tmp_path):
    from ttds.train.ttds_job import train_ttds

    out = tmp_path / "run"
    m = train_ttds(tiny_config(synthetic_corpus, out, epochs=3, extra=["--optim.lr_schedule=cosine"]))
    ttds, pop = m["test"]["NDCG@10"], m["popularity_test"]["NDCG@10"]
    # the synthetic corpus plants cluster transitions that popularity cannot see
    assert ttds > 2 * pop and ttds - pop > 0.05, (ttds, pop)
    print("TTDS", m["test"], "popularity", m["popularity_test"])
    assert m["test"]["users"] == 300
    from ttds.eval.per_user import read_per_user

    per_user = read_per_user(out)  # the paired tests' input: one row per test user, means = the figures
    assert len(per_user) == 300 and abs(per_user["NDCG@10"].mean() - ttds) < 1e-9
    assert (out / "model" / "ttds.json").exists() and (out / "model" / "item_ids.parquet").exists()
    epochs = [h["epoch"] for h in m["history"]]
    assert epochs == [0, 1, 2]
    scales = [h["lr_scale"] for h in m["history"]]
    assert scales[0] == 1.0 and scales[0] > scales[1] > scales[2] and abs(scales[2] - 0.1) < 1e-9, scales  # cosine to the floor
    assert any(h.get("reindexed") == 1 for h in m["history"])  # the index is dynamic
    # IDs change at the start of an epoch, never between an epoch's training and its validation
    # and checkpoint: epoch 0 trains on the tokenizer's IDs, every later one re-assigns first
    assert "reindexed" not in m["history"][0] and all("reindexed" in h for h in m["history"][1:])
    churn = [h["item_churn"] for h in m["history"] if h.get("reindexed") == 1]
    assert all(0.0 <= c <= 1.0 for c in churn)

    _check_seen_exclusion(out / "model", synthetic_corpus, tmp_path)

    # resume: the same output folder with more epochs continues after the last checkpoint
    # (the resumed epoch also turns on the opt-in regularisers: their hooks and loss inside Ray Train + DeepSpeed)
    # (and the weight average over one epoch of steps, optim.ema_epochs, which starts from the live weights it resumes with)
    m2 = train_ttds(tiny_config(synthetic_corpus, out, epochs=4, extra=["--optim.lr_schedule=cosine", "--backbone.dropout=0.1", "--loss.label_smoothing=0.1",
                                                                        "--optim.ema_epochs=1"]))
    assert [h["epoch"] for h in m2["history"]] == [0, 1, 2, 3]  # epochs 0-2 were not run again
    _check_weight_average(out, m2)
    # smoothing spreads 10% of the target mass over the whole vocabulary: the smoothed loss is far above the plain one
    assert m2["history"][3]["llm_loss"] > m2["history"][2]["llm_loss"] + 0.1, [h["llm_loss"] for h in m2["history"]]
    meta = json.loads((out / "model" / "ttds.json").read_text())
    assert meta["epoch"] in range(4)
    assert meta["next_item_user_id"] is False  # default: next-item prompts carry no user ID (it leaks targets)


def _check_weight_average(out, metrics):
    """The averaged epoch validates both weights, selects by the average, and its checkpoint
    holds the live weights with the average beside them (what a resumed run continues).
    optim.ema_epochs=1 set the decay from the steps the worker really took in that epoch."""
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import load_file

    from ttds.train.weight_average import WEIGHT_AVERAGE_FILE

    history = metrics["history"]
    assert "valid_live_NDCG@10" not in history[2] and 0.0 <= history[3]["valid_live_NDCG@10"] <= 1.0
    saved = list((out / "ray_train").rglob(WEIGHT_AVERAGE_FILE))
    assert len(saved) == 1, saved  # only epoch 3 trained with the average
    average = load_file(str(saved[0]))
    live = load_file(str(saved[0].parent / "id_head.safetensors"))
    steps = int(average["__updates__"][0])  # the average started at epoch 3: one update per step of it
    rows = pq.ParquetFile(out / "data" / "task_rows.parquet").metadata.num_rows
    assert steps == -(-rows // 32) > 1, (steps, rows)  # one worker, batches of 32
    assert abs(metrics["weight_average_decay"] - (1 - 1 / steps)) < 1e-12, (metrics["weight_average_decay"], steps)
    assert average["id_head.weight"].shape == live["weight"].shape
    assert not torch.equal(average["id_head.weight"], live["weight"])  # the checkpoint's model is the live weights


def _check_seen_exclusion(model_dir, corpus_dir, tmp_path, users: int = 100):
    """eval.exclude_seen through the Ray Data ranking actors: no user gets an item of its own
    history, lists stay full, and the actors rank exactly as the in-process evaluation does
    (on `users` of the test users: the actors' pick, ranked again in process)."""
    import numpy as np

    from ttds.data.corpus import Corpus
    from ttds.rank.beam import BeamConfig
    from ttds.eval.distributed import evaluate_model_dir
    from ttds.rank.next_item import rank_next_items
    from ttds.rank.trie import build_trie
    from ttds.eval.per_user import per_user_table, read_per_user
    from ttds.llm.model_io import load_model, prompt_builder

    corpus = Corpus.open(corpus_dir)
    res = evaluate_model_dir(str(model_dir), corpus, "test", [0], beam_width=10, top_k=10, users=users, workers=1,
                             per_user_path=tmp_path / "excl.parquet", exclude_seen=True)
    assert res["exclude_seen"] is True and res["users"] == users
    got = read_per_user(tmp_path / "excl.parquet").sort_values("user_id").reset_index(drop=True)
    all_uids, all_hists, all_targets = corpus.eval_arrays("test")
    pick = np.searchsorted(all_uids, got["user_id"].to_numpy())
    assert (all_uids[pick] == got["user_id"].to_numpy()).all()
    uids, hists, targets = all_uids[pick], [all_hists[i] for i in pick], all_targets[pick]
    m = load_model(model_dir)
    builder = prompt_builder(m)
    trie = build_trie(builder, len(m.tokenizer))
    local = rank_next_items(m.model.backbone, builder, trie, uids, hists, 0,
                            BeamConfig(beam_width=10, top_k=10), int(m.meta["max_history"]), exclude_seen=True)
    assert (local >= 0).all()
    assert not any(set(r.tolist()) & set(h.tolist()) for r, h in zip(local, hists))
    want = per_user_table(uids, targets, [local]).sort_values("user_id").reset_index(drop=True)
    assert np.allclose(got["NDCG@10"], want["NDCG@10"]) and np.allclose(got["HR@10"], want["HR@10"])

    # the in-search popularity prior through the actors: the local ranking with the same bias,
    # and lists of less popular items than without it
    counts = corpus.item_popularity()
    prior = rank_next_items(m.model.backbone, builder, trie, uids, hists, 0, BeamConfig(beam_width=10, top_k=10), int(m.meta["max_history"]),
                            exclude_seen=True, node_bias=trie.prior_bias(counts + 1.0, 1.0))
    res = evaluate_model_dir(str(model_dir), corpus, "test", [0], beam_width=10, top_k=10, users=users, workers=1,
                             per_user_path=tmp_path / "prior.parquet", exclude_seen=True, popularity_prior=1.0)
    assert res["popularity_prior"] == 1.0
    got = read_per_user(tmp_path / "prior.parquet").set_index("user_id").loc[uids]
    assert np.array_equal(np.stack(got["top10"].to_numpy()), prior)
    log_pop = np.log1p(counts)
    assert log_pop[prior].mean() < log_pop[local].mean()


def test_bad_config_fails_before_any_work(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "jobs" / "train_ttds.py"), "--eval.beam_width=3", f"--output_dir={tmp_path}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "beam_width" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, str(root / "jobs" / "train_ttds.py"), "--optim.nope=1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown config key" in r.stderr
