"""The schema is the one definition of every config section, at the bottom of the layers.

Why: sections used to live in five modules, each with its own idea of the allowed values; a
second definition, or an allowed value listed apart from the `Literal`, drifts."""

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import ttds.config as config
from ttds.config import schema

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = [c for c in vars(schema).values() if isinstance(c, type) and dataclasses.is_dataclass(c) and issubclass(c, schema.Section)]


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_every_section_builds_with_its_defaults_and_is_exported(cls):
    if cls is schema.BenchConfig:
        cls(data="synthetic", systems=["ttds"], out="x")
    else:
        cls()
    assert getattr(config, cls.__name__) is cls


def test_config_imports_nothing_else_from_ttds():
    code = ("import sys, ttds; before = set(sys.modules); import ttds.config, ttds.config.reference; "
            "print(sorted(m for m in set(sys.modules) - before if m.startswith('ttds') and not m.startswith('ttds.config')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_no_second_definition_of_a_section_in_the_package():
    names = {c.__name__ for c in SECTIONS}
    hits = []
    for path in (ROOT / "platform" / "ttds").rglob("*.py"):
        if path.parent.name == "config":
            continue
        for line in path.read_text().splitlines():
            if line.startswith("class ") and line[6:].split("(")[0].split(":")[0] in names:
                hits.append(f"{path}: {line}")
    assert not hits
    assert not (ROOT / "platform" / "ttds" / "configs.py").exists()


def test_allowed_values_kept_elsewhere_match_the_literals():
    """Modules that still name the allowed values for their own dispatch agree with the schema."""
    from ttds.eval.distributed import RANK_BY
    from ttds.features.build import SOURCES
    from ttds.index.kinds import INDEX_KINDS
    from ttds.index.table import REINDEX_RULES
    from ttds.llm.item_embedding import ITEM_EMBEDDING_MODES
    from ttds.train.lr_schedule import LR_SCHEDULES

    pairs = [(RANK_BY, schema.RankBy), (SOURCES, schema.FeatureSource), (INDEX_KINDS, schema.IndexKind),
             (REINDEX_RULES, schema.ReindexRule), (ITEM_EMBEDDING_MODES, schema.ItemEmbeddingMode), (LR_SCHEDULES, schema.LrSchedule)]
    for values, literal in pairs:
        assert set(values) == set(typing.get_args(literal)), (values, literal)
