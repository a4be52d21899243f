"""docs/configuration.md is the schema's own text, regenerated: this fails when it is stale.

Fix a failure with: python -m ttds.config.reference --out docs/configuration.md"""

import dataclasses
from pathlib import Path

from ttds.config import list_recipes, schema
from ttds.config.reference import field_docs, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_reference_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == render(), "docs/configuration.md is stale: python -m ttds.config.reference --out docs/configuration.md"


def test_every_key_and_recipe_is_in_the_reference():
    text = render()
    for prefix, cls in [("optim.", schema.OptimConfig), ("index.features.lightgcn.", schema.LightGCNConfig), ("", schema.SASRecConfig)]:
        for f in dataclasses.fields(cls):
            assert f"`{prefix}{f.name}`" in text
    for name in list_recipes():
        assert f"| `{name}` |" in text
    assert "`rq`, `kway_masked`, `moc`" in text  # allowed values listed


def test_field_comments_are_collected():
    docs = field_docs(schema.OptimConfig)
    assert docs["patience"] == "early stopping on validation NDCG@10"
    assert "validation NDCG@10" in docs["lr_schedule"] and "test" not in docs["lr_schedule"].lower().replace("tested", "")
