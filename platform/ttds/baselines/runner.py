"""Train a baseline and score it on the test split the way TTDS is scored.

One entry point for every baseline so their figures are comparable: full ranking over all
items, top 10, history items NOT excluded by default (the leave-one-out Amazon sets have no
repeats and TTDS does not exclude either; `exclude_seen=True` is there for other corpora),
metrics from `ttds.eval.metrics`, the BEST validation epoch's weights, and the same cost
figures (wall time, peak RSS, training examples per second).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ttds import checkpoint as ckpt_io
from ttds.baselines.popularity import evaluate_popularity, popularity_ranking, report
from ttds.baselines.sasrec import SequentialRecommender
from ttds.baselines.seqmodel_worker import CKPT_NAME, MODELS, SeqWork, build_model, load_best, rank_users, seq_worker
from ttds.config import TrainConfig, from_dict, to_dict
from ttds.data.corpus import Corpus
from ttds.data.examples import next_item_dataset
from ttds.eval.metrics import ranking_metrics
from ttds.eval.per_user import PER_USER_FILE, per_user_table, write_per_user
from ttds.runtime import init_ray, select_device
from ttds.train.launch import latest_checkpoint, run_trainer
from ttds.train.loop import LoopState
from ttds.train.lr_schedule import schedule_problem
from ttds.train.weight_average import decay_for_epochs, span_problem

__all__ = ["BASELINES", "HISTORY_FILE", "load_trained", "score_seq_test", "score_users", "train_and_evaluate", "train_on_validation", "tune_trial"]

BASELINES = ("popularity", *MODELS)
SEQ_MODEL_NAMES = tuple(MODELS)
RUN_NAME = "ray_train"
HISTORY_FILE = "history.jsonl"  # one line per epoch (valid NDCG@10, epoch_s): Tune trials and quality-per-compute charts


def score_users(model: SequentialRecommender, histories: Sequence[np.ndarray], k: int = 10, exclude_seen: bool = False, batch_size: int = 1024) -> np.ndarray:
    """Top-k item ids [n, k] for each history, batched, scoring every item."""
    return rank_users(model, list(histories), k, exclude_seen, batch_size)


def score_seq_test(model: SequentialRecommender, corpus: Corpus, per_user_path: Path, exclude_seen: bool) -> dict[str, float]:
    """The test split's figures of a trained SASRec/GRU4Rec (every item scored; on the GPU when there
    is one), each user's figures to `per_user_path`: the training job's test and the benchmark's
    re-scoring (ttds.bench.harness, Harness._rescore) are this one function."""
    model.to(select_device().device)
    users, histories, targets = corpus.eval_arrays("test")
    ranked = score_users(model, histories, 10, exclude_seen)
    write_per_user(per_user_path, per_user_table(users, targets, [ranked]))
    return report(ranking_metrics(ranked, targets, ks=(1, 5, 10)))


def load_trained(out_dir: str | Path) -> SequentialRecommender:
    """The best-validation weights a finished `train_and_evaluate` saved in `out_dir` (model.safetensors + model.json)."""
    tensors, state = ckpt_io.load_state(out_dir, "model")
    model = build_model(state["model"], state["model_config"], int(state["n_items"]))
    model.load_state_dict(tensors)
    return model.eval()


def _run_name(out: Path, resume: bool) -> str:
    """RUN_NAME to continue the run in `out`; a fresh numbered name to start over beside it."""
    if resume or not (out / RUN_NAME).exists():
        return RUN_NAME
    n = 1
    while (out / f"{RUN_NAME}_{n}").exists():
        n += 1
    return f"{RUN_NAME}_{n}"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _popularity(corpus: Corpus, exclude_seen: bool, t0: float, per_user_path: Path) -> dict[str, Any]:
    users, histories, targets = corpus.eval_arrays("test")
    ranked = popularity_ranking(corpus, 10, exclude_seen, histories)  # one ranking: the figures and the per-user file
    metrics = report(ranking_metrics(ranked, targets, ks=(1, 5, 10)))
    write_per_user(per_user_path, per_user_table(users, targets, [ranked]))
    valid = evaluate_popularity(corpus, "valid", exclude_seen)
    wall = time.time() - t0
    n_train = int(corpus.manifest["counts"].get("train_interactions", 0))
    return {
        **metrics,
        "valid_NDCG@10": valid["NDCG@10"],
        "wall_s": wall,
        "peak_rss_mb": _rss_mb(),
        "examples_per_s": n_train / max(wall, 1e-9),
        "config": {"exclude_seen": exclude_seen},
    }


def _train_neural(
    name: str, corpus: Corpus, out: Path, overrides: dict, train: TrainConfig, exclude_seen: bool, materialize: bool,
    callbacks: Sequence[Any] = (),
) -> tuple[SequentialRecommender, Any, LoopState]:
    """Train `name` on Ray Train; the best-validation weights, the config as trained and the loop's state.
    `callbacks` go to Ray Train (a Tune trial passes TuneReportCallback, so ASHA sees every epoch)."""
    cfg = from_dict(MODELS[name][1], overrides)
    problem = schedule_problem(cfg.lr_schedule, f"{name}: lr_schedule") or span_problem(cfg.ema_decay, cfg.ema_epochs, name)
    if problem:  # before any data is read or worker started
        raise ValueError(problem)
    train_ds = next_item_dataset(corpus.root, "train", max_history=cfg.max_len, layout="sequences")
    if materialize:
        # One row per user is small (Instruments: 24,772 rows); re-running the parquet read +
        # map every epoch cost 1.5-7 s per epoch on the shared 2-core box (measured), ~0 s
        # from the object store.
        train_ds = train_ds.materialize()
    if cfg.ema_epochs > 0:  # the span in epochs as the per-step decay the workers use (kept in model.json)
        cfg = dataclasses.replace(cfg, ema_decay=decay_for_epochs(cfg.ema_epochs, train_ds.count(), cfg.batch_size, train.num_workers))
        print(f"{name}: ema_epochs={cfg.ema_epochs:g} -> weight average decay {cfg.ema_decay:.6f}", flush=True)
    work = SeqWork(model=name, config=cfg, n_items=corpus.n_items, corpus_dir=str(corpus.root.resolve()), exclude_seen=exclude_seen,
                   history_path=str(out / HISTORY_FILE))
    run_name = _run_name(out, train.resume)
    # Ray Train v2 refuses `resume_from_checkpoint` and instead resumes by itself from the
    # snapshot in storage_path/name, so resuming = reusing the run name (see `_run_name`).
    result = run_trainer(
        seq_worker, work, dataclasses.replace(train, resume=False), out, run_name,
        datasets={"train": train_ds}, split_datasets=["train"], callbacks=callbacks,
    )
    if result.error:
        raise result.error
    # A resumed run that had already stopped early reports nothing new: use the newest on disk.
    ckpt = result.checkpoint or latest_checkpoint(out / run_name)
    if ckpt is None:
        raise RuntimeError(f"{name}: training produced no checkpoint under {out / run_name}")
    with ckpt.as_directory() as d:
        model, _ = load_best(d, CKPT_NAME)
        state = LoopState.read(d)
    ckpt_io.save_state(out, model.state_dict(), {"model": name, "model_config": to_dict(cfg), "n_items": corpus.n_items, "best_epoch": state.best_epoch}, "model")
    return model, cfg, state


def _run_folder(out_dir: str | Path, corpus_dir: str | Path) -> tuple[Path, Corpus]:
    """The run's folder (made, absolute) and its corpus: what every baseline run starts from."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out, Corpus.open(corpus_dir)


