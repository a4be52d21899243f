"""End to end: the TTDS job on a small generated corpus beats popularity, and resumes."""

from __future__ import annotations

import json

import pytest

from ttds.config import load_config
from ttds.configs import TTDSJobConfig

TINY = [
    "--index.levels=3", "--index.user_levels=2", "--index.codebook_size=16", "--index.code_dim=16",
    "--index.hidden_dims=[32]", "--index.epochs=6", "--index.features.source=collaborative",
    "--backbone.hidden_size=64", "--backbone.num_layers=2", "--backbone.num_heads=2", "--backbone.num_kv_heads=1",
    "--backbone.intermediate_size=128", "--optim.batch_size=32", "--optim.lr=3e-3",
    "--eval.valid_users=150", "--eval.templates=1", "--eval.workers=1", "--eval.beam_width=10",
]


def tiny_config(corpus, out, epochs: int, extra=()):
    return load_config(TTDSJobConfig, None, [f"--data.corpus={corpus}", f"--output_dir={out}", f"--optim.epochs={epochs}", *TINY, *extra])


@pytest.mark.slow
def test_ttds_beats_popularity_then_resumes(ray_session, synthetic_corpus, tmp_path):
    from ttds.train.ttds_job import train_ttds

    out = tmp_path / "run"
    m = train_ttds(tiny_config(synthetic_corpus, out, epochs=4))
    ttds, pop = m["test"]["NDCG@10"], m["popularity_test"]["NDCG@10"]
    # the synthetic corpus plants cluster transitions that popularity cannot see
    assert ttds > 2 * pop and ttds - pop > 0.05, (ttds, pop)
    print("TTDS", m["test"], "popularity", m["popularity_test"])
    assert m["test"]["users"] == 300
    assert (out / "model" / "ttds.json").exists() and (out / "model" / "item_ids.parquet").exists()
    epochs = [h["epoch"] for h in m["history"]]
    assert epochs == [0, 1, 2, 3]
    assert any(h.get("reindexed") == 1 for h in m["history"])  # the index is dynamic
    churn = [h["item_churn"] for h in m["history"] if h.get("reindexed") == 1]
    assert all(0.0 <= c <= 1.0 for c in churn)

    # resume: the same output folder with more epochs continues after the last checkpoint
    m2 = train_ttds(tiny_config(synthetic_corpus, out, epochs=5))
    assert [h["epoch"] for h in m2["history"]] == [0, 1, 2, 3, 4]  # epochs 0-3 were not run again
    meta = json.loads((out / "model" / "ttds.json").read_text())
    assert meta["epoch"] in range(5)
