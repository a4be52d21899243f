"""The confirmatory protocol (issue 31): tune on validation, freeze, then train every system with N seeds.

Why: a comparison whose recipes, epochs or defaults were picked on test figures, from one run of
each, cannot say whether a lead is real. Here every decision is made on validation and the test
split is read once per (system, seed):

1. tuning (`--tune-trials K`): each trained system without a frozen recipe gets a Ray Tune search
   of K trials on validation (`ttds.tune`; SASRec/GRU4Rec over dropout, lr, width and weight
   average, `SEQ_SPACE`; TTDS over configs/tune_default.yaml's space). Trials stop at
   validation. The chosen values are frozen as a recipe file, `recipes/<system>.yaml`, which every
   later run of this folder uses as it is (delete it to tune again). Baselines and TTDS get the
   same number of trials, so the same tuning budget;
2. seeds (`--seeds N`): seed k is an ordinary benchmark run in `seeds/seed<k>/` with training seed
   k and the frozen recipes, so each (system, seed) is a resumable unit: a finished one is reused
   (never scored on test again unless --fresh), an interrupted one resumes from its checkpoints.
   Each test read is appended to the seed's `test_reads.jsonl`;
3. results: `results.json` holds the per-seed figures (`seeds`), per system the mean over seeds
   (`systems`, the usual keys) and the `confirm` block (`ttds.bench.report.combine_runs`: mean, SD,
   95% interval over seeds and users, the strongest baseline and the best TTDS recipe chosen on
   validation, the paired difference with its interval over seeds and users, the statement), with
   `results.md` and the charts (test figures; quality per compute) rendered by the same code as
   docs/results.md (jobs/report.py);
4. the paper's protocol too (`--also-all-items`, with --exclude-seen): every finished (system, seed)
   scored on test once more with every item ranked, from the same model, as soon as it
   has trained (`AllItemsRescore`).

Adding systems later (e.g. TTDS seeds) is a re-run of the same command on the same --out with the
longer --systems list: the finished units and the frozen recipes are reused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from ttds import console
from ttds.bench import ledger
from ttds.baselines.runner import tune_trial
from ttds.bench.report import COMPUTE_CHART, METRICS, combine_runs, group_charts, group_summary, load_run, provenance, results_document
from ttds.bench.systems import System
from ttds.config import TuneSettings, recipes_dir, to_dict
from ttds.tune.space import merge, seq_sweep, ttds_sweep
from ttds.tune.sweep import run_sweep

log = logging.getLogger(__name__)

__all__ = ["ALL_ITEMS", "RECIPES", "SEEDS", "TEST_READS", "TUNE", "AllItemsRescore", "run_confirm"]

RECIPES, TUNE, SEEDS, ALL_ITEMS = "recipes", "tune", "seeds", "all-items"
TEST_READS = "test_reads.jsonl"  # one line per test-split read (ttds.bench.harness.Harness._finish)


def ttds_space() -> dict:
    """The TTDS search space: the default sweep file's (configs/tune_default.yaml), one definition."""
    path = recipes_dir().parent / "tune_default.yaml"
    return dict((yaml.safe_load(path.read_text()) or {}).get("space") or {})


def _plain(v: Any) -> Any:
    """A Tune-sampled value as plain YAML (numpy scalars -> Python)."""
    return v.item() if hasattr(v, "item") else v


