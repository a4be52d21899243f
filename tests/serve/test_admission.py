"""Time-bounded admission (ttds.serve.admission) on its own event loop: the cap is exact, a
refusal is immediate when the queue would not drain in time, a waiter past its deadline is
refused, FIFO order holds, and nothing leaks when clients go away."""

from __future__ import annotations

import asyncio
import time

import pytest

from ttds.serve.admission import ADMIT_SHARE, RETRY_SHARE, Admission, AdmissionConfig, Overloaded


async def _work(adm: Admission, seconds: float, log: list) -> str:
    t = time.perf_counter()
    try:
        async with adm.slot():
            log.append(("start", time.perf_counter() - t))
            await asyncio.sleep(seconds)
        return "ok"
    except Overloaded as e:
        log.append(("refused", time.perf_counter() - t))
        return e.reason


def test_cap_is_exact_and_refusals_are_fast():
    async def main():
        adm = Admission(AdmissionConfig(max_in_flight=2, max_queue=3, deadline_s=5.0))
        log: list = []
        peak = {"queued": 0, "in_flight": 0}

        async def watch():
            while True:
                peak["queued"] = max(peak["queued"], adm.queued)
                peak["in_flight"] = max(peak["in_flight"], adm.in_flight)
                await asyncio.sleep(0.001)

        w = asyncio.create_task(watch())
        out = await asyncio.gather(*(_work(adm, 0.05, log) for _ in range(20)))
        w.cancel()
        return adm, out, log, peak

    adm, out, log, peak = asyncio.run(main())
    assert out.count("ok") == 5 and peak == {"queued": 3, "in_flight": 2}  # 2 running + 3 queued, never more
    assert all(dt < 0.01 for kind, dt in log if kind == "refused")
    assert adm.in_flight == 0 and adm.queued == 0 and adm.refused == 15


def test_refused_on_arrival_when_the_queue_would_not_drain_in_time():
    async def main():
        adm = Admission(AdmissionConfig(max_in_flight=1, max_queue=100, deadline_s=0.35 / ADMIT_SHARE))
        log: list = []
        await _work(adm, 0.1, log)  # teaches it a service time of ~0.1 s (more on a busy machine)
        learned = adm.service_s
        out = await asyncio.gather(*(_work(adm, 0.1, log) for _ in range(10)))
        return adm, out, log, learned

    adm, out, log, learned = asyncio.run(main())
    # one runs at once, ~3 more queue (a predicted wait within ADMIT_SHARE of the deadline, 0.35 s:
    # the rest is the margin for a wrong guess); the rest are told so at once, none late
    expected = 1 + int(0.35 / learned + 1e-9)
    assert expected - 1 <= out.count("ok") <= expected + 1, (out, learned)
    assert all("would wait" in o for o in out if o != "ok"), out
    assert all(dt < 0.01 for kind, dt in log if kind == "refused")
    assert max(dt for kind, dt in log if kind == "start") < 0.35 / ADMIT_SHARE


def test_waiter_past_its_deadline_is_refused_then_recovery_is_immediate():
    async def main():
        adm = Admission(AdmissionConfig(max_in_flight=1, max_queue=10, deadline_s=0.2))
        order: list[int] = []

        async def job(i: int, seconds: float):
            try:
                async with adm.slot():
                    order.append(i)
                    await asyncio.sleep(seconds)
                return "ok"
            except Overloaded as e:
                return e.reason

        first = asyncio.create_task(job(0, 0.5))  # no service time known yet: the others queue
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(job(i, 0.01)) for i in (1, 2)]
        out = [await first, *[await r for r in rest]]
        late = [await job(i, 0.01) for i in (3, 4, 5)]  # the next clients, once the burst is over
        return adm, out, late, order

    adm, out, late, order = asyncio.run(main())
    assert out[0] == "ok" and all("within 0.2 s" in o for o in out[1:]), out
    assert late == ["ok"] * 3 and order == [0, 3, 4, 5]  # recovery is immediate
    assert adm.in_flight == 0 and adm.queued == 0


