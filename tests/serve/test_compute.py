"""A replica's model work runs on compute threads below the event loop's CPU priority
(ttds.serve.compute), so admission and health answer first on a saturated host."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from ttds.serve.compute import COMPUTE_NICE, off_loop, thread_nice


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread priorities are a Linux feature")
def test_model_work_runs_below_the_event_loops_priority_and_returns_its_value():
    async def main():
        here = thread_nice()
        there, name = await off_loop(lambda: (thread_nice(), threading.current_thread().name))
        return here, there, name, thread_nice()

    here, there, name, after = asyncio.run(main())
    assert name.startswith("ttds-compute")
    assert there == min(19, here + COMPUTE_NICE) and there > here
    assert after == here  # the loop's own thread keeps its priority


def test_an_exception_in_model_work_reaches_the_caller():
    async def main():
        await off_loop(int, "not a number")

    with pytest.raises(ValueError):
        asyncio.run(main())
