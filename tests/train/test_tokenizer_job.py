"""The tokenizer job: 2 Ray Train workers with DeepSpeed on CPU, saving and resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttds.config import TokenizerJobConfig, load_config
from ttds.index.table import SemanticIDTable

TINY = ["--index.levels=3", "--index.codebook_size=16", "--index.code_dim=16", "--index.hidden_dims=[32]",
        "--index.user_levels=3", "--index.features.source=collaborative", "--index.batch_size=64",
        "--train.num_workers=2", "--train.zero_stage=2"]


@pytest.mark.slow
def test_two_workers_deepspeed_save_and_resume(ray_session, synthetic_corpus, tmp_path):
    from ttds.train.tokenizer_job import train_tokenizer

    out = tmp_path / "tok"
    cfg = load_config(TokenizerJobConfig, None, [f"--data.corpus={synthetic_corpus}", f"--output_dir={out}", "--index.epochs=2", *TINY])
    art = train_tokenizer(cfg)
    items = SemanticIDTable.load(out, "item")
    items.assert_unique()
    assert len(items) == 120 and art.users is not None and len(art.users) == 300
    m = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [0, 1]
    usage = [lv["used_codes"] for lv in m["items"]["codebook_usage"]]
    assert min(usage) > 8  # k-means init + restarts: more than half of every codebook is used
    assert 0.0 <= m["items"]["collision_rate_before_suffix"] < 0.2

    cfg3 = load_config(TokenizerJobConfig, None, [f"--data.corpus={synthetic_corpus}", f"--output_dir={out}", "--index.epochs=3", *TINY])
    train_tokenizer(cfg3)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1, 2]  # resumed: epochs 0-1 were not trained again
    again = SemanticIDTable.load(out, "item")
    assert again.codes.shape == items.codes.shape and np.isfinite(again.collision_rate)


# the static kinds (lsh, random) through this job: tests/index/test_index_kind.py