def test_retry_after_grows_with_the_backlog():
    """Each refused client gets its own later slot (after the queue, 1 / (RETRY_SHARE x drain
    rate) apart), so retries come back spread at a share of the rate requests finish; bounded
    by max_retry_after_s."""

    async def main():
        adm = Admission(AdmissionConfig(max_in_flight=2, max_queue=100, deadline_s=0.4, retry_after_s=1, max_retry_after_s=10))
        adm.service_s = 0.2  # as if learned: drains 10 requests/s with 2 in flight (set, not timed: a busy machine stretches sleeps)
        hold = asyncio.Event()

        async def holder():
            async with adm.slot():
                await hold.wait()

        holders = [asyncio.create_task(holder()) for _ in range(2)]
        await asyncio.sleep(0.01)
        refusals, queued = [], []
        for _ in range(150):  # arrivals one after another: the first queue (within ADMIT_SHARE of the deadline), the rest are refused
            task = asyncio.create_task(adm.acquire())
            await asyncio.sleep(0)
            if task.done():
                refusals.append(task.exception().retry_after_s)
            else:
                queued.append(task)
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        hold.set()
        await asyncio.gather(*holders)
        return refusals

    ra = asyncio.run(main())
    assert len(ra) >= 140 and ra == sorted(ra), ra  # later refusals wait longer
    assert ra[0] == 1 and ra[-1] == 10  # the minimum first, capped at max_retry_after_s
    per_second = RETRY_SHARE * 10  # returns scheduled per second: a share of the drain rate (10/s)
    assert per_second - 1 <= ra.count(5) <= per_second + 2, ra  # (more if the loop itself is slow)


def test_cancelled_waiter_leaks_nothing():
    async def main():
        adm = Admission(AdmissionConfig(max_in_flight=1, max_queue=10, deadline_s=5))
        hold = asyncio.Event()

        async def holder():
            async with adm.slot():
                await hold.wait()

        h = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(_work(adm, 0.01, []))
        await asyncio.sleep(0.01)
        assert adm.queued == 1
        waiter.cancel()  # the client disconnected
        with pytest.raises(asyncio.CancelledError):
            await waiter
        hold.set()
        await h
        return adm

    adm = asyncio.run(main())
    assert adm.in_flight == 0 and adm.queued == 0


def test_config_is_checked():
    with pytest.raises(ValueError, match="unknown config key"):
        AdmissionConfig.from_dict({"max_inflight": 3})
    with pytest.raises(ValueError, match="deadline_s=0.0: expected a value > 0"):
        AdmissionConfig.from_dict({"deadline_s": 0})
    with pytest.raises(ValueError, match="max_retry_after_s=1: expected >= retry_after_s"):
        AdmissionConfig.from_dict({"retry_after_s": 5, "max_retry_after_s": 1})
    assert AdmissionConfig.from_dict(None) == AdmissionConfig()


def test_waiters_start_in_arrival_order():
    async def main():
        adm = Admission(AdmissionConfig(max_in_flight=1, max_queue=10, deadline_s=5))
        order: list[int] = []

        async def job(i: int):
            async with adm.slot():
                order.append(i)
                await asyncio.sleep(0.01)

        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(job(i)))
            await asyncio.sleep(0)  # arrive one after another
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == list(range(6))


def test_arrivals_judged_at_the_edge_count_until_they_reach_acquire():
    """The HTTP edge judges a request before its body is read (`arrive`): arrivals not yet at
    `acquire` count as ahead of later ones (a burst judged against the same queue would all
    pass otherwise), one that leaves early (refused by validation) frees its place, and a
    waiter's deadline runs from its arrival, not from `acquire`."""

    async def main():
        adm = Admission(AdmissionConfig(max_in_flight=2, max_queue=100, deadline_s=0.5 / ADMIT_SHARE))
        adm.service_s = 0.2  # as if learned: 10 requests/s with 2 in flight; ADMIT_SHARE of the deadline = 5 queued at most
        burst, refused = [], 0
        for _ in range(20):  # a burst: nothing reaches acquire yet
            try:
                burst.append(adm.arrive())
            except Overloaded as e:
                refused += 1
                assert "would wait" in e.reason
        passed = len(burst)
        adm.leave(burst.pop())  # refused by validation: its place is free again
        again = adm.arrive()
        assert adm.arriving == passed
        for a in [*burst, again]:
            adm.leave(a)
        adm.leave(again)  # leaving twice is harmless
        assert adm.arriving == 0

        hold = asyncio.Event()

        async def holder():
            async with adm.slot():
                await hold.wait()

        holders = [asyncio.create_task(holder()) for _ in range(2)]
        await asyncio.sleep(0)
        arrival = adm.arrive()  # judged at once; its body takes longer than the deadline to arrive
        arrival.at -= 2 * adm.cfg.deadline_s
        with pytest.raises(Overloaded, match="could not start within"):
            await adm.acquire(arrival)
        hold.set()
        await asyncio.gather(*holders)
        return adm, passed, refused

    adm, passed, refused = asyncio.run(main())
    # 2 start at once, 5 queue (a predicted wait up to 0.5 s at 10/s), the 8th would wait 0.6 s
    assert passed == 7 and refused == 13, (passed, refused)
    assert adm.in_flight == 0 and adm.queued == 0 and adm.arriving == 0
