"""A live catalogue update: items added with jobs/add_items.py go live by the ordinary rollout.

A tiny text-sourced model is served (serve_apps/config.yaml on 127.0.0.1, the helpers of
test_serve_app.py); new items are added to it (a new model version folder), and that folder is
deployed. Before the update a new item is unknown (404 on /items, 400 in a history, never in a
ranking); after it, it is listed, accepted in histories and ranked. That the rollout itself drops
no request under load is test_serve_app.py's test_rollout_drops_no_request (the same mechanism:
a new model_dir in user_config).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_serve_app import app_config, assert_clean_4xx, deploy, post, wait_deployed, wait_ready

httpx = pytest.importorskip("httpx")

NEW = 20  # new items: enough that a top-100 list over ~140 items must hold some


@pytest.fixture(scope="module")
def versions(tiny_model, synthetic_corpus, tmp_path_factory) -> tuple[Path, Path, int]:
    """(the trained model, its next catalogue version, the first new item id)."""
    from ttds.data.corpus import Corpus
    from ttds.serve.catalogue import ExtendConfig, extend_model

    root = tmp_path_factory.mktemp("catalogue")
    model = tiny_model(0, True)
    items = Corpus.open(synthetic_corpus).items.to_pylist()
    lines = [json.dumps({"asin": f"NEW-{i}", "title": f"{items[(7 * i) % len(items)]['title']} mark {i}",
                         "category": items[(7 * i) % len(items)]["categories"]}) for i in range(NEW)]
    (root / "new.jsonl").write_text("\n".join(lines) + "\n")
    res = extend_model(ExtendConfig(model_dir=str(model), items_path=str(root / "new.jsonl"), out_dir=str(root / "model-v2")))
    return model, res.out_dir, res.added[0]


def test_new_items_go_live(serve_url, versions):
    from ttds.serve.recommender import model_version

    old_dir, new_dir, first = versions
    url = serve_url
    deploy([app_config("catalogue", "/", old_dir)])
    wait_deployed("catalogue", timeout=240)
    wait_ready(url, model_version(old_dir))

    # before: the new items do not exist for the service
    assert_clean_4xx(httpx.get(f"{url}/items/{first}", timeout=30), 404, "unknown")
    assert_clean_4xx(post(url, {"history": [1, first], "k": 5}), 400, str(first))
    for mode in ("beam", "retrieval"):
        r = post(url, {"history": [1, 2, 3], "k": 100, "mode": mode})
        assert r.status_code == 200 and max(i["item_id"] for i in r.json()["items"]) < first

    deploy([app_config("catalogue", "/", new_dir)])  # the ordinary rollout: a new model_dir
    wait_ready(url, model_version(new_dir), timeout=150)
    r = post(url, {"user_id": 3, "k": 5})
    assert r.status_code == 200 and r.json()["model_version"] == model_version(new_dir), r.text

    # after: listed, accepted in a history, and ranked
    item = httpx.get(f"{url}/items/{first + 3}", timeout=30)
    assert item.status_code == 200 and item.json()["title"].endswith("mark 3") and item.json()["semantic_id"].startswith("<a_")
    r = post(url, {"history": [1, first], "k": 5})
    assert r.status_code == 200, r.text
    ranked = set()
    for mode in ("beam", "retrieval"):
        r = post(url, {"history": [1, 2, 3], "k": 100, "mode": mode})
        assert r.status_code == 200, r.text
        ranked |= {i["item_id"] for i in r.json()["items"]}
    assert {i for i in ranked if i >= first}, "no new item in any top-100 list after the update"
    assert_clean_4xx(post(url, {"history": [1, first + NEW]}), 400, str(first + NEW))  # still unknown: still a 4xx
