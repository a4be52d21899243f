"""Ray Tune sweeps of the TTDS job: the sweep file, the CLI checks, and a 2-trial sweep end to end
where one trial fails on a bad config value and the sweep still finishes with a best config (the
session's sweep, tests/conftest.py `ttds_tuned`), and the TTDS recipe the confirmatory protocol freezes from it."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ttds.config import ConfigError, TTDSJobConfig, load_config
from ttds.tune.space import count_trials, load_sweep, param_space

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "tune_default.yaml"



def test_default_sweep_file_loads_and_covers_the_issue_space():
    spec = load_sweep(DEFAULT)
    assert {"index.levels", "index.codebook_size", "loss.alpha", "loss.beta", "optim.lr", "backbone.lora_r"} <= set(spec.space)
    assert spec.space["index.levels"].values == [3, 4, 5]
    assert spec.space["loss.alpha"].kind == "loguniform" and spec.space["optim.lr"].kind == "loguniform"
    assert count_trials(spec) == spec.tune.num_samples
    assert set(param_space(spec)) == set(spec.space)
    # a trial's config is a valid TTDSJobConfig with the sampled value in place
    cfg = spec.trial_config({"index.levels": 5, "loss.alpha": 0.3}, "/tmp/x")
    assert cfg.index.levels == 5 and cfg.loss.alpha == 0.3 and cfg.output_dir == "/tmp/x"
    assert cfg.train.max_failures == 0  # sweep_only applies to trials ...
    assert spec.final_config({"index.levels": 5}).train.max_failures == TTDSJobConfig().train.max_failures  # ... not to best.yaml


def test_pins_and_grids_from_the_command_line():
    spec = load_sweep(DEFAULT, pins=["--index.codebook_size=16", "--optim.epochs=2"], grids=["index.levels=3,4,5", "loss.alpha=0.05,0.5"],
                      tune_overrides={"num_samples": 1})
    assert "index.codebook_size" not in spec.space and spec.base["index"]["codebook_size"] == 16
    assert spec.base["optim"]["epochs"] == 2
    assert spec.space["index.levels"].kind == "grid" and spec.space["loss.alpha"].values == [0.05, 0.5]
    assert count_trials(spec) == 6
    # a grid on a pinned key is swept (the explicit --grid wins)
    spec = load_sweep(None, pins=["--index.levels=4"], grids=["index.levels=3,4"])
    assert spec.space["index.levels"].values == [3, 4]


@pytest.mark.parametrize("kwargs, message", [
    ({"grids": ["index.levelz=3,4"]}, "index.levels"),  # typo: suggestion names the real key
    ({"pins": ["--optim.nope=1"]}, "unknown config key"),
    ({"grids": ["index.levels=3,4"], "tune_overrides": {"search": "optuna"}}, "only work with --search random"),
    ({"tune_overrides": {"scheduler": "hyperband"}}, "scheduler"),
    ({}, "search space is empty"),
])
def test_bad_sweeps_fail_before_any_trial(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(None, **kwargs)


def test_missing_searcher_package_is_a_clear_error():
    from ttds.tune.sweep import make_searcher

    for name in ("optuna", "hyperopt"):
        spec = load_sweep(DEFAULT, tune_overrides={"search": name})
        if importlib.util.find_spec(name) is None:
            with pytest.raises(ConfigError, match=f"pip install {name}"):
                make_searcher(spec.tune)
        else:
            assert make_searcher(spec.tune) is not None


def test_cli_rejects_bad_arguments_without_traceback():
    r = subprocess.run([sys.executable, str(ROOT / "jobs" / "tune_ttds.py"), "--grid", "index.levels=3,4", "--search", "optuna"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "only work with --search random" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "jobs" / "tune_ttds.py"), "--resume"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--output_dir" in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "jobs" / "tune_ttds.py"), "--print-config", "--grid", "index.levels=3,4,5",
                        "--num-samples", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "# 6 trial(s)" in r.stdout


def test_error_summary_names_the_root_error():
    from ttds.tune.sweep import error_summary

    text = "TrainingFailedError: Training failed\nTraceback (most recent call last):\n  File x\nValueError: need codebook_size >= 2\n"
    assert error_summary(text) == "ValueError: need codebook_size >= 2"


@pytest.mark.slow
def test_two_trial_sweep_with_one_failure(ttds_tuned):
    """The session's TTDS sweep (tests/conftest.py `ttds_tuned`, configs/tune_default.yaml's space
    with index.codebook_size a grid of [16, 0]): trial 1 trains (codebook 16); trial 2 asks for
    codebook_size=0, which the RQ tokenizer rejects. The sweep must finish, table both, and hand
    back a loadable best config and the best trial's model."""
    from ttds.tune.sweep import STATUS_DONE, STATUS_ERROR

    out = ttds_tuned.sweep_dir
    spec = yaml.safe_load((out / "sweep.yaml").read_text())  # what run_sweep was asked to run
    assert spec["space"]["index.codebook_size"] == {"type": "grid", "values": [16, 0]} and spec["tune"]["num_samples"] == 1

    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == 2, rows
    by_size = {r["index.codebook_size"]: r for r in rows}
    good, bad = by_size["16"], by_size["0"]
    assert bad["status"] == STATUS_ERROR and "codebook_size" in bad["error"], bad
    assert good["status"] == STATUS_DONE and float(good["best_valid_NDCG@10"]) > 0, good
    assert good["epochs_run"] == "2" and good["error"] == ""
    # trials stop at validation: the test split is never ranked in a trial
    trial = Path(good["dir"])
    assert json.loads((trial / "metrics.json").read_text())["test"] is None
    assert not list(trial.glob("*per_user*")) and "test_NDCG@10" not in rows[0]
    md = (out / "trials.md").read_text()
    assert md.count("| ") > 2 and "error" in md and "codebook_size" in md

    best = load_config(TTDSJobConfig, out / "best.yaml")
    assert best.index.codebook_size == 16 and best.optim.epochs == 2 and best.output_dir == ""
    assert best.index.levels == int(good["index.levels"]) and best.optim.lr == pytest.approx(float(good["optim.lr"]))
    assert best.train.max_failures == TTDSJobConfig().train.max_failures  # sweep-only knobs left out
    assert (out / "best_model" / "ttds.json").exists()
    assert (out / "ndcg_vs_params.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_trial"] == good["trial_id"] and summary["by_status"][STATUS_ERROR] == 1
    assert ttds_tuned.info["best_trial"] == good["trial_id"]
    # per-epoch results reached Tune while the trial ran (what ASHA acts on)
    progress = list((out / "tune").glob(f"{good['trial_id']}/progress.csv"))
    assert progress and len(progress[0].read_text().strip().splitlines()) == 1 + 2