def train_on_validation(
    name: str, corpus_dir: str | Path, out_dir: str | Path, overrides: dict | None = None, train: TrainConfig | None = None,
    exclude_seen: bool = False, callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train baseline `name` and stop at validation: the test split is never read.

    What a tuning trial runs (`ttds.tune.sweep`): the sweep compares trials on validation NDCG@10
    only, and only the configuration it chooses is later tested (by the benchmark's seeds), so no
    trial can be picked, or even looked at, by its test figure. Writes `out_dir/metrics.json`
    (validation figures, epochs, config; no "test") and the best weights, as `train_and_evaluate`.
    """
    if name not in SEQ_MODEL_NAMES:
        raise ValueError(f"a trained baseline must be one of {SEQ_MODEL_NAMES}, not {name!r}")
    t0 = time.time()
    out, corpus = _run_folder(out_dir, corpus_dir)
    init_ray()
    _, cfg, state = _train_neural(name, corpus, out, dict(overrides or {}), train or TrainConfig(), exclude_seen, True, callbacks)
    res = {"name": name, "corpus": corpus.name, "valid_NDCG@10": float(state.best_score), "best_epoch": state.best_epoch,
           "epochs_run": state.epoch + 1, "wall_s": time.time() - t0, "config": {**to_dict(cfg), "exclude_seen": exclude_seen},
           "history": state.history}
    (out / "metrics.json").write_text(json.dumps(res, indent=2, default=float))
    return res


def tune_trial(params: dict, spec_data: dict, out_dir: str) -> None:
    """One trial of a baseline sweep (`ttds.tune.sweep.run_sweep(trial_fn=tune_trial)`): the
    sweep's fixed model config with the trial's sampled values, trained and selected on validation
    with every epoch reported to Tune (ASHA acts on it); the test split is not read.
    `spec_data` is the sweep as `SweepSpec.to_yaml_dict` writes it (target, base, sweep_only)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    base = {**spec_data["base"], **(spec_data.get("sweep_only") or {})}
    train_on_validation(spec_data["target"], base["data"]["corpus"], out_dir, {**base["model"], **params}, from_dict(TrainConfig, base["train"]),
                        exclude_seen=bool(base["eval"]["exclude_seen"]), callbacks=[TuneReportCallback()])


def train_and_evaluate(
    name: str,
    corpus_dir: str | Path,
    out_dir: str | Path,
    overrides: dict | None = None,
    train: TrainConfig | None = None,
    exclude_seen: bool = False,
    materialize: bool = True,
) -> dict[str, Any]:
    """Train baseline `name` (popularity | sasrec | gru4rec) and return its test figures.

    Neural models train with Ray Train (resuming from `out_dir` when a run is there) and are
    tested with their best-validation-epoch weights. The result is also written to
    `out_dir/metrics.json`; the best weights to `out_dir/model.safetensors` (+ model.json).
    `materialize=False` streams the training rows from parquet every epoch instead of holding
    them in the object store (for corpora too big for it).
    """
    if name not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, not {name!r}")
    t0 = time.time()
    out, corpus = _run_folder(out_dir, corpus_dir)
    if name == "popularity":
        res = _popularity(corpus, exclude_seen, t0, out / PER_USER_FILE)
    else:
        init_ray()
        model, cfg, state = _train_neural(name, corpus, out, dict(overrides or {}), train or TrainConfig(), exclude_seen, materialize)
        test = score_seq_test(model, corpus, out / PER_USER_FILE, exclude_seen)
        history = state.history
        rates = [h["examples_per_s"] for h in history]
        res = {
            **test,
            "valid_NDCG@10": float(state.best_score),
            "wall_s": time.time() - t0,
            "peak_rss_mb": max([_rss_mb()] + [h["peak_rss_mb"] for h in history]),
            "examples_per_s": float(np.mean(rates)) if rates else float("nan"),
            "config": {**to_dict(cfg), "exclude_seen": exclude_seen},
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch + 1,
            "resumed_from_epoch": state.resumed_from_epoch,
            "history": history,
        }
    res = {"name": name, "corpus": corpus.name, **res}
    (out / "metrics.json").write_text(json.dumps(res, indent=2, default=float))
    return res

