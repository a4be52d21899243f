"""Time-bounded admission for the HTTP ingress: a request starts within a deadline or gets a fast 503.

Why not Serve's `max_queued_requests` alone: that bound is a count, checked by each router
against a slightly stale view (measured: 187 queued for a cap of 128), and a request under it
may still wait 14-38 s; the 503 it gives is the proxy's text/plain, outside the error contract.
Here one event loop owns the count, so the cap is exact, and a request is refused on arrival
when the queue ahead of it would not drain within a QUARTER of the deadline (ADMIT_SHARE) at
the rate requests are finishing now (so a refusal costs microseconds, not a wait). The rest of
the deadline absorbs a wrong guess: a request admitted to the queue that still has not started
at its deadline is refused then, late, after the whole deadline, which makes the 503s' p99 the
deadline once over 1% of them are late (measured with no margin: most 503s came after the full
2 s deadline, the queue filled exactly to the predicted limit; with half the deadline as the
margin, 5% were late at a load average of 85 on 2 cores, where the drain rate swings with the
neighbours' load). Work in flight is capped below what the ranking replicas take at once, so
batches stay full and nothing piles up behind them. Arrivals over HTTP are judged at the app's
edge, before their body is read (`arrive`, then `acquire`).

Retry-After grows with the backlog: each refused client is given its own return time on a
virtual schedule, after the queue ahead has drained and after every client refused before it,
one slot each, the slots spread so that returning clients come back at RETRY_SHARE of the
drain rate in all (instead of all at once a second later). Why a share and not the whole
rate: the clients being served take the whole capacity already (a closed-loop client that got
its answer asks again at once), so with one slot per 1/rate the refusals ran at about the
drain rate itself (measured: 853 refusals against 955 accepted), and every refusal costs the
proxy and the ingress ~8 ms of CPU, which on a CPU-bound host is capacity taken from accepted
requests (measured: CPU per accepted request 17 ms at the peak, 32 ms in that overload). At a
quarter of the rate, refusals cost about an eighth of the accepted requests' CPU; the price is
a longer Retry-After (about the number of waiting clients / (share x rate), at most
max_retry_after_s).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass

from ttds.config import AdmissionConfig


ADMIT_SHARE = 0.25  # an arrival joins the queue only if its predicted wait is within this share of the deadline
RETRY_SHARE = 0.25  # refused clients are scheduled to come back at this share of the drain rate, in all


class Overloaded(Exception):
    """Refused by admission; `reason` goes into the 503 body, `retry_after_s` into its header."""

    def __init__(self, reason: str, retry_after_s: int = 1):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass
class Arrival:
    """A request judged at the edge: when it arrived, and whether it has left the edge's count."""

    at: float
    gone: bool = False


