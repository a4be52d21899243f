"""Peak memory of a benchmarked system: psutil samples of this process and its Ray workers.

Why sampling and not `resource.getrusage`: RUSAGE_SELF is the driver's peak over its whole
life (so every later system inherits an earlier one's peak), and RUSAGE_CHILDREN only counts
children that have exited and been waited for, while Ray workers are grandchildren (raylet's)
that outlive the run. A local Ray started by this process (`ttds.runtime.init_ray`) runs GCS,
raylet and every worker as descendants of this process, so walking the process tree every
`interval_s` sees them all. What it cannot see: spikes shorter than the interval, and workers
on other nodes (with RAY_ADDRESS set only this process is sampled; the report says so).
RSS counts shared pages (the object store's mmap, shared libraries) in every process that
touched them, so the tree total over-counts; the per-process peak does not.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field

import psutil

__all__ = ["RssSampler", "RssWindow"]

MB = 1024.0 * 1024.0


def _title(p: psutil.Process) -> str:
    """What the process is: Ray rewrites argv[0] to 'ray::<Actor or task>'."""
    try:
        cmd = p.cmdline()
        if cmd and cmd[0].startswith("ray::"):
            return cmd[0].split(" ")[0][:80]
        if cmd:
            exe = os.path.basename(cmd[0])
            script = next((os.path.basename(c) for c in cmd[1:] if c.endswith(".py")), "")
            return f"{exe} {script}".strip()[:80]
        return p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"


def _uninformative(title: str) -> bool:
    """Titles a Ray worker shows before/between its real jobs."""
    return title in ("?", "ray::IDLE") or title.endswith(("setup_worker.py", "default_worker.py"))


_METHOD = re.compile(r"^(ray::.+?)\.[A-Za-z_]\w*$")


def _role(titles: list[str]) -> str:
    """One name for a process from the titles it showed: 'ray::RayTrainWorker', not each method
    it ran ('ray::RayTrainWorker.run_train_fn'); a Ray name wins over the launcher's."""
    names: list[str] = []
    for t in titles:
        t = _METHOD.sub(r"\1", t)
        if t not in names:
            names.append(t)
    ray_names = [t for t in names if t.startswith("ray::") and not _uninformative(t)]
    named = ray_names or [t for t in names if not _uninformative(t)] or names[-1:]
    return "/".join(named)


@dataclass
class RssWindow:
    """Peaks over one time window."""

    driver_mb: float = 0.0  # this (harness) process
    max_process_mb: float = 0.0  # the largest single process (driver or any Ray process)
    total_mb: float = 0.0  # the largest sum over the whole process tree at one instant
    by_process: dict[str, float] = field(default_factory=dict)  # "title [pid]" -> peak MB
    samples: int = 0

    def top(self, contains: str = "", n: int = 8) -> dict[str, float]:
        rows = sorted(((k, v) for k, v in self.by_process.items() if contains in k), key=lambda kv: -kv[1])
        return {k: round(v, 1) for k, v in rows[:n]}

    def to_dict(self, n: int = 8) -> dict:
        return {
            "driver_mb": round(self.driver_mb, 1),
            "max_process_mb": round(self.max_process_mb, 1),
            "tree_total_mb": round(self.total_mb, 1),
            "top_processes_mb": self.top(n=n),
            "samples": self.samples,
        }


class RssSampler:
    """Background thread sampling RSS of this process and all its descendants.

    Use as a context manager around the whole benchmark; ask `window(t0, t1)` for the peaks
    of any span afterwards (one system, or its test-evaluation phase).
    """

    method = (
        "psutil RSS of the harness process and every descendant (the local Ray's GCS, raylet and "
        "workers), sampled every {interval}s; max_process = the largest single process, "
        "tree_total = the largest instantaneous sum (over-counts shared pages)"
    )

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.me = psutil.Process(os.getpid())
        self._samples: list[tuple[float, list[tuple[int, float, str]]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.remote_cluster = bool(os.environ.get("RAY_ADDRESS"))

    def describe(self) -> str:
        text = self.method.format(interval=self.interval_s)
        if self.remote_cluster:
            text += "; RAY_ADDRESS is set: workers on the cluster are NOT sampled, only this process"
        return text

    def sample(self) -> None:
        rows: list[tuple[int, float, str]] = []
        try:
            procs = [self.me] + self.me.children(recursive=True)
        except psutil.Error:
            procs = [self.me]
        for p in procs:
            try:
                rss = p.memory_info().rss / MB
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            # read every time: a Ray worker process is reused (ray::IDLE, then an actor or task)
            rows.append((p.pid, rss, _title(p)))
        with self._lock:
            self._samples.append((time.time(), rows))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "RssSampler":
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()

    def window(self, t0: float, t1: float | None = None) -> RssWindow:
        """Peaks over samples taken in [t0, t1] (t1 None = up to now)."""
        t1 = time.time() if t1 is None else t1
        w = RssWindow()
        me = self.me.pid
        with self._lock:
            samples = [s for s in self._samples if t0 <= s[0] <= t1]
        peak: dict[int, float] = {}
        titles: dict[int, list[str]] = {}
        for _, rows in samples:
            w.samples += 1
            w.total_mb = max(w.total_mb, sum(r for _, r, _ in rows))
            for pid, rss, title in rows:
                w.max_process_mb = max(w.max_process_mb, rss)
                if pid == me:
                    w.driver_mb = max(w.driver_mb, rss)
                peak[pid] = max(peak.get(pid, 0.0), rss)
                seen = titles.setdefault(pid, [])
                if title not in seen:
                    seen.append(title)
        for pid, rss in peak.items():
            w.by_process[f"{_role(titles[pid])} [{pid}]"] = rss
        return w
