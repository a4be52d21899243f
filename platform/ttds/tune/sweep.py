"""Ray Tune sweeps whose trials are whole training runs that stop at validation.

A trial is a TTDS run (tokenizer warm-up, Ray Train; `train_ttds(test=False)`) or, for a
baseline sweep (`SweepSpec.target` sasrec | gru4rec), a SASRec/GRU4Rec run
(`ttds.baselines.train_on_validation`). No trial reads the test split: trials are compared on
validation NDCG@10 only, and only the configuration the sweep chooses is tested, by whoever
trains it next (`jobs/train_ttds.py --config best.yaml`, the benchmark's seeds).

How a trial reports: as Ray 2.60 (Train v2) documents, a Tune function trainable launches the
Ray Train trainer itself (`train_ttds`) with `ray.tune.integration.ray_train.TuneReportCallback`
among the trainer's callbacks (`train.launch.run_trainer(callbacks=...)`); every epoch's
`ray.train.report` (with `valid_NDCG@10`) then reaches Tune while the run is going. That is
what ASHA needs: an epoch-level result it can act on mid-run. When ASHA stops a trial, Tune
ends the trial's actor; the Ray Train controller and workers it started are owned by that actor
and end with it, but their placement group does not (Ray keeps an actor's placement group
until the job ends): `OrphanPlacementGroupReaper` removes it.

Resume (`run_sweep(resume=True)`): `Tuner.restore(..., resume_errored=True)` re-runs errored
and unfinished trials; a re-run trial's train_ttds resumes from its own Ray Train checkpoint
in trials/<id>/. Tune 2.60 does not restore the scheduler's state (ASHAScheduler.save/restore
exist but the controller never calls them), so after a resume ASHA's rungs start empty.

Sweep folder (runs/tune_ttds/<timestamp>/ by default):
  sweep.yaml            the resolved sweep (settings, fixed config, space): what --resume reads
  tune/                 Ray Tune's experiment folder (Tuner.restore resumes from it)
  trials/<trial_id>/    each trial's train_ttds output folder (config, history, model, metrics)
  trials.csv, trials.md the trial table: swept values, best valid NDCG@10, epochs, status, error
  best.yaml             the winner's config for `jobs/train_ttds.py --config best.yaml` (a baseline
                        sweep: the model's config section)
  best_model/           a copy of the winner's model folder (servable, evaluable)
  ndcg_vs_params.png    best valid NDCG@10 against each swept parameter
  summary.json          best trial, counts, wall time
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ttds.config import ConfigError, from_dict, save_config, to_dict
from ttds.data.resolve import open_or_prepare
from ttds.runtime import init_ray
from ttds.train.ttds_job import train_ttds
from ttds.tune.space import METRIC, ParamSpec, SweepSpec, TuneSettings, count_trials, param_space

log = logging.getLogger(__name__)

STATUS_DONE = "completed"
STATUS_STOPPED = "stopped early"  # by the scheduler (ASHA) after a rung comparison
STATUS_ERROR = "error"
STATUS_NOT_RUN = "not run"


# ----------------------------------------------------------------------------- the trainable


def error_summary(text: str, limit: int = 300) -> str:
    """The line of a (possibly remote, nested) traceback that names the root error."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    named = [ln for ln in lines if ln.split(":", 1)[0].replace(".", "").isidentifier()
             and ln.split(":", 1)[0].endswith(("Error", "Exception", "Exit", "Interrupt"))]
    pick = named[-1] if named else (lines[-1] if lines else "")
    return pick[:limit]


