"""Ray Train reports → the job console on the driver (`ttds.console`).

Why a file: Ray Train v2 runs callbacks in its controller actor, not in the driver, so a callback
cannot print on the driver's terminal. The controller is placed on the driver's node (Ray pins it
there), so it appends rank 0's reported scalars to a file on that node that the console reads.
Worker stdout is not used: in a quiet job it goes to run.log with the rest of Ray's output.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from ttds import console


class ReportsToFile(UserCallback):
    """Appends rank 0's scalar metrics of every report to `path`, one JSON line each."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        row = {k: v for k, v in (metrics[0] if metrics else {}).items() if isinstance(v, (int, float, str, bool))}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, default=float) + "\n")


@contextmanager
def console_reports(run: str) -> Iterator[list]:
    """The callbacks that feed the job console's open stage with run `run`'s reports ([] without one)."""
    con = console.current()
    if con is None or con.bar is None:
        yield []
        return
    fd, path = tempfile.mkstemp(prefix=f"ttds-reports-{run}-", suffix=".jsonl")
    os.close(fd)
    con.follow(Path(path), run)
    try:
        yield [ReportsToFile(path)]
    finally:
        con.unfollow(Path(path))
        os.unlink(path)
