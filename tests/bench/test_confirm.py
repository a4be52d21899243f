"""The confirmatory protocol end to end on the synthetic corpus with a tiny budget: a real Ray Tune
search of SASRec on validation (trials never read test), its frozen recipe, two training seeds per
system, each (system, seed) scored on test once, the combined results with intervals and the paired
difference chosen on validation, a re-run that re-scores nothing, and the generated page; with seen
items excluded, and the paper's protocol (every item ranked) scored again from the same models."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

from ttds.bench import confirm as confirm_mod
from ttds.bench import ledger, run_benchmark
from ttds.bench.report import METRICS, write_document
from ttds.config import BenchConfig, ConfigError
from ttds.data.corpus import Corpus
from ttds.eval.per_user import read_per_user


def _cfg(corpus, out: Path, **kw) -> BenchConfig:
    return BenchConfig(data=str(corpus), systems=["popularity", "sasrec"], out=str(out), budget_epochs=2, seeds=2, tune_trials=2,
                       sets=["sasrec:batch_size=32", "sasrec:max_len=20"], **kw)


@pytest.fixture(scope="module")
def confirm(ray_session, synthetic_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("confirm") / "out"
    cfg = _cfg(synthetic_corpus, out, exclude_seen=True, also_all_items=True, ledger=str(out.parent / "ledger"))
    kept, keep = [], confirm_mod._keep

    def keep_and_look(h):  # what the ledger holds each time the run keeps it
        keep(h)
        kept.append(set(ledger.files(cfg.ledger)))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(confirm_mod, "_keep", keep_and_look)
        res = run_benchmark(cfg)
    res["kept"] = kept
    return cfg, out, res


@pytest.mark.slow
def test_tuning_on_validation_is_frozen_as_a_recipe_and_trials_never_read_test(confirm):
    cfg, out, res = confirm
    assert not res["failures"], res["failures"]
    recipe = yaml.safe_load((out / "recipes" / "sasrec.yaml").read_text())
    assert recipe["kind"] == "seq" and recipe["model"] == "sasrec" and "VALIDATION" in recipe["description"]
    assert set(recipe["config"]) >= {"dropout", "lr", "hidden", "ema_epochs"}
    trials = [d for d in (out / "tune" / "sasrec" / "trials").iterdir() if d.is_dir()]
    assert len(trials) == 2
    for t in trials:  # validation only: no test figures, no per-user test file
        if (t / "metrics.json").exists():
            m = json.loads((t / "metrics.json").read_text())
            assert "test" not in m and "NDCG@10" not in m and m["valid_NDCG@10"] >= 0
        assert not (t / "test_per_user.parquet").exists()
        assert (t / "history.jsonl").read_text().strip()  # each epoch's validation, what ASHA compared
    assert not (out / "recipes" / "popularity.yaml").exists()  # nothing to tune
    # every seed trained with the frozen recipe's values
    for k in (0, 1):
        config = json.loads((out / "seeds" / f"seed{k}" / "systems" / "sasrec" / "result.json").read_text())["entry"]["config"]
        assert config["seed"] == k and config["hidden"] == recipe["config"]["hidden"] and config["lr"] == pytest.approx(recipe["config"]["lr"])


@pytest.mark.slow
def test_each_system_and_seed_is_scored_on_test_once_and_a_rerun_scores_nothing(confirm):
    cfg, out, res = confirm
    def reads(folder=out):
        return [json.loads(ln) for k in (0, 1) for ln in (folder / "seeds" / f"seed{k}" / "test_reads.jsonl").read_text().splitlines()]
    first, first_all = reads(), reads(out / "all-items")
    for got in (first, first_all):  # once per unit and protocol
        assert sorted((r["system"], r["train_seed"]) for r in got) == [("popularity", 0), ("popularity", 1), ("sasrec", 0), ("sasrec", 1)]
    again = run_benchmark(cfg)
    assert reads() == first and reads(out / "all-items") == first_all  # finished units reused: no test read again, nothing retuned
    assert again["results"]["systems"] == res["results"]["systems"]


@pytest.mark.slow
def test_results_hold_seeds_means_intervals_and_the_validation_chosen_comparison(confirm, tmp_path):
    cfg, out, res = confirm
    r = json.loads((out / "results.json").read_text())
    assert set(r["seeds"]) == {"0", "1"} and set(r["seeds"]["0"]) == {"popularity", "sasrec"}
    for name in ("popularity", "sasrec"):
        per_seed = [r["seeds"][k][name]["NDCG@10"] for k in ("0", "1")]
        assert r["systems"][name]["NDCG@10"] == pytest.approx(sum(per_seed) / 2)
        assert set(METRICS) <= set(r["systems"][name])
        iv = r["confirm"]["systems"][name]["interval"]
        assert iv["runs"] == 2 and iv["ci95"][0] <= iv["mean"] <= iv["ci95"][1]
        assert r["confirm"]["systems"][name]["test_reads"] == [1, 1]
    paired = r["confirm"]["paired"]
    valid = {n: r["confirm"]["systems"][n]["valid_NDCG@10"] for n in ("popularity", "sasrec")}
    assert paired["baseline"] == max(valid, key=valid.get) and paired["chosen_on"].startswith("validation")
    assert paired["best_ttds"] is None and "NOT measured yet" in r["confirm"]["statement"]
    assert r["confirm"]["tuning"]["sasrec"]["trials"] == 2
    assert (out / "quality_per_compute.png").stat().st_size > 1000
    md = (out / "results.md").read_text()
    assert "**Statement.**" in md and "Tuning on validation" in md and "once per seed" in md
    # the generated page from the confirmatory folder: its seeds, the plan, and what is missing
    page = tmp_path / "results.md"
    paths = write_document([out], page, "python jobs/report.py --runs X")
    text = page.read_text()
    assert "| `sasrec` | 2 (0,1) |" in text and "Plan: `popularity`, `sasrec` x 2 seeds, 2 tuning trials" in text
    assert any(k.startswith("compute:") for k in paths) and "quality per compute" in text


@pytest.mark.slow
def test_also_all_items_scores_the_same_models_with_every_item_ranked(confirm, synthetic_corpus):
    cfg, out, res = confirm
    alt = out / "all-items"
    r = json.loads((alt / "results.json").read_text())
    assert r["run"]["exclude_seen"] is False and r["confirm"]["plan"]["rescored_from"] == str(out) and set(r["seeds"]) == {"0", "1"}
    assert "Not retrained" in (alt / "results.md").read_text()
    users, hists, _ = Corpus.open(synthetic_corpus).eval_arrays("test")
    history = {int(u): set(h.tolist()) for u, h in zip(users, hists)}
    seen_recommended = 0
    for k in (0, 1):
        src = json.loads((out / "seeds" / f"seed{k}" / "systems" / "sasrec" / "result.json").read_text())
        again = json.loads((alt / "seeds" / f"seed{k}" / "systems" / "sasrec" / "result.json").read_text())
        assert (again["detail"]["valid_NDCG@10"], again["detail"]["best_epoch"]) == (src["detail"]["valid_NDCG@10"], src["detail"]["best_epoch"])
        assert again["entry"]["config"]["rescored"] == {"from": src["detail"]["out_dir"], "exclude_seen": False}
        assert not any((alt / "seeds" / f"seed{k}" / "systems" / "sasrec").glob("ray_train*"))  # nothing trained here
        for name in ("popularity", "sasrec"):
            excluded = read_per_user(out / "seeds" / f"seed{k}" / "systems" / name).set_index("user_id")
            every = read_per_user(alt / "seeds" / f"seed{k}" / "systems" / name).set_index("user_id")
            assert sorted(every.index) == sorted(excluded.index) == sorted(history)
            for u, row in every.iterrows():  # the same model: its ranking less the user's history is the seen-excluded one
                kept = [int(i) for i in row["top10"] if i >= 0 and int(i) not in history[u]]
                assert [int(i) for i in excluded.at[u, "top10"][: len(kept)]] == kept, (name, k, u)
                seen_recommended += len(kept) < 10
    assert seen_recommended  # and the protocol did change something: seen items were ranked


@pytest.mark.slow
def test_a_lost_machine_resumes_from_the_ledger_without_training_or_reading_test_again(confirm, tmp_path):
    cfg, out, res = confirm
    kept = Path(cfg.ledger)
    names = ledger.files(kept)
    assert names == ledger.files(out)  # everything it keeps, and nothing else: no model, no checkpoint
    assert {Path("recipes/sasrec.yaml"), Path("seeds/seed1/systems/sasrec/test_per_user.parquet"),
            Path("all-items/seeds/seed1/test_reads.jsonl")} <= set(names)
    assert sum((kept / n).stat().st_size for n in names) < 5_000_000
    # kept unit by unit: popularity's seed-0 record and its all-items reading are in the ledger before sasrec's seed 0 trains
    unit = Path("seeds/seed0/systems/popularity/result.json")
    first = next(k for k in res["kept"] if unit in k)
    assert Path("all-items") / unit in first and Path("seeds/seed0/systems/sasrec/result.json") not in first
    reads = {n: (out / n).read_text() for n in names if n.name == "test_reads.jsonl"}
    lost = out.with_name("out.lost")
    out.rename(lost)  # the machine and its disk are gone; the ledger was kept elsewhere
    try:
        again = run_benchmark(cfg)
        assert not again["failures"] and again["results"]["systems"] == res["results"]["systems"]
        assert {n: (out / n).read_text() for n in reads} == reads  # no unit scored on test again
        assert not any(out.rglob("ray_train*")) and not (out / "tune" / "sasrec" / "trials").exists()  # nothing trained or tuned
        page = tmp_path / "results.md"  # the report needs the ledger alone
        write_document([kept, kept / "all-items"], page, "python jobs/report.py --runs X")
        assert "| `sasrec` | 2 (0,1) |" in page.read_text()
        # lost between a seed's training and its all-items reading: that reading fails clearly, nothing else
        partial = tmp_path / "partial"
        shutil.copytree(kept, partial)
        shutil.rmtree(partial / "all-items" / "seeds" / "seed1" / "systems" / "sasrec")
        shutil.rmtree(out)
        again = run_benchmark(dataclasses.replace(cfg, ledger=str(partial)))
        assert list(again["failures"]) == ["sasrec (seed 1, all items)"], again["failures"]
        assert "the model this unit trained is gone" in again["failures"]["sasrec (seed 1, all items)"]
        assert {n: (out / n).read_text() for n in reads} == reads
    finally:
        shutil.rmtree(out, ignore_errors=True)
        lost.rename(out)


def test_also_all_items_needs_seeds_and_exclude_seen(synthetic_corpus, tmp_path):
    with pytest.raises(ConfigError, match="also_all_items"):
        _cfg(synthetic_corpus, tmp_path, also_all_items=True)


def test_seeds_and_train_seed_exclude_each_other(synthetic_corpus, tmp_path):
    with pytest.raises(ConfigError, match="seeds and train_seed"):
        _cfg(synthetic_corpus, tmp_path, train_seed=1)