def ttds_trial(config: dict, spec_data: dict, out: str) -> None:
    """One TTDS trial: a `train_ttds` run whose per-epoch validation reaches Tune live; it stops
    at validation (the test split is left for the configuration the sweep chooses)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = spec_from_dict(spec_data).trial_config(config, out)
    train_ttds(cfg, callbacks=[TuneReportCallback()], test=False)


def run_trial(config: dict, trial_fn: Callable[[dict, dict, str], None], spec_data: dict, trials_root: str) -> None:
    """The Tune trainable: `trial_fn(params, spec_data, trial folder)` in trials/<trial_id>/, its
    sampled values in trial.json and, when it fails, the root error in error.txt (the table's column).

    `trial_fn` trains one trial: `ttds_trial`, or the baseline trial the benchmark hands over
    (`ttds.baselines.runner.tune_trial`; tune and baselines are sibling layers, so the sweep
    does not import it)."""
    from ray import tune

    out = Path(trials_root) / tune.get_context().get_trial_id()
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.txt").unlink(missing_ok=True)  # a resumed, previously errored trial
    try:
        (out / "trial.json").write_text(json.dumps({"params": config}, default=str))
        trial_fn(config, spec_data, str(out))
    except Exception as e:
        text = "".join(traceback.format_exception(e))
        (out / "error.txt").write_text(f"{error_summary(f'{type(e).__name__}: {e}')}\n\n{text}")
        raise


def spec_from_dict(data: dict) -> SweepSpec:
    space = {k: ParamSpec(k, v["type"], **{n: v[n] for n in ("values", "low", "high") if n in v}) for k, v in data["space"].items()}  # as _spec_dict wrote it
    return SweepSpec(from_dict(TuneSettings, data["tune"]), data["base"], data["sweep_only"], space, target=data.get("target", "ttds"))


# ----------------------------------------------------------------------------- orphaned resources


def orphan_placement_groups() -> list:
    """Placement groups whose creating actor is dead while this job lives on.

    Ray removes an actor-created placement group only when both its creator actor and the
    creator's job are dead (measured: after `ray.kill` of the creator the group stays CREATED
    and its CPUs stay reserved). When ASHA stops a trial, Tune ends the trial's actor, which
    ends the Ray Train controller it owns; the controller's worker placement group then leaks
    until the sweep driver exits. Ray Train v2 has a detached PlacementGroupCleaner for this,
    but it asks the State API (the dashboard, off in `runtime.init_ray`) and, on a machine with
    several local Ray instances, connects to the wrong one and exits at once (seen in the
    logs). Each leak holds `train.cpus_per_worker`; on 2 CPUs one leak leaves no whole CPU
    for the next trial's Ray Data read tasks, and the sweep hangs (it did, before this).

    Reads the GCS placement-group table directly (private Ray API: `ray._private.state`), so
    it returns [] with a warning if that API moves.
    """
    import ray
    from ray.util.placement_group import PlacementGroup

    try:
        from ray._private.state import state
        from ray.core.generated import gcs_pb2

        table = state._connect_and_get_accessor().get_placement_group_table()
        removed = gcs_pb2.PlacementGroupTableData.REMOVED
    except Exception as e:  # noqa: BLE001 - a best-effort cleanup must not fail a sweep
        log.warning("cannot read the placement group table (%s); orphaned groups are not reaped", e)
        return []
    nil = ray.ActorID.nil().binary()
    out = []
    for raw in table:
        d = gcs_pb2.PlacementGroupTableData.FromString(raw)
        # a group made by a driver (Tune's trial groups) has a nil creator actor that GCS reports
        # as dead: only groups made by a real, now dead, actor are orphans (measured both)
        made_by_actor = bool(d.creator_actor_id) and d.creator_actor_id != nil
        if made_by_actor and d.creator_actor_dead and not d.creator_job_dead and not d.is_detached and d.state != removed:
            out.append(PlacementGroup(ray.PlacementGroupID(d.placement_group_id)))
    return out


class OrphanPlacementGroupReaper:
    """Removes orphaned placement groups (see above) from a driver thread while the sweep runs.

    A thread rather than a Tune callback: Tuner.restore takes callbacks from the pickled run
    config of the first start, so a sweep started before a callback existed would resume
    without it (that happened); a thread started by `run_sweep` is there on every start.
    """

    def __init__(self, every_s: float = 5.0):
        self.every_s = every_s
        self.reaped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reap_once(self) -> int:
        from ray.util.placement_group import remove_placement_group

        n = 0
        for pg in orphan_placement_groups():
            log.info("removing placement group %s left by a stopped trial's Ray Train run", pg.id.hex())
            try:
                remove_placement_group(pg)
                n += 1
            except Exception as e:  # noqa: BLE001 - removed meanwhile, or GCS busy: retried next round
                log.warning("could not remove placement group %s: %s", pg.id.hex(), e)
        self.reaped += n
        return n

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.reap_once()
            except Exception as e:  # noqa: BLE001 - keep the sweep going; try again next round
                log.warning("placement group reaper: %s", e)

    def __enter__(self) -> "OrphanPlacementGroupReaper":
        self._thread = threading.Thread(target=self._loop, daemon=True, name="pg-reaper")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


# ----------------------------------------------------------------------------- the driver


@dataclass
class SweepOutcome:
    out_dir: Path
    rows: list[dict]
    best: dict | None
    wall_s: float
    resumed: bool = False
    files: dict[str, str] = field(default_factory=dict)
    planned: int = 0  # trials the sweep asks for (count_trials)
    finished: int = 0  # trials that ended (done, stopped by the scheduler, or failed)

    @property
    def complete(self) -> bool:
        """Every planned trial ended. Not so after Ctrl-C / SIGINT: Ray Tune saves the experiment and
        `fit()` returns the trials so far, without an error; a re-run with resume goes on from there."""
        return self.finished >= self.planned


def default_out() -> Path:
    return Path("runs") / "tune_ttds" / time.strftime("%Y%m%d-%H%M%S")


def auto_concurrency(spec: SweepSpec) -> int:
    """Concurrent trials that fit the cluster, keeping one CPU free for Ray Data read tasks and
    evaluation feeders (they ask for a whole CPU; with none free a trial's stream never starts)."""
    import ray

    res = ray.cluster_resources()
    train = spec.base["train"]
    per_trial = spec.tune.trial_cpus + train["num_workers"] * train["cpus_per_worker"]
    n = max(1, int((res.get("CPU", 1.0) - 1.0 + 1e-9) // per_trial))
    if train["use_gpu"]:
        n = min(n, max(1, int(res.get("GPU", 0)) // max(1, train["num_workers"])))
    return n


def make_searcher(t: TuneSettings, concurrency: int = 0):
    """The search algorithm; optuna / hyperopt only when installed (not a ttds dependency).

    Tune ignores `TuneConfig.max_concurrent_trials` when `search_alg` is a BasicVariantGenerator
    (it only wraps `Searcher`s in a ConcurrencyLimiter), so the random searcher takes the limit
    itself; optuna / hyperopt get it from the TuneConfig.
    """
    import importlib.util

    if t.search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=t.seed, max_concurrent=concurrency)
    package = {"optuna": "optuna", "hyperopt": "hyperopt"}[t.search]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"--search {t.search} needs the '{package}' package (pip install {package}); or use --search random")
    if t.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=t.seed)
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(random_state_seed=t.seed)


def make_scheduler(spec: SweepSpec):
    if spec.tune.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # max_t above the epoch count: reaching the last epoch must not itself stop a trial, or what
    # it writes after the last report (its model, metrics.json) would be cut off
    return ASHAScheduler(time_attr="training_iteration", max_t=spec.max_epochs() + 1, grace_period=spec.tune.grace_period,
                         reduction_factor=spec.tune.reduction_factor)


def _trial_dirname(trial) -> str:
    return trial.trial_id  # the same id names trials/<trial_id>/


def make_trainable(spec: SweepSpec, out: Path, trial_fn: Callable[[dict, dict, str], None] | None = None):
    from ray import tune

    if trial_fn is None and not spec.is_ttds:
        raise ConfigError(f"a {spec.target} sweep needs its trial function (ttds.baselines.runner.tune_trial): "
                          "run it through jobs/benchmark.py --tune-trials")
    fn = tune.with_parameters(run_trial, trial_fn=trial_fn or ttds_trial, spec_data=spec.to_yaml_dict(),
                              trials_root=str((out / "trials").resolve()))
    return tune.with_resources(fn, {"cpu": spec.tune.trial_cpus})


def run_sweep(spec: SweepSpec, resume: bool = False, trial_fn: Callable[[dict, dict, str], None] | None = None) -> SweepOutcome:
    """Run (or resume) the sweep and write the trial table, best config, plot and best model.
    `trial_fn` trains one trial (default `ttds_trial`; a baseline sweep is handed its own)."""
    from ray import tune

    t0 = time.time()
    out = Path(spec.tune.output_dir) if spec.tune.output_dir else default_out()
    out = out.resolve()
    exp_dir = out / "tune"
    resuming = resume and exp_dir.exists() and tune.Tuner.can_restore(str(exp_dir))
    if resuming:
        # the sweep as first started: the trainable and space must match the experiment's
        spec = spec_from_dict(yaml.safe_load((out / "sweep.yaml").read_text()))
        spec.tune.output_dir = str(out)
    else:
        if resume:
            log.warning("--resume: no Tune experiment in %s; starting a new sweep there", exp_dir)
        # one corpus for every trial, prepared once here (trials run in other working folders)
        corpus = open_or_prepare(spec.base["data"]["corpus"], spec.base["data"]["seed"])
        spec.base["data"]["corpus"] = str(corpus.root.resolve())
        spec.tune.output_dir = str(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.yaml").write_text(yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False))
    init_ray(num_cpus=spec.tune.ray_cpus or None)
    trainable = make_trainable(spec, out, trial_fn)
    if resuming:
        log.info("resuming the sweep in %s (errored trials are retried)", exp_dir)
        tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_errored=True)
    else:
        concurrency = spec.tune.max_concurrent or auto_concurrency(spec)
        log.info("sweep of %d trial(s), %d at a time, into %s", count_trials(spec), concurrency, out)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(spec),
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="max", search_alg=make_searcher(spec.tune, concurrency), scheduler=make_scheduler(spec),
                num_samples=spec.tune.num_samples, max_concurrent_trials=None if spec.tune.search == "random" else concurrency,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(out),
                # a failed trial is recorded (table: status + error) and the sweep goes on
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                verbose=1,
            ),
        )
    with OrphanPlacementGroupReaper() as reaper:
        grid = tuner.fit()
    if reaper.reaped:
        log.info("removed %d placement group(s) left by stopped trials", reaper.reaped)
    outcome = summarize(spec, out, grid, time.time() - t0)
    outcome.resumed = resuming
    if not outcome.complete:
        log.warning("the sweep stopped after %d of %d trials (interrupted): resume it to finish", outcome.finished, outcome.planned)
    return outcome


