"""Recipes are files: a user adds one without touching code, and the jobs list what is there."""

import subprocess
import sys
from pathlib import Path

from ttds.bench.systems import resolve_systems
from ttds.config import list_recipes, recipes_dir

ROOT = Path(__file__).resolve().parents[2]


def test_the_repository_folder_is_found():
    assert recipes_dir() == ROOT / "configs" / "recipes"


def test_a_new_recipe_file_is_a_new_system_and_ablation(tmp_path, monkeypatch):
    for p in recipes_dir().glob("*.yaml"):
        (tmp_path / p.name).write_text(p.read_text())
    (tmp_path / "ttds-wide.yaml").write_text("label: TTDS, wide\nkind: ttds\nconfig:\n  backbone: {hidden_size: 256}\n")
    (tmp_path / "sasrec-wide.yaml").write_text("label: SASRec, wide\nkind: seq\nmodel: sasrec\nconfig: {hidden: 128}\n")
    monkeypatch.setenv("TTDS_RECIPES", str(tmp_path))
    assert recipes_dir() == tmp_path
    assert list_recipes()["ttds-wide"].ttds_config().backbone.hidden_size == 256
    systems = {s.name: s for s in resolve_systems(["ttds-wide", "sasrec-wide", "ttds-wide-retrieval", "ttds-wide@lsh"])}
    assert systems["sasrec-wide"].kind == "seq" and systems["sasrec-wide"].model == "sasrec"
    assert systems["ttds-wide"].label == "TTDS, wide" and systems["ttds-wide-retrieval"].base == "ttds-wide"
    assert systems["ttds-wide@lsh"].index_kind == "lsh"
    out = subprocess.run([sys.executable, str(ROOT / "jobs" / "train_ttds.py"), "--ablation", "ttds-wide", "--print-config"],
                         capture_output=True, text=True, check=True, env={**__import__("os").environ, "TTDS_RECIPES": str(tmp_path)}).stdout
    assert "hidden_size: 256" in out


def test_both_jobs_list_the_recipes_in_their_help():
    for job in ("train_ttds.py", "benchmark.py"):
        out = subprocess.run([sys.executable, str(ROOT / "jobs" / job), "--help"], capture_output=True, text=True, check=True).stdout
        assert "ttds-ihe" in out and "tiger" in out, job
    assert "sasrec" in subprocess.run([sys.executable, str(ROOT / "jobs" / "benchmark.py"), "--help"], capture_output=True, text=True).stdout