def test_reaper_frees_the_placement_group_of_a_dead_creator(ray_session):
    """What an ASHA stop leaves behind: a Ray Train controller (an actor) that created its
    workers' placement group dies with the trial; Ray keeps the group (and its CPUs) until the
    job ends unless someone removes it."""
    import time

    import ray
    from ray.util.placement_group import placement_group

    from ttds.tune.sweep import OrphanPlacementGroupReaper, orphan_placement_groups

    @ray.remote(num_cpus=0)
    class Creator:
        def make(self) -> str:
            pg = placement_group([{"CPU": 0.5}])
            ray.get(pg.ready())
            return pg.id.hex()

    driver_pg = placement_group([{"CPU": 0.25}])  # like Tune's trial groups: made by the driver
    ray.get(driver_pg.ready())
    creator = Creator.remote()
    pg_id = ray.get(creator.make.remote())
    orphans = {pg.id.hex() for pg in orphan_placement_groups()}
    assert pg_id not in orphans and driver_pg.id.hex() not in orphans  # creator alive / a driver's group
    ray.kill(creator)
    deadline = time.time() + 60
    while pg_id not in {pg.id.hex() for pg in orphan_placement_groups()}:
        assert time.time() < deadline, "the killed creator's placement group never showed as orphaned"
        time.sleep(0.5)
    with OrphanPlacementGroupReaper(every_s=0.2) as reaper:
        while pg_id in {pg.id.hex() for pg in orphan_placement_groups()}:
            assert time.time() < deadline, "the reaper did not remove the orphaned placement group"
            time.sleep(0.5)
    assert reaper.reaped >= 1
    assert pg_id not in {pg.id.hex() for pg in orphan_placement_groups()}
    assert ray.util.placement_group_table()[pg_id]["state"] == "REMOVED"
    assert ray.util.placement_group_table()[driver_pg.id.hex()]["state"] == "CREATED"  # never reaped
    ray.util.remove_placement_group(driver_pg)