def tune_settings(h, name: str, epochs: int) -> TuneSettings:
    """K trials, ASHA on epochs (grace: a quarter of the planned epochs, 1..5), the searcher seeded."""
    return TuneSettings(num_samples=h.cfg.tune_trials, scheduler="asha", grace_period=max(1, min(5, epochs // 4)), seed=0,
                        output_dir=str(h.out / TUNE / name))


class SweepInterrupted(KeyboardInterrupt):
    """Ray Tune swallowed a Ctrl-C (it saves the sweep and returns the trials so far): the protocol
    stops here, as the user asked, instead of freezing a recipe from a partial sweep and going on."""


def tune_and_freeze(h, s: System, space: dict | None = None) -> tuple[System, dict]:
    """`s` with its frozen recipe (tuning it first when it has none and --tune-trials asks), and
    what the tuning found (for the report); a system that is not trained, or not tuned, as it is.
    `space` replaces the TTDS family's search space (default `ttds_space()`): the test suite runs
    one small sweep, with a trial that must fail, for both the sweep's and the protocol's tests."""
    path = h.out / RECIPES / f"{s.name}.yaml"
    info_path = h.out / TUNE / s.name / "frozen.json"
    if path.is_file():
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        return dataclasses.replace(s, recipe_path=str(path)), {**info, "recipe": str(path)}
    if not (h.cfg.tune_trials and s.trains):
        return s, {}
    sweep_dir = h.out / TUNE / s.name
    resume = (sweep_dir / "tune").exists()
    if s.kind == "seq":
        ov = h.seq_overrides(s)
        ov.pop("seed", None)  # tuned with the recipe's own seed; the seeds come after
        spec = seq_sweep(s.model, str(h.corpus.root), ov, to_dict(h.train_config()), h.cfg.exclude_seen,
                         tune_settings(h, s.name, int(ov.get("epochs") or 0) or 100))
        with console.stage(f"tune {s.name}", total=h.cfg.tune_trials, unit="trial") as bar:
            outcome = run_sweep(spec, resume=resume, trial_fn=tune_trial)
            bar.set(len(outcome.rows))
        config = {**s.recipe.config, **{k: _plain(v) for k, v in (outcome.best or {}).items() if k in spec.space}}
    else:
        tcfg = h.ttds_config(s, sweep_dir / "base")
        spec = ttds_sweep(to_dict(tcfg), tune_settings(h, s.name, tcfg.optim.epochs), ttds_space() if space is None else space)
        with console.stage(f"tune {s.name}", total=h.cfg.tune_trials, unit="trial") as bar:
            outcome = run_sweep(spec, resume=resume)
            bar.set(len(outcome.rows))
        config = merge(s.recipe.config, {})
        for k, v in (outcome.best or {}).items():
            if k in spec.space:
                _set_nested(config, k, _plain(v))
    if not outcome.complete:  # a recipe frozen from the trials so far would have had less tuning than the others
        raise SweepInterrupted(f"{s.name}: the tuning stopped after {outcome.finished} of {outcome.planned} trials; nothing was frozen")
    if outcome.best is None:
        raise RuntimeError(f"{s.name}: no tuning trial produced a validation score (see {sweep_dir / 'trials.md'})")
    params = {k: _plain(outcome.best[k]) for k in spec.space}
    info = {"trials": len(outcome.rows), "best_valid_NDCG@10": outcome.best["best_valid_NDCG@10"], "best_trial": outcome.best["trial_id"],
            "params": params, "wall_s": round(outcome.wall_s, 1), "sweep": str(sweep_dir), "space": {k: p.describe() for k, p in spec.space.items()}}
    recipe = {
        "label": f"{s.label}, tuned", "kind": s.recipe.kind, **({"model": s.model} if s.kind == "seq" else {}),
        "description": (f"{s.label} frozen by jobs/benchmark.py --tune-trials {h.cfg.tune_trials}: the best of {len(outcome.rows)} Ray Tune "
                        f"trials on VALIDATION NDCG@10 ({info['best_valid_NDCG@10']:.4f}, trial {info['best_trial']}; {sweep_dir / 'trials.md'}). "
                        "Every later run of this benchmark folder uses it as it is; delete this file to tune again."),
        "config": config,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    info_path.write_text(json.dumps(info, indent=2, default=str))
    console.say(f"{s.name}: tuned on validation ({len(outcome.rows)} trials, best valid NDCG@10 {info['best_valid_NDCG@10']:.4f}); frozen in {path}")
    return dataclasses.replace(s, recipe_path=str(path)), {**info, "recipe": str(path)}


def _set_nested(config: dict, dotted: str, value: Any) -> None:
    node = config
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def run_confirm(h) -> dict:
    """Tune (where asked), then the seeds, then the combined results; the harness's `run` result shape."""
    out, cfg = h.out, h.cfg
    n_seeds = cfg.seeds or 1
    systems, tuning, failures = [], {}, dict(h.failures)
    if cfg.ledger:
        restored = ledger.restore(cfg.ledger, out)
        if restored:
            console.say(f"restored {len(restored)} ledger file(s) from {cfg.ledger} into {out}")
    for s in h.systems:
        try:
            with console.scope(s.name):
                frozen, info = tune_and_freeze(h, s)
        except Exception as e:  # noqa: BLE001 - an untuned system must not run as if tuned; the others go on
            log.exception("%s: tuning failed", s.name)
            failures[s.name] = f"tuning failed: {type(e).__name__}: {e}"[:500]
            tuning[s.name] = {"error": failures[s.name]}
            continue
        systems.append(frozen)
        if info:
            tuning[s.name] = info
        _keep(h)
    plan = {"systems": [s.name for s in h.systems], "seeds": n_seeds, "tune_trials": cfg.tune_trials,
            "budget": h.budget_text(), "exclude_seen": cfg.exclude_seen}
    (out / "run.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), "corpus": str(h.corpus.root), "plan": plan,
                                              "systems": [dataclasses.asdict(s) for s in systems]}, indent=2, default=str))
    seed_dirs = [f"{SEEDS}/seed{k}" for k in range(n_seeds)]
    all_items_failures: dict[str, str] = {}
    for k, rel in enumerate(seed_dirs):
        child_cfg = _seed_config(cfg, out / rel, k)
        console.say(f"seed {k} of {n_seeds}: {out / rel}")
        rescore = AllItemsRescore(h, systems, rel, k, all_items_failures) if cfg.also_all_items else None

        def unit_done(s: System, rescore=rescore) -> None:
            if rescore is not None:
                rescore.upto(s)
            _keep(h)  # each finished unit, with its all-items reading, outlives the machine

        res = type(h)(child_cfg, systems=systems).run(after=unit_done)
        failures.update({f"{n} (seed {k})": why for n, why in res["failures"].items()})
        write_confirm(out, seed_dirs, plan, tuning, failures)  # a stop later keeps what is done
        if rescore is not None:
            write_confirm(out / ALL_ITEMS, seed_dirs, {**plan, "exclude_seen": False, "rescored_from": str(out)}, tuning, all_items_failures)
        _keep(h)
    results, paths = write_confirm(out, seed_dirs, plan, tuning, failures)
    if cfg.also_all_items:
        failures.update(all_items_failures)
        paths["all_items_md"] = out / ALL_ITEMS / "results.md"
    return {"results": results, "details": {}, "failures": failures, "paths": {k: str(v) for k, v in paths.items()}}


def _seed_config(cfg, out: Path, k: int, **changes):
    """Seed k's own benchmark run: an ordinary one (no seeds, tuning, perf, re-score or ledger of its own)."""
    return dataclasses.replace(cfg, out=str(out), train_seed=k, seeds=0, tune_trials=0, perf=False, also_all_items=False, ledger="", **changes)


def _keep(h) -> None:
    """Copy what the run has decided and read so far to its --ledger (none: nothing to do)."""
    if h.cfg.ledger:
        copied = ledger.save(h.out, h.cfg.ledger)
        log.info("ledger: %d file(s) copied to %s", len(copied), h.cfg.ledger)


class AllItemsRescore:
    """--also-all-items: the paper's protocol (every item ranked) for seed `k`, trained with seen items
    excluded, in `<out>/all-items/<rel>` (`<out>/all-items` is a confirmatory folder of its own, the
    same layout); what failed is added to `failures`.

    Why not a second campaign: training does not depend on the ranking protocol, only the
    validation figure that picks the recipe and the epoch does, so the models chosen on
    seen-excluded validation are scored on test once more with every item ranked (the harness's
    `source`, `Harness._rescore`): hours of training saved per corpus, each unit's test read once
    per protocol. Popularity (nothing trained) simply runs under this protocol.
    Why unit by unit, right after each one trains: a unit then ends with both of its readings, so a
    campaign whose machine is lost (its trained models with it) keeps every finished unit whole; its
    ledger (`ttds.bench.ledger`) is all a fresh machine needs."""

    def __init__(self, h, systems: list[System], rel: str, k: int, failures: dict[str, str]):
        self.h, self.systems, self.rel, self.k, self.failures = h, systems, rel, k, failures
        self.harness = None  # the re-scoring harness, made at the first finished unit

    def upto(self, s: System) -> None:
        """Re-score every system up to `s` in the seed's order that has not been (one call per finished unit)."""
        h = self.h
        if self.harness is None:
            console.say(f"seed {self.k}, every item ranked: re-scoring {h.out / self.rel} unit by unit")
            self.harness = type(h)(_seed_config(h.cfg, h.out / ALL_ITEMS / self.rel, self.k, exclude_seen=False), systems=self.systems,
                                   source=h.out / self.rel)
            self.harness.write_run_json()
        r = self.harness
        for t in self.systems[:self.systems.index(s) + 1]:
            if t.name not in r.records and t.name not in r.failures:  # each unit once: recorded or failed
                r.run_one(t)
        self.failures.update({f"{n} (seed {self.k}, all items)": why for n, why in r.failures.items()})


def write_confirm(out: Path, seed_dirs: list[str], plan: dict, tuning: dict, failures: dict) -> tuple[dict, dict[str, Path]]:
    """results.json, results.md and the charts of a confirmatory folder from its finished seeds."""
    runs = [load_run(out / d) for d in seed_dirs if (out / d / "results.json").is_file()]
    confirm = {"plan": plan, "tuning": tuning, "seed_dirs": seed_dirs, "failures": failures}
    runs = [dataclasses.replace(r, confirm=confirm) for r in runs]
    groups = combine_runs(runs) if runs else []
    g = groups[0] if groups else None
    seeds = {str(r.run.get("train_seed")): {n: {**{k: f[k] for k in METRICS}, "wall_s": f["wall_s"],
                                               "valid_NDCG@10": r.details.get(n, {}).get("valid_NDCG@10")}
                                           for n, f in r.results["systems"].items()} for r in runs}
    systems = {}
    for name, s in (g["systems"] if g else {}).items():
        got = [r.results["systems"][name] for r in runs if name in r.results["systems"]]
        systems[name] = {**s["mean"], "wall_s": s["wall_s"], "peak_rss_mb": max(x["peak_rss_mb"] for x in got), "config": got[0]["config"]}
    meta = runs[0].run if runs else {}
    results = {"dataset": runs[0].dataset if runs else None, "protocol": "confirmatory", "seeds": seeds, "systems": systems,
               "confirm": {**confirm, **(group_summary(g) if g else {"statement": "no seed has finished yet"})},
               "run": {**provenance({k: meta.get(k) for k in ("machine", "exclude_seen", "items", "test_users", "budget")}), "train_seed": None}}
    paths = {"json": out / "results.json", "md": out / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=2, default=float))
    charts = group_charts(g, out, "") if g else {}
    if charts.get("compute"):
        (out / charts["compute"]).replace(out / COMPUTE_CHART)
        charts["compute"] = COMPUTE_CHART
    if g:
        paths["md"].write_text(results_document(groups, results["run"]["command"], {f"{g['dataset']}, {g['protocol']}": charts}))
    return results, paths
