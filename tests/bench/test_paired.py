"""Recipe comparison over several training runs: run spread must widen the interval."""

import numpy as np
import pandas as pd
import pytest

from ttds.bench.paired import paired_comparison, recipe_comparison, recipe_sentence


def _table(values: np.ndarray, users: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"user_id": users, "NDCG@10": values})


def test_recipe_interval_holds_run_spread_that_the_users_only_test_misses():
    rng = np.random.default_rng(0)
    n = 3000
    users = np.arange(n) + 7
    base = rng.random(n) * 0.2
    b_runs = [_table(base, users), _table(base + rng.normal(0, 0.001, n), users)]
    # recipe A: one lucky run far above B and one unlucky run far below; on average a bit above
    a_runs = [_table(base + 0.10, users), _table(base - 0.08, users)]
    c = recipe_comparison(a_runs, b_runs, n_boot=500)
    assert c["runs_a"] == c["runs_b"] == 2 and c["runs_resampled"] and c["users"] == n
    assert c["a_run_means"] == pytest.approx([float((base + 0.10).mean()), float((base - 0.08).mean())])
    assert c["diff"] == pytest.approx(c["a"] - c["b"]) and c["diff"] == pytest.approx(0.01, abs=1e-3)
    # the users-only test sees +.01 with a tiny SE; resampling the runs sees the +.10 / -.08 spread
    assert c["users_only"]["ci95"][0] > 0
    lo, hi = c["ci95"]
    assert lo < -0.05 and hi > 0.05
    assert "neither recipe is shown better" in recipe_sentence("A", "B", c)

    # a recipe whose every run is ahead is ahead beyond both kinds of noise
    good = recipe_comparison([_table(base + 0.05, users), _table(base + 0.06, users)], b_runs, n_boot=500)
    assert good["ci95"][0] > 0.04 and "A is ahead beyond run and user noise" in recipe_sentence("A", "B", good)


def test_recipe_comparison_with_one_run_each_is_the_paired_test_and_says_so():
    rng = np.random.default_rng(1)
    users = np.arange(500)
    a, b = _table(rng.random(500), users), _table(rng.random(500), users.copy()).sample(frac=1.0, random_state=0)
    c = recipe_comparison([a], [b], n_boot=500)
    p = paired_comparison(a, b, n_boot=500)
    assert not c["runs_resampled"] and c["a_run_sd"] is None
    assert c["diff"] == pytest.approx(p["diff"]) and c["users_only"]["ci95"] == p["ci95"]
    assert "1 run," in recipe_sentence("A", "B", c) or "1 run)" in recipe_sentence("A", "B", c)
    assert "add runs" in recipe_sentence("A", "B", c)
    # runs must share users; a table without the metric is refused with its place named
    with pytest.raises(ValueError, match="share 0 scored users"):
        recipe_comparison([a], [b.assign(user_id=b["user_id"] + 10_000)])
    with pytest.raises(ValueError, match="run 1 of recipe b has no user_id / NDCG@10"):
        recipe_comparison([a], [b, b.rename(columns={"NDCG@10": "x"})])
    with pytest.raises(ValueError, match="recipe a has no runs"):
        recipe_comparison([], [b])


def test_analyze_paired_command_picks_the_users_or_the_runs_comparison(tmp_path):
    """jobs/analyze.py paired: one folder a side is the paired test over users, several the recipe comparison."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from ttds.bench.paired import compare_folders
    from ttds.eval.per_user import PER_USER_FILE

    rng = np.random.default_rng(2)
    users = np.arange(300)
    folders = {}
    for name, shift in (("a0", 0.3), ("a1", 0.31), ("b0", 0.0), ("b1", 0.01)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        _table(np.clip(rng.random(300) * 0.2 + shift, 0, 1), users).to_parquet(folders[name] / PER_USER_FILE)
    c, sentence = compare_folders([folders["a0"]], [folders["b0"]], names=("T", "S"))
    assert "runs_a" not in c and c["users"] == 300 and "T is ahead beyond noise" in sentence
    c, sentence = compare_folders([folders["a0"], folders["a1"]], [folders["b0"], folders["b1"]], n_boot=300, names=("T", "S"))
    assert c["runs_a"] == c["runs_b"] == 2 and "T is ahead beyond run and user noise" in sentence

    job = Path(__file__).resolve().parents[2] / "jobs" / "analyze.py"
    r = subprocess.run([sys.executable, str(job), "paired", "--a", str(folders["a0"]), "--b", str(folders["b0"]), "--boot", "200",
                        "--out", str(tmp_path / "p.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("paired over 300 users") and json.loads((tmp_path / "p.json").read_text())["users"] == 300
    r = subprocess.run([sys.executable, str(job), "paired", "--a", str(tmp_path / "missing"), "--b", str(folders["b0"])],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no per-user results" in r.stderr and "Traceback" not in r.stderr
