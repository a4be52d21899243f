"""Where a replica's model work runs: a few threads below the event loop's CPU priority.

Why: a replica's event loop does the cheap, latency-critical work (admission's fast 503s,
/healthz and /readyz, parsing, forming the next batch) while beam search and retrieval run off
the loop. When the host's cores are saturated, the loop waits in the kernel's run queue behind
those compute threads (and everything else on the box) and a 503 that takes microseconds to
decide reaches the client hundreds of ms late. Compute threads with a higher nice value (Linux
lets any thread lower its own priority) let the scheduler run the loop first whenever both are
runnable, while the compute still gets every core nobody else wants: throughput is unchanged on
an idle host. Threads that torch's intra-op pool starts from these threads inherit the value.

`COMPUTE_NICE` is added to the process's nice value (capped at 19); on a system without per-thread
priorities the threads simply run at the process's priority.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

__all__ = ["COMPUTE_NICE", "COMPUTE_THREADS", "off_loop", "thread_nice"]

COMPUTE_NICE = 10  # CFS weight 110 against the loop's 1024 when both wait for a core
COMPUTE_THREADS = 4  # one batch of each batched method at a time, plus item lookups and model loads

T = TypeVar("T")


def thread_nice() -> int:
    """The calling thread's nice value (Linux: each thread has its own)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, thread_nice() + COMPUTE_NICE))
    except (OSError, AttributeError) as e:  # not Linux or not allowed: run at the process's priority
        log.info("compute threads keep the process's priority: %s", e)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """Made on first use, so a forked or pickled module never carries threads along."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(COMPUTE_THREADS, thread_name_prefix="ttds-compute", initializer=_lower_priority)
        return _pool


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on a compute thread; the event loop stays free (and first in line for a core)."""
    return await asyncio.get_running_loop().run_in_executor(_executor(), functools.partial(fn, *args))