@pytest.mark.slow
def test_a_ttds_recipe_is_tuned_and_frozen_the_same_way(ttds_tuned):
    """The TTDS family gets the same search (configs/tune_default.yaml's space, here with
    index.codebook_size a grid of [16, 0] so that one of the 2 trials fails; the session's sweep,
    tests/conftest.py `ttds_tuned`, whose table the test above checks): its trials stop at validation
    and the winner is frozen as a recipe file that loads as a TTDS job config."""
    from ttds.bench.confirm import ttds_space, tune_and_freeze
    from ttds.config import load_recipe

    h, frozen, info = ttds_tuned.harness, ttds_tuned.frozen, ttds_tuned.info
    recipe = load_recipe(frozen.recipe_path)
    assert recipe.kind == "ttds" and info["trials"] == 2 and set(info["params"]) == set(ttds_space())
    cfg = recipe.ttds_config()
    assert cfg.optim.lr == pytest.approx(info["params"]["optim.lr"]) and cfg.index.levels == info["params"]["index.levels"]
    assert cfg.index.codebook_size == info["params"]["index.codebook_size"] == 16  # the trial that trained
    trials = ttds_tuned.sweep_dir / "trials"
    for trial in trials.iterdir():  # validation only: no test figures, no per-user test file
        if (trial / "metrics.json").exists():
            assert json.loads((trial / "metrics.json").read_text())["test"] is None
        assert not (trial / "test_per_user.parquet").exists()
    n_trials = len(list(trials.iterdir()))
    again, _ = tune_and_freeze(h, ttds_tuned.system)  # frozen: reused, not tuned again
    assert again.recipe_path == frozen.recipe_path and len(list(trials.iterdir())) == n_trials >= 1


def _quick_trial(driver_pid: int, marker: Path):
    """A trial that trains nothing: one validation figure from its params. The first one to start
    interrupts the sweep's driver as Ctrl-C would (SIGUSR1: Tune's own handler for both, which
    pytest leaves alone), then waits for Tune to stop it."""

    def trial(params: dict, spec_data: dict, out: str) -> None:
        import os
        import signal
        import time

        from ray import tune

        if not marker.exists():
            marker.write_text("interrupted")
            os.kill(driver_pid, signal.SIGUSR1)
            time.sleep(30)  # Tune ends the trial while it waits
        score = 0.01 * params["index.levels"]
        Path(out, "history.jsonl").write_text(json.dumps({"epoch": 0, "valid_NDCG@10": score}) + "\n")
        Path(out, "metrics.json").write_text(json.dumps({"valid_NDCG@10": score}))
        tune.report({"valid_NDCG@10": score})

    return trial


@pytest.mark.slow
def test_an_interrupted_sweep_says_so_and_resumes_to_the_end(ray_session, synthetic_corpus, tmp_path):
    """Ray Tune answers Ctrl-C by saving the sweep and returning the trials so far without an
    error; the outcome must say it is incomplete (the confirmatory protocol then freezes nothing,
    ttds.bench.confirm.SweepInterrupted), and a resume must run the rest."""
    import os

    from ttds.tune.sweep import run_sweep

    spec = load_sweep(None, pins=[f"--data.corpus={synthetic_corpus}"], grids=["index.levels=3,4"],
                      tune_overrides={"num_samples": 1, "max_concurrent": 1, "scheduler": "fifo", "output_dir": str(tmp_path / "sweep")})
    trial = _quick_trial(os.getpid(), tmp_path / "interrupted")
    first = run_sweep(spec, trial_fn=trial)
    assert (tmp_path / "interrupted").exists()
    assert first.planned == 2 and first.finished < 2 and not first.complete
    again = run_sweep(spec, resume=True, trial_fn=trial)
    assert again.resumed and again.complete and again.finished == 2
    assert sorted(r["best_valid_NDCG@10"] for r in again.rows) == pytest.approx([0.03, 0.04])
