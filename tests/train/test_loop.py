"""The one epoch loop (ttds.train.loop) in-process: selection, patience, the weight average, the budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ttds.train.loop import LoopConfig, LoopState, Trainer, fit, over_time_budget


class Scripted(Trainer):
    """A one-parameter model whose validation score is scripted per epoch; each step adds 1 to it."""

    def __init__(self, scores: list[float]):
        self.scores, self.best_seen, self.epochs_trained = scores, [], []

    def start(self, resume: Path | None, state: LoopState) -> None:
        self.model = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.model.weight.fill_(0.0)

    def train_epoch(self, epoch: int) -> dict:
        for _ in range(4):  # four "optimiser steps"
            with torch.no_grad():
                self.model.weight.add_(1.0)
            if self.average is not None:
                self.average.update()
        self.epochs_trained.append(epoch)
        return {"loss": 1.0 / (epoch + 1)}

    def validate(self) -> dict:
        return {"valid_NDCG@10": self.scores[len(self.epochs_trained) - 1], "weight": float(self.model.weight.detach())}

    def save_best(self, metrics: dict) -> None:
        self.best_seen.append((metrics["epoch"], float(self.model.weight.detach())))

    def save(self, directory: Path, metrics: dict) -> None:
        raise AssertionError("in-process runs save no checkpoints")


def test_best_and_patience_with_one_naming(capsys):
    t = Scripted([0.1, 0.3, 0.2, 0.25, 0.29, 0.5])
    state = fit(t, LoopConfig(epochs=6, seed=0, patience=3, metric="valid_NDCG@10"), None)
    assert t.epochs_trained == [0, 1, 2, 3, 4]  # three epochs without beating .3: stopped before epoch 5
    assert (state.best_epoch, state.best_score, state.bad_epochs, state.epoch) == (1, 0.3, 3, 4)
    assert [e for e, _ in t.best_seen] == [0, 1]
    last = state.history[-1]
    assert last["best_valid_NDCG@10"] == 0.3 and last["best_epoch"] == 1 and last["bad_epochs"] == 3
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("epoch 1/6") and "best 0.3000 at epoch 2" in lines[-1]


def test_the_average_is_validated_and_kept_the_live_weights_train_on():
    t = Scripted([0.1, 0.2])
    state = fit(t, LoopConfig(epochs=2, seed=0, metric="valid_NDCG@10", ema_decay=0.5, validate_live=True), None)
    live_after = float(t.model.weight.detach())
    assert live_after == 8.0  # training stepped the live weights; the swap put them back bit for bit
    validated = [h["weight"] for h in state.history]
    assert all(v < 4.0 * (i + 1) for i, v in enumerate(validated))  # what was validated lags the live weights: the average
    assert t.best_seen[-1][1] == validated[-1]  # and the average is what save_best kept
    assert all("valid_live_NDCG@10" in h for h in state.history)


def test_no_metric_keeps_every_epoch_and_no_selection_figures():
    t = Scripted([0.0] * 3)
    state = fit(t, LoopConfig(epochs=3, seed=None), None)
    assert t.epochs_trained == [0, 1, 2] and t.best_seen == [] and "best_epoch" not in state.history[-1]


def test_time_budget_stops_before_an_epoch_that_would_overrun():
    assert not over_time_budget(0.0, 1e6, 1)  # no budget
    assert over_time_budget(100.0, 60.0, 1)  # 60 s + one more 60 s epoch > 100
    assert not over_time_budget(100.0, 60.0, 3)  # 60 s + a 20 s epoch fits


def test_state_of_earlier_ttds_checkpoints_reads_with_the_new_names(tmp_path):
    (tmp_path / "train_state.json").write_text('{"epoch": 2, "best": 0.25, "stale": 1}')
    s = LoopState.read(tmp_path)
    assert (s.epoch, s.best_score, s.bad_epochs) == (2, 0.25, 1)


@pytest.mark.parametrize("seed, expected", [(None, 123), (3, 3)])
def test_seed_none_leaves_the_global_generator_alone(seed, expected):
    torch.manual_seed(123)
    fit(Scripted([0.0]), LoopConfig(epochs=1, seed=seed), None)
    assert torch.initial_seed() == expected


class Clocked(Scripted):
    """Each epoch takes 10 s on the loop's clock (`now`, patched in), so budgets are exact."""

    def __init__(self, scores: list[float], now: list[float]):
        super().__init__(scores)
        self.now = now

    def train_epoch(self, epoch: int) -> dict:
        self.now[0] += 10.0
        return super().train_epoch(epoch)


def test_the_time_budget_counts_the_loop_time_of_the_runs_before_a_resume(tmp_path, monkeypatch):
    """A resumed run gets what is left of its budget, not a fresh one: a benchmark unit that was
    stopped and resumed trains no longer than one that ran through."""
    import ray.train

    import ttds.train.loop as loop_mod

    now = [0.0]
    monkeypatch.setattr(loop_mod.time, "time", lambda: now[0])
    first = fit(Clocked([0.1] * 10, now), LoopConfig(epochs=10, seed=0, time_budget_s=35.0), None)
    assert first.epoch == 2 and first.loop_s == 30.0  # 30 s + another 10 s epoch > 35
    first.write(tmp_path)

    # the same run resumed in a Ray Train worker with a larger budget: 55 s in all, 30 already spent
    reports = []
    monkeypatch.setattr(loop_mod, "rank_and_world", lambda place: (0, 1))
    monkeypatch.setattr(loop_mod, "set_loopback_env", lambda: None)
    monkeypatch.setattr(loop_mod, "starting_checkpoint", lambda place: ray.train.Checkpoint.from_directory(str(tmp_path)))
    monkeypatch.setattr(loop_mod, "_checkpoint_and_report", lambda trainer, loop, state, metrics, rank: reports.append(state.loop_s))
    t = Clocked([0.1] * 10, now)
    resumed = fit(t, LoopConfig(epochs=10, seed=0, time_budget_s=55.0), object())
    assert t.epochs_trained == [3, 4]  # then 50 s + another 10 s epoch > 55
    assert (resumed.resumed_from_epoch, resumed.epoch, resumed.loop_s) == (2, 4, 50.0) and reports == [40.0, 50.0]


def test_a_checkpoint_from_before_loop_s_counts_its_epochs_times(tmp_path):
    (tmp_path / "train_state.json").write_text('{"epoch": 1, "history": [{"epoch": 0, "epoch_s": 12.5}, {"epoch": 1, "epoch_s": 7.5}]}')
    assert LoopState.read(tmp_path).loop_s == 20.0