# ----------------------------------------------------------------------------- reports


def read_history(trial_dir: Path) -> list[dict]:
    path = trial_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def trial_row(spec: SweepSpec, trial_id: str, params: dict, error: BaseException | str | None, trial_dir: Path) -> dict:
    hist = read_history(trial_dir)
    scores = [h[METRIC] for h in hist if METRIC in h]
    best_i = max(range(len(scores)), key=scores.__getitem__) if scores else None
    metrics = json.loads((trial_dir / "metrics.json").read_text()) if (trial_dir / "metrics.json").exists() else None
    planned = spec.epochs(params)
    err = ""
    if error is not None:
        err_file = trial_dir / "error.txt"
        err = err_file.read_text().split("\n", 1)[0] if err_file.exists() else error_summary(str(error))
        status = STATUS_ERROR
    elif metrics is not None:
        status = STATUS_DONE
    elif hist:
        status = STATUS_STOPPED
    else:
        status = STATUS_NOT_RUN
    return {
        "trial_id": trial_id,
        **{k: params.get(k) for k in spec.space},
        f"best_{METRIC}": scores[best_i] if best_i is not None else None,
        "best_epoch": hist[best_i]["epoch"] if best_i is not None else None,
        "epochs_run": len(hist),
        "epochs_planned": planned,
        "status": status,
        "error": err,
        "dir": str(trial_dir),
    }


