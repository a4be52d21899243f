"""The job console: what a person running a job sees, apart from what Ray logs.

Why: a training job used to print ~1,800 lines, nearly all Ray internals (Ray Data progress bars
and execution plans, Ray Train controller/worker chatter, deprecation warnings, gcs errors).
A job (jobs/train_ttds.py, jobs/benchmark.py) opens `job_console(run_dir)` before Ray starts.
Quiet (the default): the process's file descriptors 1 and 2 go to `<run_dir>/run.log`, so
everything Ray prints follows them there (its C++ core, the log monitor that forwards every
worker's and actor's output to the driver, Ray Data, warnings, `logging`), and Ray Data's
progress bars are switched off (in the log they are noise). The console keeps a duplicate of
the terminal on which each stage draws one progress bar (`stage`), the training loop's epochs
one line each (from Ray Train reports: `ttds.train.progress`) and the job its final `table`.
`verbose=True` redirects nothing (Ray's output as before) and draws no bars: stage lines only.
Outside a job (tests, Tune trials, library use) there is no console and `stage` does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

__all__ = ["LOG_FILE", "Console", "current", "job_console", "say", "stage", "table"]

LOG_FILE = "run.log"  # Ray's and the job's own logs, in the run folder
QUIET_ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}  # read by Ray Data at import, in every Ray process (runtime.init_ray forwards it)

log = logging.getLogger(__name__)
_current: Console | None = None


class Bar:
    """One stage's progress: a tqdm bar on a terminal, else one line when the stage ends."""

    def __init__(self, console: Console | None, name: str, total: int | None, unit: str, run: str | None,
                 describe: Callable[[dict], str] | None):
        self.console, self.name, self.total, self.unit, self.run, self.describe = console, name, total, unit, run, describe
        self.n, self.t0, self.note = 0, time.time(), ""
        self._tqdm = None
        if console is not None and console.bars:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=name, unit=unit, file=console.stream, leave=True, ncols=console.columns(), mininterval=0.5,
                             bar_format=None if total else "{desc}: {elapsed}{postfix}")  # no total: the time it has taken

    def set(self, n: int, note: str | None = None) -> None:
        """Progress is `n` (absolute: a resumed run starts past 0)."""
        self.n = n
        if note is not None:
            self.note = note
        if self._tqdm is not None:
            with self.console.lock:
                self._tqdm.n = n
                if note is not None:
                    self._tqdm.set_postfix_str(note, refresh=False)
                self._tqdm.refresh()

    def update(self, k: int = 1) -> None:
        self.set(self.n + k)

    def report(self, run: str, metrics: dict[str, Any]) -> None:
        """A Ray Train report of run `run` (rank 0's scalars): advance by epoch, print its line."""
        if "epoch" not in metrics:
            return
        if self.run is not None and run != self.run:
            self.set(self.n, f"{run} epoch {int(metrics['epoch']) + 1}")
            return
        line = self.describe(metrics) if self.describe is not None else ""
        self.set(int(metrics["epoch"]) + 1, "" if self.console.epoch_lines else line)
        if line and self.console.epoch_lines:
            self.console.write(line)

    def refresh(self) -> None:
        if self._tqdm is not None:
            with self.console.lock:
                self._tqdm.refresh()

    def close(self, failed: bool = False) -> None:
        if self.console is None:
            return
        if self._tqdm is not None:
            with self.console.lock:
                if failed:
                    self._tqdm.set_postfix_str("failed", refresh=False)
                self._tqdm.close()
            return
        done = f"{self.n}/{self.total} {self.unit}" if self.total else (f"{self.n} {self.unit}" if self.n else "done")
        self.console.write(f"{self.name}: {'failed' if failed else done} in {time.time() - self.t0:.0f} s")


