"""`index.kind` selects the ID scheme: config, tower classes, the tokenizer job, the TTDS job check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ttds.config import IndexConfig, TokenizerJobConfig, TTDSJobConfig, load_config
from ttds.index.kinds import INDEX_KINDS, LEARNED_KINDS, build_tower, tower_config_from_dict
from ttds.index.kway import KWayTokenizer
from ttds.index.moc import MoCTokenizer
from ttds.index.rq import RQTokenizer
from ttds.index.table import SemanticIDTable
from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer

TINY = ["--index.levels=3", "--index.codebook_size=16", "--index.code_dim=16", "--index.hidden_dims=[32]",
        "--index.user_levels=2", "--index.features.source=collaborative", "--index.features.collaborative.epochs=3",
        "--index.batch_size=64", "--index.epochs=2", "--train.num_workers=1"]


def test_kinds_and_tower_configs():
    assert set(INDEX_KINDS) == {"rq", "kway_masked", "moc", "lsh", "random", "precomputed"}
    classes = {"rq": RQTokenizer, "kway_masked": KWayTokenizer, "moc": MoCTokenizer}
    for kind in LEARNED_KINDS:
        towers = IndexConfig(kind=kind, levels=3, codebook_size=8, code_dim=4, hidden_dims=[8], mask_ratio=0.5, moc_codebooks=5).towers(6, 6)
        # a JSON round trip (tokenizer.json / towers.json) rebuilds the same tower class
        model = TwinTowerTokenizer(TwinTowerConfig.from_dict(json.loads(json.dumps(towers))))
        assert type(model.item) is classes[kind] and type(model.user) is classes[kind]
        again = TwinTowerTokenizer(TwinTowerConfig.from_dict(json.loads(json.dumps(model.config.to_dict()))))
        again.load_state_dict(model.state_dict())
        x = torch.randn(10, 6)
        assert torch.equal(again.encode_items(x), model.encode_items(x))
        assert model.item.levels == (5 if kind == "moc" else 3)  # moc_codebooks: MoC's scaling factor
    kway = IndexConfig(kind="kway_masked", mask_ratio=0.5, kway_combine="concat").towers(6, None)["item"]
    assert kway["mask_ratio"] == 0.5 and kway["combine"] == "concat"
    assert "kind" not in IndexConfig().towers(6, None)["item"]  # rq configs stay as they were
    assert isinstance(build_tower(tower_config_from_dict({"input_dim": 4, "levels": 2, "codebook_size": 4})), RQTokenizer)
    with pytest.raises(ValueError):
        tower_config_from_dict({"input_dim": 4, "kind": "lsh"})


def test_unknown_kind_is_rejected_before_work(tmp_path):
    from ttds.train.tokenizer_job import train_tokenizer
    from ttds.config import check_config

    with pytest.raises(ValueError, match="index.kind"):
        train_tokenizer(load_config(TokenizerJobConfig, None, [f"--output_dir={tmp_path}", "--index.kind=pq"]))
    with pytest.raises(ValueError, match="index.kind"):
        check_config(load_config(TTDSJobConfig, None, ["--index.kind=pq"]))
    for kind in INDEX_KINDS:
        check_config(load_config(TTDSJobConfig, None, [f"--index.kind={kind}"]))


def run_kind(corpus, out, kind, extra=()):
    from ttds.train.tokenizer_job import train_tokenizer

    cfg = load_config(TokenizerJobConfig, None, [f"--data.corpus={corpus}", f"--output_dir={out}", f"--index.kind={kind}", *TINY, *extra])
    return train_tokenizer(cfg)


def check_outputs(art, out, kind, item_levels=3):
    items = SemanticIDTable.load(out, "item")
    users = SemanticIDTable.load(out, "user")
    items.assert_unique()  # collision suffixes apply to every scheme
    users.assert_unique()
    assert items.levels == item_levels and users.levels == 2 and len(items) == 120 and len(users) == 300
    assert items.meta["kind"] == kind
    m = json.loads((out / "metrics.json").read_text())
    assert m["kind"] == kind and m["items"]["unique_after_suffix"]
    d = m["diagnostics"]
    assert "error" not in d
    assert 0.0 <= d["item_category_nmi"]["first_level"] <= 1.0  # the synthetic corpus has categories
    assert d["item_spectrum"]["effective_rank"] > 1 and (out / "code_spectrum.png").exists()
    return m


# random IDs from LightGCN features: `index.features.source=lightgcn` feeds a tokenizer (one job run for both checks)
LIGHTGCN = ["--index.features.source=lightgcn", "--index.features.lightgcn.epochs=2", "--index.features.lightgcn.dim=8"]


@pytest.mark.parametrize("kind, extra, source", [("lsh", [], "collaborative"), ("random", LIGHTGCN, "lightgcn")])
def test_static_kinds_through_the_job(ray_session, synthetic_corpus, tmp_path, kind, extra, source):
    art = run_kind(synthetic_corpus, tmp_path, kind, extra)
    assert art.metrics["source"] == source
    m = check_outputs(art, tmp_path, kind)
    assert m["diagnostics"]["item_spectrum"]["basis"] == "one_hot"


@pytest.mark.slow
@pytest.mark.parametrize("kind, extra, item_levels", [
    ("kway_masked", ["--index.mask_ratio=0.3"], 3),
    ("moc", ["--index.moc_codebooks=4"], 4),
])
def test_learned_kinds_through_the_job(ray_session, synthetic_corpus, tmp_path, kind, extra, item_levels):
    art = run_kind(synthetic_corpus, tmp_path, kind, extra)
    m = check_outputs(art, tmp_path, kind, item_levels)
    assert m["diagnostics"]["item_spectrum"]["basis"] == "code_vectors"
    assert [h["epoch"] for h in m["history"]] == [0, 1]
    assert min(r["used_codes"] for r in m["items"]["codebook_usage"]) > 8  # k-means init + restarts
    # the saved weights rebuild this kind's tower and give the saved IDs
    from safetensors.torch import load_file

    towers = json.loads((tmp_path / "tokenizer.json").read_text())["towers"]
    assert towers["item"]["kind"] == kind
    model = TwinTowerTokenizer(TwinTowerConfig.from_dict(towers))
    model.load_state_dict(load_file(str(tmp_path / "tokenizer.safetensors")))
    from ttds.train.tokenizer_job import load_features

    f = load_features(tmp_path / "features.safetensors")
    assert np.array_equal(model.encode_items(torch.as_tensor(f.item_x)).numpy(), SemanticIDTable.load(tmp_path, "item").codes)

