"""Launch a Ray Train `TorchTrainer` the same way for every job.

Workers get fractional CPUs so Ray Data's read tasks still find a CPU on a 2-core machine
(with whole CPUs the stream never starts: measured), failures are retried from the last
checkpoint, and a re-run with the same run folder resumes from the newest checkpoint.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ttds.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlace:
    """Where a Ray Train run lives, as the driver found it (handed to every worker). Ray Train v2
    deprecates `resume_from_checkpoint`; passing the path to the workers is the documented replacement."""

    run_dir: str = ""  # the local run folder ("" with remote storage: no shared folder to write to)
    resume_from: str = ""  # the newest checkpoint of an earlier run in that folder ("" = none)


def starting_checkpoint(place: RunPlace):
    """What a worker resumes from: Ray's own (after a worker failure), else the newest
    checkpoint of an earlier run in the same folder (the driver found it), else None."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None and place.resume_from:
        ckpt = ray.train.Checkpoint.from_directory(place.resume_from)
    record_worker_start(place, ckpt)
    return ckpt


def record_worker_start(place: RunPlace, ckpt) -> None:
    """Leave `worker_pids/<rank>.pid` and a line in `worker_starts.jsonl` in the run folder.

    Every worker calls this once as it starts (through `starting_checkpoint`), so an operator
    can find the process of a rank and see, after Ray restarted a failed worker group, which
    checkpoint the new workers resumed from (tests/train/test_worker_kill_resume.py kills one).
    Local runs only: with remote storage there is no shared folder to write to.
    """
    import json
    import os
    import time

    import ray.train

    if not place.run_dir:
        return
    rank = ray.train.get_context().get_world_rank()
    run_dir = Path(place.run_dir)
    (run_dir / "worker_pids").mkdir(parents=True, exist_ok=True)
    (run_dir / "worker_pids" / f"{rank}.pid").write_text(str(os.getpid()))
    line = {"rank": rank, "pid": os.getpid(), "checkpoint": ckpt.path if ckpt is not None else None, "time": time.time()}
    with open(run_dir / "worker_starts.jsonl", "a") as fh:  # one short line per worker: appends do not interleave
        fh.write(json.dumps(line) + "\n")


def latest_checkpoint(run_dir: Path):
    """The newest Ray Train checkpoint folder under `run_dir`, or None."""
    from ray.train import Checkpoint

    cands = [p for p in run_dir.glob("checkpoint_*") if p.is_dir() and any(p.iterdir())]
    if not cands:
        return None
    newest = max(cands, key=lambda p: p.stat().st_mtime)
    return Checkpoint.from_directory(str(newest))


def _call_worker(loop_config: dict) -> None:
    """The Ray Train entry: `worker_fn(config, place)` with the typed config the driver passed."""
    loop_config["worker_fn"](loop_config["config"], loop_config["place"])


def run_trainer(
    worker_fn: Callable[[Any, RunPlace], None],
    config: Any,
    train: TrainConfig,
    storage_path: str | Path,
    name: str,
    datasets: dict | None = None,
    split_datasets: list[str] | None = None,
    score_attribute: str | None = None,
    callbacks: Sequence[Any] = (),
):
    """Run `worker_fn(config, place)` on `train.num_workers` Ray Train workers; returns the Result.

    `config` is the job's typed config (a dataclass), handed to every worker as it is.
    `callbacks` are Ray Train `UserCallback`s run on the controller after each report, e.g.
    `ray.tune.integration.ray_train.TuneReportCallback()` so a Tune trial sees every epoch.
    """
    remote = "://" in str(storage_path)  # s3://, gs://: shared storage for multi-node runs
    storage = str(storage_path) if remote else str(Path(storage_path).resolve())
    resume = latest_checkpoint(Path(storage) / name) if (train.resume and not remote) else None
    if resume is not None:
        log.info("resuming from %s", resume.path)
    resources = {"CPU": train.cpus_per_worker}
    if train.use_gpu:
        resources["GPU"] = 1
    place = RunPlace(run_dir="" if remote else str(Path(storage) / name), resume_from=resume.path if resume is not None else "")
    from ttds.train.progress import console_reports

    with console_reports(name) as to_console:  # a job console's open stage follows the epochs
        return _fit(worker_fn, config, train, storage, name, datasets, split_datasets, score_attribute, list(callbacks) + to_console, place, resources)


@functools.cache  # built on first use: importing ray.train.torch costs seconds
def _trainer_class() -> type:
    """Ray Train's `TorchTrainer` without its `PlacementGroupCleanerCallback`.

    Why: in Ray 2.60 every run starts a detached `PlacementGroupCleaner` actor (one more process)
    whose thread asks the State API whether the controller is alive; at shutdown the controller
    waits up to 12 s for that thread and logs "Failed to stop PlacementGroupCleaner gracefully"
    (measured here, with and without the dashboard: an empty 2-worker run took 22 s to fit, 11 s
    without the cleaner). Every job, Tune trial, benchmark unit and test paid it. What the cleaner
    adds is removing a placement group after a controller crash; the controller removes it on
    every normal or failed shutdown, and Ray removes an owner's groups when its job ends.
    (Ray is pinned; tests/train/test_launch.py fails if the callback or the hook change.)"""
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class Trainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks() if not isinstance(c, PlacementGroupCleanerCallback)]

    return Trainer


def _fit(worker_fn, config, train: TrainConfig, storage: str, name: str, datasets, split_datasets, score_attribute, callbacks: list, place: RunPlace,
         resources: dict):
    """Build and fit the TorchTrainer (`run_trainer` decided where it lives and what it resumes)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig

    trainer = _trainer_class()(
        _call_worker,
        train_loop_config={"worker_fn": worker_fn, "config": config, "place": place},
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=train.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=train.keep_checkpoints,
                checkpoint_score_attribute=score_attribute,
                checkpoint_score_order="max",
            ),
            callbacks=callbacks,
        ),
        datasets=datasets or {},
        dataset_config=DataConfig(datasets_to_split=split_datasets if split_datasets is not None else "all"),
    )
    return trainer.fit()
