"""The quiet job console (ttds.console): bars, epoch lines and a final table on the terminal,
Ray's own output in run.log of the run folder, `--verbose` for Ray's output on the console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ttds import console
from ttds.console import LOG_FILE, job_console, stage
from ttds.train.loop import report_line
from ttds.train.progress import ReportsToFile, console_reports

ROOT = Path(__file__).resolve().parents[2]


def _report(epoch: int) -> dict:
    return {"epoch": epoch, "loss": 1.5 - epoch, "valid_NDCG@10": 0.1 + epoch / 10, "best_valid_NDCG@10": 0.1 + epoch / 10,
            "best_epoch": epoch, "bad_epochs": 0, "epoch_s": 2.0, "per_template": [1, 2]}


def test_quiet_console_sends_fds_to_the_log_and_lines_to_the_terminal(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("RAY_DATA_DISABLE_PROGRESS_BARS", raising=False)
    with job_console(tmp_path) as con:
        assert console.current() is con and os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] == "1"
        os.write(1, b"driver fd1\n")  # sys.stdout/err write there in a job (pytest swaps the objects, not the descriptors)
        os.write(2, b"driver fd2\n")
        # a child process writing to the inherited descriptors, as Ray's processes and C++ core do
        subprocess.run([sys.executable, "-c", "import os; os.write(1, b'child fd1\\n'); os.write(2, b'child fd2\\n')"], check=True)
        with stage("epochs", total=2, unit="epoch", run="ray_train", describe=lambda m: report_line(m, 2)):
            with console_reports("ray_train") as callbacks:
                assert len(callbacks) == 1 and isinstance(callbacks[0], ReportsToFile)
                for e in range(2):  # what the Ray Train controller calls after each report
                    callbacks[0].after_report(None, [_report(e), _report(e)], None)
            with console_reports("lightgcn") as other:  # another run in the stage: a note, no line
                other[0].after_report(None, [_report(0)], None)
        con.write("the final table")
    assert console.current() is None
    out, err = capfd.readouterr()
    log = (tmp_path / LOG_FILE).read_text()
    for text in ("driver fd1", "driver fd2", "child fd1", "child fd2"):
        assert text in log and text not in out + err
    lines = out.splitlines()
    assert lines[0].startswith("epoch 1/2  loss 1.5000  valid_NDCG@10 0.1000 (best 0.1000 at epoch 1)")
    assert lines[1].startswith("epoch 2/2  loss 0.5000  valid_NDCG@10 0.2000 (best 0.2000 at epoch 2)")
    assert lines[2].startswith("epochs: 2/2 epoch in ") and lines[3] == "the final table" and len(lines) == 4
    os.write(1, b"after\n")  # the descriptors are back
    assert capfd.readouterr().out == "after\n"


def test_verbose_console_redirects_nothing(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("RAY_DATA_DISABLE_PROGRESS_BARS", raising=False)
    with job_console(tmp_path, verbose=True) as con:
        assert not con.bars and not con.epoch_lines and con.log_path is None
        assert "RAY_DATA_DISABLE_PROGRESS_BARS" not in os.environ  # Ray Data's bars stay on
        subprocess.run([sys.executable, "-c", "import os; os.write(1, b'child fd1\\n')"], check=True)
        with stage("data"):
            pass
    out, _ = capfd.readouterr()
    assert "child fd1" in out and out.splitlines()[-1].startswith("data: done in ")
    assert not (tmp_path / LOG_FILE).exists()


def test_no_console_outside_a_job():
    assert console.current() is None
    with console_reports("ray_train") as callbacks, stage("epochs", total=3) as bar:
        bar.update()
    assert callbacks == []


def test_train_ttds_accepts_verbose():
    r = subprocess.run([sys.executable, str(ROOT / "jobs" / "train_ttds.py"), "--verbose", "--print-config"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "optim:" in r.stdout
    h = subprocess.run([sys.executable, str(ROOT / "jobs" / "benchmark.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert "--verbose" in h.stdout


# what a whole training job prints with the quiet console (under 100 lines, stage lines, the
# final table, Ray's output in run.log) is checked on the job's driver output in
# tests/jobs/test_ray_job_submit.py: one tiny training run for both