class Admission:
    """FIFO gate with an exact queue cap and a start deadline; use `async with admission.slot():`.

    Single event loop only (an asyncio object): the ingress replica's. `service_s` is an
    exponentially weighted mean of how long admitted requests ran; the drain rate it implies
    (max_in_flight / service_s) predicts each arrival's wait.
    """

    def __init__(self, cfg: AdmissionConfig | None = None):
        self.cfg = cfg or AdmissionConfig()
        self.in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()
        self.service_s = 0.0  # EWMA of admitted requests' run time; 0 until the first one finishes
        self.refused = 0
        self.admitted = 0
        self._next_return = 0.0  # monotonic time of the next free slot on the retry schedule
        self.arriving = 0  # judged at the edge (`arrive`), not yet at `acquire`

    @property
    def queued(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def configure(self, cfg: AdmissionConfig) -> None:
        self.cfg = cfg
        self._wake()

    def drain_rate(self) -> float:
        """Requests finishing per second with every slot busy (0 until one has finished)."""
        return self.cfg.max_in_flight / self.service_s if self.service_s > 0 else 0.0

    def expected_wait_s(self, position: int) -> float:
        """Wait of the `position`-th waiter (0 = next) at the current drain rate."""
        rate = self.drain_rate()
        return (position + 1) / rate if rate > 0 else 0.0

    def retry_after_s(self) -> int:
        """Retry-After of the refusal being given now: the seconds until this client's slot on
        the retry schedule (after the queue and every earlier refused client; slots are
        1 / (RETRY_SHARE x drain rate) apart), whole seconds in [retry_after_s, max_retry_after_s].
        Each call takes a slot: call it once per refusal."""
        cfg, rate = self.cfg, self.drain_rate()
        if rate <= 0:
            return cfg.retry_after_s
        now = time.monotonic()
        at = max(now + max(cfg.retry_after_s, self.queued / rate), self._next_return)
        at = min(at, now + cfg.max_retry_after_s)
        self._next_return = at + 1.0 / (RETRY_SHARE * rate)
        return max(cfg.retry_after_s, min(cfg.max_retry_after_s, math.ceil(at - now)))

    def _refuse(self, reason: str) -> Overloaded:
        self.refused += 1
        return Overloaded(reason, self.retry_after_s())

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.cfg.max_in_flight:
            f = self._waiters.popleft()
            if not f.done():
                self.in_flight += 1
                f.set_result(None)

    def arrive(self) -> Arrival:
        """Judge an arrival now: raise the refusal it gets (the queue would pass its cap, or the
        predicted wait is beyond ADMIT_SHARE of the deadline), else hold its place and return it.

        The HTTP edge calls this before reading the request body and hands the Arrival to
        `acquire` once the request is parsed. Why: under Serve the body is fetched from the proxy
        after the request reaches the replica, then parsed and validated; under overload those
        steps took most of a 503's time in the app (p50 ~0.4 s at 256 clients) for a decision
        that takes microseconds. Requests between the edge and `acquire` count as ahead of later
        arrivals (else a burst, all judged against the same queue, would all pass), and the
        deadline runs from arrival. `leave` drops an arrival that never reaches `acquire` (a
        request refused by validation)."""
        cfg = self.cfg
        ahead = self.queued + self.arriving - max(0, cfg.max_in_flight - self.in_flight)
        if ahead >= 0:  # no free slot for it: it would queue behind `ahead` others
            if ahead >= cfg.max_queue:
                raise self._refuse(f"overloaded: {ahead} requests already waiting (cap {cfg.max_queue})")
            wait = self.expected_wait_s(ahead)
            if wait > cfg.deadline_s * ADMIT_SHARE:
                raise self._refuse(f"overloaded: a new request would wait about {wait:.1f} s to start (deadline {cfg.deadline_s:g} s)")
        self.arriving += 1
        return Arrival(time.monotonic())

    def leave(self, arrival: Arrival) -> None:
        """The arrival goes no further than the edge (or has reached `acquire`): drop its place."""
        if not arrival.gone:
            arrival.gone = True
            self.arriving -= 1

    async def acquire(self, arrival: Arrival | None = None) -> None:
        """Wait for a slot, FIFO, until the deadline (from `arrival`, judged at the edge by
        `arrive`; without one the request is judged here, on arrival)."""
        cfg = self.cfg
        if arrival is not None:
            self.leave(arrival)
        if self.in_flight < cfg.max_in_flight and not self._waiters:
            self.in_flight += 1
            self.admitted += 1
            return
        if arrival is None:
            arrival = self.arrive()
            self.leave(arrival)
        elif self.queued >= cfg.max_queue:  # judged at the edge, but the cap is exact
            raise self._refuse(f"overloaded: {self.queued} requests already waiting (cap {cfg.max_queue})")
        remaining = arrival.at + cfg.deadline_s - time.monotonic()
        if remaining <= 0:
            raise self._refuse(f"overloaded: the request could not start within {cfg.deadline_s:g} s")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), remaining)
        except asyncio.TimeoutError:
            if fut.done() and not fut.cancelled():  # granted at the last moment: give the slot back
                self.release()
            fut.cancel()
            raise self._refuse(f"overloaded: the request could not start within {cfg.deadline_s:g} s") from None
        except asyncio.CancelledError:  # the client went away while waiting
            if fut.done() and not fut.cancelled():
                self.release()
            fut.cancel()
            raise
        finally:
            if fut.cancelled():
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
        self.admitted += 1

    def release(self, ran_s: float | None = None) -> None:
        self.in_flight -= 1
        if ran_s is not None:
            self.service_s = ran_s if self.service_s <= 0 else 0.8 * self.service_s + 0.2 * ran_s
        self._wake()

    def slot(self, arrival: Arrival | None = None) -> "_Slot":
        return _Slot(self, arrival)

    def stats(self) -> dict:
        return {"in_flight": self.in_flight, "queued": self.queued, "arriving": self.arriving, "service_ms": round(self.service_s * 1000, 1),
                "retry_after_s": max(0, math.ceil(self._next_return - time.monotonic())),
                "admitted": self.admitted, "refused": self.refused}


class _Slot:
    def __init__(self, admission: Admission, arrival: Arrival | None = None):
        self.admission = admission
        self.arrival = arrival
        self.t0 = 0.0

    async def __aenter__(self) -> None:
        await self.admission.acquire(self.arrival)
        self.t0 = time.perf_counter()

    async def __aexit__(self, *exc) -> None:
        self.admission.release(time.perf_counter() - self.t0)