def pick_best(rows: list[dict]) -> dict | None:
    key = f"best_{METRIC}"
    ok = [r for r in rows if r["status"] != STATUS_ERROR and r[key] is not None]
    return max(ok, key=lambda r: r[key]) if ok else None


def summarize(spec: SweepSpec, out: Path, grid, wall_s: float) -> SweepOutcome:
    planned, finished = count_trials(spec), grid.num_terminated + grid.num_errors  # Ray Tune's own count of ended trials
    rows = []
    for result in grid:
        trial_id = Path(result.path).name
        params = {k: v for k, v in (result.config or {}).items() if k in spec.space}
        rows.append(trial_row(spec, trial_id, params, result.error, out / "trials" / trial_id))
    rows.sort(key=lambda r: r["trial_id"])
    best = pick_best(rows)
    files = write_tables(spec, out, rows)
    files["plot"] = str(plot_params(spec, rows, out / "ndcg_vs_params.png"))
    if best is not None:
        files.update(keep_best(spec, out, best))
    summary = {
        "best_trial": best["trial_id"] if best else None,
        f"best_{METRIC}": best[f"best_{METRIC}"] if best else None,
        "best_params": {k: best[k] for k in spec.space} if best else None,
        "trials": len(rows),
        "by_status": {s: sum(r["status"] == s for r in rows) for s in (STATUS_DONE, STATUS_STOPPED, STATUS_ERROR, STATUS_NOT_RUN)},
        "wall_s": round(wall_s, 1),
        "planned": planned, "finished": finished,
        "settings": spec.to_yaml_dict()["tune"],
        "space": {k: s.describe() for k, s in spec.space.items()},
        "files": files,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return SweepOutcome(out, rows, best, wall_s, files=files, planned=planned, finished=finished)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def write_tables(spec: SweepSpec, out: Path, rows: list[dict]) -> dict[str, str]:
    cols = ["trial_id", *spec.space, f"best_{METRIC}", "best_epoch", "epochs_run", "epochs_planned", "status", "error"]
    with open(out / "trials.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols + ["dir"])
        w.writeheader()
        w.writerows(rows)
    best = pick_best(rows)
    lines = [
        f"# {'TTDS' if spec.is_ttds else spec.target} sweep: {len(rows)} trial(s), best {METRIC} = {_cell(best[f'best_{METRIC}']) if best else 'n/a'}"
        + (f" (trial {best['trial_id']})" if best else ""),
        "",
        "Trials stop at validation: none read the test split (only the chosen configuration is tested, later).",
        "",
        f"search: {spec.tune.search}, scheduler: {spec.tune.scheduler}, space: "
        + "; ".join(f"`{k}` {s.describe()}" for k, s in spec.space.items()),
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = [_cell(r[c]).replace("|", "\\|").replace("\n", " ") for c in cols]
        if best is not None and r is best:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    (out / "trials.md").write_text("\n".join(lines) + "\n")
    return {"csv": str(out / "trials.csv"), "markdown": str(out / "trials.md")}


def keep_best(spec: SweepSpec, out: Path, best: dict) -> dict[str, str]:
    """best.yaml (the full config, sweep-only knobs left out) and a copy of the best model."""
    params = {k: best[k] for k in spec.space}
    if not spec.is_ttds:  # the baseline's config section (the benchmark freezes it as a recipe)
        (out / "best.yaml").write_text(yaml.safe_dump(to_dict(spec.final_config(params)), sort_keys=False))
        return {"best_yaml": str(out / "best.yaml")}
    save_config(spec.final_config(params), out / "best.yaml")
    files = {"best_yaml": str(out / "best.yaml")}
    src = Path(best["dir"]) / "model"
    if src.exists():
        dst = out / "best_model"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        files["best_model"] = str(dst)
    return files


def plot_params(spec: SweepSpec, rows: list[dict], path: Path) -> Path:
    """One panel per swept parameter: each trial's best valid NDCG@10 at its value.

    choice/grid values are evenly spaced categories (codebook sizes 64/128/256 read better that
    way than on a linear axis); ranges use a numeric axis, logarithmic for log-uniform ones.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    keys = list(spec.space)
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(6.0, 4.2 * ncols), 3.4 * nrows + 0.6), squeeze=False)
    metric = f"best_{METRIC}"
    marks = {STATUS_DONE: ("o", "tab:blue"), STATUS_STOPPED: ("v", "tab:orange")}
    failed = sum(r["status"] == STATUS_ERROR for r in rows)
    for ax, key in zip(axes.flat, keys):
        s = spec.space[key]
        categorical = s.kind in ("choice", "grid")
        cats = [str(v) for v in s.values] if categorical else []
        for status, (m, color) in marks.items():
            pts = [(r[key], r[metric]) for r in rows if r["status"] == status and r[metric] is not None and r[key] is not None]
            if pts:
                xs = [cats.index(str(x)) if categorical and str(x) in cats else x for x, _ in pts]
                ax.scatter(xs, [y for _, y in pts], marker=m, color=color, label=status, alpha=0.8)
        if categorical:
            ax.set_xticks(range(len(cats)), cats)
            ax.set_xlim(-0.5, len(cats) - 0.5)
        else:
            if s.log_scale:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            pad = (s.high / s.low) ** 0.05 if s.log_scale else 0.05 * (s.high - s.low)
            ax.set_xlim(s.low / pad, s.high * pad) if s.log_scale else ax.set_xlim(s.low - pad, s.high + pad)
        ax.set_xlabel(key)
        ax.set_ylabel(METRIC)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if axes.flat[0].get_legend_handles_labels()[0]:
        axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"best {METRIC} per trial: {len(rows)} trials" + (f", {failed} failed (not shown)" if failed else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
