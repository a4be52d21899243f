"""Adding items to a trained model (ttds.serve.catalogue, jobs/add_items.py) on a tiny text-sourced model.

The model folder is the serve tests' tiny model (the training code's own pieces, untrained
backbone): what matters here is the folder layout and that new items get IDs from their text.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "jobs"))


def _digest(folder: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def text_model(tiny_model) -> Path:
    return tiny_model(0, True)


def _items_file(path: Path, corpus_dir: Path) -> Path:
    """Three new items (one a copy of item 0's text under a new asin), a malformed line, one without text."""
    from ttds.data.corpus import Corpus

    items = Corpus.open(corpus_dir).items.to_pylist()
    lines = [json.dumps({"asin": "NEW-0", "title": items[0]["title"], "description": items[0]["description"],
                         "brand": items[0]["brand"], "category": items[0]["categories"]}),
             json.dumps({"asin": "NEW-1", "title": items[5]["title"] + " deluxe"}),
             "{not json",
             json.dumps({"asin": "NEW-2", "title": "Brand new " + items[9]["title"], "brand": "Acme"}),
             json.dumps({"asin": "NEW-3"})]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_add_items_writes_a_new_version(text_model, synthetic_corpus, tmp_path):
    from ttds.data.corpus import Corpus
    from ttds.serve.catalogue import ExtendConfig, extend_model
    from ttds.index.table import SemanticIDTable
    from ttds.config import RecommenderConfig
    from ttds.serve.recommender import Recommender, RequestError

    before = _digest(text_model)
    n = Corpus.open(synthetic_corpus).n_items
    res = extend_model(ExtendConfig(model_dir=str(text_model), items_path=str(_items_file(tmp_path / "new.jsonl", synthetic_corpus)),
                                    out_dir=str(tmp_path / "v2")))
    assert _digest(text_model) == before, "the parent model folder must stay untouched"
    assert res.added == [n, n + 1, n + 2] and res.keys == ["NEW-0", "NEW-1", "NEW-2"] and res.version == 2
    assert res.encoder == "the model's backbone" and res.encoder_error < 1e-3
    rejects = [json.loads(x) for x in (res.out_dir / "rejects.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["line"]) for r in rejects] == [("malformed_json", 3), ("missing_field", 5)]

    old, new = SemanticIDTable.load(text_model, "item"), SemanticIDTable.load(res.out_dir, "item")
    assert len(new) == n + 3 and len(set(new.keys())) == n + 3
    keep = np.array([i for i in range(n) if i not in res.old_ids_changed])
    assert (new.codes[keep] == old.codes[keep]).all() and (new.suffix[keep] == old.suffix[keep]).all()
    # the same text lands on the same X, so the same prefix as item 0 (the last level then separates them)
    assert (new.codes[n, :-1] == old.codes[0, :-1]).all() and new.keys()[n] != new.keys()[0]
    meta = json.loads((res.out_dir / "ttds.json").read_text())
    assert meta["catalogue"]["version"] == 2 and meta["catalogue"]["parent"] == str(text_model.resolve())
    assert Corpus.open(meta["corpus_dir"]).n_items == n + 3

    rec = Recommender.load(res.out_dir, RecommenderConfig(beam_width=8, batch_size=4))
    assert rec.item_info(n + 1)["semantic_id"] == new.id_string(n + 1)
    assert rec.item_info(n + 2)["title"].startswith("Brand new ")
    assert len(rec.recommend(history=[n, 3, n + 2], k=5)) == 5  # new items in a history
    with pytest.raises(RequestError) as err:
        rec.recommend(history=[1, n + 3], k=5)
    assert 400 <= err.value.status < 500


def test_known_ids_and_non_text_models_are_refused(text_model, tiny_model, synthetic_corpus, tmp_path, capsys):
    import add_items

    from ttds.data.corpus import Corpus

    key = Corpus.open(synthetic_corpus).items.column("item_key")[3].as_py()
    known = tmp_path / "known.jsonl"
    known.write_text(json.dumps({"asin": key, "title": "a known item"}) + "\n" + json.dumps({"asin": "NEW-9", "title": "x y"}) + "\n")
    assert add_items.main(["--model", str(text_model), "--items", str(known), "--out", str(tmp_path / "v")]) == 2
    assert "already in the model's catalogue" in capsys.readouterr().err and not (tmp_path / "v").exists()

    collab = tiny_model(1, False)
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps({"asin": "NEW-9", "title": "x y"}) + "\n")
    assert add_items.main(["--model", str(collab), "--items", str(ok)]) == 2
    assert "only a model whose item X is text" in capsys.readouterr().err


def test_new_item_rows_come_from_their_semantic_neighbours():
    from ttds.serve.catalogue import grow_rows

    w = np.arange(8, dtype=np.float32).reshape(4, 2)
    old = np.array([[0, 0, 1], [0, 0, 2], [0, 1, 0], [1, 0, 0]])
    out = grow_rows(w, old, np.array([[0, 0, 3], [0, 1, 5], [2, 2, 2]]))
    assert out.shape == (7, 2)
    assert np.allclose(out[4], w[:2].mean(0)) and np.allclose(out[5], w[2]) and np.allclose(out[6], w.mean(0))


def test_item_head_and_tied_item_vectors_grow(text_model, synthetic_corpus, tmp_path):
    """A model with an item head (and item input vectors tied to it) gets a row per new item."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from ttds.serve.catalogue import ExtendConfig, extend_model
    from ttds.llm.model_io import load_model

    model = tmp_path / "ih"
    shutil.copytree(text_model, model)
    lm = load_model(model)
    n, hidden = len(lm.items), lm.model.id_head.in_features
    save_file({"weight": torch.randn(n, hidden)}, str(model / "item_head.safetensors"))
    (model / "item_embedding.json").write_text(json.dumps({"mode": "tied", "levels": lm.items.levels,
                                                           "codebook_size": lm.items.codebook_size, "n_items": n}))
    res = extend_model(ExtendConfig(model_dir=str(model), items_path=str(_items_file(tmp_path / "new.jsonl", synthetic_corpus))))
    assert res.out_dir == tmp_path / "ih-v2"
    grown = load_model(res.out_dir)
    assert grown.model.item_head.weight.shape == (n + 3, hidden)
    assert grown.model.item_embedding.n_items == n + 3
    assert "mean of the trained items' rows" in json.loads((res.out_dir / "ttds.json").read_text())["catalogue"]["item_rows"]