class Console:
    """The terminal of a job (`job_console` makes the one of a process)."""

    def __init__(self, stream: TextIO, log_path: Path | None, bars: bool, epoch_lines: bool, prefix: str = ""):
        self.stream, self.log_path, self.bars, self.epoch_lines, self.prefix = stream, log_path, bars, epoch_lines, prefix
        self.lock = threading.RLock()
        self.bar: Bar | None = None
        self._follow: list[tuple[Path, str, int]] = []  # report files of running Ray Train runs: (path, run name, bytes read)
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="ttds-console", daemon=True)
        self._ticker.start()

    def columns(self) -> int:
        """The terminal's width (100 where it reports none, e.g. a fresh pty)."""
        try:
            return min(os.get_terminal_size(self.stream.fileno()).columns, 120) or 100
        except (OSError, ValueError):
            return 100

    def write(self, line: str) -> None:
        with self.lock:
            if self.bar is not None and self.bar._tqdm is not None:
                self.bar._tqdm.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)

    def follow(self, path: Path, run: str) -> None:
        with self.lock:
            self._follow.append((Path(path), run, 0))

    def unfollow(self, path: Path) -> None:
        self._poll()  # the last reports
        with self.lock:
            self._follow = [f for f in self._follow if f[0] != Path(path)]

    def _poll(self) -> None:
        with self.lock:  # the ticker and `unfollow` both poll: one at a time, or a report shows twice
            for i, (path, run, pos) in enumerate(self._follow):
                try:
                    with open(path) as fh:
                        fh.seek(pos)
                        chunk = fh.read()
                except FileNotFoundError:
                    continue
                complete = chunk[: chunk.rfind("\n") + 1]  # a line the controller is still writing waits
                self._follow[i] = (path, run, pos + len(complete))
                for line in complete.splitlines():
                    if line.strip() and self.bar is not None:
                        self.bar.report(run, json.loads(line))

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._poll()
                if self.bar is not None:
                    self.bar.refresh()  # the elapsed time moves while a stage waits on Ray
            except Exception:
                log.exception("console refresh failed")

    def stop(self) -> None:
        self._stop.set()
        self._ticker.join(5)


def current() -> Console | None:
    """The console of this process's job, or None (tests, Tune trials, library use)."""
    return _current


@contextmanager
def stage(name: str, total: int | None = None, unit: str = "", run: str | None = None,
          describe: Callable[[dict], str] | None = None) -> Iterator[Bar]:
    """One stage of a job (data, tokenizer, epochs, ranking): one progress bar while it runs.

    Ray Train runs started inside it (`ttds.train.launch.run_trainer`) advance it by epoch; `run`
    keeps that to the run of this name (others only show in the note), `describe(metrics)` makes
    each report's console line. Without a job console it does nothing.
    """
    con = _current
    bar = Bar(con, (con.prefix + name) if con is not None else name, total, unit, run, describe)
    outer = con.bar if con is not None else None
    if con is not None:
        con.bar = bar
    failed = True
    try:
        yield bar
        failed = False
    finally:
        if con is not None:
            bar.close(failed)
            con.bar = outer


def say(line: str) -> None:
    """A line on the job's console (above the bar), or in the log without one."""
    if _current is not None:
        _current.write(line)
    else:
        log.info("%s", line)


@contextmanager
def scope(prefix: str) -> Iterator[None]:
    """Prefix the bars opened inside (the benchmark: `ttds · tokenizer`)."""
    con = _current
    if con is None:
        yield
        return
    before, con.prefix = con.prefix, f"{prefix} · "
    try:
        yield
    finally:
        con.prefix = before


def table(rows: dict[str, dict[str, float]], keys: list[str], first: str = "system") -> str:
    """A plain text table (name column, then `keys` with four decimals) for the console."""
    width = max([len(first)] + [len(n) for n in rows])
    cols = [max(len(k), 6) for k in keys]
    out = [f"{first:<{width}}  " + "  ".join(f"{k:>{c}}" for k, c in zip(keys, cols))]
    for name, r in rows.items():
        out.append(f"{name:<{width}}  " + "  ".join(f"{r[k]:>{c}.4f}" if isinstance(r.get(k), (int, float)) else f"{'-':>{c}}"
                                                   for k, c in zip(keys, cols)))
    return "\n".join(out)


def quiet_settings() -> None:
    """What quiet mode changes in this process before Ray starts (env read by Ray at import)."""
    os.environ.update(QUIET_ENV)
    if "ray.data" in sys.modules:  # imported already: the env var came too late for this process
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False


@contextmanager
def job_console(run_dir: str | Path, verbose: bool = False, epoch_lines: bool = True) -> Iterator[Console]:
    """The console of a job writing to `run_dir` (see the module docstring). Re-entrant: an inner
    call (a job run by another job) uses the outer console."""
    global _current
    if _current is not None:
        yield _current
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved: tuple[int, int] | None = None
    if verbose:
        con = Console(sys.stdout, None, bars=False, epoch_lines=False)  # the workers print their own epoch lines
    else:
        quiet_settings()
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        log_fd = os.open(run_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        stream = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        con = Console(stream, run_dir / LOG_FILE, bars=stream.isatty(), epoch_lines=epoch_lines)
    _current = con
    try:
        yield con
    finally:
        con.stop()
        _current = None
        if saved is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            con.stream.close()
