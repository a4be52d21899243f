"""docs/results.md is generated from benchmark folders (jobs/report.py), never typed: these tests build
two tiny fake benchmark runs (two seeds) through the harness's own writer and render the page from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ttds.bench.report import METRICS, README_BEGIN, README_END, load_run, write_document, write_results
from ttds.eval.per_user import PER_USER_FILE, write_per_user

ROOT = Path(__file__).resolve().parents[2]
USERS = np.arange(200)


def _fake_run(folder: Path, dataset: str, seed: int, lift: float, exclude_seen: bool = True) -> Path:
    """A benchmark folder as jobs/benchmark.py leaves it: per-user files, then results/details via write_results."""
    rng = np.random.default_rng(seed)
    systems, details = {}, {}
    for name, kind, shift in (("popularity", "popularity", 0.0), ("sasrec", "seq", 0.05), ("ttds-ihe", "ttds", 0.05 + lift)):
        hits = (rng.random(len(USERS)) < 0.1 + shift).astype(float)
        table = pd.DataFrame({"user_id": USERS, "target": USERS % 7, **{k: hits / (2 if k.startswith("NDCG") else 1) for k in METRICS}})
        write_per_user(folder / "systems" / name / PER_USER_FILE, table)
        systems[name] = {**{k: float(table[k].mean()) for k in METRICS}, "wall_s": 1.0, "peak_rss_mb": 10.0, "config": {}}
        valid = float(table["NDCG@10"].mean()) + 0.01
        history = [] if kind == "popularity" else [{"epoch": e, "epoch_s": 2.0, "valid_NDCG@10": valid * (e + 1) / 3} for e in range(3)]
        details[name] = {"kind": kind, "valid_NDCG@10": valid, "out_dir": str(folder / "systems" / name), "history": history}
    meta = {"items": 50, "test_users": len(USERS), "budget": "2 epochs", "exclude_seen": exclude_seen, "train_seed": seed,
            "machine": "test machine, no GPU"}
    write_results(folder, {"dataset": dataset, "systems": systems, "perf": {}}, details, meta)
    return folder


def test_results_json_says_which_commit_machine_and_command(tmp_path):
    run = load_run(_fake_run(tmp_path / "r0", "Tiny", 0, 0.02))
    p = run.run
    assert p["machine"] == "test machine, no GPU" and p["exclude_seen"] is True and p["train_seed"] == 0
    assert p["command"] and p["written_utc"]
    assert p["commit"] is None or len(p["commit"]) == 40  # a git checkout records its commit


def test_document_over_two_seeds_with_readme_table(tmp_path):
    runs = [_fake_run(tmp_path / f"seed{s}", "Tiny", s, 0.02 * (s + 1)) for s in (0, 1)]
    readme = tmp_path / "README.md"
    readme.write_text(f"# ttds\n\nintro\n\n{README_BEGIN}\nstale table\n{README_END}\n\nrest of the README\n")
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    paths = write_document(runs, out, "python jobs/report.py --runs ...", readme)

    page = out.read_text()
    assert "python jobs/report.py --runs ..." in page and "do not edit by hand" in page
    assert "Placeholder" not in page  # a real dataset's figures are no placeholder
    assert "## Tiny, seen items excluded" in page and "test machine, no GPU" in page
    for r in runs:  # every run is listed, with the command that wrote it
        assert f"| `{r}` | Tiny | seen items excluded |" in page and f"`{load_run(r).run['command']}`" in page
    assert page.count("| `sasrec` | 2 (0,1) |") == 1  # one combined row per system, over both seeds
    ndcg = [load_run(r).results["systems"]["ttds-ihe"]["NDCG@10"] for r in runs]
    assert f"{np.mean(ndcg):.4f} ± {np.std(ndcg, ddof=1):.4f}" in page
    # each system paired against the strongest baseline (chosen on validation) over both runs and all users
    assert "strongest baseline on validation, `sasrec`" in page and "- `ttds-ihe`: NDCG@10 over 200 users" in page and "2 runs" in page
    # the headline: the best TTDS recipe vs that baseline, both chosen on validation, with its interval and a verdict
    assert "**Statement.** The best TTDS recipe on validation, `ttds-ihe`, against the strongest baseline on validation, `sasrec`" in page
    assert "Only 2 seed(s) on a side" in page and "95% over seeds and users [" in page
    assert "NDCG@10 95% (seeds, users)" in page
    compute = paths["compute:Tiny, seen items excluded"]
    assert compute.stat().st_size > 1000 and "](results/tiny-exclude-seen-compute.png)" in page
    chart = paths["chart:Tiny, seen items excluded"]
    assert chart == out.parent / "results" / "tiny-exclude-seen.png" and chart.stat().st_size > 1000
    assert "](results/tiny-exclude-seen.png)" in page

    text = readme.read_text()
    assert text.startswith("# ttds\n\nintro\n\n" + README_BEGIN) and text.endswith(README_END + "\n\nrest of the README\n")
    assert "stale table" not in text and "| dataset | system | test NDCG@10, seen items excluded (runs) |" in text and "| Tiny | `ttds-ihe` | 0." in text
    assert " (2) |" in text
    assert "[docs/results.md](docs/results.md)" in text


def test_synthetic_runs_are_marked_as_placeholder(tmp_path):
    run = _fake_run(tmp_path / "b", "synthetic", 0, 0.0, exclude_seen=False)
    out = tmp_path / "results.md"
    write_document([run], out, "cmd")
    page = out.read_text()
    assert "**Placeholder.**" in page and "every item ranked" in page


def test_cli_refuses_bad_input_with_a_message(tmp_path):
    run = _fake_run(tmp_path / "r", "Tiny", 0, 0.0)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    cmd = [sys.executable, str(ROOT / "jobs" / "report.py"), "--out", str(tmp_path / "results.md")]
    r = subprocess.run([*cmd, "--runs", str(run), "--readme", str(readme)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "needs the markers" in r.stderr and "Traceback" not in r.stderr
    assert readme.read_text() == "# no markers\n"
    r = subprocess.run([*cmd, "--runs", str(tmp_path / "nothing")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no results.json here" in r.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps({"systems": {}}))
    with pytest.raises(ValueError, match="not a benchmark results.json"):
        load_run(tmp_path / "bad")


def test_a_copy_without_git_records_the_commit_it_is_given(tmp_path, monkeypatch):
    from ttds.bench.report import git_commit

    monkeypatch.setenv("TTDS_COMMIT", "abc123")
    assert git_commit(tmp_path) == {"commit": "abc123", "dirty": None}
    monkeypatch.delenv("TTDS_COMMIT")
    assert git_commit(tmp_path) == {"commit": None, "dirty": None}


def test_a_cold_item_run_is_a_protocol_of_its_own_with_its_cold_table(tmp_path):
    """Its main rows rank the warm items only: never averaged with full-catalogue runs; the cold/warm table is rendered."""
    full = _fake_run(tmp_path / "full", "Tiny", 0, 0.02)
    cold = _fake_run(tmp_path / "cold", "Tiny", 1, 0.02)
    res = json.loads((cold / "results.json").read_text())
    fig = {"cold": {"users": 20, "HR@10": 0.05, "NDCG@10": 0.02}, "warm": {"users": 180, "HR@10": 0.1, "NDCG@10": 0.05}}
    res["cold_items"] = {"fraction": 0.1, "rule": "seeded draw", "cold_items": 5, "warm_items": 45, "test_users_cold_target": 20,
                         "systems": {"ttds-ihe": {**fig, "note": "extended"}}}
    (cold / "results.json").write_text(json.dumps(res))
    out = tmp_path / "results.md"
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    write_document([full, cold], out, "cmd", readme)
    page = out.read_text()
    assert "items cold" not in readme.read_text() and "New (cold) items" in readme.read_text()  # the README keeps the full-catalogue rows
    assert "## Tiny, seen items excluded\n" in page and "## Tiny, seen items excluded, 10% of the items cold (held out of training)" in page
    assert page.count("| `sasrec` | 1 (") == 2  # one row per protocol, not one row over both runs
    assert "#### Cold items (5 of 50 items held out of training, seeded draw" in page and "| ttds-ihe | 0.0500 | 0.0200 | 20 |" in page


def test_readme_table_has_one_row_per_system_and_a_column_per_protocol(tmp_path):
    runs = [_fake_run(tmp_path / "excluded", "Tiny", 0, 0.02), _fake_run(tmp_path / "every", "Tiny", 0, 0.01, exclude_seen=False)]
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    write_document(runs, tmp_path / "results.md", "cmd", readme)
    text = readme.read_text()
    assert "| dataset | system | test NDCG@10, seen items excluded (runs) | test NDCG@10, every item ranked (the paper's protocol) (runs) |" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| Tiny | `sasrec` |")]
    assert len(rows) == 1 and rows[0].count(" (1)") == 2


def test_readme_states_the_comparison_once_every_side_has_enough_seeds(tmp_path):
    runs = [_fake_run(tmp_path / f"seed{s}", "Tiny", s, 0.08) for s in (0, 1, 2)]
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    write_document(runs, tmp_path / "results.md", "cmd", readme)
    text = readme.read_text()
    assert "no claim yet" not in text
    assert "- Tiny, seen items excluded: `ttds-ihe` against `sasrec`, ahead beyond noise (+0.0" in text
